"""Pins for the performance work (issue 18): short seeded runs give the numbers they gave before.

DPO, GRPO (β = 0; β > 0 with the KL in the loss and in the reward; drop_zero_std; μ = 2) and the
sampler run a few steps on a tiny reviews world with a fresh seeded one-layer policy (no
pretraining, no cache). Every logged key of every History at every step is compared with the
values recorded from the code before the optimisations (tests/data/perf_pins.json), and the
sampler's token ids exactly. Floats: relative 1e-5 (absolute 1e-6 near zero); a faster path may
round the last bits differently, never change a result.

Re-record (only when a change is meant to change the numbers):
``RLHF_LAB_SCALE=ci python tests/test_perf_pins.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlhf_lab import data, get_scale
from rlhf_lab.algos.dpo import DPOConfig, train_dpo
from rlhf_lab.algos.grpo import GRPOConfig, train_grpo
from rlhf_lab.algos.loop import ExactEvaluator
from rlhf_lab.models import build_policy
from rlhf_lab.rollout import sample
from rlhf_lab.worlds.reviews import ReviewsWorld

PINS = Path(__file__).resolve().parent / "data" / "perf_pins.json"
TINY = dict(n_layer=1, n_head=2, n_embd=32)
REL, ABS = 1e-5, 1e-6

GRPO_RUNS = {
    "grpo/beta0": dict(),
    "grpo/beta_loss": dict(beta=0.05, kl_placement="loss"),
    "grpo/beta_reward": dict(beta=0.05, kl_placement="reward"),
    "grpo/mu2_drop": dict(updates_per_batch=2, drop_zero_std=True, entropy_coef=0.01, group_size=2,
                          prompts_per_step=8),
}


def _policy(world):
    torch.manual_seed(0)
    return build_policy(world, get_scale("ci").replace(**TINY)).eval()


def _frame(history) -> dict[str, list]:
    return {key: [[s, v] for s, v in zip(history.steps(key), history[key])] for key in sorted(history.keys())}


def run_all() -> dict:
    world = ReviewsWorld(n_topics=2, words_per_class=2, max_new_tokens=4)
    policy = _policy(world)
    evaluator = ExactEvaluator(world, policy)
    out = {}
    for name, changes in GRPO_RUNS.items():
        base = dict(steps=4, prompts_per_step=4, group_size=4, updates_per_batch=1, eval_every=2, seed=0)
        config = GRPOConfig(progress=False, **{**base, **changes})
        out[name] = _frame(train_grpo(policy, world, config, evaluator=evaluator))
    pairs = data.preference_dataset(world, 24, logp=evaluator.logp_ref, seed=0)
    for kind in ("sigmoid", "ipo"):
        config = DPOConfig(loss=kind, epochs=2, batch_size=8, eval_every=2, seed=0, progress=False)
        out[f"dpo/{kind}"] = _frame(train_dpo(policy, world, pairs, config, evaluator=evaluator))
    gen = torch.Generator().manual_seed(0)
    rollout = sample(policy, world, [world.prompts[i % len(world.prompts)] for i in range(16)], generator=gen)
    out["sampler"] = {"completion_ids": rollout.completion_ids.tolist(),
                      "completion_mask": rollout.completion_mask.tolist(),
                      "logp": rollout.logp.tolist()}
    return out


@pytest.fixture(scope="module")
def runs():
    return run_all()


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=REL, abs_tol=ABS)


@pytest.mark.parametrize("name", [*GRPO_RUNS, "dpo/sigmoid", "dpo/ipo"])
def test_trainer_metrics_are_pinned(runs, name):
    pinned, got = json.loads(PINS.read_text())[name], runs[name]
    assert sorted(got) == sorted(pinned), f"{name}: logged keys changed"
    for key, rows in pinned.items():
        assert [s for s, _ in got[key]] == [s for s, _ in rows], f"{name} {key}: steps changed"
        bad = [(s, v, w) for (s, v), (_, w) in zip(rows, got[key]) if not _close(v, w)]
        assert not bad, f"{name} {key}: (step, pinned, got) {bad}"


def test_sampler_is_pinned(runs):
    pinned, got = json.loads(PINS.read_text())["sampler"], runs["sampler"]
    assert got["completion_ids"] == pinned["completion_ids"]
    assert got["completion_mask"] == pinned["completion_mask"]
    torch.testing.assert_close(torch.tensor(got["logp"]), torch.tensor(pinned["logp"]), rtol=REL, atol=ABS)


if __name__ == "__main__":
    torch.set_num_threads(1)
    PINS.parent.mkdir(exist_ok=True)
    PINS.write_text(json.dumps(run_all(), indent=0) + "\n")
    print(f"wrote {PINS}")


def test_frozen_logps_equal_a_full_forward_and_compute_each_sequence_once():
    from rlhf_lab.fastpath import FrozenLogps
    from rlhf_lab.rollout import completion_logprobs

    world = ReviewsWorld(n_topics=2, words_per_class=2, max_new_tokens=3)
    torch.manual_seed(0)
    policy = build_policy(world, get_scale("ci").replace(**TINY)).eval()
    gen = torch.Generator().manual_seed(0)
    frozen = FrozenLogps(policy, world)
    seen = set()
    for _ in range(3):
        batch = sample(policy, world, [world.prompts[i % 2] for i in range(32)], generator=gen)
        with torch.no_grad():
            expected = completion_logprobs(policy, batch, world)
        torch.testing.assert_close(frozen(batch), expected, rtol=1e-5, atol=1e-6)
        seen |= set(zip(batch.prompts, batch.completions))
        # one entry per distinct sequence so far: repeats are looked up, not recomputed
        assert len(frozen.table) == len(seen) < 3 * 32
