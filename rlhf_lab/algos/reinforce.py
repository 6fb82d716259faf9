"""REINFORCE: the score-function policy gradient with an optional baseline.

The gradient of J(θ) = E_{y~π_θ}[R(y)] is E[(R − b)∇log π_θ(y)] for any baseline b that does
not depend on the sampled y; the baseline leaves the gradient unbiased and lowers its variance.

Besides the loss and ``train``, this module holds the few pieces every policy-gradient loop of
chapters 02–04 shares (config checks, a balanced prompt batch, the exact evaluator with a proxy,
logging); ``a2c`` and ``ppo`` import them from here. Introduced in chapter 02.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlhf_lab.scale import get_seed
from rlhf_lab.algos.loop import (Callback, ExactEvaluator, SampledEvaluator, check_finite, default_evaluator, progress,
                                 trainable_copy)
from rlhf_lab.core import entropy_from_logits, kl_penalty, masked_mean, token_logprobs
from rlhf_lab.history import History
from rlhf_lab.rollout import completion_logits, completion_logprobs, sample
from rlhf_lab.worlds.base import TokenWorld

BASELINES = ("none", "mean")
RewardFn = Callable[[list[str], list[str]], Tensor]


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
    if seq_logp.dim() != 1 or seq_logp.shape != rewards.shape:
        raise ValueError(
            f"seq_logp and rewards must both have shape (B,); got {tuple(seq_logp.shape)} "
            f"and {tuple(rewards.shape)}"
        )
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
        b = baseline.detach().to(rewards.dtype)
    elif isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        if not math.isfinite(baseline):
            raise ValueError(f"baseline must be finite; got {baseline!r}")
        b = torch.tensor(float(baseline), dtype=rewards.dtype)
    else:
        raise ValueError(
            f"baseline must be 'none', 'mean', a finite number or a tensor; got {baseline!r}"
        )

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


# -- shared by the policy-gradient loops (chapters 02–04) --------------------------------------
def check_fields(config: object, checks: dict[str, tuple[bool, str]]) -> None:
    """Raise ``ValueError`` naming the first field whose check failed and its allowed range."""
    for name, (ok, allowed) in checks.items():
        if not ok:  # NaN fails every comparison, so it is rejected too
            raise ValueError(
                f"{type(config).__name__}.{name} must be {allowed}; got {getattr(config, name)!r}"
            )


def prompt_batch(world: TokenWorld, batch_size: int, generator: torch.Generator) -> list[str]:
    """``batch_size`` prompts spread evenly over ``world.prompts``, in a random order.

    Even coverage matches the exact metrics, which weigh every prompt equally.
    """
    rows = torch.arange(batch_size) % len(world.prompts)
    rows = rows[torch.randperm(batch_size, generator=generator)]
    return [world.prompts[i] for i in rows.tolist()]


make_evaluator = default_evaluator  # the name chapters 02–04 use; one factory in loop.py


def make_optimizer(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam; the fused kernel where there is one, since on these tiny models the optimiser step
    otherwise costs as much as the forward and backward passes."""
    device = params[0].device.type
    return torch.optim.Adam(params, lr=lr, fused=device in ("cpu", "cuda"))


class RunLog:
    """A run's History, its callback and its evaluation schedule, in one place.

    ``log(step, metrics)`` records and calls back; ``evaluate(step, policy)`` adds the exact
    metrics at step 0, every ``eval_every`` steps and at the last step.
    """

    def __init__(self, evaluator: ExactEvaluator | SampledEvaluator | None, eval_every: int, steps: int,
                 callback: Callback | None) -> None:
        self.history = History()
        self.evaluator, self.eval_every, self.steps, self.callback = evaluator, eval_every, steps, callback

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.history.log(step, metrics)
        if self.callback is not None:
            self.callback(step, metrics, self.history)

    def evaluate(self, step: int, policy: torch.nn.Module) -> None:
        """Exact metrics of ``policy`` after ``step`` updates, when the schedule says so."""
        due = step % self.eval_every == 0 or step == self.steps
        if self.evaluator is not None and due:
            self.log(step, self.evaluator(policy))


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
        check_fields(self, {
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
        FloatingPointError: the loss became NaN or infinite (names the step).
    """
    ref_policy = policy if ref_policy is None else ref_policy
    evaluator = evaluator or make_evaluator(world, ref_policy, reward_fn)
    score = reward_fn or world.gold_rewards
    model = trainable_copy(policy)
    opt = make_optimizer(list(model.parameters()), config.lr)
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(config.seed)
    cpu_gen = torch.Generator().manual_seed(config.seed)
    run = RunLog(evaluator, config.eval_every, config.steps, callback)
    run.history.policy = model
    run.evaluate(0, model)
    bar = progress(config.steps, "REINFORCE", config.progress)
    for step in range(config.steps):
        # 1) rollout
        rollout = sample(model, world, prompt_batch(world, config.batch_size, cpu_gen), generator=gen)
        mask = rollout.completion_mask.bool()
        # 2) score: the reward, minus β times the sequence's KL estimate log π(y) − log π_ref(y)
        logits = completion_logits(model, rollout, world)  # (B, T, V), keeps the graph
        logp = token_logprobs(logits, rollout.completion_ids).masked_fill(~mask, 0.0)  # (B, T)
        with torch.no_grad():
            logp_ref = completion_logprobs(ref_policy, rollout, world)
            kl_seq = torch.where(mask, kl_penalty(logp, logp_ref, "k1"), 0.0).sum(1)  # (B,)
        r = torch.as_tensor(score(rollout.prompts, rollout.completions)).float().to(logp.device)
        returns = r - config.beta * kl_seq
        # 3) one gradient step
        loss, stats = reinforce_loss(logp.sum(1), returns, config.baseline)
        check_finite(step, loss.detach(), run.history)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        opt.step()
        # 4) log
        run.log(step, {
            "loss/policy": loss.item(), "reward/mean": r.mean().item(), "kl/sampled": kl_seq.mean().item(),
            "stats/entropy": masked_mean(entropy_from_logits(logits.detach()), mask).item(),
            "stats/adv_std": stats["adv_std"], "stats/grad_norm": float(grad_norm),
        })
        run.evaluate(step + 1, model)
        bar.update()
        bar.set_postfix(reward=f"{r.mean().item():.3f}", refresh=False)
    bar.close()
    return run.history
