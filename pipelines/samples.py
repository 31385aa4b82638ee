"""Per-KPI samples and the monthly table, driven by the KPI registry.

One code path for every KPI: the record's ``source`` picks the unit table (survey responses, tickets, customers
of a span), ``params.column`` the column, ``indicator`` turns it into 0/1 for proportions, ``censored_by`` adds
censoring for survival KPIs, and ``family`` picks the estimator and test of ``pipelines.stats``. Adding a KPI
is one registry record.

Survey KPIs count each response once: feedback has one row per response × question, so it is collapsed on
``response_id`` first. Ticket dates for period splits are the UTC creation date (the tables carry no local
ticket date; monthly rows use the local ``period`` column).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import polars as pl

from pipelines import kpi_registry
from pipelines import stats as st
from pipelines.kpi_registry import Kpi
from pipelines.kpi_tables import MONTHLY_SCHEMA
from pipelines.periods import add_months, latest
from pipelines.schema import KpisParams

TICKET_SEGMENTS = ("channel", "product")


@dataclass(frozen=True)
class Sample:
    """What one KPI needs from one cell: values (0/1 for proportions; with censoring flags) or a count and exposure."""

    values: np.ndarray
    observed: np.ndarray | None = None
    exposure: float = 1.0

    @property
    def n(self) -> int:
        return int(self.values.size)


# ---------------------------------------------------------------------------------------------
# Unit tables
# ---------------------------------------------------------------------------------------------


def responses(feedback: pl.DataFrame, params: KpisParams) -> pl.DataFrame:
    """One row per response: each survey KPI column and segment from whichever question row carries it.

    Columns the clean table lacks stay absent (their KPIs do not apply).
    """
    scores = {params.column(k.key) for k in kpi_registry.REGISTRY if k.source == "survey"}
    keep = [c for c in dict.fromkeys(["customer_id", *sorted(scores), *params.segments]) if c in feedback.columns]
    return (
        feedback.group_by("response_id")
        .agg(pl.col("date_local").min(), pl.col("period").min(), *[pl.col(c).drop_nulls().first() for c in keep])
        .rename({"date_local": "date"})
        .sort("response_id")
    )


def tickets_by_date(tickets: pl.DataFrame | None) -> pl.DataFrame:
    if tickets is None:
        return pl.DataFrame(schema={"date": pl.Date(), "period": pl.String(), "customer_id": pl.String()})
    return tickets.with_columns(date=pl.col("created_utc").dt.date()).sort("ticket_id")


@dataclass(frozen=True)
class Frame:
    """The run's per-response and per-ticket tables and its date frame."""

    responses: pl.DataFrame
    tickets: pl.DataFrame
    first: date
    as_of: date
    has_tickets: bool  # a tickets table was given (an empty one means no tickets: rates of zero)


def frame(feedback: pl.DataFrame, tickets: pl.DataFrame | None, params: KpisParams) -> Frame | None:
    """The run's tables; None when there is nothing dated to compare."""
    resp = responses(feedback, params)
    tix = tickets_by_date(tickets)
    check_scales(resp, params)
    as_of = params.as_of
    if as_of is None:
        last = latest(resp) or latest(tix)
        if last is None:
            return None
        as_of = add_months(last.replace(day=1), 1)
    firsts = [f["date"].min() for f in (resp, tix) if f.height]
    return Frame(resp, tix, min(firsts) if firsts else as_of, as_of, tickets is not None)


def check_scales(resp: pl.DataFrame, params: KpisParams) -> None:
    """Answers must lie on their configured scale: a clear error names the first bad response."""
    for name in dict.fromkeys(kpi_registry.get(k).scale for k in params.enabled_kpis):
        section = getattr(params, name) if name else None
        column = getattr(section, "column", name)
        if not hasattr(section, "scale_min") or column not in resp.columns:
            continue
        lo, hi = section.scale_min, section.scale_max
        bad = resp.filter(pl.col(column).is_not_null() & ~pl.col(column).is_between(lo, hi))
        if bad.height:
            raise ValueError(
                f"clean feedback column {column!r}: {bad.height} {name.upper()} answer(s) outside {lo}–{hi}, "
                f"e.g. {bad[column][0]:g} in response {bad['response_id'][0]} (check params.yaml › kpis.{name})"
            )


def activity(fr: Frame, sources: Sequence[str]) -> pl.DataFrame:
    """One row per customer touch (a survey response or a ticket): customer_id, date."""
    parts = [
        f.select(pl.col("customer_id").cast(pl.String), "date")
        for source, f in (("survey", fr.responses), ("tickets", fr.tickets))
        if source in sources and f.height and "customer_id" in f.columns
    ]
    if not parts:
        return pl.DataFrame(schema={"customer_id": pl.String(), "date": pl.Date()})
    return pl.concat(parts).filter(pl.col("customer_id").is_not_null() & (pl.col("customer_id") != ""))


def customers(touches: pl.DataFrame, start: date, end: date) -> pl.DataFrame:
    """One row per customer active in [start, end) with the customer KPIs' flags.

    * ``repeated``: active at least twice in the span.
    * ``churned``: for customers active in the span's first half, not active again in its second half
      (null for the others: they are not in the churn cohort).
    """
    mid = start + (end - start) / 2
    inside = touches.filter((pl.col("date") >= start) & (pl.col("date") < end))
    return (
        inside.group_by("customer_id")
        .agg(repeated=pl.len() >= 2, early=(pl.col("date") < mid).any(), late=(pl.col("date") >= mid).any())
        .select("customer_id", "repeated", churned=pl.when(pl.col("early")).then(~pl.col("late")))
        .sort("customer_id")
    )


def customer_sample(kpi: str, touches: pl.DataFrame, start: date, end: date) -> np.ndarray:
    """0/1 per customer for a customer KPI over [start, end) (see ``customers``)."""
    return sample(kpi_registry.get(kpi), customers(touches, start, end), KpisParams()).values


# ---------------------------------------------------------------------------------------------
# Samples, estimates and comparisons: one path per statistical family
# ---------------------------------------------------------------------------------------------


def indicator(kpi: Kpi, values: pl.Series, params: KpisParams) -> pl.Series:
    """The proportion KPI's 0/1 per unit."""
    section = params.scale(kpi.key)
    if kpi.indicator == "top_box":
        return values >= section.top_box_min
    if kpi.indicator == "good_values":
        return values.cast(pl.String).is_in(section.good_values)
    return values.cast(pl.Boolean)  # "flag"


def sample(kpi: Kpi, cell: pl.DataFrame, params: KpisParams, exposure: float = 1.0) -> Sample:
    if kpi.family == "rate":  # one event per row of the unit table
        return Sample(np.ones(cell.height), exposure=exposure)
    col = params.column(kpi.key)
    rows = cell.filter(pl.col(col).is_not_null())
    values = rows[col]
    if kpi.indicator:
        values = indicator(kpi, values, params)
    observed = ~rows[kpi.censored_by].fill_null(False).to_numpy() if kpi.censored_by else None
    return Sample(values.cast(pl.Float64).to_numpy(), observed=observed)


Estimator = Callable[[Sample, float], st.Estimate]
Comparer = Callable[[Sample, Sample, float, float], st.Comparison]

ESTIMATORS: dict[str, Estimator] = {
    "nps": lambda s, alpha: st.nps_estimate(s.values, alpha),
    "mean": lambda s, alpha: st.mean_estimate(s.values, alpha),
    "proportion": lambda s, alpha: st.proportion_estimate(s.values, alpha),
    "rate": lambda s, alpha: st.rate_estimate(s.n, s.exposure, alpha),
    "median": lambda s, alpha: st.median_estimate(s.values, alpha),
    "survival": lambda s, alpha: st.km_median(s.values, s.observed, alpha),
}
COMPARERS: dict[str, Comparer] = {
    "nps": lambda a, b, alpha, power: st.compare_nps(a.values, b.values, alpha, power),
    "mean": lambda a, b, alpha, power: st.compare_means(a.values, b.values, alpha, power),
    "proportion": lambda a, b, alpha, power: st.compare_proportions(
        int(a.values.sum()), a.n, int(b.values.sum()), b.n, alpha, power),
    "rate": lambda a, b, alpha, power: st.compare_rates(a.n, a.exposure, b.n, b.exposure, alpha, power),
    "median": lambda a, b, alpha, power: st.compare_medians(a.values, b.values, alpha, power),
    "survival": lambda a, b, alpha, power: st.compare_survival(a.values, a.observed, b.values, b.observed, alpha, power),
}


def estimate(kpi: Kpi, s: Sample, alpha: float) -> st.Estimate:
    """(value, ci_low, ci_high) of one non-empty sample."""
    return ESTIMATORS[kpi.family](s, alpha)


def compare_cell(kpi: Kpi, a: Sample, b: Sample, params: KpisParams) -> st.Comparison:
    """Full comparison, or point estimates only when either period is below ``min_n``."""
    if min(a.n, b.n) >= params.min_n:
        return COMPARERS[kpi.family](a, b, params.alpha, params.power)

    def point(s: Sample) -> float | None:
        if kpi.family == "rate":  # no events is a real rate of zero, not a missing estimate
            return s.n / s.exposure if s.exposure > 0 else None
        return estimate(kpi, s, params.alpha)[0] if s.n else None

    est_a, est_b = point(a), point(b)
    return st.Comparison(
        est_a=est_a, est_b=est_b, diff=est_b - est_a if est_a is not None and est_b is not None else None,
        ci_low=None, ci_high=None, p_value=None, effect_size=None, effect_size_kind=kpi.effect_kind, mde=None,
        n_a=a.n, n_b=b.n, method=kpi.method,
    )


# ---------------------------------------------------------------------------------------------
# Which KPIs the data support
# ---------------------------------------------------------------------------------------------


def coverage(fr: Frame | None, params: KpisParams) -> tuple[tuple[Kpi, ...], list[dict[str, str]]]:
    """(enabled KPIs the data support, in registry order; ``{kpi, reason}`` for the enabled others)."""
    ok: list[Kpi] = []
    skipped: list[dict[str, str]] = []
    for kpi in kpi_registry.REGISTRY:
        if kpi.key not in params.enabled_kpis:
            continue
        reason = _missing(kpi, fr, params)
        if reason:
            skipped.append({"kpi": kpi.key, "reason": reason})
        else:
            ok.append(kpi)
    return tuple(ok), skipped


def _missing(kpi: Kpi, fr: Frame | None, params: KpisParams) -> str | None:
    """Why the KPI cannot be computed on this run's data, or None."""
    if kpi.scale and params.scale(kpi.key) is None:
        return f"kpis.{kpi.scale} is not set in params.yaml (which column, which values)"
    if fr is None:
        return "there are no dated responses or tickets"
    if kpi.source == "customers":
        if not activity(fr, params.activity_sources).height:
            return f"no customer ids in the activity sources ({', '.join(params.activity_sources) or 'none'})"
        return None
    if kpi.source == "tickets" and not fr.has_tickets:
        return "there is no tickets table (no ticket source, or its export holds no tickets)"
    table, what = (fr.responses, "clean feedback table") if kpi.source == "survey" else (fr.tickets, "clean tickets table")
    col = params.column(kpi.key)
    if col not in table.columns:
        return f"the {what} has no column {col!r}"
    # A survey may leave a question out; tickets always carry their durations (an empty table is zero tickets).
    if kpi.source == "survey" and not table[col].drop_nulls().len():
        return f"the {what} has no answers in column {col!r}"
    return None


def groups(kpis: Sequence[Kpi], fr: Frame, params: KpisParams) -> list[tuple[tuple[Kpi, ...], pl.DataFrame, list[str]]]:
    """(KPIs, unit table, segment columns) for the per-row sources (survey, tickets)."""
    ticket_segments = [c for c in params.segments if c in TICKET_SEGMENTS]
    return [
        (tuple(k for k in kpis if k.source == "survey"), fr.responses, list(params.segments)),
        (tuple(k for k in kpis if k.source == "tickets"), fr.tickets, ticket_segments),
    ]


def cells(table: pl.DataFrame, segments: Sequence[str]) -> list[tuple[str, str]]:
    """("all", "all") plus every (segment column, value) present in ``table``.

    A column whose single value covers every row would only repeat the overall cell (and inflate the BH
    family), so it is skipped.
    """
    out = [("all", "all")]
    for col in segments:
        if col not in table.columns:
            continue
        values = table[col].drop_nulls().unique().sort().to_list()
        if len(values) == 1 and table[col].null_count() == 0:
            continue
        out.extend((col, str(v)) for v in values)
    return out


def in_cell(table: pl.DataFrame, col: str, value: str) -> pl.DataFrame:
    return table if col == "all" else table.filter(pl.col(col).cast(pl.String) == value)


# ---------------------------------------------------------------------------------------------
# The monthly table
# ---------------------------------------------------------------------------------------------


def monthly_kpis(feedback: pl.DataFrame, tickets: pl.DataFrame | None, params: KpisParams | None = None) -> pl.DataFrame:
    """KPI value, n and CI per local month, overall and per segment value.

    Intervals by family: NPS adjusted Wald (Rocks 2016); means t; proportions Wilson; rates exact Poisson
    (per month); medians distribution-free; survival Kaplan–Meier median with open durations censored.
    Cells with n = 0 produce no row. Customer KPIs (churn, repeat) are defined over a window, not per month,
    and are absent.
    """
    params = params or KpisParams()
    fr = frame(feedback, tickets, params)
    if fr is None:
        return pl.DataFrame(schema=MONTHLY_SCHEMA)
    kpis, _ = coverage(fr, params)
    rows: list[dict[str, Any]] = []
    for group, table, segments in groups(kpis, fr, params):
        if not group:
            continue
        for period in table["period"].drop_nulls().unique().sort().to_list():
            month = table.filter(pl.col("period") == period)
            for col, value in cells(month, segments):
                cell = in_cell(month, col, value)
                for kpi in group:
                    s = sample(kpi, cell, params)
                    if s.n == 0:
                        continue
                    est, low, high = estimate(kpi, s, params.alpha)
                    rows.append(dict(period=period, segment_col=col, segment_value=value, kpi=kpi.key,
                                     value=est, n=s.n, ci_low=low, ci_high=high))
    return pl.DataFrame(rows, schema=MONTHLY_SCHEMA).sort(["kpi", "segment_col", "segment_value", "period"])
