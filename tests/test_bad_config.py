"""Every Config field, probed with bad values: each raises on construction, names the field and says
what is allowed (the bad-input probe of issue 14, for configs; functions are in test_bad_input.py).

The rows are generated from each field's annotation — the same one ``loop.check_fields`` reads:

* an ``int`` field (a count) refuses the string "3", None, 2.5, True and [1] with a TypeError;
* a ``float`` field refuses "1e-3", None (unless ``| None``), True and [0.1] with a TypeError, and
  NaN, +inf and −inf with a ValueError;
* a ``bool`` field refuses "yes", 1 and None (unless ``| None``) with a TypeError;
* a ``str`` field (a choice) refuses 1, None and ["…"] with a TypeError;

plus, per field, the values outside its range (ValueError). A row is handled well when the error
has the expected type and its message names ``Config.field``. What stays allowed: an int where a
float is expected (``lr=1``), numpy numbers and 0-d tensors as numbers, any integer seed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from rlhf_lab.algos import a2c, best_of_n, dpo, grpo, ppo, reinforce, reward_model
from rlhf_lab.algos.loop import _kind

CONFIGS = [reinforce.ReinforceConfig, a2c.A2CConfig, ppo.PPOConfig, grpo.GRPOConfig,
           best_of_n.RejectionSamplingConfig, dpo.DPOConfig, reward_model.RewardModelConfig]
WRONG_TYPES = {"int": ["3", None, 2.5, True, [1]], "float": ["1e-3", None, True, [0.1]],
               "bool": ["yes", 1, None], "str": [1, None, ["grpo"]]}
NON_FINITE = [math.nan, math.inf, -math.inf]
# values outside each field's range (ValueError); fields not listed have no range beyond their type
OUT_OF_RANGE = {
    "ReinforceConfig": {"steps": [0, -1], "batch_size": [0, 1], "lr": [0.0, -1e-3], "baseline": ["median"],
                        "beta": [-0.1], "max_grad_norm": [0.0, -1.0], "eval_every": [0]},
    "A2CConfig": {"steps": [0], "batch_size": [1], "lr": [0.0], "gamma": [-0.1, 1.5], "lam": [-0.1, 1.5],
                  "beta": [-1.0], "vf_coef": [-0.5], "max_grad_norm": [0.0], "eval_every": [0]},
    "PPOConfig": {"steps": [0], "batch_size": [1], "minibatch_size": [0, 24, 128], "epochs": [0], "lr": [-1.0],
                  "clip_eps": [0.0, 1.0, -0.2], "value_clip_eps": [0.0, -0.2], "vf_coef": [-0.1],
                  "gamma": [2.0], "lam": [-1.0], "beta": [-0.1], "max_grad_norm": [0.0], "eval_every": [0]},
    "GRPOConfig": {"group_size": [1, 0], "prompts_per_step": [0], "steps": [0], "lr": [0.0],
                   "updates_per_batch": [0], "eps_low": [0.0, 1.0], "eps_high": [0.0, -0.1], "beta": [-0.01],
                   "kl_placement": ["advantage"], "loss_type": ["ppo"], "scale_rewards": ["std"],
                   "advantage": ["ppo"], "entropy_coef": [-0.1], "temperature": [0.0, -1.0],
                   "max_grad_norm": [0.0], "eval_every": [0]},
    "RejectionSamplingConfig": {"rounds": [0], "prompts_per_round": [0], "n": [0], "keep": [0, 9],
                                "selection": ["random"], "epochs": [0], "lr": [0.0], "batch_size": [0],
                                "max_grad_norm": [-1.0]},
    "DPOConfig": {"beta": [0.0, -0.1], "loss": ["kto"], "label_smoothing": [0.5, -0.1], "gamma": [1.0, -1.0],
                  "lr": [0.0], "epochs": [0], "batch_size": [0], "max_grad_norm": [0.0], "eval_every": [0]},
    "RewardModelConfig": {"epochs": [0], "lr": [0.0], "batch_size": [0], "weight_decay": [-0.1],
                          "max_grad_norm": [0.0]},
}


def rows():
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            kind, optional = _kind(f.type)
            for value in WRONG_TYPES.get(kind, []):
                if value is None and optional:
                    continue
                yield pytest.param(cls, f.name, value, TypeError, id=f"{cls.__name__}.{f.name}={value!r}")
            for value in NON_FINITE if kind == "float" else []:
                yield pytest.param(cls, f.name, value, ValueError, id=f"{cls.__name__}.{f.name}={value!r}")
            for value in OUT_OF_RANGE[cls.__name__].get(f.name, []):
                yield pytest.param(cls, f.name, value, ValueError, id=f"{cls.__name__}.{f.name}={value!r}")


ROWS = list(rows())


def test_the_table_is_large():
    assert len(ROWS) >= 300, len(ROWS)


@pytest.mark.parametrize("cls, field, value, error", ROWS)
def test_a_bad_field_fails_at_construction_naming_it(cls, field, value, error):
    with pytest.raises(error) as info:
        cls(**{field: value})
    assert f"{cls.__name__}.{field} must be" in str(info.value)


@pytest.mark.parametrize("cls", CONFIGS)
def test_what_stays_allowed(cls):
    """Ints for floats, numpy numbers, 0-d tensors: accepted, and stored as given."""
    floats = [f.name for f in dataclasses.fields(cls) if _kind(f.type)[0] == "float" and f.name != "gamma"]
    config = cls(**{floats[0]: 1}, seed=np.int64(3))
    assert getattr(config, floats[0]) == 1 and config.seed == 3
    assert getattr(cls(**{floats[0]: torch.tensor(0.5)}), floats[0]) == 0.5
    assert cls(seed=-7).seed == -7
