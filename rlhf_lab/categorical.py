"""Exact math on distributions written out in full: π over K outputs as a (..., K) tensor.

The worlds at scales ci and cpu are small enough to list every completion y a policy can write
(``exact.py`` enumerates them and computes log π(y|x) for each). Given those log-probabilities,
the quantities the algorithms only estimate become sums:

    E_π[r]          = Σ_y π(y) r(y)
    KL(π ‖ π_ref)   = Σ_y π(y) (log π(y) − log π_ref(y))                     (eq-kl)
    H(π)            = −Σ_y π(y) log π(y)                                     (eq-entropy)
    π*_β(y)         = π_ref(y) exp(r(y)/β) / Z,   the maximiser of E[r] − β·KL (eq-kl-optimum)
    pass@k          = 1 − (1 − Σ_y π(y) r(y))^k   for a 0/1 reward            (eq-pass-k)
    π_n(v)          = F(v)^n − F⁻(v)^n,  the best of n samples               (eq-bon-exact)
    V^π(prefix)     = E_π[r | the completion starts with the prefix]         (eq-value)

with 0·log 0 = 0. Every function is pure: tensors in, tensors or floats out. Introduced in
chapter 00 (KL, entropy, the optimum π*_β), chapter 03 (exact values), chapter 06 (best-of-n)
and chapter 08 (pass@k).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rlhf_lab.validate import check_float, check_int, check_logprobs, check_probs, check_tensor


# -- KL, entropy, expectations, the KL-regularised optimum, pass@k -----------------------------
def kl_regularized_optimum(logp_ref: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """log π*_β = log π_ref + r/β − log Z: the maximiser of E_π[r] − β·KL(π ‖ π_ref) (eq-kl-optimum).

    β → ∞ gives π_ref; β → 0 puts all mass on the best output(s) that π_ref can produce.

    Shape: logp_ref (..., K), rewards (..., K) → (..., K).
    """
    check_float("beta (β, the KL coefficient)", beta, gt=0)
    _check_like(check_logprobs("logp_ref", logp_ref, normalized=True), rewards, "rewards")
    # eq-kl-optimum; logsumexp inside log_softmax keeps it finite even for r/β in the thousands
    return torch.log_softmax(logp_ref + rewards / beta, dim=-1)


PASS_K = (1, 4, 16)  # the k of the exact pass@k logged on verifiable (0/1-reward) worlds


def pass_at_k(logp: torch.Tensor, gold: torch.Tensor, k: int) -> float:
    """Exact pass@k = mean over prompts of 1 − (1 − p_x)^k, p_x = Σ_y π(y|x)·gold(x, y).

    The chance that at least one of k independent samples is right, for a 0/1 gold reward.

    Shape:
        logp: (P, K) exact log-probs; gold: (P, K) in {0, 1}. Introduced in chapter 08.
    """
    _check_like(check_logprobs("logp", logp, normalized=True), gold, "gold")
    if bool(((gold != 0) & (gold != 1)).any()):
        raise ValueError("gold must be a 0/1 verifier's rewards; it has values other than 0 and 1")
    check_int("k", k, ge=1)
    p = (logp.double().exp() * gold.double()).sum(-1).clamp(0.0, 1.0)  # (P,) pass@1 per prompt
    # (eq-pass-k)  pass@k = 1 − (1 − p)^k
    return float((1.0 - (1.0 - p) ** k).mean())


def _check_like(logp: Tensor, other: Tensor, name: str, finite: bool = True) -> None:
    """``other`` a real tensor of exactly ``logp``'s shape (no broadcasting), finite unless told."""
    check_tensor(name, other, shape=logp.shape, finite=finite, dims=f"{tuple(logp.shape)}, that of the log-probs")


def _p_and_logp(logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(π, log π with the −∞ entries of zero-probability outputs replaced by 0), after checking that
    ``logp`` holds log-probs of whole distributions over its last dimension."""
    p = check_logprobs("logp", logp, normalized=True).exp()
    return p, torch.where(p > 0, logp, torch.zeros_like(logp))


def kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """KL(π ‖ π_ref) = Σ π (log π − log π_ref) over the last dim (eq-kl); 0·log 0 = 0.

    It is +∞ when π puts mass where π_ref has none. Shape: (..., K), (..., K) → (...).
    """
    p, logp_safe = _p_and_logp(logp)
    _check_like(check_logprobs("logp_ref", logp_ref, normalized=True), logp, "logp", finite=False)
    ref_safe = torch.where(p > 0, logp_ref, torch.zeros_like(logp_ref))
    return (p * (logp_safe - ref_safe)).sum(-1)


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """H(π) = −Σ π log π over the last dim (eq-entropy); 0·log 0 = 0. Shape: (..., K) → (...)."""
    p, logp_safe = _p_and_logp(logp)
    return -(p * logp_safe).sum(-1)


def expected(logp: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """E_π[v] = Σ π v over the last dim; outputs with π = 0 contribute 0.

    Shape: logp (..., K), values (..., K) → (...).
    """
    p = _p_and_logp(logp)[0]
    _check_like(logp, values, "values", finite=False)
    if bool((torch.isnan(values) & (p > 0)).any()):  # values where π = 0 may be anything, even inf
        raise ValueError("values must not be NaN where π > 0")
    return (p * torch.where(p > 0, values, torch.zeros_like(values))).sum(-1)


# -- best of n samples (chapter 06) -------------------------------------------------------------
def _check_n(n: int) -> None:
    check_int("n", n, ge=1)


def _check_categorical(probs: Tensor, rewards: Tensor) -> None:
    if check_tensor("probs", probs, kind="float").dim() != 1 or probs.shape != check_tensor("rewards", rewards).shape \
            or probs.numel() == 0:
        raise ValueError(
            f"probs and rewards must both have shape (K,) with K >= 1; got {tuple(probs.shape)} "
            f"and {tuple(rewards.shape)}"
        )
    check_probs("probs", probs)
    check_tensor("rewards", rewards, finite=True)


def bon_kl_bound(n: int) -> float:
    """The upper bound log n − (n − 1)/n on KL(π_bon ‖ π_ref) (Beirami et al. 2024).

    It is an equality only in the continuous limit (no two samples ever tie); for a categorical
    π_ref the exact KL (:func:`exact_best_of_n`) is smaller and saturates as n grows.

    Args:
        n: the number of samples, an integer ≥ 1.

    Returns:
        The bound in nats (0 for n = 1).

    Raises:
        ValueError: if n is not an integer ≥ 1.

    Introduced in chapter 06 (best-of-n).
    """
    _check_n(n)
    # (eq-bon-kl)  KL(π_bon ‖ π_ref) ≤ log n − (n − 1)/n
    return math.log(n) - (n - 1) / n


def exact_best_of_n(probs: Tensor, rewards: Tensor, n: int) -> Tensor:
    """The exact distribution of the best of n i.i.d. samples from a categorical π_ref.

    Outputs are grouped by reward. With F(v) the probability that one draw has reward ≤ v and
    F⁻(v) the probability that it has reward < v, the best of n has reward v with probability
    F(v)^n − F⁻(v)^n. Outputs that tie at v share that mass in proportion to π_ref, which is
    what a sampler that keeps the first-drawn of the tied best samples produces: the draws are
    exchangeable, so the first tied best is distributed as π_ref restricted to the tie. With
    distinct rewards this is π_n(y) = F(y)^n − F⁻(y)^n.

    Args:
        probs: π_ref over the K outputs (nonnegative, summing to 1 up to 1e-5; renormalised).
        rewards: the reward of each output.
        n: the number of samples, an integer ≥ 1 (n = 1 returns probs).

    Shape:
        probs: (K,), introduced in chapter 06.
        rewards: (K,), introduced in chapter 06.

    Returns:
        π_n of shape (K,), summing to 1, in the dtype of probs (computed in float64).

    Raises:
        ValueError: if n is not an integer ≥ 1, the shapes differ, or probs is not a
            distribution.

    Introduced in chapter 06 (best-of-n).
    """
    _check_n(n)
    _check_categorical(probs, rewards)
    p = probs.detach().double()
    p = p / p.sum()  # (K,) the check allows float32 rounding; the output must sum to 1
    values, block_of = torch.unique(rewards.detach().double(), return_inverse=True)  # sorted ascending
    block = torch.zeros(len(values), dtype=torch.float64).index_add_(0, block_of, p)  # (U,) mass per reward value
    cdf = torch.cumsum(block, dim=0).clamp(max=1.0)  # F(v)
    cdf_below = (cdf - block).clamp(min=0.0)  # F⁻(v)
    # (eq-bon-exact)  π_n(v) = F(v)^n − F⁻(v)^n, per reward value
    block_best = cdf**n - cdf_below**n  # (U,)
    share = torch.where(block[block_of] > 0, p / block[block_of], torch.zeros_like(p))  # π_ref within the tie
    return (block_best[block_of] * share).to(probs.dtype)


def bon_win_rate(probs: Tensor, rewards: Tensor, n: int) -> float:
    """P(the best of n beats a fresh sample from π_ref on reward), a reward tie counting ½.

    At most n/(n + 1), with equality only when the reward has no atoms (continuous); n = 1
    gives exactly ½.

    Args:
        probs: π_ref over the K outputs.
        rewards: the reward of each output.
        n: the number of samples, an integer ≥ 1.

    Shape:
        probs: (K,), introduced in chapter 06.
        rewards: (K,), introduced in chapter 06.

    Returns:
        The win rate, a float in [0, 1].

    Raises:
        ValueError: as :func:`exact_best_of_n`.

    Introduced in chapter 06 (best-of-n).
    """
    pi_n = exact_best_of_n(probs, rewards, n).double()
    p, r = probs.detach().double(), rewards.detach().double()
    below = (r.unsqueeze(0) < r.unsqueeze(1)).double()  # (K, K): [y, y'] = r(y') < r(y)
    tied = (r.unsqueeze(0) == r.unsqueeze(1)).double()
    # P(win) = Σ_y π_n(y) [P_ref(r < r(y)) + ½ P_ref(r = r(y))]
    return (pi_n * ((below + 0.5 * tied) @ p)).sum().item()


# -- exact values of prefixes (chapter 03) -------------------------------------------------------
def prefix_groups(tokens: Tensor, lengths: Tensor) -> Tensor:
    """For each completion and each m, an id of its first m tokens (the state after m tokens).

    Completions with the same first m tokens share the id; −1 where m exceeds the length.

    Shape: tokens (K, L) right-padded ids, lengths (K,) → groups (K, L + 1) long.
    """
    check_tensor("tokens", tokens, kind="int", ndim=2, dims="(K, L)")
    check_tensor("lengths", lengths, kind="int", shape=tokens.shape[:1], dims="(K,)")
    k, length = tokens.shape
    groups = torch.zeros((k, length + 1), dtype=torch.long)  # m = 0: every completion starts at x
    for m in range(1, length + 1):
        _, ids = torch.unique(tokens[:, :m], dim=0, return_inverse=True)
        groups[:, m] = torch.where(lengths >= m, ids, -1)
    return groups


def group_expectation(x: Tensor, p: Tensor, groups: Tensor) -> Tensor:
    """E_p[x | group] for each entry: the p-weighted mean of x over the entries of its group.

    With x the reward of each completion, p its probability under π and groups the ids of its
    first m tokens, this is the exact value V^π of each m-token prefix (eq-value). Entries with
    group −1 get 0.

    Shape: x (K,), p (K,), groups (K,) → (K,).
    """
    check_tensor("x", x, ndim=1, finite=True, dims="(K,)")
    check_probs("p", check_tensor("p", p, kind="float", shape=x.shape, dims="(K,), that of x"))
    check_tensor("groups", groups, kind="int", shape=x.shape, dims="(K,), that of x")
    valid = groups >= 0
    g = groups[valid]
    mass = torch.bincount(g, weights=p[valid].double())  # π(prefix) of each group
    total = torch.bincount(g, weights=(p * x)[valid].double())
    out = torch.zeros_like(x, dtype=torch.float64)
    out[valid] = total[g] / mass[g].clamp(min=torch.finfo(torch.float64).tiny)
    return out
