"""Clean stage: raw exports → one typed feedback table, one tickets table, and a quarantine.

Reads CSV/TSV (UTF-8, BOM, CP932), .xlsx, Parquet and JSON Lines, plain or in a platform's layout
(Qualtrics, SurveyMonkey presets; Zendesk-style tickets). Every data row read is either kept or
quarantined with a reason code; the counts are checked (rows in = rows kept + rows quarantined, per
file) and written as metrics. Personal data is redacted here, before any text leaves the stage.

The parts live in modules of their own: ``readers`` (decoding and file formats), ``parsing`` (timestamps and
scores), ``textnorm`` (normalisation, language, non-answers), ``pii`` (personal data) and ``quarantine``.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from pipelines.parsing import SCALES, _parse_score, parse_timestamp_series, plausible_bounds, scale_range
from pipelines.pii import redact, redact_fields
from pipelines.quarantine import FileReport, _mapped_fields, _quarantine_frame, check_quarantine_share
from pipelines.readers import InputError, RawTable, column_names, decode, read_source_file
from pipelines.schema import CleanParams, SurveySource, TicketSource
from pipelines.tables import FEEDBACK_SCHEMA, SEGMENT_COLUMNS, TICKETS_SCHEMA
from pipelines.textnorm import _lid_model, _nfkc_unstable, detect_language, nfkc_series, normalise_series, normalise_text, text_status_series


# ---------------------------------------------------------------- surveys

def clean_survey(raw: RawTable, source: SurveySource, file: str, params: CleanParams) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One survey file's rows → (feedback rows, quarantined rows). Pure: no I/O."""
    cols = source.columns
    names = column_names(raw.headers, source.preset)
    mapping = {k: v for k, v in cols.model_dump().items() if v is not None}
    needed = list(dict.fromkeys(list(mapping.values()) + list(source.segments.values()) + list(source.text_columns.values())))
    missing = [c for c in needed if c not in names]
    if missing:
        raise InputError(f"{file}: missing column(s) {missing}; header has {names}")
    if len(set(needed)) and any(names.count(c) > 1 for c in needed):
        dup = [c for c in needed if names.count(c) > 1]
        raise InputError(f"{file}: column(s) {dup} appear more than once in the header; map them unambiguously")
    # Raw columns carry a prefix: an export header equal to a koe field name ("nps") must not be overwritten
    # by the parsed value before the quarantine shows what was read.
    def h(header: str) -> str:
        return RAW_PREFIX + header

    frame = raw.frame.select("row", *[pl.col(f"c{names.index(c)}").alias(h(c)) for c in needed])

    scores = {k: _parse_score(frame[h(getattr(cols, k))], *scale_range(source, k)) if getattr(cols, k)
              else (pl.lit(None, pl.Int8), pl.lit(None, pl.String)) for k in SCALES}
    fmt = source.resolved("timestamp_format", file)
    rid = pl.col(h(cols.response_id)).str.strip_chars()
    ts_utc = parse_timestamp_series(frame[h(cols.timestamp)], fmt, source.timezone)
    lo, hi = plausible_bounds(ts_utc, params.plausible_margin_days)
    frame = frame.with_columns(
        rid.alias("response_id"),
        ts_utc.alias("ts_utc"),
        *[v.alias(k) for k, (v, _) in scores.items()],
        *[r.alias(f"_{k}_reason") for k, (_, r) in scores.items()],
    )
    # Exact (or normalised) repeats of a response are duplicates; the same id with other content is a conflict.
    # Content is only built for ids seen twice: the common case costs one hash pass.
    dup_idx = frame.select(pl.col("response_id").is_duplicated()).to_series().arg_true()
    content = pl.concat_str([pl.col(h(c)).fill_null("") for c in needed], separator="\x00")
    normalised = normalise_series(frame.gather(dup_idx).select(content).to_series()) if len(dup_idx) else None
    frame = frame.with_columns(
        pl.repeat(None, len(frame), dtype=pl.String, eager=True).scatter(dup_idx, normalised).alias("_content")
        if normalised is not None else pl.lit(None, pl.String).alias("_content")
    )
    # Rows are in file order, so "first seen" is the smallest row number.
    first_of_id = pl.col("response_id").is_first_distinct()
    first_of_content = pl.struct("response_id", "_content").is_first_distinct()
    reason = pl.when(pl.col("response_id").is_null() | (pl.col("response_id") == "")).then(pl.lit("missing_response_id"))
    reason = (
        reason.when(~first_of_content).then(pl.lit("duplicate"))
        .when(~first_of_id).then(pl.lit("conflicting_duplicate_id"))
        .when(pl.col("ts_utc").is_null()).then(pl.lit(f"bad_timestamp:{cols.timestamp}"))
        .when(~pl.col("ts_utc").is_between(lo, hi)).then(pl.lit(f"implausible_timestamp:{cols.timestamp}"))
    )
    for k in SCALES:
        if getattr(cols, k):
            reason = reason.when(pl.col(f"_{k}_reason").is_not_null()).then(pl.lit(f"{k}_") + pl.col(f"_{k}_reason") + pl.lit(f":{getattr(cols, k)}"))
    frame = frame.with_columns(reason.alias("reason"))
    kept = frame.filter(pl.col("reason").is_null())

    local = pl.col("ts_utc").dt.convert_time_zone(source.timezone)
    base = kept.with_columns(
        pl.lit(source.name).alias("source"),
        pl.lit(file).alias("file"),
        (pl.col(h(cols.customer_id)).str.strip_chars() if cols.customer_id else pl.lit(None, pl.String)).alias("customer_id"),
        local.dt.date().alias("date_local"),
        local.dt.strftime("%Y-%m").alias("period"),
        *[
            (nfkc_series(kept[h(getattr(cols, seg))]) if getattr(cols, seg) else pl.lit(None, pl.String)).alias(seg)
            for seg in SEGMENT_COLUMNS
        ],
        (nfkc_series(kept[h(cols.rating)]).replace("", None) if cols.rating else pl.lit(None, pl.String)).alias("rating"),
        *[nfkc_series(kept[h(col)]).alias(name) for name, col in source.segments.items()],
    )
    extra = list(source.segments)
    base, _ = redact_fields(base, ["response_id", "customer_id", *SEGMENT_COLUMNS, "rating", *extra], params.redact_patterns,
                            ids=("response_id", "customer_id"))
    parts = [
        base.select(*[c for c in FEEDBACK_SCHEMA if c in base.columns and c not in ("text",)], *extra,
                    pl.lit(qid).alias("question_id"), pl.col(h(col)).alias("text"))
        for qid, col in source.text_columns.items()
    ]
    feedback = pl.concat(parts, how="diagonal") if parts else pl.DataFrame(schema=FEEDBACK_SCHEMA)
    feedback = clean_texts(feedback, params).with_columns(
        (pl.col("source") + ":" + pl.col("response_id") + ":" + pl.col("question_id")).alias("verbatim_id"),
    )
    feedback = feedback.select([pl.col(c).cast(t) for c, t in FEEDBACK_SCHEMA.items()]
                               + [pl.col(c).cast(pl.String) if c in feedback.columns else pl.lit(None, pl.String).alias(c) for c in extra])
    if len(source.text_columns) > 1:  # one question: already in row order
        feedback = feedback.sort(["row", "question_id"])

    # The quarantine shows mapped fields only ("field=value", redacted later): unmapped columns never leave.
    labelled = list(dict.fromkeys(
        [(f, c) for f, c in mapping.items()] + list(source.segments.items()) + list(source.text_columns.items())))
    quarantine = pl.concat(
        [
            frame.filter(pl.col("reason").is_not_null()).select(
                "row", "reason",
                pl.concat_str([pl.lit(f"{f}=") + pl.col(h(c)).fill_null("") for f, c in labelled], separator=" | ").alias("content"),
            ),
            raw.ragged.select(
                "row",
                pl.when(pl.col("n_fields") == -1).then(pl.lit("bad_json"))
                .when(pl.col("n_fields") == 0).then(pl.lit("not_an_object"))
                .otherwise(pl.format("ragged_row:{}_fields_expected_{}", "n_fields", pl.lit(len(names)))).alias("reason"),
                pl.col("content").map_elements(lambda t: _mapped_fields(json.loads(t), names, labelled), return_dtype=pl.String),
            ),
        ]
    )
    return feedback, _quarantine_frame(quarantine, source.name, file, params)


RAW_PREFIX = "raw\x1f"  # raw column names inside clean_survey (never a koe field name)


def clean_texts(frame: pl.DataFrame, params: CleanParams) -> pl.DataFrame:
    """Normalise, redact, detect language and classify the ``text`` column of verbatims.

    text_status: "empty"; "non_answer"; "duplicate" (the same respondent already gave this text to this
    question; customer id, else response id); "ok". Only "ok" verbatims go on to topic modelling.
    """
    frame = frame.with_columns(normalise_series(frame["text"]).alias("text"))
    frame = redact(frame, "text", params.redact_patterns)
    frame = frame.with_columns(detect_language(frame["text"]).alias("lang"), text_status_series(frame["text"], params.non_answers).alias("text_status"))
    # A repeat needs a respondent who answered this question more than once: only those texts are compared.
    # Each question's verbatims are in row order, so the first distinct one is the earliest.
    who = pl.coalesce(pl.col("customer_id"), pl.col("response_id"))
    idx = frame.select(pl.struct(who, pl.col("question_id")).is_duplicated() & (pl.col("text_status") == "ok")).to_series().arg_true()
    if len(idx) == 0:
        return frame
    sub = frame.gather(idx).select(
        pl.when(pl.struct(who, pl.col("question_id"), pl.col("text")).is_first_distinct()).then(pl.lit("ok")).otherwise(pl.lit("duplicate"))
    ).to_series()
    return frame.with_columns(frame["text_status"].scatter(idx, sub))


# ---------------------------------------------------------------- tickets

ZENDESK_FIELDS = ("id", "requester_id", "created_at", "first_reply_at", "solved_at", "status", "via", "product", "description")


def clean_tickets(lines: list[str], source: TicketSource, file: str, params: CleanParams, now: datetime | None = None) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Zendesk-style JSON Lines → (tickets, quarantined rows, blank lines). Pure: no I/O.

    Open tickets keep a censored resolution time measured to ``now`` (default: the latest timestamp seen).
    """
    good: list[dict] = []
    bad: list[dict] = []
    blanks = 0
    row = 0
    for line in lines:
        if not line.strip():
            blanks += 1
            continue
        row += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            # Nothing of a broken line can be told mapped: the quarantine names file, row and column only.
            bad.append({"row": row, "reason": f"bad_json:col_{e.colno}", "content": ""})
            continue
        missing = [k for k in ("id", "created_at") if obj.get(k) in (None, "")] if isinstance(obj, dict) else ["object"]
        # Only the fields koe reads reach the quarantine (never requester_name, ip …).
        content = " | ".join(f"{k}={obj[k]}" for k in ZENDESK_FIELDS if obj.get(k) is not None)[:2000] if isinstance(obj, dict) else ""
        if missing:
            bad.append({"row": row, "reason": f"missing_field:{missing[0]}", "content": content})
            continue
        good.append({"row": row, "content": content, **{k: (None if obj.get(k) is None else str(obj.get(k))) for k in ZENDESK_FIELDS}})
    schema = {"row": pl.Int64, "content": pl.String, **{k: pl.String for k in ZENDESK_FIELDS}}
    raw = pl.DataFrame(good, schema=schema)

    def ts(name: str) -> pl.Expr:
        return pl.col(name).str.to_datetime("%Y-%m-%dT%H:%M:%S%z", strict=False).dt.convert_time_zone("UTC").dt.cast_time_unit("us")

    frame = raw.with_columns(
        ts("created_at").alias("created_utc"), ts("first_reply_at").alias("first_response_utc"), ts("solved_at").alias("resolved_utc")
    )
    lo, hi = plausible_bounds(frame["created_utc"], params.plausible_margin_days)
    reason = (
        pl.when(pl.col("created_utc").is_null()).then(pl.lit("bad_timestamp:created_at"))
        .when(pl.col("first_reply_at").is_not_null() & pl.col("first_response_utc").is_null()).then(pl.lit("bad_timestamp:first_reply_at"))
        .when(pl.col("solved_at").is_not_null() & pl.col("resolved_utc").is_null()).then(pl.lit("bad_timestamp:solved_at"))
        .when(~pl.col("created_utc").is_between(lo, hi)).then(pl.lit("implausible_timestamp:created_at"))
        .when(pl.col("first_response_utc") > hi).then(pl.lit("implausible_timestamp:first_reply_at"))
        .when(pl.col("resolved_utc") > hi).then(pl.lit("implausible_timestamp:solved_at"))
        .when(pl.col("first_response_utc") < pl.col("created_utc")).then(pl.lit("reply_before_creation"))
        .when(pl.col("resolved_utc") < pl.col("created_utc")).then(pl.lit("solved_before_creation"))
        .when(pl.col("id").is_duplicated() & (pl.col("row") != pl.col("row").min().over("id"))).then(pl.lit("duplicate"))
    )
    frame = frame.with_columns(reason.alias("reason"))
    kept = frame.filter(pl.col("reason").is_null())
    cutoff = now or kept.select(pl.max_horizontal(pl.col("created_utc").max(), pl.col("first_response_utc").max(), pl.col("resolved_utc").max())).item()
    hours = 3_600_000_000  # microseconds per hour
    tickets = kept.with_columns(
        pl.col("id").alias("ticket_id"),
        pl.col("requester_id").alias("customer_id"),
        pl.lit(file).alias("file"),
        pl.col("via").alias("channel"),
        pl.col("status").fill_null("").alias("status"),
        pl.col("created_utc").dt.convert_time_zone(source.timezone).dt.strftime("%Y-%m").alias("period"),
        ((pl.col("first_response_utc") - pl.col("created_utc")).dt.total_microseconds() / hours).alias("first_response_h"),
        ((pl.coalesce(pl.col("resolved_utc"), pl.lit(cutoff)) - pl.col("created_utc")).dt.total_microseconds() / hours).alias("resolution_h"),
        pl.col("resolved_utc").is_null().alias("is_open"),
        normalise_text(pl.col("description")).alias("text"),
    )
    tickets = redact(tickets, "text", params.redact_patterns)
    tickets, _ = redact_fields(tickets, ["ticket_id", "customer_id", "channel", "status", "product"], params.redact_patterns,
                               ids=("ticket_id", "customer_id"))
    tickets = tickets.with_columns(detect_language(tickets["text"]).alias("lang"))
    tickets = tickets.select([pl.col(c).cast(t) for c, t in TICKETS_SCHEMA.items()]).sort("row")
    quarantine = pl.concat(
        [
            frame.filter(pl.col("reason").is_not_null()).select("row", "reason", "content"),
            pl.DataFrame(bad, schema={"row": pl.Int64, "reason": pl.String, "content": pl.String}),
        ]
    )
    return tickets, _quarantine_frame(quarantine, source.name, file, params), blanks


# ---------------------------------------------------------------- the stage

@dataclass
class CleanResult:
    """The stage's outputs, one field per params output (written by ``pipelines.io.write_result``)."""

    feedback: pl.DataFrame
    tickets: pl.DataFrame
    quarantine: pl.DataFrame
    metrics: dict


def redacted_fields_counts(feedback: pl.DataFrame, tickets: pl.DataFrame) -> dict[str, int]:
    marker = r"^pii-[0-9a-f]{16}$|\[[A-Z_]+\]"
    out: dict[str, int] = {}
    for table, frame, skip in (("feedback", feedback, {"text", "redactions"}), ("tickets", tickets, {"text", "redactions"})):
        for col, dtype in frame.schema.items():
            if dtype == pl.String and col not in skip and len(frame):
                n = int(frame[col].str.contains(marker).fill_null(False).sum())
                if n:
                    out[f"{table}.{col}"] = n
    return dict(sorted(out.items()))


def _files(root: Path, pattern: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(str(root / pattern)))
    if not files:
        raise InputError(f"no input files match {pattern!r} (relative to {root})")
    return files


def run(params: CleanParams, root: str | Path = ".") -> CleanResult:
    """Read every configured source under ``root``, clean, and return the tables and metrics (no writing)."""
    root = Path(root)
    feedback_parts, ticket_parts, quarantine_parts, reports = [], [], [], []
    jobs = [(path, path.relative_to(root).as_posix(), source) for source in params.surveys for path in _files(root, source.path)]

    def one_file(job: tuple[Path, str, SurveySource]) -> tuple[pl.DataFrame, pl.DataFrame, FileReport]:
        path, rel, source = job
        raw, enc = read_source_file(path, rel, source)
        fb, q = clean_survey(raw, source, rel, params)
        rows_in = len(raw.frame) + len(raw.ragged)
        rep = FileReport(rel, enc, rows_in=rows_in, rows_kept=fb["row"].n_unique(), blank_lines=raw.blank_lines,
                         parser=raw.parser)
        rep.quarantined.update(q["reason"].to_list())
        check_quarantine_share(rep, q, raw, source, column_names(raw.headers, source.preset))
        return fb, q, rep

    # Files are independent and polars releases the GIL: clean them side by side, collect in file order.
    if len(jobs) > 1:
        _nfkc_unstable(), _lid_model()  # build shared state once, before the threads
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1) or 1) as pool:
        for fb, q, rep in pool.map(one_file, jobs):
            feedback_parts.append(fb)
            quarantine_parts.append(q)
            reports.append(rep)
    if params.tickets is not None:
        for path in _files(root, params.tickets.path):
            rel = path.relative_to(root).as_posix()
            text, enc = decode(path.read_bytes(), rel)
            tk, q, blanks = clean_tickets(text.splitlines(), params.tickets, rel, params)
            rep = FileReport(rel, enc, rows_in=len(tk) + len(q), rows_kept=len(tk), blank_lines=blanks, parser="json")
            rep.quarantined.update(q["reason"].to_list())
            check_quarantine_share(rep, q, None, params.tickets)
            ticket_parts.append(tk)
            quarantine_parts.append(q)
            reports.append(rep)

    for rep in reports:
        if rep.rows_in != rep.rows_kept + sum(rep.quarantined.values()):
            raise AssertionError(f"{rep.file}: rows in {rep.rows_in} != kept {rep.rows_kept} + quarantined {sum(rep.quarantined.values())}")

    # Sources with segments of their own add columns: the others' rows get nulls there.
    feedback = pl.concat(feedback_parts, how="diagonal") if feedback_parts else pl.DataFrame(schema=FEEDBACK_SCHEMA)
    # A response id seen in two files (re-exported overlap) is kept once.
    # Within a file response ids are unique by now, so a repeated verbatim id spans files (a re-exported overlap).
    dup_across = feedback.filter(pl.col("verbatim_id").is_duplicated())
    if len(dup_across):
        first = dup_across.filter(pl.col("verbatim_id") == dup_across["verbatim_id"][0])
        raise InputError(
            f"response ids appear in more than one file, e.g. {first['response_id'][0]} in {', '.join(sorted(set(first['file'])))}"
        )
    tickets = pl.concat(ticket_parts) if ticket_parts else pl.DataFrame(schema=TICKETS_SCHEMA)
    quarantine = pl.concat(quarantine_parts) if quarantine_parts else pl.DataFrame()

    def counts(values: pl.Series) -> dict[str, int]:
        vc = values.value_counts()
        return dict(zip(vc[values.name].to_list(), vc["count"].to_list()))

    status = counts(feedback["text_status"])
    kinds = pl.concat([feedback["redactions"], tickets["redactions"]])
    redacted = counts(kinds.filter(kinds != "").str.split(",").explode())
    languages = counts(feedback.filter(pl.col("text_status") == "ok")["lang"])
    metrics = {
        "rows_in": sum(r.rows_in for r in reports),
        "rows_kept": sum(r.rows_kept for r in reports),
        "rows_quarantined": sum(sum(r.quarantined.values()) for r in reports),
        "quarantined_by_reason": dict(sorted(sum((Counter({k.split(":")[0]: v for k, v in r.quarantined.items()}) for r in reports), Counter()).items())),
        "responses": feedback["response_id"].n_unique(),
        "verbatims": len(feedback),
        "verbatims_ok": status.get("ok", 0),
        "non_answers": status.get("non_answer", 0),
        "empty_texts": status.get("empty", 0),
        "duplicate_texts": status.get("duplicate", 0),
        "tickets": len(tickets),
        # Sources not configured (clean.tickets: null, surveys: []): later stages skip what needs them.
        "surveys_provided": bool(params.surveys),
        "tickets_provided": params.tickets is not None,
        "redactions": dict(sorted(redacted.items())),
        # values of other columns with personal data: ids pseudonymised (pii-…), labels redacted
        "redacted_fields": redacted_fields_counts(feedback, tickets),
        "languages": dict(sorted(languages.items())),
        "files": [r.as_dict() for r in reports],
    }
    return CleanResult(feedback, tickets, quarantine, metrics)
