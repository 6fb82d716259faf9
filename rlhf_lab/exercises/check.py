"""``check(problem, fn)``: run a student's function on seeded cases and say what differs.

Every case compares the result with rlhf_lab's own function (wrapped to the exercise's
signature), after checking that function against the formula written out in
:mod:`rlhf_lab.exercises.formulas`. A failure names the case, prints its (small) input, the
expected and the returned value, what differs (return type, shape, dtype, nan, sign, scale,
padding, value or gradient) and a hint for the mistake it recognises. A function that raises is
a failed check showing the error and the line of the student's code that raised it.
"""

from __future__ import annotations

import os
import sysconfig
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rlhf_lab.exercises.equations import cite
from rlhf_lab.exercises.problems import Case, Problem, get_problem
from rlhf_lab.exercises.result import CheckResult, enforce

RTOL, ATOL = 1e-4, 1e-5  # float32: torch.allclose(got, expected, rtol, atol)
# library code (the standard library, installed packages, rlhf_lab) is not the student's code
_LIBRARY = tuple(
    os.path.realpath(p) + os.sep
    for p in {*(sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")),
              os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
              os.path.dirname(os.path.abspath(torch.__file__))}
)


@dataclass(frozen=True)
class _Failure:
    what: str
    details: tuple[str, ...]
    hint: str = ""


def check(problem: str, fn: Callable) -> CheckResult:
    """Check ``fn`` against the coding problem ``problem`` on seeded cases.

    Args:
        problem: one of :data:`rlhf_lab.exercises.PROBLEMS`, e.g. ``"dpo_loss"``.
        fn: the student's function, called with the problem's arguments in order.

    Returns:
        A :class:`CheckResult`; in the student edition it never raises for a wrong or raising
        ``fn`` (a stub that still raises ``NotImplementedError`` gives a neutral "not attempted yet"
        result, ``pending``, not a red one).

    Raises:
        ValueError: if ``problem`` is not a known problem name.
        RuntimeError: if rlhf_lab's reference disagrees with the problem's formula (a bug in the
            package or the checker, not in the student's code).
        AssertionError: in the instructor edition (``RLHF_LAB_EDITION=instructor``), if the
            check fails: there ``fn`` is the reference solution.
    """
    return enforce(_check(get_problem(problem), fn))


def _check(spec: Problem, fn: Callable) -> CheckResult:
    if not callable(fn):
        return CheckResult(False, f"{spec.name}: expected a function, got {type(fn).__name__}.")
    cases = spec.cases()
    if _not_attempted(spec, cases[0], fn):
        return CheckResult(False, f"{spec.name}: not attempted yet. Replace `raise NotImplementedError` "
                                  f"in the cell above with your code and run both cells again; the "
                                  f"check then runs {len(cases)} cases.", pending=True)
    failures = [(case, failure) for case in cases if (failure := _run_case(spec, case, fn))]
    if not failures:
        names = "; ".join(case.name for case in cases)
        return CheckResult(True, f"{spec.name} (chapter {spec.chapter}): all {len(cases)} "
                                 f"cases pass ({names}).")
    case, failure = failures[0]
    lines = [f"{spec.name}: {len(failures)} of {len(cases)} cases fail"
             + (":" if len(failures) > 1 else ".")]
    lines += [f"  – {c.name}" for c, _ in failures] if len(failures) > 1 else []
    lines += [f"First failing case: {case.name}", "  input:"]
    width = max(len(k) for k in case.inputs)
    lines += [f"    {k:<{width}} = {fmt(v)}" for k, v in case.inputs.items()]
    lines += [f"  {line}" for line in failure.details]
    lines.append(f"  what differs: {failure.what}")
    hint = cite(failure.hint)  # a hint cites equations by label; the student sees the book's numbers
    if hint:
        lines.append(f"hint: {hint}")
    return CheckResult(False, "\n".join(lines), hint)


def fmt(x: object) -> str:
    """A short printable form of a case input or result (6 significant digits)."""
    if isinstance(x, Tensor):
        x = x.detach()
        dtype = "" if x.dtype in (torch.float32, torch.bool) else f" ({x.dtype})".replace("torch.", "")
        if x.dtype == torch.bool:
            x = x.int()
        return _nested(x) + dtype
    if isinstance(x, float):
        return _number(x)
    return repr(x)


def _number(v: float) -> str:
    text = f"{v:.6g}"
    return text if any(c in text for c in ".eni") else text + ".0"  # 2.0, not 2: a float


def _nested(x: Tensor) -> str:
    if x.dim() == 0:
        v = x.item()
        return _number(v) if isinstance(v, float) else str(v)
    return "[" + ", ".join(_nested(v) for v in x) + "]"


def _fresh(spec: Problem, case: Case, grad: bool) -> list[object]:
    """The case's inputs in argument order, tensors cloned (a student may modify them)."""
    out = []
    for name in spec.args:
        value = case.inputs[name]
        if isinstance(value, Tensor):
            value = value.detach().clone().requires_grad_(grad and name in spec.grad_args)
        out.append(value)
    return out


def _expected(spec: Problem, case: Case) -> tuple[Tensor, tuple[Tensor, ...] | None]:
    args = _fresh(spec, case, case.grad)
    expected = spec.package(*args)
    direct = spec.formula(*_fresh(spec, case, False))
    if expected.shape != direct.shape or not torch.allclose(
            expected.detach().double(), direct, rtol=RTOL, atol=ATOL):
        raise RuntimeError(
            f"checker inconsistency in {spec.name!r}, case {case.name!r}: rlhf_lab gives "
            f"{fmt(expected)} but the problem's formula gives {fmt(direct)}. This is a bug in "
            "rlhf_lab or its exercises, not in your code; please report it."
        )
    grads = None
    if case.grad:
        leaves = [a for name, a in zip(spec.args, args) if name in spec.grad_args]
        grads = torch.autograd.grad(expected.sum(), leaves)
    return expected.detach(), grads


def _run_case(spec: Problem, case: Case, fn: Callable) -> _Failure | None:
    expected, grads = _expected(spec, case)
    args = _fresh(spec, case, case.grad)
    try:
        got = fn(*args)
    except Exception as exc:  # a student's bug is a failed check, never a crash
        return _error(exc, case)
    failure = _compare(spec, case, got, expected)
    if failure is None and case.grad:
        leaves = [a for name, a in zip(spec.args, args) if name in spec.grad_args]
        failure = _compare_grads(spec, got, leaves, grads)
    return failure


def _not_attempted(spec: Problem, case: Case, fn: Callable) -> bool:
    """True for an untouched stub: it raises NotImplementedError (a neutral result, not a red one)."""
    try:
        fn(*_fresh(spec, case, False))
    except NotImplementedError:
        return True
    except Exception:  # any other error is the student's attempt: reported case by case
        return False
    return False


def _error(exc: Exception, case: Case) -> _Failure:
    details = [f"your function raised {type(exc).__name__}" + (f": {exc}" if str(exc) else "")]
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not os.path.realpath(f.filename).startswith(_LIBRARY)
              and os.path.abspath(f.filename) != os.path.abspath(__file__)]
    if frames:
        f = frames[-1]
        details.append(f'at "{f.filename}", line {f.lineno}, in {f.name}:')
        if f.line:
            details.append(f"    {f.line}")
    if isinstance(exc, NotImplementedError):
        hint = "the stub still raises NotImplementedError: replace that line with your code."
    else:
        hint = case.hint
    return _Failure("your function raised an error instead of returning a result",
                    tuple(details), hint)


def _compare(spec: Problem, case: Case, got: object, expected: Tensor) -> _Failure | None:
    if isinstance(got, (tuple, list)):
        return _Failure(
            "return type", (f"expected a tensor, got a {type(got).__name__} of {len(got)} items",),
            f"return {spec.returns} as one tensor"
            + (". rlhf_lab's losses return (loss, stats); this exercise returns the loss alone."
               if spec.returns == "the loss" else ", not a list or a tuple."))
    if not isinstance(got, Tensor):
        return _Failure("return type", (f"expected a torch.Tensor, got {type(got).__name__}",),
                        "return a torch tensor (not a Python number from .item(), not numpy).")
    if not got.dtype.is_floating_point:
        return _Failure("dtype", (f"expected a floating-point tensor, got {got.dtype}",),
                        "convert integer inputs with .float() before dividing or averaging.")
    if got.shape != expected.shape:
        return _Failure("shape", (f"expected shape {tuple(expected.shape)}, "
                                  f"got shape {tuple(got.shape)}",), _shape_hint(expected, got))
    g, e = got.detach().double(), expected.double()
    close = torch.isclose(g, e, rtol=RTOL, atol=ATOL)
    if bool(close.all()):
        return None
    details = [f"expected: {fmt(expected)}", f"got:      {fmt(got)}"]
    if e.dim() > 0:
        gap = torch.where(close, 0.0, (g - e).abs().nan_to_num(float("inf")))
        idx = tuple(int(i) for i in torch.unravel_index(gap.argmax(), e.shape))
        details.append(f"largest difference at index {idx}: expected {e[idx].item():.6g}, "
                       f"got {g[idx].item():.6g}")
    if bool((~torch.isfinite(g) & torch.isfinite(e)).any()):
        return _Failure("nan/inf: your result is not finite where the expected one is",
                        tuple(details), case.hint or "look for log 0, 0/0 or 0 · inf.")
    what, hint = _diagnose(spec, case, g, e, close)
    return _Failure(what, tuple(details), hint or case.hint or
                    "compare your code with the formula in the docstring, term by term, on this "
                    "small input.")


def _diagnose(spec: Problem, case: Case, g: Tensor, e: Tensor, close: Tensor) -> tuple[str, str]:
    """What differs, and a hint when the result matches a known mistake."""
    mask = case.inputs.get("mask")
    if isinstance(mask, Tensor) and mask.shape == g.shape and bool(close[mask.bool()].all()):
        return ("padding: the valid positions are right, the padded ones are not",
                "padded positions must be 0.")
    if e.abs().max() > ATOL and torch.allclose(g, -e, rtol=RTOL, atol=ATOL):
        return "sign: your result is the negative of the expected one", spec.sign_hint
    for mistake in spec.mistakes:
        try:
            wrong = mistake.fn(*_fresh(spec, case, False)).double()
        except Exception:  # a mistake that does not apply to this input
            continue
        if wrong.shape == g.shape and torch.allclose(g, wrong, rtol=RTOL, atol=ATOL):
            return "the values", mistake.hint
    if e.dim() == 0 and abs(e.item()) > ATOL:
        ratio = g.item() / e.item()
        for count in _counts(case):
            if abs(ratio - count) < 1e-3 * count:
                return (f"scale: your result is {count} times the expected one",
                        f"it looks like a sum where the problem asks for a mean (over {count} "
                        "terms): divide by the number of terms, or use .mean().")
    return "the values", ""


def _counts(case: Case) -> list[int]:
    """Numbers of terms a sum might have run over instead of a mean: sizes and valid tokens."""
    counts = set()
    for value in case.inputs.values():
        if isinstance(value, Tensor) and value.dim() > 0:
            counts.update(value.shape)
            counts.add(value.numel())
    mask = case.inputs.get("mask")
    if isinstance(mask, Tensor):
        counts.add(int(mask.bool().sum()))
    return sorted(c for c in counts if c > 1)


def _shape_hint(expected: Tensor, got: Tensor) -> str:
    if expected.dim() == 0:
        return "return a scalar tensor (shape ()): the mean over the batch, e.g. with .mean()."
    if got.dim() == 0:
        return (f"return one value per element, shape {tuple(expected.shape)}, not a reduction "
                "such as their mean.")
    return f"the result must have shape {tuple(expected.shape)}, like the inputs."


def _compare_grads(spec: Problem, got: Tensor, leaves: list[Tensor],
                   expected: tuple[Tensor, ...] | None) -> _Failure | None:
    if not got.requires_grad:
        return _Failure("gradient: the result does not carry a gradient",
                        (f"the inputs {', '.join(spec.grad_args)} require grad; the result "
                         "does not",),
                        "keep the computation in torch: .item(), float(), .detach(), numpy or "
                        "torch.tensor(...) cut the graph.")
    student = torch.autograd.grad(got.sum(), leaves, allow_unused=True)
    for name, s, e in zip(spec.grad_args, student, expected or ()):
        s = torch.zeros_like(e) if s is None else s
        if not torch.allclose(s.double(), e.double(), rtol=RTOL, atol=ATOL):
            return _Failure(
                f"gradient with respect to {name} (the value itself is right)",
                (f"expected d/d{name}: {fmt(e)}", f"got d/d{name}:      {fmt(s)}"),
                "is something detached that should carry the gradient (or the reverse)? "
                "Quantities the formula treats as fixed — rewards, advantages, reference and "
                "old log-probs — carry none; the policy's log-probs do.")
    return None
