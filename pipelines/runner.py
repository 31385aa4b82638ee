"""Runs one stage's notebook through papermill with its params.yaml section (what dvc.yaml calls)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pipelines import stages
from pipelines.lightimport import without
from pipelines.params import ParamsError, load, section

log = logging.getLogger("koe")

KERNEL = "koe"  # registered by `make setup` with the venv's absolute python path (cron has no PATH)


def import_papermill():
    """papermill without the import-time work of extras it never uses (measured: halves its import)."""
    with without():
        import papermill
        import papermill.execute  # noqa: F401  (the engines, nbformat and nbclient)
    return papermill


class StageFailed(RuntimeError):
    def __init__(self, stage: str, notebook: Path, cause: str):
        super().__init__(f"stage {stage!r} failed: {cause} (executed notebook kept at {notebook})")
        self.stage, self.notebook = stage, notebook


def check_notebook_params(stage: str, root: Path, values: dict) -> None:
    """The notebook's parameters and the params.yaml section must be the same names (papermill only warns)."""
    papermill = import_papermill()

    notebook = stages.get(stage).notebook
    declared = set(papermill.inspect_notebook(str(root / notebook)))
    unknown, missing = sorted(set(values) - declared), sorted(declared - set(values))
    if unknown or missing:
        raise ParamsError(
            f"params.yaml section {stage!r} and {notebook} disagree: "
            f"not in the notebook: {unknown or '-'}; not in params.yaml: {missing or '-'}"
        )


def process_seconds() -> float:
    """Wall seconds since this process started (interpreter start included)."""
    import time

    import psutil

    return time.time() - psutil.Process().create_time()


def cell_seconds(executed: Path) -> float:
    """Sum of the executed notebook's cell run times (papermill records each cell's duration)."""
    import json

    cells = json.loads(executed.read_text(encoding="utf-8"))["cells"]
    return sum(c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0 for c in cells)


def progress_mode(stream) -> str:
    """``tty`` (a line every couple of seconds) when a person watches, ``log`` (a line every ~10 s) for cron logs."""
    try:
        return "tty" if stream.isatty() else "log"
    except (AttributeError, ValueError):
        return "log"


def semantic_check(stage: str | None, params, root: Path) -> None:
    """Params that name things the data lack (segments, KPI keys, dates and windows): a ParamsError naming each key,
    value and what would be valid. ``stage`` None: every check (`koe check`)."""
    from pipelines import semantic

    found = []
    if stage is None or stage in semantic.PARAM_CHECK_STAGES:
        found += [p for p in semantic.problems(params) if stage is None or p.startswith(f"{stage}.")]
    if stage is None or stage in semantic.DATA_CHECK_STAGES:
        found += semantic.data_problems(params, root)
    if found:
        raise ParamsError(f"{root / 'params.yaml'}: " + "; ".join(found))


def clear_litter(stage: str, params, root: Path, out_dir: str = stages.EXECUTED_DIR) -> list[Path]:
    """What a killed run of ``stage`` left: its half-executed notebook and the temporary siblings of its outputs
    (atomic writes build ``.name.*.tmp`` files and ``.name.*`` folders next to the output). Removed at the next start."""
    import shutil

    s = stages.get(stage)
    found = [root / out_dir / f".{Path(s.notebook).stem}.running.ipynb"]
    for rel in s.paths(params, s.outputs).values():
        out = root / rel
        if out.parent.is_dir():
            found += [p for p in out.parent.glob(f".{out.name}.*")]
    removed = []
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(p)
    if removed:
        log.info("stage %s: removed what an interrupted run left: %s", stage, ", ".join(str(p.relative_to(root)) for p in removed))
    return removed


def run_stage(stage: str, root: str | Path = ".", out_dir: str = stages.EXECUTED_DIR) -> Path:
    """Execute the stage notebook; the executed copy replaces the previous one only on success."""
    papermill = import_papermill()
    from papermill.exceptions import PapermillExecutionError

    root = Path(root).resolve()
    if stage not in stages.STAGES:
        raise ParamsError(f"unknown stage {stage!r}; stages are {', '.join(stages.STAGES)}")
    params = load(root / "params.yaml")
    values = section(params, stage)
    check_notebook_params(stage, root, values)
    semantic_check(stage, params, root)
    clear_litter(stage, params, root, out_dir)
    notebook = root / stages.STAGES[stage].notebook
    target_dir = root / out_dir
    target_dir.mkdir(parents=True, exist_ok=True)
    running = target_dir / f".{notebook.stem}.running.ipynb"
    failed = target_dir / f"{notebook.stem}.failed.ipynb"
    log.info("stage %s: executing %s", stage, notebook.relative_to(root))
    # The kernel inherits these: KOE_ROOT locates the project, KOE_PROGRESS makes long loops print log lines
    # (pipelines.progress) that papermill forwards live from the kernel's stderr to ours, so `dvc repro` shows them.
    env = {"KOE_ROOT": str(root), "KOE_PROGRESS": progress_mode(sys.stderr)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        papermill.execute_notebook(
            str(notebook), str(running), parameters=values, cwd=str(notebook.parent), kernel_name=KERNEL,
            progress_bar=False, log_output=False, report_mode=False, stderr_file=sys.stderr,
            shutdown_kernel="immediate",  # every output is written when the last cell ends: no graceful wait
        )
    except PapermillExecutionError as e:
        os.replace(running, failed)
        raise StageFailed(stage, failed, f"{e.ename}: {e.evalue}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    executed = target_dir / notebook.name
    os.replace(running, executed)
    failed.unlink(missing_ok=True)
    total, cells = process_seconds(), cell_seconds(executed)
    # Start-up = everything but the notebook's cells: this process, papermill, the kernel's start (bench/ reads it).
    log.info("stage %s: %.1f s (start-up %.1f s, notebook cells %.1f s)", stage, total, total - cells, cells)
    if stage == "report":  # the page is made from the executed notebook, so after it
        from pipelines import io as kio, report

        kio.write_result(report.run(params.report, root, notebook=executed), params.report, root)
        log.info("report written to %s", params.report.out_html)
    return executed
