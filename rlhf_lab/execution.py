"""Run a chapter top to bottom in a fresh kernel, in the student or the instructor edition.

The book build (:mod:`rlhf_lab.book`), the chapter tier of the tests and
``benchmarks/run_chapters.py`` all execute chapters through :func:`execute_chapter`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rlhf_lab import editions


def chapter_notebook(path: Path, edition: str | None = None):
    """The chapter at ``path`` as a notebook (nbformat) in ``edition`` (default: the one
    ``RLHF_LAB_EDITION`` names): the MyST source as is, or its instructor version
    (:func:`rlhf_lab.exercises.instructor.instructor_notebook`)."""
    import jupytext

    nb = jupytext.read(path, fmt="md:myst")
    if editions.edition(edition) == "instructor":
        from rlhf_lab.exercises.instructor import instructor_notebook

        nb = instructor_notebook(nb)
    return nb


def execute_chapter(path: Path, *, timeout: int = 600, env: dict | None = None):
    """Run a chapter top to bottom in a fresh kernel, as the book build does.

    ``env`` is set for the run (and for the kernel), so ``RLHF_LAB_EDITION`` there or in the
    environment chooses the edition; in the instructor edition a check that fails raises in
    its cell. Returns (executed notebook, seconds). A failing cell or assert raises
    ``nbclient.exceptions.CellExecutionError`` naming the cell; the notebook as executed up to
    that cell is its ``notebook`` attribute.
    """
    import nbclient

    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    try:
        nb = chapter_notebook(path)
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                         resources={"metadata": {"path": str(path.parent)}},
                                         store_widget_state=True)
        start = time.perf_counter()
        try:
            client.execute()
        except Exception as exc:
            exc.notebook = nb
            raise
        return nb, time.perf_counter() - start
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
