"""What an export holds: format, encoding, preset, header rows, and each column's role guessed from its values.

Pure functions returning dataclasses (``inspect_file``, ``guess_column``); ``koe init`` prints them and writes
params.yaml from them. Every guess carries its evidence (parse rates, observed ranges, distinct counts) so a researcher
can check it in one read. The file is read with the clean stage's own readers, so what is inspected is what clean reads.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from pipelines import parsing, readers, schema

Role = str  # response_id | customer_id | timestamp | nps | csat | ces | rating | text | segment | ignored

SAMPLE_ROWS = 5_000  # roles are guessed from the first rows; enough for ranges and cardinalities
SEGMENT_MAX_VALUES = 200  # more distinct values than this is an identifier or free text, not a segment
SEGMENT_MAX_SHARE = 0.2  # … as is a column whose distinct values exceed this share of its filled rows
ID_MIN_SHARE = 0.98  # distinct share of a response id (exports carry a few duplicated rows)
PARSE_MIN_SHARE = 0.9  # share of values a timestamp or score reading must explain
SCALES = ((1, 3), (1, 4), (1, 5), (0, 5), (1, 7), (0, 7), (1, 10), (0, 10))  # ordinal scales, smallest first
EXCEL_SERIAL_RANGE = (32_874, 73_051)  # 1990-01-01 … 2100-01-01 as Excel serial days

# Good answers of a categorical rating, several languages (compared after NFKC and lower-casing).
GOOD_VALUES = {
    "positive", "good", "satisfied", "very satisfied", "happy", "yes", "like", "thumbs up", "great", "excellent", "helpful",
    "満足", "とても満足", "やや満足", "非常に満足", "良い", "よい", "良かった", "はい", "好き", "ポジティブ", "高評価", "解決",
}
BAD_VALUES = {
    "negative", "bad", "dissatisfied", "unsatisfied", "very dissatisfied", "unhappy", "no", "dislike", "thumbs down",
    "poor", "unhelpful", "不満", "とても不満", "やや不満", "非常に不満", "悪い", "いいえ", "嫌い", "ネガティブ", "低評価", "未解決",
}
# Header words that name a column's role (NFKC, lower-cased substrings).
HINTS = {
    "response_id": ("responseid", "response id", "回答id", "回答番号", "respondent", "id"),
    "customer_id": ("customer", "顧客", "会員", "member", "user", "requester", "client"),
    "timestamp": ("recorded", "回答日", "submitted", "answered", "created", "timestamp", "date", "日時", "時刻"),
    "nps": ("nps", "recommend", "推奨", "おすすめ", "お勧め", "薦め"),
    "csat": ("csat", "satisf", "満足"),
    "ces": ("ces", "effort", "easy", "努力", "手間", "簡単", "容易"),
    "rating": ("rating", "評価", "満足", "satisf", "overall", "experience", "sentiment", "how was"),
}
# Segments with a place in the feedback table of their own; any other segment keeps a name from its header.
SEGMENT_SLOTS = {
    "persona": ("persona", "ペルソナ"),
    "channel": ("channel", "チャネル", "チャンネル", "経路", "via"),
    "product": ("product", "製品", "商品"),
    "journey": ("journey", "ジャーニー"),
}
SEGMENT_NAMES = {  # common headers → the segment's name in the feedback table and kpis.segments
    "年代": "age_band", "年齢": "age_band", "年齢層": "age_band", "age": "age_band", "age group": "age_band",
    "性別": "gender", "gender": "gender", "地域": "region", "地方": "region", "region": "region", "都道府県": "prefecture",
    "プラン": "plan", "plan": "plan", "店舗": "store", "store": "store", "職業": "occupation", "業種": "industry",
}
ZENDESK_KEYS = {"id", "created_at", "requester_id", "description"}
_KANA = re.compile(r"[\u3040-\u30ff]")
_ID_TOKEN = re.compile(r"^[A-Za-z0-9_\-.:#/]{1,40}$")


@dataclass(frozen=True)
class ColumnGuess:
    name: str  # header as mapped by clean (row 1; SurveyMonkey: rows 1 and 2 combined)
    role: Role
    evidence: str  # why, in numbers
    filled: int  # non-empty values among the rows read
    distinct: int
    question: str = ""  # the question text (Qualtrics row 2), when the export has one
    scale: tuple[int, int] | None = None  # ordinal scales: the scale the answers fit
    timestamp_format: str | None = None  # timestamps: a strftime format, "auto" (mixed forms) or "excel"
    good_values: tuple[str, ...] = ()  # categorical rating: the values counted as good
    segment: str | None = None  # segments: the name in the feedback table (persona … journey, or its own)
    note: str = ""  # what the researcher should check


@dataclass(frozen=True)
class ExportInspection:
    path: Path
    kind: str  # "survey" | "tickets"
    format: str  # csv | tsv | xlsx | parquet | jsonl
    encoding: str  # as decoded strictly ("binary" for xlsx/parquet)
    preset: str | None  # qualtrics | surveymonkey | zendesk | None
    header_rows: int
    rows: int  # data rows read (blank lines not counted)
    columns: list[ColumnGuess] = field(default_factory=list)
    language: str = ""  # "ja" | "en": the language most free text is written in
    span: tuple[date, date] | None = None  # first and last day of the timestamps
    notes: list[str] = field(default_factory=list)

    def role(self, role: Role) -> list[ColumnGuess]:
        return [c for c in self.columns if c.role == role]

    def first(self, role: Role) -> ColumnGuess | None:
        found = self.role(role)
        return found[0] if found else None


# ------------------------------------------------------------------------------------------------ reading

def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().lower()


def _hinted(header: str, role: str, question: str = "") -> bool:
    h = _norm(header) + " " + _norm(question)
    return any(word in h for word in HINTS[role])


def detect_preset(headers: list[str], first_rows: list[list[str]]) -> tuple[str | None, int]:
    """(preset, header rows) from the top of a delimited export."""
    if len(first_rows) >= 2:
        row3 = [c for c in first_rows[1] if c.strip()]
        if row3 and sum(c.lstrip().startswith('{"ImportId"') for c in row3) >= len(row3) / 2:
            return "qualtrics", 3
    if first_rows and any(c in ("Response", "Open-Ended Response") for c in first_rows[0]):
        if any(h.lower().startswith("respondent id") for h in headers):
            return "surveymonkey", 2
    return None, 1


def _read(path: Path) -> tuple[readers.RawTable, str, str, str | None, int, list[str]]:
    """(table, format, encoding, preset, header rows, question texts) of one survey export."""
    rel = path.name
    ext = path.suffix.lower().lstrip(".")
    fmt = {"txt": "tsv", "ndjson": "jsonl", "xlsm": "xlsx"}.get(ext, ext if ext in schema.FORMATS else "csv")
    data = path.read_bytes()
    if fmt == "xlsx":
        return readers.read_xlsx(data, rel, None, 1), fmt, "binary", None, 1, []
    if fmt == "parquet":
        return readers.read_parquet(data, rel), fmt, "binary", None, 1, []
    if not data or data.isspace():
        raise readers.InputError(f"{path}: empty file")
    text, enc = readers.decode(data, str(path))
    if fmt == "jsonl":
        return readers.read_jsonl(text, rel), fmt, enc, None, 1, []
    first_line = text.split("\n", 1)[0]
    if fmt == "csv" and first_line.count("\t") > first_line.count(","):
        fmt = "tsv"
    sep = "\t" if fmt == "tsv" else ","
    probe = readers.read_delimited_python("\n".join(text.split("\n", 12)[:12]), rel, sep, 1) if text.count("\n") else None
    first_rows = [[probe.frame[c][i] or "" for c in probe.frame.columns[1:]] for i in range(min(2, len(probe.frame)))] if probe else []
    preset, header_rows = detect_preset(probe.headers[0] if probe else [], first_rows)
    table = readers.read_delimited(text, rel, sep, header_rows)
    questions = table.headers[1] if preset == "qualtrics" else []
    return table, fmt, enc, preset, header_rows, questions


# ------------------------------------------------------------------------------------------------ guessing

def _timestamp_reading(values: pl.Series, header: str) -> tuple[float, str, str]:
    """(share parsed, format to configure, evidence) over non-empty values."""
    n = len(values)
    shares: dict[str, float] = {}
    s = values.str.normalize("NFKC").str.strip_chars()
    for fmt in dict.fromkeys(parsing.AUTO_FORMATS + ["%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M"]):
        ok = s.str.to_datetime(fmt, strict=False, time_unit="us").is_not_null().sum() / n
        if ok > 0:
            shares[fmt] = ok
    num = s.cast(pl.Float64, strict=False)
    in_range = ((num >= EXCEL_SERIAL_RANGE[0]) & (num <= EXCEL_SERIAL_RANGE[1])).sum() / n
    fractional = (num.is_not_null() & (num != num.floor())).sum() / n
    if in_range > 0 and (fractional >= 0.5 * in_range or _hinted(header, "timestamp")):
        shares["excel"] = in_range
    if not shares:
        return 0.0, "", "no date/time format matches"
    parsed = parsing.parse_timestamp_series(values, "auto", "UTC").is_not_null().sum() / n
    if "excel" in shares:
        parsed = max(parsed, shares["excel"])
    best = max(shares, key=shares.get)
    if shares[best] >= 0.999:
        fmt = "excel" if best == "excel" else best
    else:
        fmt = "auto"  # mixed forms: clean's auto reading tries each
    parts = ", ".join(f"{'Excel serial' if f == 'excel' else f} {v:.0%}" for f, v in sorted(shares.items(), key=lambda kv: -kv[1])[:3])
    return float(parsed), fmt, f"{parsed:.0%} parse as dates ({parts})"


def _integers(values: pl.Series) -> pl.Series | None:
    """The values as integers when nearly all are whole numbers ("9", "9.0", full-width "９"), else None."""
    num = values.str.normalize("NFKC").str.strip_chars().cast(pl.Float64, strict=False)
    whole = num.is_not_null() & (num == num.round())
    if whole.sum() < PARSE_MIN_SHARE * len(values):
        return None
    return num.filter(whole).cast(pl.Int64)


def _fit_scale(ints: pl.Series) -> tuple[int, int] | None:
    """The common scale the answers use. Rare end values (each < 1 % of answers, 2 % in all: typing slips such as 6 on
    a 1–5 scale or 11 in NPS) are set aside; the rest span the scale, or the smallest common scale that holds them
    from the same lowest answer (1..6 answered → 1–7). A 0 answered next to a 1..10 span is NPS's 0–10."""
    counts = dict(zip(*ints.value_counts().sort(ints.name or "").to_dict(as_series=False).values()))
    values, n = sorted(counts), len(ints)
    set_aside = 0
    while len(values) > 2 and counts[values[0]] < 0.01 * n and set_aside + counts[values[0]] <= 0.02 * n:
        set_aside += counts[values.pop(0)]
    while len(values) > 2 and counts[values[-1]] < 0.01 * n and set_aside + counts[values[-1]] <= 0.02 * n:
        set_aside += counts[values.pop()]
    lo, hi = values[0], values[-1]
    if 0 in counts and hi == 10 and lo <= 1:
        return 0, 10
    if (lo, hi) in SCALES:
        return lo, hi
    return next(((a, b) for a, b in sorted(SCALES, key=lambda s: s[1] - s[0]) if a == lo and b >= hi), None)


def _segment_name(header: str, question: str = "") -> str | None:
    key = _norm(header)
    for slot, words in SEGMENT_SLOTS.items():
        if any(w in key for w in words):
            return slot
    if key in SEGMENT_NAMES:
        return SEGMENT_NAMES[key]
    words = set(re.findall(r"\w+", _norm(question)))
    named = next((v for k, v in SEGMENT_NAMES.items() if k in words), None)
    if named:  # a coded header (Qualtrics Q3) whose question names it ("Which plan are you on?")
        return named
    slug = re.sub(r"[^\w]+", "_", key).strip("_")
    return slug or None


def guess_column(name: str, values: pl.Series, rows: int, question: str = "") -> ColumnGuess:
    """One column's role from its values (strings as exported; empty cells as "" or null)."""
    s = values.cast(pl.String).fill_null("").str.strip_chars()
    filled_values = s.filter(s != "")
    filled, distinct = len(filled_values), filled_values.n_unique()
    base = dict(name=name, filled=filled, distinct=distinct, question=question)
    if filled == 0:
        return ColumnGuess(role="ignored", evidence="empty in every row", **base)
    if distinct == 1:
        return ColumnGuess(role="ignored", evidence=f"one value only ({filled_values[0]!r})", **base)

    share, fmt, ts_evidence = _timestamp_reading(filled_values, name)
    ints = _integers(filled_values)
    if share >= PARSE_MIN_SHARE and (ints is None or fmt == "excel"):
        return ColumnGuess(role="timestamp", evidence=ts_evidence, timestamp_format=fmt, **base)

    if ints is not None:
        lo, hi = int(ints.min()), int(ints.max())
        scale = _fit_scale(ints) if distinct <= 15 else None
        if distinct == filled and filled >= ID_MIN_SHARE * rows:
            return ColumnGuess(role="response_id", evidence=f"{distinct} distinct numbers in {filled} rows (unique)", **base)
        if scale is not None:
            outside = int(((ints < scale[0]) | (ints > scale[1])).sum())
            extra = f"; {outside} answer(s) outside it will be quarantined" if outside else ""
            evidence = f"integers {lo}..{hi}, {distinct} distinct; fits the {scale[0]}–{scale[1]} scale{extra}"
            if scale == (0, 10) and not _hinted(name, "ces", question):
                return ColumnGuess(role="nps", evidence=evidence, scale=scale, **base)
            role = "ces" if _hinted(name, "ces", question) else "csat"
            return ColumnGuess(role=role, evidence=evidence, scale=scale,
                               note="CES or CSAT? guessed from the header" if role == "ces" else "", **base)
        return ColumnGuess(role="ignored", evidence=f"numbers {lo}..{hi} ({distinct} distinct): not a 0–10 scale", **base)

    texts = filled_values
    mean_len = float(texts.str.len_chars().mean() or 0)
    id_like = texts.str.contains(_ID_TOKEN.pattern).sum() >= 0.95 * filled
    few = distinct <= SEGMENT_MAX_VALUES and distinct <= SEGMENT_MAX_SHARE * filled
    if few and mean_len <= 40:
        keys = {_norm(v) for v in texts.unique().to_list()}
        good = sorted(v for v in texts.unique().to_list() if _norm(v) in GOOD_VALUES)
        known = keys & (GOOD_VALUES | BAD_VALUES)
        if distinct <= 7 and (known or _hinted(name, "rating", question)):
            evidence = f"{distinct} text values ({', '.join(sorted(texts.unique().to_list())[:7])})"
            if good:
                return ColumnGuess(role="rating", evidence=evidence + f"; good: {', '.join(good)}", good_values=tuple(good), **base)
            first = sorted(texts.unique().to_list())[0]
            return ColumnGuess(role="rating", evidence=evidence, good_values=(first,),
                               note=f"good value {first!r} is a guess (first alphabetically): check kpis.rating.good_values", **base)
        top = texts.value_counts(sort=True).head(3)
        shown = ", ".join(f"{v} {c}" for v, c in top.iter_rows())
        return ColumnGuess(role="segment", evidence=f"{distinct} values in {filled} rows (largest: {shown})",
                           segment=_segment_name(name, question), **base)
    if id_like and mean_len <= 40:
        if distinct >= ID_MIN_SHARE * filled and filled >= ID_MIN_SHARE * rows:
            return ColumnGuess(role="response_id", evidence=f"{distinct} distinct ids in {filled} rows (unique)", **base)
        return ColumnGuess(role="customer_id",
                           evidence=f"{distinct} distinct ids in {filled} rows ({filled / distinct:.2f} rows per id: repeated)", **base)
    return ColumnGuess(role="text", evidence=f"free text: {distinct} distinct values, {mean_len:.0f} characters on average", **base)


def _pick(guesses: list[ColumnGuess], role: str, hint: str | None = None) -> list[ColumnGuess]:
    """One column per single-valued role: the one the header names, else the first; the others are ignored."""
    found = [g for g in guesses if g.role == role]
    if len(found) <= 1:
        return guesses
    # The earliest hint word decides (RecordedDate before StartDate), then the column order.
    words = HINTS.get(hint or role, ())
    keep = next((g for w in words for g in found if w in _norm(g.name)), found[0])
    out = []
    for g in guesses:
        if g.role == role and g is not keep:
            g = ColumnGuess(**{**g.__dict__, "role": "ignored", "evidence": f"{g.evidence}; another {role} column ({keep.name}) is used"})
        out.append(g)
    return out


def _language(texts: list[pl.Series]) -> str:
    values = pl.concat(texts) if texts else pl.Series([], dtype=pl.String)
    values = values.filter(values.str.len_chars() > 0)
    if not len(values):
        return ""
    return "ja" if values.str.contains(_KANA.pattern).mean() >= 0.3 else "en"


def _inspect_tickets(path: Path, text: str, enc: str) -> ExportInspection:
    objs = [json.loads(line) for line in text.splitlines()[:200] if line.strip().startswith("{") and _is_json(line)]
    created = [o.get("created_at") for o in objs if isinstance(o, dict) and o.get("created_at")]
    rows = sum(1 for line in text.splitlines() if line.strip())
    descriptions = pl.Series([str(o.get("description") or "") for o in objs if isinstance(o, dict)], dtype=pl.String)
    span = None
    if created:
        days = pl.Series(created).str.to_datetime("%Y-%m-%dT%H:%M:%S%z", strict=False).dt.date().drop_nulls()
        span = (days.min(), days.max()) if len(days) else None
    cols = [ColumnGuess(name=k, role="ticket", evidence="Zendesk field", filled=len(objs), distinct=0) for k in sorted(ZENDESK_KEYS)]
    return ExportInspection(path, "tickets", "jsonl", enc, "zendesk", 0, rows, cols, _language([descriptions]), span,
                            notes=["support tickets (Zendesk JSON Lines: id, requester_id, created_at, first_reply_at, solved_at …)"])


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def inspect_file(path: str | Path) -> ExportInspection:
    """Read one export and guess every column's role (see the module docstring)."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        text, enc = readers.decode(path.read_bytes(), str(path))
        first = next((json.loads(line) for line in text.splitlines() if line.strip() and _is_json(line)), None)
        if isinstance(first, dict) and ZENDESK_KEYS <= set(first):
            return _inspect_tickets(path, text, enc)
    table, fmt, enc, preset, header_rows, questions = _read(path)
    names = readers.column_names(table.headers, preset)
    frame = table.frame.head(SAMPLE_ROWS)
    rows = len(frame)
    guesses = [
        guess_column(name, frame[f"c{i}"], rows, questions[i] if i < len(questions) else "")
        for i, name in enumerate(names)
    ]
    for role in ("response_id", "timestamp", "nps", "csat", "ces", "rating", "customer_id"):
        guesses = _pick(guesses, role)
    notes = []
    if not [g for g in guesses if g.role == "text"]:
        notes.append("no free-text column found: topics and sentiment will have nothing to read")
    if not [g for g in guesses if g.role == "response_id"]:
        notes.append("no column with a unique value per row: map columns.response_id by hand")
    if not [g for g in guesses if g.role == "timestamp"]:
        notes.append("no column reads as dates: map columns.timestamp and its timestamp_format by hand")
    span = None
    ts = next((g for g in guesses if g.role == "timestamp"), None)
    if ts is not None:
        col = frame[f"c{names.index(ts.name)}"]
        parsed = parsing.parse_timestamp_series(col, ts.timestamp_format or "auto", "UTC")
        if ts.timestamp_format == "excel" and parsed.is_null().all():
            parsed = parsing.parse_timestamp_series(col, "auto", "UTC")
        days = parsed.drop_nulls().dt.date()
        span = (days.min(), days.max()) if len(days) else None
    language = _language([frame[f"c{names.index(g.name)}"].fill_null("") for g in guesses if g.role == "text"])
    return ExportInspection(path, "survey", fmt, enc, preset, header_rows, rows + len(table.ragged), guesses, language, span, notes)
