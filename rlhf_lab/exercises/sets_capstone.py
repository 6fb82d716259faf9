"""Practice set for chapter 10 (capstone). Every answer is a formula evaluated here, and a test
recomputes it independently (tests/test_exercises.py)."""

from __future__ import annotations

import math

from rlhf_lab.exercises.questions import choice, numeric

# the n whose best-of-n KL bound log n − (n − 1)/n is nearest 1 nat
_N_NEAR_1 = min(range(1, 65), key=lambda n: abs(math.log(n) - (n - 1) / n - 1.0))
# a judge right on 80 % of pairs, a reward model fitting the judge's labels on 90 %, errors independent
_CHAINED = 0.8 * 0.9 + 0.2 * 0.1
# GRPO: 16 prompts × 8 samples per step for 40 steps; the rejection-sampling stage draws 100 × 4
_RS_STEPS = math.ceil(100 * 4 / (16 * 8))
# pass@4 of two prompts: A solves both with p = 0.5; B solves one with p = 1, the other with 0.1
_PASS4_A = 1 - 0.5**4
_PASS4_B = (1 + (1 - 0.9**4)) / 2

SETS = {
    "10": ("The capstone: one pipeline, compared at one KL", (
        numeric("q1", "Best-of-n is matched to a KL budget of 1 nat with chapter 06's bound, "
                "log n − (n − 1)/n. Which integer n brings the bound nearest 1 nat?", _N_NEAR_1, 0,
                "tabulate log n − (n − 1)/n for n = 5, 6, 7.",
                "n = 5: 0.809, n = 6: 0.958, n = 7: 1.089 nats, so n = 6 (0.042 from 1 nat). The "
                "exact KL sits below the bound, so the chapter's exact search can pick a larger n.",
                traps=((7.0, "log 7 − 6/7 ≈ 1.089 is 0.089 from 1 nat; n = 6 is closer."),
                       (math.e, "n must be an integer: the number of samples drawn."))),
        numeric("q2", "An AI judge orders 80 % of pairs as the gold reward does (eq-judge-agreement). "
                "A reward model fitted to the judge's labels agrees with the judge on 90 % of "
                "pairs, its mistakes independent of the judge's. On what fraction of pairs does "
                "the reward model agree with gold?", _CHAINED, 1e-3,
                "it agrees with gold when both are right, or when both are wrong.",
                "0.8 · 0.9 + 0.2 · 0.1 = 0.72 + 0.02 = 0.74: the judge's errors pass into the "
                "reward model, and its own come on top.",
                traps=((0.72, "two wrongs make a right here: count the pairs where both err."),)),
        numeric("q3", "Single-stage GRPO runs 40 steps of 16 prompts × 8 samples. A multi-stage "
                "recipe spends the same number of samples, and its rejection-sampling stage "
                "draws 4 samples of each of 100 prompts, rounded up to whole GRPO steps. How many "
                "GRPO steps are left for its two RL stages together?", 40 - _RS_STEPS, 0,
                "one GRPO step samples 16 · 8 = 128 completions.",
                f"400 / 128 = 3.125, rounded up to {_RS_STEPS} steps, so 40 − {_RS_STEPS} = "
                f"{40 - _RS_STEPS} GRPO steps remain.",
                traps=((37.0, "400 / 128 = 3.125: round the stage up to 4 steps, not down."),)),
        choice("q4", "Two prompts. Policy A solves each with probability 0.5; policy B solves the "
               "first always and the second with probability 0.1. Which is true?",
               ("B has the higher pass@1 and the lower pass@4",
                "B has the higher pass@1 and the higher pass@4",
                "A has the higher pass@1 and the higher pass@4",
                "pass@1 and pass@4 always rank policies the same way"), "a",
               "pass@k = mean over prompts of 1 − (1 − p)^k.",
               f"pass@1: A 0.50, B (1 + 0.1)/2 = 0.55. pass@4: A 1 − 0.5⁴ = {_PASS4_A:.4f}, B "
               f"(1 + 1 − 0.9⁴)/2 = {_PASS4_B:.4f}. Sharpening onto what is already solved "
               "raises pass@1 and costs pass@k."),
    )),
}
