"""Best-of-n: draw n samples from π_ref and keep the one the reward model likes best.

On an enumerable world the distribution of the kept sample is known exactly, so its KL from
π_ref and its win rate can be compared with the analytic bounds instead of estimated.
Introduced in chapter 06.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1; got {n!r}")


def _check_categorical(probs: Tensor, rewards: Tensor) -> None:
    if probs.dim() != 1 or probs.shape != rewards.shape or probs.numel() == 0:
        raise ValueError(
            f"probs and rewards must both have shape (K,) with K >= 1; got {tuple(probs.shape)} "
            f"and {tuple(rewards.shape)}"
        )
    total = probs.sum().item()
    if bool((probs < 0).any()) or not math.isclose(total, 1.0, abs_tol=1e-5):
        raise ValueError(f"probs must be nonnegative and sum to 1; got sum {total:.6g}")


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


def _rank_order(rewards: Tensor) -> Tensor:
    """Indices of the outputs from worst to best: by reward, a tie won by the lower index."""
    reversed_index = torch.arange(rewards.numel() - 1, -1, -1)
    # a stable ascending sort of the reversed vector leaves tied outputs in descending index
    # order, so among equal rewards the lowest index comes last, i.e. ranks best
    order = torch.sort(rewards[reversed_index], stable=True).indices
    return reversed_index[order]


def exact_best_of_n(probs: Tensor, rewards: Tensor, n: int) -> Tensor:
    """The exact distribution of the best of n i.i.d. samples from a categorical π_ref.

    Outputs are totally ordered by reward, ties broken by index: of two outputs with the same
    reward, the one with the lower index counts as better (so every draw has a unique best).
    With F(y) the probability of drawing an output ranked at most y and F⁻(y) = F(y) − π(y),
    the best of n is y exactly when all n draws rank ≤ y and not all rank < y. The reward of
    the best sample does not depend on the tie rule; how the probability splits among tied
    outputs does.

    Args:
        probs: π_ref over the K outputs (nonnegative, summing to 1).
        rewards: the reward of each output.
        n: the number of samples, an integer ≥ 1 (n = 1 returns probs).

    Shape:
        probs: (K,), introduced in chapter 06.
        rewards: (K,), introduced in chapter 06.

    Returns:
        π_n of shape (K,), in the dtype of probs (computed in float64).

    Raises:
        ValueError: if n is not an integer ≥ 1, the shapes differ, or probs is not a
            distribution.

    Introduced in chapter 06 (best-of-n).
    """
    _check_n(n)
    _check_categorical(probs, rewards)
    order = _rank_order(rewards)
    p_sorted = probs.detach().double()[order]  # (K,) worst to best
    cdf = torch.cumsum(p_sorted, dim=0).clamp(max=1.0)  # F(y)
    cdf_below = (cdf - p_sorted).clamp(min=0.0)  # F⁻(y)
    # (eq-bon-exact)  π_n(y) = F(y)^n − F⁻(y)^n
    pi_sorted = cdf**n - cdf_below**n
    pi_n = torch.empty_like(pi_sorted)
    pi_n[order] = pi_sorted
    return pi_n.to(probs.dtype)


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
