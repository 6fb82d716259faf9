"""algos/reward_model.py: the Bradley–Terry loss by hand, and RM training on synthetic preferences."""

from __future__ import annotations

import math

import datasets
import pytest
import torch

from rlhf_lab import models
from rlhf_lab.algos.reward_model import (
    bradley_terry_loss,
    normalise_rewards,
    preference_accuracy,
    train_reward_model,
)
from rlhf_lab.scale import get_scale
from rlhf_lab.worlds.base import EOS, PAD, UNK, TokenWorld

WORDS = ["good", "bad", "meh", "fine", "dull", "odd"]


class PairWorld(TokenWorld):
    """A vocabulary for synthetic preferences: the chosen completion contains "good"."""

    def __init__(self) -> None:
        self.name = "pairs"
        self.prompts = ["a", "b", "the b"]
        self.completion_vocab = [*WORDS, EOS]
        self.vocab = [PAD, EOS, UNK, "the", "a", "b", *WORDS]
        self.max_new_tokens = 4
        self.enumerable = True

    def corpus(self, n: int, seed: int = 0) -> list[str]:
        raise NotImplementedError

    def gold_reward(self, prompt: str, completion: str) -> float:
        return float("good" in completion.split())


def synthetic_pairs(n: int, seed: int) -> datasets.Dataset:
    """Chosen: 1–3 words, one of them "good" at a random place; rejected: 1–3 words, no "good"."""
    g = torch.Generator().manual_seed(seed)
    prompts, chosen, rejected = [], [], []
    others = WORDS[1:]

    def words(k):
        return [others[int(i)] for i in torch.randint(len(others), (k,), generator=g)]

    for i in range(n):
        prompts.append(PairWorld().prompts[i % 3])
        c = words(int(torch.randint(0, 3, (1,), generator=g)))
        c.insert(int(torch.randint(0, len(c) + 1, (1,), generator=g)), "good")
        chosen.append(" ".join([*c, EOS]))
        rejected.append(" ".join([*words(int(torch.randint(1, 4, (1,), generator=g))), EOS]))
    return datasets.Dataset.from_dict({"prompt": prompts, "chosen": chosen, "rejected": rejected})


# -- the loss ---------------------------------------------------------------------------------
def test_bradley_terry_loss_by_hand():
    r_c, r_r = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    loss, stats = bradley_terry_loss(r_c, r_r)
    # −log σ(1) = log(1 + e^−1), −log σ(−1) = log(1 + e)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats == {"accuracy": 0.5, "margin": 0.0, "chosen": 0.5, "rejected": 0.5}
    assert all(isinstance(v, float) for v in stats.values())


def test_bradley_terry_margin_shifts_the_difference():
    r_c, r_r = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    loss, stats = bradley_terry_loss(r_c, r_r, margin=1.0)
    # differences 1 and −1 become 0 and −2
    assert loss.item() == pytest.approx((math.log(2) + math.log(1 + math.exp(2))) / 2, rel=1e-6)
    assert stats["accuracy"] == 0.5 and stats["margin"] == 0.0  # stats describe the raw rewards
    per_pair, _ = bradley_terry_loss(r_c, r_r, margin=torch.tensor([0.5, 0.0]))
    assert per_pair.item() == pytest.approx((math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(1))) / 2, rel=1e-6)


def test_bradley_terry_gradient_and_stability():
    r_c = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    r_r = torch.tensor([0.0, 0.0, 0.5])
    loss, stats = bradley_terry_loss(r_c, r_r)
    loss.backward()
    # ∂/∂r_c of −log σ(d) / B is −(1 − σ(d)) / B
    assert torch.allclose(r_c.grad, -(1 - torch.sigmoid(r_c.detach() - r_r)) / 3)
    assert stats["accuracy"] == pytest.approx(1 / 3)  # a tie is not a correct ordering
    huge, _ = bradley_terry_loss(torch.tensor([-200.0]), torch.tensor([200.0]))
    assert huge.item() == pytest.approx(400.0)  # logsigmoid, not log(sigmoid(·)) = −inf


def test_bradley_terry_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="r_chosen and r_rejected"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="r_chosen and r_rejected"):
        bradley_terry_loss(torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="margin"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(3), margin=torch.zeros(2))


# -- training -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    world = PairWorld()
    tok = models.build_tokenizer(world)
    torch.manual_seed(0)
    rm = models.RewardModel.from_policy(models.build_policy(world, get_scale("ci")))
    train, held_out = synthetic_pairs(600, seed=0), synthetic_pairs(200, seed=1)
    before = preference_accuracy(rm, tok, held_out)
    history = train_reward_model(rm, tok, train, eval_dataset=held_out, epochs=3, lr=3e-3, batch_size=32,
                                 seed=0, progress=False)
    return rm, tok, history, held_out, before


def test_training_reaches_high_held_out_accuracy(trained):
    rm, tok, history, held_out, before = trained
    assert before == 0.0  # a zero-initialised head ties every pair
    assert history["rm/eval_accuracy"][-1] >= 0.95
    assert preference_accuracy(rm, tok, held_out) == history["rm/eval_accuracy"][-1]
    assert not rm.training


def test_training_history_has_per_step_and_per_epoch_metrics(trained):
    _, _, history, _, _ = trained
    steps_per_epoch = math.ceil(600 / 32)
    assert len(history["rm/loss"]) == 3 * steps_per_epoch
    assert history.steps("rm/train_accuracy") == [steps_per_epoch - 1, 2 * steps_per_epoch - 1, 3 * steps_per_epoch - 1]
    assert len(history["rm/eval_accuracy"]) == 3 and len(history["rm/epoch_loss"]) == 3
    first, last = history["rm/epoch_loss"][0], history["rm/epoch_loss"][-1]
    assert last < 0.5 * first < 0.5 * math.log(2)  # starts at log 2 (all ties), then falls
    assert history["rm/train_accuracy"][-1] > history["rm/train_accuracy"][0]


def test_normalised_rewards_have_mean_0_std_1_and_survive_save_load(trained, tmp_path):
    rm, tok, _, held_out, _ = trained
    prompts = list(held_out["prompt"])
    texts = [f"{p} {c}" for p, c in zip(prompts * 2, list(held_out["chosen"]) + list(held_out["rejected"]))]
    raw = rm.score_texts(texts, tok, raw=True)
    mean, std = normalise_rewards(rm, tok, texts, batch_size=64)
    assert mean == pytest.approx(raw.mean().item(), rel=1e-5) and std == pytest.approx(raw.std().item(), rel=1e-5)
    scores = rm.score_texts(texts, tok)
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert scores.std().item() == pytest.approx(1.0, abs=1e-5)
    rm.save_pretrained(tmp_path / "rm")
    loaded = models.RewardModel.from_pretrained(tmp_path / "rm")
    assert torch.allclose(loaded.score_texts(texts, tok), scores, atol=1e-5)
    # normalising keeps the order, so preference accuracy is unchanged
    assert preference_accuracy(loaded, tok, held_out) == preference_accuracy(rm, tok, held_out)


def test_training_rejects_bad_arguments(trained):
    rm, tok, _, held_out, _ = trained
    with pytest.raises(ValueError, match="epochs"):
        train_reward_model(rm, tok, held_out, epochs=0, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_reward_model(rm, tok, held_out, lr=0.0, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train_reward_model(rm, tok, held_out, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="missing"):
        train_reward_model(rm, tok, held_out.remove_columns("rejected"), progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        normalise_rewards(rm, tok, ["a good [EOS]"])


def test_a_nan_loss_stops_training_and_names_the_step():
    world = PairWorld()
    tok = models.build_tokenizer(world)
    rm = models.RewardModel.from_policy(models.build_policy(world, get_scale("ci")))
    with torch.no_grad():
        rm.head.linear.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="step 0"):
        train_reward_model(rm, tok, synthetic_pairs(8, seed=0), epochs=1, batch_size=4, progress=False)
