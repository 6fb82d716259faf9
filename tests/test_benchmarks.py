"""The benchmarks `make bench` runs still run: each script, at scale ci with the fewest repetitions,
prints the ratio it exists for (the numbers themselves are measured, never asserted: README,
"Performance"). teacher_forcing.py also checks that its three forwards agree on every real position."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "RLHF_LAB_SCALE": "ci", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_sampler_benchmark_prints_its_ratio():
    out = _run("sampler.py", "--reps", "1", "--batch", "32")
    assert re.search(r"ratio ours/generate: \d+\.\d\dx", out), out


def test_teacher_forcing_benchmark_prints_three_sides():
    out = _run("teacher_forcing.py", "--reps", "1")
    for side in ("transformers", "row by row", "shared prefixes"):
        assert re.search(rf"{side}: forward\+backward median +\d+\.\d\d ms +\(\d+\.\d\dx transformers\)", out), out
    nodes = re.search(r"real positions=(\d+) distinct prefixes=(\d+)", out)
    assert nodes and int(nodes.group(2)) < int(nodes.group(1)), out  # rows share prefixes in a GRPO batch


def test_train_step_benchmark_prints_its_eager_step():
    # on a CPU only the eager side runs (the CUDA-graph side and its check need a GPU: benchmarks/gpu.sh)
    out = _run("train_step.py", "--reps", "2")
    assert re.search(r"eager: step median +\d+\.\d{3} ms", out), out


def test_trainers_benchmark_prints_both_ratios():
    pytest.importorskip("trl")
    out = _run("trainers.py", "--reps", "1", "--steps", "2")
    for name in ("DPO", "GRPO"):
        assert re.search(rf"ratio {name} TRL/ours: \d+\.\d\dx", out), out
