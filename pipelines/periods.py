"""The run's periods: month arithmetic and the spans each comparison sets side by side.

``programme`` (before/after the programme date; absent when ``kpis.programme_date`` is null), ``window``
(previous vs current window) and ``yoy`` (current window vs a year earlier, only when the data cover it).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import polars as pl

from pipelines.reasons import why
from pipelines.schema import KpisParams


def add_months(d: date, months: int) -> date:
    index = d.year * 12 + d.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(d.day, calendar.monthrange(year, month + 1)[1]))


def month_span(start: date, end: date) -> float:
    """Calendar months in [start, end), fractional at partial months."""

    def position(d: date) -> float:
        return d.year * 12 + d.month + (d.day - 1) / calendar.monthrange(d.year, d.month)[1]

    return position(end) - position(start)


def month_index(period: str) -> int:
    """"YYYY-MM" → months since year 0."""
    year, month = period.split("-")
    return int(year) * 12 + int(month) - 1


@dataclass(frozen=True)
class Span:
    """Half-open date range [start, end)."""

    start: date
    end: date

    @property
    def label(self) -> str:
        if self.start >= self.end:
            return "(empty)"
        return f"{self.start:%Y-%m}〜{self.end - timedelta(days=1):%Y-%m}"

    @property
    def months(self) -> float:
        return max(month_span(self.start, self.end), 0.0)

    def select(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter((pl.col("date") >= self.start) & (pl.col("date") < self.end))


def latest(frame: pl.DataFrame) -> date | None:
    return frame["date"].max() if frame.height else None


def current_window(params: KpisParams, as_of: date) -> Span:
    return Span(add_months(as_of, -params.window_months), as_of)


def yoy_span(params: KpisParams, as_of: date) -> Span:
    """The current window moved back a year."""
    return Span(add_months(as_of, -params.window_months - 12), add_months(as_of, -12))


def yoy_missing(params: KpisParams, first: date, as_of: date) -> dict[str, Any] | None:
    """Why year over year cannot be computed (a ``reasons.why`` record), or None when the data cover the
    year-earlier window."""
    year_ago = yoy_span(params, as_of)
    if first.replace(day=1) <= year_ago.start:
        return None
    return why("yoy_short", first=f"{first:%Y-%m-%d}", current=current_window(params, as_of).label,
               needed=f"{year_ago.start:%Y-%m-%d}")


def spans(params: KpisParams, first: date, as_of: date) -> dict[str, tuple[Span, Span]]:
    """(period a, period b) per comparison the data and params allow."""
    w = params.window_months
    out: dict[str, tuple[Span, Span]] = {}
    if params.programme_date is not None:
        out["programme"] = (Span(first.replace(day=1), params.programme_date), Span(params.programme_date, as_of))
    out["window"] = (Span(add_months(as_of, -2 * w), add_months(as_of, -w)), current_window(params, as_of))
    if yoy_missing(params, first, as_of) is None:
        out["yoy"] = (yoy_span(params, as_of), current_window(params, as_of))
    return out


def its_start(programme_date: date) -> tuple[str, str | None]:
    """First post month of an interrupted time series and the transition month to leave out (one the date splits)."""
    if programme_date.day == 1:
        return f"{programme_date:%Y-%m}", None
    return f"{add_months(programme_date.replace(day=1), 1):%Y-%m}", f"{programme_date:%Y-%m}"
