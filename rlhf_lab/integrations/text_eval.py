"""Sampled metrics of a model that has its own tokenizer (a hub model), for ``WorkbookCallback``.

``SampledEvaluator`` needs a policy whose vocabulary is the world's, so that it can mask the
logits as the world's sampler does. A hub model such as SmolLM2 writes with its own tokenizer;
``TextSampledEvaluator`` measures it the same way without the mask:

* ``reward/gold`` (and ``reward/proxy``) — mean of TRL-style reward functions over samples;
* ``kl/estimate`` — mean over samples of Σ_t (log π − log π_ref), k1 summed over the sequence;
* ``entropy/estimate`` — mean over samples of Σ_t H(π(·|x, y_<t)) (eq-kl-estimators, chapter 08);

each with its standard error under ``<key>_se``. Introduced in chapter 11.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from rlhf_lab.algos.evaluate import SampledEvaluator, means_with_se
from rlhf_lab.core import entropy_from_logits
from rlhf_lab.rollout import completion_logits, completion_logprobs, sample
from rlhf_lab.scale import get_seed
from rlhf_lab.validate import check_callable, check_instance, check_int, check_texts


class TextSampledEvaluator(SampledEvaluator):
    """``SampledEvaluator``'s metrics for a causal LM with its own tokenizer (no vocabulary mask).

    It shares ``SampledEvaluator``'s ``__call__`` (eval mode, no gradient) and the means with
    standard errors; only the set-up and the sampling differ.

    Args:
        prompts: the prompt texts to draw from (e.g. ``world.prompts``).
        tokenizer: the policy's (and π_ref's) tokenizer.
        ref_policy: π_ref, the anchor of the KL.
        gold: a TRL reward function ``f(prompts, completions, completion_ids=...) -> list[float]``.
        proxy: another one, logged as ``reward/proxy``, or None.
        max_new_tokens: the longest completion, EOS included.
        samples: completions per evaluation (≥ 2), for a fixed set of prompts and a fixed seed.
        batch_size: completions sampled per forward pass.
    """

    def __init__(self, prompts: Sequence[str], tokenizer, ref_policy: torch.nn.Module, gold: Callable,
                 proxy: Callable | None = None, *, max_new_tokens: int, samples: int = 512,
                 seed: int | None = None, batch_size: int = 128) -> None:
        prompts = check_texts("prompts", prompts)
        check_instance("ref_policy", ref_policy, torch.nn.Module, "a causal LM")
        check_callable("gold", gold, "a TRL reward function f(prompts, completions, **kwargs)")
        check_callable("proxy", proxy, "a TRL reward function f(prompts, completions, **kwargs)", none=True)
        check_int("max_new_tokens", max_new_tokens, ge=1)
        check_int("samples", samples, ge=2)
        check_int("batch_size", batch_size, ge=1)
        self.seed = get_seed() if seed is None else seed
        idx = torch.randint(len(prompts), (samples,), generator=torch.Generator().manual_seed(self.seed))
        self.prompts = [prompts[i] for i in idx.tolist()]
        self.tokenizer, self.ref_policy, self.max_new_tokens = tokenizer, ref_policy, max_new_tokens
        self.rewards = {"reward/gold": gold, **({"reward/proxy": proxy} if proxy is not None else {})}
        self.batch_size = batch_size

    def _evaluate(self, policy: torch.nn.Module) -> dict[str, float]:
        gen = torch.Generator().manual_seed(self.seed)
        columns: dict[str, list[torch.Tensor]] = {k: [] for k in [*self.rewards, "kl/estimate", "entropy/estimate"]}
        for start in range(0, len(self.prompts), self.batch_size):
            prompts = self.prompts[start: start + self.batch_size]
            rollout = sample(policy, self.tokenizer, prompts, max_new_tokens=self.max_new_tokens, generator=gen)
            mask = rollout.completion_mask.bool()  # (B, T)
            logp_ref = completion_logprobs(self.ref_policy, rollout)  # (B, T)
            token_entropy = entropy_from_logits(completion_logits(policy, rollout))  # (B, T)
            columns["kl/estimate"].append(torch.where(mask, rollout.logp - logp_ref, 0.0).sum(1).double().cpu())
            columns["entropy/estimate"].append(torch.where(mask, token_entropy, 0.0).sum(1).double().cpu())
            ids = [row[:n] for row, n in zip(rollout.completion_ids.tolist(), mask.sum(1).tolist())]
            for key, fn in self.rewards.items():
                values = fn(prompts=list(prompts), completions=rollout.completions, completion_ids=ids)
                columns[key].append(torch.tensor(values, dtype=torch.float64))
        return means_with_se(columns)
