"""Advantage actor–critic (A2C): a learned value function V(s_t) turns one end-of-text reward
into an advantage for every token, through GAE.

A completion is an episode whose states are the prefixes s_t = (x, y_<t) and whose actions are
tokens. The critic V_φ(s_t) (a ``ValueModel``, a copy of the policy's transformer with a scalar
head) predicts the return still to come; the TD residual δ_t = r_t + γV(s_{t+1}) − V(s_t) scores
one token, and GAE averages the residuals ahead with weights (γλ)^l. The actor takes one policy-
gradient step per batch, weighting log π(y_t | s_t) by Â_t.

This module holds the actor's loss, the Config and ``train``. What PPO shares with it — the
per-token rewards, the collection of a batch, the critic's forward pass and loss — is in
``experience.py``; the exact values of prefixes (``prefix_groups``, ``group_expectation``) are
in ``categorical.py``. Both are importable from here. Introduced in chapter 03.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlhf_lab.algos.experience import (Experience, actor_critic_forward, batch_metrics,  # noqa: F401  (re-exported)
                                       check_same_shape, collect, token_rewards, value_loss, values_of)
from rlhf_lab.algos.loop import (Callback, ExactEvaluator, RewardFn, RunLog, SampledEvaluator, check_fields,
                                 check_train_args, default_evaluator, make_optimizer, optimizer_step, prompt_batch,
                                 trainable_copy)
from rlhf_lab.categorical import group_expectation, prefix_groups  # noqa: F401  (re-exported)
from rlhf_lab.core import explained_variance, masked_mean  # noqa: F401  (re-exported)
from rlhf_lab.history import History
from rlhf_lab.models import ValueModel
from rlhf_lab.scale import get_seed
from rlhf_lab.validate import check_tensor
from rlhf_lab.worlds.base import TokenWorld

actor_critic_step = actor_critic_forward  # the old name: it runs the forward passes and takes no step


def a2c_policy_loss(logp: Tensor, adv: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, float]]:
    """The actor's loss −Â_t log π_θ(y_t | s_t), averaged over valid tokens.

    Args:
        logp: log π_θ of each sampled token; carries the gradient.
        adv: advantage Â_t of each token, e.g. from GAE (detached).
        mask: 1 for completion tokens, 0 for padding.

    Shape:
        logp (B, T), adv (B, T), mask (B, T) → a scalar loss.

    Returns:
        ``(loss, stats)``; stats ``adv_mean`` and ``adv_std`` over valid tokens.

    Introduced in chapter 03 (actor–critic).
    """
    check_tensor("logp", logp, kind="float", dims="(B, T)", ndim=2)
    check_tensor("adv", adv)
    check_tensor("mask", mask, kind="mask")
    check_same_shape(logp=logp, adv=adv, mask=mask)
    valid = mask.bool()
    check_tensor("logp", logp, finite=True, mask=valid)  # any finite numbers: a chapter may pass random ones
    check_tensor("adv", adv, finite=True, mask=valid)
    adv = torch.where(valid, adv.detach(), 0.0)
    # (eq-a2c-loss)  L(θ) = −mean_t Â_t log π_θ(y_t | s_t)
    loss = masked_mean(-adv * torch.where(valid, logp, 0.0), valid)
    stats = {"adv_mean": adv[valid].mean().item(), "adv_std": adv[valid].std(correction=0).item()}
    return loss, stats


# -- training ------------------------------------------------------------------------------------
@dataclass
class A2CConfig:
    """Hyperparameters of :func:`train`; validated on construction (chapter 03).

    Attributes:
        steps: rollout batches, one actor and one critic step each; ≥ 1 (40 at scale ci).
        batch_size: B, completions per batch; ≥ 2 (whitening needs two tokens); typical 32 … 512.
        lr: η > 0, Adam learning rate of actor and critic; 1e-4 … 3e-3 for the tiny policies.
        gamma: γ in [0, 1], the discount; 1 for RLHF (the episode is a few tokens long).
        lam: λ in [0, 1], GAE's bias–variance knob: 0 is TD(0), 1 Monte Carlo; typical 0.95.
        beta: β ≥ 0, per-token KL coefficient (eq-kl-reward); 0 … 1.
        vf_coef: c_V ≥ 0, weight of the critic's loss in the summed loss; typical 0.1 … 0.5.
        whiten_adv: normalise the advantages over each batch to mean 0 and std 1.
        missing_eos_score: the score of a completion without EOS (a fixed low value, −1 as in
            Huang et al. 2024), or None to keep the reward function's score.
        max_grad_norm: gradient-norm clip over actor and critic together, > 0; typical 1.0.
        eval_every: evaluation (exact, or sampled where not enumerable) every this many steps, ≥ 1.
        seed: seeds the prompt order and the samples.
        progress: show a tqdm progress bar.
    """

    steps: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    gamma: float = 1.0
    lam: float = 0.95
    beta: float = 0.0
    vf_coef: float = 0.1
    whiten_adv: bool = True
    missing_eos_score: float | None = -1.0
    max_grad_norm: float = 1.0
    eval_every: int = 5
    seed: int = field(default_factory=get_seed)  # RLHF_LAB_SEED unless given
    progress: bool = True

    def __post_init__(self) -> None:
        check_fields(self, lambda: {
            "steps": (self.steps >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 2, ">= 2"),
            "lr": (self.lr > 0, "> 0"),
            "gamma": (0 <= self.gamma <= 1, "in [0, 1]"),
            "lam": (0 <= self.lam <= 1, "in [0, 1]"),
            "beta": (self.beta >= 0, ">= 0"),
            "vf_coef": (self.vf_coef >= 0, ">= 0"),
            "missing_eos_score": (self.missing_eos_score is None or abs(self.missing_eos_score) < float("inf"),
                                  "a finite number or None"),
            "max_grad_norm": (self.max_grad_norm > 0, "> 0"),
            "eval_every": (self.eval_every >= 1, ">= 1"),
        })


def train(
    policy: torch.nn.Module,
    world: TokenWorld,
    config: A2CConfig,
    callback: Callback | None = None,
    *,
    reward_fn: RewardFn | None = None,
    ref_policy: torch.nn.Module | None = None,
    evaluator: ExactEvaluator | SampledEvaluator | None = None,
) -> History:
    """Train a copy of ``policy`` with A2C (chapter 03): rollout → advantages → one step → log.

    The critic is a separate ``ValueModel`` started from a copy of ``policy``'s transformer.
    Logs ``loss/policy``, ``loss/value``, ``reward/mean``, ``kl/sampled``,
    ``stats/explained_var``, ``stats/entropy``, ``stats/grad_norm`` every step, and the
    evaluator's metrics at step 0, every ``eval_every`` steps and at the end.

    Args:
        policy: the starting policy; not modified (a copy is trained).
        world: a token world.
        config: an :class:`A2CConfig`.
        callback: called as ``callback(step, metrics, history)`` after every log.
        reward_fn: ``reward_fn(prompts, completions) -> Tensor (B,)``; default the gold reward.
        ref_policy: π_ref of the KL; default ``policy`` itself.
        evaluator: a prepared ``ExactEvaluator``.

    Returns:
        The ``History``; the trained policy is ``history.policy``, the critic
        ``history.value_model``.

    Raises:
        ValueError, TypeError: a bad argument, named, before anything runs; a wrong-shaped reward.
        FloatingPointError: the loss, the gradient norm, the policy's logits or a reward became
            NaN or infinite (names the step and the last finite metrics; ``err.history``).
    """
    check_train_args(policy, world, config, A2CConfig, callback=callback, reward_fn=reward_fn,
                     ref_policy=ref_policy, evaluator=evaluator)
    ref_policy = policy if ref_policy is None else ref_policy
    evaluator = evaluator or default_evaluator(world, ref_policy, reward_fn)
    score = reward_fn or world.gold_rewards
    model = trainable_copy(policy)
    device = next(model.parameters()).device
    value_model = trainable_copy(ValueModel.from_policy(policy).to(device))
    params = [*model.parameters(), *value_model.parameters()]
    opt = make_optimizer(params, config.lr)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    cpu_gen = torch.Generator().manual_seed(config.seed)
    run = RunLog(evaluator, config.eval_every, config.steps, callback, "A2C", config.progress)
    run.history.policy, run.history.value_model = model, value_model
    run.evaluate(0, model)
    for step in range(config.steps):
        with run.guard(step):  # NaN logits (diverged weights) or a NaN reward stop the run here
            # 1) rollout, 2) advantages
            exp = collect(model, ref_policy, value_model, world, prompt_batch(world, config.batch_size, cpu_gen),
                          score, beta=config.beta, gamma=config.gamma, lam=config.lam,
                          missing_eos_score=config.missing_eos_score, whiten=config.whiten_adv, generator=gen)
            # 3) one actor and one critic step on the whole batch
            logp, values, metrics = actor_critic_forward(model, value_model, world, exp)
            loss_pi, _ = a2c_policy_loss(logp, exp.adv, exp.mask)
            # (eq-critic-loss)  L^V = ½ mean_t (V_φ(s_t) − R̂_t)²
            loss_v, _ = value_loss(values, exp.values_old, exp.ret, exp.mask)
            loss = loss_pi + config.vf_coef * loss_v
        grad_norm = optimizer_step(opt, loss, params, config.max_grad_norm, step, run.history)
        # 4) log
        run.log(step, {**batch_metrics(exp), **metrics, "loss/policy": loss_pi.item(),
                       "loss/value": loss_v.item(), "stats/grad_norm": grad_norm})
        run.evaluate(step + 1, model)
        run.tick(reward=f"{exp.scores.mean().item():.3f}")
    return run.close()
