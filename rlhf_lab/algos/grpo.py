"""GRPO and its relatives: group-relative advantages and the clipped per-token loss.

G responses are sampled for each prompt; each response's advantage is its reward relative to
the others in its group, broadcast to all of its tokens. No value head. The variants differ in
two places only: how the advantage is scaled (group std, batch std, none; RLOO's leave-one-out
baseline) and how the per-token losses are averaged (``loss_type``).

``train_grpo`` reads in the chapter's order: sample G completions per prompt → score them →
group-relative advantages → a few clipped gradient steps → log. Introduced in chapter 08.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlhf_lab.scale import get_seed
from rlhf_lab.algos.loop import (Callback, ExactEvaluator, SampledEvaluator, check_finite, default_evaluator, progress,
                                 trainable_copy)
from rlhf_lab.core import entropy_from_logits, kl_penalty, masked_mean
from rlhf_lab.exact import PASS_K, pass_at_k  # noqa: F401  (re-exported: grpo.pass_at_k)
from rlhf_lab.history import History
from rlhf_lab.rollout import Rollout, completion_logits, completion_logprobs, sample
from rlhf_lab.worlds.base import TokenWorld

SCALES = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def _check_groups(rewards: Tensor) -> None:
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(
            f"rewards must have shape (N, G) with group size G >= 2; got {tuple(rewards.shape)}"
        )


def group_advantages(rewards: Tensor, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """Group-relative advantages (r − group mean) / (std + eps), as TRL's GRPOTrainer computes them.

    The std is Bessel-corrected (divides by G − 1, like ``torch.std`` and TRL's ``nanstd``).
    ``scale="batch"`` still subtracts each group's mean but divides by the std of all N·G rewards
    (TRL's ``scale_rewards="batch"``); ``scale="none"`` only subtracts the group mean (Dr. GRPO).
    A group whose rewards are all equal gets advantage 0: it gives no gradient.

    Args:
        rewards: reward of each of the G responses to each of the N prompts (float, or integer
            0/1 from a verifier).
        scale: ``"group"`` (GRPO), ``"batch"`` or ``"none"`` (Dr. GRPO).
        eps: added to the std before dividing; TRL uses 1e-4.

    Shape:
        rewards: (N, G), introduced in chapter 08.

    Returns:
        Advantages of shape (N, G), detached from ``rewards``.

    Raises:
        ValueError: if rewards is not (N, G) with G ≥ 2, scale is unknown or eps < 0.

    Introduced in chapter 08 (GRPO).
    """
    _check_groups(rewards)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}; got {scale!r}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    # integer 0/1 rewards (a verifier's) are accepted: mean and std need a floating dtype
    rewards = rewards.detach() if rewards.is_floating_point() else rewards.detach().float()
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "none":
        return centered
    std = rewards.std(dim=1, keepdim=True) if scale == "group" else rewards.std()
    # (eq-grpo-adv)  A_i = (r_i − mean(r)) / (std(r) + eps); a group of equal rewards has
    # centered = 0, and gets 0 even with eps = 0 (where 0 / 0 would be NaN)
    return torch.where(centered == 0, torch.zeros_like(centered), centered / (std + eps))


def rloo_advantages(rewards: Tensor) -> Tensor:
    """RLOO advantages: each reward minus the mean of the other G − 1 rewards of its group.

    Equal to G/(G − 1)·(r_i − group mean); the baseline excludes the sample itself, so the
    policy gradient stays unbiased (RLOO, Ahmadian et al. 2024; TRL's RLOOTrainer).

    Args:
        rewards: reward of each of the G responses to each of the N prompts (float, or integer
            0/1 from a verifier).

    Shape:
        rewards: (N, G), introduced in chapter 08.

    Returns:
        Advantages of shape (N, G), detached from ``rewards``.

    Raises:
        ValueError: if rewards is not (N, G) with G ≥ 2.

    Introduced in chapter 08 (GRPO).
    """
    _check_groups(rewards)
    rewards = rewards.detach()
    group_size = rewards.shape[1]
    # (eq-rloo)  A_i = r_i − (1/(G − 1)) Σ_{j≠i} r_j
    return rewards - (rewards.sum(dim=1, keepdim=True) - rewards) / (group_size - 1)


def kl_reward_advantages(rewards: Tensor, seq_kl: Tensor, beta: float, scale: str = "group") -> Tensor:
    """GRPO advantages with the KL penalty on the reward side (``kl_placement="reward"``).

    A_i = (r_i − mean r) / (std r + eps) − β (k1_i − mean k1), per group: the raw rewards are
    standardised first and the sequence KL penalty k1_i = log π(o_i) − log π_ref(o_i) is applied
    after, centred on its group mean (a baseline: it changes no expectation). Subtracting β·k1
    from the rewards *before* standardising would divide it by the group std; in a group of
    equal rewards that std is only the spread of β·k1, so the advantages come out of size ~1
    whatever β is (chapter 08 measures it). Here β → 0 gives A → 0 in such a group.

    Args:
        rewards: raw reward of each of the G responses to each of the N prompts.
        seq_kl: k1 summed over each response's tokens, same shape.
        beta: β ≥ 0.
        scale: as in :func:`group_advantages`.

    Shape:
        rewards: (N, G); seq_kl: (N, G) → (N, G). Introduced in chapter 08.
    """
    if seq_kl.shape != rewards.shape:
        raise ValueError(f"seq_kl must have the shape of rewards {tuple(rewards.shape)}; got {tuple(seq_kl.shape)}")
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0; got {beta}")
    adv = group_advantages(rewards, scale)
    seq_kl = seq_kl.detach().to(adv.dtype)
    # (eq-kl-reward-adv)  A_i = Â_i − β (k1_i − mean_group k1)
    return adv - beta * (seq_kl - seq_kl.mean(dim=1, keepdim=True))


def grpo_loss(
    logp: Tensor,
    logp_old: Tensor,
    logp_ref: Tensor | None,
    adv: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    beta: float = 0.0,
    loss_type: str = "grpo",
    max_tokens: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The GRPO family's loss: a clipped per-token surrogate plus β·k3, aggregated per loss_type.

    Per token, with ρ = π_θ/π_old and the sequence's advantage A:
    ℓ_t = −min(ρA, clip(ρ, 1 − ε_low, 1 + ε_high)A) + β·k3_t, where
    k3_t = π_ref/π_θ − log(π_ref/π_θ) − 1 (the "KL in the loss"; its gradient is that of the
    forward KL(π_ref‖π_θ), see chapter 08). Aggregation over the valid tokens:

    * ``grpo`` — mean over each sequence's tokens, then mean over sequences (length bias: a
      token of a short response weighs more);
    * ``bnpo`` and ``dapo`` — one mean over all tokens of the batch;
    * ``dr_grpo`` — sum over all tokens / (B · max_tokens), a constant normaliser.

    This is TRL 1.16's ``GRPOTrainer._compute_loss`` (token-level importance sampling, no vLLM
    correction, no entropy mask) for one batch and no gradient accumulation. There, bnpo
    divides by the local micro-batch's token count and dapo by the token count of the whole
    generation batch across accumulation steps and processes; for a single batch both are the
    plain token mean used here. TRL further divides the loss by the number of gradient
    accumulation steps (not done here); like TRL, an empty sequence's length counts as 1.

    Args:
        logp: log π_θ of each sampled token; carries the gradient.
        logp_old: log π_old of the same tokens, from the sampling policy (detached).
        logp_ref: log π_ref of the same tokens (detached); may be None when beta is 0.
        adv: one advantage per sequence, e.g. from :func:`group_advantages`, flattened.
        mask: 1 (or True) for completion tokens, 0 for padding.
        eps_low: ε_low in (0, 1), the lower clip 1 − ε_low; typical 0.2.
        eps_high: ε_high > 0, the upper clip 1 + ε_high; None means eps_low (DAPO: 0.28).
        beta: β ≥ 0, the weight of the k3 term; DeepSeekMath 0.04, TRL's default 0.
        loss_type: ``"grpo"``, ``"bnpo"``, ``"dr_grpo"`` or ``"dapo"``.
        max_tokens: the normaliser of dr_grpo (TRL's ``max_completion_length``), required for
            it and at least the longest sequence; not used by the other loss types.

    Shape:
        logp: (B, T), introduced in chapter 08.
        logp_old: (B, T), introduced in chapter 04.
        logp_ref: (B, T), introduced in chapter 04.
        adv: (B,), introduced in chapter 08.
        mask: (B, T), introduced in chapter 04.

    Returns:
        ``(loss, stats)``. stats, means over valid tokens as TRL logs them:
        ``clip_ratio/low_mean`` (ρ < 1 − ε_low and A < 0), ``clip_ratio/high_mean``
        (ρ > 1 + ε_high and A > 0), ``clip_ratio/region_mean`` (either); and ``kl``, the mean
        k3, when beta > 0.

    Raises:
        ValueError: on mismatched shapes, eps_low outside (0, 1), eps_high ≤ 0, beta < 0,
            a missing logp_ref with beta > 0, an unknown loss_type, or a bad max_tokens.

    Introduced in chapter 08 (GRPO).
    """
    shapes = {"logp": logp.shape, "logp_old": logp_old.shape, "mask": mask.shape}
    if logp_ref is not None:
        shapes["logp_ref"] = logp_ref.shape
    if logp.dim() != 2 or len(set(shapes.values())) != 1:
        raise ValueError(f"logp, logp_old, logp_ref and mask must share a shape (B, T): {shapes}")
    if adv.shape != logp.shape[:1]:
        raise ValueError(
            f"adv must have shape (B,) = {tuple(logp.shape[:1])}; got {tuple(adv.shape)}"
        )
    eps_high = eps_low if eps_high is None else eps_high
    if not 0.0 < eps_low < 1.0:
        raise ValueError(f"eps_low must be in (0, 1); got {eps_low}")
    if not eps_high > 0.0:
        raise ValueError(f"eps_high must be > 0; got {eps_high}")
    if not beta >= 0.0:
        raise ValueError(f"beta must be >= 0; got {beta}")
    if beta > 0 and logp_ref is None:
        raise ValueError("logp_ref is required when beta > 0")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}; got {loss_type!r}")
    valid = mask.bool()
    longest = int(valid.sum(dim=1).max().item()) if valid.numel() else 0
    if loss_type == "dr_grpo" and (max_tokens is None or max_tokens < max(longest, 1)):
        raise ValueError(
            f"max_tokens must be an int >= the longest sequence ({longest}) for dr_grpo; "
            f"got {max_tokens}"
        )
    # padding may hold anything (inf, nan): zero it first, so that neither the loss nor its
    # gradient sees it
    logp = torch.where(valid, logp, 0.0)
    logp_old = torch.where(valid, logp_old.detach(), 0.0)
    if logp_ref is not None:
        logp_ref = torch.where(valid, logp_ref.detach(), 0.0)
    adv = adv.detach().to(logp.dtype).unsqueeze(1)  # (B, 1): one advantage for every token

    # (eq-grpo-clip)  ℓ_t = −min(ρ_t A, clip(ρ_t, 1 − ε_low, 1 + ε_high) A)
    ratio = torch.exp(logp - logp_old)
    clipped_ratio = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    per_token = -torch.min(ratio * adv, clipped_ratio * adv)
    if beta > 0:
        # (eq-grpo-kl)  ℓ_t += β k3_t,  k3 = π_ref/π_θ − log(π_ref/π_θ) − 1
        kl = kl_penalty(logp, logp_ref, kind="k3")
        per_token = per_token + beta * kl

    token_sum = torch.where(valid, per_token, 0.0).sum(dim=1)  # (B,)
    if loss_type == "grpo":
        # (eq-grpo-agg)  L = (1/B) Σ_i (1/|o_i|) Σ_t ℓ_{i,t}; an empty sequence counts as length 1
        loss = (token_sum / valid.sum(dim=1).clamp(min=1)).mean()
    elif loss_type == "dr_grpo":
        # (eq-dr-grpo-agg)  L = Σ_{i,t} ℓ_{i,t} / (B · max_tokens)
        loss = token_sum.sum() / (logp.shape[0] * max_tokens)
    else:
        # (eq-dapo-agg)  L = Σ_{i,t} ℓ_{i,t} / Σ_i |o_i|
        loss = token_sum.sum() / valid.sum().clamp(min=1)

    with torch.no_grad():
        low = (ratio < 1.0 - eps_low) & (adv < 0)
        high = (ratio > 1.0 + eps_high) & (adv > 0)
        stats = {
            "clip_ratio/low_mean": masked_mean(low.to(logp.dtype), valid).item(),
            "clip_ratio/high_mean": masked_mean(high.to(logp.dtype), valid).item(),
            "clip_ratio/region_mean": masked_mean((low | high).to(logp.dtype), valid).item(),
        }
        if beta > 0:
            stats["kl"] = masked_mean(kl.detach(), valid).item()
    return loss, stats


# -- training -----------------------------------------------------------------------------------
KL_PLACEMENTS = ("loss", "reward")


@dataclass
class GRPOConfig:
    """Hyperparameters of :func:`train_grpo`; validated on construction (chapter 08).

    Attributes:
        group_size: G ≥ 2, completions sampled per prompt; typical 4 … 16 (DeepSeekMath 64).
        prompts_per_step: N ≥ 1, prompts per batch; the batch holds N·G completions.
        steps: rollout batches to train on, ≥ 1.
        lr: η > 0, AdamW learning rate; 1e-4 … 1e-3 for the tiny policies (1e-6 for real LLMs).
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
    drop_zero_std: bool = False
    temperature: float = 1.0
    max_grad_norm: float = 1.0
    eval_every: int = 5
    seed: int = field(default_factory=get_seed)  # RLHF_LAB_SEED unless given
    progress: bool = True

    def __post_init__(self) -> None:
        checks = {
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
            "scale_rewards": (self.scale_rewards in SCALES, f"one of {SCALES}"),
            "temperature": (self.temperature > 0, "> 0"),
            "max_grad_norm": (self.max_grad_norm > 0, "> 0"),
            "eval_every": (self.eval_every >= 1, ">= 1"),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:  # a NaN fails every comparison, so it is rejected too
                raise ValueError(f"GRPOConfig.{name} must be {allowed}; got {getattr(self, name)!r}")


def _select(rollout: Rollout, keep: Tensor) -> Rollout:
    """The rows ``keep`` (a bool mask (B,)) of a rollout."""
    rows = keep.nonzero().squeeze(1).tolist()
    return Rollout(
        prompts=[rollout.prompts[i] for i in rows], completions=[rollout.completions[i] for i in rows],
        prompt_ids=rollout.prompt_ids[keep], prompt_mask=rollout.prompt_mask[keep],
        completion_ids=rollout.completion_ids[keep], completion_mask=rollout.completion_mask[keep],
        logp=rollout.logp[keep], eos_id=rollout.eos_id,
    )


def train_grpo(
    policy: torch.nn.Module,
    world: TokenWorld,
    config: GRPOConfig,
    callback: Callback | None = None,
    *,
    reward_fn: Callable[[list[str], list[str]], Tensor] | None = None,
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
        FloatingPointError: the loss became NaN or infinite (names the step).
    """
    ref_policy = policy if ref_policy is None else ref_policy
    if evaluator is None:
        evaluator = default_evaluator(world, ref_policy, proxy_fn=reward_fn)
    policy = trainable_copy(policy)
    opt = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
    device = next(policy.parameters()).device
    gen = torch.Generator(device=device).manual_seed(config.seed)
    cpu_gen = torch.Generator().manual_seed(config.seed)
    n, g, tau = config.prompts_per_step, config.group_size, config.temperature
    history = History()
    history.policy = policy

    def log(step: int, metrics: dict[str, float]) -> None:
        history.log(step, metrics)
        if callback is not None:
            callback(step, metrics, history)

    log(0, evaluator(policy))
    bar = progress(config.steps, "GRPO", config.progress)
    score = reward_fn or world.gold_rewards
    for step in range(config.steps):
        # 1) N prompts, each repeated G times: rows i·G … i·G + G − 1 form group i
        idx = torch.randint(len(world.prompts), (n,), generator=cpu_gen)
        prompts = [world.prompts[i] for i in idx.repeat_interleave(g).tolist()]
        rollout = sample(policy, world, prompts, temperature=tau, generator=gen)
        mask = rollout.completion_mask.bool()
        # 2) rewards; log π_old teacher-forced (the KV-cache sampler rounds slightly differently
        # from a full forward pass), so the first ratio is exactly 1; log π_ref of the same tokens
        rewards = torch.as_tensor(score(rollout.prompts, rollout.completions), dtype=torch.float32).to(device)
        with torch.no_grad():
            logp_old = completion_logprobs(policy, rollout, world, tau)
            logp_ref = completion_logprobs(ref_policy, rollout, world, tau)
        seq_k1 = torch.where(mask, kl_penalty(logp_old, logp_ref, "k1"), 0.0).sum(1)  # (B,)
        # 3) group-relative advantages of the raw rewards; groups with equal rewards carry none
        if config.kl_placement == "reward" and config.beta > 0:
            # the penalty after standardising, so 1/std does not blow it up (eq-kl-reward-adv)
            adv = kl_reward_advantages(rewards.view(n, g), seq_k1.view(n, g), config.beta, config.scale_rewards)
        else:
            adv = group_advantages(rewards.view(n, g), config.scale_rewards)  # (N, G)
        adv = adv.flatten()  # (N·G,)
        zero_std = rewards.view(n, g).std(dim=1) == 0  # (N,)
        keep = ~zero_std.repeat_interleave(g) if config.drop_zero_std else torch.ones_like(mask[:, 0])
        metrics = {
            "reward/mean": rewards.mean().item(), "reward/std": rewards.std().item(),
            "stats/frac_reward_zero_std": zero_std.float().mean().item(),
            "stats/completion_length": rollout.lengths.float().mean().item(),
            "kl/sampled": seq_k1.mean().item(),
        }
        # 4) μ gradient steps on the same batch; the first one also measures the entropy
        batch = _select(rollout, keep) if not bool(keep.all()) else rollout
        means = {"loss/policy": 0.0, "stats/grad_norm": 0.0, "stats/clip_ratio/low": 0.0,
                 "stats/clip_ratio/high": 0.0, "stats/clip_ratio/region": 0.0}
        updates = config.updates_per_batch if bool(keep.any()) else 0
        for update in range(updates):
            logits = completion_logits(policy, batch, world, tau)  # (B, T, V)
            logp = torch.log_softmax(logits, -1).gather(-1, batch.completion_ids[..., None]).squeeze(-1)
            loss, stats = grpo_loss(
                logp, logp_old[keep], logp_ref[keep], adv[keep], batch.completion_mask,
                eps_low=config.eps_low, eps_high=config.eps_high,
                beta=config.beta if config.kl_placement == "loss" else 0.0,
                loss_type=config.loss_type, max_tokens=world.max_new_tokens,
            )
            check_finite(step, loss.detach(), history)
            if update == 0:
                with torch.no_grad():
                    token_entropy = entropy_from_logits(logits)  # (B, T)
                    batch_mask = batch.completion_mask.bool()
                    metrics["stats/entropy"] = masked_mean(token_entropy, batch_mask).item()
                    # chain rule: Σ_t H(π(·|x, y_<t)) along a sample estimates the sequence entropy
                    metrics["entropy/sampled"] = torch.where(batch_mask, token_entropy, 0.0).sum(1).mean().item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            opt.step()
            step_values = {"loss/policy": loss.item(), "stats/grad_norm": float(grad_norm),
                           **{f"stats/clip_ratio/{k}": stats[f"clip_ratio/{k}_mean"] for k in ("low", "high", "region")}}
            for key, value in step_values.items():
                means[key] += value / updates
        if updates == 0:  # every group of the batch was dropped: nothing was trained on
            means = {k: v for k, v in means.items() if k.startswith("stats/clip_ratio")}
        metrics.update(means)
        # 5) log the batch at this step; exact metrics at the step that counts updates so far
        log(step, metrics)
        if ((step + 1) % config.eval_every == 0 or step + 1 == config.steps):
            log(step + 1, evaluator(policy))
        bar.update()
        bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", refresh=False)
    bar.close()
    policy.eval()
    return history
