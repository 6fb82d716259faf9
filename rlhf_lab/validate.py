"""Argument checks shared by every public function: one set of rules, one message format.

Each check names the argument, says what it got and what is allowed:

* a wrong Python type — a string ``"1e-3"`` as YAML produces, None, a list, a bool where a
  count belongs, a float tensor where token ids belong — raises ``ArgumentTypeError``, a
  ``TypeError`` that is also a ``ValueError`` (what these functions raised before);
* a value out of range, a wrong shape, an empty tensor → ``ValueError``;
* NaN or ±inf in a tensor → ``NonFiniteError``, a ``ValueError`` that is also a
  ``FloatingPointError``: met inside a trainer it stops the run naming the step
  (``algos.loop.RunLog.guard``).

The rules: integer counts are ints (numpy and 0-d integer tensors too), never bools or floats;
real numbers also accept ints; log-probs are ≤ 0 up to rounding (``LOGP_TOL``) and those of a
whole distribution log-sum-exp to 0 (``NORM_TOL``); probabilities lie in [0, 1] and sum to 1. A
check costs at most a few tensor reductions and never draws a random number, so it changes no
result. Introduced in chapter 00.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

LOGP_TOL = 1e-5  # how far above 0 rounding may push a log-prob
NORM_TOL = 1e-3  # how far from 0 log Σ π may be (float32 sums over 10⁴–10⁵ outputs)
KINDS = {"float": "a floating-point", "int": "an integer", "real": "a real (integer or float)", "bool": "a bool",
         "mask": "a bool, integer or float"}


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. Also a ValueError, which these functions raised before."""


class NonFiniteError(FloatingPointError, ValueError):
    """NaN or ±inf where finite values are needed."""


def describe(value: Any) -> str:
    """The value for an error message: its repr (cut short) and type, or a tensor's shape and dtype."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"a {type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return text if value is None else f"{text} ({type(value).__name__})"


# -- numbers -------------------------------------------------------------------------------------
def is_int(value: Any) -> bool:
    """An integer that is not a bool: int, a numpy integer, a 0-d integer tensor."""
    if isinstance(value, numbers.Integral):
        return not isinstance(value, bool)
    return getattr(value, "ndim", None) == 0 and str(getattr(value, "dtype", "")).startswith(("torch.int", "torch.uint"))


def is_real(value: Any) -> bool:
    """A real number that is not a bool: int, float, a numpy scalar, a 0-d real tensor."""
    if isinstance(value, numbers.Real):
        return not isinstance(value, bool)
    return is_int(value) or (getattr(value, "ndim", None) == 0
                             and str(getattr(value, "dtype", "")).startswith(("torch.float", "torch.bfloat")))


def is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def span(gt=None, ge=None, lt=None, le=None) -> str:
    """The allowed range in words: " > 0", " >= 1", " in (0, 1)", " in [0, 0.5)"."""
    low, high = (ge, "[") if ge is not None else (gt, "(")
    top, close = (le, "]") if le is not None else (lt, ")")
    if low is not None and top is not None:
        return f" in {high}{low}, {top}{close}"
    if low is not None:
        return f" {'>=' if ge is not None else '>'} {low}"
    return f" {'<=' if le is not None else '<'} {top}" if top is not None else ""


def _inside(v: float, gt=None, ge=None, lt=None, le=None) -> bool:
    return not ((gt is not None and not v > gt) or (ge is not None and not v >= ge)
                or (lt is not None and not v < lt) or (le is not None and not v <= le))


def check_int(name: str, value: Any, *, ge: int | None = None, le: int | None = None, none: bool = False) -> None:
    """An integer count (bools and floats refused) in [ge, le]."""
    bounds = f" in {ge} … {le}" if ge is not None and le is not None else span(ge=ge, le=le)
    allowed = f"an integer{bounds}{' or None' if none else ''}"
    if none and value is None:
        return
    if not is_int(value):
        raise ArgumentTypeError(f"{name} must be {allowed}; got {describe(value)}")
    if not _inside(int(value), ge=ge, le=le):
        raise ValueError(f"{name} must be {allowed}; got {value!r}")


def check_float(name: str, value: Any, *, gt=None, ge=None, lt=None, le=None, finite: bool = True,
                none: bool = False) -> None:
    """A real number (ints accepted; str, None and bools refused), finite unless told, in range."""
    rng, alt = span(gt, ge, lt, le), " or None" if none else ""
    if none and value is None:
        return
    if not is_real(value):
        raise ArgumentTypeError(f"{name} must be a {'finite ' if finite else ''}number{rng}{alt}; got {describe(value)}")
    v = float(value)
    if math.isnan(v) or (finite and math.isinf(v)) or not _inside(v, gt, ge, lt, le):
        bounded = (gt is not None or ge is not None) and (lt is not None or le is not None)
        words = (rng or " a number") + (" and finite" if finite and not bounded else "")
        raise ValueError(f"{name} must be{words}{alt}; got {value!r}")


def check_bool(name: str, value: Any, *, none: bool = False) -> None:
    if not (is_bool(value) or (none and value is None)):
        raise ArgumentTypeError(f"{name} must be True or False{' or None' if none else ''}; got {describe(value)}")


def check_choice(name: str, value: Any, choices: Sequence) -> None:
    """One of ``choices`` (a value of another type than the choices is an ArgumentTypeError)."""
    if not any(type(value) is type(c) for c in choices):
        raise ArgumentTypeError(f"{name} must be one of {tuple(choices)}; got {describe(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}")


def check_callable(name: str, value: Any, what: str = "a function", *, none: bool = False) -> None:
    if not (callable(value) or (none and value is None)):
        raise ArgumentTypeError(f"{name} must be {what}{' or None' if none else ''}; got {describe(value)}")


def check_instance(name: str, value: Any, cls: type | tuple, what: str, *, none: bool = False) -> None:
    if not (isinstance(value, cls) or (none and value is None)):
        raise ArgumentTypeError(f"{name} must be {what}{' or None' if none else ''}; got {describe(value)}")


def check_texts(name: str, value: Any, *, nonempty: bool = True) -> list[str]:
    """A list (or tuple, or other sequence) of strings — not one string; returned as a list."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) and not hasattr(value, "__iter__"):
        raise ArgumentTypeError(f"{name} must be a list of strings; got {describe(value)}")
    items = list(value)
    wrong = [x for x in items if not isinstance(x, str)]
    if wrong:
        raise ArgumentTypeError(f"{name} must be a list of strings; it holds {describe(wrong[0])}")
    if nonempty and not items:
        raise ValueError(f"{name} must hold at least one string; got an empty list")
    return items


# -- tensors -------------------------------------------------------------------------------------
def _kind_ok(dtype, kind: str) -> bool:
    import torch
    if dtype.is_complex:
        return False
    return {"float": dtype.is_floating_point, "int": not dtype.is_floating_point and dtype != torch.bool,
            "real": dtype != torch.bool, "bool": dtype == torch.bool, "mask": True}[kind]


def check_tensor(name: str, x: Any, *, ndim: int | None = None, shape: Sequence[int] | None = None,
                 kind: str | None = "real", finite: bool = False, mask: Any = None, nonempty: bool = False,
                 dims: str = "", neg_inf: bool = False) -> Any:
    """A tensor of ``kind`` ("float", "int", "real", "bool", "mask"), with ``ndim`` dimensions or exactly
    ``shape`` (``dims`` names them in the message, e.g. "(B, T)"), non-empty, and finite where
    ``mask`` is set (everywhere without one; −inf allowed with ``neg_inf``). Returns ``x``."""
    import torch
    if not isinstance(x, torch.Tensor):
        raise ArgumentTypeError(f"{name} must be a torch.Tensor{' ' + dims if dims else ''}; got {describe(x)}")
    given = x
    if kind is not None and not _kind_ok(x.dtype, kind):
        raise ArgumentTypeError(f"{name} must be {KINDS[kind]} tensor; got dtype {x.dtype}")
    if (ndim is not None and x.dim() != ndim) or (shape is not None and tuple(x.shape) != tuple(shape)):
        want = dims or (str(tuple(shape)) if shape is not None else f"{ndim} dimensions")
        raise ValueError(f"{name} must have shape {want}; got {tuple(x.shape)}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} must not be empty; got shape {tuple(x.shape)}")
    if finite and x.dtype.is_floating_point:
        x = x.detach()
        bad = torch.isnan(x) | torch.isposinf(x) if neg_inf else ~torch.isfinite(x)
        if mask is not None:
            bad = bad & mask.bool()
        if bool(bad.any()):
            first = x[bad].flatten()[0].item()
            where = " at valid (unmasked) positions" if mask is not None else ""
            raise NonFiniteError(f"{name} must be finite{' or -inf' if neg_inf else ''}{where}; it has "
                                 f"{int(bad.sum())} such entries (e.g. {first}) of {x.numel()}")
    return given


def as_tensor(name: str, x: Any) -> Any:
    """``x`` as a tensor: a tensor as it is, a list, tuple or array of numbers converted (dtype kept);
    anything else (a string, None, a dict) refused naming ``name``."""
    import torch
    if isinstance(x, torch.Tensor):
        return x
    if x is None or isinstance(x, (str, bytes, dict, set)):
        raise ArgumentTypeError(f"{name} must be a tensor (or a list of numbers); got {describe(x)}")
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentTypeError(f"{name} must be a tensor (or a list of numbers); got {describe(x)}") from None


def check_mask(name: str, mask: Any, like: Any, like_name: str, *, nonempty: bool = False,
               finite: bool = False) -> Any:
    """A mask (bool, or 0/1 numbers) of exactly the shape of the tensor ``like`` (selecting an entry,
    with ``nonempty``; ``like`` finite where it is set, with ``finite``); returned as bool."""
    check_tensor(like_name, like)
    check_tensor(name, mask, kind="mask")
    if mask.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(mask.shape)} but {like_name} has shape {tuple(like.shape)}")
    valid = mask.bool()
    if nonempty and not bool(valid.any()):
        raise ValueError(f"{name} must select at least one entry of {like_name}; it selects none")
    if finite:
        check_tensor(like_name, like, finite=True, mask=valid)
    return valid


def check_ids(name: str, ids: Any, size: int, what: str = "ids") -> Any:
    """An integer tensor of indices in 0 … size − 1 (token ids, arm indices, completion indices)."""
    check_tensor(name, ids, kind="int")
    if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < size:
        raise ValueError(f"{name} must be {what} in 0 … {size - 1}; got {int(ids.min())} … {int(ids.max())}")
    return ids


def check_logprobs(name: str, x: Any, *, mask: Any = None, normalized: bool = False, dims: str = "",
                   ndim: int | None = None) -> Any:
    """Log-probabilities: a float tensor, no NaN or +inf, ≤ 0 up to ``LOGP_TOL`` (−inf allowed: an
    output of probability 0), only where ``mask`` is set; with ``normalized``, those of a whole
    distribution over the last dimension, log Σ exp = 0 up to ``NORM_TOL``."""
    import torch
    x = check_tensor(name, x, kind="float", ndim=ndim, dims=dims).detach()
    valid = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.bool()
    nan = torch.isnan(x) & valid
    if bool(nan.any()):
        raise NonFiniteError(f"{name} must be log-probabilities (<= 0); it has {int(nan.sum())} NaN entries")
    top = float(torch.where(valid, x, float("-inf")).max()) if x.numel() else float("-inf")
    if top > LOGP_TOL:
        hint = ""
        if float(torch.where(valid, x, 0.0).min()) >= 0 and top <= 1:
            hint = " — these look like probabilities: pass their log"
        raise ValueError(f"{name} must be log-probabilities, <= 0; got values up to {top:.4g}{hint}")
    if normalized:
        lse = torch.logsumexp(x.double(), dim=-1) if x.numel() else torch.full((1,), float("-inf"))
        worst = float(lse.abs().max()) if lse.numel() else 0.0
        if not worst <= NORM_TOL:
            raise ValueError(f"{name} must be the log-probabilities of a whole distribution over its last "
                             f"dimension (logsumexp 0); got a logsumexp {worst:.4g} away from 0")
    return x


def check_probs(name: str, p: Any, *, tol: float = 1e-5, dims: str = "") -> Any:
    """Probabilities: a float tensor in [0, 1] whose last dimension sums to 1 up to ``tol``."""
    check_tensor(name, p, kind="float", finite=True, nonempty=True, dims=dims)
    total = p.double().sum(-1)
    if bool((p < 0).any()) or bool((p > 1 + tol).any()) or not bool(((total - 1).abs() <= tol).all()):
        worst = float(total[(total - 1).abs().argmax()]) if total.dim() else float(total)
        raise ValueError(f"{name} must be probabilities, nonnegative and summing to 1; got sum {worst:.6g} "
                         f"and values in [{float(p.min()):.4g}, {float(p.max()):.4g}]")
    return p


def check_reward_output(out: Any, n: int, name: str = "reward_fn") -> Any:
    """What a reward function returned: ``n`` finite real numbers, one per completion, as a tensor of
    shape (n,) (a list is converted; the dtype is kept). Returns it as a tensor."""
    import torch
    if out is None or isinstance(out, (str, bytes, dict)):
        raise ArgumentTypeError(f"{name} must return a tensor of {n} rewards, one per completion; got {describe(out)}")
    try:
        rewards = torch.as_tensor(out)
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentTypeError(f"{name} must return a tensor of {n} rewards, one per completion; "
                                f"got {describe(out)}") from None
    check_tensor(f"{name}'s output", rewards, kind="mask")  # bool, int or float: a verifier's 0/1 too
    if tuple(rewards.shape) != (n,):
        raise ValueError(f"{name} must return shape ({n},), one reward per completion; got shape {tuple(rewards.shape)}")
    check_tensor(f"{name}'s output", rewards, finite=True)
    return rewards


def check_vocab(policy: Any, world: Any, name: str = "policy") -> None:
    """``policy`` is a torch module whose vocabulary is ``world``'s (checked before any forward pass)."""
    import torch
    check_instance(name, policy, torch.nn.Module, "a torch.nn.Module (a causal LM)")
    size = getattr(getattr(policy, "config", None), "vocab_size", None)
    if size is not None and size != len(world.vocab):
        raise ValueError(f"{name} has {size} logits per token (its vocabulary) but world {world.name!r} has "
                         f"{len(world.vocab)} tokens: "
                         f"it belongs to another world (build it for this one with models.build_policy(world) "
                         f"or models.pretrain_reference(world))")
