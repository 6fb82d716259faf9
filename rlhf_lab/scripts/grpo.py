"""GRPO with TRL on a workbook world, from one CPU to many GPUs (``accelerate launch``).

The same code path as chapter 11, as a script: the model is a setting (a folder written with
``save_pretrained``, a hub name, or ``reference`` for the world's tiny GPT-2), the world's gold
reward is TRL's reward function, and ``WorkbookCallback`` measures gold reward, KL to π_ref and
entropy by sampling before, during and after training. On several GPUs:

    accelerate launch --config_file rlhf_lab/scripts/configs/zero2.yaml -m rlhf_lab.scripts.grpo \\
        --model HuggingFaceTB/SmolLM2-135M-Instruct --world reviews --scale gpu --use-vllm

and the smoke test on a CPU (tests/test_scripts.py):

    accelerate launch --num_processes 1 --cpu -m rlhf_lab.scripts.grpo --model reference --steps 2

Prints one JSON line (the first and last evaluation) and writes it to ``<output-dir>/metrics.json``.
Introduced in chapter 11.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import datasets

EPILOG = """\
generation with vLLM: --use-vllm sets TRL's use_vllm=True, vllm_mode="colocate": vLLM runs
inside each training process and shares its GPU (install vllm; GPU only; a hub model: the
world's own tiny model restricts its vocabulary with suppress_tokens, which vLLM does not
take). Without it, TRL generates with transformers' model.generate.

several GPUs: accelerate launch --config_file rlhf_lab/scripts/configs/zero2.yaml -m
rlhf_lab.scripts.grpo ... (DeepSpeed ZeRO-2: optimizer states and gradients sharded, full
weights on every GPU, so the main process can measure alone). Under ZeRO-3 the weights are
sharded too: pass --eval-samples 0, since one process cannot run the model alone.
"""
WORLDS = ("reviews", "arithmetic")


def positive(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {value}")
    return value


def non_negative(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    return 0 if text.strip() == "0" else positive(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rlhf_lab.scripts.grpo", description=__doc__.split("\n\n")[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="a folder written by save_pretrained, a hub name (e.g. "
                             "HuggingFaceTB/SmolLM2-135M-Instruct), or 'reference': the world's tiny GPT-2")
    parser.add_argument("--world", choices=WORLDS, default="reviews", help="the workbook world (default reviews)")
    parser.add_argument("--scale", choices=("ci", "cpu", "gpu"), default=None,
                        help="size of the world and of 'reference' (default: RLHF_LAB_SCALE, else cpu/gpu)")
    parser.add_argument("--steps", type=positive, default=None, help="optimizer steps (default: the scale's rl_steps)")
    parser.add_argument("--output-dir", default="runs/grpo", help="where TRL and metrics.json write (default runs/grpo)")
    parser.add_argument("--group-size", type=positive, default=8, help="G, completions per prompt (≥ 2; default 8)")
    parser.add_argument("--prompts-per-step", type=positive, default=8,
                        help="N, prompts per step on each process (default 8)")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default 3e-4 for 'reference', 1e-6 for other models)")
    parser.add_argument("--beta", type=float, default=0.0, help="β of TRL's k3 KL term in the loss (default 0)")
    parser.add_argument("--eval-samples", type=non_negative, default=256,
                        help="completions per evaluation (0: no evaluation; default 256)")
    parser.add_argument("--eval-every", type=positive, default=None, help="steps between evaluations (default steps/4)")
    parser.add_argument("--use-vllm", action="store_true", help='generate with vLLM, vllm_mode="colocate" (GPU only)')
    parser.add_argument("--seed", type=int, default=None, help="seed (default RLHF_LAB_SEED, else 0)")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what argparse cannot see, before anything is loaded (``parser.error`` exits with 2)."""
    if args.group_size < 2:
        parser.error(f"--group-size must be ≥ 2 (a group of one has no baseline), got {args.group_size}")
    if args.lr is not None and not args.lr > 0:
        parser.error(f"--lr must be > 0, got {args.lr}")
    if not args.beta >= 0:
        parser.error(f"--beta must be ≥ 0, got {args.beta}")
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed must be ≥ 0, got {args.seed}")
    if args.use_vllm:
        import torch

        if not torch.cuda.is_available():
            parser.error("--use-vllm needs a GPU (vLLM colocate mode shares the training GPU); drop it on a CPU")


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    import os

    if args.seed is not None:
        os.environ["RLHF_LAB_SEED"] = str(args.seed)
    from trl import GRPOConfig, GRPOTrainer

    from rlhf_lab.algos.loop import SampledEvaluator
    from rlhf_lab.data import prompt_dataset
    from rlhf_lab.integrations import trl as rt
    from rlhf_lab.integrations.text_eval import TextSampledEvaluator
    from rlhf_lab.models import load_policy
    from rlhf_lab.scale import get_scale
    from rlhf_lab.worlds.arithmetic import ArithmeticWorld
    from rlhf_lab.worlds.reviews import ReviewsWorld

    scale = get_scale(args.scale)
    world = (ReviewsWorld if args.world == "reviews" else ArithmeticWorld).from_scale(scale)
    source = rt.reference_path(world, scale) if args.model == "reference" else args.model
    try:
        model, tokenizer = load_policy(source)
        ref, _ = load_policy(source)  # π_ref for the measurements: a frozen copy
    except (OSError, ValueError) as err:
        parser.error(f"--model {args.model}: {err}")
    steps = args.steps or scale.rl_steps
    n, g = args.prompts_per_step, args.group_size
    lr = args.lr or (3e-4 if args.model == "reference" else 1e-6)
    restrict = rt.generation_kwargs(world, tokenizer)  # non-empty only with the world's own tokenizer
    if args.use_vllm and restrict:
        parser.error(f"--use-vllm with --model {args.model}: the world's own tokenizer restricts sampling to the "
                     "world's words with generate's suppress_tokens, which vLLM's sampling does not take; "
                     "drop --use-vllm, or pass a hub model")
    gold = rt.reward_func(world.gold_rewards, world, tokenizer)
    config = rt.training_args(
        GRPOConfig, args.output_dir, max_steps=steps, learning_rate=lr, per_device_train_batch_size=n * g,
        num_generations=g, max_completion_length=world.max_new_tokens, beta=args.beta, loss_type="grpo",
        generation_kwargs=restrict, use_vllm=args.use_vllm,
        **({"vllm_mode": "colocate"} if args.use_vllm else {}))
    prompts = prompt_dataset(world)
    prompts = prompts.select([i % len(prompts) for i in range(max(n * steps, len(prompts)))])
    callbacks = []
    if args.eval_samples:
        if restrict:  # the world's own tokenizer: the world's evaluator
            evaluator = SampledEvaluator(world, ref, samples=args.eval_samples)
        else:
            evaluator = TextSampledEvaluator(world.prompts, tokenizer, ref, gold, samples=args.eval_samples,
                                             max_new_tokens=world.max_new_tokens)
        callbacks.append(rt.WorkbookCallback(evaluator, args.eval_every or max(1, steps // 4)))
    trainer = rt.build(GRPOTrainer, model=model, reward_funcs=gold, args=config, train_dataset=prompts,
                       processing_class=tokenizer, callbacks=callbacks)
    with rt.quiet():
        trainer.train()
    result = {"model": str(args.model), "world": world.name, "scale": scale.name, "steps": trainer.state.global_step}
    if callbacks and trainer.is_world_process_zero():
        history = callbacks[0].history
        keys = [k for k in history.keys() if k.endswith(("estimate", "gold", "_se")) or k == "pass@1"]
        result.update({"first": {k: history[k][0] for k in keys}, "last": {k: history[k][-1] for k in keys}})
    if trainer.is_world_process_zero():
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.output_dir) / "metrics.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    datasets.disable_progress_bars()
    main(sys.argv[1:])
