"""Checks the schema cannot make: params that are well-typed but name things the data does not have.

``problems(params)`` needs only params.yaml (segments the sources map, KPI keys of the registry);
``data_problems(params, root)`` also reads the clean tables when they exist (programme date and windows within
the data's span). `koe check` runs both; `koe stage` runs them for its stage before the notebook starts. Each
message names the key, the value and what would be valid.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pipelines.kpi_registry import KPIS
from pipelines.schema import KoeParams
from pipelines.tables import SEGMENT_COLUMNS as SEGMENT_FIELDS

# The stages whose start each check guards (the runner runs only those of its stage).
PARAM_CHECK_STAGES = {"kpis", "sentiment"}
DATA_CHECK_STAGES = {"kpis"}


def data_segments(params: KoeParams) -> list[str]:
    """Segments the clean tables carry values for: those the survey sources map, their own segments, and the
    tickets' channel."""
    found: list[str] = []
    for src in params.clean.surveys:
        found += [s for s in SEGMENT_FIELDS if getattr(src.columns, s)] + list(src.segments)
    if params.clean.tickets is not None:
        found.append("channel")
    return list(dict.fromkeys(found))


def problems(params: KoeParams) -> list[str]:
    out: list[str] = []
    valid = data_segments(params)
    for section in ("kpis", "sentiment"):
        for seg in getattr(params, section).segments:
            if seg not in valid:
                out.append(f"{section}.segments: {seg!r} is not a segment of the data; valid: {valid or 'none mapped'} "
                           "(map it under clean.surveys[].columns or .segments first)")
    for key in params.kpis.meaningful_change:
        if key not in KPIS:
            out.append(f"kpis.meaningful_change: {key!r} is not a KPI; valid: {list(KPIS)}")
    return out


def data_span(params: KoeParams, root: Path) -> tuple[date, date] | None:
    """First and last day of the clean feedback and tickets (None when neither exists or both are empty)."""
    import polars as pl

    days: list[date] = []
    feedback, tickets = root / params.kpis.in_feedback, root / params.kpis.in_tickets
    if feedback.exists():
        d = pl.read_parquet(feedback, columns=["date_local"])["date_local"].drop_nulls()
        days += [d.min(), d.max()] if len(d) else []
    if tickets.exists():
        t = pl.read_parquet(tickets, columns=["created_utc"])["created_utc"].drop_nulls().dt.date()
        days += [t.min(), t.max()] if len(t) else []
    return (min(days), max(days)) if days else None


def data_problems(params: KoeParams, root: Path) -> list[str]:
    """Programme date and windows against the data's span (nothing to say before the clean stage has run)."""
    from pipelines.periods import add_months

    span = data_span(params, root)
    if span is None:
        return []
    first, last = span
    k = params.kpis
    w = k.window_months
    as_of = k.as_of or add_months(last.replace(day=1), 1)
    seen = f"the data run from {first} to {last}"
    out: list[str] = []
    if k.programme_date is not None and not first < k.programme_date <= last:
        out.append(f"kpis.programme_date: {k.programme_date} leaves the before or after period empty ({seen}); "
                   f"valid: a date after {first} and on or before {last}, or null for no programme comparison")
    lo, hi = add_months(first, w), add_months(last, w)  # as_of with data in both windows: (lo, hi]
    if not lo < as_of <= hi:
        what = "kpis.as_of" if k.as_of else f"kpis.as_of (null: the month after the data, {as_of})"
        out.append(f"{what} = {as_of} with kpis.window_months = {w}: the current window {add_months(as_of, -w)}..{as_of} "
                   f"and the previous one {add_months(as_of, -2 * w)}..{add_months(as_of, -w)} must both hold data ({seen}); "
                   f"valid: as_of after {lo} and on or before {hi}, or a smaller window_months")
    if k.programme_date is not None and k.programme_date >= as_of:
        out.append(f"kpis.programme_date: {k.programme_date} is not before kpis.as_of {as_of}: the after period is empty; "
                   f"valid: a date before {as_of}")
    return out
