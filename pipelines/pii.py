"""Personal data redacted: e-mail, IP, card, phone and postcode (and user patterns) become typed placeholders in
texts, and ids holding any become pseudonyms."""

from __future__ import annotations

import re

import polars as pl


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
    out = frame.with_columns(pl.col(column).alias("_original"), _redact_view(pl.col(column)).alias(column))
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
    out = out.with_columns(pl.concat_str(found, separator=",", ignore_nulls=True).fill_null("").alias("redactions"))
    # A text with nothing redacted stays as written: the NFKC view is only for matching.
    return out.with_columns(
        pl.when(pl.col("redactions") == "").then(pl.col("_original")).otherwise(pl.col(column)).alias(column)
    ).drop([f"_r_{k}" for k, _ in kinds] + ["_original"])


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
