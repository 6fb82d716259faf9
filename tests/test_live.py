"""LiveCurves through IPython's and ipywidgets' real machinery (no faked display handle).

Each test runs under a real ``InteractiveShell`` and captures what IPython publishes to the
front-end, and records every state of the ``ipywidgets.Output`` that holds the live figure (the
state the front-end is sent). ``frontend`` applies display messages as Jupyter front-ends do (a
display appends an output; an update replaces the outputs with its display id). The browser
itself — where JupyterLab's plotly renderer turned out to ignore display-id updates of a drawn
figure — is tests/test_frontend.py.
"""

import plotly.graph_objects as go
import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from IPython.display import DisplayHandle
from IPython.utils.capture import capture_output

from rlhf_lab import get_scale, live, plots, widgets
from rlhf_lab.algos.grpo import GRPOConfig, train_grpo
from rlhf_lab.models import pretrain_reference
from rlhf_lab.worlds.arithmetic import ArithmeticWorld

PLOTLY = "application/vnd.plotly.v1+json"


@pytest.fixture
def shell(monkeypatch):
    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    plots.setup(plots.LIVE_RENDERER)
    return InteractiveShell.instance()


def frontend(outputs) -> list[dict]:
    """The cell's output area after the captured messages: display appends, update replaces."""
    area = []
    for out in outputs:
        display_id = (out.transient or {}).get("display_id")
        if out.update:
            for k, shown in enumerate(area):
                if display_id is not None and (shown.transient or {}).get("display_id") == display_id:
                    area[k] = out
        else:
            area.append(out)
    return [out.data[PLOTLY] for out in area if PLOTLY in out.data]


def points(figure_json: dict) -> list[int]:
    return [len(trace.get("x", [])) for trace in figure_json["data"]]


def record(output) -> list[list[dict]]:
    """Every state the Output widget's outputs take from now on: the figures it shows."""
    states = []
    output.observe(lambda change: states.append([o["data"][PLOTLY] for o in change["new"]]), names="outputs")
    return states


def widget_views(outputs) -> int:
    return sum("application/vnd.jupyter.widget-view+json" in out.data for out in outputs)


def test_a_figure_handed_to_a_display_handle_stacks_new_figures(shell):
    """The bug this module avoids: a plotly Figure ignores the handle's display id."""
    fig = go.Figure(go.Scatter(x=[0], y=[0]))
    with capture_output() as cap:
        handle = DisplayHandle()
        handle.display(fig)
        handle.update(fig)
        handle.update(fig)
    assert len(frontend(cap.outputs)) == 3


def test_each_update_redraws_the_one_figure(shell):
    curves = live.LiveCurves(["reward/gold", "kl/exact"], title="t", yaxis="y", min_interval=0, static=False)
    with capture_output() as cap:
        with curves:
            for step in range(4):
                curves(step, {"reward/gold": 0.1 * step, "kl/exact": step, "other": 1.0}, None)
                if step == 0:
                    states = record(curves.output)
                (shown,) = [o["data"][PLOTLY] for o in curves.output.outputs]
                assert points(shown) == [step + 1, step + 1]
    # the cell shows one widget (the Output) and no figure of its own; the Output showed one
    # figure at a time, each with more points
    assert widget_views(cap.outputs) == 1 and frontend(cap.outputs) == []
    assert [[points(f) for f in state] for state in states] == [[[2, 2]], [[3, 3]], [[4, 4]], [[4, 4]]]
    (final,) = [o["data"][PLOTLY] for o in curves.output.outputs]
    assert final["data"][0]["y"] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert [t["name"] for t in final["data"]] == ["gold", "exact"]
    assert curves.redraws == 5


def test_redraws_are_throttled_but_no_point_is_lost(shell):
    curves = live.LiveCurves(["loss"], title="t", min_interval=3600, static=False)
    with capture_output():
        with curves:
            for step in range(50):
                curves(step, {"loss": 1.0 / (step + 1)}, None)
                if step == 0:
                    states = record(curves.output)
    assert [[points(f) for f in state] for state in states] == [[[50]]]  # then only the final one
    assert curves.redraws == 2


def test_static_mode_displays_the_final_figure_once(shell, monkeypatch):
    monkeypatch.setenv(widgets.STATIC_ENV, "1")
    curves = live.LiveCurves(["loss"], title="t", min_interval=0)
    with capture_output() as cap:
        with curves:
            for step in range(5):
                curves(step, {"loss": float(step)}, None)
            assert cap.outputs == []
    assert [points(f) for f in frontend(cap.outputs)] == [[5]]


def test_outside_ipython_nothing_is_drawn(monkeypatch):
    monkeypatch.setattr(InteractiveShell, "initialized", classmethod(lambda cls: False))
    curves = live.LiveCurves(["loss"], title="t", min_interval=0, static=False)
    with curves:
        curves(0, {"loss": 1.0}, None)
    assert curves.redraws == 0 and len(curves.figure.data[0].x) == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="keys"):
        live.LiveCurves("reward/gold", title="t")
    with pytest.raises(ValueError, match="min_interval"):
        live.LiveCurves(["a"], title="t", min_interval=-1)


def test_a_real_grpo_run_drives_the_curves(shell):
    world = ArithmeticWorld(max_operand=3)
    tiny = dict(n_layer=1, n_head=2, n_embd=32, pretrain_steps=150, pretrain_batch_size=64, corpus_size=2000)
    ref, _ = pretrain_reference(world, get_scale("ci").replace(**tiny), progress=False)
    curves = live.LiveCurves(["reward/gold", "reward/mean"], title="t", min_interval=0, static=False)
    states = []
    with capture_output() as cap:
        with curves:
            history = train_grpo(ref, world, GRPOConfig(steps=4, prompts_per_step=4, group_size=4, eval_every=2,
                                                        progress=False),
                                 callback=lambda *a: (curves(*a), states.append(curves.output.outputs)))
    fig = curves.figure
    assert list(fig.data[0].x) == history.steps("reward/gold") == [0, 2, 4]
    assert list(fig.data[1].y) == pytest.approx(history["reward/mean"])
    assert all(len(state) == 1 for state in states)  # one figure at every moment
    counts = [sum(points(state[0]["data"][PLOTLY])) for state in states]
    assert counts == sorted(counts) and len(counts) == 4 + 3
    (final,) = [o["data"][PLOTLY] for o in curves.output.outputs]
    assert points(final) == [3, 4] and widget_views(cap.outputs) == 1
    assert torch.is_tensor(next(history.policy.parameters()))
