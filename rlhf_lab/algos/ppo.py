"""PPO: the clipped importance-ratio surrogate and the clipped value loss.

Two look-alike symbols: ρ_t = π_θ(a_t | s_t) / π_old(a_t | s_t) is the importance *ratio*;
r_t is the per-token *reward*. ε (``clip_eps``) bounds how far one update may move ρ from 1.
Introduced in chapter 04.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_lab.core import kl_penalty, masked_mean


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{', '.join(shapes)} must have the same shape; got {shapes}")


def ppo_policy_loss(
    logp: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_eps: float,
) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate, −min(ρA, clip(ρ, 1 − ε, 1 + ε)A), averaged over valid tokens.

    Aggregation: one masked mean over every valid token of the batch (as CleanRL and TRL's PPO
    did), so each token weighs the same and a long response weighs more than a short one.
    The clip is one-sided per sign of A: with A > 0 only ρ > 1 + ε is clipped, with A < 0 only
    ρ < 1 − ε; on the other side the unclipped term is the smaller one and keeps its gradient.

    Args:
        logp: log π_θ of each sampled token; carries the gradient.
        logp_old: log π_old of the same tokens, from the policy that sampled them (detached).
        adv: advantage Â_t of each token, e.g. from GAE (detached).
        mask: 1 (or True) for response tokens, 0 for prompt and padding.
        clip_eps: ε, in (0, 1); typical 0.2.

    Shape:
        logp: (B, T), introduced in chapter 04.
        logp_old: (B, T), introduced in chapter 04.
        adv: (B, T), introduced in chapter 03.
        mask: (B, T), introduced in chapter 04.

    Returns:
        ``(loss, stats)``. stats: ``clipfrac``, the fraction of valid tokens where the clipped
        term is the one chosen and differs from the unclipped one, i.e. (ρ > 1 + ε and A > 0) or
        (ρ < 1 − ε and A < 0) (CleanRL counts |ρ − 1| > ε whatever the sign of A, which is
        larger); ``approx_kl``, the mean over valid tokens of (ρ − 1) − log ρ, the k3 estimate of
        KL(π_old ‖ π_θ) from samples of π_old (as CleanRL and TRL); ``ratio_mean``.

    Raises:
        ValueError: if the shapes differ or clip_eps is not in (0, 1).

    Introduced in chapter 04 (PPO).
    """
    _check_same_shape(logp=logp, logp_old=logp_old, adv=adv, mask=mask)
    if not 0.0 < clip_eps < 1.0:
        raise ValueError(f"clip_eps must be in (0, 1); got {clip_eps}")
    valid = mask.bool()
    # padding may hold anything (inf, nan): zero it first, so that neither the loss nor its
    # gradient sees it
    logp = torch.where(valid, logp, 0.0)
    logp_old = torch.where(valid, logp_old.detach(), 0.0)
    adv = torch.where(valid, adv.detach(), 0.0)

    # (eq-ppo-ratio)  ρ_t = π_θ(a_t|s_t) / π_old(a_t|s_t)
    ratio = torch.exp(logp - logp_old)
    # (eq-ppo-clip)  L_t = −min(ρ_t Â_t, clip(ρ_t, 1 − ε, 1 + ε) Â_t)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = masked_mean(-torch.min(unclipped, clipped), mask)

    with torch.no_grad():
        # the clipped branch is active exactly where it is strictly smaller than the unclipped one
        is_clipped = ((ratio > 1.0 + clip_eps) & (adv > 0)) | ((ratio < 1.0 - clip_eps) & (adv < 0))
        # the samples come from π_old, so k3 with "policy" π_old and "reference" π_θ
        # estimates KL(π_old‖π_θ)
        approx_kl = kl_penalty(logp_old, logp.detach(), kind="k3")
        stats = {
            "clipfrac": masked_mean(is_clipped.to(logp.dtype), mask).item(),
            "approx_kl": masked_mean(approx_kl, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
    return loss, stats


def value_loss(
    values: Tensor,
    values_old: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_eps: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Squared error of the value head, optionally clipped around the old values.

    With ``clip_eps`` set, the loss at each token is the larger of the unclipped and the clipped
    squared error, so the clip can only make the loss bigger (PPO2 / TRL's PPO convention). One
    masked mean over every valid token of the batch, times ½.

    Args:
        values: V_θ(s_t) from the value head; carries the gradient.
        values_old: V_old(s_t) recorded at rollout time (detached).
        returns: the regression target, e.g. Â_t + V_old(s_t) from GAE (detached).
        mask: 1 (or True) for response tokens, 0 for prompt and padding.
        clip_eps: the value clip range in reward units (> 0, typical 0.2), or None for no clip.
            It is an absolute range, not a ratio, so it is not restricted to (0, 1).

    Shape:
        values: (B, T), introduced in chapter 03.
        values_old: (B, T), introduced in chapter 04.
        returns: (B, T), introduced in chapter 03.
        mask: (B, T), introduced in chapter 04.

    Returns:
        ``(loss, stats)``. stats: ``value_clipfrac``, the fraction of valid tokens where the
        clipped error is the larger one (0 without a clip); ``value_mean``.

    Raises:
        ValueError: if the shapes differ or clip_eps is not None and not > 0.

    Introduced in chapter 04 (PPO).
    """
    _check_same_shape(values=values, values_old=values_old, returns=returns, mask=mask)
    if clip_eps is not None and not clip_eps > 0.0:
        raise ValueError(f"clip_eps must be None or > 0; got {clip_eps}")
    valid = mask.bool()
    # padding may hold anything (inf, nan): zero it first, so that neither the loss nor its
    # gradient sees it
    values = torch.where(valid, values, 0.0)
    values_old = torch.where(valid, values_old.detach(), 0.0)
    returns = torch.where(valid, returns.detach(), 0.0)

    sq_err = (values - returns) ** 2
    if clip_eps is None:
        # (eq-value-loss)  L^V = ½ (V_θ − R)²
        loss = 0.5 * masked_mean(sq_err, mask)
        clipfrac = 0.0
    else:
        # (eq-value-clip)  L^V = ½ max((V_θ − R)², (clip(V_θ, V_old − ε, V_old + ε) − R)²)
        values_clipped = values_old + torch.clamp(values - values_old, -clip_eps, clip_eps)
        sq_err_clipped = (values_clipped - returns) ** 2
        loss = 0.5 * masked_mean(torch.max(sq_err, sq_err_clipped), mask)
        clipfrac = masked_mean((sq_err_clipped > sq_err).to(values.dtype), mask).item()

    stats = {"value_clipfrac": clipfrac, "value_mean": masked_mean(values.detach(), mask).item()}
    return loss, stats
