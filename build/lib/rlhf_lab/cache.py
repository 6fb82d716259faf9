"""On-disk cache for pretrained base models and long sweeps.

Everything lives under ``cache_dir()`` (the ``RLHF_LAB_CACHE`` environment variable, default
``~/.cache/rlhf_lab``), one directory per entry, named by a hash of what produced it.

An entry is written atomically: into a temporary directory beside the target, which is then
renamed onto it with ``os.replace``. The last file written is ``MANIFEST.json``, the sha256 of
every other file; an entry without a manifest, or whose files no longer match it (a run killed
half-way, a disk that filled up, a file edited by hand), is invalid, and ``build_or_load``
rebuilds it with a warning instead of loading garbage. Parallel builders of one entry (chapters
executed in parallel by the test suite) take a file lock, so the second one waits and loads.

Introduced in chapter 00.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:  # POSIX only; elsewhere parallel builders each build and the first rename wins
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

ENV_VAR = "RLHF_LAB_CACHE"
MANIFEST = "MANIFEST.json"


class CacheWarning(UserWarning):
    """A cache entry was partial or corrupted and is being rebuilt."""


def cache_dir() -> Path:
    """The cache root: ``$RLHF_LAB_CACHE`` or ``~/.cache/rlhf_lab`` (created if missing)."""
    root = Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "rlhf_lab").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def config_key(config: dict[str, Any], length: int = 16) -> str:
    """A short stable hash of a JSON-serialisable config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(root: Path) -> None:
    """Record the sha256 of every file under ``root``; written last, it marks the entry complete."""
    root = Path(root)
    manifest = {name: _sha256(root / name) for name in _files(root)}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def check_entry(path: str | Path) -> str | None:
    """Why the entry at ``path`` is unusable, or None when it is complete and intact."""
    path = Path(path)
    if not path.is_dir():
        return "missing"
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return "partial (no manifest: the run that wrote it did not finish)"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "corrupted (unreadable manifest)"
    for name, digest in manifest.items():
        file = path / name
        if not file.is_file():
            return f"partial ({name} is missing)"
        if _sha256(file) != digest:
            return f"corrupted ({name} does not match its checksum)"
    return None


def is_valid(path: str | Path) -> bool:
    """True when ``path`` is a complete cache entry whose files match their manifest."""
    return check_entry(path) is None


@contextlib.contextmanager
def _lock(target: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    with open(target.with_name(target.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    """Delete ``path`` by first renaming it aside, so no reader ever sees it half-deleted."""
    if not path.exists():
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.replace(path, trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Write a directory atomically: yield a temporary directory, then rename it onto ``target``.

    The manifest is written after the body of the ``with`` finishes; if the body raises, the
    temporary directory is deleted and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a cache entry is readable like any other directory
    try:
        yield tmp
        write_manifest(tmp)
        _remove(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_or_load(
    target: str | Path,
    build: Callable[[Path], None],
    load: Callable[[Path], Any],
    what: str = "cache entry",
) -> Any:
    """Load the entry at ``target``, building it first with ``build(tmp_dir)`` when needed.

    A partial or corrupted entry is rebuilt, with a ``CacheWarning`` that says why.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target):
        problem = check_entry(target)
        if problem is not None:
            if problem != "missing":
                warnings.warn(f"{what} at {target} is {problem}; rebuilding it", CacheWarning, stacklevel=2)
            with atomic_dir(target) as tmp:
                build(tmp)
    return load(target)


def _sweep_dir(name: str, config: dict[str, Any]) -> Path:
    if not name or any(c in name for c in "/\\"):
        raise ValueError(f"name must be a non-empty string without path separators, got {name!r}")
    return cache_dir() / "sweeps" / f"{name}-{config_key(config)}"


def cached_json(name: str, config: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """``compute()`` once per (name, config); its JSON-serialisable result is cached on disk."""

    def build(tmp: Path) -> None:
        (tmp / "result.json").write_text(json.dumps(compute()))
        (tmp / "config.json").write_text(json.dumps(config, sort_keys=True, default=str))

    return build_or_load(_sweep_dir(name, config), build, lambda p: json.loads((p / "result.json").read_text()), name)


def cached_torch(name: str, config: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """Like ``cached_json`` for results holding tensors (saved with ``torch.save``)."""
    import torch

    def build(tmp: Path) -> None:
        torch.save(compute(), tmp / "result.pt")
        (tmp / "config.json").write_text(json.dumps(config, sort_keys=True, default=str))

    def load(path: Path) -> Any:
        return torch.load(path / "result.pt", weights_only=False)

    return build_or_load(_sweep_dir(name, config), build, load, name)
