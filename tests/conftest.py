"""Shared fixtures: one small demo workspace built once per session with `dvc repro` (tests/test_pipeline.py,
tests/test_lab.py and tests/test_workspace.py read it; a test that changes it works on a copy)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
N_RESPONSES, N_TICKETS = 1500, 600


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KOE_ROOT": str(cwd)}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("koe-workspace")
    for name in ("notebooks", "pipelines"):
        shutil.copytree(ROOT / name, ws / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    shutil.copy(ROOT / "dvc.yaml", ws / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["demo"].update(n_responses=N_RESPONSES, n_tickets=N_TICKETS)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    _run(["dvc", "init", "--no-scm", "-q"], ws)
    _run(["dvc", "config", "core.analytics", "false"], ws)
    _run(["koe", "demo-data"], ws)
    proc = _run(["dvc", "repro"], ws)
    (ws / "first-repro.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    return ws
