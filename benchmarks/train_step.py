"""One policy-gradient training step of a tiny policy, eager and replayed as a CUDA graph.

A GRPO-sized batch (16 prompts × G = 8 samples of the pretrained reviews-world reference, padded
to one width) with fixed advantages goes through the step every trainer takes: the written-out
GPT-2 forward (``gpt2.forward``), the per-token log-probs of the sampled tokens, the loss
−Σ A·log π / Σ mask, backward, gradient clipping at norm 1 and a fused Adam step. On a GPU the
same step is also recorded once as a CUDA graph (forward, backward, clipping and Adam with
``capturable=True``) and replayed. Both run from the same weights on the same batch; after the
timed steps their weights must agree (the graph computes what eager computes), then the script
prints the medians and the ratio. The trainers themselves do not record their steps (their
batches change shape from step to step); this measures what a fixed-shape step would gain.

    RLHF_LAB_SCALE=cpu python benchmarks/train_step.py --device cuda [--reps 50]
"""

from __future__ import annotations

import copy
import time

import torch
from common import grpo_batch, parser, reference, report


def main() -> None:
    from rlhf_lab import gpt2
    from rlhf_lab.models import position_ids_from_mask

    args = parser(__doc__, reps=50).parse_args()
    scale, world, ref, _ = reference(args)
    device = ref.device
    rollout = grpo_batch(ref, world)
    ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], dim=1)
    mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], dim=1)
    positions = position_ids_from_mask(mask)
    first = rollout.prompt_ids.shape[1] - 1
    targets, real = rollout.completion_ids, rollout.completion_mask.float()
    advantages = torch.randn(len(rollout), generator=torch.Generator().manual_seed(1)).to(device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def make(capturable: bool):
        policy = copy.deepcopy(ref).train()
        params = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=1e-4, fused=cuda, foreach=None if cuda else True,
                                     capturable=capturable)
        weights = gpt2.weights(policy)

        def step() -> torch.Tensor:
            logits = gpt2.forward(weights, ids[:, :-1], mask[:, :-1], positions[:, :-1], first)  # (B, Tc, V)
            logp = torch.log_softmax(logits.float(), dim=-1).gather(2, targets[..., None]).squeeze(2)
            loss = -(advantages[:, None] * logp * real).sum() / real.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            return loss.detach()

        return policy, optimizer, step

    eager_policy, eager_opt, eager_step = make(capturable=False)

    def eager() -> None:
        eager_opt.zero_grad(set_to_none=True)
        eager_step()

    sides = {"eager": eager}
    if cuda:
        graph_policy, graph_opt, graph_step = make(capturable=True)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        snapshot = {k: v.clone() for k, v in graph_policy.state_dict().items()}
        with torch.cuda.stream(stream):  # warm-up off the main stream, as CUDA graphs require
            for _ in range(3):
                graph_opt.zero_grad(set_to_none=True)
                graph_step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        graph_opt.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.cuda.graph(graph):
            graph_step()
        sync()
        print(f"recorded the step as a CUDA graph in {time.perf_counter() - start:.2f} s")
        # both sides start from the reference's weights and a fresh optimizer state
        with torch.no_grad():
            graph_policy.load_state_dict(snapshot)
            for state in graph_opt.state.values():  # step count and both moments back to 0, in place
                for value in state.values():
                    value.zero_()
        sides["CUDA graph"] = graph.replay

    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.reps):
        for name, fn in sides.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    print(f"world={world.name} scale={scale.name} device={device} threads={torch.get_num_threads()} "
          f"rows={len(rollout)} width={ids.shape[1]} params={sum(p.numel() for p in ref.parameters()):,}")
    if cuda:  # the same number of steps from the same start: the same weights
        torch.set_grad_enabled(False)
        drift = max(float((a - b).abs().max()) for a, b in zip(eager_policy.parameters(), graph_policy.parameters()))
        moved = max(float((a - b).abs().max()) for a, b in zip(eager_policy.parameters(), ref.parameters()))
        assert drift < 1e-3 * moved, f"the graph's weights drifted from eager's: {drift:.2e} (moved {moved:.2e})"
        print(f"after {args.reps} steps each: weights moved {moved:.2e}, graph vs eager differ by {drift:.2e}")
    report(times, "eager", "step", digits=3)


if __name__ == "__main__":
    main()
