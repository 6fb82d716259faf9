"""The trainer skeleton: what every ``train(...)`` shares, so each reads top to bottom as its
chapter tells it — rollout → loss → step → log.

* ``check_fields`` — a Config's validation: a ``ValueError`` naming the field and its range;
* ``trainable_copy`` — the copy of the policy that is trained, so the caller's π_ref stays put;
* ``prompt_batch``, ``prompt_groups`` — the prompts of one step;
* ``make_optimizer``, ``optimizer_step`` — Adam, and one update: NaN guard, backward, gradient
  clip, step;
* ``RunLog`` — the run's History, its callback, its evaluation schedule and its progress bar.

The evaluators (``ExactEvaluator``, ``SampledEvaluator``, ``default_evaluator``) live in
``evaluate.py`` and are importable from here. Introduced in chapter 02.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from rlhf_lab.algos.evaluate import ExactEvaluator, SampledEvaluator, default_evaluator  # noqa: F401  (re-exported)
from rlhf_lab.history import History
from rlhf_lab.worlds.base import TokenWorld

Callback = Callable[[int, dict, History], None]
RewardFn = Callable[[list[str], list[str]], Tensor]  # reward_fn(prompts, completions) -> (B,)


# -- set-up ------------------------------------------------------------------------------------
def check_fields(config: object, checks: dict[str, tuple[bool, str]]) -> None:
    """Raise ``ValueError`` naming the first field whose check failed and its allowed range.

    Args:
        config: the Config being validated (its class name and the field's value go in the message).
        checks: field name → (whether its value is allowed, the allowed range in words).
    """
    for name, (ok, allowed) in checks.items():
        if not ok:  # NaN fails every comparison, so it is rejected too
            raise ValueError(f"{type(config).__name__}.{name} must be {allowed}; got {getattr(config, name)!r}")


def trainable_copy(policy: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``policy`` to train, so the caller's π_ref stays untouched."""
    model = copy.deepcopy(policy)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def prompt_batch(world: TokenWorld, batch_size: int, generator: torch.Generator) -> list[str]:
    """``batch_size`` prompts spread evenly over ``world.prompts``, in a random order.

    Even coverage matches the exact metrics, which weigh every prompt equally.
    """
    rows = torch.arange(batch_size) % len(world.prompts)
    rows = rows[torch.randperm(batch_size, generator=generator)]
    return [world.prompts[i] for i in rows.tolist()]


def prompt_groups(world: TokenWorld, n: int, group_size: int, generator: torch.Generator) -> list[str]:
    """N prompts drawn uniformly with replacement, each repeated G times (GRPO's batch).

    Rows i·G … i·G + G − 1 hold prompt i, so the rewards reshape to (N, G) groups. Unlike
    :func:`prompt_batch` the coverage of the prompts is even only on average.
    """
    idx = torch.randint(len(world.prompts), (n,), generator=generator)
    return [world.prompts[i] for i in idx.repeat_interleave(group_size).tolist()]


# -- one update ----------------------------------------------------------------------------------
def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, *, fused: bool = True,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam, the optimiser of every trainer (AdamW, Adam with decoupled decay, if ``weight_decay``).

    ``fused`` takes the fused kernel where there is one (CPU, CUDA): on these tiny models the
    optimiser step otherwise costs as much as the forward and backward passes. DPO, GRPO,
    rejection sampling and the reward model pass False: the fused kernel rounds differently in
    the last bits, and the numbers their chapters assert were measured without it.
    """
    params = list(params)
    if weight_decay > 0:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    device = params[0].device.type
    return torch.optim.Adam(params, lr=lr, fused=device in ("cpu", "cuda") if fused else None)


def check_finite(step: int, loss: torch.Tensor, history: History) -> None:
    """Stop training on a NaN/inf loss, naming the step and the last finite metrics."""
    if not math.isfinite(float(loss)):
        last = {k: v for k, v in (history.last() or {}).items() if isinstance(v, float) and math.isfinite(v)}
        raise FloatingPointError(f"loss became {float(loss)} at step {step}; last finite metrics: {last}")


def optimizer_step(opt: torch.optim.Optimizer, loss: Tensor, params: list[torch.nn.Parameter],
                   max_grad_norm: float | None, step: int, history: History) -> float:
    """One update: stop on a NaN/inf loss (:func:`check_finite`), backward, clip, step.

    Args:
        opt: the optimiser of ``params``.
        loss: the scalar loss; carries the gradient.
        params: the parameters whose gradient norm is clipped.
        max_grad_norm: the clip on the global gradient norm, or None for no clip.
        step: the step, for the error message.
        history: the run so far, whose last finite metrics the error message shows.

    Returns:
        The gradient norm before clipping (``stats/grad_norm``); nan without a clip.
    """
    check_finite(step, loss.detach(), history)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = math.nan if max_grad_norm is None else float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    opt.step()
    return grad_norm


# -- logging -------------------------------------------------------------------------------------
def progress(total: int, desc: str, enabled: bool = True):
    """A tqdm.auto progress bar (a widget in Jupyter, text elsewhere)."""
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


class RunLog:
    """A run's History, its callback, its evaluation schedule and its progress bar, in one place.

    ``log(step, metrics)`` records and calls back; ``evaluate(step, policy)`` adds the
    evaluator's metrics at step 0, every ``eval_every`` steps and at step ``steps``; ``tick``
    advances the bar by one of ``steps``; ``close()`` closes it and returns the History.

    Args:
        evaluator: the metrics of a policy (``ExactEvaluator``, ``SampledEvaluator``), or None.
        eval_every: evaluate every this many steps.
        steps: the length of the run, in the unit of ``step`` and of the bar.
        callback: called as ``callback(step, metrics, history)`` after every log, or None.
        desc: the progress bar's label.
        progress_bar: show the bar.
    """

    def __init__(self, evaluator: ExactEvaluator | SampledEvaluator | None, eval_every: int, steps: int,
                 callback: Callback | None, desc: str = "", progress_bar: bool = False) -> None:
        self.history = History()
        self.evaluator, self.eval_every, self.steps, self.callback = evaluator, eval_every, steps, callback
        self.bar = progress(steps, desc, progress_bar)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.history.log(step, metrics)
        if self.callback is not None:
            self.callback(step, metrics, self.history)

    def evaluate(self, step: int, policy: torch.nn.Module) -> None:
        """The evaluator's metrics of ``policy`` after ``step`` updates, when the schedule says so."""
        due = step % self.eval_every == 0 or step == self.steps
        if self.evaluator is not None and due:
            self.log(step, self.evaluator(policy))

    def tick(self, **postfix: str) -> None:
        """One step done: advance the bar and show ``postfix`` (e.g. ``reward="0.31"``) beside it."""
        self.bar.update()
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> History:
        self.bar.close()
        return self.history
