"""The nine coding problems: their arguments and the seeded cases that check them.

Each case is small enough to print, and most exist to catch one real mistake: ratios outside
the clip on both sides with both signs of the advantage, garbage at padded positions, λ ≠ 1 and
γ ≠ 1, a large margin where log(sigmoid(x)) underflows, integer rewards, an all-equal group,
rewards in shuffled order. Inputs are float32 unless a case says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from rlhf_lab.exercises import formulas as fm
from rlhf_lab.exercises.mistakes import MISTAKES, Mistake
from rlhf_lab.exercises import sft_problem as sp

NAN_HINT = ("this case puts garbage (nan, inf or huge values) at padded positions. Select them "
            "out with torch.where(mask, x, 0.0) before any arithmetic: multiplying by the mask "
            "gives 0 · nan = nan.")
LOGSIGMOID_HINT = ("log(torch.sigmoid(x)) underflows for very negative x (sigmoid(−110) is 0 in "
                   "float32, and log 0 = −inf). Use torch.nn.functional.logsigmoid.")


@dataclass(frozen=True)
class Case:
    """One seeded input. ``hint`` is shown when this case fails and no known mistake matches."""

    name: str
    inputs: dict[str, object]
    grad: bool = False
    hint: str = ""


@dataclass(frozen=True)
class Problem:
    name: str
    args: tuple[str, ...]
    chapter: str
    package: Callable[..., Tensor]  # rlhf_lab's function, wrapped to this signature
    formula: Callable[..., Tensor]  # the same answer written out
    cases: Callable[[], list[Case]]
    grad_args: tuple[str, ...] = ()  # which inputs carry a gradient into the result
    mistakes: tuple[Mistake, ...] = field(default=())
    returns: str = "the loss"  # what the function returns, in the words of a hint
    sign_hint: str = ("the sign is flipped: a loss is minimised, so it is the negative of the "
                      "objective (or of the log-likelihood).")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    return scale * torch.randn(*shape, generator=g)


def _mask(lengths: list[int], t: int) -> Tensor:
    return torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]  # (B, T) bool


def _bt_cases() -> list[Case]:
    g = _gen(1)
    return [
        Case("random batch", {"r_chosen": _randn(g, 5, scale=1.5),
                              "r_rejected": _randn(g, 5, scale=1.5)}),
        Case("large margins, both ways",
             {"r_chosen": torch.tensor([30.0, 0.0, -50.0, 2.0]),
              "r_rejected": torch.tensor([0.0, 30.0, 60.0, 2.0])}, hint=LOGSIGMOID_HINT),
        Case("gradient", {"r_chosen": _randn(g, 4), "r_rejected": _randn(g, 4)}, grad=True),
    ]


def _reinforce_cases() -> list[Case]:
    g = _gen(2)

    def batch(b: int, baseline: float) -> dict[str, object]:
        return {"seq_logp": -5 * torch.rand(b, generator=g), "rewards": _randn(g, b),
                "baseline": baseline}

    return [
        Case("random batch, baseline 0.5", batch(6, 0.5)),
        Case("baseline 0 (plain REINFORCE)", batch(4, 0.0)),
        Case("baseline above every reward", {"seq_logp": torch.tensor([-1.0, -2.0, -0.5]),
                                             "rewards": torch.tensor([0.0, 1.0, 0.5]),
                                             "baseline": 3.0}),
        Case("gradient", batch(5, -0.25), grad=True),
    ]


def _gae_cases() -> list[Case]:
    g = _gen(3)
    garbage_r = torch.tensor([[0.0, 1.0, math.nan, math.nan], [0.5, 0.0, 0.0, 1.0]])
    garbage_v = torch.tensor([[0.3, 0.6, 1e6, 1e6], [0.1, 0.4, -0.2, 0.7]])
    lengths = [6, 1, 4, 3]
    mask = _mask(lengths, 6)
    return [
        Case("one row, no padding, γ = 1, λ = 1 (Monte Carlo)",
             {"rewards": torch.tensor([[0.0, 0.0, 0.0, 1.0]]), "values": _randn(g, 1, 4),
              "mask": torch.ones(1, 4, dtype=torch.bool), "gamma": 1.0, "lam": 1.0}),
        Case("γ = 0.9, λ = 0.8, rows of different lengths",
             {"rewards": torch.where(_mask([5, 3, 1], 5), _randn(g, 3, 5), 0.0),
              "values": _randn(g, 3, 5),
              "mask": _mask([5, 3, 1], 5), "gamma": 0.9, "lam": 0.8}),
        Case("λ = 0 (the TD residual), γ = 0.95",
             {"rewards": _randn(g, 2, 4), "values": _randn(g, 2, 4),
              "mask": _mask([4, 4], 4), "gamma": 0.95, "lam": 0.0}),
        Case("garbage (nan, 1e6) at padded positions",
             {"rewards": garbage_r, "values": garbage_v, "mask": _mask([2, 4], 4),
              "gamma": 0.99, "lam": 0.95}, hint=NAN_HINT),
        Case("random batch, γ = 0.97, λ = 0.9",
             {"rewards": torch.where(mask, _randn(g, 4, 6), 0.0),
              "values": torch.where(mask, _randn(g, 4, 6), 0.0), "mask": mask,
              "gamma": 0.97, "lam": 0.9}),
    ]


def _ppo_inputs(g: torch.Generator, ratio: Tensor, adv: Tensor, mask: Tensor,
                eps: float) -> dict[str, object]:
    logp_old = -3 * torch.rand(ratio.shape, generator=g)
    return {"logp": logp_old + ratio.log(), "logp_old": logp_old, "adv": adv, "mask": mask,
            "clip_eps": eps}


def _ppo_cases() -> list[Case]:
    g = _gen(4)
    both_sides = torch.tensor([0.5, 0.9, 1.1, 1.5]).repeat(2, 1)  # (2, 4)
    signs = torch.tensor([[1.0], [-2.0]]).expand(2, 4)  # unequal sizes: max ≠ −min
    garbage = _ppo_inputs(g, torch.exp(0.3 * _randn(g, 2, 4)), _randn(g, 2, 4),
                          _mask([3, 1], 4), 0.2)
    pad = ~garbage["mask"]
    garbage["logp"] = garbage["logp"].masked_fill(pad, math.nan)
    garbage["logp_old"] = garbage["logp_old"].masked_fill(pad, 50.0)
    garbage["adv"] = garbage["adv"].masked_fill(pad, 1e6)
    return [
        Case("ratios outside the clip on both sides, A > 0 and A < 0 (ε = 0.2)",
             _ppo_inputs(g, both_sides, signs.clone(), _mask([4, 4], 4), 0.2)),
        Case("rows of different lengths: a mean over the valid tokens",
             _ppo_inputs(g, torch.exp(0.4 * _randn(g, 3, 4)), _randn(g, 3, 4),
                         _mask([4, 2, 1], 4), 0.2)),
        Case("garbage (nan, 1e6) at padded positions", garbage, hint=NAN_HINT),
        Case("ε = 0.1, random batch",
             _ppo_inputs(g, torch.exp(0.3 * _randn(g, 2, 5)), _randn(g, 2, 5),
                         _mask([5, 3], 5), 0.1)),
        Case("gradient (zero where the clip is active)",
             _ppo_inputs(g, torch.tensor([[0.5, 1.0, 1.5], [0.7, 1.05, 1.3]]),
                         torch.tensor([[1.0, -1.0, 1.0], [-1.0, 2.0, -0.5]]),
                         _mask([3, 3], 3), 0.2), grad=True),
    ]


def _dpo_inputs(g: torch.Generator, b: int, beta: float, ref_scale: float = 1.0):
    return {"logp_chosen": -10 * torch.rand(b, generator=g),
            "logp_rejected": -10 * torch.rand(b, generator=g),
            "ref_logp_chosen": -10 * ref_scale * torch.rand(b, generator=g),
            "ref_logp_rejected": -10 * ref_scale * torch.rand(b, generator=g), "beta": beta}


def _dpo_cases() -> list[Case]:
    g = _gen(5)
    return [
        Case("random batch, β = 0.1", _dpo_inputs(g, 5, 0.1)),
        Case("reference log-probs far from the policy's, β = 0.5", _dpo_inputs(g, 4, 0.5, 3.0)),
        Case("large margins, both ways (β = 1)",
             {"logp_chosen": torch.tensor([-1.0, -300.0]),
              "logp_rejected": torch.tensor([-300.0, -1.0]),
              "ref_logp_chosen": torch.tensor([-50.0, -50.0]),
              "ref_logp_rejected": torch.tensor([-50.0, -50.0]), "beta": 1.0},
             hint=LOGSIGMOID_HINT),
        Case("gradient", _dpo_inputs(g, 4, 0.2), grad=True),
    ]


def _group_cases() -> list[Case]:
    g = _gen(6)
    return [
        Case("random float rewards, N = 3, G = 4", {"rewards": _randn(g, 3, 4)}),
        Case("integer 0/1 rewards (int64), one all-equal group",
             {"rewards": torch.tensor([[1, 0, 0, 0], [1, 1, 0, 1], [0, 0, 0, 0]])},
             hint=("integer rewards: convert with rewards.float() before mean and std; a group "
                   "whose rewards are all equal has std 0 and must get advantage 0 (eps keeps "
                   "0/0 away).")),
        Case("a group with a tiny spread (eps matters)",
             {"rewards": torch.tensor([[0.001, 0.002, 0.003, 0.004], [1.0, 2.0, 3.0, 5.0]])}),
        Case("G = 2", {"rewards": _randn(g, 4, 2)}),
    ]


def _k3_cases() -> list[Case]:
    g = _gen(7)
    logp = -2 - torch.rand(6, generator=g)
    far = torch.tensor([-3.0, -1.0, -0.2, 0.5, 2.0, 3.0])  # log ρ on both sides of 0
    logp_far = -4 - torch.rand(6, generator=g)
    return [
        Case("random samples near the reference", {"logp": logp,
                                                   "logp_ref": logp + _randn(g, 6, scale=0.3)}),
        Case("far from the reference, on both sides", {"logp": logp_far,
                                                       "logp_ref": logp_far + far}),
        Case("policy equal to the reference: 0 everywhere", {"logp": logp.clone(),
                                                             "logp_ref": logp.clone()}),
        Case("gradient", {"logp": logp.clone(), "logp_ref": logp + _randn(g, 6)}, grad=True),
    ]


def _bon_cases() -> list[Case]:
    g = _gen(8)
    return [
        Case("rewards in increasing order, n = 2",
             {"probs": torch.tensor([0.1, 0.2, 0.3, 0.4]),
              "rewards": torch.tensor([0.0, 1.0, 2.0, 3.0]), "n": 2}),
        Case("rewards in shuffled order, n = 3",
             {"probs": torch.softmax(_randn(g, 5), 0),
              "rewards": torch.tensor([2.0, -1.0, 0.5, 3.0, 0.0]), "n": 3}),
        Case("n = 1 returns π_ref", {"probs": torch.softmax(_randn(g, 4), 0),
                                     "rewards": torch.tensor([0.3, -0.2, 0.9, 0.1]), "n": 1}),
        Case("random, K = 7, n = 5", {"probs": torch.softmax(_randn(g, 7), 0),
                                      "rewards": torch.randperm(7, generator=g).float() - 3.0,
                                      "n": 5}),
    ]


_LIST = [
    Problem("sft_loss", sp.ARGS, sp.CHAPTER, sp.package, sp.formula,
            lambda: sp.cases(Case, NAN_HINT), ("token_logp",)),
    Problem("bradley_terry_loss", ("r_chosen", "r_rejected"), "05", fm.bt_package,
            fm.bt_formula, _bt_cases, ("r_chosen", "r_rejected")),
    Problem("reinforce_loss", ("seq_logp", "rewards", "baseline"), "02", fm.reinforce_package,
            fm.reinforce_formula, _reinforce_cases, ("seq_logp",)),
    Problem("gae", ("rewards", "values", "mask", "gamma", "lam"), "03", fm.gae_package,
            fm.gae_formula, _gae_cases, returns="the advantages",
            sign_hint="the sign is flipped: δ_t = r_t + γ·V_{t+1} − V_t is positive when a step went "
                      "better than the critic expected."),
    Problem("ppo_policy_loss", ("logp", "logp_old", "adv", "mask", "clip_eps"), "04",
            fm.ppo_package, fm.ppo_formula, _ppo_cases, ("logp",)),
    Problem("dpo_loss", ("logp_chosen", "logp_rejected", "ref_logp_chosen",
                         "ref_logp_rejected", "beta"), "07", fm.dpo_package, fm.dpo_formula,
            _dpo_cases, ("logp_chosen", "logp_rejected")),
    Problem("group_advantages", ("rewards",), "08", fm.group_package, fm.group_formula,
            _group_cases, returns="the advantages",
            sign_hint="the sign is flipped: (r − mean)/(std + eps) is positive for a response that "
                      "beats its group's mean."),
    Problem("kl_k3", ("logp", "logp_ref"), "04", fm.k3_package, fm.k3_formula, _k3_cases,
            ("logp",), returns="the per-sample estimates",
            sign_hint="the sign is flipped: k3 = (ρ − 1) − log ρ is never negative (ρ − 1 ≥ log ρ)."),
    Problem("exact_best_of_n", ("probs", "rewards", "n"), "06", fm.bon_package, fm.bon_formula,
            _bon_cases, returns="the distribution π_n",
            sign_hint="the sign is flipped: π_n is a probability distribution, non-negative and "
                      "summing to 1."),
]
REGISTRY: dict[str, Problem] = {p.name: replace(p, mistakes=MISTAKES[p.name]) for p in _LIST}
PROBLEMS: tuple[str, ...] = tuple(REGISTRY)


def get_problem(name: str) -> Problem:
    """The problem called ``name``; ``ValueError`` listing the known names otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown problem {name!r}; the known problems are: {', '.join(PROBLEMS)}")
    return REGISTRY[name]
