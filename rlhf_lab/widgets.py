"""Scans with two faces: live (an ipywidgets slider that recomputes) and static (a baked figure).

In a kernel with a front-end a scan is live: moving the slider calls the chapter's function
again and redraws the one figure under the slider. The figure lives in an ``ipywidgets.Output``
whose outputs are replaced by the figure's raw mimebundle (``show_figure``); a browser test
(tests/test_frontend.py) checks it in JupyterLab 4 and Notebook 7, with ipywidgets 8 + plotly 7
and with Colab's ipywidgets 7.7.1 + plotly 5.24.1 (VS Code and Colab's own front-end are not
driven by a test). Two simpler ways do not work: displaying the Figure through a display handle (a plotly Figure displays itself and
drops the display id, so every move adds a figure), and updating a display id with the bundle
(JupyterLab's plotly renderer ignores updates of a figure it has drawn). FigureWidget needs
anywidget and fails in Colab.

When a chapter is executed to build the book (``RLHF_LAB_STATIC=1``, set by
``python -m rlhf_lab.book``) there is no kernel behind the page, so the scan shows one plotly
figure with a baked slider instead, every value precomputed. Introduced in chapter 01.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import plotly.graph_objects as go

from rlhf_lab import plots
from rlhf_lab.validate import check_bool, check_callable

STATIC_ENV = "RLHF_LAB_STATIC"


def is_static() -> bool:
    """True while executing for the static site (no kernel will be behind the page)."""
    return os.environ.get(STATIC_ENV, "").strip().lower() in {"1", "true", "yes"}


def figure_output():
    """An empty ``ipywidgets.Output`` to draw figures into with ``show_figure``."""
    import ipywidgets as widgets

    return widgets.Output(layout=widgets.Layout(width="100%"))


def show_figure(output, fig: go.Figure) -> None:
    """Make ``output`` (an ``ipywidgets.Output``) show ``fig`` and nothing else.

    The Output's outputs are replaced, so the front-end draws the new figure with a fresh
    renderer in the same place; this works from a widget callback, a training loop or another
    thread alike, because it sets the widget's state instead of capturing display messages.
    """
    output.outputs = ({"output_type": "display_data", "data": plots.mimebundle(fig), "metadata": {}},)


def live_scan(
    values: Sequence,
    make_figure: Callable[[object], go.Figure],
    *,
    description: str,
    value=None,
):
    """A slider over ``values``; each move redraws ``make_figure(value)`` in place under it.

    Returns the ipywidgets slider; ``slider.output`` is the ``ipywidgets.Output`` that shows the
    figure (displayed right under the slider).
    """
    import ipywidgets as widgets
    from IPython.display import display

    if len(values) == 0:
        raise ValueError("values must contain at least one value to scan")
    check_callable("make_figure", make_figure, "a function value -> plotly Figure")
    if value is not None and value not in values:
        raise ValueError(f"value must be one of values {list(values)}; got {value!r}")
    options = [(str(v), v) for v in values]
    start = values[-1] if value is None else value
    slider = widgets.SelectionSlider(options=options, value=start, description=description,
                                     continuous_update=False, style={"description_width": "initial"},
                                     layout=widgets.Layout(width="60%"))
    output = figure_output()
    show_figure(output, make_figure(start))

    def redraw(change) -> None:
        show_figure(output, make_figure(change["new"]))

    slider.observe(redraw, names="value")
    slider.output = output  # so a test (or a curious student) can reach the figure
    display(slider, output)
    return slider


def scan(
    values: Sequence,
    make_traces: Callable[[object], list],
    *,
    title: Callable[[object], str] | str,
    xaxis: str,
    yaxis: str,
    slider_label: str,
    fixed_traces: Sequence = (),
    yrange: Sequence[float] | None = None,
    static: bool | None = None,
    value=None,
):
    """Show a scan: live in a kernel with a front-end, baked when building the book.

    ``make_traces(v)`` returns the traces for one value; ``title`` may depend on it. The slider
    opens at ``value`` (default the last of ``values``). Displays itself; returns the slider
    widget (live) or the figure (static) for tests to inspect — assign it
    (``eps_scan = widgets.scan(...)``), or a notebook shows a cell's last value a second time.
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) == 0:
        raise ValueError(f"values must be a non-empty list of values to scan; got {values!r}")
    check_callable("make_traces", make_traces, "a function value -> list of traces")
    check_bool("static", static, none=True)
    if value is not None and value not in values:
        raise ValueError(f"value must be one of values {list(values)}; got {value!r}")
    start = values[-1] if value is None else value
    static = is_static() if static is None else static
    if static:
        from IPython.display import display

        fig = plots.slider_figure(values, make_traces, title=title if isinstance(title, str) else title(start),
                                  xaxis=xaxis, yaxis=yaxis, slider_label=slider_label,
                                  active=list(values).index(start),
                                  fixed_traces=fixed_traces, yrange=yrange)
        display(fig)
        return fig

    def make_figure(v) -> go.Figure:
        fig = go.Figure([*fixed_traces, *make_traces(v)])
        plots._layout(fig, title if isinstance(title, str) else title(v), xaxis, yaxis)
        if yrange is not None:
            fig.update_yaxes(range=list(yrange))
        return fig

    return live_scan(values, make_figure, description=slider_label, value=start)
