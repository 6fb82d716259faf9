"""Packaging: the conda environment pins what pyproject pins; the CPU set-up has no CUDA wheels."""

import importlib.metadata as md
import re
import tomllib

import pytest
import yaml

from rlhf_lab import book


def _norm(spec: str) -> str:
    spec = spec.strip().lower().replace("_", "-")
    return re.sub(r"\s+", "", spec)


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((book.ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(s) for s in project["dependencies"]}
    for extra in ("book", "dev"):
        wanted |= {_norm(s) for s in project["optional-dependencies"][extra]}
    env = yaml.safe_load((book.ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    got = {_norm(s) for s in pip if not s.startswith("-e")}
    assert got == wanted, {"only in environment.yml": sorted(got - wanted), "only in pyproject": sorted(wanted - got)}


def test_cpu_environment_has_no_cuda_wheels():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may carry CUDA wheels")
    cuda = sorted(d.metadata["Name"] for d in md.distributions()
                  if (d.metadata["Name"] or "").lower().startswith(("nvidia-", "triton", "cuda-")))
    assert cuda == [], f"CUDA packages installed on a CPU machine: {cuda}"
    assert torch.version.cuda is None
