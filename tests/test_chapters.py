"""Tier 3: every chapter executes top to bottom at scale ci; a failing cell or assert fails.

Each executed notebook is saved to book/_build/executed/ so the book tier can build the site
from these outputs instead of executing every chapter a second time. The wall time of each
chapter is written beside it (timings.json) and printed; the budget is in DESIGN.md.
"""

import json
import os

import nbformat
import pytest

from rlhf_lab import book

EXECUTED = book.BUILD / "executed"
BUDGET_S = {"ci": 90, "cpu": 300}
CHAPTERS = book.chapter_paths()


def test_the_toc_lists_chapters():
    assert CHAPTERS, "no chapters/ entries in _toc.yml"
    assert all(p.exists() for p in CHAPTERS), [p.name for p in CHAPTERS if not p.exists()]


@pytest.mark.chapter
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_executes(path):
    scale = os.environ.get("RLHF_LAB_SCALE", "ci")
    # a hard timeout only guards against a hung kernel; the budget is reported, not asserted here
    nb, seconds = book.execute_chapter(path, timeout=600, env={"RLHF_LAB_SCALE": scale, "RLHF_LAB_STATIC": "1"})
    EXECUTED.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, EXECUTED / f"{path.stem}.ipynb")
    timings = EXECUTED / f"{path.stem}.time.json"
    timings.write_text(json.dumps({"chapter": path.stem, "scale": scale, "seconds": round(seconds, 1),
                                   "budget_s": BUDGET_S.get(scale)}))
    print(f"{path.stem}: {seconds:.1f} s at scale {scale} (budget {BUDGET_S.get(scale)} s)")
    n_asserts = sum(c.source.count("assert ") for c in nb.cells if c.cell_type == "code")
    assert n_asserts > 0, f"{path.name} asserts nothing: which of its claims does executing it check?"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


@pytest.mark.chapter
def test_live_scan_widget_state_is_saved():
    """Executed live (not for the static site), a scan's slider is a real widget whose state is
    stored in the notebook, as Jupyter Book and JupyterLab need to show it without a kernel."""
    path = next(p for p in CHAPTERS if p.stem == "01_preferences")
    nb, _ = book.execute_chapter(path, timeout=600, env={"RLHF_LAB_SCALE": os.environ.get("RLHF_LAB_SCALE", "ci"),
                                                        "RLHF_LAB_STATIC": "0"})
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    sliders = [s for s in state.values() if s["model_name"] == "SelectionSliderModel"]
    assert sliders and sliders[0]["state"]["description"] == "comparisons n"
    views = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views, "the slider's view was not saved in the outputs"
