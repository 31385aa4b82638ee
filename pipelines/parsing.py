"""Parsing raw field text into typed values: timestamps (strftime formats, ISO, Excel serials, time zones) and their
plausible range, and scores on their scales."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from pipelines.schema import SurveySource


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


# ---------------------------------------------------------------- scores

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
