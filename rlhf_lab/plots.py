"""Plotly figures for the chapters: consistent colours, labelled axes, titles that state findings.

Presentation only: every function takes numbers computed elsewhere and returns a
``plotly.graph_objects.Figure``. Introduced in chapter 00.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

import plotly.graph_objects as go
import plotly.io as pio

from rlhf_lab.validate import check_bool, check_callable, check_instance, check_int

# One colour per method, the same in every chapter.
COLORS = {
    "reference": "#7f7f7f",
    "optimum": "#000000",
    "true": "#000000",
    "fitted": "#1f77b4",
    "reinforce": "#1f77b4",
    "a2c": "#17becf",
    "ppo": "#d62728",
    "best_of_n": "#9467bd",
    "dpo": "#2ca02c",
    "simpo": "#bcbd22",
    "grpo": "#ff7f0e",
    "gold": "#2ca02c",
    "proxy": "#d62728",
}

# Where a figure is shown decides how it must be rendered (``setup`` picks one):
# - in JupyterLab 4, Notebook 7 and VS Code the plotly mimetype draws the figure; the HTML part
#   (plotly.js from its CDN) is the fallback for any other front-end;
# - Colab has no plotly mimetype renderer and needs its own full-page HTML;
# - the built book (``RLHF_LAB_STATIC=1``) shows the HTML part, and serves plotly.js and MathJax
#   itself, once per page (see ``rlhf_lab.book``): the figures load neither.
LIVE_RENDERER = "plotly_mimetype+notebook_connected"
COLAB_RENDERER = "colab"
BOOK_RENDERER = "plotly_mimetype+rlhf_lab_book"
RENDERER = LIVE_RENDERER  # the front-end default, kept for callers of the old name


class _BookRenderer(pio.base_renderers.HtmlRenderer):
    """Figure HTML that expects ``window.Plotly`` on the page and loads no MathJax: the book
    loads plotly.js and MathJax once per page, from its own _static folder (works offline)."""

    def __init__(self) -> None:
        super().__init__()  # (plotly 5 has no include_plotlyjs argument; to_mimebundle sets it)

    def activate(self) -> None:
        pass  # nothing to load: the page has plotly.js already

    def to_mimebundle(self, fig_dict: dict) -> dict:
        html = pio.to_html(fig_dict, config=self.config, include_plotlyjs=False,
                           include_mathjax=False, full_html=False, default_width="100%",
                           default_height=525, validate=False)
        return {"text/html": html}


pio.renderers["rlhf_lab_book"] = _BookRenderer()


def in_colab() -> bool:
    """True inside Google Colab (its runtime imports ``google.colab`` before any cell runs)."""
    return "google.colab" in sys.modules


def default_renderer() -> str:
    """The renderer that works where this kernel runs: Colab, the book build, or a front-end."""
    if in_colab():
        return COLAB_RENDERER
    if os.environ.get("RLHF_LAB_STATIC", "").strip().lower() in {"1", "true", "yes"}:
        return BOOK_RENDERER
    return LIVE_RENDERER


def setup(renderer: str | None = None) -> None:
    """Make figures visible in JupyterLab, Colab and the built book (call once per chapter).

    ``renderer`` overrides the choice of ``default_renderer()``.
    """
    pio.renderers.default = renderer or default_renderer()
    pio.templates.default = "plotly_white"


def mimebundle(fig: go.Figure) -> dict:
    """The raw mimebundle the current renderer makes for ``fig``, as ``fig.show()`` would display it.

    Live figures are drawn with this bundle (``widgets.show_figure``), never with the Figure
    object: a Figure displays itself through its own ``_ipython_display_``, which ignores display
    ids and cannot be put into a widget's state.
    """
    bundle = pio.renderers._build_mime_bundle(fig.to_dict(), renderers_string=None)
    return bundle or {"text/plain": repr(fig.layout.title.text or "plotly figure")}


TITLE_LINE = 62  # characters per title line: a book page shows a figure about 620 px wide


def wrap_title(title: str, width: int = TITLE_LINE) -> str:
    """Break a long title into lines of at most ``width`` characters (plotly's ``<br>``), at
    spaces, so that it is not cut off in a narrow figure; existing ``<br>`` are kept."""
    lines = []
    for part in title.split("<br>"):
        line = ""
        for word in part.split(" "):
            if line and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return "<br>".join(lines)


def _check_series(name: str, series: object, n: int) -> None:
    """A mapping from a legend name to ``n`` numbers (as many as there are x values)."""
    check_instance(name, series, dict, "a dict {legend name: values}")
    wrong = {k: len(v) for k, v in series.items() if not hasattr(v, "__len__") or len(v) != n}
    if wrong:
        raise ValueError(f"{name} must hold {n} values per entry, one per x; got lengths {wrong}")


def _layout(fig: go.Figure, title: str, xaxis: str, yaxis: str, height: int = 420) -> go.Figure:
    for name, text in (("title", title), ("xaxis", xaxis), ("yaxis", yaxis)):
        check_instance(name, text, str, "a non-empty string")
    if not title or not xaxis or not yaxis:
        raise ValueError("every figure needs a title, an x-axis label and a y-axis label")
    title = wrap_title(title)
    top = 60 + 22 * title.count("<br>")  # room for every title line
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis, height=height + top - 60,
                      margin=dict(l=60, r=20, t=top, b=60), legend=dict(orientation="h", y=-0.2))
    return fig


def lines(
    x: Sequence[float],
    ys: dict[str, Sequence[float]],
    *,
    title: str,
    xaxis: str,
    yaxis: str,
    log_x: bool = False,
    log_y: bool = False,
    colors: dict[str, str] | None = None,
    mode: str = "lines+markers",
) -> go.Figure:
    """One line per entry of ``ys`` against a shared ``x``."""
    _check_series("ys", ys, len(x))
    check_bool("log_x", log_x)
    check_bool("log_y", log_y)
    colors = {**COLORS, **(colors or {})}
    fig = go.Figure()
    for name, y in ys.items():
        fig.add_trace(go.Scatter(x=list(x), y=list(y), name=name, mode=mode,
                                 line=dict(color=colors.get(name))))
    _layout(fig, title, xaxis, yaxis)
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def bars(
    categories: Sequence[str],
    values: dict[str, Sequence[float]],
    *,
    title: str,
    xaxis: str,
    yaxis: str,
    colors: dict[str, str] | None = None,
) -> go.Figure:
    """Grouped bars: one group per category, one bar per entry of ``values``."""
    _check_series("values", values, len(categories))
    colors = {**COLORS, **(colors or {})}
    fig = go.Figure([go.Bar(x=list(categories), y=list(v), name=name, marker_color=colors.get(name))
                     for name, v in values.items()])
    fig.update_layout(barmode="group")
    return _layout(fig, title, xaxis, yaxis)


def heatmap(
    matrix, labels: Sequence[str], *, title: str, xaxis: str, yaxis: str, colorbar: str, fmt: str = ".2f"
) -> go.Figure:
    """A square matrix with its values written in the cells (rows = y, columns = x)."""
    z = [[float(v) for v in row] for row in matrix]
    if any(len(row) != len(labels) for row in z) or len(z) != len(labels):
        raise ValueError(f"matrix must be square, one row and one column per label ({len(labels)}); "
                         f"got {len(z)} rows of {[len(row) for row in z][:3]}")
    fig = go.Figure(go.Heatmap(z=z, x=list(labels), y=list(labels), colorscale="RdBu", zmid=0.5,
                               text=[[format(v, fmt) for v in row] for row in z], texttemplate="%{text}",
                               colorbar=dict(title=colorbar)))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, xaxis, yaxis, height=460)


def slider_figure(
    values: Sequence,
    make_traces: Callable[[object], list[go.BaseTraceType]],
    *,
    title: str,
    xaxis: str,
    yaxis: str,
    slider_label: str,
    active: int | None = None,
    fixed_traces: Sequence[go.BaseTraceType] = (),
    yrange: Sequence[float] | None = None,
) -> go.Figure:
    """The static face of a scan: one set of traces per value, a baked plotly slider between them.

    Works without a kernel (in the built book), because every value's traces are in the figure
    and the slider only toggles their visibility. ``fixed_traces`` stay visible throughout.
    """
    if len(values) == 0:
        raise ValueError("values must contain at least one value to scan")
    check_callable("make_traces", make_traces, "a function value -> list of traces")
    check_int("active", active, ge=0, le=len(values) - 1, none=True)
    fig = go.Figure()
    for tr in fixed_traces:
        fig.add_trace(tr)
    n_fixed = len(fixed_traces)
    groups = []
    for v in values:
        traces = make_traces(v)
        start = len(fig.data)
        for tr in traces:
            fig.add_trace(tr)
        groups.append(range(start, len(fig.data)))
    active = len(values) - 1 if active is None else active
    steps = []
    for k, (v, idx) in enumerate(zip(values, groups)):
        visible = [True] * n_fixed + [False] * (len(fig.data) - n_fixed)
        for t in idx:
            visible[t] = True
        steps.append(dict(method="update", label=str(v), args=[{"visible": visible}]))
        if k == active:
            for t in range(n_fixed, len(fig.data)):
                fig.data[t].visible = t in idx
    fig.update_layout(sliders=[dict(active=active, currentvalue=dict(prefix=f"{slider_label} = "),
                                    pad=dict(t=50), steps=steps)])
    _layout(fig, title, xaxis, yaxis, height=520)
    # the slider sits under the plot, so the legend goes above it
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
                      margin=dict(t=90))
    if yrange is not None:
        fig.update_yaxes(range=list(yrange))
    return fig
