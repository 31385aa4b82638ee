"""Session fixtures shared by the end-to-end tests: one small demo through `dvc repro` in a temporary workspace,
built once per session (test_pipeline, test_browser, test_schedule, test_lab and test_workspace read it; a test
that changes it works on a copy). The tests never write into the project's own data/ or reports/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from projects import demo_project

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
N_RESPONSES, N_TICKETS = 3000, 800  # large enough for the late login theme to stand out


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KOE_ROOT": str(cwd)}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    ws = demo_project(tmp_path_factory.mktemp("koe-workspace"), N_RESPONSES, N_TICKETS)
    proc = _run(["dvc", "repro"], ws)
    (ws / "first-repro.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    return ws


@pytest.fixture(scope="session")
def truth(workspace) -> dict:
    return json.loads((workspace / "data/demo/truth.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def report_html(workspace) -> str:
    return (workspace / "reports/report.html").read_text(encoding="utf-8")


# Under pytest-xdist (`make test` runs two workers), tests that share an expensive fixture run on the same worker,
# so each fixture is built once per run; the groups are sized so the two workers finish together.
_GROUPS = {"workspace": "demo", "corpus_ws": "corpus", "kernel": "shapes", "demo_ws": "topics", "demo_stage": "corpus",
           "demo_run": "topics", "dvc_clone": "dvc_clone"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, group in _GROUPS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))
                break
