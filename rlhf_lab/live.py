"""Live training curves: a plotly figure that redraws in place while ``train(...)`` runs.

``LiveCurves`` is a callback. Every ``train(..., callback=live)`` calls it as
``live(step, metrics, history)`` after each log; it appends the new points of the keys it
follows and, at most every ``min_interval`` seconds, redraws the one figure in place: the figure
lives in an ``ipywidgets.Output`` whose outputs are replaced (``widgets.show_figure``; see
``rlhf_lab.widgets`` for why neither a display handle with the Figure nor a display-id update
does, and where this is tested). Used as a context manager, it
draws the final figure when training ends:

    with LiveCurves(["reward/gold", "reward/proxy"], title="...", yaxis="reward") as live:
        history = train_grpo(policy, world, config, callback=live)

When a chapter is executed for the book (``RLHF_LAB_STATIC=1``) nothing is drawn while training;
the finished figure is displayed once, on leaving the ``with`` block. Introduced in chapter 09.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from rlhf_lab import plots, widgets
from rlhf_lab.history import History
from rlhf_lab.validate import check_bool, check_float, check_texts


class LiveCurves:
    """One line per metric key against the training step, redrawn while training runs.

    Args:
        keys: the metric keys to follow, e.g. ``["reward/gold", "reward/proxy"]``.
        title: the figure's title (state the finding).
        xaxis: the x-axis label.
        yaxis: the y-axis label.
        names: legend names per key (default: the last part of the key, ``"gold"``); a name in
            ``plots.COLORS`` takes that colour.
        min_interval: at least this many seconds between two redraws (≥ 0); the data are
            recorded at every call regardless.
        static: draw only once, at the end (default: ``widgets.is_static()``).

    Attributes:
        redraws: how many times the displayed figure was replaced.
    """

    def __init__(
        self,
        keys: Sequence[str],
        *,
        title: str,
        xaxis: str = "step",
        yaxis: str = "value",
        names: Mapping[str, str] | None = None,
        min_interval: float = 0.5,
        static: bool | None = None,
    ) -> None:
        if isinstance(keys, str) or len(keys) == 0:
            raise ValueError(f"keys must be a non-empty list of metric keys; got {keys!r}")
        check_texts("keys", keys)
        check_float("min_interval (seconds)", min_interval, ge=0)
        check_bool("static", static, none=True)
        self.keys = list(keys)
        self.min_interval = min_interval
        self.static = widgets.is_static() if static is None else static
        names = {k: (names or {}).get(k, k.rsplit("/", 1)[-1]) for k in self.keys}
        self._points: dict[str, tuple[list[int], list[float]]] = {k: ([], []) for k in self.keys}
        self._figure = go.Figure([go.Scatter(x=[], y=[], name=names[k], mode="lines+markers",
                                            line=dict(color=plots.COLORS.get(names[k])))
                                 for k in self.keys])
        plots._layout(self._figure, title, xaxis, yaxis)
        self._output = None  # the ipywidgets.Output that shows the live figure
        self._last_draw = -float("inf")
        self.redraws = 0

    def __call__(self, step: int, metrics: Mapping[str, float], history: History | None = None) -> None:
        """Record the followed keys present in ``metrics`` at ``step``; redraw if it is time."""
        for key in self.keys:
            if key in metrics:
                xs, ys = self._points[key]
                xs.append(step)
                ys.append(float(metrics[key]))
        if not self.static and time.monotonic() - self._last_draw >= self.min_interval:
            self.draw()

    @property
    def output(self):
        """The ``ipywidgets.Output`` that shows the live figure (None until the first live draw)."""
        return self._output

    @property
    def figure(self) -> go.Figure:
        """The figure with every point recorded so far (the one the book shows)."""
        for trace, key in zip(self._figure.data, self.keys):
            trace.x, trace.y = list(self._points[key][0]), list(self._points[key][1])
        return self._figure

    def draw(self) -> None:
        """Show the current figure (first call) or redraw the one shown."""
        from IPython.core.interactiveshell import InteractiveShell
        from IPython.display import display

        if not InteractiveShell.initialized():
            return  # a plain Python process (a script): there is nothing to draw on
        if self.static:
            # the book: a plain output, no widget (there is no kernel behind the page)
            display(plots.mimebundle(self.figure), raw=True)
        else:
            if self._output is None:
                self._output = widgets.figure_output()
                display(self._output)
            widgets.show_figure(self._output, self.figure)
        self.redraws += 1
        self._last_draw = time.monotonic()

    def __enter__(self) -> "LiveCurves":
        return self

    def __exit__(self, *exc) -> None:
        # the last points may have arrived inside the throttle window: draw them once more
        self.draw()
