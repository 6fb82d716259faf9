"""book/metrics.md documents every metric key a trainer or evaluator logs, and nothing else.

One module-scoped fixture runs every trainer of ``rlhf_lab.algos`` for two or three steps on tiny
worlds (fresh one-layer GPT-2 policies, no pretraining, no cache), with ``eval_every=1`` and a
proxy reward wherever a trainer takes one, so that every code path that logs a key runs once:
exact evaluation with a proxy, sampled evaluation (``SampledEvaluator`` with a proxy, on a 0/1
world so that ``pass@1`` appears), exact pass@k (GRPO on arithmetic), both GRPO KL placements
with β > 0, SFT, DPO on a token world and on a bandit, rejection sampling and the reward model. The
union of the keys of their ``History`` objects must equal the set of keys in the first column of
the page's tables, in both directions.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import datasets
import pytest
import torch

from rlhf_lab import data, get_scale
from rlhf_lab.algos import a2c, ppo, reinforce, sft
from rlhf_lab.algos.best_of_n import RejectionSamplingConfig, train_rejection_sampling
from rlhf_lab.algos.dpo import DPOConfig, train_dpo, train_dpo_bandit
from rlhf_lab.algos.grpo import GRPOConfig, train_grpo
from rlhf_lab.algos.loop import ExactEvaluator, SampledEvaluator
from rlhf_lab.algos.reward_model import train_reward_model
from rlhf_lab.models import RewardModel, build_policy, build_tokenizer
from rlhf_lab.worlds import bandit as bt
from rlhf_lab.worlds.arithmetic import ArithmeticWorld
from rlhf_lab.worlds.reviews import ReviewsWorld

PAGE = Path(__file__).resolve().parent.parent / "book" / "metrics.md"
TINY = dict(n_layer=1, n_head=2, n_embd=32)


def documented_keys(text: str) -> set[str]:
    """The backticked keys in the first column of every table whose header starts with "key"."""
    keys: set[str] = set()
    in_table = False
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else None
        if cells is None:
            in_table = False
            continue
        if cells[0].lower() == "key":  # a header row opens a metrics table
            in_table = True
            continue
        if in_table and not re.fullmatch(r":?-+:?", cells[0]):
            keys.update(re.findall(r"`([^`]+)`", cells[0]))
    return keys


def word_count(prompts: list[str], completions: list[str]) -> torch.Tensor:
    """A proxy reward that is not the gold one: the number of tokens written."""
    return torch.tensor([float(len(c.split())) for c in completions])


@pytest.fixture(scope="module")
def histories():
    start = time.perf_counter()
    torch.manual_seed(0)
    scale = get_scale("ci").replace(**TINY)
    runs = {}

    # -- policy gradient on a tiny reviews world: exact metrics with a proxy ------------------
    reviews = ReviewsWorld(n_topics=2, words_per_class=1, max_new_tokens=3)
    policy = build_policy(reviews, scale).eval()
    pg = dict(steps=2, batch_size=8, eval_every=1, progress=False)
    runs["reinforce"] = reinforce.train(policy, reviews, reinforce.ReinforceConfig(beta=0.1, **pg),
                                        reward_fn=word_count)
    runs["a2c"] = a2c.train(policy, reviews, a2c.A2CConfig(beta=0.1, **pg), reward_fn=word_count)
    runs["ppo"] = ppo.train(policy, reviews, ppo.PPOConfig(beta=0.1, minibatch_size=4, epochs=2, **pg),
                            reward_fn=word_count)

    # -- GRPO on arithmetic (0/1 gold: exact pass@k), both KL placements with β > 0 ----------
    arithmetic = ArithmeticWorld(max_operand=3)
    solver = build_policy(arithmetic, scale).eval()
    grpo = dict(steps=2, prompts_per_step=4, group_size=4, beta=0.05, eval_every=1, progress=False)
    for placement in ("loss", "reward"):
        runs[f"grpo/{placement}"] = train_grpo(solver, arithmetic, GRPOConfig(kl_placement=placement, **grpo),
                                               reward_fn=word_count)

    # -- the sampled path: a world too big to enumerate, with a proxy -------------------------
    hidden = ArithmeticWorld(max_operand=3, enumerable=False)
    sampled = SampledEvaluator(hidden, solver, proxy_fn=word_count, samples=32)
    runs["reinforce/sampled"] = reinforce.train(solver, hidden, reinforce.ReinforceConfig(**pg),
                                                reward_fn=word_count, evaluator=sampled)
    runs["grpo/sampled"] = train_grpo(solver, hidden, GRPOConfig(**grpo), reward_fn=word_count,
                                      evaluator=sampled)

    # -- preferences: DPO, rejection sampling, the reward model ------------------------------
    exact = ExactEvaluator(reviews, policy)
    pairs = data.preference_dataset(reviews, 16, logp=exact.logp_ref, seed=0)
    runs["sft"] = sft.train(policy, reviews, sft.SFTConfig(epochs=1, batch_size=8, eval_every=1,
                                                           completion_only_loss=False, progress=False),
                            data=sft.demonstrations(reviews, 16, seed=0), evaluator=exact)
    runs["dpo"] = train_dpo(policy, reviews, pairs, DPOConfig(epochs=1, batch_size=8, eval_every=1,
                                                              progress=False))
    arms = bt.Bandit.random(4, seed=0)
    i, j, y = bt.sample_comparisons(arms.preference_matrix(), 64, seed=0)
    winners, losers = torch.where(y == 1, i, j), torch.where(y == 1, j, i)
    runs["dpo_bandit"] = train_dpo_bandit(arms.logp_ref, winners, losers,
                                          DPOConfig(beta=1.0, lr=0.05, epochs=2, batch_size=64),
                                          rewards=arms.rewards)
    runs["rejection_sampling"] = train_rejection_sampling(
        policy, reviews, RejectionSamplingConfig(rounds=2, prompts_per_round=4, n=4, epochs=1, batch_size=4,
                                                 progress=False),
        reward_fn=word_count)
    rm = RewardModel.from_policy(policy)
    columns = ["prompt", "chosen", "rejected"]
    train_pairs = datasets.Dataset.from_dict({c: pairs[c] for c in columns})
    runs["reward_model"] = train_reward_model(rm, build_tokenizer(reviews), train_pairs, eval_dataset=train_pairs,
                                              epochs=1, batch_size=8, seed=0, progress=False)
    print(f"trainers ran in {time.perf_counter() - start:.1f} s")
    return runs


def logged_keys(histories) -> set[str]:
    return {key for history in histories.values() for key in history.keys()}


def test_the_page_parses_into_keys():
    keys = documented_keys(PAGE.read_text(encoding="utf-8"))
    assert len(keys) > 20, f"found only {sorted(keys)} in {PAGE}"
    assert all(re.fullmatch(r"[a-z@0-9_]+(/[a-z@0-9_]+)*", k) for k in keys), sorted(keys)


def test_every_logged_key_is_documented(histories):
    missing = logged_keys(histories) - documented_keys(PAGE.read_text(encoding="utf-8"))
    where = {k: sorted(name for name, h in histories.items() if k in h) for k in sorted(missing)}
    assert not missing, f"logged but not in book/metrics.md: {where}"


def test_every_documented_key_is_logged(histories):
    unlogged = documented_keys(PAGE.read_text(encoding="utf-8")) - logged_keys(histories)
    assert not unlogged, f"in book/metrics.md but logged by no trainer: {sorted(unlogged)}"
