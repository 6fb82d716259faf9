"""LiveCurves: the figure grows with every update, redraws are throttled, static mode draws once."""

import pytest
import torch

from rlhf_lab import get_scale, live
from rlhf_lab.algos.grpo import GRPOConfig, train_grpo
from rlhf_lab.models import pretrain_reference
from rlhf_lab.worlds.arithmetic import ArithmeticWorld


class FakeHandle:
    """Stands in for IPython's DisplayHandle; records how many points each shown figure had."""

    shown: list = []

    def display(self, fig):
        FakeHandle.shown.append(("display", [len(t.x) for t in fig.data]))

    def update(self, fig):
        FakeHandle.shown.append(("update", [len(t.x) for t in fig.data]))


@pytest.fixture
def shown(monkeypatch):
    import IPython.display

    FakeHandle.shown = []
    monkeypatch.setattr(IPython.display, "DisplayHandle", FakeHandle)
    return FakeHandle.shown


def test_each_update_shows_more_points(shown):
    curves = live.LiveCurves(["reward/gold", "kl/exact"], title="t", yaxis="y", min_interval=0, static=False)
    with curves:
        for step in range(4):
            curves(step, {"reward/gold": 0.1 * step, "kl/exact": step, "other": 1.0}, None)
            assert [len(t.x) for t in curves.figure.data] == [step + 1, step + 1]
    assert [kind for kind, _ in shown] == ["display", "update", "update", "update", "update"]
    assert [n for _, n in shown] == [[1, 1], [2, 2], [3, 3], [4, 4], [4, 4]]
    assert list(curves.figure.data[0].y) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert [t.name for t in curves.figure.data] == ["gold", "exact"]


def test_redraws_are_throttled_but_no_point_is_lost(shown):
    curves = live.LiveCurves(["loss"], title="t", min_interval=3600, static=False)
    with curves:
        for step in range(50):
            curves(step, {"loss": 1.0 / (step + 1)}, None)
    assert [n for _, n in shown] == [[1], [50]]  # the first call, then the final one on exit
    assert curves.redraws == 2


def test_static_mode_displays_the_final_figure_once(shown, monkeypatch):
    monkeypatch.setenv("RLHF_LAB_STATIC", "1")
    curves = live.LiveCurves(["loss"], title="t", min_interval=0)
    with curves:
        for step in range(5):
            curves(step, {"loss": float(step)}, None)
        assert shown == []
    assert shown == [("display", [5])]


def test_bad_arguments():
    with pytest.raises(ValueError, match="keys"):
        live.LiveCurves("reward/gold", title="t")
    with pytest.raises(ValueError, match="min_interval"):
        live.LiveCurves(["a"], title="t", min_interval=-1)


def test_a_real_grpo_run_drives_the_curves(shown):
    world = ArithmeticWorld(max_operand=3)
    tiny = dict(n_layer=1, n_head=2, n_embd=32, pretrain_steps=150, pretrain_batch_size=64, corpus_size=2000)
    ref, _ = pretrain_reference(world, get_scale("ci").replace(**tiny), progress=False)
    curves = live.LiveCurves(["reward/gold", "reward/mean"], title="t", min_interval=0, static=False)
    with curves:
        history = train_grpo(ref, world, GRPOConfig(steps=4, prompts_per_step=4, group_size=4, eval_every=2,
                                                    progress=False), callback=curves)
    fig = curves.figure
    assert list(fig.data[0].x) == history.steps("reward/gold") == [0, 2, 4]
    assert list(fig.data[1].y) == pytest.approx(history["reward/mean"])
    counts = [sum(n) for _, n in shown]
    assert counts == sorted(counts) and counts[-1] == 3 + 4 and len(shown) == 4 + 3 + 1
    assert torch.is_tensor(next(history.policy.parameters()))
