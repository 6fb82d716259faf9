"""Supervised fine-tuning (rlhf_lab.algos.sft): the loss against hand-computed numbers, the
demonstrations' contract, teacher forcing against the sampler's own log-prob code, and training
that does what maximum likelihood must do."""

from __future__ import annotations

import math

import datasets
import pytest
import torch

from rlhf_lab import get_scale
from rlhf_lab.algos import sft
from rlhf_lab.algos.loop import ExactEvaluator
from rlhf_lab.models import build_policy
from rlhf_lab.rollout import completion_logprobs, encode_texts
from rlhf_lab.worlds.arithmetic import ArithmeticWorld
from rlhf_lab.worlds.reviews import ReviewsWorld

TINY = dict(n_layer=1, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def reviews():
    world = ReviewsWorld(n_topics=2, words_per_class=2, max_new_tokens=3)
    torch.manual_seed(0)
    return world, build_policy(world, get_scale("ci").replace(**TINY)).eval()


def test_loss_is_the_mean_nll_over_the_tokens_in_the_mask():
    logp = torch.tensor([[-0.5, -1.0, -0.2], [-2.0, float("nan"), float("-inf")]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    loss, stats = sft.sft_loss(logp, mask)
    assert loss.item() == pytest.approx((0.5 + 1.0 + 0.2 + 2.0) / 4)  # not the mean of row means
    assert stats["tokens"] == 4 and stats["seq_logp"] == pytest.approx((-1.7 - 2.0) / 2)
    loss.backward()
    assert torch.equal(logp.grad, torch.tensor([[-0.25, -0.25, -0.25], [-0.25, 0.0, 0.0]]))


def test_loss_refuses_an_empty_mask_and_nan_inside_it():
    with pytest.raises(ValueError, match="mask"):
        sft.sft_loss(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="token_logp"):
        sft.sft_loss(torch.tensor([[float("nan"), 0.0]]), torch.ones(1, 2))


def test_demonstrations_are_good_corpus_texts_in_trl_columns():
    world = ReviewsWorld(n_topics=3, words_per_class=3, max_new_tokens=4)
    demos = sft.demonstrations(world, 200, seed=3)
    assert isinstance(demos, datasets.Dataset) and demos.column_names == ["prompt", "completion"]
    assert len(demos) == 200 and set(demos["prompt"]) <= set(world.prompts)
    gold = world.gold_rewards(demos["prompt"], demos["completion"])
    assert bool((gold > 0).all())
    assert demos[:] == sft.demonstrations(world, 200, seed=3)[:]  # seeded
    assert demos[:] != sft.demonstrations(world, 200, seed=4)[:]
    noisy = sft.demonstrations(world, 200, noise=0.25, seed=3)
    bad = world.gold_rewards(noisy["prompt"], noisy["completion"]) <= 0
    assert int(bad.sum()) == 50  # exactly the asked fraction is careless
    sums = sft.demonstrations(ArithmeticWorld(max_operand=4), 50, seed=0)
    assert all(ArithmeticWorld(max_operand=4).gold_reward(x, y) == 1.0 for x, y in zip(sums["prompt"],
                                                                                        sums["completion"]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "n must be"), (dict(n=10, noise=1.5), "noise"), (dict(n=10, min_gold=float("nan")), "min_gold"),
    (dict(n=10, min_gold=5.0), "gold > 5.0"),
])
def test_demonstrations_name_the_bad_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sft.demonstrations(ReviewsWorld(n_topics=2, words_per_class=2, max_new_tokens=3), seed=0, **kwargs)


def test_teacher_forcing_matches_the_samplers_log_probs(reviews):
    world, policy = reviews
    demos = sft.demonstrations(world, 16, seed=0)
    batch = encode_texts(world, demos["prompt"], demos["completion"])
    logp, keep = sft.demonstration_logprobs(policy, world, batch)
    tc = batch.completion_ids.shape[1]
    with torch.no_grad():
        expected = completion_logprobs(policy, batch, world)
    torch.testing.assert_close(logp[:, -tc:].detach(), expected)
    assert torch.equal(keep[:, -tc:], batch.completion_mask) and int(keep[:, :-tc].sum()) == 0
    # with the prompt in the loss: one token per prompt (a topic token) has nothing to predict it
    _, keep_all = sft.demonstration_logprobs(policy, world, batch, include_prompt=True)
    assert torch.equal(keep_all, keep)
    arith = ArithmeticWorld(max_operand=3)
    sums = sft.demonstrations(arith, 8, seed=0)
    solver = build_policy(arith, get_scale("ci").replace(**TINY)).eval()
    b = encode_texts(arith, sums["prompt"], sums["completion"])
    _, keep_x = sft.demonstration_logprobs(solver, arith, b, include_prompt=True)
    n_prompt = [len(x.split()) - 1 for x in sums["prompt"]]  # "a + b =": 3 predicted tokens
    assert keep_x[:, : b.prompt_ids.shape[1] - 1].sum(1).tolist() == n_prompt


def test_training_memorises_one_demonstration(reviews):
    world, policy = reviews
    one = datasets.Dataset.from_dict({"prompt": [world.prompts[0]] * 8, "completion": ["good great [EOS]"] * 8})
    before = [p.detach().clone() for p in policy.parameters()]
    history = sft.train(policy, world, sft.SFTConfig(epochs=40, batch_size=8, lr=3e-3, eval_every=10,
                                                      progress=False), data=one)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))  # a copy was trained
    batch = encode_texts(world, one["prompt"][:1], one["completion"][:1])
    with torch.no_grad():
        p = completion_logprobs(history.policy, batch, world).sum().exp().item()
    assert p > 0.9  # maximum likelihood on one example puts the mass on it
    assert history["loss/sft"][-1] < 0.05 < history["loss/sft"][0]
    assert history.last("stats/token_accuracy") == 1.0
    assert history["loss/sft"] == history["stats/response_nll"]  # the prompt is not in the loss
    assert len(history.steps("reward/gold")) == 5  # steps 0, 10, 20, 30 and 40


def test_training_on_good_demonstrations_raises_the_exact_gold_reward(reviews):
    world, policy = reviews
    evaluator = ExactEvaluator(world, policy)
    history = sft.train(policy, world, sft.SFTConfig(epochs=6, lr=2e-3, eval_every=8, progress=False),
                        data=sft.demonstrations(world, 256, seed=0), evaluator=evaluator)
    gold = history["reward/gold"]
    assert gold[-1] > gold[0] + 0.3 and history.last("kl/exact") > 0
    assert math.isfinite(history.last("stats/grad_norm"))


def test_prompt_in_the_loss_raises_the_reported_loss_on_arithmetic():
    world = ArithmeticWorld(max_operand=4)
    torch.manual_seed(0)
    solver = build_policy(world, get_scale("ci").replace(**TINY)).eval()
    h = sft.train(solver, world, sft.SFTConfig(epochs=2, completion_only_loss=False, progress=False),
                  data=sft.demonstrations(world, 64, seed=0), evaluator=ExactEvaluator(world, solver))
    assert all(a > b for a, b in zip(h["loss/sft"], h["stats/response_nll"]))


@pytest.mark.parametrize("field, value, match", [
    ("epochs", 0, "SFTConfig.epochs must be >= 1"), ("lr", -1.0, "SFTConfig.lr must be > 0"),
    ("batch_size", 2.5, "SFTConfig.batch_size must be an integer"),
    ("completion_only_loss", "yes", "SFTConfig.completion_only_loss must be True or False"),
])
def test_config_names_the_bad_field(field, value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sft.SFTConfig(**{field: value})


def test_train_refuses_data_without_the_columns(reviews):
    world, policy = reviews
    with pytest.raises(ValueError, match="columns"):
        sft.train(policy, world, sft.SFTConfig(progress=False),
                  data=datasets.Dataset.from_dict({"prompt": ["<food>"], "response": ["good [EOS]"]}))
    with pytest.raises(TypeError, match="data must be"):
        sft.train(policy, world, sft.SFTConfig(progress=False), data=[("<food>", "good [EOS]")])
