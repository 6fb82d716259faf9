"""The capstone's plumbing (rlhf_lab.pipeline): matching methods at one KL, an AI judge's labels,
rejection sampling of a policy's own correct answers."""

import math

import datasets
import pytest
import torch

from rlhf_lab import get_scale, pipeline
from rlhf_lab.categorical import exact_best_of_n, kl
from rlhf_lab.history import History
from rlhf_lab.models import pretrain_reference
from rlhf_lab.worlds.arithmetic import ArithmeticWorld

TINY = dict(n_layer=1, n_head=2, n_embd=32, pretrain_steps=150, pretrain_batch_size=64, corpus_size=2000)


def _history() -> History:
    h = History()
    for step, (k, g) in enumerate([(0.0, 0.1), (0.4, 0.3), (0.9, 0.5), (1.3, 0.4), (2.0, 0.2)]):
        h.log(step, {"kl/exact": k, "reward/gold": g})
        h.log(step, {"loss/policy": -g})
    h.log(5, {"loss/policy": 0.0})  # a step without an evaluation
    return h


def _fake_trainer(kls):
    """A trainer that logs the given exact KLs, one evaluation per step, through its callback."""
    def train(callback):
        h = History()
        h.policy = torch.nn.Linear(1, 1)
        for step, k in enumerate(kls):
            h.log(step, {"kl/exact": k})
            callback(step, {"kl/exact": k}, h)
        return h
    return train


def test_train_to_kl_stops_at_the_first_evaluation_past_the_budget():
    seen = []
    h = pipeline.train_to_kl(_fake_trainer([0.0, 0.3, 0.6, 0.9, 1.2, 1.5]), 1.0,
                             callback=lambda step, metrics, history: seen.append(step))
    assert h["kl/exact"] == [0.0, 0.3, 0.6, 0.9, 1.2] and seen == [0, 1, 2, 3, 4]
    assert not h.policy.training  # handed back ready to evaluate
    assert pipeline.checkpoint_near(h, 1.0)["step"] == 3.0
    # a run that never reaches the budget ends at its last step
    assert pipeline.train_to_kl(_fake_trainer([0.0, 0.2]), 1.0)["kl/exact"] == [0.0, 0.2]


def test_checkpoint_near_returns_every_metric_of_the_nearest_evaluation():
    at = pipeline.checkpoint_near(_history(), 1.0)
    assert at == {"kl/exact": 0.9, "reward/gold": 0.5, "loss/policy": -0.5, "step": 2.0}
    assert pipeline.checkpoint_near(_history(), 0.2)["step"] == 0.0  # a tie goes to the earlier
    assert pipeline.checkpoint_near(_history(), 9.0)["step"] == 4.0
    with pytest.raises(ValueError, match="no 'kl/exact'"):
        pipeline.checkpoint_near(History(), 1.0)


def _table(seed=0, p=3, k=7):
    g = torch.Generator().manual_seed(seed)
    logp = torch.log_softmax(torch.randn(p, k, generator=g, dtype=torch.float64), 1)
    return logp, torch.randn(p, k, generator=g, dtype=torch.float64)


def test_best_of_n_logprobs_is_the_exact_distribution_per_prompt():
    logp, rewards = _table()
    assert torch.allclose(pipeline.best_of_n_logprobs(logp, rewards, 1), logp)
    bon = pipeline.best_of_n_logprobs(logp, rewards, 5)
    assert torch.allclose(bon.exp().sum(1), torch.ones(3, dtype=torch.float64))
    for row in range(3):
        assert torch.allclose(bon[row].exp(), exact_best_of_n(logp[row].exp(), rewards[row], 5))
    # the worst completion of a prompt is drawn only when all n samples are it
    worst = rewards.argmin(1)
    assert torch.allclose(bon.exp()[torch.arange(3), worst], logp.exp()[torch.arange(3), worst] ** 5)


def test_best_of_n_near_picks_the_n_whose_exact_kl_is_nearest_the_target():
    logp, rewards = _table(1, k=40)

    def kl_fn(lp):
        return float(kl(lp, logp).mean())

    for target in (0.1, 0.5, 1.0):
        n, bon = pipeline.best_of_n_near(logp, rewards, target, kl_fn, n_max=64)
        gaps = {m: abs(kl_fn(pipeline.best_of_n_logprobs(logp, rewards, m)) - target)
                for m in range(1, 65)}
        assert gaps[n] == min(gaps.values()), (target, n)
        assert torch.equal(bon, pipeline.best_of_n_logprobs(logp, rewards, n))


def test_bisect_knob_finds_a_beta_within_tolerance_and_records_its_tries():
    def run(beta):  # KL falls as β grows, as for DPO
        return 0.3 / beta, f"policy at β = {beta:.3f}"

    beta, result, tried = pipeline.bisect_knob(run, 0.01, 10.0, 1.0, tol=0.02, max_runs=20)
    assert abs(0.3 / beta - 1.0) <= 0.02 and result == f"policy at β = {beta:.3f}"
    assert math.isclose(tried[0][0], math.sqrt(0.01 * 10.0))  # the first try: the geometric middle
    assert len(tried) == 2  # KL ∝ 1/β is found at the second try

    def steep(beta):  # not a power of 1/β: the bracket and the interpolation take over
        return math.exp(1 / beta) - 1, None

    beta, _, tried = pipeline.bisect_knob(steep, 0.05, 20.0, 1.0, tol=1e-3, max_runs=30)
    assert abs(steep(beta)[0] - 1.0) <= 1e-3 and tried[-1][0] == beta and len(tried) < 30
    assert all(0.05 < k < 20.0 for k, _ in tried)
    # with one run only, the best of what was tried comes back
    beta, _, tried = pipeline.bisect_knob(run, 0.01, 10.0, 1.0, tol=1e-6, max_runs=1)
    assert len(tried) == 1 and beta == tried[0][0]
    with pytest.raises(ValueError, match="hi"):
        pipeline.bisect_knob(run, 1.0, 0.5, 1.0, tol=0.1)


def _pairs():
    return datasets.Dataset.from_dict({
        "prompt": ["x", "x", "y", "y"],
        "chosen": ["a", "b", "c", "d"],
        "rejected": ["b", "c", "d", "e"],
        "chosen_gold": [1.0, 0.0, 2.0, 0.5],
        "rejected_gold": [0.0, 1.0, 2.0, 0.0],
    })


def test_label_agreement_leaves_out_gold_ties():
    assert pipeline.label_agreement(_pairs()) == pytest.approx(2 / 3)
    tie = datasets.Dataset.from_dict({"prompt": ["x"], "chosen": ["a"], "rejected": ["b"],
                                      "chosen_gold": [1.0], "rejected_gold": [1.0]})
    with pytest.raises(ValueError, match="equal gold"):
        pipeline.label_agreement(tie)


def test_judge_pairs_relabels_by_the_judge_and_carries_the_gold_along():
    gold = {"a": 1.0, "b": 0.0, "c": 1.0, "d": 2.0, "e": 0.0}  # "c" beats "d" only by the judge below

    def judge(prompts, completions):
        return torch.tensor([gold[y] for y in completions])

    relabelled = pipeline.judge_pairs(_pairs(), judge)
    assert relabelled["chosen"] == ["a", "c", "d", "d"]
    assert relabelled["rejected"] == ["b", "b", "c", "e"]
    # a perfect judge agrees with gold wherever gold decides; the reversed judge never does
    truth = pipeline.judge_pairs(_pairs(), lambda p, c: torch.tensor(_gold_of(c)))
    assert pipeline.label_agreement(truth) == 1.0
    liar = pipeline.judge_pairs(_pairs(), lambda p, c: -torch.tensor(_gold_of(c)))
    assert pipeline.label_agreement(liar) == 0.0


def _gold_of(completions):
    return [{"a": 1.0, "b": 0.0, "c": 1.0, "d": 2.0, "e": 0.0}[y] for y in completions]


def test_correct_samples_keeps_only_verified_answers_and_counts_the_draws():
    world = ArithmeticWorld(max_operand=3)
    policy, _ = pretrain_reference(world, get_scale("ci").replace(**TINY), progress=False)
    gen = torch.Generator().manual_seed(0)
    data, drawn = pipeline.correct_samples(policy, world, world.prompts, 8, generator=gen)
    assert drawn == len(world.prompts) * 8 and 0 < len(data) < drawn
    assert data.column_names == ["prompt", "completion"]
    assert bool((world.gold_rewards(data["prompt"], data["completion"]) == 1).all())
    # a reward that rejects everything keeps nothing
    none, _ = pipeline.correct_samples(policy, world, world.prompts[:2], 4,
                                       reward_fn=lambda p, c: torch.zeros(len(c)))
    assert len(none) == 0


def test_a_judge_that_cannot_tell_flips_a_coin_instead_of_copying_the_gold_label():
    n = 400
    pairs = datasets.Dataset.from_dict({"prompt": ["x"] * n, "chosen": ["a"] * n, "rejected": ["b"] * n,
                                        "chosen_gold": [1.0] * n, "rejected_gold": [0.0] * n})
    blind = pipeline.judge_pairs(pairs, lambda p, c: torch.zeros(len(c)), seed=1)
    assert 0.4 < pipeline.label_agreement(blind) < 0.6  # chance, not the gold labeller's 1.0
    assert blind[:] == pipeline.judge_pairs(pairs, lambda p, c: torch.zeros(len(c)), seed=1)[:]


def test_best_of_n_near_says_when_the_budget_is_out_of_reach():
    logp_ref = torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    rewards = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="best-of-8 reaches KL"):
        pipeline.best_of_n_near(logp_ref, rewards, 5.0, lambda lp: float(kl(lp, logp_ref).mean()), n_max=8)
