import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_lab.algos import loop
from rlhf_lab.exact import Enumeration
from rlhf_lab.history import History
from rlhf_lab.worlds.reviews import ReviewsWorld


@pytest.fixture(scope="module")
def tiny():
    world = ReviewsWorld(n_topics=2, words_per_class=1, max_new_tokens=3)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(world.vocab), n_layer=1, n_head=1, n_embd=16, n_positions=16))
    return world, model.eval()


def test_evaluator_is_exact_and_zero_kl_for_the_reference(tiny):
    world, ref = tiny
    ev = loop.ExactEvaluator(world, ref)
    m = ev(ref)
    enum = Enumeration(world)
    p = enum.logprobs(ref).exp()
    assert m["kl/exact"] == pytest.approx(0.0, abs=1e-12)
    assert m["reward/gold"] == pytest.approx(float((p * enum.gold).sum(1).mean()), rel=1e-9)
    assert "reward/proxy" not in m


def test_evaluator_sees_training(tiny):
    world, ref = tiny
    policy = loop.trainable_copy(ref)
    assert policy is not ref and policy.training and not ref.training
    with torch.no_grad():
        policy.lm_head.weight.add_(0.5)  # tied to the embedding: changes every logit
    proxy = torch.ones(len(world.prompts), len(world.enumerate_completions()), dtype=torch.float64)
    m = loop.ExactEvaluator(world, ref, proxy=proxy)(policy)
    assert m["kl/exact"] > 0 and m["reward/proxy"] == pytest.approx(1.0)


def test_nan_loss_names_the_step_and_last_finite_metrics():
    h = History()
    h.log(3, {"reward/gold": 0.25, "loss/policy": 1.0})
    loop.check_finite(4, torch.tensor(0.5), h)
    with pytest.raises(FloatingPointError, match=r"at step 7.*reward/gold.*0\.25"):
        loop.check_finite(7, torch.tensor(math.nan), h)


def test_non_enumerable_world_is_refused():
    world = ReviewsWorld(n_topics=2, words_per_class=1, max_new_tokens=3, enumerable=False)
    with pytest.raises(ValueError, match="not enumerable"):
        loop.ExactEvaluator(world, torch.nn.Linear(1, 1))


def _perturbed(model, seed=1):
    import copy
    pol = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pol.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    return pol


def test_sampled_evaluator_agrees_with_the_exact_one(tiny):
    world, ref = tiny
    pol = _perturbed(ref)
    proxy_table = torch.arange(Enumeration(world).shape[1], dtype=torch.float64).expand(len(world.prompts), -1) / 10
    enum = Enumeration(world)

    def proxy_fn(prompts, completions):  # the table, looked up: same proxy for both evaluators
        rows = torch.tensor([world.prompts.index(p) for p in prompts])
        return proxy_table[rows, enum.index(completions)]

    exact = loop.ExactEvaluator(world, ref, proxy=proxy_table.contiguous())(pol)
    sampled = loop.SampledEvaluator(world, ref, proxy_fn=proxy_fn, samples=4000, seed=3)(pol)
    for exact_key, key in [("reward/gold", "reward/gold"), ("reward/proxy", "reward/proxy"),
                           ("kl/exact", "kl/estimate"), ("entropy/exact", "entropy/estimate")]:
        se = sampled[f"{key}_se"]
        assert 0 < se < 0.2, key
        assert abs(sampled[key] - exact[exact_key]) < 4 * se, (key, sampled[key], exact[exact_key], se)
    assert exact["kl/exact"] > 0.05  # the perturbation moved the policy: the KL check is not vacuous
    # the reference against itself: every sampled KL term is exactly 0
    assert loop.SampledEvaluator(world, ref, samples=64)(ref)["kl/estimate"] == pytest.approx(0.0, abs=1e-5)
    # fixed seed: the same policy gets the same estimate
    assert loop.SampledEvaluator(world, ref, samples=64)(pol) == loop.SampledEvaluator(world, ref, samples=64)(pol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on the device machine)")
def test_sampled_evaluator_takes_a_reference_on_another_device(tiny):
    """TRL's trainer moves the policy to the GPU and leaves π_ref where it was (chapter 11 at gpu)."""
    import copy

    world, ref = tiny
    on_gpu = copy.deepcopy(ref).cuda()
    m = loop.SampledEvaluator(world, ref, samples=256)(on_gpu)
    assert next(ref.parameters()).device.type == "cpu"  # the reference was not moved
    assert m["kl/estimate"] == pytest.approx(0.0, abs=1e-4)  # the same weights on two devices: KL 0
    moved = loop.SampledEvaluator(world, ref, samples=256)(_perturbed(ref).cuda())
    assert moved["kl/estimate"] > 10 * moved["kl/estimate_se"] > 0


def test_sampled_evaluator_rejects_bad_sizes(tiny):
    world, ref = tiny
    with pytest.raises(ValueError, match="samples"):
        loop.SampledEvaluator(world, ref, samples=1)
    with pytest.raises(ValueError, match="batch_size"):
        loop.SampledEvaluator(world, ref, batch_size=0)


def test_default_evaluator_is_exact_where_enumerable_else_sampled(tiny):
    world, ref = tiny
    assert isinstance(loop.default_evaluator(world, ref), loop.ExactEvaluator)
    hidden = ReviewsWorld(n_topics=2, words_per_class=1, max_new_tokens=3, enumerable=False)

    def proxy(prompts, completions):
        return torch.ones(len(prompts))

    ev = loop.default_evaluator(hidden, ref, proxy_fn=proxy)
    assert isinstance(ev, loop.SampledEvaluator)
    assert ev(ref)["reward/proxy"] == pytest.approx(1.0)
