"""What each coding problem's answer is, said twice.

For every problem there is the package's own function wrapped to the exercise's signature (many
return ``(loss, stats)`` or take extra arguments) and the formula written out directly, in
float64. :func:`rlhf_lab.exercises.check` computes both on every case and refuses to grade when
they disagree, so a change inside ``rlhf_lab`` cannot silently change what counts as right.

The formulas take options that turn them into the wrong answers students write (``mistakes.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
                factor=None, bootstrap_padding=False):
    """Â_t = Σ_l (γλ)^l δ_{t+l} over each row's valid prefix, δ_t = r_t + γV_{t+1} − V_t."""
    factor = gamma * lam if factor is None else factor
    out = torch.zeros(rewards.shape, dtype=torch.float64)
    for b in range(rewards.shape[0]):
        n = int(mask[b].sum()) if use_mask else rewards.shape[1]
        r, v = rewards[b, :n].double(), values[b, :n].double()
        # the value after the last token is 0 (a mistake reads the padded position's value there)
        after = values[b, n:n + 1].double() if bootstrap_padding else v.new_zeros(0)
        v_next = torch.cat([v[1:], after if len(after) else v.new_zeros(1)])
        delta = r + (gamma if gamma_in_delta else 1.0) * v_next - v
        for t in range(n):
            weights = factor ** torch.arange(n - t, dtype=torch.float64)
            out[b, t] = (weights * delta[t:]).sum()
    return out


def ppo_formula(logp, logp_old, adv, mask, clip_eps, combine="min", clip=True, invert=False,
                reduce="tokens", ratio_of_logs=False, clip_product=False):
    valid = mask.bool()
    lp = torch.where(valid, logp.double(), 0.0)
    lo = torch.where(valid, logp_old.double(), 0.0)
    a = torch.where(valid, adv.double(), 0.0)
    ratio = torch.exp(lo - lp) if invert else torch.exp(lp - lo)
    if ratio_of_logs:
        ratio = torch.where(valid, logp.double() / logp_old.double(), 0.0)
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * a
    if clip_product:
        clipped = (ratio * a).clamp(1 - clip_eps, 1 + clip_eps)
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


def group_formula(rewards, correction=1, eps=1e-4, dim=1, eps_in_var=False, batch_std=False):
    r = rewards.double()
    centred = r - r.mean(dim=dim, keepdim=True)
    if eps_in_var:
        return centred / torch.sqrt(r.var(dim=dim, keepdim=True, correction=correction) + eps)
    std = r.std(dim=None if batch_std else dim, keepdim=True, correction=correction)
    return centred / (std + eps)


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


def bon_formula(probs, rewards, n, order="reward", minus_below=True, scatter=True):
    p = probs.double()
    if order == "index":
        idx = torch.arange(len(p))
    else:
        idx = torch.argsort(rewards.double(), descending=order == "descending")
    cdf = torch.cumsum(p[idx], 0)  # F(y): one draw is no better than y
    below = cdf - p[idx]  # F⁻(y): one draw is strictly worse
    if not scatter:  # left in reward order
        return cdf**n - below**n
    out = torch.empty_like(p)
    out[idx] = cdf**n - below**n if minus_below else cdf**n
    return out


def bon_density(probs, rewards, n):
    """n·p·F^(n−1): the density of the best of n for a continuous reward, not for discrete outputs."""
    p = probs.double()
    idx = torch.argsort(rewards.double())
    out = torch.empty_like(p)
    out[idx] = n * p[idx] * torch.cumsum(p[idx], 0) ** (n - 1)
    return out


def bon_power(probs, rewards, n):
    p = probs.double() ** n
    return p / p.sum()
