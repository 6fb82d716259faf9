"""cache.py (atomic entries, corruption detection, sweep caching) and history.py."""

from __future__ import annotations

import json
import math
import os
import threading
import time
import warnings

import pytest
import torch

from rlhf_lab import cache
from rlhf_lab.history import History


@pytest.fixture(autouse=True)
def _cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "cache"))


# -- cache -------------------------------------------------------------------------------------
def test_cache_dir_follows_the_environment_variable(tmp_path):
    assert cache.cache_dir() == tmp_path / "cache"
    assert cache.cache_dir().is_dir()


def test_config_key_is_stable_and_order_free():
    a = cache.config_key({"beta": 0.1, "steps": 40})
    assert a == cache.config_key({"steps": 40, "beta": 0.1})
    assert a != cache.config_key({"steps": 41, "beta": 0.1})
    assert len(a) == 16 and all(c in "0123456789abcdef" for c in a)


def _build(tmp):
    (tmp / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    (tmp / "sub").mkdir()
    (tmp / "sub" / "config.json").write_text('{"a": 1}')


def test_atomic_dir_writes_a_manifest_of_every_file():
    target = cache.cache_dir() / "entry"
    with cache.atomic_dir(target) as tmp:
        _build(tmp)
        assert not target.exists()  # nothing is visible until the body finishes
    manifest = json.loads((target / cache.MANIFEST).read_text())
    assert sorted(manifest) == ["sub/config.json", "weights.bin"]
    assert cache.is_valid(target)
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_a_failed_build_leaves_no_entry():
    target = cache.cache_dir() / "entry"
    with pytest.raises(RuntimeError, match="boom"):
        with cache.atomic_dir(target) as tmp:
            _build(tmp)
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "delete_file", "delete_manifest", "garble_manifest"])
def test_damaged_entries_are_detected_and_rebuilt_with_a_warning(damage):
    target = cache.cache_dir() / "entry"
    builds = []

    def build(tmp):
        builds.append(1)
        _build(tmp)

    def load(path):
        return (path / "weights.bin").read_bytes()

    assert cache.build_or_load(target, build, load) == b"\x00\x01" * 1000
    assert len(builds) == 1
    if damage == "truncate":  # e.g. a disk that filled up
        (target / "weights.bin").write_bytes(b"\x00")
    elif damage == "delete_file":
        (target / "sub" / "config.json").unlink()
    elif damage == "delete_manifest":  # a run killed before it finished
        (target / cache.MANIFEST).unlink()
    else:
        (target / cache.MANIFEST).write_text("{not json")
    assert not cache.is_valid(target)
    with pytest.warns(cache.CacheWarning, match="rebuilding"):
        assert cache.build_or_load(target, build, load) == b"\x00\x01" * 1000
    assert len(builds) == 2 and cache.is_valid(target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact entry loads silently, without rebuilding
        cache.build_or_load(target, build, load)
    assert len(builds) == 2


@pytest.mark.skipif(cache.fcntl is None, reason="file locks need fcntl (POSIX)")
def test_concurrent_builders_of_one_entry_build_it_once():
    target = cache.cache_dir() / "entry"
    builds = []

    def build(tmp):
        builds.append(1)
        time.sleep(0.3)  # the second caller arrives while this one is still building
        _build(tmp)

    results = []

    def worker():
        results.append(cache.build_or_load(target, build, lambda p: (p / "weights.bin").read_bytes()))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and results == [b"\x00\x01" * 1000] * 2


def test_cached_json_computes_once_per_config():
    calls = []

    def compute():
        calls.append(1)
        return {"gold": [0.1, 0.2], "beta": 0.5}

    first = cache.cached_json("sweep", {"beta": 0.5}, compute)
    second = cache.cached_json("sweep", {"beta": 0.5}, compute)
    assert first == second == {"gold": [0.1, 0.2], "beta": 0.5}
    assert len(calls) == 1
    cache.cached_json("sweep", {"beta": 1.0}, compute)
    assert len(calls) == 2


def test_cached_torch_round_trips_tensors():
    value = {"logp": torch.linspace(-3, 0, 7), "n": 3}
    out = cache.cached_torch("tensors", {"k": 1}, lambda: value)
    again = cache.cached_torch("tensors", {"k": 1}, lambda: pytest.fail("should load from disk"))
    assert torch.equal(out["logp"], value["logp"]) and torch.equal(again["logp"], value["logp"])
    assert again["n"] == 3


def test_sweep_names_must_not_be_paths():
    with pytest.raises(ValueError, match="name"):
        cache.cached_json("../escape", {}, lambda: 1)


# -- history ------------------------------------------------------------------------------------
def test_history_logs_namespaced_keys_from_dicts_and_kwargs():
    h = History()
    h.log(0, {"reward/gold": 0.5, "loss/policy": torch.tensor(1.25)})
    h.log(1, {"loss/policy": 0.75}, lr=1e-3)
    h.log(3, {"reward/gold": 0.9})
    assert h["reward/gold"] == [0.5, 0.9]
    assert h.steps("reward/gold") == [0, 3]
    assert h["loss/policy"] == [1.25, 0.75]
    assert h.keys() == ["reward/gold", "loss/policy", "lr"]
    assert len(h) == 3
    assert h.last("reward/gold") == 0.9
    assert h.last() == {"reward/gold": 0.9, "loss/policy": 0.75, "lr": 1e-3}
    assert "lr" in h and "kl/exact" not in h


def test_history_relogging_a_step_keeps_the_later_value():
    h = History()
    h.log(2, {"a": 1.0})
    h.log(2, {"a": 2.0})
    assert h["a"] == [2.0] and h.steps("a") == [2] and len(h) == 1


def test_history_to_frame_has_one_row_per_step_and_nan_gaps():
    h = History()
    h.log(0, {"reward/gold": 0.5, "loss/policy": 1.0})
    h.log(1, {"loss/policy": 0.5})
    h.log(2, {"reward/gold": 0.7})
    df = h.to_frame()
    assert list(df.index) == [0, 1, 2] and df.index.name == "step"
    assert list(df.columns) == ["reward/gold", "loss/policy"]
    assert df.loc[0, "reward/gold"] == 0.5 and df.loc[2, "reward/gold"] == 0.7
    assert math.isnan(df.loc[1, "reward/gold"]) and math.isnan(df.loc[2, "loss/policy"])


def test_history_rejects_bad_input():
    h = History()
    with pytest.raises(ValueError, match="step"):
        h.log(-1, {"a": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        h.log(0)
    with pytest.raises(ValueError, match="scalar"):
        h.log(0, {"a": torch.ones(3)})
    with pytest.raises(ValueError, match="number"):
        h.log(0, {"a": "high"})
    with pytest.raises(KeyError, match="kl/exact"):
        h["kl/exact"]


def test_cache_env_default_is_home(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.ENV_VAR)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "rlhf_lab"
    assert os.path.isdir(tmp_path / "home" / ".cache" / "rlhf_lab")
