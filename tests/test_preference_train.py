"""The preference track's training code: configs, rejection-sampling selection, DPO/SimPO and
rejection-sampling fine-tuning smoke runs (chapters 05–07)."""

from __future__ import annotations

import math

import datasets
import pytest
import torch

from rlhf_lab import data, exact
from rlhf_lab.algos.best_of_n import (
    RejectionSamplingConfig,
    best_of_n,
    encode_texts,
    select_samples,
    sequence_logps,
    train_rejection_sampling,
)
from rlhf_lab.algos.dpo import DPOConfig, train_dpo, train_dpo_bandit
from rlhf_lab.algos.loop import ExactEvaluator
from rlhf_lab.algos.reward_model import label_ceiling
from rlhf_lab.models import build_policy
from rlhf_lab.scale import get_scale
from rlhf_lab.worlds import bandit as bt
from rlhf_lab.worlds.reviews import ReviewsWorld


@pytest.fixture(scope="module")
def world():
    return ReviewsWorld.from_scale(get_scale("ci"))


@pytest.fixture(scope="module")
def policy(world):
    torch.manual_seed(0)
    return build_policy(world, get_scale("ci")).eval()


@pytest.fixture(scope="module")
def evaluator(world, policy):
    return ExactEvaluator(world, policy)


# -- configs and input validation ----------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, -0.1, math.nan, math.inf])
def test_dpo_config_rejects_beta_not_positive(beta):
    with pytest.raises(ValueError, match=r"DPOConfig\.beta must be a finite number > 0"):
        DPOConfig(beta=beta)


@pytest.mark.parametrize("field, value, message", [
    ("loss", "kto", r"DPOConfig\.loss must be one of"),
    ("gamma", 1.0, r"DPOConfig\.gamma must be finite, >= 0, and 0 unless loss is simpo"),
    ("lr", 0.0, r"DPOConfig\.lr must be finite and > 0"),
    ("lr", math.nan, r"DPOConfig\.lr must be finite and > 0"),
    ("epochs", 0, r"DPOConfig\.epochs must be >= 1"),
    ("batch_size", 0, r"DPOConfig\.batch_size must be >= 1"),
    ("label_smoothing", 0.5, r"DPOConfig\.label_smoothing must be in \[0, 0\.5\)"),
])
def test_dpo_config_names_the_bad_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        DPOConfig(**{field: value})


def test_dpo_config_rejects_label_smoothing_with_ipo_and_negative_simpo_gamma():
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOConfig(loss="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="gamma"):
        DPOConfig(loss="simpo", beta=2.0, gamma=-0.5)


def test_dpo_config_length_normalisation_follows_the_loss():
    assert DPOConfig(loss="sigmoid").length_normalise is False
    assert DPOConfig(loss="ipo").length_normalise is True
    assert DPOConfig(loss="simpo", beta=2.0, gamma=1.0).length_normalise is True
    assert DPOConfig(loss="sigmoid", length_normalise=True).length_normalise is True


def test_loss_rejects_chosen_and_rejected_batches_of_different_sizes():
    config = DPOConfig(beta=0.1)
    with pytest.raises(ValueError, match="same shape"):
        config.loss_fn(torch.zeros(4), torch.zeros(3), torch.zeros(4), torch.zeros(3))
    with pytest.raises(ValueError, match="same shape"):
        DPOConfig(loss="simpo", beta=2.0).loss_fn(torch.zeros(2), torch.zeros(5), torch.zeros(2), torch.zeros(5))


def test_encode_texts_rejects_empty_completions_and_length_mismatch(world):
    with pytest.raises(ValueError, match="completions must not be empty"):
        encode_texts(world, ["<food>", "<film>"], ["good [EOS]", ""])
    with pytest.raises(ValueError, match="same length"):
        encode_texts(world, ["<food>", "<film>"], ["good [EOS]"])


def test_train_dpo_rejects_empty_completions_and_empty_data(world, policy):
    bad = datasets.Dataset.from_dict({"prompt": ["<food>"], "chosen": ["good [EOS]"], "rejected": [" "]})
    with pytest.raises(ValueError, match="completions must not be empty"):
        train_dpo(policy, world, bad, DPOConfig(progress=False))
    empty = datasets.Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []})
    with pytest.raises(ValueError, match="dataset is empty"):
        train_dpo(policy, world, empty, DPOConfig(progress=False))


@pytest.mark.parametrize("field, value", [("n", 0), ("keep", 5), ("selection", "random"), ("rounds", 0),
                                          ("lr", -1.0), ("prompts_per_round", 0)])
def test_rejection_sampling_config_names_the_bad_field(field, value):
    kwargs = {"n": 4, field: value}
    with pytest.raises(ValueError, match=rf"RejectionSamplingConfig\.{field} must be"):
        RejectionSamplingConfig(**kwargs)


def test_best_of_n_rejects_n_below_one(world, policy):
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        best_of_n(policy, world, ["<food>"], 0, world.gold_rewards)


def test_label_ceiling_by_hand():
    chosen, rejected = torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0])
    sig1 = 1 / (1 + math.exp(-1.0))
    assert label_ceiling(chosen, rejected, 1.0) == pytest.approx((0.5 + sig1) / 2)
    # the ceiling depends on |Δ| only: it is the same whichever side the label chose
    assert label_ceiling(rejected, chosen, 1.0) == pytest.approx((0.5 + sig1) / 2)
    assert label_ceiling(chosen, rejected, 0.0) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="label_noise"):
        label_ceiling(chosen, rejected, -1.0)
    with pytest.raises(ValueError, match="shape"):
        label_ceiling(chosen, torch.zeros(3), 1.0)


# -- rejection-sampling selection on a hand-made batch -------------------------------------------
def test_select_samples_per_prompt_and_overall_by_hand():
    rewards = torch.tensor([[1.0, 5.0, 3.0],
                            [0.0, 2.0, 2.0],
                            [9.0, 8.0, 7.0]])  # (B=3, n=3): prompt 2 is easy, prompt 1 is hard
    per_prompt = select_samples(rewards, 1, "per_prompt")
    assert per_prompt.tolist() == [[False, True, False], [False, True, False], [True, False, False]]
    overall = select_samples(rewards, 1, "overall")  # the same budget: 3 samples
    assert overall.tolist() == [[False, False, False], [False, False, False], [True, True, True]]
    two = select_samples(rewards, 2, "overall")  # 6 samples: 9, 8, 7, 5, 3 and the first 2 of prompt 1
    assert two.tolist() == [[False, True, True], [False, True, False], [True, True, True]]
    assert select_samples(rewards, 2, "per_prompt").sum(1).tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="keep must be an integer in 1"):
        select_samples(rewards, 4, "per_prompt")
    with pytest.raises(ValueError, match="selection must be one of"):
        select_samples(rewards, 1, "top")


def test_best_of_n_keeps_the_top_reward_of_each_prompt(world, policy):
    reward = {}

    def reward_fn(prompts, completions):  # a deterministic, arbitrary score per completion
        return torch.tensor([reward.setdefault(y, float(len(reward) % 7)) for y in completions])

    out = best_of_n(policy, world, ["<food>", "<film>", "<food>"], 6, reward_fn,
                    generator=torch.Generator().manual_seed(0))
    assert out.sample_rewards.shape == (3, 6) and len(out.samples) == 3
    for b in range(3):
        assert out.rewards[b] == out.sample_rewards[b].max()
        assert reward[out.completions[b]] == out.rewards[b]
        assert out.completions[b] in out.samples[b]


def test_sequence_logps_match_exact_enumeration(world, policy):
    enum = exact.Enumeration(world)
    logp = enum.logprobs(policy)
    cols = torch.tensor([0, 5, 100, len(enum.completions) - 1])  # EOS alone … a truncated completion
    batch = encode_texts(world, ["<film>"] * 4, [enum.completions[k] for k in cols.tolist()])
    with torch.no_grad():
        got = sequence_logps(policy, world, batch).double()
    torch.testing.assert_close(got, logp[1, cols], atol=1e-4, rtol=0)


# -- smoke runs ----------------------------------------------------------------------------------
def test_train_dpo_lowers_the_loss_and_raises_accuracy(world, policy, evaluator):
    pairs = data.preference_dataset(world, 256, logp=evaluator.logp_ref, label_noise=0.05, seed=0)
    config = DPOConfig(beta=0.5, lr=2e-3, epochs=4, batch_size=32, eval_every=1000, progress=False)
    h = train_dpo(policy, world, pairs, config, evaluator=evaluator)
    loss, acc = h["loss/policy"], h["rewards/accuracies"]
    assert loss[0] == pytest.approx(math.log(2), abs=1e-5)  # π = π_ref at the first step: Δ = 0
    assert sum(loss[-4:]) / 4 < loss[0] - 0.1
    assert sum(acc[-4:]) / 4 > 0.7
    assert h.steps("reward/gold") == [0, 32]  # exact metrics at the start and the end
    assert h["reward/gold"][-1] > h["reward/gold"][0]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected",
                "kl/exact", "entropy/exact", "stats/grad_norm"):
        assert key in h
    assert h.policy is not policy


def test_train_dpo_leaves_the_callers_policy_unchanged(world, policy, evaluator):
    before = [p.detach().clone() for p in policy.parameters()]
    pairs = data.preference_dataset(world, 32, logp=evaluator.logp_ref, seed=1)
    train_dpo(policy, world, pairs, DPOConfig(epochs=1, batch_size=16, progress=False), evaluator=evaluator)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_train_simpo_raises_the_margin(world, policy, evaluator):
    pairs = data.preference_dataset(world, 128, logp=evaluator.logp_ref, label_noise=0.05, seed=2)
    config = DPOConfig(loss="simpo", beta=2.0, gamma=0.5, lr=2e-3, epochs=3, batch_size=32, eval_every=1000,
                       progress=False)
    h = train_dpo(policy, world, pairs, config, evaluator=evaluator)
    margins = h["rewards/margins"]
    assert sum(margins[-3:]) / 3 > sum(margins[:3]) / 3 + 0.1
    assert h["loss/policy"][-1] < h["loss/policy"][0]


def test_train_dpo_bandit_reaches_the_kl_regularised_optimum():
    arms = bt.Bandit.random(4, seed=3)
    i, j, y = bt.sample_comparisons(arms.preference_matrix(), 20000, seed=0)
    winners, losers = torch.where(y == 1, i, j), torch.where(y == 1, j, i)
    h = train_dpo_bandit(arms.logp_ref, winners, losers, DPOConfig(beta=1.0, lr=0.05, epochs=300, batch_size=20000),
                         rewards=arms.rewards)
    assert h["kl/to_optimum"][0] > 0.05
    assert h.last("kl/to_optimum") < 2e-3
    assert torch.allclose(h.logp.exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_rejection_sampling_fine_tuning_raises_gold(world, policy, evaluator):
    config = RejectionSamplingConfig(rounds=2, prompts_per_round=48, n=8, keep=1, epochs=2, lr=2e-3,
                                     batch_size=16, progress=False)
    h = train_rejection_sampling(policy, world, config, evaluator=evaluator)
    assert h.steps("reward/gold") == [0, 6, 12]  # start, then the end of each round (3 steps per round)
    assert h["reward/gold"][-1] > h["reward/gold"][0] + 0.1
    assert all(k > r for k, r in zip(h["reward/kept"], h["reward/mean"]))
    assert "loss/sft" in h and h.policy is not policy


def test_every_trainer_logs_the_exact_proxy_reward_on_an_enumerable_world(world, policy):
    """One evaluator factory (loop.default_evaluator): given a reward_fn, DPO, rejection sampling,
    GRPO and the policy-gradient trainers all log the proxy's exact expectation as reward/proxy,
    and it is the enumeration's expectation, not a sample mean."""
    from rlhf_lab.algos import a2c, grpo, ppo, reinforce

    def proxy(prompts, completions):  # a stand-in reward model: longer is better
        return torch.tensor([float(len(c.split())) for c in completions])

    enum = exact.Enumeration(world)
    k = len(enum.completions)
    scores = proxy([x for x in enum.prompts for _ in range(k)], enum.completions * len(enum.prompts))
    expected = float(exact.expected(enum.logprobs(policy), scores.double().view(enum.shape)).mean())
    pairs = data.preference_dataset(world, 32, logp=enum.logprobs(policy), seed=0)
    runs = {
        "dpo": lambda: train_dpo(policy, world, pairs, DPOConfig(epochs=1, batch_size=16, progress=False),
                                 reward_fn=proxy),
        "rejection sampling": lambda: train_rejection_sampling(
            policy, world, RejectionSamplingConfig(rounds=1, prompts_per_round=8, n=2, progress=False),
            reward_fn=proxy),
        "grpo": lambda: grpo.train_grpo(policy, world, grpo.GRPOConfig(steps=1, group_size=2, prompts_per_step=4,
                                                                      progress=False), reward_fn=proxy),
        "reinforce": lambda: reinforce.train(policy, world, reinforce.ReinforceConfig(steps=1, batch_size=8,
                                                                                   progress=False),
                                             reward_fn=proxy),
        "a2c": lambda: a2c.train(policy, world, a2c.A2CConfig(steps=1, batch_size=8, progress=False),
                                 reward_fn=proxy),
        "ppo": lambda: ppo.train(policy, world, ppo.PPOConfig(steps=1, batch_size=8, minibatch_size=4,
                                                               progress=False), reward_fn=proxy),
    }
    for name, run in runs.items():
        h = run()
        assert "reward/proxy" in h, name
        assert h["reward/proxy"][0] == pytest.approx(expected, rel=1e-9), name  # step 0: π = π_ref
