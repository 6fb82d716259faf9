"""Execute chapters at one scale, several at a time, and report each chapter's wall time.

The README's per-chapter times at scale gpu come from this script, run on the GPU machine:

    RLHF_LAB_SCALE=gpu python benchmarks/run_chapters.py chapters/0*.md --jobs 4 --out executed/

Each chapter runs in its own kernel (as the book build does) with ``RLHF_LAB_STATIC=1``; a
failing cell is reported with its traceback and the script exits non-zero. With ``--out`` the
executed notebooks are written there (open them to see the figures).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time
from pathlib import Path


def run_one(chapter: str, scale: str, out: str | None, threads: int) -> dict:
    import nbformat

    from rlhf_lab.book import execute_chapter

    env = {"RLHF_LAB_SCALE": scale, "RLHF_LAB_STATIC": "1", "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    try:
        nb, seconds = execute_chapter(Path(chapter), env=env, timeout=1800)
        result = {"chapter": chapter, "ok": True, "seconds": round(seconds, 1)}
    except Exception as exc:  # report and go on with the other chapters
        nb, result = None, {"chapter": chapter, "ok": False, "seconds": round(time.perf_counter() - start, 1),
                            "error": str(exc)[-4000:]}
    if nb is not None and out:
        nbformat.write(nb, Path(out) / (Path(chapter).stem + ".ipynb"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="+")
    parser.add_argument("--scale", default=os.environ.get("RLHF_LAB_SCALE", "gpu"), choices=("ci", "cpu", "gpu"))
    parser.add_argument("--jobs", type=int, default=1, help="chapters run at once (>= 1)")
    parser.add_argument("--out", default=None, help="folder for the executed notebooks")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:
        device = "unknown"
    print(f"scale {args.scale}, device {device}, {args.jobs} chapter(s) at a time, {threads} CPU thread(s) each",
          flush=True)
    start = time.perf_counter()
    failed = 0
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, ch, args.scale, args.out, threads) for ch in args.chapters]
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            failed += not result["ok"]
            print(json.dumps(result), flush=True)
    print(f"total wall time {time.perf_counter() - start:.0f} s; {failed} chapter(s) failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
