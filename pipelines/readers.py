"""Reading raw exports: bytes decoded strictly, then CSV/TSV, .xlsx, Parquet or JSON Lines read into one table of strings.

A row of the wrong width (or a line that is not a JSON object) is kept aside with its row number, so the clean stage
can account for every row read. Nothing is parsed, normalised or redacted here.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipelines.schema import _SM_PLAIN, SurveySource


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


# ---------------------------------------------------------------- reading

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
