"""Issue 14's ten findings, each pinned: faults are reported where they happen, and nothing is lost.

1. the cache: a read-only cache serves its valid entries (and says to set RLHF_LAB_CACHE when it
   must write); files readable by others; orphan temporary folders removed; no usable HOME;
   RLHF_LAB_CACHE naming a file; a corrupt manifest rebuilt;
2. a world too large to enumerate is not enumerable by default, and refuses when asked;
3. diverged weights (NaN logits) stop every trainer with a FloatingPointError naming the step;
4. probabilities passed where log-probs belong are refused;
5. rejection sampling never prefers a NaN reward;
6. Config fields of the wrong type name the field (more in test_bad_config.py);
7. a wrong-shaped reward_fn is named, by every trainer;
8. a policy of another world is refused before any forward pass; π*_β refuses broadcast shapes;
9. the hub is asked at call time and fails fast offline; a typo'd path is not sent to the hub;
   a model folder without its tokenizer is refused;
10. DPO with an absurd β stops instead of learning nothing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from rlhf_lab import cache, data, exact, get_scale, models
from rlhf_lab.algos import a2c, best_of_n, dpo, grpo, ppo, reinforce
from rlhf_lab.algos.loop import ExactEvaluator, SampledEvaluator, default_evaluator
from rlhf_lab.core import kl_penalty
from rlhf_lab.worlds.arithmetic import ArithmeticWorld
from rlhf_lab.worlds.reviews import ReviewsWorld

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(n_layer=1, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def tiny():
    """A reviews world of 85 completions, a fresh one-layer policy, its exact evaluator, 16 pairs."""
    world = ReviewsWorld(n_topics=2, words_per_class=1, max_new_tokens=3)
    torch.manual_seed(0)
    policy = models.build_policy(world, get_scale("ci").replace(**TINY)).eval()
    evaluator = ExactEvaluator(world, policy)
    pairs = data.preference_dataset(world, 16, logp=evaluator.logp_ref, seed=0)
    return world, policy, evaluator, pairs


# -- 1. the cache ----------------------------------------------------------------------------------
READ_ONLY = """
import sys
sys.path.insert(0, {root!r})
from rlhf_lab.cache import cached_json
print(cached_json("demo", {{"a": 1}}, lambda: 1 / 0))  # a valid entry: read, never rebuilt
try:
    cached_json("demo", {{"a": 2}}, lambda: 2)
except PermissionError as err:
    print("refused:", err)
"""


def test_a_read_only_cache_serves_valid_entries_and_says_what_to_do(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="rlhf-lab-ro-"))  # not under tmp_path: another user must reach it
    try:
        root.chmod(0o755)
        env = {**os.environ, "RLHF_LAB_CACHE": str(root)}
        env.pop("PYTHONPATH", None)
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); from rlhf_lab.cache "
                        "import cached_json; cached_json('demo', {'a': 1}, lambda: 42)"], env=env, check=True)
        if os.geteuid() == 0:  # root ignores permission bits: read it as nobody, whose cache it is not
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv to drop privileges")
            cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
        else:
            for path in [root, *root.rglob("*")]:
                path.chmod(0o555 if path.is_dir() else 0o444)
            cmd = [sys.executable]
        out = subprocess.run([*cmd, "-c", READ_ONLY.format(root=str(ROOT))], env=env, capture_output=True, text=True,
                             cwd=root, timeout=60)
        assert out.returncode == 0, out.stderr
        first, second = out.stdout.splitlines()
        assert first == "42"
        assert second.startswith("refused:") and "set RLHF_LAB_CACHE to a writable folder" in second
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


def test_cache_files_are_readable_by_others(tmp_path):
    def build(tmp: Path) -> None:
        fd = os.open(tmp / "weights.bin", os.O_WRONLY | os.O_CREAT, 0o600)  # as safetensors writes them
        os.write(fd, b"x")
        os.close(fd)
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "f").write_text("y")

    target = tmp_path / "entry"
    cache.build_or_load(target, build, lambda p: None)
    for path in [target, *target.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_orphan_temporary_folders_are_removed_once_old(tmp_path):
    target = tmp_path / "entry"
    old, fresh = tmp_path / ".entry.tmp-killed", tmp_path / ".entry.tmp-running"
    trash, other = tmp_path / ".entry.old-killed", tmp_path / ".other.tmp-killed"
    for path in (old, fresh, trash, other):
        path.mkdir()
        (path / "model.safetensors").write_text("half")
    hour_ago = time.time() - 3600
    for path in (old, trash, other):
        os.utime(path, (hour_ago, hour_ago))
    assert cache.build_or_load(target, lambda tmp: (tmp / "r").write_text("1"), lambda p: (p / "r").read_text()) == "1"
    assert not old.exists() and not trash.exists()  # the killed runs' folders of this entry
    assert fresh.exists()  # young: it may be a writer that takes no lock
    assert other.exists()  # another entry's: not ours to judge


def test_no_usable_home_falls_back_to_the_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("RLHF_LAB_CACHE", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: (_ for _ in ()).throw(RuntimeError("no HOME"))))
    with pytest.warns(cache.CacheWarning, match="set RLHF_LAB_CACHE"):
        root = cache.cache_dir()
    assert root.parent == tmp_path and root.is_dir()
    blocked = tmp_path / "a-file"  # HOME=/nonexistent: a home under which nothing can be created
    blocked.write_text("")
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: blocked))
    with pytest.warns(cache.CacheWarning):
        assert cache.cache_dir() == root


def test_rlhf_lab_cache_naming_a_file_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("RLHF_LAB_CACHE", str(tmp_path / "f"))
    with pytest.raises(NotADirectoryError, match="RLHF_LAB_CACHE=.* is a file, not a folder"):
        cache.cache_dir()


@pytest.mark.parametrize("manifest", [[], {}, "x", {"r": 3}, {"../r": "00"}, {"/etc/passwd": "00"}])
def test_a_corrupt_manifest_is_invalid_and_rebuilt(tmp_path, manifest):
    target = tmp_path / "entry"
    cache.build_or_load(target, lambda tmp: (tmp / "r").write_text("1"), lambda p: None)
    (target / cache.MANIFEST).write_text(json.dumps(manifest))
    assert cache.check_entry(target).startswith("corrupted")
    with pytest.warns(cache.CacheWarning, match="rebuilding"):
        assert cache.build_or_load(target, lambda tmp: (tmp / "r").write_text("2"),
                                   lambda p: (p / "r").read_text()) == "2"
    assert cache.is_valid(target)


# -- 2. enumeration limits --------------------------------------------------------------------------
def test_a_world_too_large_to_enumerate_is_sampled_by_default_and_refuses_when_asked():
    big = ReviewsWorld(words_per_class=6, max_new_tokens=6)  # 8.1 million completions per prompt
    assert big.n_completions() == 8_108_731 and not big.enumerable
    with pytest.raises(ValueError, match=r"8,108,731 completions.*SampledEvaluator"):
        ReviewsWorld(words_per_class=6, max_new_tokens=6, enumerable=True)
    with pytest.raises(ValueError, match="SampledEvaluator"):
        ArithmeticWorld(max_operand=99, enumerable=True)
    big.enumerable = True  # forced by hand: exact evaluation still refuses
    with pytest.raises(ValueError, match="not enumerable"):
        exact.Enumeration(big)
    policy = models.build_policy(big, get_scale("ci").replace(**TINY))
    with pytest.raises(ValueError, match="not enumerable"):
        ExactEvaluator(big, policy)
    big.enumerable = False
    assert isinstance(default_evaluator(big, policy), SampledEvaluator)
    assert ReviewsWorld(n_topics=2, words_per_class=1, max_new_tokens=3).enumerable  # small ones still are


# -- 3. diverged weights ----------------------------------------------------------------------------
def _diverging_runs(world, policy, evaluator, pairs):
    fast = dict(lr=1e30, progress=False)
    return {
        "reinforce": lambda: reinforce.train(policy, world, reinforce.ReinforceConfig(steps=4, batch_size=8, **fast),
                                             evaluator=evaluator),
        "a2c": lambda: a2c.train(policy, world, a2c.A2CConfig(steps=4, batch_size=8, **fast), evaluator=evaluator),
        "ppo": lambda: ppo.train(policy, world, ppo.PPOConfig(steps=4, batch_size=8, minibatch_size=4, **fast),
                                 evaluator=evaluator),
        "grpo": lambda: grpo.train(policy, world, grpo.GRPOConfig(steps=4, prompts_per_step=2, group_size=4, **fast),
                                   evaluator=evaluator),
        "rejection_sampling": lambda: best_of_n.train(
            policy, world, best_of_n.RejectionSamplingConfig(rounds=3, prompts_per_round=4, n=2, batch_size=4, **fast),
            evaluator=evaluator),
        "dpo": lambda: dpo.train(policy, world, pairs, dpo.DPOConfig(epochs=2, batch_size=4, **fast),
                                 evaluator=evaluator),
    }


@pytest.mark.parametrize("name", ["reinforce", "a2c", "ppo", "grpo", "rejection_sampling", "dpo"])
def test_diverged_weights_stop_training_naming_the_step(tiny, name):
    with pytest.raises(FloatingPointError, match=r"at step \d+; last finite metrics: \{.*reward/gold") as err:
        _diverging_runs(*tiny)[name]()
    assert "completion=" not in str(err.value)  # not a complaint about PAD tokens the NaN logits produced
    assert err.value.history["reward/gold"]  # the run so far is kept on the error


def test_the_sampler_refuses_nan_logits(tiny):
    world, policy, _, _ = tiny
    broken = models.build_policy(world, get_scale("ci").replace(**TINY))
    with torch.no_grad():
        broken.lm_head.weight.fill_(math.nan)
    from rlhf_lab.rollout import sample
    with pytest.raises(FloatingPointError, match="logits are not finite"):
        sample(broken, world, ["<food>"] * 4)


# -- 4. probabilities where log-probs belong ---------------------------------------------------------
def test_probabilities_are_not_accepted_as_log_probs(tiny):
    world, _, evaluator, _ = tiny
    lp = evaluator.logp_ref
    enum = evaluator.enum
    for call, name in [(lambda: enum.metrics(lp.exp(), lp), "logp"), (lambda: enum.metrics(lp, lp.exp()), "logp_ref"),
                       (lambda: exact.kl(lp.exp(), lp), "logp"), (lambda: exact.entropy(lp.exp()), "logp"),
                       (lambda: exact.expected(lp.exp(), enum.gold), "logp"),
                       (lambda: kl_penalty(lp.exp(), lp), "logp"),
                       (lambda: exact.kl_regularized_optimum(lp.exp(), enum.gold, 1.0), "logp_ref"),
                       (lambda: data.preference_dataset(world, 4, logp=lp.exp()), "logp")]:
        with pytest.raises(ValueError, match=f"^{name} must be log-probabilities.*look like probabilities"):
            call()


# -- 5. rejection sampling and NaN rewards -----------------------------------------------------------
def test_rejection_sampling_never_keeps_a_nan_reward(tiny):
    with pytest.raises(ValueError, match="rewards.*must be finite"):
        best_of_n.select_samples(torch.tensor([[math.nan, 0.0, 1.0]]), 1)
    world, policy, evaluator, _ = tiny
    config = best_of_n.RejectionSamplingConfig(rounds=2, prompts_per_round=4, n=2, progress=False)
    with pytest.raises(FloatingPointError, match="reward_fn.*finite.*at step 0"):
        best_of_n.train(policy, world, config, reward_fn=lambda p, c: torch.full((len(p),), math.nan),
                        evaluator=evaluator)


# -- 6. config types ----------------------------------------------------------------------------------
def test_config_types_name_the_field():
    with pytest.raises(TypeError, match=r"ReinforceConfig\.lr must be a number; got '1e-3' \(str\)"):
        reinforce.ReinforceConfig(lr="1e-3")
    with pytest.raises(TypeError, match=r"GRPOConfig\.group_size must be an integer; got 2\.5"):
        grpo.GRPOConfig(group_size=2.5)
    with pytest.raises(ValueError, match=r"PPOConfig\.beta must be finite; got inf"):
        ppo.PPOConfig(beta=math.inf)
    for config_cls in (reinforce.ReinforceConfig, a2c.A2CConfig, ppo.PPOConfig, grpo.GRPOConfig,
                       best_of_n.RejectionSamplingConfig, dpo.DPOConfig):
        with pytest.raises(ValueError, match=rf"{config_cls.__name__}\.lr must be"):
            config_cls(lr=math.inf)


# -- 7. a wrong-shaped reward_fn, in every trainer ----------------------------------------------------
@pytest.mark.parametrize("name", ["reinforce", "a2c", "ppo", "grpo", "rejection_sampling"])
@pytest.mark.parametrize("bad, error, message", [
    (lambda p, c: torch.zeros(len(p), 2), ValueError, r"reward_fn must return shape \(\d+,\)"),
    (lambda p, c: torch.zeros(len(p) + 1), ValueError, r"reward_fn must return shape \(\d+,\)"),
    (lambda p, c: ["good"] * len(p), TypeError, "reward_fn must return a tensor"),
    (lambda p, c: None, TypeError, "reward_fn must return a tensor"),
    (lambda p, c: torch.full((len(p),), math.inf), FloatingPointError, r"reward_fn.*finite.*at step 0"),
])
def test_every_trainer_checks_its_reward_fn(tiny, name, bad, error, message):
    world, policy, evaluator, _ = tiny
    small = dict(progress=False)
    configs = {"reinforce": reinforce.ReinforceConfig(steps=1, batch_size=4, **small),
               "a2c": a2c.A2CConfig(steps=1, batch_size=4, **small),
               "ppo": ppo.PPOConfig(steps=1, batch_size=4, minibatch_size=2, **small),
               "grpo": grpo.GRPOConfig(steps=1, prompts_per_step=2, group_size=2, **small),
               "rejection_sampling": best_of_n.RejectionSamplingConfig(rounds=1, prompts_per_round=2, n=2, **small)}
    module = {"reinforce": reinforce, "a2c": a2c, "ppo": ppo, "grpo": grpo, "rejection_sampling": best_of_n}[name]
    with pytest.raises(error, match=message):
        module.train(policy, world, configs[name], reward_fn=bad, evaluator=evaluator)
    with pytest.raises(error, match=message.replace(" at step 0", "")):  # the evaluator's table of the proxy
        module.train(policy, world, configs[name], reward_fn=bad)


# -- 8. a policy of another world; shapes that would broadcast -----------------------------------------
def test_a_policy_of_another_world_is_refused_before_any_forward_pass(tiny):
    world, policy, _, _ = tiny
    arithmetic = ArithmeticWorld(max_operand=3)

    def forward(*args, **kwargs):
        raise AssertionError("the policy ran before the check")

    stranger = models.build_policy(world, get_scale("ci").replace(**TINY))
    stranger.forward = forward
    for call in (lambda: grpo.train(stranger, arithmetic, grpo.GRPOConfig(steps=1, progress=False)),
                 lambda: reinforce.train(stranger, arithmetic, reinforce.ReinforceConfig(steps=1, progress=False)),
                 lambda: exact.exact_logprobs(stranger, arithmetic),
                 lambda: ExactEvaluator(arithmetic, stranger)):
        with pytest.raises(ValueError, match=r"logits per token \(its vocabulary\) but world 'arithmetic'"):
            call()


def test_the_optimum_refuses_rewards_that_would_broadcast():
    logp_ref = torch.log_softmax(torch.randn(5, generator=torch.Generator().manual_seed(0)), 0)
    with pytest.raises(ValueError, match=r"rewards must have shape \(5,\)"):
        exact.kl_regularized_optimum(logp_ref, torch.zeros(5, 1), 1.0)


# -- 9. the hub, offline -------------------------------------------------------------------------------
def test_the_hub_is_asked_at_call_time_and_fails_fast(monkeypatch, tmp_path):
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a hub that cannot be reached
    start = time.perf_counter()
    with pytest.raises(OSError, match="cannot be reached"):
        models.load_policy("rlhf-lab-test/no-such-model")
    assert time.perf_counter() - start < 5
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after import: read now
    start = time.perf_counter()
    with pytest.raises(OSError, match="HF_HUB_OFFLINE=1"):
        models.load_policy("rlhf-lab-test/no-such-model")
    assert time.perf_counter() - start < 5


def test_a_typo_in_a_local_path_is_not_sent_to_the_hub(monkeypatch, tmp_path):
    def hub(*args, **kwargs):
        raise AssertionError("sent to the hub")

    monkeypatch.setattr(data.datasets, "load_dataset", hub)
    for typo in ("./prefs.jsonl", str(tmp_path / "missing"), "~/no/such/dir", "data/prefs.parquet", "prefs.csv"):
        with pytest.raises(FileNotFoundError, match="name_or_path=.*looks like a local path"):
            data.load_preferences(typo)
    with pytest.raises(FileNotFoundError, match="looks like a local path"):
        models.load_policy("./no/such/model")


def test_a_model_folder_without_its_tokenizer_is_refused(tiny, tmp_path):
    world, policy, _, _ = tiny
    policy.save_pretrained(tmp_path / "model-only")
    with pytest.raises(FileNotFoundError, match="holds no tokenizer.*tokenizer.save_pretrained"):
        models.load_policy(tmp_path / "model-only")


# -- 10. DPO with an absurd β ---------------------------------------------------------------------------
def test_dpo_with_an_absurd_beta_stops_naming_the_step(tiny):
    world, policy, evaluator, pairs = tiny
    config = dpo.DPOConfig(beta=1e30, epochs=1, batch_size=4, progress=False)
    with pytest.raises(FloatingPointError, match="gradient norm became .* at step 0"):
        dpo.train(policy, world, pairs, config, evaluator=evaluator)
