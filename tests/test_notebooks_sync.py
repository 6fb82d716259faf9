"""notebooks/*.ipynb are generated from chapters/*.md; the Colab URLs come from one setting."""

import json

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
