"""Our sampler (rlhf_lab.rollout.sample) against transformers' ``model.generate``.

Both sample from the same tiny reference model, at the same batch size and max_new_tokens,
restricted to the same completion vocabulary (``suppress_tokens`` for generate) and stopping
at EOS. After a warm-up the two are timed in alternation, several repetitions each, in one run;
the script prints tokens/s of each (generated tokens, EOS included, padding excluded), the
medians and their ratio. On CUDA ours decodes GPT-2 through a recorded CUDA graph
(``rlhf_lab/graphs.py``), and a third side, ``ours eager`` (``RLHF_LAB_CUDA_GRAPHS=0``), shows
what the graph buys.

    RLHF_LAB_SCALE=ci python benchmarks/sampler.py [--batch 256] [--reps 7] [--threads 1] [--device cuda]

Measured on the 2-core CI machine (shared with other jobs), reviews world, batch 256, one torch
thread, 2026-11-30: ci scale 2.5–2.6× (≈180k vs ≈69k tokens/s), cpu scale 2.9–3.1× (≈110k vs
≈36k). On one H200 the same day, with the CUDA graph: 2.62× at both sizes (1.67–1.73× over
the eager decoder). Where the time goes is in the README ("Performance").
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from common import parser, reference


def main() -> None:
    from rlhf_lab import graphs
    from rlhf_lab.rollout import sample

    cli = parser(__doc__, reps=7)
    cli.add_argument("--batch", type=int, default=256)
    cli.add_argument("--max-new-tokens", type=int, default=None, help="default: the world's")
    args = cli.parse_args()
    from transformers.utils import logging as hf_logging

    # generate's later steps feed finished rows' PAD tokens to the model, which makes transformers warn
    # about a missing attention mask; the prompts' mask is passed (``**enc``)
    hf_logging.set_verbosity_error()

    scale, world, model, tokenizer = reference(args)
    device = next(model.parameters()).device
    max_new = args.max_new_tokens or world.max_new_tokens
    prompts = [world.prompts[i % len(world.prompts)] for i in range(args.batch)]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(device)
    banned = [i for i, ok in enumerate(world.allowed_mask().tolist()) if not ok]
    gen = torch.Generator(device=device).manual_seed(0)

    def ours() -> int:
        rollout = sample(model, world, prompts, max_new_tokens=max_new, generator=gen)
        return int(rollout.completion_mask.sum())

    def ours_eager() -> int:
        before = os.environ.get(graphs.ENV_VAR)
        os.environ[graphs.ENV_VAR] = "0"
        try:
            return ours()
        finally:
            if before is None:
                del os.environ[graphs.ENV_VAR]
            else:
                os.environ[graphs.ENV_VAR] = before

    def hf_generate() -> int:
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, max_new_tokens=max_new, suppress_tokens=banned,
                                 eos_token_id=world.eos_id, pad_token_id=world.pad_id, top_k=0, top_p=1.0)
        new = out[:, enc["input_ids"].shape[1]:]
        ended = (new == world.eos_id).cumsum(1)  # tokens up to and including the first EOS count
        return int(((ended == 0) | ((ended == 1) & (new == world.eos_id))).sum())

    def timed(fn) -> tuple[float, int]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        n = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, n

    sides = {"ours": ours, "generate": hf_generate}
    if graphs.enabled(device, args.batch):
        sides["ours eager"] = ours_eager
    for fn in [*sides.values()] * 2:  # warm-up (on CUDA the first call records the graph)
        fn()
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.reps):
        for name, fn in sides.items():
            seconds, n = timed(fn)
            rates[name].append(n / seconds)
    print(f"world={world.name} scale={scale.name} device={device} threads={torch.get_num_threads()} "
          f"batch={args.batch} max_new_tokens={max_new} params={sum(p.numel() for p in model.parameters()):,}")
    for name, values in rates.items():
        print(f"{name:>10}: median {statistics.median(values):>12,.0f} tokens/s   "
              f"(reps: {', '.join(f'{v:,.0f}' for v in values)})")
    print(f"ratio ours/generate: {statistics.median(rates['ours']) / statistics.median(rates['generate']):.2f}x")
    if "ours eager" in rates:
        print(f"ratio ours eager/generate: "
              f"{statistics.median(rates['ours eager']) / statistics.median(rates['generate']):.2f}x; "
              f"CUDA graph/eager: {statistics.median(rates['ours']) / statistics.median(rates['ours eager']):.2f}x")


if __name__ == "__main__":
    main()
