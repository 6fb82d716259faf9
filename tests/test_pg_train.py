"""The policy-gradient track's training code (chapters 02–04): configs, the actor–critic batch,
and short training runs of REINFORCE, A2C and PPO on a tiny reviews world.

The runs use a freshly initialised one-layer GPT-2 (no pretraining, no cache), so they take a
few seconds each; "improves" is measured with the exact gold reward.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_lab.algos import a2c, ppo, reinforce
from rlhf_lab.core import gae, kl_penalty
from rlhf_lab.exact import Enumeration
from rlhf_lab.models import ValueModel
from rlhf_lab.worlds.reviews import ReviewsWorld

TRAINERS = {
    "reinforce": (reinforce.train, reinforce.ReinforceConfig),
    "a2c": (a2c.train, a2c.A2CConfig),
    "ppo": (ppo.train, ppo.PPOConfig),
}


@pytest.fixture(scope="module")
def tiny():
    world = ReviewsWorld(n_topics=2, words_per_class=1, max_new_tokens=3)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(world.vocab), n_layer=1, n_head=2, n_embd=32, n_positions=16,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return world, GPT2LMHeadModel(config).eval()


# -- configs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("clip_eps", [0.0, 1.0, 1.5, -0.2, math.nan])
def test_ppo_rejects_clip_eps_outside_the_open_unit_interval(clip_eps):
    with pytest.raises(ValueError, match=r"PPOConfig\.clip_eps must be in \(0, 1\)"):
        ppo.PPOConfig(clip_eps=clip_eps)


@pytest.mark.parametrize("config_cls", [reinforce.ReinforceConfig, a2c.A2CConfig, ppo.PPOConfig])
def test_every_config_rejects_a_negative_beta(config_cls):
    with pytest.raises(ValueError, match=rf"{config_cls.__name__}\.beta must be >= 0; got -0\.1"):
        config_cls(beta=-0.1)
    assert config_cls(beta=0.0).beta == 0.0


def test_ppo_rejects_fewer_than_one_epoch():
    with pytest.raises(ValueError, match=r"PPOConfig\.epochs must be >= 1; got 0"):
        ppo.PPOConfig(epochs=0)


@pytest.mark.parametrize(("batch", "minibatch"), [(64, 24), (64, 0), (64, 128), (10, 4)])
def test_ppo_batch_must_split_into_whole_minibatches(batch, minibatch):
    with pytest.raises(ValueError, match=rf"PPOConfig\.minibatch_size must be a divisor of batch_size={batch}"):
        ppo.PPOConfig(batch_size=batch, minibatch_size=minibatch)
    assert ppo.PPOConfig(batch_size=batch, minibatch_size=batch).minibatch_size == batch


@pytest.mark.parametrize(("config_cls", "field", "value", "allowed"), [
    (a2c.A2CConfig, "lam", 1.5, r"in \[0, 1\]"),
    (ppo.PPOConfig, "gamma", -0.1, r"in \[0, 1\]"),
    (ppo.PPOConfig, "lr", math.nan, "> 0"),
    (ppo.PPOConfig, "value_clip_eps", 0.0, "> 0 or None"),
    (reinforce.ReinforceConfig, "baseline", "median", "one of"),
    (reinforce.ReinforceConfig, "batch_size", 1, ">= 2 with the mean baseline"),
    (reinforce.ReinforceConfig, "steps", 0, ">= 1"),
])
def test_configs_name_the_field_and_its_range(config_cls, field, value, allowed):
    with pytest.raises(ValueError, match=rf"{config_cls.__name__}\.{field} must be {allowed}"):
        config_cls(**{field: value})


# -- the actor–critic batch -----------------------------------------------------------------------
def test_token_rewards_hand_example():
    # β = 0.5; row 0 has 3 tokens (score 2 at the last), row 1 has 1 token (score −1)
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, 0.0, 0.0]])
    logp_ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.1, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    r = a2c.token_rewards(torch.tensor([2.0, -1.0]), logp, logp_ref, mask, beta=0.5)
    # k1 = logp − logp_ref: (0.5, −1, 0) and (−0.2); r_t = −0.5·k1 + score at the last token
    expected = torch.tensor([[-0.25, 0.5, 2.0], [0.1 - 1.0, 0.0, 0.0]])
    assert torch.allclose(r, expected)


def test_explained_variance_and_a2c_loss_by_hand():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    ret = torch.tensor([[1.0, 2.0, 99.0], [3.0, 4.0, 5.0]])
    assert a2c.explained_variance(ret, ret, mask) == pytest.approx(1.0)
    assert a2c.explained_variance(torch.full_like(ret, 3.0), ret, mask) == pytest.approx(0.0)
    logp = torch.tensor([[-1.0, -2.0, float("nan")]], requires_grad=True)
    loss, _ = a2c.a2c_policy_loss(logp, torch.tensor([[2.0, -1.0, 5.0]]), torch.tensor([[1, 1, 0]]))
    # −mean(2·(−1), (−1)·(−2)) = −mean(−2, 2) = 0; d/dlogp = −A/2 on valid tokens, 0 on padding
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0)
    assert torch.allclose(logp.grad, torch.tensor([[-1.0, 0.5, 0.0]]))


def _reference_gae(rewards, values, lengths, gamma, lam):
    """Â_t = Σ_l (γλ)^l δ_{t+l} by the definition: a double loop over each row's valid tokens."""
    adv = torch.zeros_like(rewards)
    for i, n in enumerate(lengths):
        v = [float(values[i, t]) for t in range(n)] + [0.0]
        delta = [float(rewards[i, t]) + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            adv[i, t] = sum((gamma * lam) ** k * delta[t + k] for k in range(n - t))
    return adv


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.5)])
def test_ppo_batch_returns_are_gae_of_the_kl_shaped_rewards(tiny, gamma, lam):
    world, model = tiny
    ref = GPT2LMHeadModel(model.config).eval()  # a different π_ref, so the KL term is not 0
    values = ValueModel.from_policy(model)
    torch.nn.init.normal_(values.head.linear.weight, std=0.5)  # non-zero values to bootstrap from
    prompts = world.prompts * 8
    exp = a2c.collect(model, ref, values, world, prompts, world.gold_rewards, beta=0.3, gamma=gamma, lam=lam,
                      missing_eos_score=-1.0, whiten=False, generator=torch.Generator().manual_seed(0))
    mask = exp.mask
    scores = world.gold_rewards(exp.rollout.prompts, exp.rollout.completions)
    scores = torch.where(exp.rollout.truncated, -1.0, scores)
    assert torch.allclose(exp.scores, scores)
    # r_t = −β·k1_t, plus the score at the last token; returns by core.gae and by the definition
    k1 = torch.where(mask, kl_penalty(exp.logp_old, exp.logp_ref, "k1"), 0.0)
    assert torch.allclose(exp.rewards.sum(1), scores - 0.3 * k1.sum(1), atol=1e-5)
    adv, ret = gae(exp.rewards, exp.values_old, mask, gamma, lam)
    assert torch.allclose(exp.ret, ret) and torch.allclose(exp.adv, adv)
    lengths = mask.sum(1).tolist()
    assert torch.allclose(exp.adv, _reference_gae(exp.rewards, exp.values_old, lengths, gamma, lam), atol=1e-5)
    # V_old(s_t) is the value of the prefix (x, y_<t): recompute one row without any padding
    i = max(range(len(prompts)), key=lambda j: lengths[j])
    ids = torch.cat([exp.rollout.prompt_ids[i][exp.rollout.prompt_mask[i].bool()],
                     exp.rollout.completion_ids[i][: lengths[i]]])[None]
    with torch.no_grad():
        direct = values(ids, torch.ones_like(ids))[0]  # (Tp + n,)
    tp = int(exp.rollout.prompt_mask[i].sum())
    assert torch.allclose(exp.values_old[i, : lengths[i]], direct[tp - 1: tp - 1 + lengths[i]], atol=1e-5)


def test_whitened_advantages_have_mean_zero_and_unit_std(tiny):
    world, model = tiny
    exp = a2c.collect(model, model, ValueModel.from_policy(model), world, world.prompts * 16, world.gold_rewards,
                      beta=0.0, gamma=1.0, lam=0.95, missing_eos_score=None, whiten=True,
                      generator=torch.Generator().manual_seed(1))
    adv = exp.adv[exp.mask]
    assert float(adv.mean()) == pytest.approx(0.0, abs=1e-5) and float(adv.std()) == pytest.approx(1.0, abs=1e-3)


# -- training runs --------------------------------------------------------------------------------
SMOKE = {
    "reinforce": dict(steps=12, batch_size=32, lr=3e-3),
    "a2c": dict(steps=12, batch_size=32, lr=3e-3),
    "ppo": dict(steps=12, batch_size=32, minibatch_size=16, epochs=2, lr=3e-3),
}


@pytest.mark.parametrize("name", list(TRAINERS))
def test_short_run_raises_exact_gold_reward(tiny, name):
    world, model = tiny
    train, config_cls = TRAINERS[name]
    before = [p.detach().clone() for p in model.parameters()]
    calls = []
    history = train(model, world, config_cls(**SMOKE[name], eval_every=4, progress=False),
                    lambda step, metrics, h: calls.append(step))
    gold = history["reward/gold"]
    assert history.steps("reward/gold") == [0, 4, 8, 12]
    assert gold[-1] > gold[0] + 0.3, gold
    assert {"kl/exact", "entropy/exact", "loss/policy", "stats/grad_norm", "stats/entropy"} <= set(history.keys())
    assert history["kl/exact"][0] == pytest.approx(0.0, abs=1e-9) and history["kl/exact"][-1] > 0
    assert len(calls) == 12 + 4  # every per-step log and every evaluation
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # π_ref untouched
    assert history.policy is not model
    if name != "reinforce":
        assert {"loss/value", "stats/explained_var"} <= set(history.keys())
    if name == "ppo":
        assert {"stats/clipfrac", "stats/approx_kl"} <= set(history.keys())
        assert max(history["stats/approx_kl"]) > 0


def test_a_proxy_reward_is_logged_exactly(tiny):
    world, model = tiny
    n_words = lambda prompts, completions: torch.tensor([float(len(c.split())) for c in completions])  # noqa: E731
    history = ppo.train(model, world, ppo.PPOConfig(steps=2, batch_size=8, minibatch_size=8, epochs=1,
                                                    eval_every=2, progress=False), reward_fn=n_words)
    # step 0 is π_ref's exact expectation of the proxy, Σ_y π_ref(y)·(number of tokens of y)
    enum = Enumeration(world)
    lengths = torch.tensor([float(len(c.split())) for c in enum.completions], dtype=torch.float64)
    expected = float((enum.logprobs(model).exp() * lengths).sum(1).mean())
    assert history["reward/proxy"][0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", list(TRAINERS))
def test_a_nan_loss_stops_training_naming_the_step(tiny, name):
    world, model = tiny
    train, config_cls = TRAINERS[name]
    nan_reward = lambda prompts, completions: torch.full((len(prompts),), float("nan"))  # noqa: E731
    with pytest.raises(FloatingPointError, match="at step 0"):
        train(model, world, config_cls(**{**SMOKE[name], "steps": 3}, progress=False), reward_fn=nan_reward)
