"""The instructor edition of a chapter notebook (see :mod:`rlhf_lab.editions`).

A chapter's stub cell is tagged ``exercise`` and holds exactly ``stub_source(name)``; its
answer cells are tagged ``practice`` and hold ``exercises.answer("NN", "qK", None)``.
:func:`instructor_notebook` swaps each stub for ``solution_source(name)`` and each ``None`` for
the reference answer, after printing the worked solution. :func:`outcomes` reads what the checks
and answers of an executed notebook showed.
"""

from __future__ import annotations

import copy
import math
import re

from rlhf_lab.editions import EXERCISE_TAG, PRACTICE_TAG
from rlhf_lab.exercises.practice import practice
from rlhf_lab.exercises.problems import PROBLEMS
from rlhf_lab.exercises.questions import Question
from rlhf_lab.exercises.sources import solution_source, stub_source

_DEF = re.compile(r"^def (\w+)\(", re.M)
ANSWER_CELL = re.compile(
    r'^exercises\.answer\("(?P<chapter>\d\d[a-z]?)", "(?P<qid>q\d+)", None\)'
    r"  # replace None with your answer$")
# what a CheckResult's text starts with (its __str__): passed, failed, not answered yet
_MARKS = {"✓": "passed", "✗": "failed", "…": "pending"}


def tagged(cell, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def exercise_name(cell) -> str:
    """The coding problem whose stub ``cell`` (tagged ``exercise``) holds.

    Raises:
        ValueError: the cell is not exactly ``stub_source(name)`` of a problem.
    """
    source = cell["source"].strip()
    names = [n for n in _DEF.findall(source) if n in PROBLEMS]
    if len(names) != 1 or source != stub_source(names[0]).strip():
        raise ValueError(f"a cell tagged {EXERCISE_TAG!r} must hold exactly "
                         f"exercises.stub_source(name) of one of {', '.join(PROBLEMS)}; "
                         f"this one starts {source[:80]!r}")
    return names[0]


def practice_question(cell) -> tuple[str, str]:
    """(chapter, question id) of an answer cell (tagged ``practice``).

    Raises:
        ValueError: the cell is not ``exercises.answer("NN", "qK", None)  # replace None with
            your answer``, or names a question that does not exist.
    """
    m = ANSWER_CELL.match(cell["source"].strip())
    if m is None:
        raise ValueError(f"a cell tagged {PRACTICE_TAG!r} must be one line, "
                         f'exercises.answer("NN", "qK", None)  # replace None with your answer; '
                         f"got {cell['source'][:80]!r}")
    practice(m["chapter"]).question(m["qid"])  # ValueError for an unknown question
    return m["chapter"], m["qid"]


def answer_literal(q: Question) -> str:
    """The reference answer of ``q`` as Python source: the shortest number that is right within
    the question's tolerance, a quoted letter, or a dict of curve labels."""
    if q.kind == "choice":
        return f'"{q.answer}"'
    if q.kind == "curves":
        return "{" + ", ".join(f'"{c}": "{label}"' for c, label in zip(q.curves, q.answer)) + "}"
    for digits in (4, 6, 8, 17):
        text = f"{q.answer:.{digits}g}"
        if math.isclose(float(text), q.answer, rel_tol=0.0, abs_tol=(q.tol or 1e-9) / 10):
            return text if any(c in text for c in ".e") else f"{text}.0"
    return repr(q.answer)


def solved_cell_source(cell) -> str:
    """The instructor's source of a tagged cell: the solution, or the filled-in answer."""
    if tagged(cell, EXERCISE_TAG):
        return solution_source(exercise_name(cell)).rstrip("\n")
    chapter, qid = practice_question(cell)
    value = answer_literal(practice(chapter).question(qid))
    return (f'print(exercises.solution("{chapter}", "{qid}"))\n'
            f'exercises.answer("{chapter}", "{qid}", {value})')


def instructor_notebook(nb):
    """A copy of the student notebook ``nb`` (nbformat) with every cell tagged ``exercise``
    holding its solution and every cell tagged ``practice`` its reference answer; the copy's
    metadata says ``rlhf_lab: {edition: instructor}``.

    Raises:
        ValueError: a tagged cell is not in the form the student edition uses.
    """
    out = copy.deepcopy(nb)
    for cell in out.cells:
        if cell.cell_type == "code" and (tagged(cell, EXERCISE_TAG) or tagged(cell, PRACTICE_TAG)):
            cell.source = solved_cell_source(cell)
    out.metadata["rlhf_lab"] = {"edition": "instructor"}
    return out


def outcomes(nb) -> list[tuple[str, str]]:
    """Every check and answer shown in an executed notebook: (the call's first line,
    ``"passed"``, ``"failed"`` or ``"pending"``), read from the CheckResult's text output."""
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code" or not re.search(r"exercises\.(check|answer)\(", cell.source):
            continue
        call = next(line for line in cell.source.splitlines()
                    if re.match(r"exercises\.(check|answer)\(", line))
        texts = [o["data"]["text/plain"] for o in cell.get("outputs", [])
                 if o.get("output_type") == "execute_result" and "text/plain" in o.get("data", {})]
        found.append((call, _MARKS.get(texts[-1][:1], "missing") if texts else "missing"))
    return found
