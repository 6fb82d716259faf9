import plotly.graph_objects as go
import pytest

from rlhf_lab import plots, widgets


def _traces(v):
    return [go.Scatter(x=[0, 1], y=[v, 2 * v], name=f"v={v}")]


def test_slider_figure_bakes_one_step_per_value():
    fixed = [go.Scatter(x=[0, 1], y=[0, 0], name="fixed")]
    fig = plots.slider_figure([1, 2, 3], _traces, title="t", xaxis="x", yaxis="y", slider_label="v",
                              fixed_traces=fixed)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["1", "2", "3"]
    assert len(fig.data) == 4
    # step k shows the fixed trace and exactly the k-th value's trace
    assert steps[0].args[0]["visible"] == [True, True, False, False]
    assert steps[2].args[0]["visible"] == [True, False, False, True]
    assert [t.visible for t in fig.data[1:]] == [False, False, True]  # the last value is active
    assert fig.layout.xaxis.title.text == "x" and fig.layout.title.text == "t"


def test_figures_require_labels():
    with pytest.raises(ValueError, match="title"):
        plots.lines([1], {"a": [1]}, title="", xaxis="x", yaxis="y")


def test_static_scan_displays_the_baked_figure(monkeypatch):
    monkeypatch.setenv(widgets.STATIC_ENV, "1")
    fig = widgets.scan([1, 2], _traces, title="t", xaxis="x", yaxis="y", slider_label="v")
    assert isinstance(fig, go.Figure) and len(fig.layout.sliders[0].steps) == 2


def test_live_scan_redraws_the_one_figure_under_the_slider(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from test_live import PLOTLY, frontend

    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    plots.setup(plots.LIVE_RENDERER)
    InteractiveShell.instance()
    calls = []

    def make_traces(v):
        calls.append(v)
        return _traces(v)

    with capture_output() as cap:
        slider = widgets.scan([1, 2, 3], make_traces, title=lambda v: f"value {v}", xaxis="x", yaxis="y",
                              slider_label="v")
        assert calls == [3]
        slider.value = 1
        assert calls == [3, 1]
        slider.value = 2
        assert calls == [3, 1, 2]
    # the cell shows the slider and the Output under it, and no figure of its own
    views = [out.data["application/vnd.jupyter.widget-view+json"]["model_id"] for out in cap.outputs
             if "application/vnd.jupyter.widget-view+json" in out.data]
    assert views == [slider.model_id, slider.output.model_id] and frontend(cap.outputs) == []
    (shown,) = [o["data"][PLOTLY] for o in slider.output.outputs]  # one figure, the last value's
    assert shown["layout"]["title"]["text"] == "value 2" and shown["data"][0]["y"] == [2, 4]


def test_setup_picks_the_renderer_for_where_it_runs(monkeypatch):
    import sys

    import plotly.io as pio

    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    plots.setup()
    assert pio.renderers.default == plots.LIVE_RENDERER == "plotly_mimetype+notebook_connected"
    monkeypatch.setenv(widgets.STATIC_ENV, "1")
    plots.setup()
    assert pio.renderers.default == plots.BOOK_RENDERER
    monkeypatch.setitem(sys.modules, "google.colab", object())
    plots.setup()
    assert pio.renderers.default == "colab"
    plots.setup("json")
    assert pio.renderers.default == "json"
    plots.setup(plots.LIVE_RENDERER)


def test_book_figures_load_neither_plotly_js_nor_mathjax():
    import plotly.io as pio

    pio.renderers.default = plots.BOOK_RENDERER
    try:
        html = plots.mimebundle(go.Figure(go.Scatter(x=[0], y=[1])))["text/html"]
    finally:
        plots.setup(plots.LIVE_RENDERER)
    assert "plotly-graph-div" in html and "Plotly.newPlot" in html
    assert "<script src" not in html and "mathjax" not in html.lower() and "cdn" not in html


def test_long_titles_wrap_at_spaces_and_keep_every_word():
    from rlhf_lab.plots import TITLE_LINE, lines, wrap_title
    title = "Full size, by sampling: GRPO raises pass@1 while the entropy falls and the KL grows"
    wrapped = wrap_title(title)
    assert all(len(line) <= TITLE_LINE for line in wrapped.split("<br>"))
    assert wrapped.replace("<br>", " ") == title and "<br>" in wrapped
    assert wrap_title("short title") == "short title"
    fig = lines([0, 1], {"a": [0, 1]}, title=title, xaxis="x", yaxis="y")
    assert fig.layout.title.text == wrapped and fig.layout.margin.t > 60


def test_scan_opens_at_the_given_value_static_and_live(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    monkeypatch.setenv(widgets.STATIC_ENV, "1")
    fig = widgets.scan([0.1, 0.2, 0.5], _traces, title=lambda v: f"ε = {v}", xaxis="x", yaxis="y",
                       slider_label="ε", value=0.2)
    assert fig.layout.sliders[0].active == 1 and fig.layout.title.text == "ε = 0.2"
    assert [bool(t.visible) for t in fig.data] == [False, True, False]
    monkeypatch.delenv(widgets.STATIC_ENV)
    InteractiveShell.instance()
    with capture_output():
        slider = widgets.scan([0.1, 0.2, 0.5], _traces, title="t", xaxis="x", yaxis="y", slider_label="ε",
                              value=0.2)
    assert slider.value == 0.2
    with pytest.raises(ValueError, match="value must be one of"):
        widgets.scan([0.1, 0.2], _traces, title="t", xaxis="x", yaxis="y", slider_label="ε", value=0.3)
