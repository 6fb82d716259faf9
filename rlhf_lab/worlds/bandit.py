"""The bandit world: one prompt, K possible answers ("arms").

Small enough to write every probability down. Chapter 01 uses it for pairwise preferences and
Bradley–Terry; later chapters use its reference policy π_ref and rewards as the simplest place
where an exact optimum exists.

Bradley–Terry (BT) model: each arm i has a score s_i and

    P(i ≻ j) = σ(s_i − s_j)                                         (eq-bt)

so only score differences matter. Fitting BT to observed comparisons by maximum likelihood
recovers the scores up to an additive constant. Introduced in chapter 01.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from rlhf_lab.validate import as_tensor, check_float, check_ids, check_int, check_tensor

ARM_NAMES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class Bandit:
    """K arms with true scores (rewards) and a reference policy π_ref = softmax(ref_logits).

    Attributes:
        rewards: true scores s, shape (K,). Under BT these are the rewards up to a constant.
        ref_logits: logits of the reference policy, shape (K,).
    """

    rewards: torch.Tensor
    ref_logits: torch.Tensor

    def __post_init__(self) -> None:
        self.rewards = torch.as_tensor(check_tensor("rewards", as_tensor("rewards", self.rewards), finite=True),
                                       dtype=torch.float64)
        self.ref_logits = torch.as_tensor(check_tensor("ref_logits", as_tensor("ref_logits", self.ref_logits),
                                                       finite=True), dtype=torch.float64)
        if self.rewards.ndim != 1 or self.rewards.numel() < 2:
            raise ValueError(f"rewards must have shape (K,) with K ≥ 2, got {tuple(self.rewards.shape)}")
        if self.ref_logits.shape != self.rewards.shape:
            raise ValueError(
                f"ref_logits has shape {tuple(self.ref_logits.shape)} but rewards has shape {tuple(self.rewards.shape)}"
            )

    @classmethod
    def random(cls, k: int, seed: int = 0, reward_scale: float = 1.0) -> "Bandit":
        """A bandit with scores ~ N(0, reward_scale²) and a non-uniform reference policy."""
        check_int("k", k)
        if k < 2:
            raise ValueError(f"k must be ≥ 2 (number of arms), got {k}")
        check_int("seed", seed)
        check_float("reward_scale", reward_scale, ge=0)
        g = torch.Generator().manual_seed(seed)
        rewards = reward_scale * torch.randn(k, generator=g, dtype=torch.float64)
        ref_logits = 0.7 * torch.randn(k, generator=g, dtype=torch.float64)
        return cls(rewards=rewards, ref_logits=ref_logits)

    @classmethod
    def from_scale(cls, scale, seed: int | None = None) -> "Bandit":
        return cls.random(scale.bandit_arms, seed=scale.seed if seed is None else seed)

    @property
    def k(self) -> int:
        return int(self.rewards.numel())

    @property
    def names(self) -> list[str]:
        return [ARM_NAMES[i] if i < len(ARM_NAMES) else f"arm{i}" for i in range(self.k)]

    @property
    def logp_ref(self) -> torch.Tensor:
        """log π_ref, shape (K,)."""
        return torch.log_softmax(self.ref_logits, dim=-1)

    def preference_matrix(self) -> torch.Tensor:
        """P[i, j] = P(i ≻ j) under Bradley–Terry (eq-bt). Shape (K, K)."""
        return bt_matrix(self.rewards)


def bt_matrix(scores: torch.Tensor) -> torch.Tensor:
    """P[i, j] = σ(s_i − s_j) (eq-bt). Shape: scores (K,) → (K, K). Chapter 01."""
    scores = torch.as_tensor(check_tensor("scores", as_tensor("scores", scores), ndim=1, finite=True, dims="(K,)"),
                             dtype=torch.float64)
    return torch.sigmoid(scores[:, None] - scores[None, :])


def intransitive_matrix() -> torch.Tensor:
    """A 5-arm preference matrix no score vector can produce (chapter 01).

    A ≻ C ≻ B ≻ A is a cycle, so there is no Condorcet winner; B wins the most pairwise
    contests (Copeland) while A has the highest average win rate (Borda).
    """
    upper = {  # P(row ≻ column) for row < column
        (0, 1): 0.2, (0, 2): 0.8, (0, 3): 0.9, (0, 4): 0.4,
        (1, 2): 0.2, (1, 3): 0.6, (1, 4): 0.6,
        (2, 3): 0.1, (2, 4): 0.9,
        (3, 4): 0.6,
    }
    p = torch.full((5, 5), 0.5, dtype=torch.float64)
    for (i, j), v in upper.items():
        p[i, j], p[j, i] = v, 1.0 - v
    return p


def _check_matrix(p: torch.Tensor) -> torch.Tensor:
    p = torch.as_tensor(check_tensor("p (the preference matrix)", as_tensor("p", p), finite=True), dtype=torch.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] < 2:
        raise ValueError(f"preference matrix must be square (K, K) with K >= 2, got shape {tuple(p.shape)}")
    if bool(((p < 0) | (p > 1)).any()):
        raise ValueError("preference matrix must hold probabilities P[i, j] in [0, 1]")
    if not torch.allclose(p + p.T, torch.ones_like(p), atol=1e-9):
        raise ValueError("preference matrix must satisfy P[i, j] + P[j, i] = 1")
    return p


def sample_comparisons(
    p: torch.Tensor, n: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``n`` comparisons: a uniformly random pair (i ≠ j), then "i wins" with prob P[i, j].

    Returns:
        (i, j, y): arm indices (n,) and outcomes y (n,) float, 1.0 where i ≻ j.
    """
    p = _check_matrix(p)
    check_int("n (number of comparisons)", n)
    if n < 1:
        raise ValueError(f"n (number of comparisons) must be ≥ 1, got {n}")
    check_int("seed", seed)
    k = p.shape[0]
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, k, (n,), generator=g)
    j = (i + torch.randint(1, k, (n,), generator=g)) % k  # uniform over j ≠ i
    y = (torch.rand(n, generator=g, dtype=torch.float64) < p[i, j]).double()
    return i, j, y


def bt_log_likelihood(scores: torch.Tensor, i: torch.Tensor, j: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean log-likelihood of outcomes y under BT with ``scores``. Chapter 01."""
    check_tensor("scores", scores, kind="float", ndim=1, finite=True, dims="(K,)")
    _check_comparisons(i, j, y, len(scores))
    diff = scores[i] - scores[j]
    # log P(y | s) = y·log σ(d) + (1 − y)·log σ(−d)
    return (y * torch.nn.functional.logsigmoid(diff) + (1 - y) * torch.nn.functional.logsigmoid(-diff)).mean()


def _check_comparisons(i: torch.Tensor, j: torch.Tensor, y: torch.Tensor, k: int) -> None:
    """Arm indices i, j in 0 … k − 1 and outcomes y in [0, 1], all of one shape (n,), n ≥ 1."""
    check_ids("i", check_tensor("i", i, ndim=1, nonempty=True, dims="(n,)"), k, "arm indices")
    check_ids("j", j, k, "arm indices")
    check_tensor("y", y, kind="float", finite=True)
    if not (i.shape == j.shape == y.shape):
        raise ValueError(f"i, j and y must have the same shape, got {tuple(i.shape)}, {tuple(j.shape)}, {tuple(y.shape)}")
    if bool(((y < 0) | (y > 1)).any()):
        raise ValueError("y must hold outcomes in [0, 1] (1.0 where i wins)")


def fit_bradley_terry(
    i: torch.Tensor, j: torch.Tensor, y: torch.Tensor, k: int, l2: float = 1e-4, iters: int = 50
) -> torch.Tensor:
    """Maximum-likelihood BT scores from comparisons, centred to mean 0. Shape (k,). Chapter 01.

    The likelihood only sees differences s_i − s_j, so the scores are identified up to a
    constant; we report the centred solution. A tiny L2 term keeps the optimum finite when an
    arm never loses (or never wins). Newton's method: the problem is concave and K is small.
    """
    check_int("k (number of arms)", k, ge=2)
    check_float("l2", l2, ge=0)
    check_int("iters", iters, ge=1)
    _check_comparisons(i, j, y, k)
    n = y.numel()
    x = torch.zeros(n, k, dtype=torch.float64)  # design matrix: +1 for i, −1 for j
    x[torch.arange(n), i] += 1.0
    x[torch.arange(n), j] -= 1.0
    s = torch.zeros(k, dtype=torch.float64)
    for _ in range(iters):
        prob = torch.sigmoid(x @ s)
        grad = x.T @ (y - prob) / n - l2 * s
        hess = -(x.T * (prob * (1 - prob))) @ x / n - l2 * torch.eye(k, dtype=torch.float64)
        step = torch.linalg.solve(hess, grad)
        s = s - step
        if step.abs().max() < 1e-10:
            break
    return s - s.mean()


def condorcet_winner(p: torch.Tensor) -> int | None:
    """The arm that beats every other arm head to head (P > ½), or None if there is none."""
    p = _check_matrix(p)
    k = p.shape[0]
    for a in range(k):
        if all(p[a, b] > 0.5 for b in range(k) if b != a):
            return a
    return None


def copeland_scores(p: torch.Tensor) -> torch.Tensor:
    """Pairwise contests won (P > ½ counts 1, a tie ½). Shape (K,)."""
    p = _check_matrix(p)
    wins = (p > 0.5).double() + 0.5 * (p == 0.5).double()
    return wins.sum(dim=1) - 0.5  # the diagonal is a tie with oneself


def borda_scores(p: torch.Tensor) -> torch.Tensor:
    """Average probability of beating a uniformly chosen other arm. Shape (K,)."""
    p = _check_matrix(p)
    k = p.shape[0]
    return (p.sum(dim=1) - 0.5) / (k - 1)


def _unique_argmax(x: torch.Tensor) -> int | None:
    top = torch.nonzero(torch.isclose(x, x.max())).flatten()
    return int(top[0]) if top.numel() == 1 else None


def copeland_winner(p: torch.Tensor) -> int | None:
    """The arm with the most pairwise wins, or None when several tie."""
    return _unique_argmax(copeland_scores(p))


def borda_winner(p: torch.Tensor) -> int | None:
    """The arm with the highest average win probability, or None when several tie."""
    return _unique_argmax(borda_scores(p))


def cycles(p: torch.Tensor) -> list[tuple[int, int, int]]:
    """Every preference cycle a ≻ b ≻ c ≻ a (each listed once, starting at its smallest arm)."""
    p = _check_matrix(p)
    k = p.shape[0]
    out = []
    for a, b, c in itertools.permutations(range(k), 3):
        if a == min(a, b, c) and p[a, b] > 0.5 and p[b, c] > 0.5 and p[c, a] > 0.5:
            out.append((a, b, c))
    return out


def score_error(fitted: torch.Tensor, true: torch.Tensor) -> float:
    """Largest gap between fitted and true scores once both are centred (the free constant)."""
    fitted = torch.as_tensor(check_tensor("fitted", as_tensor("fitted", fitted), finite=True), dtype=torch.float64)
    true = torch.as_tensor(check_tensor("true", as_tensor("true", true), shape=fitted.shape, finite=True),
                           dtype=torch.float64)
    return float(((fitted - fitted.mean()) - (true - true.mean())).abs().max())

