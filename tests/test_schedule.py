"""`koe run`: scheduled runs publish atomically, refuse to overlap and never replace a good report with a failure."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import BIN, ROOT, _run
from pipelines import schedule
from pipelines.kpis import read_alerts
from pipelines.params import load
from pipelines.stages import STAGE_LIST

AS_OF = "2026-11-01"  # the demo's data end in October 2026


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every published byte: reports/runs/** and reports/index.html."""
    files = [p for p in (root / "reports/runs").rglob("*") if p.is_file()] + [root / "reports/index.html"]
    return {str(p.relative_to(root)): p.read_bytes() for p in files if p.exists()}


@pytest.fixture(scope="module")
def first_run(workspace):
    before = (workspace / "params.yaml").read_bytes()
    proc = _run(["koe", "run", "--as-of", AS_OF], workspace, check=False)
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    return proc, before


@pytest.mark.slow
def test_run_publishes_the_window_and_the_index(workspace, first_run):
    proc, params_before = first_run
    run_dir = workspace / "reports/runs" / AS_OF
    notebooks = [f"notebooks/{Path(s.notebook).name}" for s in STAGE_LIST]
    metrics = ["metrics/clean.json", "metrics/embed.json", "metrics/topics.json", "metrics/kpis.json", "metrics/nps_monthly.json",
               "metrics/sentiment.json"]
    for rel in ("report.html", "alerts.json", "run.json", "run.log", *metrics, *notebooks):
        assert (run_dir / rel).is_file(), rel
    alerts = read_alerts(run_dir / "alerts.json")
    assert proc.returncode == (schedule.EXIT_ALERTS if alerts else schedule.EXIT_OK)
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert record["as_of"] == AS_OF and record["alerts"] == len(alerts)
    # the window is the one asked for: the two months before the as-of date against the two before those
    assert {h["label_b"] for h in record["headline"]} == {"2026-09〜2026-10"}
    # the run workspace starts from the project's pipeline: only what the as-of date touches re-runs
    assert "kpis" in record["stages_run"] and not {"clean", "embed", "topics"} & set(record["stages_run"])
    # the user's params.yaml is never edited; the as-of lives in the run workspace's copy
    assert (workspace / "params.yaml").read_bytes() == params_before
    assert yaml.safe_load((workspace / ".koe/workspace/params.yaml").read_text(encoding="utf-8"))["kpis"]["as_of"] == AS_OF
    index = (workspace / "reports/index.html").read_text(encoding="utf-8")
    assert f'href="runs/{AS_OF}/report.html"' in index and "Content-Security-Policy" in index
    bare = re.sub(r"data:[^)\"']+", "", index).replace("http-equiv", "")  # the embedded font is base64
    assert "<script" not in bare and "http" not in bare
    assert not list((workspace / "reports").glob(".staging-*"))
    assert f"run {AS_OF} published" in proc.stderr


@pytest.mark.slow
def test_two_runs_started_together_one_refuses(workspace, first_run):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KOE_ROOT": str(workspace)}
    procs = [subprocess.Popen(["koe", "run", "--as-of", AS_OF], cwd=workspace, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes[0] in (0, 1) and codes[1] == schedule.EXIT_LOCKED, results
    refused = next(err for code, err in results if code == schedule.EXIT_LOCKED)
    assert "another run is in progress" in refused and f"as-of {AS_OF}" in refused


def test_a_run_refused_as_the_holder_starts_still_names_it(tmp_path):
    # The holder takes the flock, then writes who it is: a run refused in between must wait for that line.
    import fcntl
    import threading

    lock = tmp_path / schedule.STATE_DIR / "run.lock"
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        threading.Timer(0.3, lambda: os.write(fd, b"pid 1, as-of 2026-11-01, started 2026-11-23T06:00:00Z\n")).start()
        with pytest.raises(schedule.RunLocked, match=r"\(pid 1, as-of 2026-11-01,"):
            with schedule.run_lock(tmp_path, "2026-12-01"):
                pass
    finally:
        os.close(fd)


@pytest.mark.slow
def test_a_run_failing_in_topics_publishes_nothing(workspace, first_run):
    before = _snapshot(workspace)
    assert any(k.endswith("report.html") for k in before) and "reports/index.html" in before
    params_path = workspace / "params.yaml"
    original = params_path.read_bytes()
    params = yaml.safe_load(original.decode("utf-8"))
    params["topics"]["merges"] = [[0, 1], [1, 2]]  # valid YAML and schema, but topic 1 in two groups: the topic stage raises
    params_path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    try:
        proc = _run(["koe", "run", "--as-of", "2026-12-01"], workspace, check=False)
    finally:
        params_path.write_bytes(original)
    assert proc.returncode == schedule.EXIT_FAILED, proc.stderr[-3000:]
    assert "stage 'topics' failed" in proc.stderr and "repeats a topic" in proc.stderr
    assert "nothing was published" in proc.stderr
    assert _snapshot(workspace) == before  # previous runs and the index byte-identical
    assert not (workspace / "reports/runs/2026-12-01").exists()
    failed = workspace / "reports/failed/2026-12-01"
    assert (failed / "03_topics.failed.ipynb").is_file() and (failed / "run.log").is_file()
    assert not list((workspace / "reports").glob(".staging-*"))


def test_a_held_lock_refuses_at_once(tmp_path):
    """Fast check of the lock itself: a second run exits 3 with the holder's details, before doing any work."""
    for rel in ("params.yaml", "dvc.yaml"):
        (tmp_path / rel).write_bytes((ROOT / rel).read_bytes())
    with schedule.run_lock(tmp_path, "2026-01-01"):
        env = {**os.environ, "KOE_ROOT": str(tmp_path)}
        proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--as-of", "2026-02-01"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == schedule.EXIT_LOCKED, proc.stderr
    assert f"pid {os.getpid()}, as-of 2026-01-01" in proc.stderr
    assert not (tmp_path / ".koe/workspace").exists()


def test_index_escapes_run_records(tmp_path):
    params = load(ROOT / "params.yaml")
    run_dir = tmp_path / "reports/runs/2026-03-01"
    run_dir.mkdir(parents=True)
    evil = '<script>window.__koe=1</script>'
    record = {"as_of": "2026-03-01", "alerts": 2, "headline": [
        {"kpi": "nps", "label_a": evil, "label_b": "2026-01〜2026-02", "est_a": 1.0, "est_b": 5.5, "diff": 4.5,
         "ci_low": 1.0, "ci_high": 8.0, "p_adjusted": 0.01, "significant": True, "verdict": "improved"}]}
    (run_dir / "run.json").write_text(json.dumps(record), encoding="utf-8")
    (tmp_path / "reports/runs/broken").mkdir()
    (tmp_path / "reports/runs/broken/run.json").write_text("{not json", encoding="utf-8")
    page = schedule.render_index(tmp_path, params)
    assert evil not in page and "&lt;script&gt;" in page
    assert 'href="runs/2026-03-01/report.html"' in page and "5.5" in page
