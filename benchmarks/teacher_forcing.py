"""The teacher-forced pass of a trainer three ways: transformers' forward, ours row by row, ours over shared prefixes.

One GRPO-like batch (16 prompts × G = 8 samples of the pretrained reviews-world reference, its
distinct rows, as the trainers forward them) goes forward and backward through

* ``model(...)`` — ``GPT2LMHeadModel.forward`` (what the trainers used before issue 18);
* ``gpt2.forward`` — the same arithmetic written out, every row's every position;
* ``prefixes.forward`` — each distinct prefix once (a forest of the batch's prefixes).

After a warm-up the three run in alternation, ``--reps`` times each, in one process; the script
prints the medians, the ratios to transformers' forward, and how many positions and nodes the
batch has.

    RLHF_LAB_SCALE=cpu OMP_NUM_THREADS=1 python benchmarks/teacher_forcing.py [--reps 30] [--device cuda]
"""

from __future__ import annotations

import time

import torch
from common import grpo_batch, parser, reference, report


def main() -> None:
    from rlhf_lab import gpt2, prefixes
    from rlhf_lab.fastpath import distinct
    from rlhf_lab.models import position_ids_from_mask

    args = parser(__doc__, reps=30).parse_args()
    scale, world, model, _ = reference(args)
    rollout = grpo_batch(model, world)
    batch, _ = distinct(rollout)
    mask = batch.attention_mask[:, :-1]
    ids, positions = batch.input_ids[:, :-1], position_ids_from_mask(batch.attention_mask)[:, :-1]
    first = batch.prompt_ids.shape[1] - 1
    model.train()
    weights = gpt2.weights(model)
    real = batch.completion_mask.bool()
    grad = torch.randn(len(batch), real.shape[1], model.config.vocab_size, generator=torch.Generator().manual_seed(1))
    grad = grad.to(ids.device) * real[..., None]
    sync = torch.cuda.synchronize if ids.device.type == "cuda" else (lambda: None)

    sides = {
        "transformers": lambda: model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, first:],
        "row by row": lambda: gpt2.forward(weights, ids, mask, positions, first),
        "shared prefixes": lambda: prefixes.forward(weights, ids, mask, positions, first),
    }
    expected = sides["transformers"]().detach()
    for name, fn in sides.items():  # the same logits on every real position
        torch.testing.assert_close(fn().detach()[real], expected[real], rtol=1e-4, atol=1e-4, msg=name)

    def step(fn) -> float:
        model.zero_grad(set_to_none=True)
        sync()
        start = time.perf_counter()
        (fn() * grad).sum().backward()
        sync()
        return time.perf_counter() - start

    for fn in sides.values():  # warm-up
        step(fn)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.reps):
        for name, fn in sides.items():
            times[name].append(step(fn))
    positions_real = int(mask.sum())
    prefix_set = {tuple(row[: p + 1]) for row, m in zip((ids * 2 + mask).tolist(), mask.tolist())
                  for p in range(len(row)) if m[p]}
    print(f"world={world.name} scale={scale.name} device={scale.device} threads={torch.get_num_threads()} rows={len(rollout)} "
          f"distinct={len(batch)} real positions={positions_real} distinct prefixes={len(prefix_set)}")
    report(times, "transformers", "forward+backward")


if __name__ == "__main__":
    main()
