"""Build tooling for the book and the Colab notebooks (``python -m rlhf_lab.book``).

    python -m rlhf_lab.book build       # execute every chapter (2 at a time), build book/_build/html
    RLHF_LAB_EDITION=instructor python -m rlhf_lab.book build   # … book/_build/instructor/html
    python -m rlhf_lab.book notebooks   # sync Colab URLs from book/_config.yml, regenerate notebooks/
    python -m rlhf_lab.book check       # fail if notebooks/ or the Colab URLs drifted

Chapters are MyST Markdown notebooks in ``chapters/`` — the source of truth. ``notebooks/*.ipynb``
are generated from them without outputs, for Colab. The repository the Colab badge and the
install cell point to is ``repository.url`` in ``book/_config.yml``: one setting for a fork.
The conversion of a chapter's MyST to the notebooks' plain Markdown is in ``myst.py``; running a
chapter in a kernel, in the student or the instructor edition (``editions.py``), in
``execution.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlhf_lab import editions
from rlhf_lab.execution import execute_chapter
from rlhf_lab.myst import BIB, bibliography, number_equations, plain_markdown, references  # noqa: F401  (re-exported)

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "book" / "_config.yml"
TOC = ROOT / "_toc.yml"
CHAPTERS = ROOT / "chapters"
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "book" / "_build"

_BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]+?/notebooks/(?P<name>[\w.-]+\.ipynb)")
_INSTALL = re.compile(r"rlhf_lab @ git\+https://github\.com/[\w.-]+/[\w.-]+")


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def repository() -> tuple[str, str]:
    """(owner/name, branch) of the course repository, from book/_config.yml."""
    repo = _yaml(CONFIG)["repository"]
    url = repo["url"].rstrip("/")
    m = re.match(r"https://github\.com/([\w.-]+/[\w.-]+)$", url)
    if not m:
        raise ValueError(f"repository.url in {CONFIG} must look like https://github.com/OWNER/NAME, got {url!r}")
    return m.group(1), repo.get("branch", "main")


def chapter_paths() -> list[Path]:
    """The chapters in table-of-contents order."""
    toc = _yaml(TOC)
    entries = toc.get("chapters", []) + [c for part in toc.get("parts", []) for c in part.get("chapters", [])]
    files = [c["file"] for c in entries]
    return [ROOT / f"{f}.md" for f in files if f.startswith("chapters/")]


def synced_source(path: Path) -> str:
    """The chapter's text with its Colab badge and install cell pointing at the configured repo."""
    slug, branch = repository()
    text = path.read_text()
    text = _BADGE.sub(lambda m: f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{m.group('name')}", text)
    return _INSTALL.sub(f"rlhf_lab @ git+https://github.com/{slug}", text)


def equation_numbers() -> dict[str, tuple[str, int]]:
    """Every chapter's labelled equations: label -> ("NN", n), as :func:`~rlhf_lab.myst.number_equations`."""
    return number_equations(chapter_paths())


def notebook_json(path: Path) -> str:
    """The Colab notebook generated from a chapter: same cells, no outputs, plain Markdown."""
    import jupytext
    import nbformat

    nb = jupytext.reads(synced_source(path), fmt="md:myst")
    equations, bib, cited = equation_numbers(), bibliography(), []
    slug, branch = repository()
    files = f"https://github.com/{slug}/blob/{branch}"  # where a notebook's links to the book's pages go
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = plain_markdown(cell.source, path.stem.split("_")[0], equations, bib, cited, files)
    if cited:
        nb.cells.append(nbformat.v4.new_markdown_cell(references(cited, bib)))
    for k, cell in enumerate(nb.cells):
        cell["id"] = f"{path.stem.split('_')[0]}-cell-{k:03d}"  # stable ids: regenerating gives the same file
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return jupytext.writes(nb, fmt="ipynb")


def sync_notebooks() -> list[Path]:
    """Rewrite the chapters' Colab URLs from the config and regenerate notebooks/. Returns written files."""
    NOTEBOOKS.mkdir(exist_ok=True)
    written = []
    for path in chapter_paths():
        synced = synced_source(path)
        if synced != path.read_text():
            path.write_text(synced)
            written.append(path)
        out = NOTEBOOKS / f"{path.stem}.ipynb"
        text = notebook_json(path)
        if not out.exists() or out.read_text() != text:
            out.write_text(text)
            written.append(out)
    return written


def drift() -> list[str]:
    """Problems that `make notebooks` would fix: stale notebooks, URLs not matching the config."""
    problems = []
    for path in chapter_paths():
        if synced_source(path) != path.read_text():
            problems.append(f"{path.relative_to(ROOT)}: Colab URLs differ from repository.url in book/_config.yml")
        out = NOTEBOOKS / f"{path.stem}.ipynb"
        if not out.exists():
            problems.append(f"{out.relative_to(ROOT)}: missing")
        elif out.read_text() != notebook_json(path):
            problems.append(f"{out.relative_to(ROOT)}: differs from {path.relative_to(ROOT)}")
    expected = {f"{p.stem}.ipynb" for p in chapter_paths()}
    problems += [f"notebooks/{p.name}: no chapter of that name" for p in NOTEBOOKS.glob("*.ipynb") if p.name not in expected]
    return problems


def _execute_one(path: Path, scale: str, threads: int, out: Path, edition: str) -> tuple[str, float]:
    """Worker of :func:`execute_chapters`: execute one chapter, write it to ``out``."""
    import nbformat

    env = {"RLHF_LAB_SCALE": scale, "RLHF_LAB_STATIC": "1", "OMP_NUM_THREADS": str(threads),
           editions.VARIABLE: edition}
    nb, seconds = execute_chapter(path, env=env, timeout=1800)
    nbformat.write(nb, out / f"{path.stem}.ipynb")
    return path.stem, seconds


def execute_chapters(scale: str, out: Path, jobs: int = 2, edition: str | None = None) -> dict[str, float]:
    """Execute every chapter at ``scale`` in ``edition`` (default: ``RLHF_LAB_EDITION``, else
    student), ``jobs`` at a time, each in its own kernel with ``cpu_count // jobs`` torch threads
    (two chapters on two cores: one thread each, since torch's default of one thread per core
    makes them fight). Writes ``out/<chapter>.ipynb`` and returns the wall time of each chapter.
    The first failing chapter raises ``nbclient.exceptions.CellExecutionError`` naming the cell
    (after the others finish)."""
    import concurrent.futures

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    edition = editions.edition(edition)
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    times, failures = {}, []
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        futures = {pool.submit(_execute_one, p, scale, threads, out, edition): p for p in chapter_paths()}
        for future in concurrent.futures.as_completed(futures):
            try:
                name, seconds = future.result()
            except Exception as exc:
                failures.append((futures[future], exc))
                print(f"{futures[future].stem}: FAILED at scale {scale} ({edition})", flush=True)
                continue
            times[name] = seconds
            print(f"{name}: {seconds:.1f} s at scale {scale} ({edition})", flush=True)
    if failures:
        raise failures[0][1]
    return times


def _jupyter_book(source: Path, config: Path, toc: Path, output: Path, env: dict) -> None:
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(source), "--config", str(config),
           "--toc", str(toc), "--path-output", str(output), "--builder", "html"]
    subprocess.run(cmd, check=True, env={**os.environ, **env}, cwd=source)


def build(*, executed: Path | None = None, output: Path = BUILD.parent, jobs: int = 2,
          edition: str | None = None) -> Path:
    """Build the site of ``edition`` (default: ``RLHF_LAB_EDITION``, else student) into
    ``output/_build/html`` — the instructor edition into ``output/_build/instructor/html`` — and
    return that folder.

    Without ``executed``, every chapter is first executed at the default scale (``RLHF_LAB_SCALE``,
    else ``gpu`` with CUDA and ``cpu`` without), ``jobs`` at a time, into
    ``book/_build/executed/<scale>/`` (``<scale>-instructor/``); a failing cell fails the build.
    The site is then built from the executed notebooks — the same step the test suite's book tier
    runs on the notebooks its chapter tier executed at ``cpu``, so ``make test`` checks what
    ``make book`` does.
    """
    env, edition = {"RLHF_LAB_STATIC": "1"}, editions.edition(edition)
    if executed is None:
        from rlhf_lab.scale import get_scale

        scale = get_scale().name
        executed = output / "_build" / "executed" / editions.run_name(scale, edition)
        start = time.perf_counter()
        execute_chapters(scale, executed, jobs=jobs, edition=edition)
        print(f"executed {len(chapter_paths())} chapters at scale {scale} ({edition} edition) in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="rlhf_lab_book_") as tmp:
        src = Path(tmp)
        shutil.copytree(ROOT / "book", src / "book", ignore=shutil.ignore_patterns("_build"))
        shutil.copy(TOC, src / "_toc.yml")
        (src / "chapters").mkdir()
        for path in chapter_paths():
            nb = executed / f"{path.stem}.ipynb"
            if not nb.exists():
                raise FileNotFoundError(f"no executed notebook for {path.name} in {executed}")
            shutil.copy(nb, src / "chapters" / nb.name)
        config = _yaml(CONFIG)
        config["execute"]["execute_notebooks"] = "off"
        if edition == "instructor":
            config["title"] = f"{config['title']} · instructor edition"
        (src / "book" / "_config.yml").write_text(json.dumps(config))  # JSON is valid YAML
        _jupyter_book(src, src / "book" / "_config.yml", src / "_toc.yml", src, env)
        html = editions.site_folder(output / "_build", edition)
        if html.exists():
            shutil.rmtree(html)
        shutil.copytree(src / "_build" / "html", html)
        return html


# ---- the site's static assets: plotly.js and MathJax served with it, loaded once per page -----

STATIC = ROOT / "book" / "_static"  # MathJax, vendored (book/_static/mathjax/README.md)
PLOTLY_JS = "plotly.min.js"


def plotly_js() -> Path:
    """plotly.js as the installed plotly package ships it (the version its figures were made for)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / PLOTLY_JS


def setup(app) -> dict:
    """Sphinx extension (``extra_extensions`` in book/_config.yml): the site works offline.

    Figures made with ``plots.BOOK_RENDERER`` load neither plotly.js nor MathJax; this serves
    plotly.js from ``_static/`` and loads it once in every page's <head> (before the figures'
    inline scripts), and adds book/_static (MathJax, which ``mathjax_path`` points to) to the
    site's static files.
    """

    def add_static(app, config) -> None:
        folder = Path(app.doctreedir).parent / "rlhf_lab_static"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(plotly_js(), folder / PLOTLY_JS)
        config.html_static_path = [*config.html_static_path, str(folder), str(STATIC)]

    app.connect("config-inited", add_static)
    app.add_js_file(PLOTLY_JS)  # no defer: the figures' inline scripts call Plotly right away
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_lab.book", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "notebooks", "check"])
    parser.add_argument("--jobs", type=int, default=2, help="chapters executed at once by build (>= 1)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.command == "build":
        html = build(jobs=args.jobs)
        print(f"built {html / 'index.html'}")
    elif args.command == "notebooks":
        for p in sync_notebooks():
            print(f"wrote {p.relative_to(ROOT)}")
    else:
        problems = drift()
        for p in problems:
            print(p)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
