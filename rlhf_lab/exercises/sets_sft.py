"""The practice set of the SFT chapter (01b). Every answer is a formula evaluated here, and a test
recomputes it independently (tests/test_exercises.py)."""

from __future__ import annotations

import math

from rlhf_lab.exercises.questions import choice, numeric

_ROWS = ((-0.5, -1.0, -0.2), (-2.0,))  # response log-probs of two demonstrations
_TOKENS = sum(len(r) for r in _ROWS)
_LOSS = -sum(sum(r) for r in _ROWS) / _TOKENS
_PER_ROW = -sum(sum(r) / len(r) for r in _ROWS) / len(_ROWS)

SETS = {
    "01b": ("Supervised fine-tuning", (
        numeric("q1", "A batch holds two demonstrations. The response tokens of the first have "
                "log-probs (−0.5, −1.0, −0.2) under the model, the second's one token −2.0. What "
                "is the SFT loss of eq-sft-loss, in nats per token?", _LOSS, 1e-3,
                "sum the negative log-probs of all response tokens, divide by their number N.",
                f"N = {_TOKENS} tokens; (0.5 + 1.0 + 0.2 + 2.0)/4 = {_LOSS:.3f} nats.",
                traps=((_PER_ROW, "that is the mean of the two rows' means: eq-sft-loss divides "
                        "the batch's sum by its number of tokens, so a long response counts "
                        "more."),)),
        choice("q2", "Which of these can supervised fine-tuning on demonstrations NOT do?",
               ("raise the probability of the demonstrated responses",
                "lower the probability of a response because it is labelled as bad",
                "move the policy away from the pretrained model π_0"),
               "b", "what does the loss contain besides the demonstrated tokens?",
               "(b): eq-sft-loss only contains log-probs of demonstrated tokens, each pushed up; "
               "a bad example has no place in it. Preferences (chapters 05, 07) carry that signal."),
        numeric("q3", "Arithmetic prompts are 'a + b =' with both operands uniform on 0 … 9. With "
                "the prompt's tokens in the loss (after the first, which nothing predicts), what "
                "is the smallest possible expected NLL, in nats, summed over one prompt's "
                "predicted tokens?", math.log(10), 1e-3,
                "which of '+', b, '=' can be predicted exactly, and how uncertain is b?",
                "'+' and '=' are certain (0 nats); b is uniform over 10 digits: log 10 ≈ 2.303 "
                "nats, whatever the model learns."),
    )),
}
