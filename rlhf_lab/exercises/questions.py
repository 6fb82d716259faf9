"""A practice question: its text, kind and choices, and (hidden from its repr) the answer, the
tolerance, a hint for a wrong answer and the worked solution."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf_lab.exercises.equations import cite

KINDS = ("numeric", "choice", "curves")


@dataclass(frozen=True)
class Question:
    """One question of a practice set.

    Its text, hints and worked answer cite equations by label (``eq-gae``); the constructors
    below show them with the book's numbers (``equations.cite``).

    ``kind`` is ``"numeric"`` (answer a number; the tolerance is stated in the text),
    ``"choice"`` (answer a letter, ``"a"`` for the first choice) or ``"curves"`` ("which curve is
    which": answer a dict ``{curve: label}`` or a list of labels in the order of ``curves``).
    """

    id: str
    text: str
    kind: str
    choices: tuple[str, ...] = ()
    curves: tuple[str, ...] = ()
    answer: object = field(default=None, repr=False)
    tol: float = field(default=0.0, repr=False)
    hint: str = field(default="", repr=False)
    worked: str = field(default="", repr=False)
    # wrong answers a student plausibly gives, each with its own hint
    traps: tuple[tuple[object, str], ...] = field(default=(), repr=False)


def numeric(qid: str, text: str, answer: float, tol: float, hint: str, worked: str,
            traps: tuple[tuple[float, str], ...] = ()) -> Question:
    """A numeric question; ``tol`` 0 asks for an exact integer. The tolerance joins the text."""
    suffix = " (Give the exact integer.)" if tol == 0 else f" (Answer to within ±{tol:g}.)"
    return Question(qid, cite(text + suffix), "numeric", answer=float(answer), tol=tol,
                    hint=cite(hint), worked=cite(worked), traps=_cited(traps))


def choice(qid: str, text: str, choices: tuple[str, ...], answer: str, hint: str, worked: str,
           traps: tuple[tuple[str, str], ...] = ()) -> Question:
    """A multiple-choice question; ``answer`` is a letter."""
    text += " (Answer with a letter.)"
    return Question(qid, cite(text), "choice", choices=tuple(map(cite, choices)), answer=answer,
                    hint=cite(hint), worked=cite(worked), traps=_cited(traps))


def curves(qid: str, text: str, names: tuple[str, ...], labels: tuple[str, ...],
           answer: tuple[str, ...], hint: str, worked: str) -> Question:
    """A "which curve is which" question: ``answer[i]`` is the label of curve ``names[i]``."""
    example = ", ".join(f'"{n}": <label>' for n in names)  # no label filled in: no answer given away
    text += f" (Answer with a dict {{{example}}}, labels from: {', '.join(labels)}.)"
    return Question(qid, cite(text), "curves", choices=labels, curves=names, answer=answer,
                    hint=cite(hint), worked=cite(worked))


def _cited(traps: tuple[tuple[object, str], ...]) -> tuple[tuple[object, str], ...]:
    return tuple((value, cite(hint)) for value, hint in traps)
