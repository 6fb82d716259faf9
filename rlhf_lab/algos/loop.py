"""The trainer skeleton: what every ``train(...)`` shares, so each reads top to bottom as its
chapter tells it — rollout → loss → step → log.

* ``check_fields`` — a Config's validation: each field's type from its annotation, then its range,
  an error naming the field, what it got and what is allowed; ``check_train_args`` — a
  ``train(...)``'s arguments, before anything runs;
* ``rewards_of`` — the one way a trainer calls its reward function: the output checked (B,), finite;
* ``trainable_copy`` — the copy of the policy that is trained, so the caller's π_ref stays put;
* ``prompt_batch``, ``prompt_groups`` — the prompts of one step;
* ``make_optimizer``, ``optimizer_step`` — Adam, and one update: NaN guard on the loss, backward,
  gradient clip, NaN guard on the gradient norm, step;
* ``RunLog`` — the run's History, its callback, its evaluation schedule, its progress bar, and
  ``guard(step)``: a non-finite value met in the block stops the run naming the step.

The evaluators (``ExactEvaluator``, ``SampledEvaluator``, ``default_evaluator``) live in
``evaluate.py`` and are importable from here. Introduced in chapter 02.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor
from tqdm.auto import tqdm

from rlhf_lab.algos.evaluate import ExactEvaluator, SampledEvaluator, default_evaluator  # noqa: F401  (re-exported)
from rlhf_lab.history import History
from rlhf_lab.validate import (ArgumentTypeError, check_callable, check_instance, check_reward_output, check_vocab,
                               describe, is_bool, is_int, is_real)
from rlhf_lab.worlds.base import TokenWorld

Callback = Callable[[int, dict, History], None]
RewardFn = Callable[[list[str], list[str]], Tensor]  # reward_fn(prompts, completions) -> (B,)


# -- set-up ------------------------------------------------------------------------------------
_KINDS = {"int": (is_int, "an integer"), "float": (is_real, "a number"), "bool": (is_bool, "True or False"),
          "str": (lambda v: isinstance(v, str), "a string")}


def _kind(annotation: object) -> tuple[str | None, bool]:
    """("int" | "float" | "bool" | "str" | None, None allowed) of a field's annotation ("float | None")."""
    names = [getattr(a, "__name__", a) for a in (annotation.split("|") if isinstance(annotation, str) else [annotation])]
    names = [str(n).strip() for n in names]
    kinds = [n for n in names if n in _KINDS]
    return (kinds[0] if len(kinds) == 1 and len(names) - ("None" in names) == 1 else None), "None" in names


def check_fields(config: object, checks: dict[str, tuple[bool, str]] | Callable[[], dict[str, tuple[bool, str]]]) -> None:
    """Validate a Config: every field's type from its annotation, then the ranges in ``checks``.

    1) a field annotated ``int``, ``float``, ``bool``, ``str`` (or ``… | None``) must hold that type —
    an int for a count (not a bool, not 2.5), a real number for a float (an int is fine; not the
    string "1e-3" that YAML can produce) — else an ``ArgumentTypeError`` (a TypeError and a
    ValueError); 2) each range check must hold, else a ``ValueError`` (NaN fails every comparison,
    so it is rejected); 3) a float field must be finite. The messages name the field, the allowed
    values and what it got.

    Args:
        config: the Config being validated (a dataclass).
        checks: field name → (whether its value is allowed, the allowed range in words), or a
            function returning that dict, so that the comparisons run only once the types are right.
    """
    cls = type(config).__name__
    for f in dataclasses.fields(config):
        kind, optional = _kind(f.type)
        value = getattr(config, f.name)
        if kind is not None and not (optional and value is None) and not _KINDS[kind][0](value):
            allowed = _KINDS[kind][1] + (" or None" if optional else "")
            raise ArgumentTypeError(f"{cls}.{f.name} must be {allowed}; got {describe(value)}")
    for name, (ok, allowed) in (checks() if callable(checks) else checks).items():
        if not ok:
            raise ValueError(f"{cls}.{name} must be {allowed}; got {getattr(config, name)!r}")
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if _kind(f.type)[0] == "float" and value is not None and not math.isfinite(float(value)):
            raise ValueError(f"{cls}.{f.name} must be finite; got {value!r}")


def check_train_args(policy: torch.nn.Module, world: TokenWorld, config: object, config_cls: type, *,
                     callback: object = None, reward_fn: object = None, ref_policy: object = None,
                     evaluator: object = None) -> None:
    """A ``train(...)``'s arguments, before anything runs: the policy (and π_ref) a causal LM of this
    world's vocabulary, the config of the algorithm's class, the callables callable."""
    check_instance("world", world, TokenWorld, "a TokenWorld (e.g. ReviewsWorld, ArithmeticWorld)")
    check_vocab(policy, world, "policy")
    if ref_policy is not None:
        check_vocab(ref_policy, world, "ref_policy")
    check_instance("config", config, config_cls, f"a {config_cls.__name__}")
    check_callable("callback", callback, "a function callback(step, metrics, history)", none=True)
    check_callable("reward_fn", reward_fn, "a function reward_fn(prompts, completions) -> Tensor (B,)", none=True)
    check_callable("evaluator", evaluator, "an evaluator (ExactEvaluator, SampledEvaluator)", none=True)


def rewards_of(reward_fn: RewardFn, prompts: list[str], completions: list[str]) -> Tensor:
    """``reward_fn(prompts, completions)``, checked: a real tensor of shape (B,), finite.

    Every trainer scores its completions through here. A list is turned into a tensor and the
    dtype is kept (callers convert as they always did). Raises an error naming ``reward_fn``:
    ``ArgumentTypeError`` for something that is not numbers, ``ValueError`` for a wrong shape,
    ``NonFiniteError`` (a FloatingPointError: inside ``RunLog.guard`` it names the step) for NaN/inf.
    """
    return check_reward_output(reward_fn(prompts, completions), len(prompts), "reward_fn")


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
    optimiser step otherwise costs as much as the forward and backward passes. Rejection
    sampling and the reward model pass False: the fused kernel rounds differently in the last
    bits, and the numbers their chapters assert were measured without it (DPO and GRPO take it:
    tests/test_perf_pins.py pins their runs to 1e-5 either way).
    """
    params = list(params)
    if weight_decay > 0:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    device = params[0].device.type
    return torch.optim.Adam(params, lr=lr, fused=device in ("cpu", "cuda") if fused else None)


def diverged(step: int, history: History, what: str) -> FloatingPointError:
    """The error that stops a run: ``what`` went wrong at ``step``, and the last finite metrics.

    It carries ``.step`` and ``.history`` (the run so far; the policy as it was is
    ``history.policy`` where the trainer sets one), so nothing of the run is lost.
    """
    last = {k: v for k, v in (history.last() or {}).items() if isinstance(v, float) and math.isfinite(v)}
    err = FloatingPointError(f"{what} at step {step}; last finite metrics: {last}")
    err.step, err.history = step, history
    return err


def check_finite(step: int, loss: torch.Tensor, history: History) -> None:
    """Stop training on a NaN/inf loss, naming the step and the last finite metrics."""
    if not math.isfinite(float(loss)):
        raise diverged(step, history, f"loss became {float(loss)}")


def optimizer_step(opt: torch.optim.Optimizer, loss: Tensor, params: list[torch.nn.Parameter],
                   max_grad_norm: float | None, step: int, history: History) -> float:
    """One update: stop on a NaN/inf loss (:func:`check_finite`), backward, clip, stop on a NaN/inf
    gradient norm (an absurd β or learning rate), step. The weights are untouched when it stops.

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
    if max_grad_norm is None:
        grad_norm = math.nan
        grads = [p.grad for p in params if p.grad is not None]
        norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
    else:
        grad_norm = norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    if not math.isfinite(norm):
        raise diverged(step, history, f"gradient norm became {norm} (the loss was {float(loss.detach())}; an "
                                      f"absurd learning rate or β?)")
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
            try:
                self.callback(step, metrics, self.history)
            except BaseException:  # a callback that ends the run (early stopping) closes the bar
                self.bar.close()
                raise

    def evaluate(self, step: int, policy: torch.nn.Module) -> None:
        """The evaluator's metrics of ``policy`` after ``step`` updates, when the schedule says so."""
        due = step % self.eval_every == 0 or step == self.steps
        if self.evaluator is not None and due:
            with self.guard(step):
                self.log(step, self.evaluator(policy))

    @contextlib.contextmanager
    def guard(self, step: int) -> Iterator[None]:
        """Stop the run on a non-finite value met in the block — the policy's logits while it samples
        (its weights diverged), a loss's inputs, a reward — naming the step and the last finite
        metrics (:func:`diverged`). Errors that name their step already pass through."""
        try:
            yield
        except FloatingPointError as err:
            if getattr(err, "step", None) is not None:
                raise
            raise diverged(step, self.history, f"{err} — stopped") from err

    def tick(self, **postfix: str) -> None:
        """One step done: advance the bar and show ``postfix`` (e.g. ``reward="0.31"``) beside it."""
        self.bar.update()
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> History:
        self.bar.close()
        return self.history
