"""GRPO and its relatives: group-relative advantages and the clipped per-token loss.

G responses are sampled for each prompt; each response's advantage is its reward relative to
the others in its group, broadcast to all of its tokens. No value head. The variants differ in
two places only: how the advantage is scaled (group std, batch std, none; RLOO's leave-one-out
baseline) and how the per-token losses are averaged (``loss_type``). Both are pure functions in
``group.py`` — ``group_advantages``, ``rloo_advantages``, ``kl_reward_advantages`` and
``grpo_loss`` — importable from here; this module holds the Config and the training loop.

``train`` (also importable as ``train_grpo``) reads in the chapter's order: sample G
completions per prompt → score them → group-relative advantages → a few clipped gradient steps
→ log. Introduced in chapter 08.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlhf_lab.algos.loop import (Callback, ExactEvaluator, RewardFn, RunLog, SampledEvaluator, check_fields,
                                 check_train_args, default_evaluator, make_optimizer, optimizer_step, prompt_groups,
                                 rewards_of, trainable_copy)
from rlhf_lab.categorical import PASS_K, pass_at_k  # noqa: F401  (re-exported)
from rlhf_lab.core import entropy_from_logits, kl_penalty, masked_mean
from rlhf_lab.group import (ADV_SCALES, LOSS_TYPES, group_advantages, grpo_loss,  # noqa: F401  (re-exported)
                            kl_reward_advantages, rloo_advantages)
from rlhf_lab.history import History
from rlhf_lab.fastpath import FrozenLogps, completion_logits, distinct
from rlhf_lab.rollout import gather_logprobs, sample
from rlhf_lab.scale import get_seed
from rlhf_lab.worlds.base import TokenWorld

SCALES = ADV_SCALES  # the old name; not scale.SCALES, the compute presets
KL_PLACEMENTS = ("loss", "reward")
ADVANTAGES = ("grpo", "rloo")


@dataclass
class GRPOConfig:
    """Hyperparameters of :func:`train`; validated on construction (chapter 08).

    Attributes:
        group_size: G ≥ 2, completions sampled per prompt; typical 4 … 16 (DeepSeekMath 64).
        prompts_per_step: N ≥ 1, prompts per batch; the batch holds N·G completions.
        steps: rollout batches to train on, ≥ 1.
        lr: η > 0, Adam learning rate; 1e-4 … 1e-3 for the tiny policies (1e-6 for real LLMs).
        updates_per_batch: μ ≥ 1, gradient steps on each batch; with μ = 1 the ratio ρ is 1
            and the clip never acts; typical 1 … 4.
        eps_low: ε_low in (0, 1), the lower clip 1 − ε_low; typical 0.2.
        eps_high: ε_high > 0, the upper clip 1 + ε_high; None means ε_low (DAPO: 0.28).
        beta: β ≥ 0, the KL coefficient; 0 … 0.1 (DeepSeekMath 0.04, TRL's default 0).
        kl_placement: "loss" — β·k3 per token in the loss (GRPO) — or "reward" — β·k1 of the
            whole sequence, log π(y) − log π_ref(y), subtracted from its advantage after the
            rewards are standardised (eq-kl-reward-adv), so β → 0 gives A → 0 in a group of
            equal rewards.
        loss_type: "grpo", "bnpo", "dr_grpo" or "dapo", how token losses are averaged.
        scale_rewards: "group" (GRPO), "batch" or "none" (Dr. GRPO), what the advantage is
            divided by.
        advantage: "grpo" — :func:`group_advantages` with ``scale_rewards`` — or "rloo" —
            :func:`rloo_advantages`, the leave-one-out baseline, never divided by a std
            (``scale_rewards`` must then be "none").
        entropy_coef: c_H ≥ 0, an entropy bonus: −c_H times the mean next-token entropy over the
            batch's valid tokens is added to the loss (and to ``loss/policy``); 0 … 0.01.
        drop_zero_std: drop groups whose rewards are all equal before the update (DAPO's
            dynamic sampling, without the resampling).
        temperature: τ > 0, sampling temperature; typical 0.7 … 1.0.
        max_grad_norm: gradient-norm clip, > 0; typical 1.0.
        eval_every: evaluation (exact, or sampled where not enumerable) every this many steps (≥ 1).
        seed: seeds the prompt order and the samples.
        progress: show a tqdm progress bar.
    """

    group_size: int = 8
    prompts_per_step: int = 16
    steps: int = 40
    lr: float = 3e-4
    updates_per_batch: int = 2
    eps_low: float = 0.2
    eps_high: float | None = None
    beta: float = 0.0
    kl_placement: str = "loss"
    loss_type: str = "grpo"
    scale_rewards: str = "group"
    advantage: str = "grpo"
    entropy_coef: float = 0.0
    drop_zero_std: bool = False
    temperature: float = 1.0
    max_grad_norm: float = 1.0
    eval_every: int = 5
    seed: int = field(default_factory=get_seed)  # RLHF_LAB_SEED unless given
    progress: bool = True

    def __post_init__(self) -> None:
        check_fields(self, lambda: {
            "group_size": (self.group_size >= 2, ">= 2"),
            "prompts_per_step": (self.prompts_per_step >= 1, ">= 1"),
            "steps": (self.steps >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "updates_per_batch": (self.updates_per_batch >= 1, ">= 1"),
            "eps_low": (0 < self.eps_low < 1, "in (0, 1)"),
            "eps_high": (self.eps_high is None or self.eps_high > 0, "> 0 or None"),
            "beta": (self.beta >= 0, ">= 0"),
            "kl_placement": (self.kl_placement in KL_PLACEMENTS, f"one of {KL_PLACEMENTS}"),
            "loss_type": (self.loss_type in LOSS_TYPES, f"one of {LOSS_TYPES}"),
            "scale_rewards": (self.scale_rewards in ADV_SCALES, f"one of {ADV_SCALES}"),
            "advantage": (self.advantage in ADVANTAGES, f"one of {ADVANTAGES}"),
            "entropy_coef": (self.entropy_coef >= 0 and self.entropy_coef < float("inf"), ">= 0 and finite"),
            "temperature": (self.temperature > 0, "> 0"),
            "max_grad_norm": (self.max_grad_norm > 0, "> 0"),
            "eval_every": (self.eval_every >= 1, ">= 1"),
        })
        if self.advantage == "rloo" and self.scale_rewards != "none":
            raise ValueError(f"GRPOConfig.scale_rewards must be 'none' with advantage='rloo' (RLOO divides "
                             f"by no std); got {self.scale_rewards!r}")


def advantages(rewards: torch.Tensor, seq_kl: torch.Tensor, config: GRPOConfig) -> torch.Tensor:
    """The advantages of one batch's groups as ``config`` asks: group-relative (eq-grpo-adv) or
    leave-one-out (eq-rloo), minus β·(k1 − group mean k1) with ``kl_placement="reward"``
    (eq-kl-reward-adv). Shape: rewards (N, G), seq_kl (N, G) → (N, G)."""
    if config.kl_placement == "reward" and config.beta > 0:
        # the penalty after standardising, so 1/std does not blow it up (eq-kl-reward-adv)
        return kl_reward_advantages(rewards, seq_kl, config.beta, config.scale_rewards, config.advantage)
    if config.advantage == "rloo":
        return rloo_advantages(rewards)
    return group_advantages(rewards, config.scale_rewards)


def train(
    policy: torch.nn.Module,
    world: TokenWorld,
    config: GRPOConfig,
    callback: Callback | None = None,
    *,
    reward_fn: RewardFn | None = None,
    ref_policy: torch.nn.Module | None = None,
    evaluator: ExactEvaluator | SampledEvaluator | None = None,
) -> History:
    """Train a copy of ``policy`` with GRPO (chapter 08): sample groups, score, step.

    Each step: 1) draw N prompts and sample G completions of each; 2) score them (the gold
    reward, or ``reward_fn``) and take log π_old teacher-forced, so the first ratio is exactly 1;
    3) group-relative advantages (eq-grpo-adv), minus β·(k1 − group mean k1) with
    ``kl_placement="reward"`` (eq-kl-reward-adv); 4) μ gradient steps on :func:`grpo_loss`;
    5) log. The evaluator is :func:`~rlhf_lab.algos.loop.default_evaluator`'s: on an enumerable
    world exact metrics (``reward/proxy`` too with a ``reward_fn``; exact pass@k on a 0/1
    reward), logged at step 0 and every ``eval_every`` steps, at the step s = number of updates
    made so far; elsewhere sampled estimates with standard errors. Every step also logs the
    batch's own ``kl/sampled`` (mean sequence-summed k1, as every trainer) and
    ``entropy/sampled``; ``loss/policy`` and ``stats/grad_norm`` are means over the μ updates.

    Args:
        policy: the starting policy; it is not modified (a copy is trained).
        world: a token world (arithmetic, reviews).
        config: a :class:`GRPOConfig`.
        callback: called as ``callback(step, metrics, history)`` after every log, e.g. a
            :class:`rlhf_lab.live.LiveCurves`.
        reward_fn: ``reward_fn(prompts, completions) -> Tensor (B,)``, e.g. a proxy reward
            model; default the world's gold reward.
        ref_policy: π_ref of the KL terms; default ``policy`` itself.
        evaluator: a prepared evaluator for ``ref_policy`` (saves enumerating again across
            runs), e.g. ``default_evaluator(world, ref, reward_fn)``.

    Returns:
        The ``History``; the trained policy is ``history.policy``.

    Raises:
        ValueError, TypeError: a bad argument, named, before anything runs; a wrong-shaped reward.
        FloatingPointError: the loss, the gradient norm, the policy's logits or a reward became
            NaN or infinite (names the step and the last finite metrics; ``err.history``).
    """
    check_train_args(policy, world, config, GRPOConfig, callback=callback, reward_fn=reward_fn,
                     ref_policy=ref_policy, evaluator=evaluator)
    ref_policy = policy if ref_policy is None else ref_policy
    if evaluator is None:
        evaluator = default_evaluator(world, ref_policy, proxy_fn=reward_fn)
    policy = trainable_copy(policy)
    params = list(policy.parameters())
    opt = make_optimizer(params, config.lr)
    device = params[0].device
    gen = torch.Generator(device=device).manual_seed(config.seed)
    cpu_gen = torch.Generator().manual_seed(config.seed)
    n, g, tau = config.prompts_per_step, config.group_size, config.temperature
    ref_logps = FrozenLogps(ref_policy, world, tau)
    run = RunLog(evaluator, config.eval_every, config.steps, callback, "GRPO", config.progress)
    run.history.policy = policy
    run.evaluate(0, policy)
    score = reward_fn or world.gold_rewards
    for step in range(config.steps):
        with run.guard(step):  # NaN logits (diverged weights) or a NaN reward stop the run here
            # 1) N prompts, each repeated G times: rows i·G … i·G + G − 1 form group i
            rollout = sample(policy, world, prompt_groups(world, n, g, cpu_gen), temperature=tau, generator=gen)
            mask = rollout.completion_mask.bool()
            # 2) rewards; log π_old teacher-forced (the KV-cache sampler rounds slightly differently
            # from a full forward pass), so the first ratio is exactly 1; log π_ref of the same tokens
            rewards = torch.as_tensor(rewards_of(score, rollout.prompts, rollout.completions),
                                      dtype=torch.float32).to(device)
            rows = distinct(rollout)  # each distinct sequence goes through a model once
            with torch.no_grad():
                logp_ref = ref_logps(rollout, rows)  # π_ref is frozen: each sequence once per run
            # the first update's forward pass over every row, before any step: it is also log π_old
            first_logits = completion_logits(policy, rollout, world, tau, rows)  # (B, T, V)
            logp_old = gather_logprobs(first_logits.detach(), rollout)
        seq_k1 = torch.where(mask, kl_penalty(logp_old, logp_ref, "k1"), 0.0).sum(1)  # (B,)
        # 3) group-relative advantages of the raw rewards; groups with equal rewards carry none
        adv = advantages(rewards.view(n, g), seq_k1.view(n, g), config).flatten()  # (N·G,)
        zero_std = rewards.view(n, g).std(dim=1) == 0  # (N,)
        keep = ~zero_std.repeat_interleave(g) if config.drop_zero_std else torch.ones_like(mask[:, 0])
        metrics = {
            "reward/mean": rewards.mean().item(), "reward/std": rewards.std().item(),
            "stats/frac_reward_zero_std": zero_std.float().mean().item(),
            "stats/completion_length": rollout.lengths.float().mean().item(),
            "kl/sampled": seq_k1.mean().item(),
        }
        # 4) μ gradient steps on the same batch; the first one also measures the entropy
        batch = rollout.select(keep) if not bool(keep.all()) else rollout
        means = {"loss/policy": 0.0, "stats/grad_norm": 0.0, "stats/clip_ratio/low": 0.0,
                 "stats/clip_ratio/high": 0.0, "stats/clip_ratio/region": 0.0}
        updates = config.updates_per_batch if bool(keep.any()) else 0
        for update in range(updates):
            if update == 0:
                logits = first_logits if batch is rollout else first_logits[keep]
            else:
                logits = completion_logits(policy, batch, world, tau)  # (B, T, V)
            logp = gather_logprobs(logits, batch)  # (B, T), 0 on padding
            with run.guard(step):  # NaN logits after an update stop the run here
                loss, stats = grpo_loss(logp, logp_old[keep], logp_ref[keep], adv[keep], batch.completion_mask,
                                        eps_low=config.eps_low, eps_high=config.eps_high,
                                        beta=config.beta if config.kl_placement == "loss" else 0.0,
                                        loss_type=config.loss_type, max_tokens=world.max_new_tokens)
            if config.entropy_coef > 0 or update == 0:
                # one entropy per update: differentiated for the bonus, else only logged
                batch_mask = batch.completion_mask.bool()
                with torch.set_grad_enabled(config.entropy_coef > 0):
                    token_entropy = entropy_from_logits(logits)  # (B, T)
                if config.entropy_coef > 0:
                    # the entropy bonus: −c_H · mean next-token entropy over the valid tokens
                    loss = loss - config.entropy_coef * masked_mean(token_entropy, batch_mask)
                if update == 0:
                    token_entropy = token_entropy.detach()
                    metrics["stats/entropy"] = masked_mean(token_entropy, batch_mask).item()
                    # chain rule: Σ_t H(π(·|x, y_<t)) along a sample estimates the sequence entropy
                    metrics["entropy/sampled"] = torch.where(batch_mask, token_entropy, 0.0).sum(1).mean().item()
            grad_norm = optimizer_step(opt, loss, params, config.max_grad_norm, step, run.history)
            step_values = {"loss/policy": loss.item(), "stats/grad_norm": grad_norm,
                           **{f"stats/clip_ratio/{k}": stats[f"clip_ratio/{k}_mean"]
                              for k in ("low", "high", "region")}}
            for key, value in step_values.items():
                means[key] += value / updates
        if updates == 0:  # every group of the batch was dropped: nothing was trained on
            means = {k: v for k, v in means.items() if k.startswith("stats/clip_ratio")}
        metrics.update(means)
        # 5) log the batch at this step; the evaluator's metrics at the step that counts updates so far
        run.log(step, metrics)
        run.evaluate(step + 1, policy)
        run.tick(reward=f"{metrics['reward/mean']:.3f}")
    policy.eval()
    return run.close()


train_grpo = train  # the name chapters 08–10 use
