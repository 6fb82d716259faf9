"""Practice sets, one per chapter: questions answered in the notebook and checked at once.

``practice("04")`` returns the chapter's :class:`PracticeSet`; ``answer("04", "q1", 2.4)``
checks an answer and returns a :class:`~rlhf_lab.exercises.check.CheckResult` (with a hint when
it is wrong); ``solution("04", "q1")`` gives the worked answer.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from rlhf_lab.exercises import render
from rlhf_lab.exercises.result import CheckResult, enforce
from rlhf_lab.exercises.questions import Question
from rlhf_lab.exercises.sets_early import SETS as _EARLY
from rlhf_lab.exercises.sets_capstone import SETS as _CAPSTONE
from rlhf_lab.exercises.sets_late import SETS as _LATE
from rlhf_lab.exercises.sets_sft import SETS as _SFT
from rlhf_lab.exercises.sets_trl import SETS as _TRL

_SETS = {**_EARLY, **_SFT, **_LATE, **_CAPSTONE, **_TRL}
CHAPTERS: tuple[str, ...] = tuple(sorted(_SETS))


@dataclass(frozen=True)
class PracticeSet:
    """The practice questions of one chapter; renders as a list in a notebook."""

    chapter: str
    title: str
    questions: tuple[Question, ...]

    def question(self, qid: str) -> Question:
        for q in self.questions:
            if q.id == qid:
                return q
        raise ValueError(f"practice set {self.chapter} has no question {qid!r}; its questions "
                         f"are: {', '.join(q.id for q in self.questions)}")

    def answer(self, qid: str, value: object) -> CheckResult:
        return answer(self.chapter, qid, value)

    def solution(self, qid: str) -> str:
        return solution(self.chapter, qid)

    def __str__(self) -> str:
        lines = [f"Practice set {self.chapter} · {self.title}"]
        for q in self.questions:
            lines.append(f"{q.id} ({q.kind}) {q.text}")
            lines += [f"    ({chr(97 + i)}) {c}" for i, c in enumerate(q.choices)
                      if q.kind == "choice"]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return render.practice_html(self.chapter, self.title, self.questions)


def _chapter_key(chapter: object) -> str:
    """ "2", 2, "02" and "02_policy_gradient" all name chapter "02"; "01b_sft" names "01b"."""
    text = str(chapter).strip()
    digits = text.split("_", 1)[0]
    key = digits.zfill(2) if digits.isdigit() else digits
    if key not in _SETS:
        raise ValueError(f"no practice set for chapter {chapter!r}; there are sets for chapters "
                         f"{', '.join(CHAPTERS)}")
    return key


def practice(chapter: str) -> PracticeSet:
    """The practice set of ``chapter`` (``"01"``, ``"01b"``, ``"02"`` …)."""
    key = _chapter_key(chapter)
    title, questions = _SETS[key]
    return PracticeSet(key, title, questions)


def solution(chapter: str, qid: str) -> str:
    """The worked answer of question ``qid`` of ``chapter``'s practice set."""
    q = practice(chapter).question(qid)
    return f"Answer: {_show(q)}\n{q.worked}"


def answer(chapter: str, qid: str, value: object) -> CheckResult:
    """Check ``value`` as the answer to question ``qid`` of ``chapter``'s practice set.

    Numeric questions take a number (a one-element tensor is fine), choice questions a letter,
    curve questions a dict ``{curve: label}`` or a list of labels in the order of the curves.
    ``None``, the placeholder of a chapter's answer cell, is "not answered yet": neither right
    nor wrong (``passed`` False, ``pending`` True). In the instructor edition an answer that is
    not right, or not given, raises ``AssertionError``.
    """
    return enforce(_answer(practice(chapter), qid, value))


def _answer(ps: PracticeSet, qid: str, value: object) -> CheckResult:
    q = ps.question(qid)
    name = f"{ps.chapter}/{q.id}"
    if value is None:
        return CheckResult(False, f"{name}: not answered yet. Replace None with your answer "
                                  f"({_FORM[q.kind]}) and run the cell again.", pending=True)
    parsed, problem = _parse(q, value)
    if problem:
        return CheckResult(False, f"{name}: {problem}")
    if _matches(q, q.answer, parsed):
        return CheckResult(True, f"{name}: correct — {_show(q)}.")
    hint = next((h for trap, h in q.traps if _matches(q, trap, parsed)), None) or _near(q, parsed) or q.hint
    return CheckResult(False, f"{name}: {_shown(q, parsed)} is not right.\nhint: {hint}", hint)


def _near(q: Question, value: object) -> str:
    """A hint for a numeric answer that is right but for its precision or its units, else ""."""
    if q.kind != "numeric":
        return ""
    target = float(q.answer)
    if q.tol and abs(value - target) <= max(10 * q.tol, 0.01 * abs(target)):
        return f"close: the answer is wanted to within ±{q.tol:g}; give more decimals."
    percent = math.isclose(value, 100 * target, rel_tol=0.0, abs_tol=100 * (q.tol or 1e-9))
    if 0 < abs(target) <= 1 and percent:
        return f"that looks like a percentage: give it as a fraction ({value:g} % = {value / 100:g})."
    return ""


_FORM = {"numeric": "a number", "choice": 'a letter such as "b"',
         "curves": 'a dict such as {"A": label, ...}'}


def _parse(q: Question, value: object) -> tuple[object, str]:
    """The answer in the question's terms, or an explanation of why it cannot be read."""
    if q.kind == "numeric":
        if not isinstance(value, numbers.Real) and getattr(value, "size", None) is not None:
            try:  # a one-element tensor or array
                value = value.item()
            except (TypeError, ValueError, RuntimeError):
                pass
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None, f"answer with a number, not {type(value).__name__}."
        return float(value), ""
    if q.kind == "choice":
        letters = [chr(97 + i) for i in range(len(q.choices))]
        text = str(value).strip().strip("()").lower() if isinstance(value, str) else None
        if text in letters:
            return text, ""
        for letter, c in zip(letters, q.choices):
            if text == c.lower():
                return letter, ""
        return None, f"answer with one of the letters {', '.join(letters)}."
    labels = {label.lower(): label for label in q.choices}
    if isinstance(value, dict):
        keys = {str(k).strip().lower(): v for k, v in value.items()}
        if set(keys) != {c.lower() for c in q.curves}:
            return None, f"give a label for each curve: {', '.join(q.curves)}."
        value = [keys[c.lower()] for c in q.curves]
    if not isinstance(value, (list, tuple)) or len(value) != len(q.curves):
        return None, (f"answer with a dict {{curve: label}} for the curves {', '.join(q.curves)}"
                      f" (labels: {', '.join(q.choices)}).")
    chosen = [labels.get(str(v).strip().lower()) for v in value]
    if None in chosen:
        return None, f"the labels are: {', '.join(q.choices)}."
    return tuple(chosen), ""


def _matches(q: Question, target: object, parsed: object) -> bool:
    if q.kind == "numeric":
        return math.isclose(parsed, float(target), rel_tol=0.0, abs_tol=q.tol or 1e-9)
    return parsed == target


def _show(q: Question) -> str:
    return _shown(q, q.answer)


def _shown(q: Question, value: object) -> str:
    if q.kind == "numeric":
        return f"{value:.6g}"
    if q.kind == "choice":
        return f"({value}) {q.choices[ord(value) - 97]}"
    return ", ".join(f"{c} = {label}" for c, label in zip(q.curves, value))
