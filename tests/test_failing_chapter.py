"""A failing assert in a chapter must fail both `make test` (the chapter tier) and `make book`.

Shown on a throwaway copy of the repository whose only chapter ends in a false assert: the
same commands the Makefile runs must exit non-zero. (Jupyter Book 1 alone would exit 0.)
"""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlhf_lab import book

pytestmark = pytest.mark.slow

BAD_CHAPTER = textwrap.dedent('''\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
        format_version: 0.13
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    # 99 · A chapter whose claim is false

    ```{code-cell} ipython3
    measured = 1 + 1
    assert measured == 3, f"the chapter claims 3, measured {measured}"
    ```
    ''')


@pytest.fixture(scope="module")
def throwaway(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("throwaway")
    for name in ("rlhf_lab", "book", "tests"):
        shutil.copytree(book.ROOT / name, root / name, ignore=shutil.ignore_patterns("_build", "__pycache__"))
    shutil.copy(book.ROOT / "pyproject.toml", root)
    (root / "chapters").mkdir()
    (root / "chapters" / "99_false_claim.md").write_text(BAD_CHAPTER)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: chapters/99_false_claim\n")
    return root


def _run(args, cwd):
    # the throwaway's own rlhf_lab comes first on the path, so ROOT points at the copy
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(cwd), "RLHF_LAB_SCALE": "ci"})


def test_false_assert_fails_the_chapter_tier(throwaway):
    res = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_chapters.py"], throwaway)
    assert res.returncode != 0, res.stdout[-2000:]
    assert "the chapter claims 3, measured 2" in res.stdout + res.stderr


def test_false_assert_fails_the_book_build(throwaway):
    res = _run(["-m", "rlhf_lab.book", "build"], throwaway)
    assert res.returncode != 0, (res.stdout[-2000:], res.stderr[-2000:])
    assert "AssertionError" in res.stdout + res.stderr
    assert not (throwaway / "book" / "_build" / "html" / "chapters" / "99_false_claim.html").exists() or res.returncode
