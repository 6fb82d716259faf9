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


def pytest_collection_modifyitems(config, items):
    """Chapter executions first, the cpu ones first of all and the later (longer) chapters before
    the earlier ones, so the two xdist workers start the long runs early and finish together."""
    def key(item):
        callspec = getattr(item, "callspec", None)
        if item.get_closest_marker("chapter") is None or callspec is None or "scale" not in callspec.params:
            return (2, "")
        stem = callspec.params["path"].stem
        return (0 if callspec.params["scale"] == "cpu" else 1, "".join(chr(255 - ord(c)) for c in stem))

    items.sort(key=key)
