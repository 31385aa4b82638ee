"""The workbench as a researcher uses it: `make lab`, a real JupyterLab on loopback, a real headless Chromium that
opens the exploration notebook, names a topic in it, runs all cells; then `dvc repro` and the report shows the name.

Chromium is driven through the DevTools protocol (websocket-client, already a Jupyter dependency), with real mouse
and keyboard events. The screenshot lands in tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import base64
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, ROOT, _run
from devtools import launch

ARTIFACTS = ROOT / "tests" / "artifacts"
NEW_LABEL = "ログイン不具合（研究者の命名）"


# ---- fast: the Makefile target (notebooks are checked clean and thin by tests/test_params.py) --------------

def test_make_lab_runs_as_root_and_prints_its_url():
    out = subprocess.run(["make", "-n", "-o", "setup", "lab"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "--allow-root" in out and "--ip 127.0.0.1" in out and "lab?token=" in out


# ---- end to end in the session workspace ----------------------------------------------------------------------

@pytest.mark.slow
def test_exploration_notebooks_pass_nbval(workspace):
    notebooks = sorted(str(p) for p in (workspace / "notebooks" / "explore").glob("*.ipynb"))
    assert notebooks
    sanitize = ROOT / "tests" / "nbval_sanitize.cfg"
    before = (workspace / "params.yaml").read_bytes()
    proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
                 f"--nbval-sanitize-with={sanitize}", *notebooks], workspace, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert re.search(r"\d+ passed", proc.stdout)
    assert (workspace / "params.yaml").read_bytes() == before  # exploring writes nothing unless asked


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, shutdown_url: str | None = None) -> None:
    """Stop a process we started and its group, by its id (it leads its own session); the server first shuts its
    kernels down through its API (kernels run in sessions of their own)."""
    if shutdown_url and proc.poll() is None:
        try:
            urllib.request.urlopen(urllib.request.Request(shutdown_url, method="POST"), timeout=10).close()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            proc.poll()
            time.sleep(0.2)
        else:
            continue
        break
    proc.wait(timeout=10)


@pytest.mark.slow
def test_a_researcher_names_a_topic_in_jupyterlab_and_the_report_shows_it(workspace, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian package chromium is missing: `make test` installs it"
    ws = tmp_path / "ws"  # a copy: this test changes params.yaml and re-runs the pipeline
    shutil.copytree(workspace, ws, symlinks=True)
    shutil.copy(ROOT / "Makefile", ws / "Makefile")
    import polars as pl

    topics = pl.read_parquet(ws / "data/topics/topics.parquet")
    target = int(topics.filter(pl.col("emerging"))["topic"][0])
    old_label = topics.filter(pl.col("topic") == target)["label"][0]
    params_before = (ws / "params.yaml").read_text(encoding="utf-8")

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KOE_ROOT": str(ws),
           "LAB_PORT": str(_free_port()), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces")}  # no layout restored from elsewhere
    log = (tmp_path / "lab.log").open("w+")
    server = subprocess.Popen(["make", "-o", "setup", "lab"], cwd=ws, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    profile = tempfile.mkdtemp(prefix="koe-chromium-")
    browser = cdp = url = None
    started = time.monotonic()
    try:
        # `make lab` prints the URL with its token before JupyterLab starts.
        url = None
        while url is None and time.monotonic() - started < 60:
            log.seek(0)
            m = re.search(r"JupyterLab: (http://127\.0\.0\.1:\d+/lab\?token=\w+)", log.read())
            url = m.group(1) if m else None
            assert server.poll() is None, log.read()
            time.sleep(0.3)
        assert url, "make lab printed no URL"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    assert r.status == 200
                break
            except OSError:
                assert server.poll() is None and time.monotonic() - started < 90, open(log.name).read()
                time.sleep(0.5)

        browser, cdp = launch(chromium, Path(profile), 1400, 1000)
        cdp.send("Page.enable")
        cdp.send("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
        cdp.send("Page.navigate", url=url.replace("/lab?", "/lab/tree/notebooks/explore/topics.ipynb?"))
        cdp.wait("document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell').length > 5", 120, "the notebook to open")
        # The kernel is ready when the server says the notebook's koe kernel is idle with the page connected.
        api = url.replace("/lab?", "/api/sessions?")
        deadline = time.monotonic() + 180
        while not any(x["path"].endswith("explore/topics.ipynb") and x["kernel"]["name"] == "koe"
                      and x["kernel"]["execution_state"] == "idle" and x["kernel"]["connections"] >= 1
                      for x in json.loads(urllib.request.urlopen(api, timeout=10).read())):
            assert time.monotonic() < deadline, "the koe kernel did not become ready"
            time.sleep(0.5)

        # Name the emerging topic the way a researcher would: type at the end of the first code cell.
        first_cell = "document.querySelector('.jp-NotebookPanel .jp-CodeCell .cm-content')"
        cdp.click(first_cell, "the first code cell")
        cdp.key("End", 35, modifiers=2)  # Ctrl+End: end of the cell
        cdp.send("Input.insertText", text=f"\nnew_labels = {{{target}: \"{NEW_LABEL}\"}}")
        cdp.wait(f"{first_cell}.textContent.includes({json.dumps(NEW_LABEL)})", 10, "the label typed into the cell")

        # Run › Run All Cells, through the menu bar.
        cdp.click("[...document.querySelectorAll('.lm-MenuBar-item')].find(e => e.textContent.trim() === 'Run')", "the Run menu")
        cdp.click("document.querySelector(\".lm-Menu-item[data-command='runmenu:run-all']\")", "Run All Cells")
        n_code = cdp.js("document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell').length")
        cdp.wait(
            "(() => { const p = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]"
            ".map(e => e.textContent.trim()); return p.length > 0 && p.every(t => /^\\[\\d+\\]:$/.test(t)); })()",
            600, f"all {n_code} code cells to run",
        )
        errors = cdp.js(
            "[...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')]"
            ".map(e => e.textContent).filter(t => /Traceback|Error:/.test(t))"
        )
        plots = cdp.js("document.querySelectorAll('.jp-NotebookPanel .js-plotly-plot').length")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = cdp.send("Page.captureScreenshot", format="png")
        (ARTIFACTS / "lab-explore-topics.png").write_bytes(base64.b64decode(shot["data"]))
        assert not errors, errors
        assert plots >= 3, f"{plots} plotly views rendered"
    except BaseException:
        if cdp is not None:  # what the page showed when it failed
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = cdp.send("Page.captureScreenshot", format="png")
            (ARTIFACTS / "lab-explore-topics.failed.png").write_bytes(base64.b64decode(shot["data"]))
        raise
    finally:
        if browser is not None:
            _stop(browser)
        _stop(server, url and url.replace("/lab?", "/api/shutdown?"))
        shutil.rmtree(profile, ignore_errors=True)
    assert server.returncode is not None
    with pytest.raises(ProcessLookupError):  # nothing of the server's process group is left
        os.killpg(server.pid, 0)

    params_after = (ws / "params.yaml").read_text(encoding="utf-8")
    diff = [d for d in difflib.ndiff(params_before.splitlines(), params_after.splitlines()) if d[:1] in "+-"]
    assert len(diff) == 2 and all(d[2:].strip().startswith("labels:") for d in diff), diff
    assert f"{target}: {NEW_LABEL}" in params_after
    proc = _run(["dvc", "repro"], ws)
    assert set(re.findall(r"Running stage '(\w+)'", proc.stdout)) == {"topics", "kpis", "report"}, proc.stdout  # kpis reads topic labels (drivers); sentiment: same assignments
    report = (ws / "reports/report.html").read_text(encoding="utf-8")
    assert f"新しいテーマ「{NEW_LABEL}」" in report, "the report does not name the emerging topic with the new label"
    assert old_label not in pl.read_parquet(ws / "data/topics/topics.parquet")["label"].to_list()
    print(f"make lab → run all in Chromium → dvc repro: {time.monotonic() - started:.0f} s")
