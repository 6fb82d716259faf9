"""GRPOConfig validation and train_grpo: learning, the sampled-metrics path, the NaN guard."""

import math

import pytest
import torch

from rlhf_lab import get_scale
from rlhf_lab.algos import grpo
from rlhf_lab.algos.grpo import GRPOConfig, pass_at_k, train_grpo
from rlhf_lab.algos.loop import SampledEvaluator
from rlhf_lab.exact import Enumeration
from rlhf_lab.models import pretrain_reference
from rlhf_lab.worlds.arithmetic import ArithmeticWorld

TINY = dict(n_layer=1, n_head=2, n_embd=32, pretrain_steps=150, pretrain_batch_size=64, corpus_size=2000)


@pytest.fixture(scope="module")
def tiny():
    """Sums up to 3 + 3 (16 prompts, 111 completions) and a one-layer π_ref trained on them."""
    world = ArithmeticWorld(max_operand=3)
    ref, _ = pretrain_reference(world, get_scale("ci").replace(**TINY), progress=False)
    return world, ref


def config(**changes) -> GRPOConfig:
    return GRPOConfig(**{"steps": 3, "prompts_per_step": 4, "group_size": 4, "progress": False, **changes})


@pytest.mark.parametrize("field, value, allowed", [
    ("group_size", 1, ">= 2"), ("prompts_per_step", 0, ">= 1"), ("steps", 0, ">= 1"),
    ("lr", 0.0, "> 0"), ("lr", math.nan, "> 0"), ("updates_per_batch", 0, ">= 1"),
    ("eps_low", 0.0, "in (0, 1)"), ("eps_low", 1.0, "in (0, 1)"), ("eps_high", 0.0, "> 0 or None"),
    ("beta", -0.01, ">= 0"), ("kl_placement", "advantage", "one of"), ("loss_type", "ppo", "one of"),
    ("scale_rewards", "std", "one of"), ("temperature", 0.0, "> 0"), ("max_grad_norm", 0.0, "> 0"),
    ("eval_every", 0, ">= 1"),
])
def test_config_rejects_bad_values(field, value, allowed):
    with pytest.raises(ValueError, match=rf"GRPOConfig\.{field} must be {__import__('re').escape(allowed)}"):
        GRPOConfig(**{field: value})


def test_config_defaults_are_valid_and_clip_higher_is_accepted():
    assert GRPOConfig().group_size == 8
    assert GRPOConfig(eps_low=0.2, eps_high=0.28, kl_placement="reward", beta=0.04).eps_high == 0.28


def test_pass_at_k_by_hand():
    gold = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    logp = torch.tensor([[0.5, 0.25, 0.25], [0.4, 0.2, 0.4]]).log()
    # p = (0.5, 0.2): pass@1 = 0.35, pass@2 = ((1 − 0.25) + (1 − 0.64)) / 2
    assert pass_at_k(logp, gold, 1) == pytest.approx(0.35)
    assert pass_at_k(logp, gold, 2) == pytest.approx((0.75 + 0.36) / 2)


def test_grpo_raises_pass_at_1_and_leaves_the_reference_alone(tiny):
    world, ref = tiny
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    calls = []
    h = train_grpo(ref, world, config(steps=30, prompts_per_step=16, group_size=8, lr=1e-3, eval_every=10),
                   callback=lambda step, metrics, history: calls.append(step))
    print("pass@1:", [round(v, 3) for v in h["pass@1"]], "KL:", [round(v, 3) for v in h["kl/exact"]])
    assert h.steps("pass@1") == [0, 10, 20, 30]
    assert h["pass@1"][-1] > h["pass@1"][0] + 0.1
    assert h["pass@1"][0] == pytest.approx(h["reward/gold"][0])
    assert h["kl/exact"][0] == pytest.approx(0.0, abs=1e-9) and h["kl/exact"][-1] > 0
    assert h.policy is not ref and all(torch.equal(before[k], v) for k, v in ref.state_dict().items())
    assert len(calls) == 30 + 4  # every batch and every evaluation
    for key in ("stats/frac_reward_zero_std", "stats/entropy", "stats/clip_ratio/low",
                "stats/clip_ratio/high", "stats/completion_length", "reward/mean", "loss/policy"):
        assert len(h[key]) == 30, key


def test_non_enumerable_world_is_measured_by_sampling(tiny):
    world, ref = tiny
    hidden = ArithmeticWorld(max_operand=3, enumerable=False)
    h = train_grpo(ref, hidden, config(steps=2, prompts_per_step=16, group_size=16))
    assert "kl/exact" not in h and "entropy/exact" not in h
    # a SampledEvaluator stands in for the exact one: its pass@1 at step 0 (π = π_ref) agrees
    # with the exact pass@1 of the enumerable twin world within 4 standard errors
    twin = Enumeration(world)
    exact_pass = pass_at_k(twin.logprobs(ref), twin.gold, 1)
    assert abs(h["pass@1"][0] - exact_pass) < 4 * h["pass@1_se"][0]
    assert h["kl/estimate"][0] == pytest.approx(0.0, abs=1e-5)
    # before the first update π = π_ref: the k3 estimate is 0 and the chain-rule entropy
    # estimate is close to the exact entropy of the (enumerable) twin world
    assert h["kl/sampled"][0] == pytest.approx(0.0, abs=1e-5)
    enum = Enumeration(world)
    exact = enum.metrics(enum.logprobs(ref))["entropy/exact"]
    assert h["entropy/sampled"][0] == pytest.approx(exact, rel=0.15)
    assert h["kl/sampled"][1] > 0


def test_grpo_gain_is_measured_by_sampling_as_in_chapter_08(tiny):
    """The chapter's full-size section: a given SampledEvaluator is used on its schedule, and the
    rise of sampled pass@1 (and the fall of the entropy) exceeds 3 combined standard errors."""
    world, ref = tiny
    hidden = ArithmeticWorld(max_operand=3, enumerable=False)
    sampled = SampledEvaluator(hidden, ref, samples=1024)
    h = train_grpo(ref, hidden, config(steps=30, prompts_per_step=16, group_size=8, lr=1e-3, eval_every=10),
                   evaluator=sampled)
    assert h.steps("pass@1") == h.steps("kl/estimate_se") == [0, 10, 20, 30]
    assert "kl/exact" not in h

    def change(key):
        return h[key][-1] - h[key][0], math.hypot(h[f"{key}_se"][-1], h[f"{key}_se"][0])

    print({key: [round(v, 3) for v in h[key]] for key in ("pass@1", "entropy/estimate", "kl/estimate")})
    assert change("pass@1")[0] > 3 * change("pass@1")[1]
    assert -change("entropy/estimate")[0] > 3 * change("entropy/estimate")[1]
    assert h["kl/estimate"][-1] > 3 * h["kl/estimate_se"][-1]


def test_nan_loss_stops_training_naming_the_step(tiny):
    world, ref = tiny

    def broken(prompts, completions):
        return torch.full((len(prompts),), math.nan)

    with pytest.raises(FloatingPointError, match="at step 0"):
        train_grpo(ref, world, config(), reward_fn=broken)


def test_equal_rewards_give_no_update_when_dropped(tiny):
    world, ref = tiny

    def constant(prompts, completions):
        return torch.ones(len(prompts))

    h = train_grpo(ref, world, config(drop_zero_std=True), reward_fn=constant)
    assert h["stats/frac_reward_zero_std"] == [1.0, 1.0, 1.0]
    assert "loss/policy" not in h
    assert all(torch.equal(a, b) for a, b in zip(h.policy.parameters(), ref.parameters()))
    # with the KL in the reward, a constant reward still trains: −β·k1 pulls a policy that has
    # drifted back towards π_ref (at π = π_ref, k1 = 0 and there is nothing to pull)
    drifted = train_grpo(ref, world, config(steps=4, lr=3e-3)).policy
    h = train_grpo(drifted, world, config(steps=6, lr=3e-3, beta=1.0, kl_placement="reward", eval_every=6),
                   reward_fn=constant, ref_policy=ref)
    assert h["stats/frac_reward_zero_std"][-1] == 1.0
    assert 0 < h["kl/exact"][-1] < 0.8 * h["kl/exact"][0], h["kl/exact"]


def test_kl_in_the_reward_is_applied_after_standardising():
    """In a group of equal rewards the penalty's advantages shrink with β (→ 0 as β → 0);
    penalising before standardising would give advantages of size ~1 at every β tried (β·std(k1) ≫ eps)."""
    gen = torch.Generator().manual_seed(0)
    rewards = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
    seq_kl = torch.rand(2, 4, generator=gen) * 2.0
    sizes = {}
    for beta in (0.1, 0.01, 0.001):
        adv = grpo.kl_reward_advantages(rewards, seq_kl, beta)
        assert torch.allclose(adv[0], -beta * (seq_kl[0] - seq_kl[0].mean()))
        assert adv[0].sum().abs() < 1e-6  # centred: a baseline, no change in expectation
        before = grpo.group_advantages(rewards - beta * seq_kl)  # the pitfall
        sizes[beta] = (adv[0].abs().max().item(), before[0].abs().max().item())
        assert before[0].abs().max() > 0.8  # ~1 at every β tried
    assert sizes[0.001][0] < 0.01 * sizes[0.1][0] * 1.01 and sizes[0.001][0] < 2e-3
    # the group with a reward signal keeps its standardised advantages, up to the β term
    assert torch.allclose(grpo.kl_reward_advantages(rewards, seq_kl, 0.0), grpo.group_advantages(rewards))
    with pytest.raises(ValueError, match="seq_kl"):
        grpo.kl_reward_advantages(rewards, seq_kl[:, :3], 0.1)


def test_first_ratio_is_exactly_one(tiny, monkeypatch):
    """log π_old is teacher-forced like log π_θ, so before any update ρ = 1 exactly and the
    clip never acts with μ = 1."""
    world, ref = tiny
    seen = []
    real = grpo.grpo_loss

    def spy(logp, logp_old, *args, **kwargs):
        seen.append((logp.detach().clone(), logp_old.clone(), args[2].bool()))
        return real(logp, logp_old, *args, **kwargs)

    monkeypatch.setattr(grpo, "grpo_loss", spy)
    h = train_grpo(ref, world, config(steps=2, updates_per_batch=1))
    logp, logp_old, mask = seen[0]
    assert mask.any()
    assert torch.equal(logp[mask], logp_old[mask])
    assert h["stats/clip_ratio/region"] == [0.0, 0.0]


@pytest.mark.parametrize("changes", [dict(loss_type="dr_grpo", scale_rewards="none"),
                                     dict(loss_type="dapo", eps_high=0.28, drop_zero_std=True),
                                     dict(beta=0.1, kl_placement="loss")])
def test_variants_run_and_log_finite_metrics(tiny, changes):
    world, ref = tiny
    h = train_grpo(ref, world, config(**changes))
    assert all(math.isfinite(v) for key in h for v in h[key])
    assert 0.0 <= min(h["stats/clip_ratio/high"]) and max(h["stats/clip_ratio/high"]) <= 1.0
    assert grpo.PASS_K[0] == 1 and "pass@1" in h


def test_rloo_advantages_from_the_config(tiny, monkeypatch):
    """advantage="rloo" hands grpo_loss the leave-one-out advantages of the batch's rewards."""
    world, ref = tiny
    with pytest.raises(ValueError, match="scale_rewards must be 'none'"):
        config(advantage="rloo")
    with pytest.raises(ValueError, match="advantage must be one of"):
        config(advantage="ppo")
    seen, real = [], grpo.grpo_loss
    rewards_seen = []

    def score(prompts, completions):
        r = world.gold_rewards(prompts, completions)
        rewards_seen.append(r.clone())
        return r

    def spy(logp, logp_old, logp_ref, adv, *args, **kwargs):
        seen.append(adv.clone())
        return real(logp, logp_old, logp_ref, adv, *args, **kwargs)

    monkeypatch.setattr(grpo, "grpo_loss", spy)
    cfg = config(steps=1, updates_per_batch=1, advantage="rloo", scale_rewards="none")
    train_grpo(ref, world, cfg, reward_fn=score)
    # the first call scores every completion once, for the exact reward/proxy; the second, the batch
    expected = grpo.rloo_advantages(rewards_seen[1].view(cfg.prompts_per_step, cfg.group_size)).flatten()
    assert torch.allclose(seen[0], expected)


def test_entropy_bonus_holds_the_entropy_up(tiny):
    world, ref = tiny
    with pytest.raises(ValueError, match="entropy_coef"):
        config(entropy_coef=-0.1)
    plain = train_grpo(ref, world, config(steps=6, lr=3e-3, eval_every=6))
    bonus = train_grpo(ref, world, config(steps=6, lr=3e-3, eval_every=6, entropy_coef=1.0))
    assert bonus["entropy/exact"][-1] > plain["entropy/exact"][-1]
    assert bonus["entropy/exact"][-1] > bonus["entropy/exact"][0] - 0.05  # a strong bonus: no collapse


def test_kl_in_the_reward_applies_to_the_rloo_baseline_too():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    seq_kl = torch.tensor([[0.5, 1.0, 0.0, 2.0]])
    adv = grpo.kl_reward_advantages(rewards, seq_kl, 0.1, advantage="rloo")
    assert torch.allclose(adv, grpo.rloo_advantages(rewards) - 0.1 * (seq_kl - seq_kl.mean()))
    with pytest.raises(ValueError, match="advantage must be one of"):
        grpo.kl_reward_advantages(rewards, seq_kl, 0.1, advantage="ppo")
