"""Clean-stage benchmark: demo verbatims from raw files to Parquet, koe vs a row-by-row pandas version.

    PYTHONPATH=. python bench/bench_clean.py                 # 1,000,000 responses (heavy: ~1 min, ~3 GB)
    PYTHONPATH=. python bench/bench_clean.py --n 100000      # a quick look

Prints wall time and peak memory (max RSS) of each run and the ratio. Each run happens in its own process,
so its peak memory is its own (the generator's is not counted). Not a test: machine load changes the
figures, so `uptime` is printed with them.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import unicodedata
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent


def survey_params(root: Path):
    import yaml

    from pipelines.schema import CleanParams

    p = CleanParams.model_validate(yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["clean"])
    survey = p.surveys[0].model_copy(update={"path": "raw/survey_*.csv"})
    return p.model_copy(update={"surveys": [survey], "tickets": None, "out_feedback": "out/feedback.parquet",
                                "out_quarantine": "out/quarantine.parquet", "out_tickets": "out/tickets.parquet",
                                "metrics_path": "out/clean.json"})


def run_koe(root: Path) -> dict:
    from pipelines import clean
    from pipelines.io import write_result

    params = survey_params(root)
    start = time.perf_counter()
    result = clean.run(params, root)
    write_result(result, params, root)
    wall = time.perf_counter() - start
    m = result.metrics
    return {"wall_s": wall, "rows_in": m["rows_in"], "verbatims": m["verbatims"], "verbatims_ok": m["verbatims_ok"],
            "rows_quarantined": m["rows_quarantined"], "parsers": sorted({f["parser"] for f in m["files"]})}


# ---------------------------------------------------------------- the same rules, row by row in pandas

def run_pandas(root: Path) -> dict:
    import pandas as pd

    from pipelines import pii, readers, textnorm

    params = survey_params(root)
    src = params.surveys[0]
    cols = src.columns
    tz = ZoneInfo(src.timezone)
    non_answers = {s.lower().rstrip("。、.!！?？ ") for s in params.non_answers}
    patterns = [(kind, re.compile(rx)) for kind, rx in pii.REDACTIONS]
    tag, invisible, space = re.compile(textnorm._TAG), re.compile(textnorm._INVISIBLE), re.compile(r"\s+")
    kana = re.compile(r"[\u3040-\u30ff]")
    lid = textnorm._lid_model()

    def normalise(text: str) -> str:
        text = unicodedata.normalize("NFKC", text or "")
        text = unicodedata.normalize("NFKC", html.unescape(html.unescape(text)))
        return space.sub(" ", invisible.sub("", tag.sub(" ", text))).strip()

    def redact(text: str) -> tuple[str, str]:
        kinds = []
        for kind, rx in patterns:
            if kind == "CARD":
                new = rx.sub(lambda m: "[CARD]" if pii._luhn_ok(m.group()) else m.group(), text)
            else:
                new = rx.sub(f"[{kind}]", text)
            if new != text:
                kinds.append(kind)
            text = new
        return text, ",".join(kinds)

    def language(text: str) -> str:
        if not text:
            return ""
        if kana.search(text):
            return "ja"
        if not any(c.isalpha() for c in text):
            return "other"
        code = lid.predict(text[: textnorm.LID_MAX_CHARS], k=1)[0][0].removeprefix("__label__")
        return code if code in ("ja", "en") else "other"

    def status(text: str) -> str:
        if not text:
            return "empty"
        key = re.sub(r"[。、.!！?？\s]+$", "", text.lower()).strip()
        return "non_answer" if not key or key in non_answers else "ok"

    def score(value: str, lo: int, hi: int):
        value = unicodedata.normalize("NFKC", value).strip()
        if not value:
            return None, None
        try:
            number = float(value)
        except ValueError:
            return None, "not_a_number"
        if number != round(number):
            return None, "not_a_number"
        return (int(number), None) if lo <= number <= hi else (None, "out_of_range")

    def timestamp(value: str):
        try:
            local = datetime.strptime(value.strip(), src.timestamp_format).replace(tzinfo=tz)
        except ValueError:
            return None
        return local.astimezone(ZoneInfo("UTC"))

    start = time.perf_counter()
    frames = []
    for path in sorted((root / "raw").glob("survey_*.csv")):
        text, _ = readers.decode(path.read_bytes(), str(path))
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, on_bad_lines="skip", skip_blank_lines=True)
        df["file"] = path.name
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df = df[~df.duplicated(keep="first")]
    df = df[df[cols.response_id].str.strip() != ""]
    df["ts_utc"] = df[cols.timestamp].apply(timestamp)
    for name, (lo, hi) in {"nps": (0, 10), "csat": (1, 5)}.items():
        parsed = df[getattr(cols, name)].apply(lambda v, lo=lo, hi=hi: score(v, lo, hi))
        df[name] = parsed.map(lambda x: x[0])
        df[f"{name}_reason"] = parsed.map(lambda x: x[1])
    ok = df["ts_utc"].notna() & df["nps_reason"].isna() & df["csat_reason"].isna()
    quarantine, df = df[~ok], df[ok].copy()
    df["date_local"] = df["ts_utc"].apply(lambda t: t.astimezone(tz).date())
    text_col = next(iter(src.text_columns.values()))
    df["text"] = df[text_col].apply(normalise)
    red = df["text"].apply(redact)
    df["text"] = red.map(lambda x: x[0])
    df["redactions"] = red.map(lambda x: x[1])
    df["lang"] = df["text"].apply(language)
    df["text_status"] = df["text"].apply(status)
    out = df[[cols.response_id, "file", "ts_utc", "date_local", "nps", "csat", "text", "lang", "text_status", "redactions"]]
    (root / "out_pandas").mkdir(exist_ok=True)
    out.to_parquet(root / "out_pandas" / "feedback.parquet")
    quarantine[[cols.response_id, "file"]].to_parquet(root / "out_pandas" / "quarantine.parquet")
    wall = time.perf_counter() - start
    return {"wall_s": wall, "verbatims": len(out), "verbatims_ok": int((out["text_status"] == "ok").sum())}


# ---------------------------------------------------------------- driver

def child(kind: str, root: Path) -> None:
    result = run_koe(root) if kind == "koe" else run_pandas(root)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux
    print(json.dumps(result))


def spawn(kind: str, root: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, __file__, "--child", kind, "--root", str(root)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="survey responses to generate")
    ap.add_argument("--no-pandas", action="store_true", help="skip the pandas comparison")
    ap.add_argument("--child", choices=["koe", "pandas"], help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.root)
        return

    from pipelines import demo

    with tempfile.TemporaryDirectory(prefix="koe-bench-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        demo.generate(demo.DemoParams(n_responses=args.n, n_tickets=100, raw_dir="raw", truth_path="truth.json"), root)
        size = sum(p.stat().st_size for p in (root / "raw").glob("survey_*.csv"))
        print(f"generated {args.n:,} responses ({size / 1e6:.0f} MB of CSV) in {time.perf_counter() - t:.1f} s")
        print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
        koe = spawn("koe", root)
        print(f"koe     {koe['wall_s']:6.2f} s  peak {koe['peak_rss_gb']:.2f} GB  "
              f"rows in {koe['rows_in']:,}, verbatims {koe['verbatims']:,} ({koe['verbatims_ok']:,} usable), "
              f"quarantined {koe['rows_quarantined']:,}; parser {', '.join(koe['parsers'])}")
        if not args.no_pandas:
            pdr = spawn("pandas", root)
            print(f"pandas  {pdr['wall_s']:6.2f} s  peak {pdr['peak_rss_gb']:.2f} GB  "
                  f"verbatims {pdr['verbatims']:,} ({pdr['verbatims_ok']:,} usable)")
            print(f"ratio   koe is {pdr['wall_s'] / koe['wall_s']:.1f}x faster than row-by-row pandas")
        print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
