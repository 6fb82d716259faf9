"""notebooks/*.ipynb are generated from chapters/*.md; the Colab URLs come from one setting."""

import json
import re

from rlhf_lab import book


def test_notebooks_are_in_sync_with_chapters():
    problems = book.drift()
    assert problems == [], "run `make notebooks`:\n" + "\n".join(problems)


def test_notebooks_have_no_outputs_and_an_install_cell_first():
    for path in book.chapter_paths():
        nb = json.loads((book.NOTEBOOKS / f"{path.stem}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
        first = "".join(code[0]["source"])
        assert "google.colab" in first and "%pip install" in first, path.name


def test_colab_urls_follow_the_configured_repository(tmp_path, monkeypatch):
    config = tmp_path / "_config.yml"
    config.write_text(book.CONFIG.read_text().replace("https://github.com/rlhf-lab/rlhf-lab",
                                                     "https://github.com/a-school/rlhf-fork"))
    monkeypatch.setattr(book, "CONFIG", config)
    text = book.synced_source(book.chapter_paths()[-1])
    assert "github/a-school/rlhf-fork/blob/main/notebooks/" in text
    assert "rlhf_lab @ git+https://github.com/a-school/rlhf-fork" in text
    assert "rlhf-lab/rlhf-lab" not in text


def test_every_chapter_has_a_colab_badge():
    for path in book.chapter_paths():
        assert "colab.research.google.com/github/" in path.read_text(), path.name


# MyST that Colab would show raw: roles ({cite:p}`x`, {eq}`x`, {ref}`x`), directives (```{note},
# :::{note}), labelled equations ($$ (label)) and targets ((label)=).
_MYST = {
    "role": re.compile(r"\{[\w:-]+\}`"),
    "directive": re.compile(r"^\s*(`{3,}|:{3,})\s*\{[\w:-]+\}", re.M),
    "equation label": re.compile(r"\$\$[ \t]*\([\w:.-]+\)"),
    "target": re.compile(r"^\s*\([\w:.-]+\)=\s*$", re.M),
}


def test_notebooks_have_no_myst_left():
    leftovers = []
    for path in sorted(book.NOTEBOOKS.glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            text = "".join(cell["source"])
            leftovers += [f"{path.name}: {kind}: {m.group(0)!r}" for kind, rx in _MYST.items()
                          for m in rx.finditer(text)]
    assert leftovers == [], "\n".join(leftovers[:20])


def test_notebooks_cite_author_year_and_number_equations():
    nb = json.loads((book.NOTEBOOKS / "01_preferences.ipynb").read_text())
    markdown = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]
    text = "\n".join(markdown)
    assert "(Bradley and Terry, 1952)" in text  # {cite:p}
    # numbered through the book: chapter 01's first equations follow chapter 00's
    numbers = book.equation_numbers()
    first_01 = min(n for where, n in numbers.values() if where == "01")
    assert first_01 == 1 + sum(where == "00" for where, _ in numbers.values())
    assert f"\\tag{{{first_01}}}" in text and f"\\tag{{{first_01 + 1}}}" in text
    assert markdown[-1].startswith("## References") and "Bradley" in markdown[-1]
    nb = json.loads((book.NOTEBOOKS / "09_overoptimisation.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    # an equation of another chapter, by its book-wide number
    assert f"eq. ({numbers['eq-kl-objective'][1]}) of chapter 00" in text
    nb = json.loads((book.NOTEBOOKS / "00_tour.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "Christiano et al. (2017) and Ziegler et al. (2019)" in text  # {cite:t}


def test_directives_roles_and_targets_become_plain_markdown():
    bib = {"k": {"author": "Doe, Jane and Roe, Rick", "year": "2020", "title": "T"}}
    equations = {"eq-a": ("03", 2), "eq-b": ("01", 1)}
    text = "\n".join([
        "(sec-x)=", "## X", "", "See ({eq}`eq-a`) and {eq}`eq-b`, {cite:t}`k`, {cite:p}`k`,",
        "{ref}`the section <sec-x>`, {term}`KL` and {numref}`fig-1`.", "",
        "```{note}", "A note.", "```", "", ":::{admonition} Why", ":class: tip", "Because.", ":::", "",
        "$$", "x = 1", "$$ (eq-a)"])
    cited = []
    out = book.plain_markdown(text, "03", equations, bib, cited)
    assert "See (2) and eq. (1) of chapter 01, Doe and Roe (2020), (Doe and Roe, 2020)," in out
    assert "the section, KL and fig-1." in out
    assert "> **Note**\n>\n> A note." in out and "> **Why**\n>\n> Because." in out
    assert "x = 1\n\\tag{2}\n$$" in out and "(sec-x)=" not in out and cited == ["k"]
    assert "{doc}" not in book.plain_markdown("the {doc}`notation table <../book/glossary>`", "03", equations, bib, [])
    linked = book.plain_markdown("the {doc}`notation table <../book/glossary>`", "03", equations, bib, [],
                                 "https://github.com/o/r/blob/main")
    assert linked == "the [notation table](https://github.com/o/r/blob/main/book/glossary.md)"
