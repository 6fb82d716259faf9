"""The mistakes students make in each coding problem, with a hint for each.

A mistake is a wrong implementation a student plausibly writes (most are a formula of
``formulas.py`` with one option changed); when a student's output equals one of them, the check
shows that mistake's hint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rlhf_lab.exercises import sft_problem
from rlhf_lab.exercises.formulas import (bon_density, bon_formula, bon_power, bt_formula, dpo_formula, gae_formula,
                                         group_formula, k3_formula, ppo_formula, reinforce_formula)


@dataclass(frozen=True)
class Mistake:
    """A wrong implementation (same signature as the problem) and the hint for whoever wrote it."""

    fn: Callable[..., Tensor]
    hint: str


MISTAKES: dict[str, tuple[Mistake, ...]] = {
    "bradley_terry_loss": (
        Mistake(lambda c, r: bt_formula(c, r, swap=True),
                "chosen and rejected are swapped: the loss is −log σ(r_chosen − r_rejected), "
                "small when the chosen reward is the larger one."),
    ),
    "reinforce_loss": (
        Mistake(lambda lp, r, b: reinforce_formula(lp, r, b, "r"),
                "the baseline is not subtracted: weight each log π(y) by (R − b)."),
        Mistake(lambda lp, r, b: reinforce_formula(lp, r, b, "r+b"),
                "you added the baseline: weight each log π(y) by R − b, not R + b."),
        Mistake(lambda lp, r, b: reinforce_formula(lp, r, b, "logp-b"),
                "the baseline is subtracted from the reward, not from log π: −mean((R − b)·log π)."),
        Mistake(lambda lp, r, b: reinforce_formula(lp, r, r.double().mean()),
                "you subtracted the batch's mean reward; use the baseline argument b. The batch "
                "mean is one baseline a caller may pass, and this function uses the one it is given."),
    ),
    "gae": (
        Mistake(lambda r, v, m, g, l: gae_formula(r, v, m, g, 1.0),
                "λ seems to be ignored: your advantages equal GAE with λ = 1 (the Monte Carlo "
                "advantage). Each step back multiplies by γλ: Â_t = δ_t + γλ·Â_{t+1}."),
        Mistake(lambda r, v, m, g, l: gae_formula(r, v, m, 1.0, l),
                "γ seems to be ignored: δ_t = r_t + γ·V_{t+1} − V_t and Â_t = δ_t + γλ·Â_{t+1}."),
        Mistake(lambda r, v, m, g, l: gae_formula(r, v, m, g, l, factor=l),
                "the recursion factor is γλ, not λ alone: Â_t = δ_t + γλ·Â_{t+1}."),
        Mistake(lambda r, v, m, g, l: gae_formula(r, v, m, g, l, gamma_in_delta=False),
                "δ_t must discount the next value: δ_t = r_t + γ·V_{t+1} − V_t."),
        Mistake(lambda r, v, m, g, l: gae_formula(r, v, m, g, l, use_mask=False),
                "the mask is ignored: padded rewards and values leak into the valid tokens. The "
                "episode ends at the last valid token, where the next value is 0."),
        Mistake(lambda r, v, m, g, l: gae_formula(r, v, m, g, l, bootstrap_padding=True),
                "the episode ends at each row's last valid token: the next value there is 0, not "
                "the value stored at the padded position after it."),
        Mistake(lambda r, v, m, g, l: gae_formula(r, v, m, g, l) + torch.where(m.bool(), v.double(), 0.0),
                "that is the return Â_t + V_t (the critic's target); return the advantage Â_t alone."),
        Mistake(lambda r, v, m, g, l: gae_formula(r, v, m, g, l) + v.double(),
                "that is the return Â_t + V_t (the critic's target); return the advantage Â_t alone."),
    ),
    "ppo_policy_loss": (
        Mistake(lambda *a: ppo_formula(*a, combine="max"),
                "your loss is −max(ρA, clip(ρ)A). The min belongs to the objective, before the "
                "minus sign: loss = −min(ρA, clip(ρ)A) = max(−ρA, −clip(ρ)A) (negating turns a "
                "min into a max). The objective is a pessimistic bound: clipping only ever "
                "removes an incentive, it never adds one."),
        Mistake(lambda *a: ppo_formula(*a, clip=False),
                "the clip is missing: clip ρ to [1 − ε, 1 + ε] and take min(ρA, clip(ρ)A)."),
        Mistake(lambda *a: ppo_formula(*a, combine="clipped"),
                "you used the clipped term alone; take the min of ρA and clip(ρ)A — where the "
                "unclipped term is the smaller one it must be kept (a step too far the wrong "
                "way is pulled back)."),
        Mistake(lambda *a: ppo_formula(*a, invert=True),
                "the ratio is inverted: ρ = π_θ/π_old = exp(logp − logp_old)."),
        Mistake(lambda *a: ppo_formula(*a, ratio_of_logs=True),
                "the inputs are log-probabilities: ρ = π_θ/π_old = exp(logp − logp_old), not "
                "logp / logp_old."),
        Mistake(lambda *a: ppo_formula(*a, clip_product=True),
                "clip the ratio, then multiply: clip(ρ, 1 − ε, 1 + ε)·A, not clip(ρ·A, 1 − ε, 1 + ε)."),
        Mistake(lambda lp, lo, a, m, e: ppo_formula(lp, lo, a, m, 0.2),
                "ε seems hard-coded to 0.2: use the clip_eps argument."),
        Mistake(lambda *a: ppo_formula(*a, reduce="entries"),
                "you divided by all B·T entries, padding included: the mean is over the valid "
                "tokens only (divide by mask.sum())."),
        Mistake(lambda *a: ppo_formula(*a, reduce="sequences"),
                "you averaged each sequence, then the batch (GRPO's aggregation); this loss is one "
                "mean over all valid tokens of the batch, so a long sequence weighs more."),
    ),
    "dpo_loss": (
        Mistake(lambda *a: dpo_formula(*a[:4], 1.0),
                "β is missing: the loss is −log σ(β·Δ)."),
        Mistake(lambda *a: dpo_formula(*a, beta_inside=False),
                "β belongs inside σ: −log σ(β·Δ), not −β·log σ(Δ)."),
        Mistake(lambda *a: dpo_formula(*a, use_ref=False),
                "the reference log-probs are missing: Δ compares the log-ratios "
                "log π_θ(y)/π_ref(y) = logp − ref_logp of the two completions."),
        Mistake(lambda c, r, rc, rr, b: dpo_formula(c, r, -rc, -rr, b),
                "the log-ratio is logp − ref_logp, not logp + ref_logp."),
        Mistake(lambda c, r, rc, rr, b: dpo_formula(r, c, rr, rc, b),
                "Δ has the wrong sign: either chosen and rejected are swapped, or the log-ratios "
                "are inverted (ref_logp − logp). Δ = (logp_chosen − ref_logp_chosen) − "
                "(logp_rejected − ref_logp_rejected)."),
    ),
    "group_advantages": (
        Mistake(lambda r: group_formula(r, correction=0),
                "population std? Use the Bessel-corrected std (divide by G − 1), as torch.std "
                "does by default and as TRL does."),
        Mistake(lambda r: group_formula(r, eps=0.0),
                "eps = 1e-4 is missing: divide by (std + 1e-4)."),
        Mistake(lambda r: group_formula(r, eps=1e-8),
                "your values match (r − mean)/std with no eps or a much smaller one (an all-equal "
                "group set to 0 by hand or by nan_to_num?). The problem asks for std + 1e-4, "
                "as TRL computes it."),
        Mistake(lambda r: group_formula(r, batch_std=True),
                "you divided by the std of the whole batch (TRL's scale_rewards=\"batch\"); GRPO "
                "divides each group by its own std (dim=1)."),
        Mistake(lambda r: group_formula(r, eps_in_var=True),
                "add eps to the std, not to the variance: (r − mean) / (std + 1e-4)."),
        Mistake(lambda r: group_formula(r, dim=None),
                "you normalised over the whole batch; each group (one row: the G responses to "
                "one prompt) uses its own mean and std (dim=1)."),
        Mistake(lambda r: group_formula(r, dim=0),
                "you normalised along dim 0 (across prompts); the group is a row: use dim=1."),
        Mistake(lambda r: r.double() - r.double().mean(1, keepdim=True),
                "you only centred the rewards; GRPO also divides by the group's std + eps "
                "(Dr. GRPO is the variant that does not)."),
    ),
    "kl_k3": (
        Mistake(lambda lp, lr: k3_formula(lp, lr, "k1"),
                "that is k1 = −log ρ = logp − logp_ref; k3 = (ρ − 1) − log ρ with ρ = π_ref/π."),
        Mistake(lambda lp, lr: k3_formula(lp, lr, "k2"),
                "that is k2 = ½(log ρ)²; k3 = (ρ − 1) − log ρ."),
        Mistake(lambda lp, lr: k3_formula(lp, lr, reverse=True),
                "the ratio is reversed (the KL direction flipped): for samples of π, "
                "ρ = π_ref/π = exp(logp_ref − logp)."),
        Mistake(lambda lp, lr: k3_formula(lp, lr, "k3+"),
                "k3 = (ρ − 1) − log ρ: subtract log ρ, don't add it."),
    ),
    "exact_best_of_n": (
        Mistake(lambda p, r, n: bon_formula(p, r, n, order="index"),
                "F(y) accumulates π_ref over the outputs whose reward is at most r(y): sort by "
                "reward, not by position."),
        Mistake(lambda p, r, n: bon_formula(p, r, n, order="descending"),
                "sorted the wrong way: F(y) is the probability that one draw is no better than y, "
                "so the best output has F = 1."),
        Mistake(lambda p, r, n: bon_formula(p, r, n, minus_below=False),
                "π_n(y) = F(y)^n − F⁻(y)^n: subtract the probability that all n draws are "
                "strictly worse than y."),
        Mistake(bon_power,
                "π_n is not π_ref^n renormalised: it depends on the rewards through "
                "F(y)^n − F⁻(y)^n."),
        Mistake(lambda p, r, n: bon_formula(p, r, n, scatter=False),
                "your values are right but in reward order: put each back at its output's index "
                "(out[order] = …, where order sorts the rewards)."),
        Mistake(bon_density,
                "n·π_ref(y)·F(y)^(n−1) is the best-of-n density for a continuous reward; with "
                "discrete outputs the exact probability is F(y)^n − F⁻(y)^n."),
    ),
}
MISTAKES["sft_loss"] = sft_problem.mistakes(Mistake)
