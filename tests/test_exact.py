"""Exact ground truth: KL/entropy/expectation by hand, π*_β, and exact log-probs vs a token loop."""

import math
import time

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging

from rlhf_lab import exact
from rlhf_lab.scale import get_scale
from rlhf_lab.worlds.arithmetic import ArithmeticWorld
from rlhf_lab.worlds.base import EOS, SPECIALS, TokenWorld
from rlhf_lab.worlds.reviews import ReviewsWorld

logging.set_verbosity_error()  # a config built from scratch warns about GPT-2's default bos/eos ids
LOG = torch.log


def tiny_gpt2(world, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=len(world.vocab), n_layer=1, n_head=1, n_embd=16, n_positions=16)
    return GPT2LMHeadModel(GPT2Config(**{**cfg, **kw})).eval()


@torch.no_grad()
def brute_force(policy, world, prompts):
    """log π(y|x) by a plain loop: a forward pass on each prefix, a sum over tokens. (P, K)."""
    memo = {}

    def next_logp(ids):
        if ids not in memo:
            logits = policy(input_ids=torch.tensor([ids])).logits[0, -1]
            memo[ids] = torch.log_softmax(world.mask_logits(logits), -1).tolist()
        return memo[ids]

    out = []
    for prompt in prompts:
        row = []
        for completion in world.enumerate_completions():
            ids, total = tuple(world.encode(prompt)), 0.0
            for tok in world.encode(completion):
                total += next_logp(ids)[tok]
                ids += (tok,)
            row.append(total)
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


# -- tensor math by hand -----------------------------------------------------------------------
def test_kl_entropy_expected_by_hand():
    p = LOG(torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    q = LOG(torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64))
    # KL(p‖q) = ½ log(½/¼) + ½ log(½/¼) + 0·log 0 = log 2
    assert float(exact.kl(p, q)) == pytest.approx(math.log(2))
    assert float(exact.kl(q, q)) == 0.0
    assert exact.kl(q, p) == math.inf  # q has mass where p has none
    assert float(exact.entropy(p)) == pytest.approx(math.log(2))
    assert float(exact.entropy(q)) == pytest.approx(1.5 * math.log(2))
    assert float(exact.entropy(LOG(torch.tensor([1.0, 0.0])))) == 0.0  # no NaN from 0·log 0
    # values where π = 0 are ignored, even if infinite
    assert float(exact.expected(p, torch.tensor([1.0, 3.0, math.inf], dtype=torch.float64))) == 2.0
    batch = torch.stack([p, q])  # (2, 3): one result per row
    assert exact.entropy(batch).shape == (2,)
    assert exact.kl(batch, q.expand(2, 3)).tolist() == pytest.approx([math.log(2), 0.0])


def test_optimum_by_hand_and_limits():
    logp_ref = LOG(torch.tensor([0.5, 0.5], dtype=torch.float64))
    rewards = torch.tensor([0.0, math.log(3)], dtype=torch.float64)
    # π* ∝ π_ref·exp(r/β) at β = 1: ∝ (½, 3/2) → (¼, ¾)
    assert exact.kl_regularized_optimum(logp_ref, rewards, 1.0).exp().tolist() == pytest.approx([0.25, 0.75])
    g = torch.Generator().manual_seed(0)
    logp_ref = torch.log_softmax(torch.randn(4, 6, generator=g, dtype=torch.float64), -1)
    rewards = torch.randn(4, 6, generator=g, dtype=torch.float64)
    big = exact.kl_regularized_optimum(logp_ref, rewards, 1e8)
    assert torch.allclose(big.exp(), logp_ref.exp(), atol=1e-7)  # β → ∞: π_ref
    small = exact.kl_regularized_optimum(logp_ref, rewards, 1e-4).exp()  # β → 0: argmax r
    assert torch.equal(small.argmax(-1), rewards.argmax(-1))
    assert bool((small.max(-1).values > 1 - 1e-6).all())
    for beta in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="beta"):
            exact.kl_regularized_optimum(logp_ref, rewards, beta)


def test_optimum_maximises_the_regularised_objective():
    g = torch.Generator().manual_seed(1)
    logp_ref = torch.log_softmax(torch.randn(8, generator=g, dtype=torch.float64), -1)
    rewards = torch.randn(8, generator=g, dtype=torch.float64)
    beta = 0.3

    def objective(logp):
        return float(exact.expected(logp, rewards) - beta * exact.kl(logp, logp_ref))

    best = exact.kl_regularized_optimum(logp_ref, rewards, beta)
    # its value is β log Z, Z = Σ π_ref exp(r/β)
    assert objective(best) == pytest.approx(beta * float(torch.logsumexp(logp_ref + rewards / beta, -1)))
    for _ in range(200):
        other = torch.log_softmax(best + 0.3 * torch.randn(8, generator=g, dtype=torch.float64), -1)
        assert objective(other) < objective(best)


# -- exact log-probs vs a token-by-token loop --------------------------------------------------
@pytest.mark.parametrize(
    "world",
    [
        ReviewsWorld(n_topics=2, words_per_class=1, max_new_tokens=3, negation=False, intensifier=False),
        ReviewsWorld(n_topics=2, words_per_class=1, max_new_tokens=3),
        ArithmeticWorld(2),
    ],
    ids=["reviews-W2-L3", "reviews-W4-L3", "arithmetic"],
)
def test_completion_logprobs_match_brute_force(world):
    policy = tiny_gpt2(world)
    prompts = world.prompts[-2:][::-1]  # a subset, out of order
    fast = exact.completion_logprobs(policy, world, prompts, batch_size=3)  # forces many batches
    slow = brute_force(policy, world, prompts)
    assert fast.shape == (2, exact.count_completions(world)) and fast.dtype == torch.float64
    assert torch.allclose(fast, slow, atol=1e-5)
    # a distribution per prompt: probabilities sum to 1
    assert torch.allclose(fast.logsumexp(-1), torch.zeros(2, dtype=torch.float64), atol=1e-5)


class TwoLengthWorld(TokenWorld):
    """Prompts of different token lengths (``a`` and ``a b``), to test the grouping."""

    def __init__(self):
        self.name, self.enumerable, self.max_new_tokens = "two-lengths", True, 3
        self.vocab = [*SPECIALS, "a", "b", "x", "y"]
        self.prompts = ["a", "a b", "b"]
        self.completion_vocab = [EOS, "x", "y"]

    def corpus(self, n, seed=0):
        return ["a x " + EOS] * n

    def gold_reward(self, prompt, completion):
        return float(completion.split().count("x"))


def test_prompts_of_different_lengths():
    world = TwoLengthWorld()
    policy = tiny_gpt2(world, seed=3)
    fast = exact.completion_logprobs(policy, world)
    slow = brute_force(policy, world, world.prompts)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_eval_mode_and_errors():
    world = ReviewsWorld(n_topics=1, words_per_class=1, max_new_tokens=2)
    policy = tiny_gpt2(world)
    policy.train()  # dropout on: exact log-probs must still be deterministic
    first, second = exact.completion_logprobs(policy, world), exact.completion_logprobs(policy, world)
    assert torch.equal(first, second) and policy.training
    with pytest.raises(ValueError, match="logits"):
        exact.completion_logprobs(tiny_gpt2(world, vocab_size=len(world.vocab) + 1), world)
    with pytest.raises(ValueError, match="enumerable"):
        exact.completion_logprobs(policy, ReviewsWorld(n_topics=1, enumerable=False))
    with pytest.raises(ValueError, match="batch_size"):
        exact.completion_logprobs(policy, world, batch_size=0)


def test_ci_scale_is_fast():
    world = ReviewsWorld.from_scale(get_scale("ci"))
    policy = tiny_gpt2(world, n_layer=2, n_head=2, n_embd=64, n_positions=32)
    exact.completion_logprobs(policy, world)  # warm-up
    start = time.perf_counter()
    logp = exact.completion_logprobs(policy, world)
    elapsed = time.perf_counter() - start
    assert logp.shape == (3, 4681)
    assert elapsed < 3.0  # about 0.2 s on an idle 2-core CPU; slack for a busy CI machine


# -- the enumeration object --------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    world = ReviewsWorld(n_topics=2, words_per_class=1, max_new_tokens=3)
    return world, exact.Enumeration(world)


def test_enumeration_holds_gold_rewards(small):
    world, enum = small
    assert enum.shape == (2, 85)  # W = 4 (good, bad, not, very), L = 3: 1 + 4 + 16 + 64
    k = enum.completions.index(f"very good {EOS}")
    assert float(enum.gold[1, k]) == pytest.approx(0.9) == world.gold_reward(world.prompts[1], f"very good {EOS}")
    idx = enum.index([f"very good {EOS}", EOS])
    assert idx.tolist() == [k, 0] and enum.texts(idx) == [f"very good {EOS}", EOS]
    with pytest.raises(ValueError, match="not in the enumeration"):
        enum.index(["great"])


def test_metrics_by_hand(small):
    _, enum = small
    p, k = enum.shape
    uniform = torch.full((p, k), -math.log(k), dtype=torch.float64)
    m = enum.metrics(uniform, uniform, proxy=torch.ones(p, k))
    assert m["reward/gold"] == pytest.approx(float(enum.gold.mean()))
    assert m["reward/proxy"] == pytest.approx(1.0)
    assert m["kl/exact"] == pytest.approx(0.0) and m["entropy/exact"] == pytest.approx(math.log(k))
    # prompt 0 puts all its mass on "very good", prompt 1 stays uniform: metrics average the two
    point = uniform.clone()
    point[0] = -math.inf
    point[0, enum.index([f"very good {EOS}"])[0]] = 0.0
    m = enum.metrics(point, uniform)
    assert m["reward/gold"] == pytest.approx((0.9 + float(enum.gold[1].mean())) / 2)
    assert m["kl/exact"] == pytest.approx(math.log(k) / 2)
    assert m["entropy/exact"] == pytest.approx(math.log(k) / 2)
    assert set(enum.metrics(uniform)) == {"reward/gold", "entropy/exact"}
    with pytest.raises(ValueError, match="logp"):
        enum.metrics(uniform[:, :-1])


def test_sampling_is_exact_and_matches_the_kl(small):
    _, enum = small
    g = torch.Generator().manual_seed(0)
    logp_ref = torch.log_softmax(torch.randn(enum.shape, generator=g, dtype=torch.float64), -1)
    logp = enum.optimum(logp_ref, beta=0.5)  # π*_β of the gold reward
    idx = enum.sample(logp, 20000, generator=torch.Generator().manual_seed(1))
    assert idx.shape == (2, 20000)
    freq = torch.stack([torch.bincount(row, minlength=enum.shape[1]) for row in idx]).double() / 20000
    assert (freq - logp.exp()).abs().max() < 0.015
    # the Monte Carlo mean of log π − log π_ref over samples of π is the exact KL
    log_ratio = logp.gather(1, idx) - logp_ref.gather(1, idx)
    m = enum.metrics(logp, logp_ref)
    assert float(log_ratio.mean()) == pytest.approx(m["kl/exact"], rel=0.05)
    # the optimum trades KL for gold: more reward than π_ref
    assert m["reward/gold"] > enum.metrics(logp_ref)["reward/gold"]
