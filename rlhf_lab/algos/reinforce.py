"""REINFORCE: the score-function policy gradient with an optional baseline.

The gradient of J(θ) = E_{y~π_θ}[R(y)] is E[(R − b)∇log π_θ(y)] for any baseline b that does
not depend on the sampled y; the baseline leaves the gradient unbiased and lowers its variance.

The module holds the loss, its Config and ``train``; the loop's plumbing (config checks, the
balanced prompt batch, the evaluator, the optimiser step, logging) is in ``loop.py``, and its
names that chapters 02–04 reach through this module stay importable from here. Introduced in
chapter 02.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlhf_lab.algos.loop import (Callback, ExactEvaluator, RewardFn, RunLog, SampledEvaluator, check_fields,
                                 check_train_args, default_evaluator, make_optimizer, optimizer_step, prompt_batch,
                                 rewards_of, trainable_copy)
from rlhf_lab.core import entropy_from_logits, kl_penalty, masked_mean, token_logprobs
from rlhf_lab.history import History
from rlhf_lab.rollout import completion_logits, completion_logprobs, sample
from rlhf_lab.scale import get_seed
from rlhf_lab.validate import ArgumentTypeError, check_tensor
from rlhf_lab.worlds.base import TokenWorld

BASELINES = ("none", "mean")
make_evaluator = default_evaluator  # the name chapters 02–04 use; one factory, in evaluate.py


def reinforce_loss(
    seq_logp: Tensor,
    rewards: Tensor,
    baseline: str | float | Tensor = "none",
) -> tuple[Tensor, dict[str, float]]:
    """Surrogate loss whose gradient is the REINFORCE estimate −mean((R − b)∇log π(y)).

    Args:
        seq_logp: log π_θ(y | x) of each sampled sequence, summed over its tokens; carries the
            gradient.
        rewards: scalar reward R of each sequence; treated as a constant.
        baseline: b. ``"none"`` (b = 0), ``"mean"`` (the batch mean reward; it includes each
            sample's own reward, a bias of order 1/B that RLOO in chapter 08 removes), a number,
            or a tensor of shape () or (B,) such as a value estimate. Always detached.

    Shape:
        seq_logp: (B,), introduced in chapter 02.
        rewards: (B,), introduced in chapter 02.

    Returns:
        ``(loss, stats)`` with stats ``reward_mean``, ``baseline`` (its batch mean) and
        ``adv_std`` (population std of R − b over the batch, so B = 1 gives 0, not NaN).

    Raises:
        ValueError: if the shapes differ or are not (B,), or the baseline is not one of the above.

    Introduced in chapter 02 (policy gradient).
    """
    check_tensor("seq_logp", seq_logp, kind="float")
    check_tensor("rewards", rewards)
    if seq_logp.dim() != 1 or seq_logp.shape != rewards.shape or seq_logp.numel() == 0:
        raise ValueError(
            f"seq_logp and rewards must both have shape (B,) with B >= 1; got {tuple(seq_logp.shape)} "
            f"and {tuple(rewards.shape)}"
        )
    check_tensor("seq_logp", seq_logp, finite=True)  # any finite numbers: a chapter may pass random ones
    check_tensor("rewards", rewards, finite=True)
    rewards = rewards.detach().to(seq_logp.dtype)
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(
                f"baseline must be one of {BASELINES}, a number or a tensor; got {baseline!r}"
            )
        b = rewards.mean() if baseline == "mean" else torch.zeros((), dtype=rewards.dtype)
    elif isinstance(baseline, Tensor):
        if baseline.dim() > 1 or (baseline.dim() == 1 and baseline.shape != rewards.shape):
            raise ValueError(
                f"baseline tensor must have shape () or {tuple(rewards.shape)}; "
                f"got {tuple(baseline.shape)}"
            )
        b = check_tensor("baseline", baseline, finite=True).detach().to(rewards.dtype)
    elif isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        if not math.isfinite(baseline):
            raise ValueError(f"baseline must be finite; got {baseline!r}")
        b = torch.tensor(float(baseline), dtype=rewards.dtype)
    else:
        raise ArgumentTypeError(f"baseline must be 'none', 'mean', a finite number or a tensor; got {baseline!r}")

    # (R − b): a constant weight on each sample's score ∇log π(y); no gradient flows through it
    adv = rewards - b
    # (eq-reinforce)  L(θ) = −(1/B) Σ_i (R_i − b) log π_θ(y_i)
    loss = -(adv * seq_logp).mean()

    stats = {
        "reward_mean": rewards.mean().item(),
        "baseline": b.float().mean().item(),
        "adv_std": adv.std(correction=0).item(),
    }
    return loss, stats


# -- training ------------------------------------------------------------------------------------
@dataclass
class ReinforceConfig:
    """Hyperparameters of :func:`train`; validated on construction (chapter 02).

    Attributes:
        steps: rollout batches, one gradient step each; ≥ 1 (40 at scale ci).
        batch_size: B, completions per batch; ≥ 1 (≥ 2 with the mean baseline); typical 32 … 512.
        lr: η > 0, Adam learning rate; 1e-4 … 3e-3 for the tiny policies (1e-6 for real LLMs).
        baseline: b, ``"none"`` or ``"mean"`` (the batch mean reward), see :func:`reinforce_loss`.
        beta: β ≥ 0, KL coefficient: R = r − β·(log π(y) − log π_ref(y)); 0 … 1.
        max_grad_norm: gradient-norm clip, > 0; typical 1.0.
        eval_every: evaluation (exact, or sampled where not enumerable) every this many steps, ≥ 1.
        seed: seeds the prompt order and the samples.
        progress: show a tqdm progress bar.
    """

    steps: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    baseline: str = "mean"
    beta: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = 5
    seed: int = field(default_factory=get_seed)  # RLHF_LAB_SEED unless given
    progress: bool = True

    def __post_init__(self) -> None:
        check_fields(self, lambda: {
            "steps": (self.steps >= 1, ">= 1"),
            "batch_size": (self.batch_size >= (2 if self.baseline == "mean" else 1),
                           ">= 2 with the mean baseline, else >= 1"),
            "lr": (self.lr > 0, "> 0"),
            "baseline": (self.baseline in BASELINES, f"one of {BASELINES}"),
            "beta": (self.beta >= 0, ">= 0"),
            "max_grad_norm": (self.max_grad_norm > 0, "> 0"),
            "eval_every": (self.eval_every >= 1, ">= 1"),
        })


def train(
    policy: torch.nn.Module,
    world: TokenWorld,
    config: ReinforceConfig,
    callback: Callback | None = None,
    *,
    reward_fn: RewardFn | None = None,
    ref_policy: torch.nn.Module | None = None,
    evaluator: ExactEvaluator | SampledEvaluator | None = None,
) -> History:
    """Train a copy of ``policy`` with REINFORCE (chapter 02): sample, score, one step, log.

    Each step: 1) sample B completions; 2) score them, R = r − β·KL(y); 3) one gradient step on
    :func:`reinforce_loss`; 4) log ``loss/policy``, ``reward/mean``, ``kl/sampled``,
    ``stats/entropy``, ``stats/grad_norm``. Exact metrics (``reward/gold``, ``reward/proxy``,
    ``kl/exact``, ``entropy/exact``) are logged at step 0, every ``eval_every`` steps and at the
    end, at the step that counts the updates made so far.

    Args:
        policy: the starting policy; not modified (a copy is trained).
        world: a token world (reviews, arithmetic).
        config: a :class:`ReinforceConfig`.
        callback: called as ``callback(step, metrics, history)`` after every log.
        reward_fn: ``reward_fn(prompts, completions) -> Tensor (B,)``, e.g. a proxy reward
            model's scores; default the world's gold reward.
        ref_policy: π_ref of the KL; default ``policy`` itself.
        evaluator: a prepared ``ExactEvaluator`` (saves enumerating again across runs), or a
            ``SampledEvaluator`` (the default on a world too big to enumerate).

    Returns:
        The ``History``; the trained policy is ``history.policy``.

    Raises:
        ValueError, TypeError: a bad argument, named, before anything runs; a wrong-shaped reward.
        FloatingPointError: the loss, the gradient norm, the policy's logits or a reward became
            NaN or infinite (names the step and the last finite metrics; ``err.history``).
    """
    check_train_args(policy, world, config, ReinforceConfig, callback=callback, reward_fn=reward_fn,
                     ref_policy=ref_policy, evaluator=evaluator)
    ref_policy = policy if ref_policy is None else ref_policy
    evaluator = evaluator or default_evaluator(world, ref_policy, reward_fn)
    score = reward_fn or world.gold_rewards
    model = trainable_copy(policy)
    params = list(model.parameters())
    opt = make_optimizer(params, config.lr)
    gen = torch.Generator(device=params[0].device).manual_seed(config.seed)
    cpu_gen = torch.Generator().manual_seed(config.seed)
    run = RunLog(evaluator, config.eval_every, config.steps, callback, "REINFORCE", config.progress)
    run.history.policy = model
    run.evaluate(0, model)
    for step in range(config.steps):
        with run.guard(step):  # NaN logits (diverged weights) or a NaN reward stop the run here
            # 1) rollout
            rollout = sample(model, world, prompt_batch(world, config.batch_size, cpu_gen), generator=gen)
            mask = rollout.completion_mask.bool()
            # 2) score: the reward, minus β times the sequence's KL estimate log π(y) − log π_ref(y)
            logits = completion_logits(model, rollout, world)  # (B, T, V), keeps the graph
            logp = token_logprobs(logits, rollout.completion_ids).masked_fill(~mask, 0.0)  # (B, T)
            with torch.no_grad():
                logp_ref = completion_logprobs(ref_policy, rollout, world)
                kl_seq = torch.where(mask, kl_penalty(logp, logp_ref, "k1"), 0.0).sum(1)  # (B,)
            r = rewards_of(score, rollout.prompts, rollout.completions).float().to(logp.device)
            returns = r - config.beta * kl_seq
            # 3) one gradient step
            loss, stats = reinforce_loss(logp.sum(1), returns, config.baseline)
        grad_norm = optimizer_step(opt, loss, params, config.max_grad_norm, step, run.history)
        # 4) log
        run.log(step, {
            "loss/policy": loss.item(), "reward/mean": r.mean().item(), "kl/sampled": kl_seq.mean().item(),
            "stats/entropy": masked_mean(entropy_from_logits(logits.detach()), mask).item(),
            "stats/adv_std": stats["adv_std"], "stats/grad_norm": grad_norm,
        })
        run.evaluate(step + 1, model)
        run.tick(reward=f"{r.mean().item():.3f}")
    return run.close()
