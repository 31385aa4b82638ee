"""Progress of long loops: rate-limited lines with count, rate and ETA, forwarded from the stage's kernel to its stderr."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from pipelines import progress, runner

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LINE = re.compile(r"^koe progress: (?P<desc>.+) (?P<n>[\d,]+)/(?P<total>[\d,]+) (?P<unit>\w+) \((?P<pct>\d+)%\), (?P<rate>.+)/s, "
                  r"elapsed (?P<elapsed>[\d:]+), ETA (?P<eta>[\d:?]+)$")


def _lines(text: str) -> list[re.Match]:
    return [m for m in map(LINE.match, text.splitlines()) if m]


def test_log_mode_prints_whole_lines_with_count_rate_and_eta_and_is_rate_limited():
    out = io.StringIO()
    with progress.progress(1000, "embed", mode="log", file=out) as bar:
        for _ in range(100):  # 100 updates well inside one log interval
            bar.update(10)
    lines = _lines(out.getvalue())
    assert "\r" not in out.getvalue()
    # The first line (so a log shows the work started) and the final count; nothing in between.
    assert [(m["n"], m["total"]) for m in lines] == [("0", "1000"), ("1000", "1000")]
    assert lines[-1]["pct"] == "100" and lines[-1]["unit"] == "texts" and lines[-1]["eta"] == "00:00"


def test_tty_mode_prints_a_line_every_interval(monkeypatch):
    monkeypatch.setattr(progress, "TTY_INTERVAL_S", 0.05)
    out = io.StringIO()
    with progress.progress(6, "sentiment", mode="tty", file=out) as bar:
        for _ in range(6):
            time.sleep(0.06)
            bar.update(1)
    counts = [int(m["n"]) for m in _lines(out.getvalue())]
    assert counts[0] == 0 and counts[-1] == 6 and len(counts) >= 4  # intermediate lines too


def test_mode_comes_from_the_stage_environment(monkeypatch):
    monkeypatch.setenv("KOE_PROGRESS", "log")
    assert isinstance(progress.progress(1, "x", file=io.StringIO()), progress.LineProgress)
    monkeypatch.setenv("KOE_PROGRESS", "loud")
    with pytest.raises(ValueError, match="KOE_PROGRESS='loud'"):
        progress.progress(1, "x")
    assert runner.progress_mode(io.StringIO()) == "log"


def test_koe_stage_shows_the_kernels_progress_on_its_stderr(tmp_path):
    """The whole path: notebook → kernel stderr → papermill → `koe stage` stderr (what `dvc repro` prints)."""
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("explore", ".ipynb_checkpoints"))
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    texts = [f"アプリの{i}回目のアップデート後にログインできない" for i in range(30)] + ["The app keeps crashing"]
    (tmp_path / "data/clean").mkdir(parents=True)
    pl.DataFrame({"text": texts, "text_status": ["ok"] * len(texts)}).write_parquet(tmp_path / "data/clean/feedback.parquet")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["koe", "stage", "embed"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [m for m in _lines(proc.stderr) if m["desc"] == "embed"]
    assert lines and lines[-1]["n"] == lines[-1]["total"] == "31", proc.stderr[-3000:]
    assert (tmp_path / "reports/notebooks/02_embed.ipynb").is_file()
    assert pl.read_parquet(tmp_path / "data/embed/embeddings.parquet").height == 31
