"""Tier 4: the site builds from executed chapters, and a browser sees rendered plotly figures.

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

        nb, _ = book.execute_chapter(path, env={"RLHF_LAB_SCALE": "cpu", "RLHF_LAB_STATIC": "1"})
        EXECUTED.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out)


@pytest.fixture(scope="module")
def site() -> Path:
    _ensure_executed()
    return book.build(executed=EXECUTED)  # the build step of `make book`, on the cpu notebooks


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


@pytest.mark.browser
def test_browser_sees_rendered_plotly_figures(site):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make env installs it with apt-get)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    server = _serve(site)
    url = f"http://127.0.0.1:{server.server_address[1]}/chapters/01_preferences.html"
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            # The machine is offline: the page's CDN copy of plotly.js is served from the local
            # plotly package (the same file); any other outside request is refused.
            def route(r):
                if r.request.url.startswith("https://cdn.plot.ly/"):
                    r.fulfill(path=str(plotly_js), content_type="application/javascript")
                elif r.request.url.startswith(f"http://127.0.0.1:{server.server_address[1]}/"):
                    r.continue_()
                else:
                    r.abort()

            page.route("**/*", route)
            page.goto(url, wait_until="load")
            page.wait_for_selector(".plotly-graph-div svg.main-svg", timeout=30_000)
            n_divs = page.locator(".plotly-graph-div").count()
            n_rendered = page.evaluate(
                "Array.from(document.querySelectorAll('.plotly-graph-div')).filter(d => d.querySelector('svg.main-svg')).length")
            n_sliders = page.locator(".plotly-graph-div g.slider-container").count()
            page.locator("g.slider-container").first.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / "01_preferences_slider.png"))
            page.screenshot(path=str(SHOTS / "01_preferences.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
    print(json.dumps({"plot_divs": n_divs, "rendered": n_rendered, "sliders": n_sliders}))
    assert n_divs >= 4 and n_rendered == n_divs, (n_divs, n_rendered)
    assert n_sliders >= 1, "the static scan (a plotly slider figure) is missing"
