"""The arithmetic world: add two numbers; the reward is verifiable (chapter 08).

A prompt is ``a + b =`` written digit by digit, each operand zero-padded to the same width so
every prompt has the same number of tokens (``0 7 + 1 2 =`` when the operands go up to 19). The
completion is the sum's digits, without leading zeros, then EOS (``1 9 [EOS]``). The gold reward
is verifiable (chapter 08):

    r(x, y) = 1  if y is exactly the digits of a + b followed by EOS,  else 0.

So E[r] under a policy is its pass@1. The pretraining corpus is noisy: a sum is right with
probability ``p_correct`` (one half by default); otherwise it is off by one or two, or one digit
slipped. A model pretrained on it is right only part of the time, which leaves room for RL with
verifiable rewards (GRPO) to raise pass@1. Introduced in chapter 08.
"""

from __future__ import annotations

import random

from rlhf_lab.validate import check_float, check_instance, check_int
from rlhf_lab.worlds.base import EOS, MAX_ENUMERATED, SPECIALS, TokenWorld  # noqa: F401  (MAX_ENUMERATED re-exported)

DIGITS = tuple(str(d) for d in range(10))
PLUS, EQUALS = "+", "="


class ArithmeticWorld(TokenWorld):
    """Prompts ``a + b =`` for a, b in 0 … max_operand; reward 1 for the exact sum (chapter 08).

    Args:
        max_operand: the largest operand, 1 … 999.
        enumerable: whether exact enumeration is allowed; by default, when the table of every
            prompt × completion has at most 5 million entries (true at scales ci and cpu; True
            above 20 million raises).
    """

    def __init__(self, max_operand: int = 9, *, enumerable: bool | None = None) -> None:
        check_int("max_operand", max_operand, ge=1, le=999)
        self.name = "arithmetic"
        self.verifiable = True  # the gold reward is a 0/1 check of the sum
        self.max_operand = max_operand
        self.width = len(str(max_operand))  # digits per operand in a prompt
        self.prompts = [self.prompt(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
        self.vocab = [*SPECIALS, *DIGITS, PLUS, EQUALS]
        self.completion_vocab = [EOS, *DIGITS]
        self.max_new_tokens = len(str(2 * max_operand)) + 1  # the longest sum and EOS
        self.enumerable = self.default_enumerable(enumerable)

    @classmethod
    def from_scale(cls, scale, **overrides) -> "ArithmeticWorld":
        """The world of a scale preset (``arithmetic_max_operand``)."""
        return cls(**{"max_operand": scale.arithmetic_max_operand, **overrides})

    # -- texts -------------------------------------------------------------------------------
    def prompt(self, a: int, b: int) -> str:
        """The prompt text of ``a + b =``, e.g. ``"0 7 + 1 2 ="`` for width 2."""
        for name, v in (("a", a), ("b", b)):
            check_int(name, v, ge=0, le=self.max_operand)
        return " ".join([*f"{a:0{self.width}d}", PLUS, *f"{b:0{self.width}d}", EQUALS])

    def operands(self, prompt: str) -> tuple[int, int]:
        """(a, b) of a prompt text."""
        check_instance("prompt", prompt, str, "a string such as '0 7 + 1 2 ='")
        tokens = prompt.split()
        w = self.width
        if (len(tokens) != 2 * w + 2 or tokens[w] != PLUS or tokens[-1] != EQUALS
                or not all(t in DIGITS for t in tokens[:w] + tokens[w + 1 : -1])):
            raise ValueError(f"prompt={prompt!r} is not of the form 'a + b =' with {w}-digit operands")
        return int("".join(tokens[:w])), int("".join(tokens[w + 1 : -1]))

    @staticmethod
    def completion(value: int) -> str:
        """The completion text of a number: its digits and EOS (``19`` → ``"1 9 [EOS]"``)."""
        return " ".join([*str(value), EOS])

    def answer(self, prompt: str) -> str:
        """The correct completion of a prompt."""
        a, b = self.operands(prompt)
        return self.completion(a + b)

    # -- gold reward -------------------------------------------------------------------------
    def gold_reward(self, prompt: str, completion: str) -> float:
        """1.0 for the exact sum followed by EOS, else 0.0 (chapter 08)."""
        check_instance("completion", completion, str, "a string of tokens")
        tokens = completion.split()
        if EOS in tokens:
            tokens = tokens[: tokens.index(EOS) + 1]  # the sampler stops at EOS
        return float(tokens == self.answer(prompt).split())

    # -- pretraining corpus ------------------------------------------------------------------
    def _wrong(self, total: int, rng: random.Random) -> int:
        """A plausible wrong sum: off by one or two, or one digit slipped; fits the completion."""
        largest = 10 ** (self.max_new_tokens - 1) - 1
        while True:
            if rng.random() < 0.5:
                guess = total + rng.choice((-2, -1, 1, 2))
            else:
                digits = list(str(total))
                i = rng.randrange(len(digits))
                low = 1 if i == 0 and len(digits) > 1 else 0  # no leading zero
                digits[i] = str(rng.randrange(low, 10))
                guess = int("".join(digits))
            if guess != total and 0 <= guess <= largest:
                return guess

    def corpus(self, n: int, seed: int = 0, p_correct: float = 0.5) -> list[str]:
        """``n`` texts ``"a + b = digits [EOS]"`` with uniform operands; right with ``p_correct``."""
        check_int("n", n, ge=0)
        check_int("seed", seed)
        check_float("p_correct", p_correct, ge=0.0, le=1.0)
        rng = random.Random(seed)
        texts = []
        for _ in range(n):
            a, b = rng.randint(0, self.max_operand), rng.randint(0, self.max_operand)
            total = a + b if rng.random() < p_correct else self._wrong(a + b, rng)
            texts.append(f"{self.prompt(a, b)} {self.completion(total)}")
        return texts
