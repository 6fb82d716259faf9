"""The reviews and arithmetic worlds: gold rewards on hand-picked texts, enumeration, corpora."""

import collections

import pytest

from rlhf_lab.exact import count_completions
from rlhf_lab.scale import get_scale
from rlhf_lab.worlds.arithmetic import ArithmeticWorld
from rlhf_lab.worlds.base import EOS, SPECIALS
from rlhf_lab.worlds.reviews import ReviewsWorld


@pytest.fixture(scope="module")
def reviews():
    return ReviewsWorld.from_scale(get_scale("ci"))


def gold(world, completion):
    return world.gold_reward(world.prompts[0], completion)


# -- reviews: layout ---------------------------------------------------------------------------
def test_reviews_vocab_follows_the_token_world_contract(reviews):
    assert reviews.vocab[:3] == list(SPECIALS)
    assert reviews.prompts == ["<food>", "<film>", "<hotel>"]
    assert reviews.completion_vocab == [EOS, "good", "great", "excellent", "bad", "awful", "terrible", "not", "very"]
    assert set(reviews.completion_vocab) | set(reviews.prompts) | set(SPECIALS) == set(reviews.vocab)
    assert len(set(reviews.vocab)) == len(reviews.vocab)


def test_reviews_enumeration_count_matches_the_formula(reviews):
    # W = 8 words, L = 4: 1 + 8 + 64 + 512 completions ending in EOS + 8^4 truncated ones
    completions = reviews.enumerate_completions()
    assert len(completions) == 1 + 8 + 64 + 512 + 4096 == 4681 == count_completions(reviews)
    assert len(set(completions)) == len(completions)
    tiny = ReviewsWorld(n_topics=1, words_per_class=1, max_new_tokens=3, negation=False, intensifier=False)
    assert tiny.enumerate_completions() == [
        EOS, f"good {EOS}", f"bad {EOS}",
        f"good good {EOS}", f"good bad {EOS}", f"bad good {EOS}", f"bad bad {EOS}",
        "good good good", "good good bad", "good bad good", "good bad bad",
        "bad good good", "bad good bad", "bad bad good", "bad bad bad",
    ]


# -- reviews: gold reward ----------------------------------------------------------------------
def test_sentiment_orders_positive_mild_and_negative(reviews):
    phrases = ("very excellent", "good", "not bad", "not good", "bad", "very terrible")
    values = {c: gold(reviews, f"{c} {EOS}") for c in phrases}
    # v(good) = 0.6; "not" multiplies by −½, "very" by 1.5; no fluency error
    assert values == pytest.approx({"very excellent": 1.5, "good": 0.6, "not bad": 0.3,
                                    "not good": -0.3, "bad": -0.6, "very terrible": -1.5})
    assert values["good"] > values["not bad"] > 0 > values["not good"] > values["bad"]
    assert gold(reviews, f"not very good {EOS}") == pytest.approx(-0.45)
    # two phrases: the mean of (0.6, 0.8)
    assert gold(reviews, f"good great {EOS}") == pytest.approx(0.7)


def test_negation_flips_and_halves_every_adjective(reviews):
    for adj, v in reviews.polarity.items():
        assert gold(reviews, f"not {adj} {EOS}") == pytest.approx(-0.5 * v)
        assert gold(reviews, f"very {adj} {EOS}") == pytest.approx(1.5 * v)


def test_fluency_penalties(reviews):
    # repetition: 1 per repeated word
    assert gold(reviews, f"great great {EOS}") == pytest.approx(0.8 - 1.0)
    assert reviews.gold_parts("great great great great")["repeated"] == 3.0
    # ungrammatical order: a modifier not followed by an adjective (or "very" after "not")
    assert gold(reviews, f"good not {EOS}") == pytest.approx(0.6 - 1.0)
    assert gold(reviews, f"very not good {EOS}") == pytest.approx(-0.3 - 1.0)
    assert gold(reviews, f"not not good {EOS}") == pytest.approx(-0.3 - 1.0 - 1.0)  # misplaced + repeated
    # truncated without EOS: mean(0.6, 0.8, 1.0, −0.6) − 1
    assert gold(reviews, "good great excellent bad") == pytest.approx(0.45 - 1.0)
    # empty
    assert gold(reviews, EOS) == pytest.approx(-1.0)
    # what a proxy that never saw repetition might love is bad under gold
    assert gold(reviews, "excellent excellent excellent excellent") == pytest.approx(1.0 - 3.0 - 1.0)


def test_best_and_worst_completions(reviews):
    rewards = {c: gold(reviews, c) for c in reviews.enumerate_completions()}
    assert max(rewards, key=rewards.get) == f"very excellent {EOS}"
    assert max(rewards.values()) == pytest.approx(1.5)
    # the worst: three repeats, four misplaced modifiers, no EOS
    assert min(rewards.values()) == pytest.approx(-8.0)
    assert {c for c, r in rewards.items() if r == pytest.approx(-8.0)} == {"not not not not", "very very very very"}


def test_gold_ignores_the_topic_but_checks_inputs(reviews):
    assert [reviews.gold_reward(p, f"great {EOS}") for p in reviews.prompts] == pytest.approx([0.8] * 3)
    with pytest.raises(ValueError, match="prompt"):
        reviews.gold_reward("<car>", f"great {EOS}")
    with pytest.raises(ValueError, match="completion"):
        reviews.gold_reward("<food>", f"amazing {EOS}")


def test_reviews_validates_arguments():
    with pytest.raises(ValueError, match="n_topics"):
        ReviewsWorld(n_topics=0)
    with pytest.raises(ValueError, match="words_per_class"):
        ReviewsWorld(words_per_class=9)
    with pytest.raises(ValueError, match="max_new_tokens"):
        ReviewsWorld(max_new_tokens=1)
    with pytest.raises(ValueError, match="positive_rates"):
        ReviewsWorld(n_topics=2, positive_rates=(0.5,))


# -- reviews: corpus ---------------------------------------------------------------------------
def test_corpus_is_fluent_mixed_and_never_repeats(reviews):
    texts = reviews.corpus(4000, seed=0)
    assert texts == reviews.corpus(4000, seed=0) and texts != reviews.corpus(4000, seed=1)
    positive = collections.Counter()
    per_topic = collections.Counter()
    for text in texts:
        reviews.encode(text)  # every token is in the vocab
        prompt, completion = text.split(" ", 1)
        words = completion.split()
        assert prompt in reviews.prompts and words[-1] == EOS and EOS not in words[:-1]
        assert 2 <= len(words) <= reviews.max_new_tokens
        assert len(set(words)) == len(words)  # no repeated word
        parts = reviews.gold_parts(completion)
        assert parts["repeated"] == parts["misplaced"] == parts["no_eos"] == parts["empty"] == 0
        assert parts["sentiment"] != 0
        per_topic[prompt] += 1
        positive[prompt] += parts["sentiment"] > 0
    assert sum(positive.values()) / len(texts) == pytest.approx(0.5, abs=0.03)
    # the share of positive reviews differs by topic: 0.3, 0.5, 0.7
    for prompt, rate in zip(reviews.prompts, reviews.positive_rates):
        assert positive[prompt] / per_topic[prompt] == pytest.approx(rate, abs=0.05)
    assert reviews.positive_rates == pytest.approx((0.3, 0.5, 0.7))


def test_corpus_fits_the_smallest_world():
    tiny = ReviewsWorld(n_topics=2, words_per_class=1, max_new_tokens=2, negation=False, intensifier=False)
    assert set(tiny.corpus(200)) == {f"{p} {w} {EOS}" for p in tiny.prompts for w in ("good", "bad")}


@pytest.mark.parametrize("scale", ["ci", "cpu"])
def test_corpus_probs_is_the_corpus_distribution(scale):
    """The exact distribution against 40,000 corpus draws: every frequency within 4.5 standard
    errors (over ~250 to ~670 completions; seen at most 3.2), the probabilities sum to 1, and
    nothing is drawn that it gives probability 0."""
    world = ReviewsWorld.from_scale(get_scale(scale))
    draws = collections.defaultdict(collections.Counter)
    for text in world.corpus(40000, seed=3):
        prompt, completion = text.split(" ", 1)
        draws[prompt][completion] += 1
    for prompt in world.prompts:
        probs, m = world.corpus_probs(prompt), sum(draws[prompt].values())
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
        assert set(draws[prompt]) <= set(probs)
        for completion, p in probs.items():
            se = (p * (1 - p) / m) ** 0.5
            assert abs(draws[prompt][completion] / m - p) <= 4.5 * se, (prompt, completion)
    tiny = ReviewsWorld(n_topics=2, words_per_class=1, max_new_tokens=2, negation=False, intensifier=False,
                        positive_rates=(0.25, 0.5))
    assert tiny.corpus_probs(tiny.prompts[0]) == pytest.approx({f"good {EOS}": 0.25, f"bad {EOS}": 0.75})
    with pytest.raises(ValueError, match="not one of"):
        tiny.corpus_probs("<nothing>")


def test_scales_build_their_worlds():
    sizes = {}
    for name in ("ci", "cpu", "gpu"):
        world = ReviewsWorld.from_scale(get_scale(name))
        sizes[name] = (len(world.prompts), len(world.completion_vocab) - 1, world.max_new_tokens, world.enumerable)
    assert sizes == {"ci": (3, 8, 4, True), "cpu": (4, 10, 4, True), "gpu": (8, 18, 10, False)}


# -- arithmetic --------------------------------------------------------------------------------
def test_arithmetic_prompts_have_one_length():
    world = ArithmeticWorld.from_scale(get_scale("ci"))
    assert len(world.prompts) == 100 and world.prompts[34] == "3 + 4 ="
    assert world.max_new_tokens == 3  # up to 18: two digits and EOS
    assert world.vocab[:3] == list(SPECIALS) and world.completion_vocab[0] == EOS
    assert len(world.enumerate_completions()) == 1 + 10 + 100 + 1000 == count_completions(world)
    wide = ArithmeticWorld(19)
    assert wide.prompt(7, 12) == "0 7 + 1 2 =" and wide.operands("0 7 + 1 2 =") == (7, 12)
    assert {len(wide.encode(p)) for p in wide.prompts} == {6}
    assert wide.answer("0 7 + 1 2 =") == f"1 9 {EOS}"
    assert ArithmeticWorld(4).max_new_tokens == 2 and ArithmeticWorld(99).max_new_tokens == 4
    assert world.enumerable and not ArithmeticWorld(99).enumerable


def test_arithmetic_reward_is_exact():
    world = ArithmeticWorld(19)
    x = world.prompt(7, 12)
    assert world.gold_reward(x, f"1 9 {EOS}") == 1.0
    assert world.gold_reward(x, "1 9") == 0.0  # no EOS
    assert world.gold_reward(x, f"1 8 {EOS}") == 0.0
    assert world.gold_reward(x, f"0 1 9 {EOS}") == 0.0  # leading zero
    assert world.gold_reward(x, f"1 9 9 {EOS}") == 0.0
    assert world.gold_reward(world.prompt(0, 0), f"0 {EOS}") == 1.0
    # exactly one of all enumerable completions is right, for every prompt
    small = ArithmeticWorld(3)
    completions = small.enumerate_completions()
    for p in small.prompts:
        assert sum(small.gold_reward(p, c) for c in completions) == 1.0
    with pytest.raises(ValueError, match="prompt"):
        world.gold_reward("7 + 12 =", f"1 9 {EOS}")
    with pytest.raises(ValueError, match="max_operand"):
        ArithmeticWorld(0)


def test_arithmetic_corpus_noise_rate():
    world = ArithmeticWorld.from_scale(get_scale("ci"))
    texts = world.corpus(4000, seed=0, p_correct=0.5)
    correct = 0
    for text in texts:
        tokens = text.split()
        prompt, completion = " ".join(tokens[:4]), " ".join(tokens[4:])
        world.encode(text)
        assert tokens[-1] == EOS and len(tokens) - 4 <= world.max_new_tokens
        a, b = world.operands(prompt)
        guess = int("".join(tokens[4:-1]))
        assert tokens[4] != "0" or len(tokens) == 6  # no leading zero
        r = world.gold_reward(prompt, completion)
        correct += r
        if r == 0.0:  # off by one or two, or one digit slipped
            truth, wrong = str(a + b), str(guess)
            slip = len(truth) == len(wrong) and sum(x != y for x, y in zip(truth, wrong)) == 1
            assert abs(guess - (a + b)) <= 2 or slip
    assert correct / len(texts) == pytest.approx(0.5, abs=0.03)
    assert all(world.gold_reward(" ".join(t.split()[:4]), " ".join(t.split()[4:])) == 1.0
               for t in world.corpus(300, p_correct=1.0))
    assert not any(world.gold_reward(" ".join(t.split()[:4]), " ".join(t.split()[4:]))
                   for t in world.corpus(300, p_correct=0.0))
    with pytest.raises(ValueError, match="p_correct"):
        world.corpus(10, p_correct=1.5)
