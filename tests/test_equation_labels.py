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
