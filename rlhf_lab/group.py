"""GRPO's math: group-relative advantages and the clipped per-token loss, as pure functions.

G responses are sampled for each of N prompts, so the rewards form an (N, G) table; the
advantage of a response is its reward relative to its group, with no value model:

* :func:`group_advantages` — (r − group mean) / (group std + eps): GRPO; scaled by the batch's
  std, or not at all (Dr. GRPO), on request;
* :func:`rloo_advantages` — r minus the mean of the other G − 1 rewards: RLOO;
* :func:`kl_reward_advantages` — GRPO's advantages with a KL penalty applied after the
  standardisation (GRPO's ``kl_placement="reward"``).

Each response's advantage is broadcast to its tokens in :func:`grpo_loss`, a clipped per-token
surrogate plus β·k3, averaged in one of four ways (``loss_type``: GRPO, BNPO, Dr. GRPO, DAPO).
``algos/grpo.py`` trains with these and re-exports them. GAE, the advantage of the
actor–critic trainers, is in ``core.py``. Introduced in chapter 08.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_lab.core import kl_estimate, masked_mean
from rlhf_lab.validate import check_choice, check_float, check_int, check_tensor

ADV_SCALES = ("group", "batch", "none")  # what group_advantages divides by
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")  # how grpo_loss averages the token losses


def _check_groups(rewards: Tensor) -> None:
    check_tensor("rewards", rewards)
    if rewards.dim() != 2 or rewards.shape[1] < 2 or rewards.shape[0] < 1:
        raise ValueError(
            f"rewards must have shape (N, G) with N >= 1 and group size G >= 2; got {tuple(rewards.shape)}"
        )
    check_tensor("rewards", rewards, finite=True)


def group_advantages(rewards: Tensor, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """Group-relative advantages (r − group mean) / (std + eps), as TRL's GRPOTrainer computes them.

    The std is Bessel-corrected (divides by G − 1, like ``torch.std`` and TRL's ``nanstd``).
    ``scale="batch"`` still subtracts each group's mean but divides by the std of all N·G rewards
    (TRL's ``scale_rewards="batch"``); ``scale="none"`` only subtracts the group mean (Dr. GRPO).
    A group whose rewards are all equal gets advantage 0: it gives no gradient.

    Args:
        rewards: reward of each of the G responses to each of the N prompts (float, or integer
            0/1 from a verifier).
        scale: ``"group"`` (GRPO), ``"batch"`` or ``"none"`` (Dr. GRPO).
        eps: added to the std before dividing; TRL uses 1e-4.

    Shape:
        rewards: (N, G), introduced in chapter 08.

    Returns:
        Advantages of shape (N, G), detached from ``rewards``.

    Raises:
        ValueError: if rewards is not (N, G) with G ≥ 2, scale is unknown or eps < 0.

    Introduced in chapter 08 (GRPO).
    """
    _check_groups(rewards)
    check_choice("scale", scale, ADV_SCALES)
    check_float("eps", eps, ge=0)
    # integer 0/1 rewards (a verifier's) are accepted: mean and std need a floating dtype
    rewards = rewards.detach() if rewards.is_floating_point() else rewards.detach().float()
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "none":
        return centered
    std = rewards.std(dim=1, keepdim=True) if scale == "group" else rewards.std()
    # (eq-grpo-adv)  A_i = (r_i − mean(r)) / (std(r) + eps); a group of equal rewards has
    # centered = 0, and gets 0 even with eps = 0 (where 0 / 0 would be NaN)
    return torch.where(centered == 0, torch.zeros_like(centered), centered / (std + eps))


def rloo_advantages(rewards: Tensor) -> Tensor:
    """RLOO advantages: each reward minus the mean of the other G − 1 rewards of its group.

    Equal to G/(G − 1)·(r_i − group mean); the baseline excludes the sample itself, so the
    policy gradient stays unbiased (RLOO, Ahmadian et al. 2024; TRL's RLOOTrainer).

    Args:
        rewards: reward of each of the G responses to each of the N prompts (float, or integer
            0/1 from a verifier).

    Shape:
        rewards: (N, G), introduced in chapter 08.

    Returns:
        Advantages of shape (N, G), detached from ``rewards``.

    Raises:
        ValueError: if rewards is not (N, G) with G ≥ 2.

    Introduced in chapter 08 (GRPO).
    """
    _check_groups(rewards)
    rewards = rewards.detach()
    group_size = rewards.shape[1]
    # (eq-rloo)  A_i = r_i − (1/(G − 1)) Σ_{j≠i} r_j
    return rewards - (rewards.sum(dim=1, keepdim=True) - rewards) / (group_size - 1)


def kl_reward_advantages(rewards: Tensor, seq_kl: Tensor, beta: float, scale: str = "group",
                         advantage: str = "grpo") -> Tensor:
    """GRPO advantages with the KL penalty on the reward side (``kl_placement="reward"``).

    A_i = (r_i − mean r) / (std r + eps) − β (k1_i − mean k1), per group: the raw rewards are
    standardised first and the sequence KL penalty k1_i = log π(o_i) − log π_ref(o_i) is applied
    after, centred on its group mean; that mean contains k1_i itself, so the penalty's expected
    gradient is scaled by (G − 1)/G (an effective β(G − 1)/G, as chapter 02's batch mean).
    Subtracting β·k1 from the rewards *before* standardising would divide it by the group std;
    in a group of equal rewards that std is only the spread of β·k1, so the advantages come out
    of size ~1 for every β with β·std(k1) ≫ eps (chapter 08 measures it). Here β → 0 gives
    A → 0 in such a group.

    Args:
        rewards: raw reward of each of the G responses to each of the N prompts.
        seq_kl: k1 summed over each response's tokens, same shape.
        beta: β ≥ 0.
        scale: as in :func:`group_advantages`.

    Shape:
        rewards: (N, G); seq_kl: (N, G) → (N, G). Introduced in chapter 08.
    """
    _check_groups(rewards)
    check_tensor("seq_kl", seq_kl, shape=rewards.shape, finite=True, dims=f"{tuple(rewards.shape)}, that of rewards")
    check_float("beta", beta, ge=0)
    if advantage not in ("grpo", "rloo"):
        raise ValueError(f"advantage must be one of ('grpo', 'rloo'); got {advantage!r}")
    adv = rloo_advantages(rewards) if advantage == "rloo" else group_advantages(rewards, scale)
    seq_kl = seq_kl.detach().to(adv.dtype)
    # (eq-kl-reward-adv)  A_i = Â_i − β (k1_i − mean_group k1)
    return adv - beta * (seq_kl - seq_kl.mean(dim=1, keepdim=True))


# -- the loss ------------------------------------------------------------------------------------
def grpo_loss(
    logp: Tensor,
    logp_old: Tensor,
    logp_ref: Tensor | None,
    adv: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    beta: float = 0.0,
    loss_type: str = "grpo",
    max_tokens: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The GRPO family's loss: a clipped per-token surrogate plus β·k3, aggregated per loss_type.

    Per token, with ρ = π_θ/π_old and the sequence's advantage A:
    ℓ_t = −min(ρA, clip(ρ, 1 − ε_low, 1 + ε_high)A) + β·k3_t, where
    k3_t = π_ref/π_θ − log(π_ref/π_θ) − 1 (the "KL in the loss"; its gradient is that of the
    forward KL(π_ref‖π_θ), see chapter 08). Aggregation over the valid tokens:

    * ``grpo`` — mean over each sequence's tokens, then mean over sequences (length bias: a
      token of a short response weighs more);
    * ``bnpo`` and ``dapo`` — one mean over all tokens of the batch;
    * ``dr_grpo`` — sum over all tokens / (B · max_tokens), a constant normaliser.

    This is TRL 1.16's ``GRPOTrainer._compute_loss`` (token-level importance sampling, no vLLM
    correction, no entropy mask) for one batch and no gradient accumulation. There, bnpo
    divides by the local micro-batch's token count and dapo by the token count of the whole
    generation batch across accumulation steps and processes; for a single batch both are the
    plain token mean used here. TRL further divides the loss by the number of gradient
    accumulation steps (not done here); like TRL, an empty sequence's length counts as 1.

    Args:
        logp: log π_θ of each sampled token; carries the gradient.
        logp_old: log π_old of the same tokens, from the sampling policy (detached).
        logp_ref: log π_ref of the same tokens (detached); may be None when beta is 0.
        adv: one advantage per sequence, e.g. from :func:`group_advantages`, flattened.
        mask: 1 (or True) for completion tokens, 0 for padding.
        eps_low: ε_low in (0, 1), the lower clip 1 − ε_low; typical 0.2.
        eps_high: ε_high > 0, the upper clip 1 + ε_high; None means eps_low (DAPO: 0.28).
        beta: β ≥ 0, the weight of the k3 term; DeepSeekMath 0.04, TRL's default 0.
        loss_type: ``"grpo"``, ``"bnpo"``, ``"dr_grpo"`` or ``"dapo"``.
        max_tokens: the normaliser of dr_grpo (TRL's ``max_completion_length``), required for
            it and at least the longest sequence; not used by the other loss types.

    Shape:
        logp: (B, T), introduced in chapter 08.
        logp_old: (B, T), introduced in chapter 04.
        logp_ref: (B, T), introduced in chapter 04.
        adv: (B,), introduced in chapter 08.
        mask: (B, T), introduced in chapter 04.

    Returns:
        ``(loss, stats)``. stats, means over valid tokens as TRL logs them:
        ``clip_ratio/low_mean`` (ρ < 1 − ε_low and A < 0), ``clip_ratio/high_mean``
        (ρ > 1 + ε_high and A > 0), ``clip_ratio/region_mean`` (either); and ``kl``, the mean
        k3, when beta > 0.

    Raises:
        ValueError: on mismatched shapes, eps_low outside (0, 1), eps_high ≤ 0, beta < 0,
            a missing logp_ref with beta > 0, an unknown loss_type, or a bad max_tokens.

    Introduced in chapter 08 (GRPO).
    """
    tensors = {"logp": logp, "logp_old": logp_old, "mask": mask, "adv": adv}
    if logp_ref is not None:
        tensors["logp_ref"] = logp_ref
    for name, x in tensors.items():
        check_tensor(name, x, kind={"mask": "mask", "adv": "real"}.get(name, "float"))
    shapes = {name: x.shape for name, x in tensors.items() if name != "adv"}
    if logp.dim() != 2 or len(set(shapes.values())) != 1:
        raise ValueError(f"logp, logp_old, logp_ref and mask must share a shape (B, T): {shapes}")
    if adv.shape != logp.shape[:1]:
        raise ValueError(f"adv must have shape (B,) = {tuple(logp.shape[:1])}; got {tuple(adv.shape)}")
    check_float("eps_low", eps_low, gt=0.0, lt=1.0)
    check_float("eps_high", eps_high, gt=0.0, none=True)
    eps_high = eps_low if eps_high is None else eps_high
    check_float("beta", beta, ge=0.0)
    if beta > 0 and logp_ref is None:
        raise ValueError("logp_ref is required when beta > 0")
    check_choice("loss_type", loss_type, LOSS_TYPES)
    check_int("max_tokens", max_tokens, ge=1, none=True)
    valid = mask.bool()
    for name, x in tensors.items():
        check_tensor(name, x, finite=True, mask=None if name == "adv" else valid)
    longest = int(valid.sum(dim=1).max().item()) if valid.numel() else 0
    if loss_type == "dr_grpo" and (max_tokens is None or max_tokens < max(longest, 1)):
        raise ValueError(f"max_tokens must be an int >= the longest sequence ({longest}) for dr_grpo; got {max_tokens}")
    # padding may hold anything (inf, nan): zero it first, so that neither the loss nor its
    # gradient sees it
    logp = torch.where(valid, logp, 0.0)
    logp_old = torch.where(valid, logp_old.detach(), 0.0)
    if logp_ref is not None:
        logp_ref = torch.where(valid, logp_ref.detach(), 0.0)
    adv = adv.detach().to(logp.dtype).unsqueeze(1)  # (B, 1): one advantage for every token

    # (eq-grpo-clip)  ℓ_t = −min(ρ_t A, clip(ρ_t, 1 − ε_low, 1 + ε_high) A)
    ratio = torch.exp(logp - logp_old)
    clipped_ratio = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    per_token = -torch.min(ratio * adv, clipped_ratio * adv)
    if beta > 0:
        # (eq-grpo-kl)  ℓ_t += β k3_t,  k3 = π_ref/π_θ − log(π_ref/π_θ) − 1
        kl = kl_estimate(logp_ref - logp, "k3")
        per_token = per_token + beta * kl

    token_sum = torch.where(valid, per_token, 0.0).sum(dim=1)  # (B,)
    if loss_type == "grpo":
        # (eq-grpo-agg)  L = (1/B) Σ_i (1/|o_i|) Σ_t ℓ_{i,t}; an empty sequence counts as length 1
        loss = (token_sum / valid.sum(dim=1).clamp(min=1)).mean()
    elif loss_type == "dr_grpo":
        # (eq-dr-grpo-agg)  L = Σ_{i,t} ℓ_{i,t} / (B · max_tokens)
        loss = token_sum.sum() / (logp.shape[0] * max_tokens)
    else:
        # (eq-dapo-agg)  L = Σ_{i,t} ℓ_{i,t} / Σ_i |o_i|
        loss = token_sum.sum() / valid.sum().clamp(min=1)

    with torch.no_grad():
        low = (ratio < 1.0 - eps_low) & (adv < 0)
        high = (ratio > 1.0 + eps_high) & (adv > 0)
        stats = {
            "clip_ratio/low_mean": masked_mean(low.to(logp.dtype), valid).item(),
            "clip_ratio/high_mean": masked_mean(high.to(logp.dtype), valid).item(),
            "clip_ratio/region_mean": masked_mean((low | high).to(logp.dtype), valid).item(),
        }
        if beta > 0:
            stats["kl"] = masked_mean(kl.detach(), valid).item()
    return loss, stats
