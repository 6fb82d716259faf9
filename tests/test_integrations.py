"""rlhf_lab.integrations: the world's reward as TRL's reward function, preference data in TRL's
form, generation restricted as the workbook's sampler restricts it, and WorkbookCallback logging
the workbook's sampled metrics from inside a real TRL GRPOTrainer run (two steps, a one-layer
GPT-2 saved with save_pretrained and loaded back through load_policy; no hub)."""

from __future__ import annotations

import dataclasses
import math

import datasets
import pytest
import torch

pytest.importorskip("trl")

from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from rlhf_lab import get_scale  # noqa: E402
from rlhf_lab.algos.loop import SampledEvaluator  # noqa: E402
from rlhf_lab.data import prompt_dataset  # noqa: E402
from rlhf_lab.integrations import trl as rt  # noqa: E402
from rlhf_lab.integrations.text_eval import TextSampledEvaluator  # noqa: E402
from rlhf_lab.models import build_policy, build_tokenizer, load_policy  # noqa: E402
from rlhf_lab.worlds.arithmetic import ArithmeticWorld  # noqa: E402
from rlhf_lab.worlds.reviews import ReviewsWorld  # noqa: E402

TINY = dataclasses.replace(get_scale("ci"), n_layer=1, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def world():
    return ReviewsWorld.from_scale(TINY)


@pytest.fixture(scope="module")
def folder(world, tmp_path_factory):
    """A tiny untrained policy of the reviews world, written as a hub model would be."""
    path = tmp_path_factory.mktemp("tiny-policy")
    torch.manual_seed(0)
    build_policy(world, TINY).save_pretrained(path)
    build_tokenizer(world).save_pretrained(path)
    return path


def test_reward_func_is_the_gold_reward_and_reads_eos_from_the_ids(world, folder):
    _, tokenizer = load_policy(folder)
    gold = rt.reward_func(world.gold_rewards, world, tokenizer)
    prompts = [world.prompts[0]] * 3
    texts = ["great [EOS]", "not good [EOS]", "great"]
    assert gold(prompts, texts) == world.gold_rewards(prompts, texts).tolist()
    # TRL's texts drop EOS; its completion_ids keep it, and the truncated one is penalised
    ids = [world.encode(t) for t in texts]
    stripped = [tokenizer.decode(i, skip_special_tokens=True) for i in ids]
    assert stripped[0] == stripped[2] == "great"
    assert gold(prompts, stripped, completion_ids=ids) == world.gold_rewards(prompts, texts).tolist()
    assert gold.__name__ == "gold"
    # a word outside the world's language (a hub model writes anything) gets invalid_reward
    assert gold(prompts[:2], ["great pizza [EOS]", "good [EOS]"])[0] == rt.INVALID_REWARD


def test_trl_preferences_prefix_a_space_and_keep_only_pairs_that_end_in_eos():
    pairs = datasets.Dataset.from_dict({"prompt": ["<food>", "<film>"], "chosen": ["good [EOS]", "good bad"],
                                        "rejected": ["bad [EOS]", "bad [EOS]"], "chosen_gold": [1.0, 0.0]})
    out = rt.trl_preferences(pairs)
    assert out.column_names == ["prompt", "chosen", "rejected"]
    assert out[0] == {"prompt": "<food>", "chosen": " good [EOS]", "rejected": " bad [EOS]"}
    assert len(out) == 1 and len(rt.trl_preferences(pairs, require_eos=False)) == 2


def test_generation_is_restricted_only_with_the_worlds_tokenizer(world, folder):
    _, tokenizer = load_policy(folder)
    banned = rt.generation_kwargs(world, tokenizer)["suppress_tokens"]
    assert banned == (~world.allowed_mask()).nonzero().flatten().tolist()
    other = build_tokenizer(ArithmeticWorld.from_scale(TINY))
    assert rt.generation_kwargs(world, other) == {}


def test_callback_logs_sampled_metrics_inside_a_trl_grpo_run(world, folder, tmp_path):
    model, tokenizer = load_policy(folder)
    ref, _ = load_policy(folder)
    calls = []
    callback = rt.WorkbookCallback(SampledEvaluator(world, ref, samples=32), eval_every=1,
                                   callback=lambda step, metrics, history: calls.append(step))
    config = rt.training_args(GRPOConfig, tmp_path, max_steps=2, learning_rate=1e-3,
                              per_device_train_batch_size=8, num_generations=4,
                              max_completion_length=world.max_new_tokens,
                              generation_kwargs=rt.generation_kwargs(world, tokenizer))
    trainer = rt.build(GRPOTrainer, model=model, args=config, train_dataset=prompt_dataset(world),
                       reward_funcs=rt.reward_func(world.gold_rewards, world, tokenizer),
                       processing_class=tokenizer, callbacks=[callback])
    with rt.quiet():
        trainer.train()
    history = callback.history
    assert calls == [0, 1, 2] and history.steps("reward/gold") == [0, 1, 2]
    for key in ("reward/gold", "kl/estimate", "entropy/estimate"):
        assert all(math.isfinite(v) for v in history[key] + history[f"{key}_se"]), key
    assert abs(history["kl/estimate"][0]) < 1e-4  # π = π_ref before the first step
    assert abs(history["kl/estimate"][-1]) > 1e-4  # TRL's steps moved the policy the callback measures
    assert history.steps("loss/policy") == [1, 2] and "stats/grad_norm" in history


def test_text_evaluator_measures_a_model_through_its_own_tokenizer(world, folder):
    model, tokenizer = load_policy(folder)
    gold = rt.reward_func(world.gold_rewards, world, tokenizer)
    metrics = TextSampledEvaluator(world.prompts, tokenizer, model, gold, samples=16,
                                   max_new_tokens=world.max_new_tokens)(model)
    assert set(metrics) == {f"{k}{s}" for k in ("reward/gold", "kl/estimate", "entropy/estimate")
                            for s in ("", "_se")}
    assert abs(metrics["kl/estimate"]) < 1e-5 and metrics["entropy/estimate"] > 0  # π = π_ref
    # without the world's mask an untrained model writes prompt tokens: they score invalid_reward
    assert rt.INVALID_REWARD <= metrics["reward/gold"] < 1.0


def test_classifier_reward_scores_each_pair(world, folder):
    from transformers import AutoModelForSequenceClassification

    with rt.quiet():
        classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    _, tokenizer = load_policy(folder)
    scores = rt.classifier_reward(classifier, tokenizer)(world.prompts[:2], ["good [EOS]", "bad bad [EOS]"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_the_callback_refuses_bad_arguments():
    with pytest.raises(ValueError, match="eval_every"):
        rt.WorkbookCallback(lambda policy: {}, eval_every=0)
    with pytest.raises(TypeError, match="evaluator"):
        rt.WorkbookCallback("exact", eval_every=1)
