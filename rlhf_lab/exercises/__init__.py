"""Practice sets and coding problems with instant checks.

Coding problems. A chapter shows a stub; write the function and check it::

    from rlhf_lab import exercises

    print(exercises.stub_source("dpo_loss"))  # the signature, the shapes, the formula

    def dpo_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, beta):
        ...

    exercises.check("dpo_loss", dpo_loss)

The check runs your function on a few small seeded inputs — each chosen to catch a real mistake
(a ratio outside the clip, garbage at padded positions, an integer reward, ...) — and shows a
green box when every case passes. Otherwise a red box names the failing case, prints its input,
the expected and your result, says what differs (shape, sign, scale, padding, value, gradient)
and gives a hint. If your function raises, you see the error and the line that raised it.
``exercises.PROBLEMS`` lists the nine problems. A chapter's stub cell is tagged ``exercise`` and
holds exactly ``stub_source(name)``; the instructor edition (``RLHF_LAB_EDITION=instructor``,
:mod:`rlhf_lab.editions`) shows ``solution_source(name)`` instead
(:func:`rlhf_lab.exercises.instructor.instructor_notebook`), and there a check that fails raises
``AssertionError``.

Practice sets. One per chapter, 01–09::

    ps = exercises.practice("04")   # displays the questions
    exercises.answer("04", "q1", 2.4)   # checked at once, with a hint when wrong
    exercises.solution("04", "q1")      # the worked answer, when you want it

Numeric questions state their tolerance; choice questions take a letter (``"b"``); "which curve
is which" questions take a dict such as ``{"A": "std", "B": "bias"}``. A chapter's answer cells
(tagged ``practice``) hold ``exercises.answer("04", "q1", None)``: ``None`` shows a grey "not
answered yet", neither right nor wrong; the instructor edition fills in the reference answers.
"""

from rlhf_lab.exercises.check import check
from rlhf_lab.exercises.practice import CHAPTERS, PracticeSet, answer, practice, solution
from rlhf_lab.exercises.problems import PROBLEMS
from rlhf_lab.exercises.result import CheckResult
from rlhf_lab.exercises.sources import solution_source, stub_source

__all__ = [
    "CHAPTERS",
    "PROBLEMS",
    "CheckResult",
    "PracticeSet",
    "answer",
    "check",
    "practice",
    "solution",
    "solution_source",
    "stub_source",
]
