"""Where a model or a dataset comes from — a local folder or file, or the Hugging Face hub —
decided at call time, so that offline the answer comes in a second, not after a minute of retries.

* ``looks_like_path(name)`` — a name that can only be a local path: one that does not exist is a
  typo to report (``FileNotFoundError``), not a name to send to the hub;
* ``offline_reason(variables)`` — why the hub cannot be used now: one of ``variables``
  (``HF_HUB_OFFLINE``, …) set in the environment at call time (the libraries read them once, at
  import), or the hub's host not reachable within ``PROBE_SECONDS``; None when it can be used.

``models.load_policy`` and ``data.load_preferences`` ask these before they touch the hub.
Introduced in chapter 00.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

TRUE = {"1", "true", "yes", "on"}
PROBE_SECONDS = 3.0  # how long to wait for the hub's host before calling it unreachable
DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".arrow", ".safetensors", ".bin", ".pt")


def looks_like_path(name: str | os.PathLike) -> bool:
    """True for a name that can only mean a local path: a ``PathLike``, or a string that starts with
    ``./``, ``../``, ``/`` or ``~``, holds a Windows separator, has more than one "/" (a hub name is
    ``org/name``) or ends in a data-file suffix."""
    if not isinstance(name, str):
        return isinstance(name, os.PathLike)
    return (name.startswith(("./", "../", "/", "~", ".\\", "..\\")) or "\\" in name or name.count("/") > 1
            or (os.sep != "/" and os.sep in name) or name.lower().endswith(DATA_SUFFIXES))


def offline_variable(variables: tuple[str, ...]) -> str | None:
    """The first of ``variables`` set to a true value ("1", "true", "yes", "on") now, or None."""
    return next((v for v in variables if os.environ.get(v, "").strip().lower() in TRUE), None)


def _reachable(host: str, port: int, seconds: float) -> str | None:
    """None when a TCP connection to host:port opens within ``seconds``, else why not. The name
    lookup runs in a daemon thread, since ``getaddrinfo`` has no timeout of its own."""
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=seconds).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"{type(err).__name__}: {err}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome[0] if outcome else f"no answer within {seconds:g} s"


def offline_reason(variables: tuple[str, ...] = ("HF_HUB_OFFLINE",)) -> str | None:
    """Why the Hugging Face hub cannot be used right now, or None when it can.

    Either a variable of ``variables`` is set (read now, not at import), or the hub's host
    (``HF_ENDPOINT``, default huggingface.co) does not accept a connection within
    ``PROBE_SECONDS``.
    """
    variable = offline_variable(variables)
    if variable is not None:
        return f"the hub is switched off ({variable}={os.environ[variable]})"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    problem = _reachable(host, port, PROBE_SECONDS)
    if problem is None:
        return None
    return (f"the hub ({host}:{port}) cannot be reached ({problem}) — you are probably offline; set "
            f"HF_HUB_OFFLINE=1 to skip this check")


def local_folder(name: str | os.PathLike) -> Path | None:
    """``name`` as an existing local folder (``~`` expanded), or None."""
    path = Path(name).expanduser()
    return path if path.is_dir() else None
