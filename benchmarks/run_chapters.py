"""Execute chapters at one or more scales and seeds, several at a time; print a pass table.

Claims must hold for any seed (``RLHF_LAB_SEED``), not for one. The seed sweep the README
reports is this script on the 2-core CI machine, one chapter per core:

    python benchmarks/run_chapters.py chapters/*.md --scales ci --seeds 0 1 2 3 4 --jobs 2
    python benchmarks/run_chapters.py chapters/*.md --scales cpu --seeds 0 1 --jobs 2

and the README's per-chapter times at scale gpu come from it on the GPU machine:

    python benchmarks/run_chapters.py chapters/*.md --scales gpu --jobs 4 --out executed/

``--edition instructor`` runs the instructor edition (``RLHF_LAB_EDITION``, which is also read
from the environment): the solutions filled in, every check and answer required to pass.

Each chapter runs in its own kernel (as the book build does) with ``RLHF_LAB_STATIC=1``. A
failing chapter is reported with the end of its traceback, and the script exits non-zero. With
``--out`` the executed notebooks (failed ones up to the failing cell) and a results.json are
written there. It is not part of
``make test``: CI executes every chapter at ``ci`` and ``cpu`` with the default seed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import re
import sys
import time
from pathlib import Path


def run_one(chapter: str, scale: str, seed: int, out: str | None, threads: int,
            edition: str = "student") -> dict:
    import nbformat

    from rlhf_lab.book import execute_chapter

    env = {"RLHF_LAB_SCALE": scale, "RLHF_LAB_SEED": str(seed), "RLHF_LAB_STATIC": "1",
           "OMP_NUM_THREADS": str(threads), "RLHF_LAB_EDITION": edition}
    result = {"chapter": Path(chapter).stem, "scale": scale, "seed": seed, "edition": edition}
    start = time.perf_counter()
    try:
        nb, seconds = execute_chapter(Path(chapter), env=env, timeout=1800)
        result.update(ok=True, seconds=round(seconds, 1))
    except Exception as exc:  # report and go on with the other chapters
        nb = getattr(exc, "notebook", None)  # executed up to the failing cell
        result.update(ok=False, seconds=round(time.perf_counter() - start, 1), error=str(exc)[-3000:])
    if nb is not None and out:
        tag = "" if edition == "student" else f".{edition}"
        nbformat.write(nb, Path(out) / f"{Path(chapter).stem}.{scale}.seed{seed}{tag}.ipynb")
    return result


def summary(error: str) -> str:
    """The failing line of a cell and the exception, without terminal colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", error)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    arrow = [ln.strip() for ln in lines if ln.lstrip().startswith("--->")]
    return "\n".join(arrow[-1:] + lines[-1:])


def table(results: list[dict], scales: list[str], seeds: list[int]) -> str:
    """A Markdown table: one row per chapter, one column per (scale, seed), 'ok 12 s' or 'FAIL'."""
    columns = list(itertools.product(scales, seeds))
    chapters = sorted({r["chapter"] for r in results})
    cell = {(r["chapter"], r["scale"], r["seed"]): r for r in results}
    lines = ["| chapter | " + " | ".join(f"{s} seed {d}" for s, d in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for ch in chapters:
        row = []
        for s, d in columns:
            r = cell.get((ch, s, d))
            row.append("—" if r is None else f"{'ok' if r['ok'] else 'FAIL'} {r['seconds']:.0f} s")
        lines.append(f"| {ch} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="+")
    parser.add_argument("--scales", nargs="+", default=[os.environ.get("RLHF_LAB_SCALE", "ci")],
                        choices=("ci", "cpu", "gpu"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="values of RLHF_LAB_SEED (>= 0)")
    parser.add_argument("--jobs", type=int, default=1, help="chapters run at once (>= 1)")
    parser.add_argument("--out", default=None, help="folder for the executed notebooks and results.json")
    parser.add_argument("--edition", default=None, choices=("student", "instructor"),
                        help="the edition to run (default: RLHF_LAB_EDITION, else student)")
    args = parser.parse_args(argv)
    from rlhf_lab.editions import edition

    try:
        args.edition = edition(args.edition)
    except ValueError as exc:  # RLHF_LAB_EDITION names no edition
        parser.error(str(exc))
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if any(s < 0 for s in args.seeds):
        parser.error(f"--seeds must be >= 0, got {args.seeds}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:
        device = "unknown"
    print(f"{args.edition} edition, scales {args.scales}, seeds {args.seeds}, device {device}, "
          f"{args.jobs} chapter(s) at a time, "
          f"{threads} CPU thread(s) each", flush=True)
    start = time.perf_counter()
    # seed-major order: the first pass over the chapters finishes before the next seed starts
    tasks = [(ch, sc, sd) for sd in args.seeds for sc in args.scales for ch in args.chapters]
    results = []
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, ch, sc, sd, args.out, threads, args.edition)
                   for ch, sc, sd in tasks]
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results.append(result)
            brief = {k: v for k, v in result.items() if k != "error"}
            print(json.dumps(brief), flush=True)
            if not result["ok"]:
                print("   " + summary(result["error"]).replace("\n", "\n   "), flush=True)
    failed = sum(not r["ok"] for r in results)
    print(f"\n{table(results, args.scales, args.seeds)}\n")
    print(f"total wall time {time.perf_counter() - start:.0f} s; {len(results) - failed} passed, {failed} failed",
          flush=True)
    if args.out:
        (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
