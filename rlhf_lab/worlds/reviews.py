"""The reviews world: write a short review of a topic; the gold reward likes positive, fluent ones.

A prompt is one topic token (``<food>``, ``<film>``, ``<hotel>``, …). A completion is a few
words ending in ``[EOS]``, e.g. ``<film> not very good [EOS]``. The words are

* adjectives with a polarity v(a): positive ones (good 0.6, great 0.8, excellent 1.0, …) and
  negative ones (bad −0.6, awful −0.8, terrible −1.0, …), ``reviews_words`` of each;
* the negation ``not`` and the intensifier ``very`` (modifiers).

A phrase is ``[not] [very] adjective``. The gold reward (chapter 00, the worlds) is sentiment minus a fluency
penalty, and does not depend on the topic:

    gold(x, y) = sentiment(y) − fluency(y)

    sentiment(y) = mean over the phrases of y of   v(a) · 1.5^[very] · (−½)^[not]

    fluency(y)   = 1·(number of repeated words)          "great great"      → 1
                 + 1·(number of misplaced modifiers)     "good not", "very not good", "not not"
                 + 1·[y has no EOS]                      truncated at max_new_tokens
                 + 1·[y is empty]                        "[EOS]" alone says nothing

A modifier is misplaced unless the next word is an adjective (or, for ``not``, ``very``).
Negation flips and halves: "not good" = −0.3 (negative), "not bad" = +0.3 (mildly positive);
"very" multiplies by 1.5, so the best review is "very excellent [EOS]" with gold 1.5, and
"very terrible [EOS]" is the worst fluent one (−1.5). Each fluency error costs as much as a
strong adjective is worth, so the reward lies in [−8, 1.5] at scale ci ("not not not not" is
the worst: three repeats, four misplaced modifiers, no EOS) and in [−1.5, 1.5] for fluent text.

The pretraining corpus is fluent — one or two phrases of one sentiment, no repeated word, always
an EOS — with about half positive and half negative reviews (the share of positive reviews
differs by topic, from 30 % to 70 %, so the reference policy depends on the prompt). A reward
model trained on preferences between such samples never sees a repeated word, so it cannot learn
that repetition is bad; optimising it hard ("great great great") raises the proxy reward while the
gold reward peaks and then falls (chapter 09). Introduced in chapter 02.
"""

from __future__ import annotations

import random

import numpy as np

from rlhf_lab.validate import check_bool, check_float, check_instance, check_int
from rlhf_lab.worlds.base import EOS, SPECIALS, TokenWorld

TOPICS = ("<food>", "<film>", "<hotel>", "<book>", "<music>", "<game>", "<phone>", "<cafe>")
# (word, polarity v): the first ``words_per_class`` of each list are used, so every scale's
# vocabulary extends the smaller ones and the strongest words come first.
POSITIVE = (("good", 0.6), ("great", 0.8), ("excellent", 1.0), ("nice", 0.5),
            ("lovely", 0.7), ("superb", 0.9), ("fine", 0.4), ("perfect", 1.0))
NEGATIVE = (("bad", -0.6), ("awful", -0.8), ("terrible", -1.0), ("poor", -0.5),
            ("dull", -0.7), ("dreadful", -0.9), ("weak", -0.4), ("horrible", -1.0))
NOT, VERY = "not", "very"
NEGATION_FACTOR = -0.5
INTENSIFIER_FACTOR = 1.5
PENALTY = 1.0  # per fluency error: a repeated word, a misplaced modifier, no EOS, empty
# the modifiers before a corpus phrase's adjective, and how often each shape is drawn
PHRASE_WEIGHTS = {(): 0.4, (VERY,): 0.25, (NOT,): 0.25, (NOT, VERY): 0.1}
TWO_PHRASES = 0.35  # how often a corpus review tries a second phrase


class ReviewsWorld(TokenWorld):
    """Topic prompts, short reviews, a sentiment-minus-fluency gold reward (see module docstring).

    Args:
        n_topics: number of topic prompts, 1 … 8.
        words_per_class: adjectives per polarity class, 1 … 8.
        max_new_tokens: L, the most tokens a completion may have (EOS included), ≥ 2.
        negation: include the word "not".
        intensifier: include the word "very".
        enumerable: whether exact enumeration is allowed (the scale decides); by default, when the
            table of every prompt × completion has at most 5 million entries (``base.MAX_ENUMERATED``;
            True above 20 million raises: exact evaluation would grind for hours).
        positive_rates: per topic, the share of positive reviews in the corpus; by default
            evenly spaced from 0.3 to 0.7 (0.5 for one topic), which averages to one half.
    """

    def __init__(
        self,
        n_topics: int = 3,
        words_per_class: int = 3,
        max_new_tokens: int = 4,
        *,
        negation: bool = True,
        intensifier: bool = True,
        enumerable: bool | None = None,
        positive_rates: tuple[float, ...] | None = None,
    ) -> None:
        check_int("n_topics", n_topics, ge=1, le=len(TOPICS))
        check_int("words_per_class", words_per_class, ge=1, le=len(POSITIVE))
        check_int("max_new_tokens (a word and EOS at least)", max_new_tokens, ge=2)
        check_bool("negation", negation)
        check_bool("intensifier", intensifier)
        if positive_rates is None:
            positive_rates = tuple(np.linspace(0.3, 0.7, n_topics)) if n_topics > 1 else (0.5,)
        if isinstance(positive_rates, (str, bytes)) or not hasattr(positive_rates, "__len__") \
                or len(positive_rates) != n_topics:
            raise ValueError(f"positive_rates must be {n_topics} numbers in [0, 1], got {positive_rates!r}")
        for i, r in enumerate(positive_rates):
            check_float(f"positive_rates[{i}]", r, ge=0.0, le=1.0)
        self.name = "reviews"
        self.polarity = dict(POSITIVE[:words_per_class] + NEGATIVE[:words_per_class])
        self.modifiers = [w for w, keep in ((NOT, negation), (VERY, intensifier)) if keep]
        words = list(self.polarity) + self.modifiers
        self.prompts = list(TOPICS[:n_topics])
        self.vocab = [*SPECIALS, *self.prompts, *words]
        self.completion_vocab = [EOS, *words]
        self.max_new_tokens = max_new_tokens
        self.enumerable = self.default_enumerable(enumerable)
        self.positive_rates = tuple(float(r) for r in positive_rates)
        # the gold reward ignores the topic, so one cache entry per completion serves all prompts
        self._cache: dict[str, float] = {}

    @classmethod
    def from_scale(cls, scale, **overrides) -> "ReviewsWorld":
        """The world of a scale preset (``reviews_topics``, ``reviews_words``, …)."""
        kwargs = dict(
            n_topics=scale.reviews_topics,
            words_per_class=scale.reviews_words,
            max_new_tokens=scale.reviews_max_new_tokens,
            enumerable=scale.reviews_enumerable,
        )
        return cls(**{**kwargs, **overrides})

    # -- gold reward -------------------------------------------------------------------------
    def gold_parts(self, completion: str) -> dict[str, float]:
        """The terms of the gold reward (chapter 00) for one completion: sentiment and each fluency error count."""
        check_instance("completion", completion, str, "a string of review words")
        tokens = completion.split()
        unknown = [t for t in tokens if t not in self.polarity and t not in self.modifiers and t != EOS]
        if unknown:
            raise ValueError(f"completion={completion!r} has tokens that are not review words: {unknown}")
        has_eos = EOS in tokens
        words = tokens[: tokens.index(EOS)] if has_eos else tokens  # the sampler stops at EOS
        phrases, misplaced = [], 0
        for i, w in enumerate(words):
            nxt = words[i + 1] if i + 1 < len(words) else None
            if w in self.polarity:
                v = self.polarity[w]
                j = i - 1
                if j >= 0 and words[j] == VERY:
                    v, j = v * INTENSIFIER_FACTOR, j - 1
                if j >= 0 and words[j] == NOT:
                    v = v * NEGATION_FACTOR
                phrases.append(v)
            elif w == VERY:
                misplaced += nxt not in self.polarity
            else:  # NOT
                misplaced += nxt not in self.polarity and nxt != VERY
        return {
            "sentiment": sum(phrases) / len(phrases) if phrases else 0.0,
            "repeated": float(len(words) - len(set(words))),
            "misplaced": float(misplaced),
            "no_eos": float(not has_eos),
            "empty": float(has_eos and not words),
        }

    def gold_reward(self, prompt: str, completion: str) -> float:
        """gold = sentiment − fluency penalty (chapter 00, the worlds); the topic is checked but not used."""
        if prompt not in self.prompts:
            raise ValueError(f"prompt={prompt!r} is not one of {self.prompts}")
        if completion not in self._cache:
            parts = self.gold_parts(completion)
            errors = parts["repeated"] + parts["misplaced"] + parts["no_eos"] + parts["empty"]
            self._cache[completion] = parts["sentiment"] - PENALTY * errors
        return self._cache[completion]

    # -- pretraining corpus ------------------------------------------------------------------
    def _phrases(self, positive: bool) -> list[tuple[list[str], float]]:
        """Every phrase whose value has the wanted sign, with its corpus weight."""
        out = []
        for adj in self.polarity:
            for mods, weight in PHRASE_WEIGHTS.items():
                if not set(mods) <= set(self.modifiers):
                    continue
                words = [*mods, adj]
                value = self.gold_parts(" ".join(words) + " " + EOS)["sentiment"]
                if (value > 0) == positive:
                    out.append((words, weight))
        return out

    def corpus(self, n: int, seed: int = 0) -> list[str]:
        """``n`` fluent reviews ``"<topic> words … [EOS]"``: one or two phrases of one sentiment.

        The topic is uniform; the review is positive with the topic's ``positive_rates`` entry;
        no word repeats and the review fits in ``max_new_tokens`` (EOS included).
        """
        check_int("n", n, ge=0)
        check_int("seed", seed)
        rng = random.Random(seed)
        phrases = {True: self._phrases(True), False: self._phrases(False)}
        budget = self.max_new_tokens - 1  # words before EOS
        texts = []
        for _ in range(n):
            t = rng.randrange(len(self.prompts))
            positive = rng.random() < self.positive_rates[t]
            n_phrases = 2 if rng.random() < TWO_PHRASES else 1
            words: list[str] = []
            for _ in range(n_phrases):
                fits = [(p, w) for p, w in phrases[positive]
                        if len(words) + len(p) <= budget and not set(p) & set(words)]
                if not fits:
                    break
                choice = rng.choices([p for p, _ in fits], weights=[w for _, w in fits])[0]
                words.extend(choice)
            texts.append(" ".join([self.prompts[t], *words, EOS]))
        return texts

    def corpus_probs(self, prompt: str) -> dict[str, float]:
        """The exact distribution of :meth:`corpus`'s completions of ``prompt``: completion text
        (words and EOS, without the prompt) → probability, summed over the draws that write it.

        The same process as ``corpus``, followed down every branch instead of sampled: the
        sentiment, one or two phrases, each phrase by weight among those that fit.
        """
        if prompt not in self.prompts:
            raise ValueError(f"prompt={prompt!r} is not one of {self.prompts}")
        rate = self.positive_rates[self.prompts.index(prompt)]
        budget = self.max_new_tokens - 1  # words before EOS
        out: dict[str, float] = {}

        def extend(words: list[str], phrases: list, left: int, p: float) -> None:
            fits = [(ph, w) for ph, w in phrases if len(words) + len(ph) <= budget and not set(ph) & set(words)]
            if left == 0 or not fits:  # done, or nothing fits: the review ends here (corpus breaks)
                text = " ".join([*words, EOS])
                out[text] = out.get(text, 0.0) + p
                return
            total = sum(w for _, w in fits)
            for ph, w in fits:
                extend([*words, *ph], phrases, left - 1, p * w / total)

        for positive, p_sign in ((True, rate), (False, 1.0 - rate)):
            for n_phrases, p_n in ((1, 1.0 - TWO_PHRASES), (2, TWO_PHRASES)):
                if p_sign > 0:
                    extend([], self._phrases(positive), n_phrases, p_sign * p_n)
        return out
