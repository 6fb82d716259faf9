"""Per-step training metrics under namespaced keys.

Every ``train(...)`` returns a ``History``. Keys follow one scheme across chapters —
``reward/gold``, ``reward/proxy``, ``kl/exact``, ``loss/policy``, ``stats/clipfrac``, ... — so a
plot written for one algorithm reads another's history. Keys contain "/", so pass them as a
dict: ``history.log(step, {"loss/policy": 0.3})``.

Introduced in chapter 02.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any


def _to_float(key: str, value: Any) -> float:
    if hasattr(value, "item"):  # a 0-d tensor or numpy scalar
        size = value.numel() if hasattr(value, "numel") else getattr(value, "size", 1)
        if size != 1:
            raise ValueError(f"metric {key!r} must be a scalar, got shape {tuple(value.shape)}")
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {key!r} must be a number, got {value!r}") from None


class History:
    """Metrics logged at integer steps; each key holds its own (step, value) series.

    Example:
        >>> h = History()
        >>> h.log(0, {"loss/policy": 1.0, "reward/gold": 0.1})
        >>> h.log(1, {"loss/policy": 0.5})
        >>> h["loss/policy"], h.steps("reward/gold")
        ([1.0, 0.5], [0])
    """

    def __init__(self) -> None:
        self._series: dict[str, tuple[list[int], list[float]]] = {}
        self._steps: list[int] = []  # every step logged, in the order first seen
        self._seen: set[int] = set()
        self._last: dict[str, float] = {}

    def log(self, step: int, metrics: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Record metrics at ``step``: a dict (keys with "/") and/or keyword arguments.

        Values may be Python numbers or scalar tensors. Logging a key twice at one step keeps
        the later value.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an integer ≥ 0, got {step!r}")
        items = {**(dict(metrics) if metrics is not None else {}), **kwargs}
        if not items:
            raise ValueError("log(step, ...) needs at least one metric")
        values = {str(k): _to_float(str(k), v) for k, v in items.items()}
        if step not in self._seen:
            self._seen.add(step)
            self._steps.append(step)
        for key, value in values.items():
            steps, vals = self._series.setdefault(key, ([], []))
            if steps and steps[-1] == step:
                vals[-1] = value
            else:
                steps.append(step)
                vals.append(value)
            self._last[key] = value

    def __getitem__(self, key: str) -> list[float]:
        """The values logged under ``key``, in logging order."""
        if key not in self._series:
            raise KeyError(f"no metric {key!r}; logged: {', '.join(self.keys()) or 'none'}")
        return list(self._series[key][1])

    def steps(self, key: str) -> list[int]:
        """The steps at which ``key`` was logged."""
        if key not in self._series:
            raise KeyError(f"no metric {key!r}; logged: {', '.join(self.keys()) or 'none'}")
        return list(self._series[key][0])

    def keys(self) -> list[str]:
        """Metric names, in the order first logged."""
        return list(self._series)

    def __contains__(self, key: object) -> bool:
        return key in self._series

    def __iter__(self) -> Iterator[str]:
        return iter(self._series)

    def __len__(self) -> int:
        """Number of distinct steps logged."""
        return len(self._steps)

    def last(self, key: str | None = None) -> Any:
        """The latest value of ``key``, or a dict of the latest value of every key."""
        if key is None:
            return dict(self._last)
        return self[key][-1]

    def to_frame(self):
        """A pandas DataFrame indexed by step, one column per key, NaN where a key wasn't logged."""
        import pandas as pd

        steps = sorted(self._steps)
        columns = {}
        for key, (key_steps, vals) in self._series.items():
            by_step = dict(zip(key_steps, vals))
            columns[key] = [by_step.get(s, math.nan) for s in steps]
        return pd.DataFrame(columns, index=pd.Index(steps, name="step"))

    def __repr__(self) -> str:
        return f"History({len(self)} steps, keys={self.keys()})"
