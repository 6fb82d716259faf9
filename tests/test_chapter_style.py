"""Reading comfort, checked on the chapter sources: every chapter opens the same way, links the
notation table, collapses its import cell on the site and keeps code cells within 88 columns
(the site's code blocks scroll sideways beyond that)."""

import re

import jupytext
import pytest

from rlhf_lab import book

CHAPTERS = book.chapter_paths()
WIDTH = 88


def _cells(path):
    return jupytext.read(path)["cells"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_opens_with_what_it_teaches_assumes_and_costs(path):
    opener = next((c["source"] for c in _cells(path)[:6]
                   if c["cell_type"] == "markdown" and "{admonition} In this chapter" in c["source"]), None)
    assert opener is not None, f"{path.name}: no ':::{{admonition}} In this chapter' among its first cells"
    for field in ("**You will learn:**", "**It assumes:**", "**Time to run:**", "**Symbols:**"):
        assert field in opener, f"{path.name}: the opener lacks {field}"
    # time at each scale, from the README's table of chapter times
    assert re.search(r"`ci` \d+ s", opener) and re.search(r"`cpu` \d+ s", opener) \
        and re.search(r"`gpu` \d+ s", opener), f"{path.name}: the opener gives no time at ci, cpu and gpu"
    assert "../book/glossary" in opener, f"{path.name}: the opener does not link the notation table"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_import_cell_is_collapsed_on_the_site(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    imports = next(c for c in code if "remove-cell" not in c["metadata"].get("tags", []))
    assert "import" in imports["source"], f"{path.name}: the first shown code cell is not the import cell"
    assert "hide-input" in imports["metadata"].get("tags", []), f"{path.name}: tag the import cell hide-input"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_code_cells_fit_in_88_columns(path):
    long = [f"{path.name}: {len(line)} columns: {line.strip()[:60]}…"
            for c in _cells(path) if c["cell_type"] == "code"
            for line in c["source"].splitlines() if len(line) > WIDTH]
    assert long == [], "\n".join(long)
