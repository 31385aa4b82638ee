"""Clean stage: raw exports → one typed feedback table, one tickets table, and a quarantine.

Every data row read is either kept or quarantined with a reason code; the counts are
checked (rows in = rows kept + rows quarantined, per file) and written as metrics.
Personal data is redacted here, before any text leaves the stage.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import charset_normalizer
import polars as pl
from pydantic import Field

from pipelines._schema import StrictModel
from pipelines.tables import FEEDBACK_SCHEMA, TICKETS_SCHEMA

NON_ANSWERS_DEFAULT = [
    "特になし", "特になし。", "とくになし", "なし", "無し", "ナシ", "特に無し", "特にありません", "ありません",
    "該当なし", "ない", "特にない", "-", "ー", "―", "n/a", "na", "none", "nothing", "no comment", "nil", ".",
]


class SurveyColumns(StrictModel):
    """Which column of the export holds each field (header text as exported)."""

    response_id: str
    timestamp: str
    customer_id: str | None = None
    nps: str | None = None
    csat: str | None = None
    persona: str | None = None
    channel: str | None = None
    product: str | None = None
    journey: str | None = None


class SurveySource(StrictModel):
    name: str
    path: str  # glob relative to the project root; several files per source allowed
    format: Literal["csv", "tsv"] = "csv"
    encoding: str = "auto"  # "auto" → detected (and verified by decoding); or e.g. "cp932"
    timezone: str = "Asia/Tokyo"
    timestamp_format: str = "%Y/%m/%d %H:%M"
    columns: SurveyColumns
    text_columns: dict[str, str]  # question_id → column holding that free-text answer


class TicketSource(StrictModel):
    name: str = "tickets"
    path: str
    preset: Literal["zendesk"] = "zendesk"
    timezone: str = "Asia/Tokyo"


class CleanParams(StrictModel):
    surveys: list[SurveySource]
    tickets: TicketSource | None = None
    non_answers: list[str] = Field(default_factory=lambda: list(NON_ANSWERS_DEFAULT))
    redact_patterns: dict[str, str] = Field(default_factory=dict)  # extra kind → regex
    out_feedback: str = "data/clean/feedback.parquet"
    out_tickets: str = "data/clean/tickets.parquet"
    out_quarantine: str = "data/quarantine/quarantine.parquet"
    metrics_path: str = "reports/metrics/clean.json"


class InputError(ValueError):
    """Unreadable input: the message names the file (and byte offset, row or column)."""


# ---------------------------------------------------------------- decoding

def decode(data: bytes, path: str, encoding: str = "auto") -> tuple[str, str]:
    """Decode a file's bytes; returns (text, encoding used). Detection is verified by a strict decode."""
    if encoding != "auto":
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not valid {encoding} at byte offset {e.start}") from e
    if data.startswith(b"\xef\xbb\xbf"):
        candidates = ["utf-8-sig"]
    else:
        best = charset_normalizer.from_bytes(data[:200_000]).best()
        # UTF-8 first: charset detection on short Japanese samples can prefer a legacy code page.
        candidates = ["utf-8", "cp932"] + ([best.encoding] if best is not None else [])
    first_error: UnicodeDecodeError | None = None
    for enc in dict.fromkeys(candidates):
        try:
            return data.decode(enc), enc
        except UnicodeDecodeError as e:
            first_error = first_error or e
    offset = first_error.start if first_error else 0
    raise InputError(f"{path}: cannot decode (tried {', '.join(dict.fromkeys(candidates))}); first bad byte at offset {offset}")


# ---------------------------------------------------------------- text rules

_TAG = r"<[^>\n]{0,2000}>"
_INVISIBLE = r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\x00-\x08\x0b-\x1f\x7f]"
_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&apos;": "'", "&nbsp;": " "}

# Order matters: e-mail before phone (digits inside addresses), cards before phones (long digit runs).
# polars' regex engine has no look-around, so patterns anchor on structure, not on word boundaries
# (Japanese text puts digits right next to kana); over-redacting a digit run is the safe failure.
REDACTIONS: list[tuple[str, str]] = [
    ("EMAIL", r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
    ("CARD", r"[0-9](?:[ \-]?[0-9]){12,18}"),
    ("PHONE", r"\+[0-9]{1,3}[ \-]?(?:\(0\))?[0-9]{1,4}[ \-]?[0-9]{1,4}[ \-]?[0-9]{3,4}"
              r"|\(?0[0-9]{1,4}\)?[ \-]?[0-9]{1,4}[ \-][0-9]{3,4}|0[5-9]0[0-9]{8}|0[0-9]{9}"),
    ("POSTCODE", r"〒 ?[0-9]{3}-?[0-9]{4}|[0-9]{3}-[0-9]{4}"),
]


def _luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return len(digits) >= 13 and total % 10 == 0


def normalise_text(text: pl.Expr) -> pl.Expr:
    """NFKC, HTML entities decoded and tags stripped, invisible characters removed, whitespace collapsed.

    Emoji are kept: they carry sentiment. The rule is idempotent.
    """
    out = text.fill_null("").str.normalize("NFKC")
    for _ in range(2):  # "&amp;lt;" style double encoding
        out = out.str.replace_many(list(_ENTITIES), list(_ENTITIES.values()))
    out = out.str.normalize("NFKC")
    return (
        out.str.replace_all(_TAG, " ")
        .str.replace_all(_INVISIBLE, "")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def redact(frame: pl.DataFrame, column: str, extra: dict[str, str] | None = None) -> pl.DataFrame:
    """Replace personal data in ``column`` with typed placeholders; adds a ``redactions`` column."""
    kinds = list(REDACTIONS) + list((extra or {}).items())
    found: list[pl.Expr] = []
    out = frame
    for kind, pattern in kinds:
        col = pl.col(column)
        if kind == "CARD":
            # Luhn check on the candidates only: a long order number is not a card.
            def _sub(s: str | None, _p: re.Pattern[str] = re.compile(pattern)) -> str | None:
                if s is None:
                    return None
                return _p.sub(lambda m: "[CARD]" if _luhn_ok(m.group()) else m.group(), s)

            has = col.str.contains(pattern)
            out = out.with_columns(
                pl.when(has).then(col.map_elements(_sub, return_dtype=pl.String)).otherwise(col).alias(column)
            )
            out = out.with_columns(pl.col(column).str.contains(r"\[CARD\]", literal=False).alias(f"_r_{kind}"))
        else:
            out = out.with_columns(
                col.str.contains(pattern).alias(f"_r_{kind}"),
                col.str.replace_all(pattern, f"[{kind}]").alias(column),
            )
        found.append(pl.when(pl.col(f"_r_{kind}")).then(pl.lit(kind)))
    return out.with_columns(
        pl.concat_str(found, separator=",", ignore_nulls=True).fill_null("").alias("redactions")
    ).drop([f"_r_{k}" for k, _ in kinds])


def detect_language(text: pl.Expr) -> pl.Expr:
    """ja when the text has kana or kanji, en when it is mostly Latin letters, else other."""
    return (
        pl.when(text.str.len_chars() == 0).then(pl.lit(""))
        .when(text.str.contains(r"[\p{Hiragana}\p{Katakana}\p{Han}]")).then(pl.lit("ja"))
        .when(text.str.count_matches(r"[A-Za-z]") * 2 >= text.str.count_matches(r"\S")).then(pl.lit("en"))
        .otherwise(pl.lit("other"))
    )


def text_status(text: pl.Expr, non_answers: list[str]) -> pl.Expr:
    key = text.str.to_lowercase().str.replace_all(r"[。、.!！?？\s]+$", "").str.strip_chars()
    na = [s.lower().rstrip("。、.!！?？ ") for s in non_answers]
    return (
        pl.when(text.str.len_chars() == 0).then(pl.lit("empty"))
        .when(key.is_in(na) | (key.str.len_chars() == 0)).then(pl.lit("non_answer"))
        .otherwise(pl.lit("ok"))
    )


# ---------------------------------------------------------------- reading

@dataclass
class FileReport:
    file: str
    encoding: str
    rows_in: int = 0
    rows_kept: int = 0
    blank_lines: int = 0
    quarantined: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "file": self.file, "encoding": self.encoding, "rows_in": self.rows_in, "rows_kept": self.rows_kept,
            "rows_quarantined": sum(self.quarantined.values()), "blank_lines": self.blank_lines,
            "quarantined_by_reason": dict(sorted(self.quarantined.items())),
        }


def read_table(text: str, path: str, delimiter: str) -> tuple[list[str], list[tuple[int, list[str]]], int]:
    """Parse delimited text → (header, [(data row number, fields)], blank lines). Ragged rows are returned as-is."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: empty file (no header row)") from None
    except csv.Error as e:
        raise InputError(f"{path}: header row: {e}") from e
    records: list[tuple[int, list[str]]] = []
    blanks = 0
    row = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise InputError(f"{path}: line {reader.line_num}: {e}") from e
        if not fields or all(not f.strip() for f in fields):
            blanks += 1
            continue
        row += 1
        records.append((row, fields))
    return [h.strip() for h in header], records, blanks


def _parse_score(values: pl.Expr, lo: int, hi: int) -> tuple[pl.Expr, pl.Expr]:
    """(score as Int8, reason code or null) for a raw string score column."""
    s = values.str.strip_chars().str.normalize("NFKC")
    num = s.cast(pl.Int64, strict=False)
    reason = (
        pl.when(s.is_null() | (s == "")).then(None)
        .when(num.is_null()).then(pl.lit("not_a_number"))
        .when((num < lo) | (num > hi)).then(pl.lit("out_of_range"))
    )
    return num.cast(pl.Int8, strict=False), reason


def clean_survey(
    header: list[str], records: list[tuple[int, list[str]]], source: SurveySource, file: str, params: CleanParams
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One survey file's records → (feedback rows, quarantined rows). Pure: no I/O."""
    cols = source.columns
    mapping = {k: v for k, v in cols.model_dump().items() if v is not None}
    needed = list(mapping.values()) + list(source.text_columns.values())
    missing = [c for c in needed if c not in header]
    if missing:
        raise InputError(f"{file}: missing column(s) {missing}; header has {header}")
    width = len(header)
    idx = {name: header.index(name) for name in needed}
    good = [(r, f) for r, f in records if len(f) == width]
    ragged = [(r, f) for r, f in records if len(f) != width]

    raw = pl.DataFrame(
        {"row": [r for r, _ in good], **{name: [f[i] for _, f in good] for name, i in idx.items()}},
        schema={"row": pl.Int64, **{name: pl.String for name in idx}},
    )
    nps, nps_reason = _parse_score(pl.col(cols.nps), 0, 10) if cols.nps else (pl.lit(None, pl.Int8), pl.lit(None))
    csat, csat_reason = (
        _parse_score(pl.col(cols.csat), 1, 5) if cols.csat else (pl.lit(None, pl.Int8), pl.lit(None))
    )
    ts_local = pl.col(cols.timestamp).str.strip_chars().str.to_datetime(source.timestamp_format, strict=False)
    rid = pl.col(cols.response_id).str.strip_chars()
    frame = raw.with_columns(
        rid.alias("response_id"),
        ts_local.alias("_ts_local"),
        nps.alias("nps"),
        csat.alias("csat"),
        nps_reason.cast(pl.String).alias("_nps_reason"),
        csat_reason.cast(pl.String).alias("_csat_reason"),
        pl.concat_str([pl.col(c) for c in needed], separator="\x1f").alias("_content"),
    )
    # Exact repeats of a response are duplicates; the same id with different content is a conflict.
    first_of_id = pl.col("row") == pl.col("row").min().over("response_id")
    first_of_content = pl.col("row") == pl.col("row").min().over(["response_id", "_content"])
    reason = (
        pl.when(pl.col("response_id").is_null() | (pl.col("response_id") == "")).then(pl.lit("missing_response_id"))
        .when(~first_of_content).then(pl.lit("duplicate"))
        .when(~first_of_id).then(pl.lit("conflicting_duplicate_id"))
        .when(pl.col("_ts_local").is_null()).then(pl.lit(f"bad_timestamp:{cols.timestamp}"))
        .when(pl.col("_nps_reason").is_not_null()).then(pl.lit(f"nps_") + pl.col("_nps_reason") + pl.lit(f":{cols.nps}"))
        .when(pl.col("_csat_reason").is_not_null()).then(pl.lit("csat_") + pl.col("_csat_reason") + pl.lit(f":{cols.csat}"))
    )
    frame = frame.with_columns(reason.alias("reason"))
    kept = frame.filter(pl.col("reason").is_null())

    ts_utc = pl.col("_ts_local").dt.replace_time_zone(source.timezone).dt.convert_time_zone("UTC")
    base = kept.with_columns(
        pl.lit(source.name).alias("source"),
        pl.lit(file).alias("file"),
        (pl.col(cols.customer_id).str.strip_chars() if cols.customer_id else pl.lit(None, pl.String)).alias("customer_id"),
        ts_utc.dt.cast_time_unit("us").alias("ts_utc"),
        pl.col("_ts_local").dt.date().alias("date_local"),
        pl.col("_ts_local").dt.strftime("%Y-%m").alias("period"),
        *[
            (pl.col(getattr(cols, seg)).str.strip_chars().str.normalize("NFKC") if getattr(cols, seg) else pl.lit(None, pl.String)).alias(seg)
            for seg in ("persona", "channel", "product", "journey")
        ],
    )
    parts = []
    for qid, col in source.text_columns.items():
        parts.append(base.with_columns(pl.lit(qid).alias("question_id"), normalise_text(pl.col(col)).alias("text")))
    feedback = pl.concat(parts) if parts else base.clear()
    feedback = redact(feedback, "text", params.redact_patterns).with_columns(
        (pl.col("source") + ":" + pl.col("response_id") + ":" + pl.col("question_id")).alias("verbatim_id"),
        detect_language(pl.col("text")).alias("lang"),
        text_status(pl.col("text"), params.non_answers).alias("text_status"),
    )
    feedback = feedback.select([pl.col(c).cast(t) for c, t in FEEDBACK_SCHEMA.items()]).sort(["row", "question_id"])

    quarantine = pl.concat(
        [
            frame.filter(pl.col("reason").is_not_null()).select(
                "row", "reason", pl.concat_str([pl.col(c) for c in needed], separator=" | ").alias("content")
            ),
            pl.DataFrame(
                {
                    "row": [r for r, _ in ragged],
                    "reason": [f"ragged_row:{len(f)}_fields_expected_{width}" for _, f in ragged],
                    "content": [" | ".join(f) for _, f in ragged],
                },
                schema={"row": pl.Int64, "reason": pl.String, "content": pl.String},
            ),
        ]
    )
    return feedback, _quarantine_frame(quarantine, source.name, file, params)


def _quarantine_frame(q: pl.DataFrame, source: str, file: str, params: CleanParams) -> pl.DataFrame:
    # Quarantined content is redacted too: the quarantine is an output of this stage.
    q = redact(q.with_columns(normalise_text(pl.col("content")).alias("content")), "content", params.redact_patterns)
    return q.select(
        pl.lit(source).alias("source"), pl.lit(file).alias("file"), pl.col("row").cast(pl.Int64), "reason",
        "content", "redactions",
    ).sort("row")


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
            bad.append({"row": row, "reason": f"bad_json:col_{e.colno}", "content": line[:2000]})
            continue
        missing = [k for k in ("id", "created_at") if obj.get(k) in (None, "")] if isinstance(obj, dict) else ["object"]
        if missing:
            bad.append({"row": row, "reason": f"missing_field:{missing[0]}", "content": line[:2000]})
            continue
        good.append({"row": row, "content": line[:2000], **{k: (None if obj.get(k) is None else str(obj.get(k))) for k in ZENDESK_FIELDS}})
    schema = {"row": pl.Int64, "content": pl.String, **{k: pl.String for k in ZENDESK_FIELDS}}
    raw = pl.DataFrame(good, schema=schema)

    def ts(name: str) -> pl.Expr:
        return pl.col(name).str.to_datetime("%Y-%m-%dT%H:%M:%S%z", strict=False).dt.convert_time_zone("UTC").dt.cast_time_unit("us")

    frame = raw.with_columns(
        ts("created_at").alias("created_utc"), ts("first_reply_at").alias("first_response_utc"), ts("solved_at").alias("resolved_utc")
    )
    reason = (
        pl.when(pl.col("created_utc").is_null()).then(pl.lit("bad_timestamp:created_at"))
        .when(pl.col("first_reply_at").is_not_null() & pl.col("first_response_utc").is_null()).then(pl.lit("bad_timestamp:first_reply_at"))
        .when(pl.col("solved_at").is_not_null() & pl.col("resolved_utc").is_null()).then(pl.lit("bad_timestamp:solved_at"))
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
    tickets = redact(tickets, "text", params.redact_patterns).with_columns(detect_language(pl.col("text")).alias("lang"))
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
    feedback: pl.DataFrame
    tickets: pl.DataFrame
    quarantine: pl.DataFrame
    metrics: dict


def _files(root: Path, pattern: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(str(root / pattern)))
    if not files:
        raise InputError(f"no input files match {pattern!r} (relative to {root})")
    return files


def run(params: CleanParams, root: str | Path = ".") -> CleanResult:
    """Read every configured source under ``root``, clean, and return the tables and metrics (no writing)."""
    root = Path(root)
    feedback_parts, ticket_parts, quarantine_parts, reports = [], [], [], []
    for source in params.surveys:
        for path in _files(root, source.path):
            rel = path.relative_to(root).as_posix()
            text, enc = decode(path.read_bytes(), rel, source.encoding)
            header, records, blanks = read_table(text, rel, "\t" if source.format == "tsv" else ",")
            fb, q = clean_survey(header, records, source, rel, params)
            rep = FileReport(rel, enc, rows_in=len(records), rows_kept=fb["row"].n_unique(), blank_lines=blanks)
            rep.quarantined.update(q["reason"].to_list())
            feedback_parts.append(fb)
            quarantine_parts.append(q)
            reports.append(rep)
    if params.tickets is not None:
        for path in _files(root, params.tickets.path):
            rel = path.relative_to(root).as_posix()
            text, enc = decode(path.read_bytes(), rel)
            tk, q, blanks = clean_tickets(text.splitlines(), params.tickets, rel, params)
            rep = FileReport(rel, enc, rows_in=len(tk) + len(q), rows_kept=len(tk), blank_lines=blanks)
            rep.quarantined.update(q["reason"].to_list())
            ticket_parts.append(tk)
            quarantine_parts.append(q)
            reports.append(rep)

    for rep in reports:
        if rep.rows_in != rep.rows_kept + sum(rep.quarantined.values()):
            raise AssertionError(f"{rep.file}: rows in {rep.rows_in} != kept {rep.rows_kept} + quarantined {sum(rep.quarantined.values())}")

    feedback = pl.concat(feedback_parts) if feedback_parts else pl.DataFrame(schema=FEEDBACK_SCHEMA)
    # A response id seen in two files (re-exported overlap) is kept once.
    dup_across = feedback.filter(pl.col("verbatim_id").is_duplicated() & (pl.col("file") != pl.col("file").min().over("verbatim_id")))
    if len(dup_across):
        raise InputError(
            f"response ids appear in more than one file, e.g. {dup_across['response_id'][0]} in {dup_across['file'][0]}"
        )
    tickets = pl.concat(ticket_parts) if ticket_parts else pl.DataFrame(schema=TICKETS_SCHEMA)
    quarantine = pl.concat(quarantine_parts) if quarantine_parts else pl.DataFrame()

    status = Counter(feedback["text_status"].to_list())
    redacted = Counter(
        kind
        for kinds in feedback["redactions"].to_list() + tickets["redactions"].to_list()
        if kinds
        for kind in kinds.split(",")
    )
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
        "tickets": len(tickets),
        "redactions": dict(sorted(redacted.items())),
        "languages": dict(sorted(Counter(feedback.filter(pl.col("text_status") == "ok")["lang"].to_list()).items())),
        "files": [r.as_dict() for r in reports],
    }
    return CleanResult(feedback, tickets, quarantine, metrics)


def write(result: CleanResult, params: CleanParams, root: str | Path = ".") -> None:
    from pipelines import io as kio

    root = Path(root)
    kio.write_parquet(result.feedback, root / params.out_feedback)
    kio.write_parquet(result.tickets, root / params.out_tickets)
    kio.write_parquet(result.quarantine, root / params.out_quarantine)
    kio.write_json(result.metrics, root / params.metrics_path)
