"""What a check or an answer returns: :class:`CheckResult`, green, red or (an answer not given
yet) neutral in a notebook; and :func:`enforce`, which makes a result that did not pass raise
in the instructor edition (``RLHF_LAB_EDITION=instructor``, :mod:`rlhf_lab.editions`)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_lab import editions
from rlhf_lab.exercises import render


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a check: ``passed``, and a ``message`` saying what was checked or what
    differs (with the hint, if any, on its last line). ``pending`` marks a practice answer not
    given yet (``None``): neither right nor wrong. Renders green, red or grey in a notebook."""

    passed: bool
    message: str
    hint: str = ""
    pending: bool = False

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return ("… " if self.pending else "✓ " if self.passed else "✗ ") + self.message

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return render.result_html(self.passed, self.message, pending=self.pending)


def enforce(result: CheckResult) -> CheckResult:
    """``result`` itself; in the instructor edition, where the solutions are filled in, a result
    that did not pass (a failed check, a wrong or missing answer) raises ``AssertionError``
    instead, so that an executed chapter fails."""
    if not result.passed and editions.is_instructor():
        raise AssertionError(f"{editions.VARIABLE}=instructor: every check and answer must "
                             f"pass, and this one did not:\n{result}")
    return result
