"""Scheduled runs: `koe run --as-of DATE` runs the pipeline for one window and publishes it safely.

The run happens in a private DVC workspace (``.koe/workspace``) that mirrors the project's code and raw data and
holds its own params.yaml with ``kpis.as_of`` set, so the user's params.yaml and outputs are never edited and
unchanged stages are skipped between monthly runs. On success the outputs are assembled in a hidden folder under
``reports/`` and renamed to ``reports/runs/<as-of>/`` in one step, then ``reports/index.html`` is replaced
atomically. A failed run publishes nothing: its log and failed notebook go to ``reports/failed/<as-of>/``.

Exit codes (documented in the README): 0 ok, 1 ok with alerts, 2 failed, 3 another run holds the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import html
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterator

import yaml

from pipelines import kpi_registry
from pipelines.kpis import read_alerts
from pipelines import io as kio
from pipelines.params import KoeParams, load
from pipelines.stages import STAGE_LIST

log = logging.getLogger("koe")

EXIT_OK, EXIT_ALERTS, EXIT_FAILED, EXIT_LOCKED = 0, 1, 2, 3
STATE_DIR = ".koe"  # run workspace, lock and nothing else; git-ignored
RUNS_DIR = "reports/runs"
FAILED_DIR = "reports/failed"
INDEX = "reports/index.html"
HEADLINE_KPIS = kpi_registry.HEADLINE  # the KPIs of the run index


class RunLocked(RuntimeError):
    """Another `koe run` holds the project's run lock."""


class RunFailed(RuntimeError):
    def __init__(self, stage: str | None, cause: str, kept: list[Path]):
        where = f"stage {stage!r}" if stage else "the pipeline"
        kept_s = ", ".join(str(p) for p in kept) or "-"
        super().__init__(f"{where} failed: {cause} (kept for diagnosis: {kept_s})")
        self.stage, self.cause, self.kept = stage, cause, kept


@dataclass
class RunResult:
    as_of: str
    exit_code: int
    run_dir: Path | None = None
    alerts: int = 0
    stages_run: list[str] = field(default_factory=list)


# --- lock --------------------------------------------------------------------------------------------------------

# The lock's open file, while this process holds it: children started with ``lock_fds()`` inherit it, and a
# flock lives as long as any process holds the file open. If `koe run` is killed, its `dvc repro` child keeps
# the lock until it ends too, so a second run cannot start under it.
_HELD_FDS: list[int] = []


def lock_fds() -> tuple[int, ...]:
    return tuple(_HELD_FDS)


@contextmanager
def run_lock(root: Path, as_of: str, wait_s: float = 0.0) -> Iterator[Path]:
    """An exclusive flock on .koe/run.lock, held by this process and every child it starts with ``lock_fds()``
    (released by the kernel when the last of them dies); refuse or wait."""
    path = root / STATE_DIR / "run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _lock_holder(path)
                    waited = f" after waiting {wait_s:g} s" if wait_s else ""
                    raise RunLocked(f"another run is in progress ({holder}); lock {path} is held{waited}. "
                                    "Not starting; use --wait SECONDS to queue behind it.") from None
                time.sleep(1.0)
        os.ftruncate(fd, 0)
        started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.write(fd, f"pid {os.getpid()}, as-of {as_of}, started {started}, process group {os.getpgrp()}\n".encode())
        _HELD_FDS.append(fd)
        yield path
    finally:
        if fd in _HELD_FDS:
            _HELD_FDS.remove(fd)
        os.close(fd)  # closing drops the flock (once no child holds it either)


def _lock_holder(path: Path, patience_s: float = 2.0) -> str:
    """Who holds the lock, as the holder wrote it: it writes just after taking the flock, so a run refused in
    that instant waits briefly for the line rather than report an empty file."""
    deadline = time.monotonic() + patience_s
    while True:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        if text or time.monotonic() >= deadline:
            return text or "another koe run"
        time.sleep(0.05)


# --- workspace ---------------------------------------------------------------------------------------------------

def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)  # raw exports are never edited in place, so a hard link is a safe, free mirror
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _source_deps(root: Path) -> list[str]:
    """dvc.yaml deps that no stage produces (code, notebooks, raw data): what the workspace must mirror."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    deps: list[str] = []
    for stage in spec.get("stages", {}).values():
        for dep in stage.get("deps", []):
            if "${" not in dep and dep not in deps:
                deps.append(dep)
    return deps


def _mirror(src: Path, dst: Path) -> None:
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    elif dst.exists() or dst.is_symlink():
        dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    else:
        _link_or_copy(str(src), str(dst))


def prepare_workspace(root: Path, params: KoeParams, as_of: date) -> Path:
    """Mirror code and raw data into .koe/workspace and write its params.yaml with kpis.as_of for this run."""
    ws = root / STATE_DIR / "workspace"
    ws.mkdir(parents=True, exist_ok=True)
    for dep in _source_deps(root):
        if not (root / dep).exists():
            raise FileNotFoundError(f"{root / dep}: listed in dvc.yaml deps but missing")
        _mirror(root / dep, ws / dep)
    shutil.copyfile(root / "dvc.yaml", ws / "dvc.yaml")
    raw = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    raw["kpis"]["as_of"] = as_of.isoformat()
    kio.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), ws / "params.yaml")
    if not (ws / ".dvc").is_dir():
        _dvc(ws, ["init", "--no-scm", "-q"])
        _dvc(ws, ["config", "core.analytics", "false"])
        _seed(root, ws)
    return ws


def _seed(root: Path, ws: Path) -> None:
    """A new run workspace starts from the project's last `dvc repro` (its dvc.lock and outputs), so the first
    scheduled run recomputes only what the as-of date changes instead of the whole pipeline."""
    lock_path = root / "dvc.lock"
    if not lock_path.is_file():
        return
    lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
    outs = [o["path"] for st in lock.get("stages", {}).values() for o in st.get("outs", [])]
    if not all((root / o).exists() for o in outs):
        return  # a partial state would only confuse DVC; run everything instead
    cache = root / ".dvc" / "cache"
    if not cache.is_dir():
        return  # DVC reruns any stage whose outputs are not in its cache, so seeding needs the project's cache
    # Share the project's cache (a documented DVC set-up): the seeded outputs are then "in cache" and up to date.
    _dvc(ws, ["cache", "dir", str(cache)])
    for rel in outs:
        src, dst = root / rel, ws / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    for stage in STAGE_LIST:  # the executed notebooks: the audit trail of the seeded outputs (not DVC outputs)
        if (root / stage.executed).is_file():
            (ws / stage.executed).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / stage.executed, ws / stage.executed)
    shutil.copy2(lock_path, ws / "dvc.lock")
    log.info("run workspace seeded from the project's dvc.lock (%d outputs)", len(outs))


def _env(ws: Path) -> dict[str, str]:
    # cron has a bare PATH: the venv's bin (koe, papermill) comes first, whatever PATH holds
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "KOE_ROOT": str(ws), "PYTHONUNBUFFERED": "1"}


def _dvc(ws: Path, args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws, env=_env(ws), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {ws}: {proc.stderr.strip()[-2000:]}")


def repro(ws: Path, log_path: Path) -> tuple[int, str]:
    """`dvc repro` in the workspace, its output streamed to the log file and to stderr (cron mails it)."""
    lines: list[str] = []
    with open(log_path, "w", encoding="utf-8") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=ws, env=_env(ws), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
                                pass_fds=lock_fds())  # the child holds the run lock as long as it lives
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            lines.append(line)
            sys.stderr.write(line)
        code = proc.wait()
    return code, "".join(lines)


def _failure(output: str) -> tuple[str | None, str]:
    """Which stage failed and why, from the `koe stage` error line and DVC's summary."""
    stage = None
    m = re.search(r"failed to reproduce '([\w-]+)'", output) or re.search(r"stage '([\w-]+)' failed", output)
    if m:
        stage = m.group(1)
    cause = next((ln.split("error: ", 1)[1].strip() for ln in reversed(output.splitlines()) if "koe: error: " in ln), None)
    if cause is None:
        cause = next((ln.strip() for ln in reversed(output.splitlines()) if ln.startswith("ERROR")), "see the log")
    # the workspace's notebook path means nothing to the reader: the copy in reports/failed/ is named instead
    cause = re.sub(r"^stage '[\w-]+' failed: ", "", cause)
    cause = re.sub(r"\s*\(executed notebook kept at [^)]*\)$", "", cause)
    return stage, cause


# --- publishing ----------------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def headline(ws: Path, params: KoeParams) -> list[dict]:
    """Overall KPIs of the current window vs the previous one (what changed this month), for the index."""
    import polars as pl

    tests = pl.read_parquet(ws / params.kpis.out_tests)
    rows = tests.filter((pl.col("comparison") == "window") & (pl.col("segment_col") == "all")
                        & pl.col("kpi").is_in(list(HEADLINE_KPIS)))
    keep = ("kpi", "label_a", "label_b", "est_a", "est_b", "diff", "ci_low", "ci_high", "p_adjusted", "significant", "verdict")
    order = {k: i for i, k in enumerate(HEADLINE_KPIS)}
    return sorted(({k: r[k] for k in keep} for r in rows.iter_rows(named=True)), key=lambda r: order[r["kpi"]])


def assemble(ws: Path, params: KoeParams, stage_dir: Path, record: dict) -> None:
    """Copy the run's report, every stage's executed notebook, metrics and plots, and the alerts into the staging folder."""
    shutil.copy2(ws / params.report.out_html, stage_dir / "report.html")
    (stage_dir / "notebooks").mkdir()
    (stage_dir / "metrics").mkdir()
    for stage in STAGE_LIST:
        if (ws / stage.executed).is_file():  # absent when the stage was seeded from a project that has none
            shutil.copy2(ws / stage.executed, stage_dir / "notebooks" / Path(stage.executed).name)
        else:
            record.setdefault("notebooks_missing", []).append(stage.name)
        for rel in stage.paths(params, tuple(k for k in stage.outputs if k in ("metrics_path", "plots_path"))).values():
            shutil.copy2(ws / rel, stage_dir / "metrics" / Path(rel).name)
    shutil.copy2(ws / params.kpis.out_alerts, stage_dir / "alerts.json")
    record["files"] = {str(p.relative_to(stage_dir)): _sha256(p) for p in sorted(stage_dir.rglob("*")) if p.is_file()}
    kio.write_json(record, stage_dir / "run.json")


def publish(root: Path, stage_dir: Path, as_of: str) -> Path:
    """Rename the staged folder into reports/runs/<as-of>/ (a re-run of the same as-of replaces it)."""
    runs = root / RUNS_DIR
    runs.mkdir(parents=True, exist_ok=True)
    final = runs / as_of
    trash = None
    if final.exists():
        trash = root / "reports" / f".replaced-{as_of}-{os.getpid()}"
        os.rename(final, trash)
    os.rename(stage_dir, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return final


INDEX_TEXT = {
    "ja": {"title": "実行一覧", "as_of": "基準日", "status": "状態", "window": "比較期間", "ok": "正常",
           "alerts": "アラート {n} 件", "report": "レポート", "generated": "生成", "none": "まだ実行がありません。",
           "note": "各KPI：直近期間の値（前期間からの差、95%信頼区間）。判定は多重比較補正後。"},
    "en": {"title": "Runs", "as_of": "As of", "status": "Status", "window": "Compared", "ok": "ok",
           "alerts": "{n} alert(s)", "report": "Report", "generated": "Generated", "none": "No runs yet.",
           "note": "Each KPI: value in the latest window (change from the previous window, 95% CI); verdicts after FDR control."},
}


def render_index(root: Path, params: KoeParams) -> str:
    """reports/index.html: every published run newest first with its headline KPIs; escaped and self-contained."""
    from pipelines import kpi_registry
    from pipelines.report_format import VERDICT_COLOURS, period, text
    from pipelines.report_page import embedded_font_css

    lang = params.report.lang
    tx, e = INDEX_TEXT[lang], html.escape
    records = []
    for path in sorted((root / RUNS_DIR).glob("*/run.json")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # a damaged record must not hide the other runs
    records.sort(key=lambda r: r.get("as_of", ""), reverse=True)
    kpi_cols = [kpi_registry.get(k).name(lang) for k in HEADLINE_KPIS]
    head = "".join(f"<th>{e(h)}</th>" for h in (tx["as_of"], tx["status"], tx["window"], *kpi_cols, tx["report"]))
    body = []
    for r in records:
        as_of = str(r.get("as_of", ""))
        status = tx["alerts"].format(n=r["alerts"]) if r.get("alerts") else tx["ok"]
        by_kpi = {h["kpi"]: h for h in r.get("headline", [])}
        first = next(iter(by_kpi.values()), {})
        cells = []
        for k in HEADLINE_KPIS:
            h = by_kpi.get(k)
            if not h or h.get("est_b") is None:
                cells.append("<td>–</td>")
                continue
            d = kpi_registry.get(k).digits
            colour = VERDICT_COLOURS.get(h["verdict"], "#555555")
            change = "–" if h.get("diff") is None else f"{h['diff']:+.{d}f}"
            ci = "" if h.get("ci_low") is None else f", {h['ci_low']:.{d}f}…{h['ci_high']:.{d}f}"
            verdict = text(lang, f"verdict.{h['verdict']}") if h.get("verdict") in VERDICT_COLOURS else str(h.get("verdict", ""))
            cells.append(f"<td><b>{h['est_b']:.{d}f}</b> ({e(change + ci)})<br>"
                         f'<span style="color:{colour}">{e(verdict)}</span></td>')
        window = f"{period(first.get('label_a', ''), lang)} → {period(first.get('label_b', ''), lang)}" if first else ""
        href = e(f"runs/{as_of}/report.html", quote=True)
        body.append(f"<tr><td>{e(as_of)}</td><td>{e(status)}</td><td>{e(window)}</td>{''.join(cells)}"
                    f'<td><a href="{href}">{e(tx["report"])}</a></td></tr>')
    table = (f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table><p class="note">{e(tx["note"])}</p>'
             if body else f"<p>{e(tx['none'])}</p>")
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(params.report.title)} — {e(tx["title"])}</title>
<style>
body {{ font-family: "Hiragino Sans", "Noto Sans CJK JP", "Yu Gothic", Meiryo, "KoeJP", system-ui, sans-serif;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }}
th {{ background: #eef2f5; }}
.note {{ color: #555; font-size: .9em; }}
@media print {{ a {{ color: inherit; text-decoration: none; }} tr {{ break-inside: avoid; }} }}
</style></head>
<body><h1>{e(params.report.title)} — {e(tx["title"])}</h1>
{table}
<p class="note">{e(tx["generated"])}: {generated}</p>
</body></html>
"""
    return page.replace("</head>", embedded_font_css(page) + "\n</head>", 1)


# --- the run ---------------------------------------------------------------------------------------------------------

def run(root: Path, as_of: date, wait_s: float = 0.0) -> RunResult:
    """Run the pipeline for ``as_of`` and publish it; raises RunLocked or RunFailed, publishing nothing then."""
    root = root.resolve()
    as_of_s = as_of.isoformat()
    params = load(root / "params.yaml")  # fail fast, before taking the lock, on an invalid params.yaml
    with run_lock(root, as_of_s, wait_s):
        clear_staging(root)
        started = datetime.now(timezone.utc)
        log.info("run %s: preparing the run workspace %s", as_of_s, root / STATE_DIR / "workspace")
        ws = prepare_workspace(root, params, as_of)
        ws_params = load(ws / "params.yaml")
        (root / "reports").mkdir(parents=True, exist_ok=True)
        stage_dir = staging_dir(root, as_of_s)
        try:
            log_path = stage_dir / "run.log"
            t0 = time.time()
            code, output = repro(ws, log_path)
            if code != 0:
                stage, cause = _failure(output)
                kept = _keep_failure(root, ws, as_of_s, log_path, t0)
                log.error("run %s FAILED in stage %s: %s", as_of_s, stage or "?", cause)
                raise RunFailed(stage, cause, kept)
            ran = re.findall(r"Running stage '([\w-]+)'", output)
            alerts = read_alerts(ws / ws_params.kpis.out_alerts)
            import pipelines

            record = {
                "as_of": as_of_s, "status": "ok_with_alerts" if alerts else "ok", "alerts": len(alerts),
                "exit_code": EXIT_ALERTS if alerts else EXIT_OK,
                "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "finished": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "stages_run": ran, "koe_version": pipelines.__version__,
                "params_sha256": hashlib.sha256((ws / "params.yaml").read_bytes()).hexdigest(),
                "headline": headline(ws, ws_params),
            }
            assemble(ws, ws_params, stage_dir, record)
            final = publish(root, stage_dir, as_of_s)
            kio.write_text(render_index(root, params), root / INDEX)
            shutil.rmtree(root / FAILED_DIR / as_of_s, ignore_errors=True)  # a good run supersedes the diagnosis
            log.info("run %s published to %s (%s; stages run: %s)", as_of_s, final.relative_to(root),
                     f"{len(alerts)} alert(s)" if alerts else "no alerts", ", ".join(ran) or "none, all up to date")
            return RunResult(as_of_s, record["exit_code"], final, len(alerts), ran)
        finally:
            if stage_dir.exists():
                shutil.rmtree(stage_dir, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def staging_dir(root: Path, as_of: str) -> Path:
    """The hidden folder a run is assembled in, renamed into reports/runs/ on success."""
    (root / "reports").mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".staging-{as_of}-", dir=root / "reports"))
    os.chmod(path, 0o777 & ~_umask())  # mkdtemp makes 0700; published runs are as readable as the rest of reports/
    return path


def clear_staging(root: Path) -> list[Path]:
    """Folders a killed run left under reports/ (a half-assembled run, a replaced run not yet deleted); called
    under the lock, so no live run owns them."""
    litter = [p for pattern in (".staging-*", ".replaced-*") for p in (root / "reports").glob(pattern) if p.is_dir()]
    for p in litter:
        shutil.rmtree(p, ignore_errors=True)
    if litter:
        log.info("removed what an interrupted run left: %s", ", ".join(p.name for p in litter))
    return litter


def _keep_failure(root: Path, ws: Path, as_of: str, log_path: Path, since: float) -> list[Path]:
    """The log and this run's failed notebooks go to reports/failed/<as-of>/, away from the published runs."""
    dest = root / FAILED_DIR / as_of
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    kept = [Path(shutil.copy2(log_path, dest / "run.log"))]
    for nb in sorted((ws / "reports/notebooks").glob("*.failed.ipynb")):
        if nb.stat().st_mtime >= since - 1:
            kept.append(Path(shutil.copy2(nb, dest / nb.name)))
    return [p.relative_to(root) for p in kept]
