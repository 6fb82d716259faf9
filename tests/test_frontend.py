"""Tier 5: live widgets and live curves in a real front-end — JupyterLab in headless Chromium.

A notebook that uses the real ``rlhf_lab`` code runs in JupyterLab (from this environment, on
127.0.0.1, with a token, in a temporary root folder); Chromium (Debian's, driven by playwright)
runs it and then:

- moves the slider of a live ``widgets.scan(..., static=False)`` (a β scan of the exact optimum
  π*_β on the bandit) and checks that the figure under the slider changed (its title and its
  bars) and that the cell's output holds exactly one figure;
- watches a ``LiveCurves`` cell while it runs: it never shows more than one figure, the figure
  grows while the cell runs, and the cell ends with one figure holding every point.

It does so twice, with two kernels in the same JupyterLab 4: this environment's (ipywidgets 8,
plotly ≥ 6, IPython 9) and the Colab-like environment's (tests/colab_env.py: ipywidgets 7.7.1,
plotly 5.24.1, IPython 7.34, with this tree's rlhf_lab on its path).

Screenshots go to book/_build/screenshots/.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf_lab import book

SHOTS = book.BUILD / "screenshots"
pytestmark = [pytest.mark.frontend, pytest.mark.slow, pytest.mark.timeout(600)]

STEPS = 12
CELLS = [
    # 0: live (not static) figures, the renderer a front-end gets
    "import os, time\n"
    "os.environ.pop('RLHF_LAB_STATIC', None)\n"
    "import plotly.graph_objects as go\n"
    "from rlhf_lab import exact, get_scale, live, plots, widgets\n"
    "from rlhf_lab.worlds import bandit as bt\n"
    "plots.setup()\n"
    "world = bt.Bandit.from_scale(get_scale('ci'))",
    # 1: a live β scan
    "def optimum(beta):\n"
    "    p = exact.kl_regularized_optimum(world.logp_ref, world.rewards, beta).exp()\n"
    "    return [go.Bar(x=world.names, y=p.tolist(), name=f'beta={beta}')]\n"
    "\n"
    "slider = widgets.scan([0.1, 0.3, 1.0, 3.0], optimum, title=lambda b: f'optimum at beta = {b}',\n"
    "                      xaxis='arm', yaxis='probability', slider_label='beta', static=False)",
    # 2: live curves, fed step by step as a training loop feeds them
    "curves = live.LiveCurves(['reward/gold', 'kl/exact'], title='live curves', min_interval=0)\n"
    "with curves:\n"
    f"    for step in range({STEPS}):\n"
    "        curves(step, {'reward/gold': step / 10, 'kl/exact': step / 20}, None)\n"
    "        time.sleep(0.6)\n"
    "print('redraws', curves.redraws)",
    # 3: which stack this kernel has
    "import IPython, ipywidgets, plotly, plotly.io as pio\n"
    "print('versions', ipywidgets.__version__, plotly.__version__, IPython.__version__, pio.renderers.default)",
]
KERNELS = {"python3": None, "colab-pins": {"ipywidgets": "7.7.1", "plotly": "5.24.1", "IPython": "7.34.0"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make test installs it with apt-get)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    import nbformat

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import colab_env

    root = tmp_path_factory.mktemp("lab")
    spec = root / ".jupyter-data" / "kernels" / "colab-pins"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(colab_env.ensure()), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab pins", "language": "python",
        "env": {"PYTHONPATH": str(book.ROOT), "PYDEVD_DISABLE_FILE_VALIDATION": "1"}}))
    for kernel in KERNELS:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
        nbformat.write(nb, root / f"live_{kernel}.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "RLHF_LAB_STATIC"}
    env.update(OMP_NUM_THREADS="1", JUPYTER_CONFIG_DIR=str(root / ".jupyter-config"),
               JUPYTER_PATH=str(root / ".jupyter-data"),
               JUPYTERLAB_SETTINGS_DIR=str(root / ".lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / ".lab-workspaces"))
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True", "--JupyterNotebookApp.expose_app_in_browser=True",
           "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if server.poll() is not None:
                pytest.fail("JupyterLab exited:\n" + (root / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
    try:
        yield {"url": url, "token": token, "chromium": chromium, "root": root}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


_PLOTS = "n => document.querySelectorAll('.jp-Notebook .jp-Cell')[n].querySelectorAll('.jp-OutputArea .js-plotly-plot')"


def _figures(page, cell: int) -> list[dict]:
    """Every plotly figure in a cell's output: its title and its traces' points (from the DOM)."""
    return page.evaluate(f"""n => Array.from(({_PLOTS})(n)).map(d => ({{
        title: (d.querySelector('.gtitle') || {{}}).textContent || '',
        points: (d.data || []).map(t => (t.y || []).length),
        y: (d.data || []).map(t => Array.from(t.y || [])) }}))""", cell)


# (front-end, kernel): JupyterLab 4 with both kernels; Notebook 7 (same server) with this env's
UIS = {"lab": "lab/tree", "notebook7": "notebooks"}


@pytest.mark.parametrize("ui,kernel", [("lab", "python3"), ("lab", "colab-pins"), ("notebook7", "python3")])
def test_slider_redraws_one_figure_and_live_curves_grow_one_figure(lab, ui, kernel):
    if ui == "notebook7":
        pytest.importorskip("notebook", minversion="7")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    timings = {}
    outside = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=lab["chromium"], args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(lab["url"]) else None)
        start = time.monotonic()
        # a fresh workspace, so JupyterLab does not restore the notebook an earlier test opened
        reset = "reset&" if ui == "lab" else ""
        name = f"live_{kernel}.ipynb"
        page.goto(f"{lab['url']}/{UIS[ui]}/{name}?{reset}token={lab['token']}", wait_until="load", timeout=120_000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        # the notebook in front is ours and its kernel is connected (and is the one we asked for)
        page.wait_for_function("name => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                               " const k = w && w.context && w.context.path === name && w.sessionContext"
                               " && w.sessionContext.session && w.sessionContext.session.kernel;"
                               " return k && k.connectionStatus === 'connected' && k.status === 'idle'; }",
                               arg=name, timeout=180_000)
        timings["lab_open_s"] = round(time.monotonic() - start, 1)

        # run every cell; watch the live-curves cell while it runs
        start = time.monotonic()
        # (not awaited: the command's promise resolves only when every cell has run)
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        seen_counts, seen_points, samples = [], [], []
        while time.monotonic() - start < 300:
            figs = _figures(page, 2)
            seen_counts.append(len(figs))
            if figs:
                seen_points.append(figs[0]["points"])
            samples.append((round(time.monotonic() - start, 1), [f["points"] for f in figs]))
            done = page.evaluate("() => Array.from(document.querySelectorAll('.jp-Notebook .jp-InputPrompt'))"
                                 ".every(p => /\\[\\d+\\]/.test(p.textContent))")
            if done:
                break
            time.sleep(0.2)
        timings["run_all_s"] = round(time.monotonic() - start, 1)
        page.screenshot(path=str(SHOTS / f"frontend_ran_{ui}_{kernel}.png"), full_page=True)
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
        assert not any("Error" in e for e in errors), errors
        try:
            page.wait_for_function(f"() => ({_PLOTS})(1).length > 0 && ({_PLOTS})(2).length > 0",
                                   timeout=60_000)
        except Exception:
            page.screenshot(path=str(SHOTS / f"frontend_failure_{ui}_{kernel}.png"), full_page=True)
            texts = page.locator(".jp-OutputArea-output").all_inner_texts()
            pytest.fail(f"no figure after running the notebook; outputs: {texts}")

        # 1) the live scan: one figure under the slider; moving the slider redraws that figure
        scan = page.locator(".jp-Notebook .jp-Cell").nth(1)
        scan.scroll_into_view_if_needed()
        before = _figures(page, 1)
        page.screenshot(path=str(SHOTS / f"frontend_scan_before_{ui}_{kernel}.png"))
        handle = scan.locator(".widget-slider .noUi-handle, .widget-slider .ui-slider-handle").first
        slider_view = "rendered"
        if KERNELS[kernel] and handle.count() == 0:
            # JupyterLab 4's widget manager does not draw an ipywidgets 7 kernel's slider (Colab
            # has its own): record its error and move the slider from the kernel instead
            error = scan.locator(".jupyter-widgets-error-widget, .jupyter-widgets.widget-error").first
            error.click()
            slider_view = "error: " + " ".join(error.inner_text().split())[:300]
            page.evaluate("() => { window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                          ".requestExecute({code: 'slider.value = 0.3'}); }")
        else:
            # drag the handle from beta = 3.0 (right end) to the second of four stops, beta = 0.3
            track = scan.locator(".widget-slider .noUi-target, .widget-slider .ui-slider").first.bounding_box()
            grip = handle.bounding_box()
            page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
            page.mouse.down()
            page.mouse.move(track["x"] + track["width"] / 3, grip["y"] + grip["height"] / 2, steps=10)
            page.mouse.up()
        try:
            page.wait_for_function(f"t => ({_PLOTS})(1).length > 0 && "
                                   f"(({_PLOTS})(1)[0].querySelector('.gtitle') || {{}}).textContent !== t",
                                   arg=before[0]["title"], timeout=60_000)
        except Exception:
            page.screenshot(path=str(SHOTS / f"frontend_failure_{ui}_{kernel}.png"))
            model = page.evaluate("() => JSON.stringify(window.jupyterapp.shell.currentWidget.content.widgets[1]"
                                  ".outputArea.model.toJSON().map(o => [o.output_type, Object.keys(o.data || {}), "
                                  "((o.data || {})['application/vnd.plotly.v1+json'] || {layout: {title: {}}}).layout.title]))")
            pytest.fail(f"the figure under the slider did not change: model {model}, readout "
                        f"{scan.locator('.widget-readout').first.inner_text()!r}, figures {_figures(page, 1)}, "
                        f"outputs {scan.locator('.jp-OutputArea-output').all_inner_texts()}")
        time.sleep(1.0)  # a second, stacked figure would have arrived by now
        after = _figures(page, 1)
        readout = scan.locator(".widget-readout").first.inner_text() if slider_view == "rendered" else "0.3"
        page.screenshot(path=str(SHOTS / f"frontend_scan_after_{ui}_{kernel}.png"))

        # 2) live curves: one figure with every point
        cell = page.locator(".jp-Notebook .jp-Cell").nth(2)
        cell.scroll_into_view_if_needed()
        curves = _figures(page, 2)
        printed = cell.locator(".jp-OutputArea-output").all_inner_texts()
        versions = page.locator(".jp-Notebook .jp-Cell").nth(3).locator(".jp-OutputArea-output").all_inner_texts()
        page.screenshot(path=str(SHOTS / f"frontend_live_curves_{ui}_{kernel}.png"))
        browser.close()

    growth = sorted({sum(p) for p in seen_points})
    print(json.dumps({"ui": ui, "kernel": kernel, "versions": versions, "timings": timings, "scan_before": before, "scan_after": after, "readout": readout, "slider_view": slider_view,
                      "curves": curves, "max_figures_while_running": max(seen_counts or [0]),
                      "distinct_point_totals_seen_while_running": growth, "outside_requests": outside[:3]},
                     default=str))
    assert len(before) == 1 and before[0]["title"] == "optimum at beta = 3.0"
    assert len(after) == 1, f"{len(after)} figures under the slider after one move"
    assert after[0]["title"] == "optimum at beta = 0.3" and readout.strip() == "0.3"
    assert after[0]["y"] != before[0]["y"]
    assert max(seen_counts) <= 1, "live curves showed more than one figure while running"
    assert len(growth) >= 3, f"the figure did not grow while the cell ran: {growth}"
    assert len(curves) == 1 and curves[0]["points"] == [STEPS, STEPS]
    assert any(f"redraws {STEPS + 1}" in t for t in printed), printed
    (line,) = [t for t in versions if t.startswith("versions")]
    if KERNELS[kernel]:
        assert line.split()[1:4] == list(KERNELS[kernel].values()), line
    assert line.split()[4] == "plotly_mimetype+notebook_connected", line
