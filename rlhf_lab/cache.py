"""On-disk cache for pretrained base models and long sweeps.

Everything lives under ``cache_dir()`` (the ``RLHF_LAB_CACHE`` environment variable, default
``~/.cache/rlhf_lab``), one directory per entry, named by a hash of what produced it.

An entry is written atomically: into a temporary directory beside the target, which is then
renamed onto it with ``os.replace``. The last file written is ``MANIFEST.json``, the sha256 of
every other file; an entry without a manifest, or whose files no longer match it (a run killed
half-way, a disk that filled up, a file edited by hand), is invalid, and ``build_or_load``
rebuilds it with a warning instead of loading garbage. Parallel builders of one entry (chapters
executed in parallel by the test suite) take a file lock, so the second one waits and loads.

A complete entry is read without taking the lock, so a read-only or shared cache serves it;
files are written readable by everyone (0644, folders 0755), so a cache can be shared. When the
cache must be written and cannot be, the error says to set ``RLHF_LAB_CACHE`` to a writable
folder. Temporary folders that a killed run left behind are removed by the next build of their
entry (under its lock, once they are ``ORPHAN_AGE_S`` old). Introduced in chapter 00.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
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
ORPHAN_AGE_S = 600  # a temporary folder this old, met under its entry's lock, is a killed run's
FILE_MODE, DIR_MODE = 0o644, 0o755  # readable by everyone: a cache can be shared


class CacheWarning(UserWarning):
    """A cache entry was partial or corrupted and is being rebuilt, or the cache is not where asked."""


@contextlib.contextmanager
def _writable(folder: Path) -> Iterator[None]:
    """Turn a refused write under ``folder`` into an error that says what to do."""
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise PermissionError(err.errno, f"the cache folder {folder} is not writable ({err.strerror}); "
                                         f"set {ENV_VAR} to a writable folder") from err


def cache_dir() -> Path:
    """The cache root: ``$RLHF_LAB_CACHE`` or ``~/.cache/rlhf_lab`` (created if missing).

    Without a usable home folder (no ``HOME``, or one that cannot be written, as ``/nonexistent``
    in containers) the cache goes to the temporary folder, with a ``CacheWarning``.

    Raises:
        NotADirectoryError: ``RLHF_LAB_CACHE`` names a file.
        PermissionError: the folder ``RLHF_LAB_CACHE`` names cannot be created.
    """
    raw = os.environ.get(ENV_VAR)
    if raw:
        root = Path(raw).expanduser()
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(f"{ENV_VAR}={raw!r} is a file, not a folder; set {ENV_VAR} to a folder")
        with _writable(root):
            root.mkdir(parents=True, exist_ok=True)
        return root
    try:
        root = Path.home() / ".cache" / "rlhf_lab"
        root.mkdir(parents=True, exist_ok=True)
        return root
    except (RuntimeError, KeyError, OSError) as err:  # no HOME, or HOME=/nonexistent
        user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
        root = Path(tempfile.gettempdir()) / f"rlhf_lab-cache-{user}"
        warnings.warn(f"no usable home folder for the cache ({err}); using {root} — set {ENV_VAR} to a folder "
                      "to keep the cache", CacheWarning, stacklevel=2)
        root.mkdir(parents=True, exist_ok=True)
        if hasattr(os, "getuid") and root.stat().st_uid != os.getuid():  # a shared /tmp: not someone else's
            raise PermissionError(f"{root} belongs to another user; set {ENV_VAR} to a folder of your own")
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
    except PermissionError as err:
        return f"unreadable ({err.strerror})"
    if not isinstance(manifest, dict) or not manifest or not all(
            isinstance(k, str) and isinstance(v, str) and not Path(k).is_absolute() and ".." not in Path(k).parts
            for k, v in manifest.items()):
        return "corrupted (the manifest is not a table of the entry's files and their sha256)"
    for name, digest in manifest.items():
        file = path / name
        if not file.is_file():
            return f"partial ({name} is missing)"
        try:
            if _sha256(file) != digest:
                return f"corrupted ({name} does not match its checksum)"
        except PermissionError as err:
            return f"unreadable ({name}: {err.strerror})"
    return None


def is_valid(path: str | Path) -> bool:
    """True when ``path`` is a complete cache entry whose files match their manifest."""
    return check_entry(path) is None


@contextlib.contextmanager
def _lock(target: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    lock = target.with_name(target.name + ".lock")
    try:
        handle = open(lock, "a")
    except OSError:
        if not lock.exists():  # it cannot be created: the cache is read-only
            with _writable(target.parent):
                raise
        handle = open(lock)  # someone else's lock file in a shared cache: flock needs no write access
    with handle:
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
    with _writable(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        write_manifest(tmp)
        # mkdtemp makes the folder private, and some writers (safetensors) their files: an entry is
        # readable by everyone, like any other file
        for path in [tmp, *tmp.rglob("*")]:
            if not path.is_symlink():
                path.chmod(DIR_MODE if path.is_dir() else FILE_MODE)
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
    if check_entry(target) is None:  # complete: read it as it is, no lock (a read-only cache serves it)
        return load(target)
    with _writable(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target):
        problem = check_entry(target)
        if problem is not None:
            _remove_orphans(target)
            if problem != "missing":
                warnings.warn(f"{what} at {target} is {problem}; rebuilding it", CacheWarning, stacklevel=2)
            with atomic_dir(target) as tmp:
                build(tmp)
    return load(target)


def _remove_orphans(target: Path, max_age: float = ORPHAN_AGE_S) -> None:
    """Delete the temporary folders of ``target`` (``.name.tmp-*``, ``.name.old-*``) that a killed run
    left, once they are ``max_age`` seconds old. Called under the entry's lock, so no writer of
    this entry is at work; the age spares a writer that does not take the lock (``atomic_dir``)."""
    now = time.time()
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for path in target.parent.glob(pattern):
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(path.lstat().st_mode) and now - path.lstat().st_mtime > max_age:
                    shutil.rmtree(path, ignore_errors=True)


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
