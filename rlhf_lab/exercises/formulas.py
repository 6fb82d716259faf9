"""What each coding problem's answer is, said twice, and the mistakes students make.

For every problem there is the package's own function wrapped to the exercise's signature (many
return ``(loss, stats)`` or take extra arguments) and the formula written out directly, in
float64. :func:`rlhf_lab.exercises.check` computes both on every case and refuses to grade when
they disagree, so a change inside ``rlhf_lab`` cannot silently change what counts as right.

The mistakes are wrong implementations a student plausibly writes; when a student's output
equals one of them, the check shows that mistake's hint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhf_lab.exercises import sft_problem


@dataclass(frozen=True)
class Mistake:
    """A wrong implementation (same signature as the problem) and the hint for whoever wrote it."""

    fn: Callable[..., Tensor]
    hint: str


# -- the package's functions, wrapped to the exercise signatures (imported on use) -------------
def bt_package(r_chosen, r_rejected):
    from rlhf_lab.algos.reward_model import bradley_terry_loss

    return bradley_terry_loss(r_chosen, r_rejected)[0]


def reinforce_package(seq_logp, rewards, baseline):
    from rlhf_lab.algos.reinforce import reinforce_loss

    return reinforce_loss(seq_logp, rewards, float(baseline))[0]


def gae_package(rewards, values, mask, gamma, lam):
    from rlhf_lab.core import gae

    return gae(rewards, values, mask, gamma, lam)[0]


def ppo_package(logp, logp_old, adv, mask, clip_eps):
    from rlhf_lab.algos.ppo import ppo_policy_loss

    return ppo_policy_loss(logp, logp_old, adv, mask, clip_eps)[0]


def dpo_package(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, beta):
    from rlhf_lab.algos.dpo import dpo_loss

    return dpo_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, beta)[0]


def group_package(rewards):
    from rlhf_lab.algos.grpo import group_advantages

    return group_advantages(rewards)


def k3_package(logp, logp_ref):
    from rlhf_lab.core import kl_penalty

    return kl_penalty(logp, logp_ref, kind="k3")


def bon_package(probs, rewards, n):
    from rlhf_lab.algos.best_of_n import exact_best_of_n

    return exact_best_of_n(probs, rewards, n)


# -- the formulas, written out (float64) ------------------------------------------------------
def bt_formula(r_chosen, r_rejected, swap=False):
    diff = r_chosen.double() - r_rejected.double()
    # −log σ(d) = log(1 + e^{−d}) = softplus(−d)
    return F.softplus(diff if swap else -diff).mean()


def reinforce_formula(seq_logp, rewards, baseline, weight="r-b"):
    r, logp = rewards.double(), seq_logp.double()
    if weight == "r-b":
        return -((r - baseline) * logp).mean()
    if weight == "r":
        return -(r * logp).mean()
    if weight == "r+b":
        return -((r + baseline) * logp).mean()
    return -(r * (logp - baseline)).mean()  # "logp-b": the baseline on the wrong factor


def gae_formula(rewards, values, mask, gamma, lam, use_mask=True, gamma_in_delta=True,
                factor=None):
    """Â_t = Σ_l (γλ)^l δ_{t+l} over each row's valid prefix, δ_t = r_t + γV_{t+1} − V_t."""
    factor = gamma * lam if factor is None else factor
    out = torch.zeros(rewards.shape, dtype=torch.float64)
    for b in range(rewards.shape[0]):
        n = int(mask[b].sum()) if use_mask else rewards.shape[1]
        r, v = rewards[b, :n].double(), values[b, :n].double()
        v_next = torch.cat([v[1:], v.new_zeros(1)])  # the value after the last token is 0
        delta = r + (gamma if gamma_in_delta else 1.0) * v_next - v
        for t in range(n):
            weights = factor ** torch.arange(n - t, dtype=torch.float64)
            out[b, t] = (weights * delta[t:]).sum()
    return out


def ppo_formula(logp, logp_old, adv, mask, clip_eps, combine="min", clip=True, invert=False,
                reduce="tokens"):
    valid = mask.bool()
    lp = torch.where(valid, logp.double(), 0.0)
    lo = torch.where(valid, logp_old.double(), 0.0)
    a = torch.where(valid, adv.double(), 0.0)
    ratio = torch.exp(lo - lp) if invert else torch.exp(lp - lo)
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * a
    if combine == "min":
        per_token = -torch.minimum(ratio * a, clipped) if clip else -ratio * a
    elif combine == "max":
        per_token = -torch.maximum(ratio * a, clipped)
    else:  # "clipped": the clipped term alone
        per_token = -clipped
    if reduce == "tokens":
        return per_token[valid].mean()
    if reduce == "entries":
        return torch.where(valid, per_token, 0.0).mean()
    per_seq = torch.where(valid, per_token, 0.0).sum(1) / valid.sum(1)  # "sequences"
    return per_seq.mean()


def dpo_formula(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, beta,
                use_ref=True, beta_inside=True):
    chosen, rejected = logp_chosen.double(), logp_rejected.double()
    if use_ref:
        chosen, rejected = chosen - ref_logp_chosen.double(), rejected - ref_logp_rejected.double()
    delta = chosen - rejected
    if beta_inside:
        return -F.logsigmoid(beta * delta).mean()
    return -(beta * F.logsigmoid(delta)).mean()


def group_formula(rewards, correction=1, eps=1e-4, dim=1, eps_in_var=False):
    r = rewards.double()
    centred = r - r.mean(dim=dim, keepdim=True)
    if eps_in_var:
        return centred / torch.sqrt(r.var(dim=dim, keepdim=True, correction=correction) + eps)
    return centred / (r.std(dim=dim, keepdim=True, correction=correction) + eps)


def k3_formula(logp, logp_ref, kind="k3", reverse=False):
    log_rho = logp_ref.double() - logp.double()  # log ρ, ρ = π_ref/π
    if reverse:
        log_rho = -log_rho
    if kind == "k1":
        return -log_rho
    if kind == "k2":
        return 0.5 * log_rho**2
    if kind == "k3+":
        return log_rho.exp() - 1 + log_rho
    return log_rho.exp() - 1 - log_rho


def bon_formula(probs, rewards, n, order="reward", minus_below=True):
    p = probs.double()
    if order == "index":
        idx = torch.arange(len(p))
    else:
        idx = torch.argsort(rewards.double(), descending=order == "descending")
    cdf = torch.cumsum(p[idx], 0)  # F(y): one draw is no better than y
    below = cdf - p[idx]  # F⁻(y): one draw is strictly worse
    out = torch.empty_like(p)
    out[idx] = cdf**n - below**n if minus_below else cdf**n
    return out


def bon_power(probs, rewards, n):
    p = probs.double() ** n
    return p / p.sum()


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
    ),
    "ppo_policy_loss": (
        Mistake(lambda *a: ppo_formula(*a, combine="max"),
                "you took the max of the two terms; PPO takes the min of ρA and clip(ρ)A "
                "(before the minus sign), a pessimistic bound: clipping only ever removes an "
                "incentive, it never adds one."),
        Mistake(lambda *a: ppo_formula(*a, clip=False),
                "the clip is missing: clip ρ to [1 − ε, 1 + ε] and take min(ρA, clip(ρ)A)."),
        Mistake(lambda *a: ppo_formula(*a, combine="clipped"),
                "you used the clipped term alone; take the min of ρA and clip(ρ)A — where the "
                "unclipped term is the smaller one it must be kept (a step too far the wrong "
                "way is pulled back)."),
        Mistake(lambda *a: ppo_formula(*a, invert=True),
                "the ratio is inverted: ρ = π_θ/π_old = exp(logp − logp_old)."),
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
                "chosen and rejected are swapped: Δ = (chosen log-ratio) − (rejected log-ratio)."),
    ),
    "group_advantages": (
        Mistake(lambda r: group_formula(r, correction=0),
                "population std? Use the Bessel-corrected std (divide by G − 1), as torch.std "
                "does by default and as TRL does."),
        Mistake(lambda r: group_formula(r, eps=0.0),
                "eps = 1e-4 is missing: divide by (std + 1e-4)."),
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
    ),
}
MISTAKES["sft_loss"] = sft_problem.mistakes(Mistake)
