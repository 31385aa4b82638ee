"""koe's benchmark suite: one table of wall time, peak memory and machine load per case (a benchmark, not a test).

    PYTHONPATH=. python bench/run.py                   # the light cases: small export end to end, no-op repro
    PYTHONPATH=. python bench/run.py --heavy           # + 100k embed+topics, 1M clean, 1M end to end (long, GBs)
    PYTHONPATH=. python bench/run.py --cases small --n-small 624

Cases:
  small     `koe demo-data` (N responses) then `dvc repro` from scratch in a fresh workspace; per-stage start-up
            (wall outside the notebook's cells, from the runner's "stage X: … (start-up …)" log lines)
  init      a survey-only export of N responses (the demo's survey files, no tickets) in a fresh project: the wall
            of `koe init FILES` then `dvc repro` — what a researcher waits for on their own first export
  noop      `dvc repro` again on the same workspace (nothing changed)
  topics100k  bench/bench_topics.py at 100,000 responses: embed + topics cold, and a re-clustering re-run
  clean1m   bench/bench_clean.py at 1,000,000 responses (koe only)
  et1m      bench/bench_topics.py at 1,000,000 responses, embed + topics cold, engine local (no re-run)
  et1m_dask the same with engine dask on a LocalCluster of --dask-workers processes on this machine: its ratio to
            et1m is Dask's overhead (1 worker: the same threads as local, so bit-identical results too)
  e2e1m     `dvc repro` from scratch on 1,000,000 responses
Each case runs in its own child process, so "peak RSS" is the largest process of that case alone (the stage
processes and kernels included). The load average is printed beside each figure: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LIGHT = ("small", "init", "noop")
HEAVY = ("topics100k", "clean1m", "et1m", "et1m_dask", "e2e1m")
STAGE_LINE = re.compile(r"koe: stage (\w+): ([\d.]+) s \(start-up ([\d.]+) s, notebook cells ([\d.]+) s\)")


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def _load() -> float:
    return os.getloadavg()[0]


def workspace(n: int, folder: Path) -> Path:
    """A fresh project folder with the demo export of ``n`` responses (what the end-to-end tests build)."""
    for name in ("notebooks", "pipelines"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "explore"))
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["demo"].update(n_responses=n, n_tickets=max(n // 4, 50))
    (folder / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    _run(["dvc", "init", "--no-scm", "-q"], folder)
    _run(["dvc", "config", "core.analytics", "false"], folder)
    _run(["koe", "demo-data"], folder)
    return folder


def stage_times(log: str) -> dict[str, dict[str, float]]:
    return {m[1]: {"total_s": float(m[2]), "startup_s": float(m[3]), "cells_s": float(m[4])} for m in STAGE_LINE.finditer(log)}


def init_repro(n: int, folder: Path) -> dict:
    """Survey-only export of ``n`` responses → `koe init` → `dvc repro`, timed together."""
    ws = workspace(n, folder)
    (ws / "data/raw/tickets.jsonl").unlink()
    surveys = sorted(str(p.relative_to(ws)) for p in (ws / "data/raw").glob("survey_export_*.csv"))
    load0 = _load()
    init_s, _ = _run(["koe", "init", *surveys], ws)
    wall, log = _run(["dvc", "repro"], ws)
    return {"wall_s": init_s + wall, "init_s": init_s, "load": (load0, _load()), "stages": stage_times(log)}


def repro(n: int, folder: Path, again: bool) -> dict:
    ws = workspace(n, folder)
    load0 = _load()
    wall, log = _run(["dvc", "repro"], ws)
    out = {"wall_s": wall, "load": (load0, _load()), "stages": stage_times(log)}
    if again:
        load0 = _load()
        wall, log = _run(["dvc", "repro"], ws)
        out = {"wall_s": wall, "load": (load0, _load()), "skipped": "didn't change" in log}
    return out


def child(case: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"koe-bench-{case}-") as tmp:
        tmp = Path(tmp)
        if case == "small":
            out = repro(args.n_small, tmp, again=False)
        elif case == "init":
            out = init_repro(args.n_small, tmp)
        elif case == "noop":
            out = repro(args.n_small, tmp, again=True)
        elif case == "e2e1m":
            out = repro(1_000_000, tmp, again=False)
        elif case == "topics100k":
            load0 = _load()
            wall, log = _run([sys.executable, str(ROOT / "bench/bench_topics.py"), "--sizes", "100000"], ROOT)
            detail = json.loads([line for line in log.splitlines() if line.startswith("{")][-1])
            out = {"wall_s": detail["embed_s"] + detail["topics_s"], "load": (load0, _load()), "detail": detail}
        elif case in ("et1m", "et1m_dask"):
            load0 = _load()
            engine = ["--engine", "dask", "--n-workers", str(args.dask_workers)] if case == "et1m_dask" else []
            wall, log = _run([sys.executable, str(ROOT / "bench/bench_topics.py"), "--sizes", str(args.n_et),
                              "--no-rerun", *engine], ROOT)
            detail = json.loads([line for line in log.splitlines() if line.startswith("{")][-1])
            out = {"wall_s": detail["embed_s"] + detail["topics_s"], "load": (load0, _load()), "detail": detail}
        elif case == "clean1m":
            load0 = _load()
            wall, log = _run([sys.executable, str(ROOT / "bench/bench_clean.py"), "--n", "1000000", "--no-pandas"], ROOT)
            m = re.search(r"^koe\s+([\d.]+) s", log, re.M)  # bench_clean's own line: the clean run alone
            out = {"wall_s": float(m[1]) if m else wall, "load": (load0, _load())}
        else:
            raise ValueError(f"unknown case {case!r}; cases are {', '.join(LIGHT + HEAVY)}")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return out


def note(case: str, r: dict, seen: dict[str, float]) -> str:
    if "stages" in r and r["stages"]:
        st = r["stages"]
        worst = max(st, key=lambda s: st[s]["startup_s"])
        init = f"koe init {r['init_s']:.1f} s; " if "init_s" in r else ""
        return (init + f"start-up max {st[worst]['startup_s']:.1f} s ({worst}), sum {sum(s['startup_s'] for s in st.values()):.1f} s; "
                + ", ".join(f"{k} {v['total_s']:.0f}" for k, v in st.items()))
    if case == "noop":
        return "all stages skipped" if r.get("skipped") else "SOMETHING RE-RAN"
    if case in ("et1m", "et1m_dask"):
        d = r["detail"]
        # The local figure: et1m, or topics100k's cold embed + topics when et1m runs at 100,000 responses.
        local = seen.get("et1m") or (seen.get("topics100k") if d["responses"] == 100_000 else None)
        ratio = f", {r['wall_s'] / local:.2f}x local" if case == "et1m_dask" and local else ""
        return (f"{d['engine']}: embed {d['embed_s']} s ({d['embed_texts_per_s']}/s of {d['unique_texts']:,} texts), "
                f"topics {d['topics_s']} s (fit {d['fitted_verbatims']:,}, {d['verbatims']:,} assigned){ratio}")
    if case == "topics100k":
        d = r["detail"]
        return f"embed {d['embed_s']} s ({d['embed_texts_per_s']}/s), topics {d['topics_s']} s, re-run {d['rerun_share_of_cold']:.0%}"
    return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", choices=LIGHT + HEAVY, help="default: the light cases (+ heavy with --heavy)")
    ap.add_argument("--heavy", action="store_true", help="also the 100k / 1M cases (long; several GB)")
    ap.add_argument("--n-small", type=int, default=1000, help="responses in the small export (default 1,000)")
    ap.add_argument("--n-et", type=int, default=1_000_000, help="responses of the et1m cases (default 1,000,000)")
    ap.add_argument("--dask-workers", type=int, default=1, help="et1m_dask: LocalCluster workers (default 1)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    cases = args.cases or (LIGHT + HEAVY if args.heavy else LIGHT)
    rows = []
    seen: dict[str, float] = {}
    for case in cases:
        cmd = [sys.executable, __file__, "--child", case, "--n-small", str(args.n_small), "--n-et", str(args.n_et),
               "--dask-workers", str(args.dask_workers)]
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append((case, "failed", "", "", proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""))
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append((case, f"{r['wall_s']:.1f}", f"{r['peak_rss_mb']:.0f}", "{:.1f}→{:.1f}".format(*r["load"]), note(case, r, seen)))
        seen[case] = r["wall_s"]
    header = ("case", "wall s", "peak RSS MB", "load 1-min", "notes")
    widths = [max(len(str(x[i])) for x in rows + [header]) for i in range(4)]
    print(f"# koe bench · {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} cores · small = {args.n_small:,} responses"
          + (f" · et1m = {args.n_et:,} responses" if any(c.startswith("et1m") for c in cases) else ""))
    for row in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])


if __name__ == "__main__":
    main()
