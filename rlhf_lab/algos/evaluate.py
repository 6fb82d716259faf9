"""Evaluators: the metrics of a policy that every trainer logs beside its own diagnostics.

* ``ExactEvaluator`` — on an enumerable world, exact ``reward/gold``, ``reward/proxy``,
  ``kl/exact``, ``entropy/exact`` (and exact ``pass@k`` on a 0/1-reward world), from one
  batched forward pass over every completion (``exact.Enumeration``).
* ``SampledEvaluator`` — elsewhere, sampled estimates of the same quantities with standard errors.
* ``default_evaluator`` — the one factory every ``train`` uses when given no evaluator.

``algos/loop.py`` re-exports all three. Introduced in chapter 02; the sampled metrics in
chapter 08. Every key is documented in book/metrics.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from rlhf_lab.core import entropy_from_logits
from rlhf_lab.exact import Enumeration
from rlhf_lab.rollout import Rollout, completion_logits, completion_logprobs, sample
from rlhf_lab.scale import get_seed
from rlhf_lab.validate import (NonFiniteError, check_callable, check_instance, check_int, check_reward_output,
                               check_tensor, check_vocab)
from rlhf_lab.worlds.base import TokenWorld


class ExactEvaluator:
    """Exact ``reward/gold``, ``reward/proxy``, ``kl/exact``, ``entropy/exact`` of a policy, and
    exact ``pass@k`` on a verifiable (0/1-reward) world.

    Enumerates the world once and caches π_ref's log-probs and the proxy's scores of every
    completion, so evaluating a policy is one batched forward pass (well under a second at ci).

    Args:
        world: an enumerable token world.
        ref_policy: π_ref, the anchor of the KL.
        proxy: proxy rewards of every completion, (P, K) in ``Enumeration`` order, or None.
        enumeration: the world's :class:`~rlhf_lab.exact.Enumeration`, if already built.
    """

    def __init__(self, world: TokenWorld, ref_policy: torch.nn.Module, proxy: torch.Tensor | None = None,
                 enumeration: Enumeration | None = None) -> None:
        check_instance("world", world, TokenWorld, "a TokenWorld")
        world.check_enumerable()
        check_vocab(ref_policy, world, "ref_policy")
        check_instance("enumeration", enumeration, Enumeration, "an exact.Enumeration", none=True)
        self.enum = Enumeration(world) if enumeration is None else enumeration
        if proxy is not None:
            check_tensor("proxy", proxy, shape=self.enum.shape, finite=True, dims=f"(P, K) = {self.enum.shape}")
        self.logp_ref = self.enum.logprobs(ref_policy)
        self.proxy = proxy

    def __call__(self, policy: torch.nn.Module) -> dict[str, float]:
        return self.enum.metrics(self.enum.logprobs(policy), self.logp_ref, proxy=self.proxy)


class SampledEvaluator:
    """Sampled estimates of the exact metrics, for worlds too large to enumerate (scale gpu).

    Draws ``samples`` completions at temperature 1 from the policy, for a fixed set of prompts
    and a fixed seed (so successive evaluations share their random numbers), and reports:

    * ``reward/gold``, ``reward/proxy`` — mean rewards of the samples (proxy when ``proxy_fn``);
    * ``pass@1`` — the same mean, on a verifiable world (``world.verifiable``: a 0/1 verifier);
    * ``kl/estimate`` — mean of Σ_t (log π − log π_ref) over each sample: k1 summed over the
      sequence, an unbiased estimate of KL(π‖π_ref) (eq-kl-estimators);
    * ``entropy/estimate`` — mean of Σ_t H(π(·|x, y_<t)) along each sample: by the chain rule an
      unbiased estimate of the sequence entropy, with less variance than −log π(y|x).

    Each has a standard error under ``<key>_se``. On an enumerable world the same keys can be
    checked against :class:`ExactEvaluator` (chapters 08–09 do).

    Args:
        world: a token world.
        ref_policy: π_ref, the anchor of the KL.
        proxy_fn: ``proxy_fn(prompts, completions) -> Tensor (B,)``, e.g. a reward model, or None.
        samples: completions drawn per evaluation (≥ 2).
        seed: seed of the prompt choice and of the sampling noise; default ``RLHF_LAB_SEED``.
        batch_size: completions sampled per forward pass.
    """

    def __init__(self, world: TokenWorld, ref_policy: torch.nn.Module, proxy_fn: Callable | None = None,
                 samples: int = 1024, seed: int | None = None, batch_size: int = 1024) -> None:
        check_instance("world", world, TokenWorld, "a TokenWorld")
        check_vocab(ref_policy, world, "ref_policy")
        check_callable("proxy_fn", proxy_fn, "a function proxy_fn(prompts, completions) -> Tensor (B,)", none=True)
        check_int("samples", samples, ge=2)
        check_int("seed", seed, none=True)
        check_int("batch_size", batch_size, ge=1)
        self.world, self.ref_policy, self.proxy_fn = world, ref_policy, proxy_fn
        seed = get_seed() if seed is None else seed
        self.samples, self.seed, self.batch_size = samples, seed, batch_size
        idx = torch.randint(len(world.prompts), (samples,), generator=torch.Generator().manual_seed(seed))
        self.prompts = [world.prompts[i] for i in idx.tolist()]

    @torch.no_grad()
    def __call__(self, policy: torch.nn.Module) -> dict[str, float]:
        was_training = policy.training
        policy.eval()
        try:
            return self._evaluate(policy)
        finally:
            policy.train(was_training)

    def _evaluate(self, policy: torch.nn.Module) -> dict[str, float]:
        device = next(policy.parameters()).device
        # π_ref may live elsewhere (TRL's trainer moves the policy to the GPU, not the reference)
        ref_device = next(self.ref_policy.parameters()).device
        gen = torch.Generator(device=device).manual_seed(self.seed)
        columns: dict[str, list[torch.Tensor]] = {"reward/gold": [], "reward/proxy": [], "kl/estimate": [],
                                                  "entropy/estimate": []}
        for start in range(0, self.samples, self.batch_size):
            prompts = self.prompts[start: start + self.batch_size]
            rollout = sample(policy, self.world, prompts, generator=gen)
            mask = rollout.completion_mask.bool()
            logp_ref = completion_logprobs(self.ref_policy, _moved(rollout, ref_device), self.world).to(device)
            token_entropy = entropy_from_logits(completion_logits(policy, rollout, self.world))
            columns["kl/estimate"].append(torch.where(mask, rollout.logp - logp_ref, 0.0).sum(1).double().cpu())
            columns["entropy/estimate"].append(torch.where(mask, token_entropy, 0.0).sum(1).double().cpu())
            columns["reward/gold"].append(self.world.gold_rewards(rollout.prompts, rollout.completions).double().cpu())
            if self.proxy_fn is not None:
                proxy = check_reward_output(self.proxy_fn(rollout.prompts, rollout.completions), len(prompts), "proxy_fn")
                columns["reward/proxy"].append(proxy.double().cpu().flatten())
        metrics = means_with_se(columns)
        if getattr(self.world, "verifiable", False):  # a 0/1 verifier: the mean reward is pass@1
            metrics["pass@1"], metrics["pass@1_se"] = metrics["reward/gold"], metrics["reward/gold_se"]
        return metrics


def _moved(rollout: Rollout, device: torch.device) -> Rollout:
    """The rollout with its tensors on ``device`` (itself where they are there already)."""
    if rollout.prompt_ids.device == device:
        return rollout
    tensors = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "logp")
    return dataclasses.replace(rollout, **{name: getattr(rollout, name).to(device) for name in tensors})


def means_with_se(columns: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Each column's mean over its samples (the parts concatenated) and, under ``<key>_se``, its
    standard error std/√M; empty columns are left out."""
    metrics: dict[str, float] = {}
    for key, parts in columns.items():
        if parts:
            x = torch.cat(parts)
            metrics[key] = x.mean().item()
            metrics[f"{key}_se"] = (x.std() / math.sqrt(len(x))).item()
    return metrics


def default_evaluator(world: TokenWorld, ref_policy: torch.nn.Module,
                      proxy_fn: Callable | None = None) -> ExactEvaluator | SampledEvaluator:
    """The evaluator every ``train`` uses when given none — one factory for all trainers.

    On an enumerable world an :class:`ExactEvaluator`; with a ``proxy_fn`` it scores every
    completion once, so the proxy's exact expectation is logged as ``reward/proxy`` beside the
    gold reward. Elsewhere a :class:`SampledEvaluator` (which averages ``proxy_fn``, when given,
    over its samples as ``reward/proxy``).
    """
    check_instance("world", world, TokenWorld, "a TokenWorld")
    check_callable("reward_fn", proxy_fn, "a function reward_fn(prompts, completions) -> Tensor (B,)", none=True)
    if not world.enumerable:
        return SampledEvaluator(world, ref_policy, proxy_fn=proxy_fn)
    if proxy_fn is None:
        return ExactEvaluator(world, ref_policy)
    enum = Enumeration(world)
    k = len(enum.completions)
    prompts = [x for x in enum.prompts for _ in range(k)]
    try:
        proxy = check_reward_output(proxy_fn(prompts, enum.completions * len(enum.prompts)), len(prompts))
    except NonFiniteError as err:  # the table is the exact evaluation of step 0
        raise NonFiniteError(f"{err} — scoring every completion for the exact evaluation at step 0") from None
    proxy = proxy.detach().double().cpu().view(enum.shape)  # (P, K)
    return ExactEvaluator(world, ref_policy, proxy=proxy, enumeration=enum)
