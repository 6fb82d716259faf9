"""PPO: the clipped importance-ratio surrogate, and PPO for language models (per-token KL
reward, GAE, whitened advantages, a clipped critic, K epochs of minibatches per batch).

Two look-alike symbols: ρ_t = π_θ(a_t | s_t) / π_old(a_t | s_t) is the importance *ratio*;
r_t is the per-token *reward*. ε (``clip_eps``) bounds how far one update may move ρ from 1.
The batch is collected exactly as in A2C (``experience.collect``); what PPO adds is reusing it
for several epochs, which the ratio and the clip make safe. The critic's clipped loss
(``value_loss``) is shared with A2C, so it lives in ``experience.py``; it is importable from here.
Defaults follow Huang et al. (2024), "The N+ implementation details of RLHF with PPO".
Introduced in chapter 04.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlhf_lab.algos.experience import (actor_critic_forward, batch_metrics, check_same_shape, collect,
                                       value_loss)
from rlhf_lab.algos.loop import (Callback, ExactEvaluator, RewardFn, RunLog, SampledEvaluator, check_fields,
                                 check_train_args, default_evaluator, make_optimizer, optimizer_step, prompt_batch,
                                 trainable_copy)
from rlhf_lab.core import kl_estimate, masked_mean
from rlhf_lab.history import History
from rlhf_lab.models import ValueModel
from rlhf_lab.scale import get_seed
from rlhf_lab.validate import check_float, check_tensor
from rlhf_lab.worlds.base import TokenWorld


def ppo_policy_loss(
    logp: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_eps: float,
) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate, −min(ρA, clip(ρ, 1 − ε, 1 + ε)A), averaged over valid tokens.

    Aggregation: one masked mean over every valid token of the batch (as CleanRL and TRL's PPO
    did), so each token weighs the same and a long response weighs more than a short one.
    The clip is one-sided per sign of A: with A > 0 only ρ > 1 + ε is clipped, with A < 0 only
    ρ < 1 − ε; on the other side the unclipped term is the smaller one and keeps its gradient.

    Args:
        logp: log π_θ of each sampled token; carries the gradient.
        logp_old: log π_old of the same tokens, from the policy that sampled them (detached).
        adv: advantage Â_t of each token, e.g. from GAE (detached).
        mask: 1 (or True) for response tokens, 0 for prompt and padding.
        clip_eps: ε, in (0, 1); typical 0.2.

    Shape:
        logp: (B, T), introduced in chapter 04.
        logp_old: (B, T), introduced in chapter 04.
        adv: (B, T), introduced in chapter 03.
        mask: (B, T), introduced in chapter 04.

    Returns:
        ``(loss, stats)``. stats: ``clipfrac``, the fraction of valid tokens where the clipped
        term is the one chosen and differs from the unclipped one, i.e. (ρ > 1 + ε and A > 0) or
        (ρ < 1 − ε and A < 0) (CleanRL counts |ρ − 1| > ε whatever the sign of A, which is
        larger); ``approx_kl``, the mean over valid tokens of (ρ − 1) − log ρ, the k3 estimate of
        KL(π_old ‖ π_θ) from samples of π_old (as CleanRL and TRL); ``ratio_mean``.

    Raises:
        ValueError: if the shapes differ or clip_eps is not in (0, 1).

    Introduced in chapter 04 (PPO).
    """
    for name, x in (("logp", logp), ("logp_old", logp_old), ("adv", adv), ("mask", mask)):
        check_tensor(name, x, kind="mask" if name == "mask" else "float" if name != "adv" else "real")
    check_same_shape(logp=logp, logp_old=logp_old, adv=adv, mask=mask)
    check_float("clip_eps", clip_eps, gt=0.0, lt=1.0)
    valid = mask.bool()
    for name, x in (("logp", logp), ("logp_old", logp_old), ("adv", adv)):
        check_tensor(name, x, finite=True, mask=valid)
    # padding may hold anything (inf, nan): zero it first, so that neither the loss nor its
    # gradient sees it
    logp = torch.where(valid, logp, 0.0)
    logp_old = torch.where(valid, logp_old.detach(), 0.0)
    adv = torch.where(valid, adv.detach(), 0.0)

    # (eq-ppo-ratio)  ρ_t = π_θ(a_t|s_t) / π_old(a_t|s_t)
    ratio = torch.exp(logp - logp_old)
    # (eq-ppo-clip)  L_t = −min(ρ_t Â_t, clip(ρ_t, 1 − ε, 1 + ε) Â_t)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = masked_mean(-torch.min(unclipped, clipped), mask)

    with torch.no_grad():
        # the clipped branch is active exactly where it is strictly smaller than the unclipped one
        is_clipped = ((ratio > 1.0 + clip_eps) & (adv > 0)) | ((ratio < 1.0 - clip_eps) & (adv < 0))
        # the samples come from π_old, so k3 with "policy" π_old and "reference" π_θ
        # estimates KL(π_old‖π_θ)
        approx_kl = kl_estimate(logp.detach() - logp_old, "k3")
        stats = {
            "clipfrac": masked_mean(is_clipped.to(logp.dtype), mask).item(),
            "approx_kl": masked_mean(approx_kl, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
    return loss, stats


# -- training ------------------------------------------------------------------------------------
@dataclass
class PPOConfig:
    """Hyperparameters of :func:`train`; validated on construction (chapter 04).

    Attributes:
        steps: rollout batches; ≥ 1 (40 at scale ci).
        batch_size: B, completions per rollout batch; ≥ 2; typical 64 … 512.
        minibatch_size: completions per gradient step; must divide B; typical B/4 … B.
        epochs: K ≥ 1, passes over each batch; typical 1 … 4 (Huang et al.: 4).
        lr: η > 0, Adam learning rate of actor and critic; 1e-4 … 3e-4 for the tiny policies (at
            3e-4 a run occasionally collapses once its batches are nearly uniform); 1e-6 for LLMs.
        clip_eps: ε in (0, 1), the ratio clip 1 ± ε; typical 0.1 … 0.3 (0.2).
        value_clip_eps: the critic's clip around V_old, in reward units, > 0, or None; 0.2.
        vf_coef: c_V ≥ 0, weight of the value loss; typical 0.1 (Huang et al.) … 0.5.
        gamma: γ in [0, 1], the discount; 1 for RLHF.
        lam: λ in [0, 1], GAE's bias–variance knob; typical 0.95.
        beta: β ≥ 0, per-token KL coefficient (eq-kl-reward); 0.01 … 1 (0.05 in InstructGPT-like
            setups with a normalised reward).
        whiten_adv: normalise the advantages over each batch to mean 0 and std 1.
        missing_eos_score: the score of a completion without EOS (a fixed low value; −1), or
            None to keep the reward function's score.
        max_grad_norm: gradient-norm clip over actor and critic together, > 0; typical 1.0.
        eval_every: evaluation (exact, or sampled where not enumerable) every this many steps, ≥ 1.
        seed: seeds the prompt order, the samples and the minibatch order.
        progress: show a tqdm progress bar.
    """

    steps: int = 40
    batch_size: int = 64
    minibatch_size: int = 16
    epochs: int = 4
    lr: float = 2e-4
    clip_eps: float = 0.2
    value_clip_eps: float | None = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    beta: float = 0.0
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
            "minibatch_size": (1 <= self.minibatch_size <= self.batch_size
                               and self.batch_size % self.minibatch_size == 0,
                               f"a divisor of batch_size={self.batch_size} (in 1 … {self.batch_size})"),
            "epochs": (self.epochs >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "clip_eps": (0 < self.clip_eps < 1, "in (0, 1)"),
            "value_clip_eps": (self.value_clip_eps is None or self.value_clip_eps > 0, "> 0 or None"),
            "vf_coef": (self.vf_coef >= 0, ">= 0"),
            "gamma": (0 <= self.gamma <= 1, "in [0, 1]"),
            "lam": (0 <= self.lam <= 1, "in [0, 1]"),
            "beta": (self.beta >= 0, ">= 0"),
            "missing_eos_score": (self.missing_eos_score is None or abs(self.missing_eos_score) < float("inf"),
                                  "a finite number or None"),
            "max_grad_norm": (self.max_grad_norm > 0, "> 0"),
            "eval_every": (self.eval_every >= 1, ">= 1"),
        })


def train(
    policy: torch.nn.Module,
    world: TokenWorld,
    config: PPOConfig,
    callback: Callback | None = None,
    *,
    reward_fn: RewardFn | None = None,
    ref_policy: torch.nn.Module | None = None,
    evaluator: ExactEvaluator | SampledEvaluator | None = None,
) -> History:
    """Train a copy of ``policy`` with PPO (chapter 04): rollout → advantages → K epochs → log.

    Each step: 1) sample B completions and score them; 2) per-token rewards −β·KL_t plus the
    score at EOS, GAE advantages (whitened) and returns (``experience.collect``); 3) K epochs over the
    batch in shuffled minibatches, each a step on :func:`ppo_policy_loss` + c_V·:func:`value_loss`;
    4) log ``loss/policy``, ``loss/value``, ``stats/clipfrac``, ``stats/approx_kl`` (means over
    the minibatch steps), ``stats/explained_var`` (of the critic before the update),
    ``stats/entropy``, ``stats/grad_norm``, ``reward/mean``, ``kl/sampled``; and the exact metrics
    at step 0, every ``eval_every`` steps and at the end.

    The critic is a separate ``ValueModel`` started from a copy of ``policy``'s transformer (not
    a head on the policy's own backbone), so the value loss cannot disturb the policy's features.

    Args:
        policy: the starting policy; not modified (a copy is trained).
        world: a token world.
        config: a :class:`PPOConfig`.
        callback: called as ``callback(step, metrics, history)`` after every log.
        reward_fn: ``reward_fn(prompts, completions) -> Tensor (B,)``, e.g. a proxy reward
            model's scores; default the world's gold reward.
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
    check_train_args(policy, world, config, PPOConfig, callback=callback, reward_fn=reward_fn,
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
    run = RunLog(evaluator, config.eval_every, config.steps, callback, "PPO", config.progress)
    run.history.policy, run.history.value_model = model, value_model
    run.evaluate(0, model)
    for step in range(config.steps):
        with run.guard(step):  # NaN logits (diverged weights) or a NaN reward stop the run here
            # 1) rollout, 2) advantages
            exp = collect(model, ref_policy, value_model, world, prompt_batch(world, config.batch_size, cpu_gen),
                          score, beta=config.beta, gamma=config.gamma, lam=config.lam,
                          missing_eos_score=config.missing_eos_score, whiten=config.whiten_adv, generator=gen)
        # 3) K epochs of shuffled minibatches on the same batch
        sums: dict[str, float] = {}
        n_updates = 0
        for _ in range(config.epochs):
            for rows in torch.randperm(config.batch_size, generator=cpu_gen).split(config.minibatch_size):
                mb = exp.select(rows.to(device))
                with run.guard(step):  # NaN logits after an update stop the run here
                    logp, values, metrics = actor_critic_forward(model, value_model, world, mb)
                    loss_pi, stats = ppo_policy_loss(logp, mb.logp_old, mb.adv, mb.mask, config.clip_eps)
                    loss_v, _ = value_loss(values, mb.values_old, mb.ret, mb.mask, config.value_clip_eps)
                # (eq-ppo-total)  L = −L^CLIP + c_V L^V; ppo_policy_loss is −L^CLIP
                loss = loss_pi + config.vf_coef * loss_v
                grad_norm = optimizer_step(opt, loss, params, config.max_grad_norm, step, run.history)
                for key, value in {**metrics, "loss/policy": loss_pi.item(), "loss/value": loss_v.item(),
                                   "stats/clipfrac": stats["clipfrac"], "stats/approx_kl": stats["approx_kl"],
                                   "stats/grad_norm": grad_norm}.items():
                    sums[key] = sums.get(key, 0.0) + value
                n_updates += 1
        # 4) log
        run.log(step, {**batch_metrics(exp), **{k: v / n_updates for k, v in sums.items()}})
        run.evaluate(step + 1, model)
        run.tick(reward=f"{exp.scores.mean().item():.3f}")
    return run.close()
