"""Pure tensor math shared by every algorithm: log-probs, entropy, KL estimators, masked
statistics, GAE and the critic's explained variance.

Every function here is pure (tensors in, tensors out, no state) and checks its arguments
(``validate.py``: type, dtype, shape, NaN), raising an error with the argument's name, because a
silently broadcast mask is the most common bug in RLHF code. Shapes: B batch, T tokens, V vocab.

Masks mark valid positions: a bool tensor, or a 0/1 float tensor (any nonzero entry counts as
valid). Padded positions are selected out with ``torch.where`` rather than multiplied by zero,
so a padded ``inf`` or ``nan`` cannot leak into a result (``0 * inf`` is ``nan``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_lab.validate import (check_bool, check_choice, check_float, check_ids, check_int, check_logprobs,
                               check_mask, check_tensor)

KL_KINDS = ("k1", "k2", "k3")


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """Log-probability of each token under the softmax of its logits.

    ``logits[b, t]`` must already be the distribution that produced ``tokens[b, t]``. A causal
    LM's output at position t predicts token t + 1, so the caller shifts first:
    ``token_logprobs(out.logits[:, :-1], input_ids[:, 1:])``.

    Args:
        logits: Unnormalised scores. Entries of ``-inf`` (tokens masked out) are allowed.
        tokens: Integer token ids, aligned with ``logits``.

    Returns:
        ``log softmax(logits)[b, t, tokens[b, t]]``.

    Shape:
        logits (B, T, V), tokens (B, T) → (B, T).

    Raises:
        ValueError: ``tokens`` are not integer ids in 0 … V − 1 of shape ``logits.shape[:-1]``.

    Introduced in chapter 02.
    """
    check_tensor("logits", logits, kind="float", finite=True, neg_inf=True)
    check_tensor("tokens", tokens, kind="int")
    if logits.dim() < 2 or tokens.shape != logits.shape[:-1]:
        raise ValueError(
            f"tokens has shape {tuple(tokens.shape)} but logits has shape {tuple(logits.shape)}; "
            "tokens must have shape logits.shape[:-1] (shift logits and tokens before calling)"
        )
    check_ids("tokens", tokens, logits.shape[-1], "token ids (V = logits.shape[-1])")
    logp_all = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    return logp_all.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)  # (B, T)


def sequence_logprobs(token_logp: Tensor, mask: Tensor, average: bool = False) -> Tensor:
    """Log-probability of each sequence: the masked sum of its token log-probs, or their mean.

    The sum is log π(y) of the whole completion (what DPO compares); the mean over valid tokens
    is the length-normalised score that IPO and SimPO use.

    Args:
        token_logp: Per-token log-probs, e.g. from :func:`token_logprobs`.
        mask: Valid tokens (bool or 0/1). Padded entries are ignored whatever their value.
        average: If True, divide by the number of valid tokens (a row with none gives ``nan``).

    Returns:
        One log-probability per sequence.

    Shape:
        token_logp (B, T), mask (B, T) → (B,).

    Raises:
        ValueError: if ``mask`` does not have the shape of ``token_logp``.

    Introduced in chapter 02; the length-averaged form in chapter 07.
    """
    valid = check_mask("mask", mask, check_tensor("token_logp", token_logp, kind="float"), "token_logp")
    check_logprobs("token_logp", token_logp, mask=valid)
    check_bool("average", average)
    total = torch.where(valid, token_logp, 0.0).sum(dim=-1)
    return total / valid.sum(dim=-1) if average else total


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy H = −Σ_v p_v log p_v of the softmax of ``logits``, in nats.

    Computed from ``log_softmax`` (a logsumexp, stable for large logits). Logits of ``-inf``
    (tokens masked out) contribute 0, in the value and in its gradient: the naive
    ``p * log p`` would give ``0 * -inf = nan`` there. A row whose logits are all ``-inf``
    is not a distribution and gives ``nan``.

    Args:
        logits: Unnormalised scores over the last dimension.

    Returns:
        The entropy of each distribution.

    Shape:
        logits (..., V) → (...).

    Introduced in chapter 02; chapter 09 tracks it through entropy collapse.
    """
    check_tensor("logits", logits, kind="float", finite=True, neg_inf=True, nonempty=True)
    logp = torch.log_softmax(logits, dim=-1)  # (..., V)
    p = logp.exp()
    # masked_fill, not where: its backward sends a zero gradient to the filled entries.
    logp_finite = logp.masked_fill(torch.isneginf(logp), 0.0)
    return -(p * logp_finite).sum(dim=-1)


def kl_penalty(logp: Tensor, logp_ref: Tensor, kind: str = "k1") -> Tensor:
    """Per-sample estimate of KL(π‖π_ref) from tokens sampled from π (Schulman, 2020).

    Direction: the samples come from π, the policy being trained, so the estimators are
    importance-weighted by r = π_ref/π, i.e. log r = ``logp_ref − logp``. Then
    E_π[−log r] = E_π[log π − log π_ref] = KL(π‖π_ref), and E_π[r] = 1, which is why the
    control variate (r − 1) in k3 has mean zero. Taking r = π/π_ref instead (a bug that has
    shipped in public RLHF code) makes k1's mean −KL(π‖π_ref) and leaves k3 biased. To estimate
    KL(π_ref‖π), sample from π_ref and swap the arguments.

    * k1 = −log r — unbiased, high variance, negative on many samples.
    * k2 = ½ (log r)² — biased (its mean is not the KL), low variance; its expected gradient
      is ∇KL(π‖π_ref).
    * k3 = (r − 1) − log r — unbiased and ≥ 0 on every sample. Used directly as a loss with
      the samples held fixed (as in GRPO), its expected gradient is that of the forward
      KL(π_ref‖π), not of KL(π‖π_ref) (Liu et al. 2025, arXiv 2510.01555).

    Args:
        logp: log π of the sampled tokens.
        logp_ref: log π_ref of the same tokens.
        kind: ``"k1"``, ``"k2"`` or ``"k3"``.

    Returns:
        The per-sample estimate; its mean over samples from π estimates KL(π‖π_ref).

    Shape:
        logp (...), logp_ref (...) → (...), the same shape.

    Raises:
        ValueError: an unknown ``kind``, shapes that differ, ``logp`` not log-probs (> 0, NaN).

    Introduced in chapter 04; k3 as a loss term in chapter 08.
    """
    check_choice("kind", kind, KL_KINDS)
    if check_tensor("logp_ref", logp_ref, kind="float").shape != check_tensor("logp", logp, kind="float").shape:
        raise ValueError(f"logp_ref has shape {tuple(logp_ref.shape)} but logp has shape {tuple(logp.shape)}")
    check_logprobs("logp", logp)  # π's log-probs of its own samples: ≤ 0 (logp_ref may be any log-ratio)
    check_tensor("logp_ref", logp_ref, finite=True, neg_inf=True)
    return kl_estimate(logp_ref - logp, kind)


def kl_estimate(log_r: Tensor, kind: str) -> Tensor:
    """:func:`kl_penalty` of log r = log π_ref − log π, unchecked (for losses that check their inputs)."""
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    # k3 = (r − 1) − log r. expm1 keeps the leading ½(log r)² accurate near r = 1, where
    # exp(log r) − 1 − log r would cancel to rounding noise.
    return torch.expm1(log_r) - log_r


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of the valid entries of ``x``, over all of them or along ``dim``.

    Args:
        x: Values. Padded entries are ignored, even if they are ``inf`` or ``nan``.
        mask: Valid entries (bool or 0/1).
        dim: Dimension to reduce; None reduces everything to a scalar.

    Returns:
        The mean; ``nan`` where no entry is valid.

    Shape:
        x (...), mask (...) → () if dim is None, else (...) without ``dim``.

    Raises:
        ValueError: if ``mask`` does not have the shape of ``x`` or a valid entry is NaN/inf.

    Introduced in chapter 04.
    """
    valid = check_mask("mask", mask, x, "x", finite=True)
    check_int("dim", dim, ge=-x.dim(), le=x.dim() - 1, none=True)
    masked = torch.where(valid, x, 0.0)
    if dim is None:
        return masked.sum() / valid.sum()
    return masked.sum(dim) / valid.sum(dim)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Normalise the valid entries of ``x`` to mean 0 and variance 1 (as TRL whitens advantages).

    (x − μ) / √(σ² + 1e-8), with μ the masked mean and σ² the masked unbiased variance
    (Bessel's n − 1, like TRL's ``masked_var``). With ``shift_mean=False`` the mean is added
    back, so only the scale changes (TRL's convention for rewards).

    Args:
        x: Values, e.g. advantages. Padded entries are ignored, even if ``inf`` or ``nan``.
        mask: Valid entries (bool or 0/1); at least two must be valid.
        shift_mean: If False, add μ back after scaling.

    Returns:
        The whitened values; padded positions are 0.

    Shape:
        x (...), mask (...) → (...), the same shape.

    Raises:
        ValueError: if ``mask`` does not have the shape of ``x`` or selects fewer than two
            entries (the unbiased variance needs two).

    Introduced in chapter 04.
    """
    valid = check_mask("mask", mask, x, "x", finite=True)
    check_bool("shift_mean", shift_mean)
    n = int(valid.sum())
    if n < 2:
        raise ValueError(f"mask selects {n} valid entries; whitening needs at least 2")
    mean = masked_mean(x, valid)
    centred = torch.where(valid, x - mean, 0.0)
    var = centred.pow(2).sum() / (n - 1)
    whitened = centred * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = torch.where(valid, whitened + mean, 0.0)
    return whitened


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438).

    δ_t = r_t + γ V_{t+1} − V_t and Â_t = Σ_l (γλ)^l δ_{t+l}, computed backwards in one pass
    over T as Â_t = δ_t + γλ Â_{t+1}. The value after the last valid token is 0 (the episode
    ends there). λ = 0 gives the TD residual δ_t; λ = 1 the Monte Carlo return minus V_t.

    Advantages and returns are targets, so no gradient flows through them (inputs are
    detached).

    Args:
        rewards: Per-token rewards r_t.
        values: Value estimates V_t of the state before token t.
        mask: Valid tokens (bool or 0/1), right-padded: ones then zeros in each row. Padded
            rewards and values are ignored, whatever they hold.
        gamma: Discount γ in [0, 1] (1 for RLHF).
        lam: GAE λ in [0, 1] (0.95 typical): trades bias (λ = 0) for variance (λ = 1).

    Returns:
        ``(advantages, returns)`` with returns = advantages + values; both 0 at padding.

    Shape:
        rewards (B, T), values (B, T), mask (B, T) → advantages (B, T), returns (B, T).

    Raises:
        ValueError: if the shapes differ, ``mask`` is not right-padded, or ``gamma`` or
            ``lam`` is outside [0, 1].

    Introduced in chapter 03.
    """
    if check_tensor("values", values).shape != check_tensor("rewards", rewards).shape:
        raise ValueError(f"values has shape {tuple(values.shape)} but rewards has shape {tuple(rewards.shape)}")
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape (B, T), got {tuple(rewards.shape)}")
    valid = check_mask("mask", mask, rewards, "rewards", finite=True)
    # A hole in the mask would silently end the episode early, so only right padding is allowed.
    if bool((valid[:, 1:] & ~valid[:, :-1]).any()):
        raise ValueError("mask must be right-padded: in each row, ones then zeros")
    check_tensor("values", values, finite=True, mask=valid)
    check_float("gamma", gamma, ge=0.0, le=1.0)
    check_float("lam", lam, ge=0.0, le=1.0)

    # Padding holds no reward and no value, so δ_t = 0 there and V after the last valid token
    # is 0: nothing flows back into the valid prefix, and padded advantages stay 0.
    rewards = torch.where(valid, rewards.detach(), 0.0)
    values = torch.where(valid, values.detach(), 0.0)
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])  # (B,) V_{t+1}
    next_adv = torch.zeros_like(rewards[:, 0])  # (B,) Â_{t+1}
    for t in reversed(range(rewards.shape[1])):
        # δ_t = r_t + γ V_{t+1} − V_t
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        # Â_t = δ_t + γλ Â_{t+1}
        next_adv = delta + gamma * lam * next_adv
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages, advantages + values


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 − Var[R̂ − V] / Var[R̂] over valid tokens: 1 is a perfect critic, 0 no better than a
    constant, below 0 worse than one; ``nan`` when the returns do not vary.

    Shape: values (B, T), returns (B, T), mask (B, T) → a float. Introduced in chapter 03.
    """
    valid = check_mask("mask", mask, values, "values", finite=True)
    check_tensor("returns", returns, shape=values.shape, finite=True, mask=valid, dims="(B, T), that of values")
    var_ret = returns[valid].var()
    return float(1.0 - (returns - values)[valid].var() / var_ret) if var_ret > 0 else float("nan")
