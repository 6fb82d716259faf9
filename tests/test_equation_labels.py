"""Every equation the package cites by label is an equation of some chapter; nothing cites by a
number ("eq. 5.1") that the book does not print (its numbers run through the whole book)."""

import re
from pathlib import Path

import rlhf_lab
from rlhf_lab import book

PACKAGE = Path(rlhf_lab.__file__).parent


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_equation_label_cited_in_code_is_in_a_chapter():
    labels = book.equation_numbers()
    missing = sorted({f"{m.group(0)} ({path.relative_to(PACKAGE.parent)})"
                      for path in _sources()
                      for m in re.finditer(r"\beq-[a-z0-9-]+[a-z0-9]", path.read_text())
                      if m.group(0) not in labels})
    assert missing == [], "cited in rlhf_lab but labelled in no chapter:\n" + "\n".join(missing)


def test_no_numbered_equation_references_in_code():
    numbered = [f"{path.relative_to(PACKAGE.parent)}: {m.group(0)}"
                for path in _sources() for m in re.finditer(r"\beq\. ?\d+(\.\d+)?", path.read_text())]
    assert numbered == [], "cite equations by label (eq-…), not by number:\n" + "\n".join(numbered)


def test_the_labels_of_this_test_are_found():
    """The scan above can fail: it finds the labels the chapters define."""
    labels = book.equation_numbers()
    assert {"eq-kl-optimum", "eq-grpo-adv", "eq-dpo"} <= set(labels)
    assert len(labels) >= 30


def test_the_practice_sets_equation_numbers_are_the_books():
    """Practice questions show equations by the number the book prints (Colab installs the
    package without the chapters, so the numbers are written out in rlhf_lab)."""
    from rlhf_lab.exercises import equations

    numbers = {label: n for label, (_, n) in book.equation_numbers().items()}
    assert equations.NUMBERS == numbers, (
        "a chapter added or moved a labelled equation; set NUMBERS in "
        f"rlhf_lab/exercises/equations.py to:\n{numbers}")


def test_practice_sets_show_no_equation_label():
    from rlhf_lab import exercises
    from rlhf_lab.exercises.practice import CHAPTERS

    shown = []
    for chapter in CHAPTERS:
        for q in exercises.practice(chapter).questions:
            texts = [q.text, q.hint, q.worked, *q.choices, *(hint for _, hint in q.traps)]
            shown += [f"{chapter}/{q.id}: {m.group(0)}" for t in texts for m in re.finditer(r"\beq-[a-z]", t)]
    assert shown == [], "labels shown to students instead of the book's numbers:\n" + "\n".join(shown)
    q1 = exercises.practice("01").question("q1")
    assert f"(eq. {book.equation_numbers()['eq-bt'][1]})" in q1.text  # the scan reads what is rendered
