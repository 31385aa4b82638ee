"""What a researcher's tools do to the repository: notebooks stay output-free, ruff stays clean, JupyterLab opens
without a news pop-up."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))


def test_the_git_filter_strips_outputs_and_keeps_tags_and_ids(tmp_path):
    pytest.importorskip("nbstripout", reason="nbstripout is in requirements.lock: `make setup`")
    assert "*.ipynb filter=nbstripout" in (ROOT / ".gitattributes").read_text(encoding="utf-8")
    nb = nbformat.read(ROOT / "notebooks/06_report.ipynb", as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = i + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="a researcher's output\n")]
    dirty = tmp_path / "nb.ipynb"
    nbformat.write(nb, dirty)
    # what git's clean filter runs (Makefile: filter.nbstripout.clean)
    proc = subprocess.run([sys.executable, "-m", "nbstripout", "--keep-id", "-t", str(dirty)], capture_output=True, text=True, check=True)
    clean = nbformat.reads(proc.stdout, as_version=4)
    assert all(not c.outputs and c.execution_count is None for c in clean.cells if c.cell_type == "code")
    assert [c.id for c in clean.cells] == [c.id for c in nb.cells]
    assert any("parameters" in c.metadata.get("tags", []) for c in clean.cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_are_what_the_filter_would_commit(path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is in requirements.lock: `make setup`")
    proc = subprocess.run([ruff, "check", "pipelines", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_lab_defaults_turn_the_news_off():
    overrides = json.loads((ROOT / "jupyter/overrides.json").read_text(encoding="utf-8"))
    notification = overrides["@jupyterlab/apputils-extension:notification"]
    assert notification == {"checkForUpdates": False, "fetchNews": "false"}
    assert "jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json" in (ROOT / "Makefile").read_text()
