"""The workbook's two editions, chosen with ``RLHF_LAB_EDITION``.

- ``student`` (the default): every coding problem is a stub (``raise NotImplementedError``) with
  its check cell, which shows a red "not yet" box; every practice answer cell holds ``None`` and
  shows "not answered yet". The chapters, the Colab notebooks and ``make book`` are this edition.
- ``instructor``: the stubs are replaced by the reference solutions and the practice answers by
  the reference answers (:func:`rlhf_lab.exercises.instructor.instructor_notebook`), and in this
  edition a check or answer that does not pass raises ``AssertionError``, so executing a chapter
  proves every solution right. ``make book-instructor`` builds it into
  ``book/_build/instructor/html``.

Cells are found by their tags: ``exercise`` on a stub cell, ``practice`` on an answer cell.
"""

from __future__ import annotations

import os
from pathlib import Path

VARIABLE = "RLHF_LAB_EDITION"
EDITIONS = ("student", "instructor")
EXERCISE_TAG = "exercise"  # a coding problem's stub cell
PRACTICE_TAG = "practice"  # a practice question's answer cell


def edition(name: str | None = None) -> str:
    """The edition ``name``, else the one named by ``RLHF_LAB_EDITION``, else ``"student"``.

    Raises:
        ValueError: the name is not ``student`` or ``instructor``; the message names the
            variable and the allowed values.
    """
    source = "edition"
    if name is None:
        name, source = os.environ.get(VARIABLE, "").strip() or "student", VARIABLE
    key = str(name).strip().lower()
    if key not in EDITIONS:
        raise ValueError(f"{source}={name!r} is not an edition of the workbook; "
                         f"allowed: {', '.join(EDITIONS)}")
    return key


def is_instructor() -> bool:
    """True in the instructor edition, where every check and answer must pass."""
    return edition() == "instructor"


def run_name(scale: str, edition_name: str) -> str:
    """The name of a set of executed chapters: the scale, with ``-instructor`` appended in that
    edition (``book/_build/executed/ci`` and ``book/_build/executed/ci-instructor``)."""
    key = edition(edition_name)
    return scale if key == "student" else f"{scale}-{key}"


def site_folder(build: Path, edition_name: str) -> Path:
    """Where a site goes under a build folder: ``html``, or ``instructor/html``, so that both
    editions can exist side by side."""
    key = edition(edition_name)
    return build / "html" if key == "student" else build / key / "html"
