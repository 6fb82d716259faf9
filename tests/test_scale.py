import pytest

from rlhf_lab import scale as scale_mod
from rlhf_lab.scale import SCALES, get_scale


@pytest.mark.parametrize("name", SCALES)
def test_presets_exist_and_grow(name):
    s = get_scale(name)
    assert s.name == name and s.n_embd > 0 and s.rl_steps > 0


def test_presets_are_ordered_by_size():
    ci, cpu, gpu = (get_scale(n) for n in SCALES)
    assert ci.n_embd <= cpu.n_embd <= gpu.n_embd
    assert ci.corpus_size <= cpu.corpus_size <= gpu.corpus_size
    assert ci.reviews_enumerable and not gpu.reviews_enumerable


def test_env_var_selects_the_preset(monkeypatch):
    monkeypatch.setenv("RLHF_LAB_SCALE", "CPU")
    assert get_scale().name == "cpu"


def test_default_is_gpu_with_cuda_else_cpu(monkeypatch):
    monkeypatch.delenv("RLHF_LAB_SCALE", raising=False)
    monkeypatch.setattr(scale_mod, "_cuda_available", lambda: False)
    assert get_scale().name == "cpu"
    monkeypatch.setattr(scale_mod, "_cuda_available", lambda: True)
    assert get_scale().name == "gpu"


def test_unknown_scale_names_the_allowed_ones(monkeypatch):
    with pytest.raises(ValueError, match=r"name='huge'.*allowed: ci, cpu, gpu"):
        get_scale("huge")
    monkeypatch.setenv("RLHF_LAB_SCALE", "laptop")
    with pytest.raises(ValueError, match=r"RLHF_LAB_SCALE='laptop'.*allowed: ci, cpu, gpu"):
        get_scale()


def test_replace_keeps_other_fields():
    s = get_scale("ci")
    t = s.replace(rl_steps=3)
    assert t.rl_steps == 3 and t.n_embd == s.n_embd


def test_exact_sections_use_the_largest_enumerable_preset():
    from rlhf_lab.scale import get_scale
    assert get_scale("ci").exact() == get_scale("ci")
    assert get_scale("cpu").exact() == get_scale("cpu")
    gpu = get_scale("gpu")
    exact = gpu.exact()
    assert exact.name == "cpu" and exact.reviews_enumerable and exact.device == gpu.device
    assert gpu.replace(seed=5).exact().seed == 5  # the seed travels with the scale


def test_seed_comes_from_one_variable(monkeypatch):
    from rlhf_lab.algos.grpo import GRPOConfig
    from rlhf_lab.algos.ppo import PPOConfig
    from rlhf_lab.scale import get_seed

    monkeypatch.delenv("RLHF_LAB_SEED", raising=False)
    assert get_seed() == 0 and get_scale("ci").seed == 0
    monkeypatch.setenv("RLHF_LAB_SEED", " 3 ")
    assert get_seed() == 3 and get_scale("ci").seed == 3 and get_scale("gpu").exact().seed == 3
    assert GRPOConfig().seed == 3 and PPOConfig().seed == 3  # configs default to it
    assert GRPOConfig(seed=7).seed == 7


@pytest.mark.parametrize("raw", ["abc", "1.5", "-1"])
def test_bad_seed_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv("RLHF_LAB_SEED", raw)
    with pytest.raises(ValueError, match=r"RLHF_LAB_SEED="):
        get_scale("ci")
