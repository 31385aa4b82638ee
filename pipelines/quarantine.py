"""Quarantine bookkeeping of the clean stage: counts per file, the quarantine frame (mapped fields only, redacted),
and the check that fails a file whose rows were mostly quarantined for one reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from pipelines.readers import InputError, RawTable
from pipelines.pii import redact
from pipelines.schema import CleanParams, SurveySource, TicketSource
from pipelines.textnorm import normalise_text


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


def _mapped_fields(fields: list[str], names: list[str], labelled: list[tuple[str, str]]) -> str:
    """A ragged row's mapped positions as "field=value"; the positions of a row of the wrong width may be shifted,
    so values are redacted like any text (IP addresses included)."""
    return " | ".join(f"{f}={fields[names.index(c)]}" for f, c in labelled if names.index(c) < len(fields))


def _quarantine_frame(q: pl.DataFrame, source: str, file: str, params: CleanParams) -> pl.DataFrame:
    # Quarantined content is redacted too: the quarantine is an output of this stage.
    q = redact(q.with_columns(normalise_text(pl.col("content")).alias("content")), "content", params.redact_patterns)
    return q.select(
        pl.lit(source).alias("source"), pl.lit(file).alias("file"), pl.col("row").cast(pl.Int64), "reason",
        "content", "redactions",
    ).sort("row")


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
