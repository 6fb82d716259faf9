"""Our DPO and GRPO trainers against TRL's ``DPOTrainer`` and ``GRPOTrainer``, side by side.

Both sides train a copy of the same pretrained reviews-world reference, on the same data, with
the same batch, number of steps, learning rate and β:

* DPO — ``rlhf_lab.algos.dpo.train`` vs ``trl.DPOTrainer(precompute_ref_log_probs=True)``: the
  same preference pairs, batch 64, one epoch, β = 0.1, sigmoid loss;
* GRPO — ``rlhf_lab.algos.grpo.train`` vs ``trl.GRPOTrainer``: N = 16 prompts × G = 8 completions
  per step, β = 0 (TRL's default), one update per batch, temperature 1, completions restricted to
  the world's completion vocabulary (TRL: ``suppress_tokens``), up to ``max_new_tokens``.

Neither side evaluates (ours gets an evaluator that computes nothing) or logs anywhere but memory.
Two TRL timings are printed: ``trainer.train()`` alone — its constructor (tokenising the dataset,
and for DPO the reference log-probs of ``precompute_ref_log_probs``) left out, which favours TRL —
and constructor plus ``train()``, like for like with ours, which is the whole ``train(...)`` call
(it encodes the texts and computes the reference log-probs inside). After a warm-up the two sides run in
alternation, ``--reps`` times each, in one process; the script prints the medians and the ratio
TRL time / our time (above 1: ours is faster).

    RLHF_LAB_SCALE=ci OMP_NUM_THREADS=1 python benchmarks/trainers.py [--only dpo|grpo] [--reps 5] [--device cuda]
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import statistics
import tempfile
import time
import warnings

import datasets
import torch
from common import parser, reference

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")


def no_eval(policy) -> dict:
    """An evaluator that costs nothing (a History needs at least one metric per log)."""
    return {"bench/none": 0.0}


def bench_dpo(world, ref, tokenizer, steps: int, batch: int):
    from trl import DPOConfig as TRLDPOConfig, DPOTrainer

    from rlhf_lab import data
    from rlhf_lab.algos.dpo import DPOConfig, train_dpo
    from rlhf_lab.algos.loop import ExactEvaluator

    pairs = data.preference_dataset(world, steps * batch, logp=ExactEvaluator(world, ref).logp_ref, seed=0)
    lr, beta = 3e-4, 0.1

    def ours() -> None:
        train_dpo(ref, world, pairs, DPOConfig(beta=beta, lr=lr, epochs=1, batch_size=batch, eval_every=10**6,
                                               seed=0, progress=False), evaluator=no_eval)

    def trl_side():
        args = TRLDPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, num_train_epochs=1,
                            learning_rate=lr, beta=beta, loss_type=["sigmoid"], precompute_ref_log_probs=True,
                            precompute_ref_batch_size=batch, max_grad_norm=1.0, lr_scheduler_type="constant",
                            warmup_steps=0, logging_steps=1, report_to="none", save_strategy="no",
                            use_cpu=ref.device.type == "cpu", disable_tqdm=True, dataloader_num_workers=0, seed=0)
        trainer = DPOTrainer(model=copy.deepcopy(ref), args=args, train_dataset=pairs, processing_class=tokenizer)
        return trainer.train

    return ours, trl_side


def bench_grpo(world, ref, tokenizer, steps: int, n: int, g: int):
    from trl import GRPOConfig as TRLGRPOConfig, GRPOTrainer

    from rlhf_lab.algos.grpo import GRPOConfig, train_grpo

    lr = 3e-4
    # TRL's sampler takes N distinct dataset rows per step: the few prompts, repeated
    rows = [world.prompts[i % len(world.prompts)] for i in range(n * (steps + 1))]
    prompts = datasets.Dataset.from_dict({"prompt": rows})
    banned = [i for i, ok in enumerate(world.allowed_mask().tolist()) if not ok]

    def gold(prompts, completions, **kwargs) -> list[float]:
        return world.gold_rewards(list(prompts), list(completions)).tolist()

    def ours() -> None:
        train_grpo(ref, world, GRPOConfig(group_size=g, prompts_per_step=n, steps=steps, lr=lr, updates_per_batch=1,
                                          beta=0.0, eval_every=10**6, seed=0, progress=False), evaluator=no_eval)

    def trl_side():
        args = TRLGRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=n * g, num_generations=g,
                             max_completion_length=world.max_new_tokens, beta=0.0, num_iterations=1,
                             learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
                             max_steps=steps, temperature=1.0, top_k=0, top_p=1.0,
                             generation_kwargs={"suppress_tokens": banned}, logging_steps=1, report_to="none",
                             save_strategy="no", use_cpu=ref.device.type == "cpu", disable_tqdm=True,
                             dataloader_num_workers=0, seed=0)
        trainer = GRPOTrainer(model=copy.deepcopy(ref), reward_funcs=gold, args=args,
                              train_dataset=prompts, processing_class=tokenizer)
        return trainer.train

    return ours, trl_side


def compare(name: str, ours, trl_side, reps: int) -> float:
    """Median seconds of each side over ``reps`` alternating runs (after one warm-up each); TRL/ours."""
    times: dict[str, list[float]] = {"ours": [], "trl": [], "trl+init": []}
    sink = io.StringIO()
    sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    for rep in range(reps + 1):
        for side in ("ours", "trl"):
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sync()
                if side == "ours":
                    start = time.perf_counter()
                    ours()
                else:
                    built = time.perf_counter()
                    run = trl_side()  # the constructor: tokenising, and DPO's reference precompute
                    start = time.perf_counter()
                    run()
                sync()
            if rep:  # rep 0 warms up
                times[side].append(time.perf_counter() - start)
                if side == "trl":
                    times["trl+init"].append(time.perf_counter() - built)
    ratio = statistics.median(times["trl"]) / statistics.median(times["ours"])
    whole = statistics.median(times["trl+init"]) / statistics.median(times["ours"])
    for side, values in times.items():
        print(f"  {name} {side:>8}: median {statistics.median(values):7.3f} s   "
              f"(reps: {', '.join(f'{v:.3f}' for v in values)})")
    print(f"ratio {name} TRL/ours: {ratio:.2f}x (TRL's train() alone); {whole:.2f}x (TRL's constructor "
          f"included, as ours includes encoding and the reference log-probs)")
    return ratio


def main() -> None:
    cli = parser(__doc__, reps=5)
    cli.add_argument("--only", choices=("dpo", "grpo"), default=None)
    cli.add_argument("--steps", type=int, default=10)
    args = cli.parse_args()
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    scale, world, ref, tokenizer = reference(args)
    ref.eval()
    print(f"world={world.name} scale={scale.name} device={scale.device} threads={torch.get_num_threads()} steps={args.steps} "
          f"params={sum(p.numel() for p in ref.parameters()):,}")
    if args.only in (None, "dpo"):
        compare("DPO", *bench_dpo(world, ref, tokenizer, args.steps, batch=64), args.reps)
    if args.only in (None, "grpo"):
        compare("GRPO", *bench_grpo(world, ref, tokenizer, args.steps, n=16, g=8), args.reps)


if __name__ == "__main__":
    main()
