"""Tier 3: every chapter executes top to bottom at scale ci AND cpu, and in the instructor edition
at ci; a failing cell or assert fails.

``cpu`` is the default scale of every machine without CUDA, so it is what ``make book`` runs for a
student or an instructor; ``ci`` is the small preset. Each executed notebook is saved to
book/_build/executed/<scale>/ so that the book tier builds the site from the cpu notebooks — the
same build step as ``make book`` — instead of executing every chapter again. The wall time of
each chapter is written beside it (<chapter>.time.json) and printed with its budget (DESIGN.md);
timings on a shared machine are reported, not asserted. ``RLHF_LAB_CHAPTER_SCALES`` (default
"cpu ci ci-instructor") chooses the runs: a scale, with ``-instructor`` for the instructor edition
(rlhf_lab.editions: solutions filled in, every check and answer must pass); the seed is
``RLHF_LAB_SEED`` (default 0). The student runs check that every coding problem's check fails
without raising (its stub is not implemented) and every practice answer is "not answered yet";
the instructor runs, that every one of them passed.
"""

import json
import os

import nbformat
import pytest

from rlhf_lab import book, editions
from rlhf_lab.exercises import instructor

EXECUTED = book.BUILD / "executed"
BUDGET_S = {"ci": 60, "cpu": 150}
CHAPTERS = book.chapter_paths()
# cpu first: the long runs start first, so the two workers finish together
SCALES = os.environ.get("RLHF_LAB_CHAPTER_SCALES", "cpu ci ci-instructor").split()


def _run(name: str) -> tuple[str, str]:
    """The scale and the edition of a run: "ci" is ("ci", "student"), "ci-instructor" is
    ("ci", "instructor")."""
    scale, _, edition = name.partition("-")
    return scale, edition or "student"


def test_the_toc_lists_chapters():
    assert CHAPTERS, "no chapters/ entries in _toc.yml"
    assert all(p.exists() for p in CHAPTERS), [p.name for p in CHAPTERS if not p.exists()]
    runs = [_run(s) for s in SCALES]
    assert all(sc in {"ci", "cpu", "gpu"} and ed in editions.EDITIONS for sc, ed in runs), SCALES


@pytest.mark.chapter
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_executes(path, scale):
    name, (scale, edition) = scale, _run(scale)
    # a hard timeout only guards against a hung kernel; the budget is reported, not asserted here
    nb, seconds = book.execute_chapter(path, timeout=900, env={
        "RLHF_LAB_SCALE": scale, "RLHF_LAB_STATIC": "1", editions.VARIABLE: edition})
    out = EXECUTED / editions.run_name(scale, edition)
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out / f"{path.stem}.ipynb")
    (out / f"{path.stem}.time.json").write_text(json.dumps({
        "chapter": path.stem, "scale": scale, "edition": edition,
        "seed": int(os.environ.get("RLHF_LAB_SEED") or 0),
        "seconds": round(seconds, 1), "budget_s": BUDGET_S.get(scale)}))
    print(f"{path.stem}: {seconds:.1f} s at {name} (budget {BUDGET_S.get(scale)} s)")
    n_asserts = sum(c.source.count("assert ") for c in nb.cells if c.cell_type == "code")
    assert n_asserts > 0, f"{path.name} asserts nothing: which of its claims does executing it check?"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    # what every check and practice answer showed: the stubs fail without raising and nothing is
    # answered in the student edition; in the instructor edition every one passed
    shown = instructor.outcomes(nb)
    expected = {"student": {"pending"}, "instructor": {"passed"}}[edition]
    assert all(outcome in expected for _, outcome in shown), [s for s in shown if s[1] not in expected]
    if edition == "student":  # untouched stubs and unanswered questions: neutral, not red
        assert all(outcome == "pending" for _, outcome in shown), shown


@pytest.mark.chapter
def test_live_scan_widget_state_is_saved():
    """Executed live (not for the static site), a scan's slider is a real widget whose state is
    stored in the notebook, as Jupyter Book and JupyterLab need to show it without a kernel."""
    path = next(p for p in CHAPTERS if p.stem == "01_preferences")
    nb, _ = book.execute_chapter(path, timeout=600, env={"RLHF_LAB_SCALE": "ci", "RLHF_LAB_STATIC": "0"})
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    sliders = [s for s in state.values() if s["model_name"] == "SelectionSliderModel"]
    assert sliders and sliders[0]["state"]["description"] == "comparisons n"
    views = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views, "the slider's view was not saved in the outputs"
