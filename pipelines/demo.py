"""Demo data: writes the raw feedback exports of the fictional smart-home maker "Company A" and the truth file.

Company A's new products sold poorly and customers complained about usability until a
customer-centric programme (simpler UI, 24-hour support) launched on 2026-05-01. This module
writes the raw files such a company would hand over — two survey exports in different
encodings and a Zendesk-style ticket dump — with the dirt real exports have, plus a truth
file that only tests read.

Planted effects (all recorded in the truth file):

* app and web channels: NPS rises by about 30 points after the programme and usability
  complaints fall sharply; store (the control) and phone keep the same score and theme mix.
* tickets: median first response drops from about 20 h to about 3 h; resolution drops modestly.
* login_failure ("can't log in since the latest app update") appears only in 2026-09/10.

Everything is driven by one ``numpy.random.default_rng(seed)`` and vectorised, so the same
params give byte-identical files and a million responses take seconds. The sentences verbatims are composed of
are package data, demo_data/phrases.json. The parts: ``demo_world`` (calendar, vocabulary, distributions),
``demo_text`` (verbatims), ``demo_records`` (responses and tickets as frames); this module writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipelines.demo_records import _n_customers, _round, _survey, _tickets
from pipelines.demo_world import CHANNELS, EXPORT_AT, LOGIN_START, NON_ANSWERS, PROGRAMME_DATE, SCRIPT_VERBATIMS, THEMES
from pipelines.io import write_bytes, write_json
from pipelines.schema import DemoParams


SURVEY_FILES = ("survey_export_1.csv", "survey_export_2.csv")
TICKETS_FILE = "tickets.jsonl"
HEADER = "回答ID,顧客ID,回答日時,推奨度,満足度,ご意見・ご要望,ペルソナ,チャネル,製品ライン,ジャーニー"


# --------------------------------------------------------------------------- writing

def _csv_lines(frame: pl.DataFrame) -> np.ndarray:
    """One RFC-4180 record per row: quote only fields holding a comma, quote or line break."""
    fields = [
        pl.when(pl.col(c).str.contains('[",\r\n]'))
        .then(pl.lit('"') + pl.col(c).str.replace_all('"', '""', literal=True) + pl.lit('"'))
        .otherwise(pl.col(c))
        for c in frame.columns
    ]
    return frame.select(pl.concat_str(fields, separator=",").alias("line"))["line"].to_numpy()


def _export_body(
    rng: np.random.Generator, lines: np.ndarray, duplicates: np.ndarray, terminator: str
) -> tuple[str, int]:
    """Join records, repeating each duplicate a few rows later and sprinkling blank lines.

    Returns the text (header included) and the number of blank lines inserted.
    """
    n = len(lines)
    # A repeated record lands shortly after the original, as when an export pages twice.
    dup_keys = np.minimum(duplicates + rng.integers(1, 30, len(duplicates)), n - 1) + 0.5
    keys = np.concatenate([np.arange(n, dtype=float), dup_keys])
    records = np.concatenate([lines, lines[duplicates]])[np.argsort(keys, kind="stable")]
    n_blank = max(1, round(0.0005 * n))
    records = np.insert(records, np.sort(rng.integers(1, len(records) + 1, n_blank)), "")
    return terminator.join([HEADER, *records.tolist()]) + terminator, n_blank


def _nps(scores: np.ndarray) -> float | None:
    """Net promoter score in points; None for an empty segment (JSON has no NaN)."""
    return _round(100 * (np.mean(scores >= 9) - np.mean(scores <= 6))) if len(scores) else None


def generate(params: DemoParams, root: str | Path = ".") -> dict:
    """Write the demo exports under ``root/raw_dir`` and the truth file; return a summary.

    The summary holds the absolute paths written and the data-row count of every file
    (records, duplicates included; header and blank lines excluded).
    """
    rng = np.random.default_rng(params.seed)
    root = Path(root)
    raw = root / params.raw_dir
    survey = _survey(rng, params.n_responses)
    tickets = _tickets(rng, params.n_tickets, _n_customers(params.n_responses))

    lines = _csv_lines(survey["frame"])
    rows: dict[str, int] = {}
    blank_lines = 0
    paths: dict[str, str] = {}
    for f, (name, terminator) in enumerate(zip(SURVEY_FILES, ("\n", "\r\n"))):
        idx = np.flatnonzero(survey["file"] == f)
        local_dups = np.flatnonzero(np.isin(idx, survey["duplicates"]))
        body, n_blank = _export_body(rng, lines[idx], local_dups, terminator)
        # File 1 is "CSV UTF-8" with a BOM; file 2 is what Japanese Excel saves by default.
        data = ("\ufeff" + body).encode("utf-8") if f == 0 else body.encode("cp932", errors="replace")
        paths[name] = str(write_bytes(data, raw / name))
        rows[name] = len(idx) + len(local_dups)
        blank_lines += n_blank
    ndjson = tickets["frame"].write_ndjson().encode("utf-8")
    paths[TICKETS_FILE] = str(write_bytes(ndjson, raw / TICKETS_FILE))
    rows[TICKETS_FILE] = params.n_tickets

    frame, theme = survey["frame"], survey["theme"]
    response_ids = frame["回答ID"].to_list()
    before = survey["file"] == 0
    valid = survey["nps_valid"]
    nps_expected = {
        channel: {
            "before": _nps(survey["nps"][valid & before & (survey["channel"] == c)]),
            "after": _nps(survey["nps"][valid & ~before & (survey["channel"] == c)]),
        }
        for c, channel in enumerate(CHANNELS)
    }
    truth = {
        "seed": params.seed,
        "programme_date": PROGRAMME_DATE.isoformat(),
        "login_theme_start": LOGIN_START.isoformat(),
        "tickets_exported_at": EXPORT_AT.isoformat() + "+09:00",
        "improved_segments": [["channel", "app"], ["channel", "web"]],
        "control_segments": [["channel", "store"]],
        "themes": list(THEMES),
        "non_answer_strings": list(NON_ANSWERS),
        "theme_by_response": {rid: THEMES[t] for rid, t in zip(response_ids, theme.tolist()) if t >= 0},
        "theme_by_ticket": tickets["theme_by_ticket"],
        "pii_strings": survey["pii"] + tickets["pii"],
        "script_verbatims": list(SCRIPT_VERBATIMS),
        "counts": {
            "duplicates": len(survey["duplicates"]),
            **survey["counts"],
            "pii_tickets": len(tickets["pii"]),
            "blank_lines": blank_lines,
            "unsolved_tickets": tickets["unsolved"],
            "rows": rows,
        },
        "expected": {
            # NPS over unique responses whose 推奨度 is an integer 0–10, by file period.
            "nps": nps_expected,
            "first_response_median_h": tickets["first_response_median_h"],
            "resolution_median_h": tickets["resolution_median_h"],
        },
    }
    truth_path = write_json(truth, root / params.truth_path, ascii=False)  # read by the tests, not by DVC
    return {"files": paths, "truth": str(truth_path), "rows": rows}
