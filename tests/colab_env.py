"""A Colab-like virtual environment: the packages rlhf_lab shares with Colab, at Colab's versions.

``colab/pip-freeze-2026.txt`` is Colab's preinstalled environment (googlecolab/backend-info).
The environment gets, at those versions, every package rlhf_lab shares with Colab plus the
kernel that runs notebooks (ipykernel, jupyter_client); every transitive dependency is held to
Colab's version by the whole freeze used as a pip constraints file. torch is the CPU build of
``TORCH_SPEC`` (Colab's CUDA build is not installable here). The environment is cached under
``.cache/colab-env/<key>``, the key a hash of everything that goes into it, so it is built once.

    python tests/colab_env.py     # build it (or find it) and print its path
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FREEZE = Path(__file__).resolve().parent / "colab" / "pip-freeze-2026.txt"
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")
SHARED = [
    # what rlhf_lab imports or depends on
    "ipywidgets", "plotly", "ipython", "traitlets", "transformers", "tokenizers", "datasets",
    "numpy", "pandas", "tqdm", "huggingface_hub", "safetensors",
    # what runs a notebook's kernel
    "ipykernel", "jupyter_client",
]
# Left at what the CPU torch needs: torch 2.13 requires setuptools >= 77 (Colab's torch 2.11 lives
# with its setuptools 75.2); Colab's pins of them would make pip upgrade them for torch's sake.
NOT_PINNED = {"setuptools"}
PIP = ["-m", "pip", "--disable-pip-version-check", "--quiet"]


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_pins() -> dict[str, str]:
    """Colab's ``name==version`` lines, by canonical name (URL installs such as torch left out)."""
    pins = {}
    for line in FREEZE.read_text().splitlines():
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if m:
            pins[_canon(m.group(1))] = m.group(2)
    return pins


def shared_pins() -> list[str]:
    pins = colab_pins()
    return [f"{name}=={pins[_canon(name)]}" for name in SHARED]


def env_dir() -> Path:
    key = hashlib.sha256("\n".join([FREEZE.read_text(), TORCH_SPEC, *shared_pins(),
                                    sys.version]).encode()).hexdigest()[:12]
    return ROOT / ".cache" / "colab-env" / key


def python() -> Path:
    return env_dir() / "bin" / "python"


def ensure() -> Path:
    """Build the environment unless it is already there; returns its python. Safe under xdist."""
    folder = env_dir()
    done = folder / ".complete"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            base = Path(sys.base_prefix) / "bin" / "python3"
            subprocess.run([str(base), "-m", "venv", "--clear", str(folder)], check=True)
            constraints = folder / "colab-constraints.txt"
            constraints.write_text("".join(f"{k}=={v}\n" for k, v in colab_pins().items() if k not in NOT_PINNED))
            # torch first and unconstrained (its CPU build is not Colab's), then Colab's versions
            subprocess.run([str(python()), *PIP, "install", TORCH_SPEC], check=True)
            subprocess.run([str(python()), *PIP, "install", "-c", str(constraints), *shared_pins()], check=True)
            done.touch()
    return python()


def installed(py: Path) -> dict[str, str]:
    """name -> version of every distribution installed in the environment of ``py``."""
    out = subprocess.run([str(py), "-c", "import importlib.metadata as m, json; print(json.dumps("
                                         "{d.metadata['Name']: d.version for d in m.distributions()}))"],
                         check=True, capture_output=True, text=True).stdout
    import json

    return {_canon(k): v for k, v in json.loads(out).items()}


if __name__ == "__main__":
    print(ensure())
