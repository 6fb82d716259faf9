"""Pairwise preference losses: a Bradley–Terry loss on the difference of two scores.

A preference pair is a prompt x with a chosen completion y_w and a rejected one y_l. Under
Bradley–Terry P(y_w ≻ y_l | x) = σ(s(y_w) − s(y_l)), and the losses differ in the score s:

* :func:`bradley_terry_loss` — s = r(x, y), a reward model's output (chapter 05);
* :func:`dpo_loss` — s = β log π_θ(y|x)/π_ref(y|x), DPO's implicit reward, and its IPO,
  hinge (SLiC) and robust variants (chapter 07);
* :func:`simpo_loss` — s = β (1/|y|) log π_θ(y|x), SimPO's length-averaged log-prob (chapter 07).

Every function is pure — tensors in, ``(loss, stats)`` out — and is importable from the module
of the algorithm that trains on it: ``reward_model.bradley_terry_loss``, ``dpo.dpo_loss``,
``dpo.simpo_loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhf_lab.validate import check_choice, check_float, check_tensor


def bradley_terry_loss(
    r_chosen: Tensor, r_rejected: Tensor, margin: Tensor | float | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Mean negative log-likelihood of the preferences under Bradley–Terry (eq-rm-loss).

    Args:
        r_chosen: rewards of the chosen completions. Shape: (B,).
        r_rejected: rewards of the rejected completions. Shape: (B,).
        margin: m, subtracted from each difference. Shape: (B,) or a float; None means 0.

    Returns:
        (loss, stats): stats has ``accuracy`` (fraction with r_chosen > r_rejected),
        ``margin`` (mean r_chosen − r_rejected), ``chosen`` and ``rejected`` (mean rewards).
    """
    _check_pair(r_chosen=r_chosen, r_rejected=r_rejected)
    diff = r_chosen - r_rejected  # (B,)
    shifted = diff
    if margin is not None:
        if not isinstance(margin, Tensor):
            check_float("margin", margin)
        margin = check_tensor("margin", torch.as_tensor(margin, dtype=diff.dtype, device=diff.device), finite=True)
        if margin.ndim not in (0, 1) or (margin.ndim == 1 and margin.shape != diff.shape):
            raise ValueError(f"margin must be a float or have shape {tuple(diff.shape)}, got {tuple(margin.shape)}")
        shifted = diff - margin
    # (eq-rm-loss); logsigmoid is stable where log(sigmoid(·)) underflows
    loss = -F.logsigmoid(shifted).mean()
    stats = {
        "accuracy": (diff > 0).float().mean().item(),
        "margin": diff.mean().item(),
        "chosen": r_chosen.mean().item(),
        "rejected": r_rejected.mean().item(),
    }
    return loss, stats


# -- DPO and SimPO (chapter 07) --------------------------------------------------------------------
KINDS = ("sigmoid", "ipo", "hinge", "robust")


def _check_pair(**tensors: Tensor) -> None:
    """Float tensors of one shape (B,), B ≥ 1, finite."""
    for name, t in tensors.items():
        check_tensor(name, t, kind="float")
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1 or (0,) in shapes.values():
        names = list(shapes)
        raise ValueError(f"{', '.join(names[:-1])} and {names[-1]} must all have the same shape (B,) with B >= 1; "
                         f"got {shapes}")
    for name, t in tensors.items():
        check_tensor(name, t, finite=True)


def _check_beta(beta: float) -> None:
    check_float("beta", beta, gt=0)


def _preference_stats(
    chosen_rewards: Tensor, rejected_rewards: Tensor, logp_chosen: Tensor, logp_rejected: Tensor
) -> dict[str, float]:
    """Batch means of the implicit rewards, as TRL's DPOTrainer logs them."""
    return {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "logps/chosen": logp_chosen.detach().mean().item(),
        "logps/rejected": logp_rejected.detach().mean().item(),
    }


def dpo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    beta: float,
    kind: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """DPO loss and its IPO, hinge (SLiC) and robust variants, following TRL 1.16's DPOTrainer.

    With Δ = log π_θ(y_w)/π_ref(y_w) − log π_θ(y_l)/π_ref(y_l) and ε = ``label_smoothing``:

    * ``sigmoid`` — −(1 − ε) log σ(βΔ) − ε log σ(−βΔ): DPO, and conservative DPO (cDPO) when
      ε > 0. TRL 1.16's DPOTrainer ignores ε for this loss; TRL < 1.0's DPOTrainer and TRL's
      CPOTrainer apply it exactly as here. At ε = 0 the two agree.
    * ``ipo`` — (Δ − 1/(2β))², β being IPO's τ. TRL divides each summed log-ratio by the number
      of completion tokens first; here the caller passes length-averaged log-probs instead, which
      gives the same Δ.
    * ``hinge`` — max(0, 1 − βΔ), SLiC's hinge with β the inverse margin.
    * ``robust`` — ((1 − ε)·(−log σ(βΔ)) − ε·(−log σ(−βΔ))) / (1 − 2ε): rDPO, an unbiased
      loss under labels flipped with probability ε.

    TRL ignores ε for hinge and IPO; here a non-zero ε with those kinds raises instead.

    Args:
        logp_chosen: log π_θ(y_w | x), summed over tokens (length-averaged for IPO).
        logp_rejected: log π_θ(y_l | x), same convention.
        ref_logp_chosen: log π_ref(y_w | x), same convention (detached).
        ref_logp_rejected: log π_ref(y_l | x), same convention (detached).
        beta: β > 0; typical 0.1 (DPO), 0.01–1 (IPO's τ).
        kind: one of ``"sigmoid"``, ``"ipo"``, ``"hinge"``, ``"robust"``.
        label_smoothing: ε in [0, 0.5), the assumed label-flip probability (sigmoid, robust).

    Shape:
        logp_chosen: (B,), introduced in chapter 07.
        logp_rejected: (B,), introduced in chapter 07.
        ref_logp_chosen: (B,), introduced in chapter 07.
        ref_logp_rejected: (B,), introduced in chapter 07.

    Returns:
        ``(loss, stats)``, the loss a batch mean. stats (batch means, as TRL logs them):
        ``rewards/chosen`` = β(log π_θ(y_w) − log π_ref(y_w)), ``rewards/rejected``,
        ``rewards/margins``, ``rewards/accuracies`` (fraction with chosen reward strictly
        larger), ``logps/chosen``, ``logps/rejected``. For IPO they are computed on the
        length-averaged log-probs passed in (TRL logs them on summed log-probs).

    Raises:
        ValueError: on beta ≤ 0, an unknown kind, ε outside [0, 0.5), ε > 0 with hinge or IPO,
            or shapes that are not all the same (B,).

    Introduced in chapter 07 (DPO and SimPO).
    """
    _check_pair(
        logp_chosen=logp_chosen,
        logp_rejected=logp_rejected,
        ref_logp_chosen=ref_logp_chosen,
        ref_logp_rejected=ref_logp_rejected,
    )
    _check_beta(beta)
    check_choice("kind", kind, KINDS)
    check_float("label_smoothing", label_smoothing, ge=0.0, lt=0.5)
    if label_smoothing > 0 and kind in ("ipo", "hinge"):
        raise ValueError(
            f"label_smoothing must be 0 for kind={kind!r}; only sigmoid and robust use it"
        )
    ref_logp_chosen, ref_logp_rejected = ref_logp_chosen.detach(), ref_logp_rejected.detach()
    eps = label_smoothing

    chosen_logratio = logp_chosen - ref_logp_chosen
    rejected_logratio = logp_rejected - ref_logp_rejected
    # (eq-dpo-delta)  Δ = log π_θ(y_w)/π_ref(y_w) − log π_θ(y_l)/π_ref(y_l)
    delta = chosen_logratio - rejected_logratio
    if kind == "sigmoid":
        # (eq-dpo)  L = −log σ(βΔ); label smoothing ε (cDPO):
        # L = −(1 − ε) log σ(βΔ) − ε log σ(−βΔ)
        losses = -(1 - eps) * F.logsigmoid(beta * delta) - eps * F.logsigmoid(-beta * delta)
    elif kind == "robust":
        # (eq-rdpo)  L = [(1 − ε)(−log σ(βΔ)) − ε(−log σ(−βΔ))] / (1 − 2ε)
        clean = -(1 - eps) * F.logsigmoid(beta * delta)
        flipped = -eps * F.logsigmoid(-beta * delta)
        losses = (clean - flipped) / (1 - 2 * eps)
    elif kind == "ipo":
        # (eq-ipo)  L = (Δ − 1/(2β))²
        losses = (delta - 1 / (2 * beta)) ** 2
    else:
        # (eq-slic-hinge)  L = max(0, 1 − βΔ)
        losses = torch.relu(1 - beta * delta)

    chosen_rewards = beta * chosen_logratio.detach()
    rejected_rewards = beta * rejected_logratio.detach()
    stats = _preference_stats(chosen_rewards, rejected_rewards, logp_chosen, logp_rejected)
    return losses.mean(), stats


def simpo_loss(
    avg_logp_chosen: Tensor,
    avg_logp_rejected: Tensor,
    beta: float,
    gamma: float,
) -> tuple[Tensor, dict[str, float]]:
    """SimPO: −log σ(β(c − r) − γ) on length-averaged log-probs, with no reference model.

    γ is an absolute margin on the scaled reward difference. It is TRL's CPOTrainer
    ``simpo_gamma`` unchanged: TRL computes logits = (c − r) − simpo_gamma/β and the loss
    −log σ(β·logits) = −log σ(β(c − r) − simpo_gamma). The SimPO reference code instead takes
    ``gamma_beta_ratio`` = γ/β, so γ = β·gamma_beta_ratio. TRL's CPOTrainer also adds
    ``cpo_alpha``·NLL(y_w), a behaviour-cloning term that is 1.0 by default; pure SimPO, as here,
    is TRL with ``loss_type="simpo", cpo_alpha=0``.

    Args:
        avg_logp_chosen: c = (1/|y_w|) log π_θ(y_w | x), the per-token mean log-prob.
        avg_logp_rejected: r = (1/|y_l|) log π_θ(y_l | x).
        beta: β > 0; SimPO recommends 2.0–2.5.
        gamma: γ ≥ 0, the target margin; SimPO recommends 0.5–1.5.

    Shape:
        avg_logp_chosen: (B,), introduced in chapter 07.
        avg_logp_rejected: (B,), introduced in chapter 07.

    Returns:
        ``(loss, stats)``, the loss a batch mean; stats as :func:`dpo_loss`, with implicit
        rewards β·c and β·r (as TRL's CPOTrainer logs them).

    Raises:
        ValueError: on beta ≤ 0, gamma < 0, or shapes that are not the same (B,).

    Introduced in chapter 07 (DPO and SimPO).
    """
    _check_pair(avg_logp_chosen=avg_logp_chosen, avg_logp_rejected=avg_logp_rejected)
    _check_beta(beta)
    check_float("gamma", gamma, ge=0)

    # (eq-simpo)  L = −log σ(β c − β r − γ)
    losses = -F.logsigmoid(beta * (avg_logp_chosen - avg_logp_rejected) - gamma)

    chosen_rewards = beta * avg_logp_chosen.detach()
    rejected_rewards = beta * avg_logp_rejected.detach()
    stats = _preference_stats(chosen_rewards, rejected_rewards, avg_logp_chosen, avg_logp_rejected)
    return losses.mean(), stats
