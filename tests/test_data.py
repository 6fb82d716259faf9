"""Datasets: prompts, gold-labelled preference pairs, loading preference files in common schemas."""

import collections
import json
import math

import datasets
import pytest
import torch

from rlhf_lab import data
from rlhf_lab.worlds.base import EOS
from rlhf_lab.worlds.reviews import ReviewsWorld


@pytest.fixture(scope="module")
def world():
    return ReviewsWorld(n_topics=2, words_per_class=1, max_new_tokens=3)  # 85 completions


def test_prompt_dataset(world):
    ds = data.prompt_dataset(world)
    assert ds.column_names == ["prompt"] and ds["prompt"] == ["<food>", "<film>"]


def three_point_logp(world, enum_texts, probs):
    """log π putting ``probs`` on ``enum_texts`` for every prompt and 0 elsewhere. (P, K)."""
    completions = world.enumerate_completions()
    p = torch.zeros(len(world.prompts), len(completions), dtype=torch.float64)
    for text, q in zip(enum_texts, probs):
        p[:, completions.index(text)] = q
    return p.log()


# -- preference pairs --------------------------------------------------------------------------
def test_pairs_are_distinct_balanced_and_drawn_from_the_policy(world):
    texts = [f"good {EOS}", f"bad {EOS}", f"not bad {EOS}"]
    logp = three_point_logp(world, texts, [0.5, 0.3, 0.2])
    ds = data.preference_dataset(world, 4000, logp=logp, label_noise=0.0, seed=0)
    assert ds.column_names == ["prompt", "chosen", "rejected", "chosen_gold", "rejected_gold"]
    assert len(ds) == 4000 and collections.Counter(ds["prompt"]) == {"<food>": 2000, "<film>": 2000}
    assert all(c != r for c, r in zip(ds["chosen"], ds["rejected"]))
    # i.i.d. pairs conditioned on a ≠ b: P({i, j}) ∝ p_i·p_j = .15, .10, .06 (sum .31)
    pairs = collections.Counter(frozenset(x) for x in zip(ds["chosen"], ds["rejected"]))
    expected = {(0, 1): 0.15 / 0.31, (0, 2): 0.10 / 0.31, (1, 2): 0.06 / 0.31}
    for (i, j), share in expected.items():
        assert pairs[frozenset((texts[i], texts[j]))] / 4000 == pytest.approx(share, abs=0.025)
    # the gold columns are the world's gold rewards
    for row in ds.select(range(20)):
        assert row["chosen_gold"] == pytest.approx(world.gold_reward(row["prompt"], row["chosen"]))
        assert row["rejected_gold"] == pytest.approx(world.gold_reward(row["prompt"], row["rejected"]))
    # τ = 0: the higher gold reward always wins (no ties among these three)
    assert all(c > r for c, r in zip(ds["chosen_gold"], ds["rejected_gold"]))
    again = data.preference_dataset(world, 4000, logp=logp, label_noise=0.0, seed=0)
    assert again["chosen"] == ds["chosen"] and again["prompt"] == ds["prompt"]


def test_bradley_terry_label_noise(world):
    # gold: good 0.6, bad −0.6: Δ = 1.2, so at τ = 1 the better one wins with σ(1.2) = 0.7685
    logp = three_point_logp(world, [f"good {EOS}", f"bad {EOS}"], [0.5, 0.5])
    for tau, p_win in ((1.0, 1 / (1 + math.exp(-1.2))), (0.3, 1 / (1 + math.exp(-4.0))), (100.0, 0.5)):
        ds = data.preference_dataset(world, 6000, logp=logp, label_noise=tau, seed=1)
        wins = sum(c == f"good {EOS}" for c in ds["chosen"]) / len(ds)
        se = math.sqrt(p_win * (1 - p_win) / len(ds))
        assert abs(wins - p_win) < 4 * se + 1e-3, tau


def test_ties_are_coin_flips_at_zero_noise(world):
    # two completions with the same gold: "good" and a misplaced modifier, 0.6 − 1 = −0.4
    a, b = f"good not {EOS}", f"good very {EOS}"
    assert world.gold_reward("<food>", a) == world.gold_reward("<food>", b)
    ds = data.preference_dataset(world, 4000, logp=three_point_logp(world, [a, b], [0.5, 0.5]), label_noise=0.0)
    assert sum(c == a for c in ds["chosen"]) / 4000 == pytest.approx(0.5, abs=0.03)


def test_pairs_from_a_sampler(world):
    calls = []

    def sample_fn(prompts):
        calls.append(len(prompts))
        # the first call and every redraw after it alternate, so a few pairs need a redraw
        return [f"good {EOS}" if (i + len(calls)) % 3 else f"bad {EOS}" for i in range(len(prompts))]

    ds = data.preference_dataset(world, 30, sample_fn=sample_fn, label_noise=0.0)
    assert len(ds) == 30 and all(c != r for c, r in zip(ds["chosen"], ds["rejected"]))
    assert len(calls) >= 3 and calls[:2] == [30, 30]  # a and b, then redraws of the equal ones
    assert set(ds["chosen"]) == {f"good {EOS}"}
    with pytest.raises(ValueError, match="sample_fn"):
        data.preference_dataset(world, 5, sample_fn=lambda ps: [f"good {EOS}"] * len(ps))


def test_preference_dataset_rejects_bad_arguments(world):
    logp = three_point_logp(world, [f"good {EOS}", f"bad {EOS}"], [0.5, 0.5])
    with pytest.raises(ValueError, match="n_pairs"):
        data.preference_dataset(world, 0, logp=logp)
    with pytest.raises(ValueError, match="label_noise"):
        data.preference_dataset(world, 5, logp=logp, label_noise=-0.1)
    with pytest.raises(ValueError, match="exactly one of logp"):
        data.preference_dataset(world, 5)
    with pytest.raises(ValueError, match=r"logp must have shape \(P, K\)"):
        data.preference_dataset(world, 5, logp=logp[:, :-1])
    with pytest.raises(ValueError, match="too concentrated"):
        data.preference_dataset(world, 5, logp=three_point_logp(world, [f"good {EOS}"], [1.0]))


# -- loading preference files ------------------------------------------------------------------
EXPECTED = {"prompt": ["What is 2+2?"], "chosen": ["4"], "rejected": ["5"]}


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_load_explicit_prompt_strings(tmp_path):
    rows = [{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "score": 1}]
    out = data.load_preferences(write_jsonl(tmp_path / "p.jsonl", rows))
    assert out.column_names == ["prompt", "chosen", "rejected"] and out[:] == EXPECTED
    datasets.Dataset.from_list(rows).to_csv(tmp_path / "p.csv")
    assert data.load_preferences(str(tmp_path / "p.csv"))[:] == EXPECTED


def test_load_chat_messages_with_implicit_prompt(tmp_path):
    rows = [{
        "chosen": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
        "rejected": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "5"}],
    }]
    (tmp_path / "c.json").write_text(json.dumps(rows))
    assert data.load_preferences(tmp_path / "c.json")[:] == EXPECTED


def test_load_chat_messages_with_prompt_column(tmp_path):
    # UltraFeedback-binarized: a prompt string, and chosen/rejected that repeat it as a user turn
    rows = [{
        "prompt": "What is 2+2?",
        "chosen": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
        "rejected": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "5"}],
        "score_chosen": 9.0,
    }]
    datasets.Dataset.from_list(rows).to_parquet(tmp_path / "u.parquet")
    assert data.load_preferences(tmp_path / "u.parquet")[:] == EXPECTED
    # TRL conversational: the prompt as messages, chosen/rejected only the answers
    rows = [{
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
    }]
    out = data.load_preferences(write_jsonl(tmp_path / "t.jsonl", rows))
    assert out[:] == {"prompt": ["system: Be brief.\n\nuser: What is 2+2?"], "chosen": ["4"], "rejected": ["5"]}


def test_load_hh_transcripts(tmp_path):
    rows = [{"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4", "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5"}]
    out = data.load_preferences(write_jsonl(tmp_path / "hh.jsonl", rows))
    assert out[:] == {"prompt": ["\n\nHuman: What is 2+2?\n\nAssistant:"], "chosen": [" 4"], "rejected": [" 5"]}


def test_load_saved_dataset_dir_and_split(tmp_path):
    rows = [{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}]
    test_rows = [{"prompt": "What is 1+1?", "chosen": "2", "rejected": "3"}]
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "single")
    assert data.load_preferences(tmp_path / "single")[:] == EXPECTED
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(test_rows)})
    dd.save_to_disk(tmp_path / "dict")
    assert data.load_preferences(tmp_path / "dict", split="test")["chosen"] == ["2"]
    with pytest.raises(ValueError, match="split"):
        data.load_preferences(tmp_path / "dict", split="validation")


def test_load_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="chosen and rejected"):
        data.load_preferences(write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "answer": "y"}]))
    (tmp_path / "p.txt").write_text("hello")
    with pytest.raises(ValueError, match="file type"):
        data.load_preferences(tmp_path / "p.txt")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="offline") as err:
        data.load_preferences("Anthropic/hh-rlhf")
    assert "save_to_disk" in str(err.value) and "name_or_path" in str(err.value)
