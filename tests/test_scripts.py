"""rlhf_lab.scripts.grpo: the scale-out path. Bad arguments are refused with a message that names
them (exit status 2, before any model is loaded), the ZeRO-2 accelerate config ships beside the
script, and the script runs two GRPO steps under ``accelerate launch --num_processes 1 --cpu`` on
a tiny model saved with save_pretrained, printing and writing its sampled metrics (no hub)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("accelerate")

import yaml  # noqa: E402

from rlhf_lab import get_scale  # noqa: E402
from rlhf_lab.models import build_policy, build_tokenizer  # noqa: E402
from rlhf_lab.scripts import grpo  # noqa: E402
from rlhf_lab.worlds.reviews import ReviewsWorld  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "rlhf_lab" / "scripts" / "configs" / "zero2.yaml"


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: --model"),
    (["--model", "m", "--world", "chess"], "invalid choice: 'chess'"),
    (["--model", "m", "--steps", "0"], "expected an integer ≥ 1, got 0"),
    (["--model", "m", "--group-size", "1"], "--group-size must be ≥ 2"),
    (["--model", "m", "--lr", "-1"], "--lr must be > 0"),
    (["--model", "./no/such/folder", "--scale", "ci"], "no directory there"),
])
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        grpo.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_names_vllm_colocate_and_the_zero_config(capsys):
    with pytest.raises(SystemExit):
        grpo.main(["--help"])
    text = capsys.readouterr().out
    assert 'vllm_mode="colocate"' in text and "configs/zero2.yaml" in text


def test_the_zero2_config_is_deepspeed_stage_2():
    config = yaml.safe_load(CONFIG.read_text())
    assert config["distributed_type"] == "DEEPSPEED" and config["deepspeed_config"]["zero_stage"] == 2


def test_two_steps_under_accelerate_launch_on_a_cpu(tmp_path):
    scale = dataclasses.replace(get_scale("ci"), n_layer=1, n_head=2, n_embd=32)
    world = ReviewsWorld.from_scale(scale)
    torch.manual_seed(0)
    build_policy(world, scale).save_pretrained(tmp_path / "model")
    build_tokenizer(world).save_pretrained(tmp_path / "model")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "RLHF_LAB_SCALE": "ci"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "rlhf_lab.scripts.grpo", "--model", str(tmp_path / "model"), "--world", "reviews",
               "--scale", "ci", "--steps", "2", "--prompts-per-step", "2", "--group-size", "4",
               "--eval-samples", "32", "--eval-every", "1", "--lr", "1e-2", "--output-dir", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == json.loads((out / "metrics.json").read_text())
    assert result["steps"] == 2 and result["world"] == world.name
    assert abs(result["first"]["kl/estimate"]) < 1e-4 < abs(result["last"]["kl/estimate"])
    assert {"reward/gold", "reward/gold_se", "entropy/estimate"} <= set(result["last"])
    assert seconds < 60, f"the smoke test took {seconds:.0f} s"


def test_vllm_is_refused_with_the_worlds_own_tokenizer(monkeypatch, capsys, tmp_path):
    """vLLM's sampling takes no suppress_tokens, which the world's own tokenizer needs: refused
    with a message, after the model is loaded (a GPU is pretended, so the GPU check passes)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(SystemExit) as exit_info:
        grpo.main(["--model", "reference", "--scale", "ci", "--use-vllm", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "suppress_tokens" in capsys.readouterr().err
