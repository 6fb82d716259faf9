"""What every training loop shares: exact evaluation, a NaN guard, a progress bar, a policy copy.

Kept apart from the algorithms so each ``train(...)`` reads top to bottom as the chapter tells
it: rollout → loss → step → log. Introduced in chapter 02.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from rlhf_lab.exact import Enumeration
from rlhf_lab.history import History
from rlhf_lab.worlds.base import TokenWorld

Callback = Callable[[int, dict, History], None]


class ExactEvaluator:
    """Exact ``reward/gold``, ``reward/proxy``, ``kl/exact``, ``entropy/exact`` of a policy.

    Enumerates the world once and caches π_ref's log-probs and the proxy's scores of every
    completion, so evaluating a policy is one batched forward pass (well under a second at ci).

    Args:
        world: an enumerable token world.
        ref_policy: π_ref, the anchor of the KL.
        proxy: proxy rewards of every completion, (P, K) in ``Enumeration`` order, or None.
    """

    def __init__(self, world: TokenWorld, ref_policy: torch.nn.Module, proxy: torch.Tensor | None = None) -> None:
        if not world.enumerable:
            raise ValueError(f"world {world.name!r} is not enumerable at this scale: use sampled metrics")
        self.enum = Enumeration(world)
        self.logp_ref = self.enum.logprobs(ref_policy)
        self.proxy = proxy

    def __call__(self, policy: torch.nn.Module) -> dict[str, float]:
        return self.enum.metrics(self.enum.logprobs(policy), self.logp_ref, proxy=self.proxy)


def trainable_copy(policy: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``policy`` to train, so the caller's π_ref stays untouched."""
    model = copy.deepcopy(policy)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def check_finite(step: int, loss: torch.Tensor, history: History) -> None:
    """Stop training on a NaN/inf loss, naming the step and the last finite metrics."""
    if not math.isfinite(float(loss)):
        last = {k: v for k, v in (history.last() or {}).items() if isinstance(v, float) and math.isfinite(v)}
        raise FloatingPointError(f"loss became {float(loss)} at step {step}; last finite metrics: {last}")


def progress(total: int, desc: str, enabled: bool = True):
    """A tqdm.auto progress bar (a widget in Jupyter, text elsewhere)."""
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)
