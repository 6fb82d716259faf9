"""DPO and SimPO: preference optimisation without a reward model or sampling.

DPO's implicit reward of a response is β·log(π_θ(y)/π_ref(y)); the loss is a Bradley–Terry
loss on the difference of the implicit rewards of the chosen and the rejected response.
SimPO drops the reference model and uses the length-averaged log-probability instead. The
losses, :func:`dpo_loss` (with its IPO, hinge and robust variants) and :func:`simpo_loss`, are
pure functions beside the reward model's Bradley–Terry loss in ``pairwise.py``; they are
importable from here. ``DPOConfig.loss`` names one of them: one of ``dpo_loss``'s ``kind``s,
or ``"simpo"``.

Training (``train``, also importable as ``train_dpo``) reads like supervised learning: the
reference log-probs of every pair are computed once, then minibatches of pairs → policy
log-probs → loss → step. There is no sampling. ``train_dpo_bandit`` runs the same loss on a
tabular softmax policy over a bandit's arms, where its optimum π*_β can be checked exactly.
Introduced in chapter 07.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlhf_lab.algos.loop import (Callback, ExactEvaluator, RewardFn, RunLog, SampledEvaluator, check_fields,
                                 check_train_args, default_evaluator, make_optimizer, optimizer_step, trainable_copy)
from rlhf_lab.categorical import kl, kl_regularized_optimum
from rlhf_lab.data import check_preferences
from rlhf_lab.history import History
from rlhf_lab.pairwise import KINDS, dpo_loss, simpo_loss  # noqa: F401  (re-exported)
from rlhf_lab.fastpath import sequence_logps, stack
from rlhf_lab.rollout import encode_texts
from rlhf_lab.scale import get_seed
from rlhf_lab.validate import as_tensor, check_callable, check_ids, check_instance, check_logprobs, check_tensor
from rlhf_lab.worlds.base import TokenWorld

LOSSES = (*KINDS, "simpo")


# -- training ------------------------------------------------------------------------------------
@dataclass
class DPOConfig:
    """Hyperparameters of :func:`train` and :func:`train_dpo_bandit`; validated on construction.

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
        check_fields(self, lambda: {
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
        })
        if self.length_normalise is None:
            self.length_normalise = self.loss in ("ipo", "simpo")

    def loss_fn(self, logp_chosen: Tensor, logp_rejected: Tensor, ref_logp_chosen: Tensor,
                ref_logp_rejected: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The configured loss on one batch of sequence log-probs. Shape: each (B,)."""
        if self.loss == "simpo":
            return simpo_loss(logp_chosen, logp_rejected, self.beta, self.gamma)
        return dpo_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, self.beta,
                        kind=self.loss, label_smoothing=self.label_smoothing)


def train(
    policy: torch.nn.Module,
    world: TokenWorld,
    dataset,
    config: DPOConfig,
    callback: Callback | None = None,
    *,
    ref_policy: torch.nn.Module | None = None,
    evaluator: ExactEvaluator | SampledEvaluator | None = None,
    reward_fn: RewardFn | None = None,
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
        FloatingPointError: the loss, the gradient norm or the model's outputs became NaN or
            infinite (names the step and the last finite metrics; ``err.history``).
    """
    check_train_args(policy, world, config, DPOConfig, callback=callback, reward_fn=reward_fn,
                     ref_policy=ref_policy, evaluator=evaluator)
    check_preferences(dataset)
    ref_policy = policy if ref_policy is None else ref_policy
    if evaluator is None:
        evaluator = default_evaluator(world, ref_policy, proxy_fn=reward_fn)
    model = trainable_copy(policy)
    device = next(model.parameters()).device
    # the columns as lists in one conversion (a datasets Column reads row by row)
    texts = dataset.select_columns(["prompt", "chosen", "rejected"]).to_dict()
    chosen = encode_texts(world, texts["prompt"], texts["chosen"], device)
    rejected = encode_texts(world, texts["prompt"], texts["rejected"], device)
    average = config.length_normalise
    # 1) π_ref's log-probs never change: compute them once, as TRL's precompute_ref_log_probs,
    # chosen and rejected in one pass that forwards each distinct text once (fastpath)
    n = len(dataset)
    with torch.no_grad():
        ref_chosen, ref_rejected = sequence_logps(ref_policy, world, stack(chosen, rejected, world.pad_id),
                                                  average).split(n)  # (N,) each
    params = list(model.parameters())
    opt = make_optimizer(params, config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    total = config.epochs * -(-n // config.batch_size)
    run = RunLog(evaluator, config.eval_every, total, callback, "SIMPO" if config.loss == "simpo" else "DPO",
                 config.progress)
    run.history.policy = model
    run.evaluate(0, model)
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, config.batch_size):
            rows = order[start: start + config.batch_size]
            with run.guard(step):  # NaN logits (diverged weights) stop the run here
                # 2) the policy's log-probs of both completions, in one forward pass
                pair = stack(chosen.select(rows), rejected.select(rows), world.pad_id)
                logp_chosen, logp_rejected = sequence_logps(model, world, pair, average).split(len(rows))  # (B,)
                # 3) loss and step
                loss, stats = config.loss_fn(logp_chosen, logp_rejected, ref_chosen[rows], ref_rejected[rows])
            grad_norm = optimizer_step(opt, loss, params, config.max_grad_norm, step, run.history)
            step += 1
            # 4) log
            run.log(step, {"loss/policy": loss.item(), **stats, "stats/grad_norm": grad_norm})
            run.evaluate(step, model)
            run.tick()
    model.eval()
    return run.close()


train_dpo = train  # the name chapter 07 uses


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

    The same loop as :func:`train` with each "completion" an arm (length 1, so SimPO's
    length normalisation does nothing here). Minimising the DPO loss over comparisons
    (winner, loser) is maximum-likelihood Bradley–Terry on the implicit reward
    β log π(y)/π_ref(y), so the trained policy is π*_β for the Bradley–Terry fit of the rewards
    (chapter 07 checks this).

    Args:
        logp_ref: log π_ref over the arms.
        winners: the preferred arm of each comparison.
        losers: the other arm.
        config: a :class:`DPOConfig`; ``batch_size`` ≥ the number of comparisons gives
            full-batch steps. There is no gradient clip (``max_grad_norm`` is not used) and
            no progress bar.
        callback: called as ``callback(step, metrics, history)`` after every log.
        rewards: true arm rewards r; with them the log also has ``kl/to_optimum`` =
            KL(π ‖ π*_β) for π*_β of r, and ``reward/gold`` = E_π[r].

    Shape:
        logp_ref: (K,); winners, losers: (N,) arm indices; rewards: (K,). Introduced in chapter 07.

    Returns:
        The ``History`` (``loss/policy``, ``rewards/…``, ``kl/exact``, …); the trained
        log-probs are ``history.logp`` (K,).
    """
    check_logprobs("logp_ref", as_tensor("logp_ref", logp_ref), ndim=1, dims="(K,)", normalized=True)
    for name, arms in (("winners", winners), ("losers", losers)):
        check_ids(name, check_tensor(name, as_tensor(name, arms), ndim=1, dims="(N,)"), len(logp_ref), "arm indices")
    check_instance("config", config, DPOConfig, "a DPOConfig")
    check_callable("callback", callback, "a function callback(step, metrics, history)", none=True)
    if rewards is not None:
        check_tensor("rewards", as_tensor("rewards", rewards), shape=(len(logp_ref),), finite=True,
                     dims="(K,), like logp_ref")
    logp_ref = torch.as_tensor(logp_ref, dtype=torch.float64)
    winners, losers = torch.as_tensor(winners, dtype=torch.long), torch.as_tensor(losers, dtype=torch.long)
    if winners.ndim != 1 or winners.shape != losers.shape or winners.numel() == 0:
        raise ValueError(f"winners and losers must both have shape (N,) with N ≥ 1, got "
                         f"{tuple(winners.shape)} and {tuple(losers.shape)}")
    optimum = None if rewards is None else kl_regularized_optimum(logp_ref, torch.as_tensor(rewards).double(), config.beta)
    theta = logp_ref.clone().requires_grad_(True)  # (K,) logits; softmax(θ) = π_ref at the start
    opt = make_optimizer([theta], config.lr, fused=False)
    gen = torch.Generator().manual_seed(config.seed)
    n = winners.numel()
    run = RunLog(None, config.eval_every, config.epochs * -(-n // config.batch_size), callback)
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, config.batch_size):
            rows = order[start: start + config.batch_size]
            logp = torch.log_softmax(theta, dim=-1)  # (K,)
            w, l = winners[rows], losers[rows]
            with run.guard(step):
                loss, stats = config.loss_fn(logp[w], logp[l], logp_ref[w], logp_ref[l])
            optimizer_step(opt, loss, [theta], None, step, run.history)
            step += 1
            with torch.no_grad():
                logp = torch.log_softmax(theta, dim=-1)
                metrics = {"loss/policy": loss.item(), **stats, "kl/exact": float(kl(logp, logp_ref))}
                if optimum is not None:
                    metrics["kl/to_optimum"] = float(kl(logp, optimum))
                    metrics["reward/gold"] = float((logp.exp() * torch.as_tensor(rewards).double()).sum())
            run.log(step, metrics)
    run.history.logp = torch.log_softmax(theta.detach(), dim=-1)
    return run.close()
