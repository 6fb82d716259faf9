"""The contract every token world follows (reviews, arithmetic).

A token world is a tiny language: a fixed vocabulary, a list of prompts, the tokens a
completion may use, and a gold reward. Everything downstream — the tokenizer (models.py), the
sampler (rollout.py) and exact enumeration (exact.py) — relies only on what is defined here:

* token id == index in ``vocab``; ``vocab[:3] == [PAD, EOS, UNK]``.
* Texts are tokens joined by single spaces. A prompt is one or more tokens; a completion is the
  words the policy generates, ending in ``EOS`` unless it ran out of room.
* While generating, the policy may only emit ``completion_vocab`` (the words and EOS): the
  sampler and exact enumeration both apply ``mask_logits`` before the softmax, so the
  distribution they see is the same one.
* A completion has at most ``max_new_tokens`` tokens, EOS included. It ends at the first EOS;
  one that reaches ``max_new_tokens`` words without EOS is truncated (and penalised by the gold
  reward where the world says so).

Introduced in chapter 00.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from rlhf_lab.validate import check_bool, check_instance, check_tensor, check_texts

PAD, EOS, UNK = "[PAD]", "[EOS]", "[UNK]"
SPECIALS = (PAD, EOS, UNK)
# Exact enumeration stores (P, K) tables (P prompts, K completions per prompt) and runs the policy
# on P·K/W prefixes. Up to MAX_ENUMERATED entries a world is enumerable by default (a second or
# two per evaluation on a CPU); above HARD_MAX_ENUMERATED it never is, even when asked.
MAX_ENUMERATED = 5_000_000
HARD_MAX_ENUMERATED = 20_000_000


class TokenWorld(ABC):
    """Base class of the enumerable token worlds.

    Subclasses set ``name``, ``vocab``, ``prompts``, ``completion_vocab``, ``max_new_tokens``
    and ``enumerable`` in ``__init__`` and implement ``corpus`` and ``gold_reward``. A world
    whose gold reward is a 0/1 verifier sets ``verifiable = True``: its expected reward is
    pass@1, and the evaluators log pass@k.
    """

    name: str
    vocab: list[str]
    prompts: list[str]
    completion_vocab: list[str]
    max_new_tokens: int
    enumerable: bool
    verifiable: bool = False

    # -- tokens ------------------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return 0

    @property
    def eos_id(self) -> int:
        return 1

    def token_to_id(self) -> dict[str, int]:
        return {tok: i for i, tok in enumerate(self.vocab)}

    def encode(self, text: str) -> list[int]:
        """Space-separated tokens → ids (unknown tokens raise, they are a bug in a world)."""
        check_instance("text", text, str, "a string of space-separated tokens")
        table = self.token_to_id()
        try:
            return [table[tok] for tok in text.split()]
        except KeyError as err:
            raise ValueError(f"text={text!r} has a token not in {self.name}'s vocab: {err}") from None

    def decode(self, ids: Sequence[int], skip_pad: bool = True) -> str:
        return " ".join(self.vocab[i] for i in ids if not (skip_pad and i == self.pad_id))

    def allowed_mask(self) -> torch.Tensor:
        """Bool tensor (V,): True for the tokens a completion may contain (words and EOS)."""
        return self._allowed("cpu").clone()

    def _allowed(self, device) -> torch.Tensor:
        # built once per vocabulary and device: the sampler and every teacher-forced pass ask for it
        key = (tuple(self.vocab), tuple(self.completion_vocab), str(device))
        cache = self.__dict__.setdefault("_allowed_cache", {})
        if key not in cache:
            mask = torch.zeros(len(self.vocab), dtype=torch.bool)
            table = self.token_to_id()
            mask[[table[t] for t in self.completion_vocab]] = True
            cache[key] = mask.to(device)
        return cache[key]

    def mask_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Set the logits of tokens a completion may not contain to -inf.

        Shape: logits (..., V) → (..., V). The sampler and exact.py both call this.
        """
        check_tensor("logits", logits, kind="float")
        if logits.dim() < 1 or logits.shape[-1] != len(self.vocab):
            raise ValueError(f"logits must have shape (..., V) with V = {len(self.vocab)}, {self.name}'s vocabulary; "
                             f"got {tuple(logits.shape)}")
        return logits.masked_fill(~self._allowed(logits.device), float("-inf"))

    # -- completions -------------------------------------------------------------------------
    def n_completions(self) -> int:
        """K = Σ_{n<L} W^n + W^L: completions of n < L words and EOS, plus the L-word truncated ones."""
        w, length = len(self.completion_vocab) - 1, self.max_new_tokens
        return sum(w**n for n in range(length)) + w**length

    def check_enumerable(self) -> None:
        """Refuse exact enumeration when the world is marked not enumerable or is too large for it,
        naming the count and the sampled alternative."""
        size, p = self.n_completions(), len(self.prompts)
        if not self.enumerable or p * size > HARD_MAX_ENUMERATED:
            raise ValueError(
                f"world {self.name!r} is not enumerable here ({p} prompts × {size:,} completions = {p * size:,} "
                f"entries; the limit is {MAX_ENUMERATED:,} by default, {HARD_MAX_ENUMERATED:,} at most): measure it "
                f"by sampling — SampledEvaluator(world, ref_policy), or let a trainer choose (default_evaluator)")

    def default_enumerable(self, enumerable: bool | None) -> bool:
        """``enumerable`` as asked, else whether the (P, K) table has at most ``MAX_ENUMERATED`` entries;
        True above ``HARD_MAX_ENUMERATED`` raises (the exact evaluator would grind for hours)."""
        check_bool("enumerable", enumerable, none=True)
        entries = len(self.prompts) * self.n_completions()
        if enumerable and entries > HARD_MAX_ENUMERATED:
            self.enumerable = True
            self.check_enumerable()
        return entries <= MAX_ENUMERATED if enumerable is None else enumerable

    def enumerate_completions(self) -> list[str]:
        """Every completion the policy can produce, for any prompt (same set for all prompts).

        Order: by number of words, then lexicographic in ``completion_vocab`` order; first the
        ones that end in EOS (0 … max_new_tokens − 1 words), then the truncated ones
        (max_new_tokens words, no EOS).
        """
        self.check_enumerable()
        words = [t for t in self.completion_vocab if t != EOS]
        out = []
        for n in range(self.max_new_tokens):
            out.extend(" ".join([*seq, EOS]) for seq in itertools.product(words, repeat=n))
        out.extend(" ".join(seq) for seq in itertools.product(words, repeat=self.max_new_tokens))
        return out

    # -- to implement ------------------------------------------------------------------------
    @abstractmethod
    def corpus(self, n: int, seed: int = 0) -> list[str]:
        """``n`` pretraining texts, each ``prompt + " " + completion`` (completion ends in EOS)."""

    @abstractmethod
    def gold_reward(self, prompt: str, completion: str) -> float:
        """The true reward of ``completion`` (a text, EOS included if present) for ``prompt``."""

    def gold_rewards(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        """Vectorised ``gold_reward``. Shape: (B,) float32."""
        prompts, completions = check_texts("prompts", prompts, nonempty=False), check_texts("completions", completions,
                                                                                             nonempty=False)
        if len(prompts) != len(completions):
            raise ValueError(
                f"prompts and completions must have the same length, got {len(prompts)} and {len(completions)}"
            )
        return torch.tensor([self.gold_reward(p, c) for p, c in zip(prompts, completions)], dtype=torch.float32)
