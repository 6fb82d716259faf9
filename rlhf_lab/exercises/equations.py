"""The book's equation numbers, for the practice sets' text: a question cites an equation by its
label (``eq-gae``) and is shown with the number the chapter prints beside it.

The numbers run through the whole book in table-of-contents order (``rlhf_lab.myst.number_equations``
computes them from the chapters). They are written out here because Colab installs the package
without the chapters; tests/test_equation_labels.py fails, printing the new table, when a chapter
adds or moves a labelled equation.
"""

from __future__ import annotations

import re

NUMBERS: dict[str, int] = {
    "eq-kl": 1, "eq-entropy": 2, "eq-kl-objective": 3, "eq-kl-optimum": 4, "eq-bt": 5,
    "eq-bt-loglik": 6, "eq-bt-fit": 7, "eq-sft-loss": 8, "eq-pg-objective": 9,
    "eq-log-derivative": 10, "eq-reinforce": 11, "eq-bandit-gradient": 12, "eq-baseline": 13,
    "eq-batch-mean-shrink": 14, "eq-value": 15, "eq-td": 16, "eq-gae": 17, "eq-a2c-loss": 18,
    "eq-critic-loss": 19, "eq-ppo-ratio": 20, "eq-ppo-clip": 21, "eq-kl-reward": 22,
    "eq-value-loss": 23, "eq-value-clip": 24, "eq-ppo-total": 25, "eq-kl-estimators": 26,
    "eq-rm-loss": 27, "eq-label-ceiling": 28, "eq-bon-exact": 29, "eq-bon-kl": 30, "eq-sft": 31,
    "eq-dpo-optimum": 32, "eq-dpo-implicit": 33, "eq-dpo": 34, "eq-dpo-jensen": 35,
    "eq-dpo-delta": 36, "eq-rdpo": 37, "eq-ipo": 38, "eq-slic-hinge": 39, "eq-simpo": 40,
    "eq-pass-k": 41, "eq-grpo-adv": 42, "eq-rloo": 43, "eq-grpo-clip": 44, "eq-grpo-agg": 45,
    "eq-zero-var": 46, "eq-dr-grpo-agg": 47, "eq-dapo-agg": 48, "eq-grpo-kl": 49,
    "eq-kl-reward-adv": 50, "eq-gao-forms": 51, "eq-entropy-collapse": 52, "eq-frontier-bound": 53,
    "eq-judge-agreement": 54, "eq-trl-objective": 55, "eq-se-diff": 56,
}

_LABEL = re.compile(r"(\()?\b(eq-[a-z0-9-]*[a-z0-9])")


def cite(text: str) -> str:
    """``text`` with each equation label replaced by the book's number N: "(eq-gae)" reads
    "(eq. N)", a bare "eq-gae" reads "eq. (N)". An unknown label is left as it is
    (tests/test_equation_labels.py fails on it)."""

    def number(m: re.Match) -> str:
        n = NUMBERS.get(m.group(2))
        if n is None:
            return m.group(0)
        return f"(eq. {n}" if m.group(1) else f"eq. ({n})"

    return _LABEL.sub(number, text)
