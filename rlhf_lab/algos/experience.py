"""Experience for the actor–critic trainers, A2C and PPO: a rollout batch with everything the
actor and critic updates need, and the critic's side of those updates.

:func:`collect` builds one batch: 1) sample one completion per prompt; 2) log π_old, log π_ref
and V_old of every token; 3) score each completion; 4) per-token rewards −β·KL_t plus the score
at the last token (:func:`token_rewards`, eq-kl-reward); 5) GAE advantages and returns. On each
(mini)batch :func:`actor_critic_forward` runs actor and critic, and :func:`value_loss` is the
critic's loss. A2C takes one step per batch, PPO several epochs of minibatches; both import
from here. A completion is an episode whose states are the prefixes s_t = (x, y_<t).
Introduced in chapter 03 (the KL term and the value clip in chapter 04).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rlhf_lab.algos.loop import RewardFn, rewards_of
from rlhf_lab.core import (entropy_from_logits, explained_variance, gae, kl_penalty, masked_mean, masked_whiten,
                           token_logprobs)
from rlhf_lab.models import ValueModel
from rlhf_lab.rollout import Rollout, completion_logits, completion_logprobs, sample
from rlhf_lab.validate import check_float, check_tensor
from rlhf_lab.worlds.base import TokenWorld


def check_same_shape(**tensors: Tensor) -> None:
    """Raise ``ValueError`` naming the tensors unless they are tensors of one shape that select a token."""
    for name, t in tensors.items():
        check_tensor(name, t, kind="mask" if name == "mask" else "real")
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{', '.join(shapes)} must have the same shape; got {shapes}")
    if "mask" in tensors and not bool(tensors["mask"].bool().any()):
        raise ValueError(f"mask must select at least one token; got none of {tuple(tensors['mask'].shape)}")


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
    check_same_shape(logp=logp, logp_ref=logp_ref, mask=mask)
    check_tensor("scores", scores, shape=(len(mask),), finite=True, dims="(B,)")
    check_float("beta", beta, ge=0)
    valid = mask.bool()
    last = valid.sum(1) - 1  # (B,) index of the last valid token
    # (eq-kl-reward)  r_t = −β (log π_old(y_t|s_t) − log π_ref(y_t|s_t)) + 1[t = T_y] · r(x, y)
    rewards = torch.where(valid, -beta * kl_penalty(logp.detach(), logp_ref.detach(), "k1"), 0.0)
    rows = torch.arange(len(scores), device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards


def values_of(value_model: ValueModel, rollout: Rollout) -> Tensor:
    """V(s_t) for every completion token t: the value of the prefix before it.

    Shape: → (B, T), aligned with ``rollout.completion_ids``; keeps the graph.
    """
    values = value_model(rollout.input_ids, rollout.attention_mask)  # (B, Tp + Tc)
    tp = rollout.prompt_ids.shape[1]
    # the hidden state at position tp − 1 + t has read x and y_<t: it is the state s_t
    return values[:, tp - 1: -1].float()


def value_loss(
    values: Tensor,
    values_old: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_eps: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Squared error of the value head, optionally clipped around the old values.

    With ``clip_eps`` set, the loss at each token is the larger of the unclipped and the clipped
    squared error, so the clip can only make the loss bigger (PPO2 / TRL's PPO convention). One
    masked mean over every valid token of the batch, times ½.

    Args:
        values: V_θ(s_t) from the value head; carries the gradient.
        values_old: V_old(s_t) recorded at rollout time (detached).
        returns: the regression target, e.g. Â_t + V_old(s_t) from GAE (detached).
        mask: 1 (or True) for response tokens, 0 for prompt and padding.
        clip_eps: the value clip range in reward units (> 0, typical 0.2), or None for no clip.
            It is an absolute range, not a ratio, so it is not restricted to (0, 1).

    Shape:
        values: (B, T), introduced in chapter 03.
        values_old: (B, T), introduced in chapter 04.
        returns: (B, T), introduced in chapter 03.
        mask: (B, T), introduced in chapter 04.

    Returns:
        ``(loss, stats)``. stats: ``value_clipfrac``, the fraction of valid tokens where the
        clipped error is the larger one (0 without a clip); ``value_mean``.

    Raises:
        ValueError: if the shapes differ or clip_eps is not None and not > 0.

    Introduced in chapter 03 (unclipped, A2C) and chapter 04 (clipped, PPO).
    """
    check_same_shape(values=values, values_old=values_old, returns=returns, mask=mask)
    check_float("clip_eps", clip_eps, gt=0.0, none=True)
    valid = mask.bool()
    for name, x in (("values", values), ("values_old", values_old), ("returns", returns)):
        check_tensor(name, x, finite=True, mask=valid)
    # padding may hold anything (inf, nan): zero it first, so that neither the loss nor its
    # gradient sees it
    values = torch.where(valid, values, 0.0)
    values_old = torch.where(valid, values_old.detach(), 0.0)
    returns = torch.where(valid, returns.detach(), 0.0)

    sq_err = (values - returns) ** 2
    if clip_eps is None:
        # (eq-value-loss)  L^V = ½ (V_θ − R)²
        loss = 0.5 * masked_mean(sq_err, mask)
        clipfrac = 0.0
    else:
        # (eq-value-clip)  L^V = ½ max((V_θ − R)², (clip(V_θ, V_old − ε, V_old + ε) − R)²)
        values_clipped = values_old + torch.clamp(values - values_old, -clip_eps, clip_eps)
        sq_err_clipped = (values_clipped - returns) ** 2
        loss = 0.5 * masked_mean(torch.max(sq_err, sq_err_clipped), mask)
        clipfrac = masked_mean((sq_err_clipped > sq_err).to(values.dtype), mask).item()

    stats = {"value_clipfrac": clipfrac, "value_mean": masked_mean(values.detach(), mask).item()}
    return loss, stats


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

    def select(self, rows: Tensor) -> Experience:
        """The experience of rows ``rows`` (an index tensor), e.g. one minibatch."""
        fields = ("scores", "logp_old", "logp_ref", "values_old", "rewards", "adv", "ret")
        return Experience(self.rollout.select(rows), *(getattr(self, f)[rows] for f in fields))


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
    scores = rewards_of(reward_fn, rollout.prompts, rollout.completions).float().to(logp_old.device)
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


def actor_critic_forward(policy: torch.nn.Module, value_model: ValueModel, world: TokenWorld,
                         exp: Experience) -> tuple[Tensor, Tensor, dict[str, float]]:
    """The forward passes of actor and critic on a (mini)batch, before any update.

    Returns:
        ``(logp, values, {"stats/entropy": …})``: log π_θ of the sampled tokens and V_φ(s_t),
        both (B, T) with their graphs, and the policy's mean token entropy.
    """
    logits = completion_logits(policy, exp.rollout, world)  # (B, T, V)
    logp = token_logprobs(logits, exp.rollout.completion_ids).masked_fill(~exp.mask, 0.0)  # (B, T)
    values = values_of(value_model, exp.rollout)  # (B, T)
    entropy = masked_mean(entropy_from_logits(logits.detach()), exp.mask).item()
    return logp, values, {"stats/entropy": entropy}
