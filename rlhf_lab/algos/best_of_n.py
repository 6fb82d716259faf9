"""Best-of-n and rejection sampling: draw n samples, keep the ones the reward model likes best.

``best_of_n`` draws n completions of each prompt and keeps the one with the top reward. On an
enumerable world the distribution of the kept sample is known exactly (``exact_best_of_n``,
``bon_kl_bound``, ``bon_win_rate``, in ``categorical.py`` and importable from here), so its KL
from π_ref and its win rate can be compared with the analytic bounds instead of estimated.

Rejection-sampling fine-tuning (Llama 2's "rejection sampling", ReST, RAFT) turns best-of-n
into training, and is this module's ``train`` (also importable as ``train_rejection_sampling``):
sample n completions per prompt, keep the best (``select_samples``), and fine-tune on them with
the supervised loss (``sft_loss``), −mean log π(y_t | x, y_<t) over the kept tokens. The next
round samples from the improved policy. Introduced in chapter 06.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlhf_lab.algos.loop import (Callback, ExactEvaluator, RewardFn, RunLog, SampledEvaluator, check_fields,
                                 check_train_args, default_evaluator, make_optimizer, optimizer_step, prompt_batch,
                                 rewards_of, trainable_copy)
from rlhf_lab.categorical import bon_kl_bound, bon_win_rate, exact_best_of_n  # noqa: F401  (re-exported)
from rlhf_lab.history import History
from rlhf_lab.likelihood import sft_loss  # shared with SFT (algos/sft.py)
from rlhf_lab.rollout import (Rollout, completion_logprobs, encode_texts, sample,  # noqa: F401  (re-exported)
                              sequence_logps)
from rlhf_lab.scale import get_seed
from rlhf_lab.validate import (check_callable, check_choice, check_int, check_tensor, check_texts,
                               check_vocab)
from rlhf_lab.worlds.base import TokenWorld

SELECTIONS = ("per_prompt", "overall")


# -- sampling best-of-n from a policy ----------------------------------------------------------
@dataclass
class BestOfN:
    """The result of :func:`best_of_n` for B prompts.

    Attributes:
        prompts: the B prompts.
        completions: the best of the n samples of each prompt, length B.
        rewards: their rewards. Shape: (B,).
        samples: all n samples of each prompt, B lists of n texts.
        sample_rewards: the reward of every sample. Shape: (B, n).
    """

    prompts: list[str]
    completions: list[str]
    rewards: Tensor
    samples: list[list[str]]
    sample_rewards: Tensor


def best_of_n(
    policy: torch.nn.Module,
    world: TokenWorld,
    prompts: Sequence[str],
    n: int,
    reward_fn: RewardFn,
    *,
    generator: torch.Generator | None = None,
) -> BestOfN:
    """Draw n completions of each prompt from ``policy`` and keep the one with the top reward.

    A reward tie goes to the sample drawn first, so the kept sample is always one of the best.

    Args:
        policy: the causal LM to sample from (π_ref for plain best-of-n).
        world: the token world (vocabulary, completion rules).
        prompts: B prompts; a repeated prompt is a separate draw of n.
        n: samples per prompt, an integer ≥ 1.
        reward_fn: ``reward_fn(prompts, completions) -> Tensor (B·n,)``: a reward model's
            scores, or ``world.gold_rewards``.
        generator: a ``torch.Generator`` on the policy's device, for reproducible draws.

    Returns:
        A :class:`BestOfN`.

    Introduced in chapter 06 (best-of-n).
    """
    check_vocab(policy, world)
    prompts = check_texts("prompts", prompts)
    check_int("n", n, ge=1)
    check_callable("reward_fn", reward_fn, "a function reward_fn(prompts, completions) -> Tensor (B·n,)")
    repeated = [x for x in prompts for _ in range(n)]  # prompt-major: row b holds samples b·n … b·n + n − 1
    rollout = sample(policy, world, repeated, generator=generator)
    # float64: rounding to float32 would create ties that the rewards themselves do not have
    rewards = rewards_of(reward_fn, repeated, rollout.completions).detach().double().cpu()
    rewards = rewards.view(len(prompts), n)  # (B, n)
    samples = [rollout.completions[b * n: (b + 1) * n] for b in range(len(prompts))]
    best = rewards.argmax(dim=1)  # (B,), the first of the tied maxima
    return BestOfN(
        prompts=prompts,
        completions=[row[i] for row, i in zip(samples, best.tolist())],
        rewards=rewards.gather(1, best[:, None]).squeeze(1),
        samples=samples,
        sample_rewards=rewards,
    )


# -- rejection sampling ------------------------------------------------------------------------
def select_samples(rewards: Tensor, keep: int, selection: str = "per_prompt") -> Tensor:
    """Which samples rejection sampling keeps: the same budget, two ways of spending it.

    * ``per_prompt`` — the ``keep`` best samples of every prompt (best-of-n when keep = 1):
      every prompt is represented equally.
    * ``overall`` — the ``keep``·B best samples of the whole batch, wherever they come from:
      prompts that are easy for the policy (many high-reward samples) take most of the budget
      and hard ones may get nothing.

    Ties are broken towards the lower index (the sample drawn first).

    Args:
        rewards: the reward of each of n samples of B prompts.
        keep: samples kept per prompt (on average, for ``overall``), 1 ≤ keep ≤ n.
        selection: ``"per_prompt"`` or ``"overall"``.

    Shape:
        rewards: (B, n), introduced in chapter 06.

    Returns:
        A bool mask of shape (B, n) with exactly keep·B entries set.

    Raises:
        ValueError: on a keep outside 1 … n, an unknown selection, or rewards that are not (B, n)
            or not finite (NaN sorts above every number: a NaN reward would always be kept).

    Introduced in chapter 06 (rejection sampling).
    """
    check_tensor("rewards", rewards, ndim=2, nonempty=True, dims="(B, n) with B, n ≥ 1")
    b, n = rewards.shape
    check_int("keep", keep, ge=1, le=n)
    check_choice("selection", selection, SELECTIONS)
    check_tensor("rewards (the reward_fn's scores)", rewards, finite=True)
    mask = torch.zeros(b, n, dtype=torch.bool)
    # a stable descending sort puts the first-drawn of tied samples first
    if selection == "per_prompt":
        top = torch.sort(rewards.detach().cpu(), dim=1, descending=True, stable=True).indices[:, :keep]  # (B, keep)
        mask.scatter_(1, top, True)
    else:
        top = torch.sort(rewards.detach().cpu().flatten(), descending=True, stable=True).indices[: keep * b]
        mask.view(-1)[top] = True
    return mask


take = Rollout.select  # the old name of Rollout.select


# -- rejection-sampling fine-tuning ---------------------------------------------------------------
@dataclass
class RejectionSamplingConfig:
    """Hyperparameters of :func:`train`; validated on construction (chapter 06).

    Attributes:
        rounds: sample → select → fine-tune rounds, ≥ 1; typical 1 … 5 (Llama 2: 4).
        prompts_per_round: B ≥ 1, prompts sampled per round (spread evenly over the world's).
        n: samples per prompt, ≥ 1; typical 4 … 64.
        keep: samples kept per prompt (on average for ``overall``), 1 ≤ keep ≤ n.
        selection: ``"per_prompt"`` or ``"overall"`` (see :func:`select_samples`).
        epochs: supervised passes over each round's kept samples, ≥ 1; typical 1 … 3.
        lr: η > 0, Adam learning rate; 1e-4 … 1e-3 for the tiny policies (1e-5 for real LLMs).
        batch_size: kept samples per gradient step, ≥ 1; typical 32 … 128.
        max_grad_norm: gradient-norm clip, > 0; typical 1.0.
        seed: seeds the prompt order, the samples and the shuffling.
        progress: show a tqdm progress bar.
    """

    rounds: int = 3
    prompts_per_round: int = 64
    n: int = 8
    keep: int = 1
    selection: str = "per_prompt"
    epochs: int = 2
    lr: float = 5e-4
    batch_size: int = 32
    max_grad_norm: float = 1.0
    seed: int = field(default_factory=get_seed)  # RLHF_LAB_SEED unless given
    progress: bool = True

    def __post_init__(self) -> None:
        check_fields(self, lambda: {
            "rounds": (self.rounds >= 1, ">= 1"),
            "prompts_per_round": (self.prompts_per_round >= 1, ">= 1"),
            "n": (self.n >= 1, ">= 1"),
            "keep": (1 <= self.keep <= max(self.n, 1), f"in 1 … n = {self.n}"),
            "selection": (self.selection in SELECTIONS, f"one of {SELECTIONS}"),
            "epochs": (self.epochs >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "max_grad_norm": (self.max_grad_norm > 0, "> 0"),
        })


def train(
    policy: torch.nn.Module,
    world: TokenWorld,
    config: RejectionSamplingConfig,
    callback: Callback | None = None,
    *,
    reward_fn: RewardFn | None = None,
    ref_policy: torch.nn.Module | None = None,
    evaluator: ExactEvaluator | SampledEvaluator | None = None,
) -> History:
    """Rejection-sampling fine-tuning of a copy of ``policy`` (chapter 06).

    Each round: 1) sample n completions for each of B prompts from the current policy;
    2) keep the best (``config.selection``); 3) ``config.epochs`` passes of :func:`sft_loss` on
    the kept samples; 4) log. Per gradient step: ``loss/sft``, ``stats/grad_norm``; per round
    (at the step that ends it): ``reward/mean`` and ``reward/kept`` (mean reward of all and
    of the kept samples) and the evaluator's metrics (also at step 0): on an enumerable world
    the exact ``reward/gold``, ``kl/exact``, ``entropy/exact`` and, with a ``reward_fn``, the
    exact ``reward/proxy``.

    Args:
        policy: the starting policy; not modified (a copy is trained).
        world: a token world.
        config: a :class:`RejectionSamplingConfig`.
        callback: called as ``callback(step, metrics, history)`` after every log.
        reward_fn: ``reward_fn(prompts, completions) -> Tensor (B,)`` that ranks the samples,
            e.g. a reward model; default the world's gold reward.
        ref_policy: π_ref of the exact KL; default ``policy``.
        evaluator: a prepared evaluator (saves enumerating again across runs); default
            ``default_evaluator(world, ref_policy, reward_fn)``.

    Returns:
        The ``History``; the trained policy is ``history.policy``.
    """
    check_train_args(policy, world, config, RejectionSamplingConfig, callback=callback, reward_fn=reward_fn,
                     ref_policy=ref_policy, evaluator=evaluator)
    ref_policy = policy if ref_policy is None else ref_policy
    if evaluator is None:
        evaluator = default_evaluator(world, ref_policy, proxy_fn=reward_fn)
    score = reward_fn or world.gold_rewards
    model = trainable_copy(policy)
    params = list(model.parameters())
    device = params[0].device
    opt = make_optimizer(params, config.lr, fused=False)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    cpu_gen = torch.Generator().manual_seed(config.seed)
    # one bar step per round; the log's steps count gradient steps
    run = RunLog(evaluator, 1, config.rounds, callback, "rejection sampling", config.progress)
    run.history.policy = model
    run.evaluate(0, model)
    step = 0
    for _ in range(config.rounds):
        # 1) sample and 2) select, with the policy as it is now
        prompts = prompt_batch(world, config.prompts_per_round, cpu_gen)
        with run.guard(step):  # NaN logits (diverged weights) or a NaN reward stop the run here
            drawn = best_of_n(model, world, prompts, config.n, score, generator=gen)
        mask = select_samples(drawn.sample_rewards, config.keep, config.selection)
        kept = mask.nonzero().tolist()
        batch = encode_texts(world, [prompts[b] for b, _ in kept], [drawn.samples[b][i] for b, i in kept], device)
        # 3) supervised passes over the kept samples
        for _ in range(config.epochs):
            order = torch.randperm(len(kept), generator=cpu_gen)
            for start in range(0, len(kept), config.batch_size):
                mini = batch.select(order[start: start + config.batch_size])
                with run.guard(step):
                    loss, _ = sft_loss(completion_logprobs(model, mini, world), mini.completion_mask)
                grad_norm = optimizer_step(opt, loss, params, config.max_grad_norm, step, run.history)
                step += 1
                run.log(step, {"loss/sft": loss.item(), "stats/grad_norm": grad_norm})
        # 4) log the round, with the evaluator's metrics of the policy it ends with
        with run.guard(step):
            run.log(step, {"reward/mean": drawn.sample_rewards.mean().item(),
                           "reward/kept": drawn.sample_rewards[mask].mean().item(), **evaluator(model)})
        run.tick()
    model.eval()
    return run.close()


train_rejection_sampling = train  # the name chapter 06 uses
