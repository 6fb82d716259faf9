"""What every benchmark script shares: its command line (repetitions, CPU threads, device) and
the pretrained reviews-world reference it measures, at the scale ``RLHF_LAB_SCALE`` names."""

from __future__ import annotations

import argparse
import statistics

import torch


def parser(doc: str, reps: int | None) -> argparse.ArgumentParser:
    """A parser with ``--threads``, ``--device`` and, unless ``reps`` is None, ``--reps`` (default
    ``reps``); add the script's own."""
    out = argparse.ArgumentParser(description=doc.splitlines()[0])
    if reps is not None:
        out.add_argument("--reps", type=int, default=reps)
    out.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave torch's default)")
    out.add_argument("--device", default=None, help="cpu or cuda (default: the scale's)")
    return out


def reference(args: argparse.Namespace):
    """Threads set, then (scale, world, model, tokenizer): the pretrained reviews-world GPT-2 on the device."""
    from rlhf_lab.models import pretrain_reference
    from rlhf_lab.scale import get_scale
    from rlhf_lab.worlds.reviews import ReviewsWorld

    if args.threads:
        torch.set_num_threads(args.threads)
    scale = get_scale()
    if args.device:
        scale = scale.replace(device=args.device)
    world = ReviewsWorld.from_scale(scale)
    model, tokenizer = pretrain_reference(world, scale, progress=False)
    return scale, world, model, tokenizer


def grpo_batch(model, world):
    """One GRPO-sized rollout: 16 prompts × G = 8 samples, seeded."""
    from rlhf_lab.algos.loop import prompt_groups
    from rlhf_lab.rollout import sample

    return sample(model, world, prompt_groups(world, 16, 8, torch.Generator().manual_seed(0)),
                  generator=torch.Generator().manual_seed(0))


def report(times: dict[str, list[float]], base: str, what: str, digits: int = 2) -> None:
    """Each side's median in ms and how many times faster than ``base`` it is."""
    reference_median = statistics.median(times[base])
    width = max(map(len, times))
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:>{width}}: {what} median {1e3 * median:7.{digits}f} ms   ({reference_median / median:.2f}x {base})")
