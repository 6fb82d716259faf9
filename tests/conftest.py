"""Shared test set-up: scale ci unless told otherwise, a project-local model cache."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("RLHF_LAB_SCALE", "ci")
# A fresh clone starts with an empty cache (so CI measures the cold path); local reruns are warm.
os.environ.setdefault("RLHF_LAB_CACHE", str(ROOT / ".cache" / "rlhf_lab"))
# Nothing in the tests may reach a model or dataset hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
