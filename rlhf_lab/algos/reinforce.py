"""REINFORCE: the score-function policy gradient with an optional baseline.

The gradient of J(θ) = E_{y~π_θ}[R(y)] is E[(R − b)∇log π_θ(y)] for any baseline b that does
not depend on the sampled y; the baseline leaves the gradient unbiased and lowers its variance.
Introduced in chapter 02.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BASELINES = ("none", "mean")


def reinforce_loss(
    seq_logp: Tensor,
    rewards: Tensor,
    baseline: str | float | Tensor = "none",
) -> tuple[Tensor, dict[str, float]]:
    """Surrogate loss whose gradient is the REINFORCE estimate −mean((R − b)∇log π(y)).

    Args:
        seq_logp: log π_θ(y | x) of each sampled sequence, summed over its tokens; carries the
            gradient.
        rewards: scalar reward R of each sequence; treated as a constant.
        baseline: b. ``"none"`` (b = 0), ``"mean"`` (the batch mean reward; it includes each
            sample's own reward, a bias of order 1/B that RLOO in chapter 08 removes), a number,
            or a tensor of shape () or (B,) such as a value estimate. Always detached.

    Shape:
        seq_logp: (B,), introduced in chapter 02.
        rewards: (B,), introduced in chapter 02.

    Returns:
        ``(loss, stats)`` with stats ``reward_mean``, ``baseline`` (its batch mean) and
        ``adv_std`` (population std of R − b over the batch, so B = 1 gives 0, not NaN).

    Raises:
        ValueError: if the shapes differ or are not (B,), or the baseline is not one of the above.

    Introduced in chapter 02 (policy gradient).
    """
    if seq_logp.dim() != 1 or seq_logp.shape != rewards.shape:
        raise ValueError(
            f"seq_logp and rewards must both have shape (B,); got {tuple(seq_logp.shape)} "
            f"and {tuple(rewards.shape)}"
        )
    rewards = rewards.detach().to(seq_logp.dtype)
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(
                f"baseline must be one of {BASELINES}, a number or a tensor; got {baseline!r}"
            )
        b = rewards.mean() if baseline == "mean" else torch.zeros((), dtype=rewards.dtype)
    elif isinstance(baseline, Tensor):
        if baseline.dim() > 1 or (baseline.dim() == 1 and baseline.shape != rewards.shape):
            raise ValueError(
                f"baseline tensor must have shape () or {tuple(rewards.shape)}; "
                f"got {tuple(baseline.shape)}"
            )
        b = baseline.detach().to(rewards.dtype)
    elif isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        if not math.isfinite(baseline):
            raise ValueError(f"baseline must be finite; got {baseline!r}")
        b = torch.tensor(float(baseline), dtype=rewards.dtype)
    else:
        raise ValueError(
            f"baseline must be 'none', 'mean', a finite number or a tensor; got {baseline!r}"
        )

    # (R − b): a constant weight on each sample's score ∇log π(y); no gradient flows through it
    adv = rewards - b
    # (eq-reinforce)  L(θ) = −(1/B) Σ_i (R_i − b) log π_θ(y_i)
    loss = -(adv * seq_logp).mean()

    stats = {
        "reward_mean": rewards.mean().item(),
        "baseline": b.float().mean().item(),
        "adv_std": adv.std(correction=0).item(),
    }
    return loss, stats
