"""Where our trainers spend their time: cProfile of a GRPO or DPO run, or of the sampler.

    RLHF_LAB_SCALE=ci OMP_NUM_THREADS=1 python benchmarks/profile_trainers.py grpo [--steps 20] [--top 25] [--device cuda]

Uses the same set-up as ``benchmarks/trainers.py`` (the pretrained reviews reference, N = 16 × G = 8,
β = 0, one update per batch; DPO batch 64) and prints the functions with the most cumulative and
the most own time, in percent of the run.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, reference  # noqa: E402
from trainers import no_eval  # noqa: E402


def main() -> None:
    from rlhf_lab import data
    from rlhf_lab.algos.dpo import DPOConfig, train_dpo
    from rlhf_lab.algos.grpo import GRPOConfig, train_grpo
    from rlhf_lab.algos.loop import ExactEvaluator
    from rlhf_lab.rollout import sample

    cli = parser(__doc__, reps=None)
    cli.add_argument("what", choices=("grpo", "dpo", "sampler"))
    cli.add_argument("--steps", type=int, default=20)
    cli.add_argument("--top", type=int, default=25)
    args = cli.parse_args()
    scale, world, ref, _ = reference(args)
    ref.eval()
    if args.what == "grpo":
        config = GRPOConfig(group_size=8, prompts_per_step=16, steps=args.steps, lr=3e-4, updates_per_batch=1,
                            beta=0.0, eval_every=10**6, seed=0, progress=False)

        def run():
            train_grpo(ref, world, config, evaluator=no_eval)
    elif args.what == "dpo":
        pairs = data.preference_dataset(world, 64 * args.steps, logp=ExactEvaluator(world, ref).logp_ref, seed=0)
        config = DPOConfig(beta=0.1, lr=3e-4, epochs=1, batch_size=64, eval_every=10**6, seed=0, progress=False)

        def run():
            train_dpo(ref, world, pairs, config, evaluator=no_eval)
    else:
        prompts = [world.prompts[i % len(world.prompts)] for i in range(256)]
        gen = torch.Generator().manual_seed(0)  # a CPU generator, as the trainers use (noise moves over)

        def run():
            for _ in range(args.steps):
                sample(ref, world, prompts, generator=gen)
    run()  # warm-up
    profile = cProfile.Profile()
    profile.enable()
    run()
    profile.disable()
    stats = pstats.Stats(profile)
    total = stats.total_tt
    rows = [(cum, tt, f"{Path(f).name}:{line}({name})") for (f, line, name), (_, _, tt, cum, _) in stats.stats.items()]
    print(f"{args.what} at {scale.name}: {total:.3f} s profiled")
    for title, key in (("cumulative", 0), ("own", 1)):
        print(f"-- by {title} time")
        for row in sorted(rows, key=lambda r: -r[key])[: args.top]:
            print(f"{100 * row[key] / total:6.1f}%  {row[2]}")


if __name__ == "__main__":
    main()
