"""Advantage actor–critic (A2C): a learned value function V(s_t) turns one end-of-text reward
into an advantage for every token, through GAE.

A completion is an episode whose states are the prefixes s_t = (x, y_<t) and whose actions are
tokens. The critic V_φ(s_t) (a ``ValueModel``, a copy of the policy's transformer with a scalar
head) predicts the return still to come; the TD residual δ_t = r_t + γV(s_{t+1}) − V(s_t) scores
one token, and GAE averages the residuals ahead with weights (γλ)^l. The actor takes one policy-
gradient step per batch, weighting log π(y_t | s_t) by Â_t.

The per-token reward and the collection of a batch (:func:`collect`) are shared with PPO
(``ppo.py``), which adds the importance ratio, the clip and several epochs per batch.
Introduced in chapter 03.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from rlhf_lab.scale import get_seed
from rlhf_lab.algos.loop import Callback, ExactEvaluator, SampledEvaluator, check_finite, progress, trainable_copy
from rlhf_lab.algos.reinforce import (RewardFn, RunLog, check_fields, make_evaluator, make_optimizer,
                                      prompt_batch)
from rlhf_lab.categorical import group_expectation, prefix_groups  # noqa: F401
from rlhf_lab.core import (entropy_from_logits, explained_variance, gae, kl_penalty, masked_mean,  # noqa: F401
                           masked_whiten, token_logprobs)
from rlhf_lab.history import History
from rlhf_lab.models import ValueModel
from rlhf_lab.rollout import Rollout, completion_logits, completion_logprobs, sample
from rlhf_lab.worlds.base import TokenWorld


# -- pure pieces ---------------------------------------------------------------------------------
def token_rewards(scores: Tensor, logp: Tensor, logp_ref: Tensor, mask: Tensor, beta: float) -> Tensor:
    """Per-token rewards: −β·KL_t at every token, plus the completion's score at its last token.

    KL_t = log π(y_t | s_t) − log π_ref(y_t | s_t) is the k1 estimate; summed over a completion
    it is log π(y) − log π_ref(y), so the return from the first token is score − β·KL(y), the
    KL-regularised objective (chapter 04). The last valid token is EOS, or the last word of a
    truncated completion.

    Args:
        scores: the reward model's (or gold) score of each completion.
        logp: log π_old of each sampled token (detached).
        logp_ref: log π_ref of the same tokens.
        mask: 1 for completion tokens, 0 for padding; right-padded.
        beta: β ≥ 0, the KL coefficient.

    Shape:
        scores (B,), logp (B, T), logp_ref (B, T), mask (B, T) → (B, T), 0 at padding.

    Introduced in chapter 03 (score at EOS) and chapter 04 (the KL term).
    """
    valid = mask.bool()
    last = valid.sum(1) - 1  # (B,) index of the last valid token
    # (eq-kl-reward)  r_t = −β (log π(y_t|s_t) − log π_ref(y_t|s_t)) + 1[t = T_y] · r(x, y)
    rewards = torch.where(valid, -beta * kl_penalty(logp.detach(), logp_ref.detach(), "k1"), 0.0)
    rows = torch.arange(len(scores), device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards


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
    if not logp.shape == adv.shape == mask.shape:
        raise ValueError(f"logp, adv, mask must have one shape; got {tuple(logp.shape)}, "
                         f"{tuple(adv.shape)}, {tuple(mask.shape)}")
    valid = mask.bool()
    adv = torch.where(valid, adv.detach(), 0.0)
    # (eq-a2c-loss)  L(θ) = −mean_t Â_t log π_θ(y_t | s_t)
    loss = masked_mean(-adv * torch.where(valid, logp, 0.0), valid)
    stats = {"adv_mean": adv[valid].mean().item(), "adv_std": adv[valid].std(correction=0).item()}
    return loss, stats


def values_of(value_model: ValueModel, rollout: Rollout) -> Tensor:
    """V(s_t) for every completion token t: the value of the prefix before it.

    Shape: → (B, T), aligned with ``rollout.completion_ids``; keeps the graph.
    """
    values = value_model(rollout.input_ids, rollout.attention_mask)  # (B, Tp + Tc)
    tp = rollout.prompt_ids.shape[1]
    # the hidden state at position tp − 1 + t has read x and y_<t: it is the state s_t
    return values[:, tp - 1: -1].float()


# -- a batch of experience -----------------------------------------------------------------------
@dataclass
class Experience:
    """One rollout batch with everything the actor and critic updates need.

    Attributes:
        rollout: the sampled completions.
        scores: the reward function's score of each completion (after the no-EOS rule). (B,)
        logp_old: log π_old of each token, from the policy that sampled them. (B, T)
        logp_ref: log π_ref of each token. (B, T)
        values_old: V_old(s_t) at sampling time. (B, T)
        rewards: per-token rewards r_t (eq-kl-reward). (B, T)
        adv: advantages Â_t from GAE, whitened if asked. (B, T)
        ret: returns R̂_t = Â_t + V_old(s_t) (before whitening), the critic's target. (B, T)
    """

    rollout: Rollout
    scores: Tensor
    logp_old: Tensor
    logp_ref: Tensor
    values_old: Tensor
    rewards: Tensor
    adv: Tensor
    ret: Tensor

    @property
    def mask(self) -> Tensor:
        return self.rollout.completion_mask.bool()

    def select(self, rows: Tensor) -> "Experience":
        """The experience of rows ``rows`` (an index tensor), e.g. one minibatch."""
        r = self.rollout
        idx = rows.tolist()
        sub = replace(r, prompts=[r.prompts[i] for i in idx], completions=[r.completions[i] for i in idx],
                      prompt_ids=r.prompt_ids[rows], prompt_mask=r.prompt_mask[rows],
                      completion_ids=r.completion_ids[rows], completion_mask=r.completion_mask[rows],
                      logp=r.logp[rows])
        return Experience(sub, *(getattr(self, f)[rows] for f in
                                 ("scores", "logp_old", "logp_ref", "values_old", "rewards", "adv", "ret")))


@torch.no_grad()
def collect(
    policy: torch.nn.Module,
    ref_policy: torch.nn.Module,
    value_model: ValueModel,
    world: TokenWorld,
    prompts: list[str],
    reward_fn: RewardFn,
    *,
    beta: float,
    gamma: float,
    lam: float,
    missing_eos_score: float | None,
    whiten: bool,
    generator: torch.Generator | None = None,
) -> Experience:
    """Sample, score and compute advantages for one batch (the first half of A2C and PPO).

    1) sample one completion per prompt; 2) log π_old, log π_ref and V_old of every token;
    3) score each completion, ``missing_eos_score`` for one that never wrote EOS; 4) per-token
    rewards (eq-kl-reward); 5) GAE advantages and returns; whiten the advantages over the batch.
    """
    rollout = sample(policy, world, prompts, generator=generator)
    mask = rollout.completion_mask.bool()
    # teacher-forced log-probs, so the first PPO ratio is exactly 1 (the KV-cache sampler's
    # rounding differs slightly from a full forward pass)
    logp_old = completion_logprobs(policy, rollout, world)
    logp_ref = completion_logprobs(ref_policy, rollout, world)
    values_old = values_of(value_model, rollout).masked_fill(~mask, 0.0)
    scores = torch.as_tensor(reward_fn(rollout.prompts, rollout.completions)).float().to(logp_old.device)
    if missing_eos_score is not None:
        scores = torch.where(rollout.truncated.to(scores.device), missing_eos_score, scores)
    rewards = token_rewards(scores, logp_old, logp_ref, mask, beta)
    # (eq-gae)  Â_t = Σ_l (γλ)^l δ_{t+l},  R̂_t = Â_t + V_old(s_t)
    adv, ret = gae(rewards, values_old, mask, gamma, lam)
    if whiten:
        adv = masked_whiten(adv, mask)
    return Experience(rollout, scores, logp_old, logp_ref, values_old, rewards, adv, ret)


def batch_metrics(exp: Experience) -> dict[str, float]:
    """What a batch says before any update: mean score, sampled KL, the critic's fit."""
    mask = exp.mask
    kl = torch.where(mask, kl_penalty(exp.logp_old, exp.logp_ref, "k1"), 0.0).sum(1)  # (B,)
    return {"reward/mean": exp.scores.mean().item(), "kl/sampled": kl.mean().item(),
            "stats/explained_var": explained_variance(exp.values_old, exp.ret, mask)}


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
        check_fields(self, {
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


def actor_critic_step(policy, value_model, world, exp: Experience) -> tuple[Tensor, Tensor, dict[str, float]]:
    """Forward passes of actor and critic on a batch: (logp, values, {entropy}), with graphs."""
    logits = completion_logits(policy, exp.rollout, world)  # (B, T, V)
    logp = token_logprobs(logits, exp.rollout.completion_ids).masked_fill(~exp.mask, 0.0)  # (B, T)
    values = values_of(value_model, exp.rollout)  # (B, T)
    entropy = masked_mean(entropy_from_logits(logits.detach()), exp.mask).item()
    return logp, values, {"stats/entropy": entropy}


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
    ``stats/explained_var``, ``stats/entropy``, ``stats/grad_norm`` every step, and the exact
    metrics of ``reinforce.train`` at step 0, every ``eval_every`` steps and at the end.

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
        FloatingPointError: the loss became NaN or infinite (names the step).
    """
    ref_policy = policy if ref_policy is None else ref_policy
    evaluator = evaluator or make_evaluator(world, ref_policy, reward_fn)
    score = reward_fn or world.gold_rewards
    model = trainable_copy(policy)
    value_model = trainable_copy(ValueModel.from_policy(policy).to(next(model.parameters()).device))
    params = [*model.parameters(), *value_model.parameters()]
    opt = make_optimizer(params, config.lr)
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(config.seed)
    cpu_gen = torch.Generator().manual_seed(config.seed)
    run = RunLog(evaluator, config.eval_every, config.steps, callback)
    run.history.policy, run.history.value_model = model, value_model
    run.evaluate(0, model)
    bar = progress(config.steps, "A2C", config.progress)
    for step in range(config.steps):
        # 1) rollout, 2) advantages
        exp = collect(model, ref_policy, value_model, world, prompt_batch(world, config.batch_size, cpu_gen),
                      score, beta=config.beta, gamma=config.gamma, lam=config.lam,
                      missing_eos_score=config.missing_eos_score, whiten=config.whiten_adv, generator=gen)
        # 3) one actor and one critic step on the whole batch
        logp, values, metrics = actor_critic_step(model, value_model, world, exp)
        loss_pi, _ = a2c_policy_loss(logp, exp.adv, exp.mask)
        # (eq-critic-loss)  L^V = ½ mean_t (V_φ(s_t) − R̂_t)²
        loss_v = 0.5 * masked_mean((values - exp.ret) ** 2, exp.mask)
        loss = loss_pi + config.vf_coef * loss_v
        check_finite(step, loss.detach(), run.history)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        opt.step()
        # 4) log
        run.log(step, {**batch_metrics(exp), **metrics, "loss/policy": loss_pi.item(),
                       "loss/value": loss_v.item(), "stats/grad_norm": float(grad_norm)})
        run.evaluate(step + 1, model)
        bar.update()
        bar.set_postfix(reward=f"{exp.scores.mean().item():.3f}", refresh=False)
    bar.close()
    return run.history
