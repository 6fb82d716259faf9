"""Tier 4: the site builds from executed chapters; offline, a browser sees every chapter's
rendered plotly figures and rendered math (plotly.js and MathJax are served with the site).

Run after the chapter tier (``make test`` does): the site is built from the notebooks that tier
executed. Run alone, it executes the chapters first.
"""

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from rlhf_lab import book

EXECUTED = book.BUILD / "executed" / "cpu"
SHOTS = book.BUILD / "screenshots"
pytestmark = pytest.mark.book


def _ensure_executed() -> None:
    """The chapters as executed at ``cpu`` (the default scale without CUDA, what ``make book``
    builds on such a machine); any chapter the chapter tier did not execute is executed here."""
    for path in book.chapter_paths():
        out = EXECUTED / f"{path.stem}.ipynb"
        if out.exists() and out.stat().st_mtime >= path.stat().st_mtime:
            continue
        import nbformat

        nb, _ = book.execute_chapter(path, env={"RLHF_LAB_SCALE": "cpu", "RLHF_LAB_STATIC": "1",
                                                "RLHF_LAB_EDITION": "student"})
        EXECUTED.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out)


@pytest.fixture(scope="module")
def site() -> Path:
    _ensure_executed()
    # the build step of `make book`, on the cpu notebooks (the student edition's)
    return book.build(executed=EXECUTED, edition="student")


def test_site_has_every_chapter(site):
    assert (site / "index.html").exists()
    for path in book.chapter_paths():
        page = site / "chapters" / f"{path.stem}.html"
        assert page.exists(), page
        text = page.read_text()
        assert "plotly-graph-div" in text or path.stem.startswith("00"), f"{page.name} has no plotly figure"
        assert "Open In Colab" in text or "colab-badge" in text, f"{page.name} has no Colab badge"


def _serve(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_site_serves_plotly_js_and_mathjax_once_per_page(site):
    import plotly

    static = site / "_static"
    assert (static / "plotly.min.js").read_bytes() == (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    assert (static / "mathjax" / "tex-mml-chtml.js").exists()
    assert (static / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2" / "MathJax_Main-Regular.woff").exists()
    for path in book.chapter_paths():
        text = (site / "chapters" / f"{path.stem}.html").read_text()
        assert text.count('src="../_static/plotly.min.js') == 1, path.name
        assert text.count("mathjax/tex-mml-chtml.js") == 1, path.name
        assert "cdn.plot.ly" not in text and "cdn.jsdelivr.net" not in text and "cdnjs" not in text, path.name


BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
def test_notebooks_number_equations_as_the_site_does(site):
    import re

    for path in book.chapter_paths():
        page = (site / "chapters" / f"{path.stem}.html").read_text()
        on_site = [int(n) for n in re.findall(r'class="eqno">\((\d+)\)', page)]
        nb = json.loads((book.NOTEBOOKS / f"{path.stem}.ipynb").read_text())
        text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        assert [int(n) for n in re.findall(r"\\tag\{(\d+)\}", text)] == on_site, path.name


# Text a reader would see if math were not typeset: TeX delimiters and commands.
RAW_TEX = r"""(text) => {
    const found = [];
    for (const pat of [/\\\(/, /\\\)/, /\\\[/, /\$\$/, /\$[^$\s][^$]*\$/, /\\(frac|beta|pi|log|sum|mathbb|text)\b/]) {
        const m = text.match(pat);
        if (m) found.push(text.slice(Math.max(0, m.index - 40), m.index + 40));
    }
    return found;
}"""
# The page's prose, without code, outputs and typeset math (where $ or \ may legitimately appear).
PROSE = """() => {
    const main = document.querySelector('main') || document.body;
    const copy = main.cloneNode(true);
    copy.querySelectorAll('pre, code, .cell_output, .output, script, style, mjx-container, mjx-assistive-mml, .MathJax')
        .forEach(e => e.remove());
    return copy.innerText;
}"""


@pytest.mark.browser
def test_browser_sees_rendered_figures_and_math_on_every_chapter(site):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make env installs it with apt-get)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    server = _serve(site)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    SHOTS.mkdir(parents=True, exist_ok=True)
    results, outside, failed = {}, [], []
    try:
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            # nothing is intercepted: every request the page makes must go to the site itself,
            # except the "Open in Colab" badge (a link to an online service; offline it shows
            # its alt text)
            local = (base, "data:", "blob:", BADGE)
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(local) else None)
            page.on("requestfailed", lambda r: failed.append(r.url) if not r.url.startswith(BADGE) else None)
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            for path in book.chapter_paths():
                page.goto(f"{base}chapters/{path.stem}.html", wait_until="load")
                page.wait_for_function("() => Array.from(document.querySelectorAll('.plotly-graph-div'))"
                                       ".every(d => d.querySelector('svg.main-svg'))", timeout=60_000)
                page.wait_for_function("() => !document.querySelector('.math') || "
                                       "document.querySelectorAll('mjx-container').length > 0", timeout=60_000)
                page.wait_for_timeout(500)  # MathJax typesets in passes; let it finish
                results[path.stem] = page.evaluate("""() => ({
                    divs: document.querySelectorAll('.plotly-graph-div').length,
                    rendered: Array.from(document.querySelectorAll('.plotly-graph-div'))
                        .filter(d => d.querySelector('svg.main-svg')).length,
                    sliders: document.querySelectorAll('.plotly-graph-div g.slider-container').length,
                    math: document.querySelectorAll('.math').length,
                    mjx: document.querySelectorAll('mjx-container').length,
                    mjx_errors: document.querySelectorAll('mjx-merror').length })""")
                results[path.stem]["raw_tex"] = page.evaluate(RAW_TEX, page.evaluate(PROSE))
                page.screenshot(path=str(SHOTS / f"{path.stem}.png"))
                if path.stem == "01_preferences":
                    page.locator("g.slider-container").first.scroll_into_view_if_needed()
                    page.screenshot(path=str(SHOTS / "01_preferences_slider.png"))
            browser.close()
    finally:
        server.shutdown()
    print(json.dumps({"pages": results, "outside_requests": outside[:10], "failed": failed[:10]}))
    assert outside == [], f"the site asked the internet for {outside[:5]}"
    assert failed == [], f"requests that failed: {failed[:5]}"
    for name, r in results.items():
        assert r["rendered"] == r["divs"], (name, r)
        assert r["divs"] >= 1 or name.startswith("00"), (name, r)
        assert r["math"] > 0 and r["mjx"] >= r["math"] and r["mjx_errors"] == 0, (name, r)
        assert r["raw_tex"] == [], (name, r["raw_tex"])
    assert results["01_preferences"]["divs"] >= 4 and results["01_preferences"]["sliders"] >= 1
