"""Colab: installing rlhf_lab changes none of Colab's packages, and notebooks/ run there, live.

The environment is tests/colab_env.py's: Colab's versions of every package rlhf_lab shares with
it (ipywidgets 7.7.1, plotly 5.24.1, IPython 7.34.0, transformers 5.15.0, ...), built once and
cached under .cache/colab-env/.

1. ``pip install --dry-run --report`` of this package into it would install rlhf_lab and
   nothing else (no upgrade, no downgrade, no new package).
2. Three notebooks from notebooks/ run in it the way Colab runs them: ``google.colab`` is
   imported before any cell (a stub: Colab's runtime does this), so the first cell's
   ``%pip install`` runs (pointed at a wheel of this tree instead of GitHub) and
   ``plots.setup()`` picks the "colab" renderer; widgets are live (``RLHF_LAB_STATIC=0``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import colab_env  # noqa: E402

from rlhf_lab import book  # noqa: E402

pytestmark = [pytest.mark.colab, pytest.mark.slow, pytest.mark.timeout(1200)]
PIP = ["-m", "pip", "--disable-pip-version-check"]
NOTEBOOKS = ["01_preferences", "07_dpo", "08_grpo"]
COLAB_VERSIONS = {"ipywidgets": "7.7.1", "plotly": "5.24.1", "ipython": "7.34.0", "traitlets": "5.7.1",
                  "transformers": "5.15.0", "tokenizers": "0.22.2", "numpy": "2.1.3", "pandas": "2.2.3"}


@pytest.fixture(scope="session")
def colab_python() -> Path:
    return colab_env.ensure()


def test_environment_has_colabs_versions(colab_python):
    have = colab_env.installed(colab_python)
    assert {k: have.get(k) for k in COLAB_VERSIONS} == COLAB_VERSIONS


def test_installing_rlhf_lab_changes_nothing_else(colab_python, tmp_path):
    report = tmp_path / "report.json"
    subprocess.run([str(colab_python), *PIP, "install", "--quiet", "--dry-run", "--report", str(report),
                    str(book.ROOT)], check=True)
    install = [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.loads(report.read_text())["install"]]
    print(json.dumps({"would_install": install}))
    assert [name for name, _ in install] == ["rlhf_lab"], install


@pytest.fixture(scope="session")
def colab_kernel(colab_python, tmp_path_factory) -> dict:
    """rlhf_lab installed into the environment from a wheel of this tree (as Colab would from
    GitHub), a ``google.colab`` stub imported at start-up, and a kernel spec for both."""
    work = tmp_path_factory.mktemp("colab")
    subprocess.run([str(colab_python), *PIP, "wheel", "--quiet", "--no-deps", "-w", str(work / "dist"),
                    str(book.ROOT)], check=True)
    (wheel,) = (work / "dist").glob("rlhf_lab-*.whl")
    before = colab_env.installed(colab_python)
    subprocess.run([str(colab_python), *PIP, "install", "--quiet", "--force-reinstall", "--no-deps", str(wheel)],
                   check=True)
    after = colab_env.installed(colab_python)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= {"rlhf-lab"}, changed
    stub = work / "stub"
    (stub / "google" / "colab").mkdir(parents=True)  # google/ stays a namespace package
    (stub / "google" / "colab" / "__init__.py").write_text('"""Stands in for Colab\'s runtime module."""\n')
    (stub / "sitecustomize.py").write_text("import google.colab  # Colab imports it before any cell runs\n")
    spec = work / "jupyter" / "kernels" / "colab-like"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(colab_python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab-like", "language": "python",
        "env": {"PYTHONPATH": str(stub), "RLHF_LAB_STATIC": "0", "OMP_NUM_THREADS": "1",
                "RLHF_LAB_SCALE": os.environ.get("RLHF_LAB_SCALE", "ci"), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PYDEVD_DISABLE_FILE_VALIDATION": "1"}}))
    return {"wheel": wheel, "jupyter_path": str(work / "jupyter")}


def _widget_outputs(nb) -> list[list[dict]]:
    """The outputs of every ipywidgets.Output in the notebook's saved widget state."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return [s["state"].get("outputs", []) for s in state.values() if s["model_name"] == "OutputModel"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_live_in_the_colab_environment(name, colab_kernel, monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("JUPYTER_PATH", colab_kernel["jupyter_path"])
    nb = nbformat.read(book.NOTEBOOKS / f"{name}.ipynb", as_version=4)
    install = nb.cells[next(k for k, c in enumerate(nb.cells) if c.cell_type == "code")]
    assert "rlhf_lab @ git+https://github.com/" in install.source
    install.source = install.source.replace(install.source.split('"')[1], f"rlhf_lab @ {colab_kernel['wheel'].as_uri()}")
    probe = nbformat.v4.new_code_cell("import sys, IPython, ipywidgets, plotly, plotly.io as pio\n"
                                      "print(IPython.__version__, ipywidgets.__version__, plotly.__version__, "
                                      "pio.renderers.default, 'google.colab' in sys.modules)")
    nb.cells.append(probe)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="colab-like", store_widget_state=True,
                                     resources={"metadata": {"path": str(book.NOTEBOOKS)}})
    client.execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    install_out = "".join(o.get("text", "") for o in install.get("outputs", []))
    assert "Successfully installed" not in install_out, install_out  # %pip ran and changed nothing
    assert probe.outputs[0]["text"].split() == ["7.34.0", "7.7.1", "5.24.1", "colab", "True"]

    # live widgets: each Output shows exactly one figure, drawn with Colab's renderer (HTML)
    figures = _widget_outputs(nb)
    assert figures and all(len(shown) == 1 for shown in figures), [len(s) for s in figures]
    assert all("text/html" in shown[0]["data"] and "plotly" in shown[0]["data"]["text/html"].lower()
               for shown in figures)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert any(s["model_name"] == "SelectionSliderModel" for s in state.values())  # a live scan
    print(json.dumps({"notebook": name, "outputs_widgets": len(figures)}))
