"""DVC's git-backed workflow: experiments, params/metrics diffs and an offline `dvc plots show` on a fresh clone.

The project is git-backed (no `core.no_scm`) and commits dvc.lock and reports/metrics.json for the demo, whose outputs
are deterministic: see the README, "Versioning and experiments". The fast tests hold the committed files to that
design; the slow one runs `dvc exp run -S …` on a small demo in a fresh clone of this repository (its last commit).
"""

from __future__ import annotations

import configparser
import difflib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TEMPLATE = "build/dvc-plots-template.html"  # made by `make setup` (scripts/dvc_plots_template.py)
MAX_METRICS_WIDTH = 100  # `dvc metrics show` must fit a terminal


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def _dvc(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KOE_ROOT": str(cwd),
           "PYTHONPATH": str(cwd), "COLUMNS": "120"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# ------------------------------------------------------------------------------------------------ fast: the design

def test_dvc_is_git_backed_and_plots_use_the_local_template():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc/config")
    assert config.get("core", "no_scm", fallback="false") == "false"  # params/metrics diff and exp need git
    assert (ROOT / ".dvc" / config.get("plots", "html_template")).resolve() == (ROOT / TEMPLATE).resolve()


def test_git_ignores_what_dvc_and_setup_write_and_tracks_the_lock_and_metrics():
    ignored = ["dvc_plots/index.html", "node_modules/vega/package.json", TEMPLATE, "data/clean/feedback.parquet",
               "reports/report.html", "reports/metrics/topics.json", "reports/notebooks/03_topics.ipynb"]
    out = subprocess.run(["git", "check-ignore", "--no-index", *ignored, "dvc.lock", "reports/metrics.json"],
                         cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert out == ignored
    assert {"dvc.lock", "reports/metrics.json", "package.json", "package-lock.json"} <= set(_git("ls-files").split())


@pytest.mark.parametrize("override", ["topics.min_topic_share=0.02", "kpis.fdr_q=0.1", "report.lang=en",
                                      "clean.plausible_margin_days=365", "sentiment.min_n=50"])
def test_exp_run_set_param_changes_one_line_of_params_yaml(tmp_path, override):
    """`dvc exp run -S` rewrites params.yaml through ruamel, replacing every list and scalar it loaded: params.yaml is
    laid out as DVC writes it (block lists, no comment inside a list), so only the line set changes."""
    from dvc.utils.hydra import apply_overrides

    before = (ROOT / "params.yaml").read_text(encoding="utf-8")
    path = tmp_path / "params.yaml"
    path.write_text(before, encoding="utf-8")
    apply_overrides(str(path), [override])
    changed = [line for line in difflib.unified_diff(before.splitlines(), path.read_text(encoding="utf-8").splitlines(),
                                                     lineterm="", n=0) if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    key, value = override.rsplit("=", 1)
    assert len(changed) == 2 and changed[0].startswith("-") and changed[1].startswith("+"), changed
    assert changed[1][1:].split("#")[0].strip() == f"{key.rsplit('.', 1)[1]}: {value}"
    assert changed[0].split("#")[1:] == changed[1].split("#")[1:]  # its comment stays


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_committed_dvc_lock_matches_the_code_params_and_metrics():
    """dvc.lock is the demo's: after changing a stage's code, notebook or params, `make demo` and commit dvc.lock
    and reports/metrics.json (else `git status` is dirty after the next `make demo`)."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert list(lock) == list(spec)
    stale = []
    for name, stage in lock.items():
        declared = {re.sub(r"\$\{(\w+)\.(\w+)\}", lambda m: str(params[m.group(1)][m.group(2)]), d) for d in spec[name]["deps"]}
        stale += sorted(declared ^ {dep["path"] for dep in stage["deps"]})  # a dependency added or removed
        for dep in stage["deps"]:
            path = ROOT / dep["path"]
            if path.is_file() and dep["path"].startswith(("pipelines/", "notebooks/")) and _md5(path) != dep["md5"]:
                stale.append(dep["path"])
        for key, value in stage.get("params", {}).get("params.yaml", {}).items():
            section, *rest = key.split(".")
            current = params[section]
            for part in rest:
                current = current[part]
            if current != value:
                stale.append(f"params.yaml › {key}")
    assert not stale, f"dvc.lock is older than {sorted(set(stale))}: run `make demo` and commit dvc.lock and reports/metrics.json"
    metrics = next(o for o in lock["report"]["outs"] if o["path"] == params["report"]["metrics_path"])
    assert _md5(ROOT / metrics["path"]) == metrics["md5"]


def test_metrics_are_small_flat_and_fit_a_terminal():
    metrics = json.loads((ROOT / "reports/metrics.json").read_text(encoding="utf-8"))
    assert len(metrics) <= 8 and all(v is None or isinstance(v, (int, float, bool)) for v in metrics.values()), metrics
    shown = _dvc(["dvc", "metrics", "show"], ROOT, timeout=120).stdout
    assert "reports/metrics.json" in shown and max(map(len, shown.splitlines())) <= MAX_METRICS_WIDTH, shown
    assert "reports/metrics/" not in shown  # the stages' own detailed JSON are outputs, not DVC metrics


# ------------------------------------------------------------------------------------------------ slow: a fresh clone

@pytest.fixture(scope="module")
def dvc_clone(tmp_path_factory) -> Path:
    """A fresh clone of this repository's last commit, set up as `make setup` would (this venv; its plots
    template), with a 300-response demo and one experiment: `dvc exp run -S topics.min_topic_share=0.02`."""
    if not (ROOT / TEMPLATE).is_file():
        pytest.fail(f"{TEMPLATE} is missing: `make setup` (run by `make test`) builds it")
    repo = tmp_path_factory.mktemp("koe-clone") / "koe"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    for key, value in (("user.name", "koe test"), ("user.email", "koe-test@example.invalid")):
        _git("config", key, value, cwd=repo)  # DVC commits each experiment to a git ref
    (repo / TEMPLATE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / TEMPLATE, repo / TEMPLATE)
    _dvc(["koe", "demo-data", "--n-responses", "300", "--n-tickets", "60"], repo)
    _dvc(["dvc", "exp", "run", "-n", "share2", "-S", "topics.min_topic_share=0.02"], repo, timeout=900)
    return repo


@pytest.mark.slow
def test_an_experiment_shows_its_param_and_metrics_on_a_fresh_clone(dvc_clone):
    clone = dvc_clone
    workspace = json.loads((clone / "reports/metrics.json").read_text(encoding="utf-8"))
    assert workspace["verbatims"] and workspace["topics"] is not None, workspace
    # only the experiment's param line changed; the outputs stay ignored
    assert sorted(_git("status", "--porcelain", cwd=clone).splitlines()) == [
        " M dvc.lock", " M params.yaml", " M reports/metrics.json"]
    diff = [line for line in _git("diff", "-U0", "params.yaml", cwd=clone).splitlines() if line[:1] in "+-"]
    assert [line[0] + line[1:].split("#")[0].strip() for line in diff[2:]] == [
        "-min_topic_share: 0.01", "+min_topic_share: 0.02"], diff

    rows = json.loads(_dvc(["dvc", "exp", "show", "--json"], clone).stdout)
    exps = [e for row in rows for e in (row.get("experiments") or []) for e in e.get("revs", [])]
    exp = next(e for e in exps if e["name"] == "share2")["data"]
    assert exp["params"]["params.yaml"]["data"]["topics"]["min_topic_share"] == 0.02
    assert exp["metrics"]["reports/metrics.json"]["data"] == workspace  # real values, not "!"
    baseline = rows[1]["data"] if rows[0]["rev"] == "workspace" else rows[0]["data"]
    assert baseline["metrics"]["reports/metrics.json"]["data"]["verbatims"]  # HEAD's committed demo metrics

    table = _dvc(["dvc", "exp", "show", "--no-pager", "--only-changed", "--drop", ".*/.*"], clone).stdout  # README's
    assert "share2" in table and "topics.min_topic_share" in table and "!" not in table, table
    assert f"{workspace['topics']} " in table.split("share2")[1] and max(map(len, table.splitlines())) <= 120, table

    params = _dvc(["dvc", "params", "diff"], clone).stdout
    assert any(line.split()[:3] == ["params.yaml", "topics.min_topic_share", "0.01"] and line.split()[3] == "0.02"
               for line in params.splitlines()), params

    metrics = _dvc(["dvc", "metrics", "diff"], clone).stdout
    assert "reports/metrics.json" in metrics and "verbatims" in metrics, metrics
    assert max(map(len, _dvc(["dvc", "metrics", "show"], clone).stdout.splitlines())) <= MAX_METRICS_WIDTH


@pytest.mark.slow
def test_dvc_plots_show_renders_offline(dvc_clone):
    from devtools import launch

    clone = dvc_clone

    _dvc(["dvc", "plots", "show"], clone)
    page_path = clone / "dvc_plots/index.html"
    html = page_path.read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html and 'src="http' not in html
    assert _git("status", "--porcelain", "--untracked-files=all", "dvc_plots", cwd=clone) == ""  # git-ignored

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.fail("chromium is not installed: `make browser` (run by `make test`) installs it")
    profile = Path(tempfile.mkdtemp(prefix="koe-chromium-"))
    proc, page = launch(chromium, profile, 1200, 900)
    try:
        for domain in ("Page", "Runtime", "Network"):
            page.send(f"{domain}.enable")
        url = page_path.resolve().as_uri()
        page.send("Page.navigate", url=url)
        page.wait_for("Page.loadEventFired")
        marks = page.wait("document.querySelectorAll('svg.marks path, svg.marks line, svg.marks text').length", 30,
                          "the Vega chart's SVG")
        title = page.js("Array.from(document.querySelectorAll('svg.marks text')).map(t => t.textContent).join(' ')")
        requests = [e["params"]["request"]["url"] for e in page.events if e.get("method") == "Network.requestWillBeSent"]
        exceptions = [e["params"] for e in page.events if e.get("method") == "Runtime.exceptionThrown"]
    finally:
        page.close()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    assert marks > 3 and "Monthly NPS" in title, (marks, title)
    assert [u for u in requests if u != url and not u.startswith(("data:", "blob:"))] == []  # nothing fetched
    assert not exceptions, exceptions
