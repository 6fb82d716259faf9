"""DPO and SimPO: preference optimisation without a reward model or sampling.

DPO's implicit reward of a response is β·log(π_θ(y)/π_ref(y)); the loss is a Bradley–Terry
loss on the difference of the implicit rewards of the chosen and the rejected response.
SimPO drops the reference model and uses the length-averaged log-probability instead.

Training (``train_dpo``) reads like supervised learning: the reference log-probs of every pair
are computed once, then minibatches of pairs → policy log-probs → loss → step. There is no
sampling. ``train_dpo_bandit`` runs the same loss on a tabular softmax policy over a bandit's
arms, where its optimum π*_β can be checked exactly. Introduced in chapter 07.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhf_lab.scale import get_seed
from rlhf_lab.algos.best_of_n import encode_texts, sequence_logps, take
from rlhf_lab.algos.loop import (Callback, ExactEvaluator, SampledEvaluator, check_finite, default_evaluator, progress,
                                 trainable_copy)
from rlhf_lab.exact import kl, kl_regularized_optimum
from rlhf_lab.history import History
from rlhf_lab.worlds.base import TokenWorld

KINDS = ("sigmoid", "ipo", "hinge", "robust")
LOSSES = (*KINDS, "simpo")


def _check_pair(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise ValueError(f"{', '.join(shapes)} must all have the same shape (B,); got {shapes}")


def _check_beta(beta: float) -> None:
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0; got {beta!r}")


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
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5); got {label_smoothing}")
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
        # (eq-dpo)  L = −(1 − ε) log σ(βΔ) − ε log σ(−βΔ)
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
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0; got {gamma!r}")

    # (eq-simpo)  L = −log σ(β c − β r − γ)
    losses = -F.logsigmoid(beta * (avg_logp_chosen - avg_logp_rejected) - gamma)

    chosen_rewards = beta * avg_logp_chosen.detach()
    rejected_rewards = beta * avg_logp_rejected.detach()
    stats = _preference_stats(chosen_rewards, rejected_rewards, avg_logp_chosen, avg_logp_rejected)
    return losses.mean(), stats


# -- training ------------------------------------------------------------------------------------
@dataclass
class DPOConfig:
    """Hyperparameters of :func:`train_dpo` and :func:`train_dpo_bandit`; validated on construction.

    Attributes:
        beta: β > 0. DPO: the KL coefficient of the objective it solves, typical 0.05 … 0.5
            (0.1 in most recipes); IPO: its τ, 0.01 … 1; SimPO: the reward scale, 2.0 … 2.5.
        loss: ``"sigmoid"`` (DPO), ``"ipo"``, ``"hinge"``, ``"robust"`` (see :func:`dpo_loss`)
            or ``"simpo"`` (:func:`simpo_loss`, no reference model).
        label_smoothing: ε in [0, 0.5), the assumed label-flip rate (sigmoid, robust); 0 … 0.2.
        gamma: γ ≥ 0, SimPO's target margin (TRL's ``simpo_gamma``); 0.5 … 1.5. Only with
            loss ``"simpo"``.
        length_normalise: compare per-token mean log-probs instead of sums. None (default)
            follows the loss: summed for DPO, hinge and robust, averaged for IPO and SimPO.
        lr: η > 0, Adam learning rate; 1e-4 … 1e-3 for the tiny policies, ~0.05 for the
            tabular bandit policy (5e-7 for real LLMs).
        epochs: passes over the preference pairs, ≥ 1; typical 1 … 3 (hundreds of full-batch
            passes for the bandit).
        batch_size: pairs per gradient step, ≥ 1; typical 32 … 128.
        max_grad_norm: gradient-norm clip, > 0; typical 1.0.
        eval_every: evaluation (exact, or sampled where not enumerable) every this many steps (≥ 1).
        seed: seeds the shuffling.
        progress: show a tqdm progress bar.
    """

    beta: float = 0.1
    loss: str = "sigmoid"
    label_smoothing: float = 0.0
    gamma: float = 0.0
    length_normalise: bool | None = None
    lr: float = 5e-4
    epochs: int = 2
    batch_size: int = 64
    max_grad_norm: float = 1.0
    eval_every: int = 10
    seed: int = field(default_factory=get_seed)  # RLHF_LAB_SEED unless given
    progress: bool = True

    def __post_init__(self) -> None:
        checks = {
            "beta": (math.isfinite(self.beta) and self.beta > 0, "a finite number > 0"),
            "loss": (self.loss in LOSSES, f"one of {LOSSES}"),
            "label_smoothing": (
                0 <= self.label_smoothing < 0.5 and (self.label_smoothing == 0 or self.loss in ("sigmoid", "robust")),
                "in [0, 0.5), and 0 unless loss is sigmoid or robust"),
            "gamma": (math.isfinite(self.gamma) and self.gamma >= 0 and (self.gamma == 0 or self.loss == "simpo"),
                      "finite, >= 0, and 0 unless loss is simpo"),
            "lr": (math.isfinite(self.lr) and self.lr > 0, "finite and > 0"),
            "epochs": (self.epochs >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "max_grad_norm": (self.max_grad_norm > 0, "> 0"),
            "eval_every": (self.eval_every >= 1, ">= 1"),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:  # a NaN fails every comparison, so it is rejected too
                raise ValueError(f"DPOConfig.{name} must be {allowed}; got {getattr(self, name)!r}")
        if self.length_normalise is None:
            self.length_normalise = self.loss in ("ipo", "simpo")

    def loss_fn(self, logp_chosen: Tensor, logp_rejected: Tensor, ref_logp_chosen: Tensor,
                ref_logp_rejected: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The configured loss on one batch of sequence log-probs. Shape: each (B,)."""
        if self.loss == "simpo":
            return simpo_loss(logp_chosen, logp_rejected, self.beta, self.gamma)
        return dpo_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, self.beta,
                        kind=self.loss, label_smoothing=self.label_smoothing)


def _check_preferences(dataset) -> None:
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset needs columns prompt, chosen, rejected; missing {missing}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: DPO needs at least one preference pair")


def train_dpo(
    policy: torch.nn.Module,
    world: TokenWorld,
    dataset,
    config: DPOConfig,
    callback: Callback | None = None,
    *,
    ref_policy: torch.nn.Module | None = None,
    evaluator: ExactEvaluator | SampledEvaluator | None = None,
    reward_fn: Callable[[list[str], list[str]], Tensor] | None = None,
) -> History:
    """Train a copy of ``policy`` on preference pairs with DPO, a variant, or SimPO (chapter 07).

    1) the reference log-probs of every chosen and rejected completion, once (π_ref is frozen);
    then per minibatch of pairs: 2) the policy's log-probs of both completions; 3) the loss and
    a gradient step; 4) log ``loss/policy``, ``rewards/chosen``, ``rewards/rejected``,
    ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected`` (as TRL
    logs them) and ``stats/grad_norm``. The evaluator's metrics (on an enumerable world the
    exact ``reward/gold``, ``kl/exact``, ``entropy/exact``, and ``reward/proxy`` when a
    ``reward_fn`` is given) are logged at step 0, every ``eval_every`` steps and at the end.

    Args:
        policy: the starting policy (the SFT model); not modified (a copy is trained).
        world: the token world the texts belong to.
        dataset: a ``datasets.Dataset`` with columns prompt, chosen, rejected.
        config: a :class:`DPOConfig`.
        callback: called as ``callback(step, metrics, history)`` after every log.
        ref_policy: π_ref; default ``policy`` itself (the usual choice).
        evaluator: a prepared evaluator (saves enumerating again across runs); default
            ``default_evaluator(world, ref_policy, reward_fn)``.
        reward_fn: a proxy reward (e.g. the reward model the pairs could have trained) whose
            expectation is logged as ``reward/proxy``; DPO does not train on it.

    Returns:
        The ``History``; the trained policy is ``history.policy``.

    Raises:
        ValueError: the dataset lacks a column, is empty, or has an empty completion.
        FloatingPointError: the loss became NaN or infinite (names the step).
    """
    _check_preferences(dataset)
    ref_policy = policy if ref_policy is None else ref_policy
    if evaluator is None:
        evaluator = default_evaluator(world, ref_policy, proxy_fn=reward_fn)
    model = trainable_copy(policy)
    device = next(model.parameters()).device
    chosen = encode_texts(world, dataset["prompt"], dataset["chosen"], device)
    rejected = encode_texts(world, dataset["prompt"], dataset["rejected"], device)
    average = config.length_normalise
    # 1) π_ref's log-probs never change: compute them once, as TRL's precompute_ref_log_probs
    with torch.no_grad():
        ref_chosen = sequence_logps(ref_policy, world, chosen, average)  # (N,)
        ref_rejected = sequence_logps(ref_policy, world, rejected, average)  # (N,)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    history = History()
    history.policy = model

    def log(step: int, metrics: dict[str, float]) -> None:
        history.log(step, metrics)
        if callback is not None:
            callback(step, metrics, history)

    n = len(dataset)
    total = config.epochs * -(-n // config.batch_size)
    log(0, evaluator(model))
    step = 0
    bar = progress(total, config.loss.upper() if config.loss == "simpo" else "DPO", config.progress)
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, config.batch_size):
            rows = order[start: start + config.batch_size]
            # 2) the policy's log-probs of both completions
            logp_chosen = sequence_logps(model, world, take(chosen, rows), average)  # (B,)
            logp_rejected = sequence_logps(model, world, take(rejected, rows), average)  # (B,)
            # 3) loss and step
            loss, stats = config.loss_fn(logp_chosen, logp_rejected, ref_chosen[rows], ref_rejected[rows])
            check_finite(step, loss.detach(), history)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            opt.step()
            step += 1
            # 4) log
            log(step, {"loss/policy": loss.item(), **stats, "stats/grad_norm": float(grad_norm)})
            if (step % config.eval_every == 0 or step == total):
                log(step, evaluator(model))
            bar.update()
    bar.close()
    model.eval()
    return history


def train_dpo_bandit(
    logp_ref: Tensor,
    winners: Tensor,
    losers: Tensor,
    config: DPOConfig,
    callback: Callback | None = None,
    *,
    rewards: Tensor | None = None,
) -> History:
    """DPO on a bandit: a tabular softmax policy π = softmax(θ) over K arms, θ starting at log π_ref.

    The same loop as :func:`train_dpo` with each "completion" an arm (length 1, so SimPO's
    length normalisation does nothing here). Minimising the DPO loss over comparisons
    (winner, loser) is maximum-likelihood Bradley–Terry on the implicit reward
    β log π(y)/π_ref(y), so the trained policy is π*_β for the Bradley–Terry fit of the rewards
    (chapter 07 checks this).

    Args:
        logp_ref: log π_ref over the arms.
        winners: the preferred arm of each comparison.
        losers: the other arm.
        config: a :class:`DPOConfig`; ``batch_size`` ≥ the number of comparisons gives
            full-batch steps.
        callback: called as ``callback(step, metrics, history)`` after every log.
        rewards: true arm rewards r; with them the log also has ``kl/to_optimum`` =
            KL(π ‖ π*_β) for π*_β of r, and ``reward/gold`` = E_π[r].

    Shape:
        logp_ref: (K,); winners, losers: (N,) arm indices; rewards: (K,). Introduced in chapter 07.

    Returns:
        The ``History`` (``loss/policy``, ``rewards/…``, ``kl/exact``, …); the trained
        log-probs are ``history.logp`` (K,).
    """
    logp_ref = torch.as_tensor(logp_ref, dtype=torch.float64)
    winners, losers = torch.as_tensor(winners, dtype=torch.long), torch.as_tensor(losers, dtype=torch.long)
    if winners.ndim != 1 or winners.shape != losers.shape or winners.numel() == 0:
        raise ValueError(f"winners and losers must both have shape (N,) with N ≥ 1, got "
                         f"{tuple(winners.shape)} and {tuple(losers.shape)}")
    optimum = None if rewards is None else kl_regularized_optimum(logp_ref, torch.as_tensor(rewards).double(), config.beta)
    theta = logp_ref.clone().requires_grad_(True)  # (K,) logits; softmax(θ) = π_ref at the start
    opt = torch.optim.Adam([theta], lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    history = History()
    n = winners.numel()
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, config.batch_size):
            rows = order[start: start + config.batch_size]
            logp = torch.log_softmax(theta, dim=-1)  # (K,)
            w, l = winners[rows], losers[rows]
            loss, stats = config.loss_fn(logp[w], logp[l], logp_ref[w], logp_ref[l])
            check_finite(step, loss.detach(), history)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            with torch.no_grad():
                logp = torch.log_softmax(theta, dim=-1)
                metrics = {"loss/policy": loss.item(), **stats, "kl/exact": float(kl(logp, logp_ref))}
                if optimum is not None:
                    metrics["kl/to_optimum"] = float(kl(logp, optimum))
                    metrics["reward/gold"] = float((logp.exp() * torch.as_tensor(rewards).double()).sum())
            history.log(step, metrics)
            if callback is not None:
                callback(step, metrics, history)
    history.logp = torch.log_softmax(theta.detach(), dim=-1)
    return history
