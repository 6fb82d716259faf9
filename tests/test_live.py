"""LiveCurves and live scans through IPython's real display machinery (no faked handle).

Each test runs under a real ``InteractiveShell`` and captures what IPython publishes to the
front-end: every display message with its display id and whether it is an update. ``frontend``
below applies those messages the way Jupyter front-ends do (a display appends an output; an
update replaces the outputs that carry its display id), so "one figure, updated in place" is
checked on the messages a browser would receive. The browser itself is tests/test_frontend.py.
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


def test_a_figure_handed_to_a_display_handle_stacks_new_figures(shell):
    """The bug this module avoids: a plotly Figure ignores the handle's display id."""
    fig = go.Figure(go.Scatter(x=[0], y=[0]))
    with capture_output() as cap:
        handle = DisplayHandle()
        handle.display(fig)
        handle.update(fig)
        handle.update(fig)
    assert len(frontend(cap.outputs)) == 3


def test_each_update_replaces_the_one_figure(shell):
    curves = live.LiveCurves(["reward/gold", "kl/exact"], title="t", yaxis="y", min_interval=0, static=False)
    with capture_output() as cap:
        with curves:
            for step in range(4):
                curves(step, {"reward/gold": 0.1 * step, "kl/exact": step, "other": 1.0}, None)
                shown = frontend(cap.outputs)
                assert len(shown) == 1 and points(shown[0]) == [step + 1, step + 1]
    figures = [out for out in cap.outputs if PLOTLY in out.data]
    assert [out.update for out in figures] == [False, True, True, True, True]
    assert len({out.transient["display_id"] for out in figures}) == 1
    (final,) = frontend(cap.outputs)
    assert final["data"][0]["y"] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert [t["name"] for t in final["data"]] == ["gold", "exact"]
    assert curves.redraws == 5


def test_redraws_are_throttled_but_no_point_is_lost(shell):
    curves = live.LiveCurves(["loss"], title="t", min_interval=3600, static=False)
    with capture_output() as cap:
        with curves:
            for step in range(50):
                curves(step, {"loss": 1.0 / (step + 1)}, None)
    figures = [out for out in cap.outputs if PLOTLY in out.data]
    assert [points(out.data[PLOTLY]) for out in figures] == [[1], [50]]  # first call, then exit
    assert curves.redraws == 2 and len(frontend(cap.outputs)) == 1


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
    with capture_output() as cap:
        with curves:
            history = train_grpo(ref, world, GRPOConfig(steps=4, prompts_per_step=4, group_size=4, eval_every=2,
                                                        progress=False), callback=curves)
    fig = curves.figure
    assert list(fig.data[0].x) == history.steps("reward/gold") == [0, 2, 4]
    assert list(fig.data[1].y) == pytest.approx(history["reward/mean"])
    counts = [sum(points(out.data[PLOTLY])) for out in cap.outputs if PLOTLY in out.data]
    assert counts == sorted(counts) and counts[-1] == 3 + 4 and len(counts) == 4 + 3 + 1
    (final,) = frontend(cap.outputs)
    assert points(final) == [3, 4]
    assert torch.is_tensor(next(history.policy.parameters()))
