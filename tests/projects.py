"""Demo projects the end-to-end tests build: a fresh project folder, or the clean stage's outputs of a demo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def sh(cmd: list[str], ws: Path, check: bool = True, timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
    """Run a command in project ``ws`` with the venv's tools, as `make` would."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KOE_ROOT": str(ws)}
    proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def demo_project(ws: Path, n_responses: int, n_tickets: int) -> Path:
    """A DVC project in ``ws`` with koe's notebooks, pipelines and params, and a demo export of the given size."""
    for name in ("notebooks", "pipelines"):
        shutil.copytree(ROOT / name, ws / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    shutil.copy(ROOT / "dvc.yaml", ws / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["demo"].update(n_responses=n_responses, n_tickets=n_tickets)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    sh(["dvc", "init", "--no-scm", "-q"], ws)
    sh(["dvc", "config", "core.analytics", "false"], ws)
    sh(["koe", "demo-data"], ws)
    return ws


def cleaned_demo(ws: Path, n_responses: int, n_tickets: int):
    """The demo of the given size through the clean stage in ``ws`` (in process); returns the project's params."""
    from pipelines import clean, demo, params
    from pipelines.io import write_result

    p = params.load(ROOT / "params.yaml")
    demo.generate(p.demo.model_copy(update={"n_responses": n_responses, "n_tickets": n_tickets}), ws)
    write_result(clean.run(p.clean, ws), p.clean, ws)
    return p
