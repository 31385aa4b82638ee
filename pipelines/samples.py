"""Per-KPI samples and the monthly table, driven by the KPI registry.

One code path for every KPI: the record's ``source`` picks the unit table (survey responses, tickets, customers
of a span), ``params.column`` the column, ``indicator`` turns it into 0/1 for proportions, ``censored_by`` adds
censoring for survival KPIs, and ``family`` picks the estimator and test of ``pipelines.stats``. Adding a KPI
is one registry record.

Survey KPIs count each response once: feedback has one row per response × question, so it is collapsed on
``response_id`` first. Ticket dates for period splits are the UTC creation date (the tables carry no local
ticket date; monthly rows use the local ``period`` column).

Exposure (ticket volume) and customer spans end where the data end (``Frame.data_end``, the day after the
last response or ticket), so a month the export cuts short is not read as a drop.

Dependence (``inflation``): responses are not independent draws. Two sources widen the NPS, mean,
proportion and rate tests, as a variance inflation per period (Kish design effect; the family's own test then
runs on n / deff):

* Repeat respondents: the cluster-robust (sandwich, by ``customer_id``) variance of the period mean over
  the independent one, Σ_c (Σ_i e_i)² / Σ_i e_i² (never below 1).
* Months that differ beyond sampling noise, and persist: the KPI's monthly series is read as segment means
  plus AR(1) errors, Cov = σ² V with V = S^½ R(ρ) S^½ (R_ij = ρ^|i−j|, S the months' variance shape), the
  segments cut at every boundary the run tests, so a real shift there does not inflate its own noise
  (``month_variance``). ρ is the bias-corrected lag-1 estimate one standard error up
  (``pipelines.stats.ar1_rho``: on 12 months ρ̂ is uncertain by about ±0.27, and an understated ρ is a false
  alarm); σ² is the scale of the feasible GLS fit on the whitened residuals (Prais & Winsten 1954; statsmodels
  ``GLS``), which for a given V is σ²χ²_{T−p}/(T−p) exactly, so the test reads t on the residual df
  (months − segments − 1 for ρ), as ``pipelines.its`` does. The month noise of the difference b − a is that
  of its contrast c of the monthly means (c_m = the month's share of period b less its share of period a):
  c'Σ̂c, the positive covariance AR(1) gives the before and after means included, less the sampling part the
  family's test already counts, never below 0 (``inflation``; the "max(1, q)" of the modified Knapp–Hartung
  method, Röver, Knapp & Friede 2015: the sampling variance is known, a scale below it is noise). The earlier construction, a
  DerSimonian–Laird-style moment τ² with Satterthwaite df, read a quadratic form with fewer effective df than
  it claimed and rejected 7 % (ρ = 0.3) and 13 % (ρ = 0.6) of true nulls; see bench/NOTES-issue14.md.
  The whole series, sampling noise included, is read as AR(1), as in ``pipelines.its``: ρ̂ is measured on the
  whole series (sampling noise pulls it towards 0), and a white part read as persistent only overstates the
  variance of a long contrast. The cost is power when months are independent (MDE +11–37 % in
  ``bench/robustness.py``); the MDE (``pipelines.stats.mde_multiplier`` on the residual df, at the BH
  threshold the decision uses) is still found ≥ 80 % of the time.
  Σ̂ is measured on the KPI's overall monthly series, and its month part (c'Σ̂c less the overall series'
  sampling part) is added to every cell's own sampling variance on the unit scale: a segment of ~40
  responses a month cannot tell month noise from sampling noise (its estimate is mostly noise and would cost
  the power the simulations show), while month-wide swings reach every segment.
  A random-effects model per cell (statsmodels MixedLM) would say the same at far greater cost: the run has
  hundreds of cells. Durations (median, survival) and customer KPIs are not inflated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

import math

import numpy as np
import polars as pl

from pipelines import kpi_registry
from pipelines import stats as st
from pipelines.kpi_registry import Kpi
from pipelines.reasons import why
from pipelines.kpi_tables import MONTHLY_SCHEMA
from pipelines.periods import Span, add_months, latest, month_span
from pipelines.schema import KpisParams

TICKET_SEGMENTS = ("channel", "product")


@dataclass(frozen=True)
class Sample:
    """What one KPI needs from one cell: values (0/1 for proportions; with censoring flags) or a count and exposure."""

    values: np.ndarray
    observed: np.ndarray | None = None
    exposure: float = 1.0
    months: np.ndarray | None = None  # local month ("YYYY-MM") per value, where the unit table has one
    clusters: np.ndarray | None = None  # customer per value (survey), for the cluster-robust inflation

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
    data_end: date | None = None  # the day after the last response or ticket (exposure ends here)

    def clip(self, span: Span) -> Span:
        """The part of ``span`` the data cover (exposure, customer activity)."""
        end = min(span.end, self.data_end) if self.data_end else span.end
        return Span(max(span.start, self.first), max(end, max(span.start, self.first)))


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
    lasts = [f["date"].max() + timedelta(days=1) for f in (resp, tix) if f.height]
    return Frame(resp, tix, min(firsts) if firsts else as_of, as_of, tickets is not None,
                 max(lasts) if lasts else None)


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
    months = cell["period"].to_numpy() if "period" in cell.columns else None
    if kpi.family == "rate":  # one event per row of the unit table
        return Sample(np.ones(cell.height), exposure=exposure, months=months)
    col = params.column(kpi.key)
    if kpi.censored_at:  # no value yet: censored at the time elapsed so far
        rows = cell.filter(pl.col(col).is_not_null() | pl.col(kpi.censored_at).is_not_null())
        values = rows[col].fill_null(rows[kpi.censored_at])
        observed = rows[col].is_not_null().to_numpy()
    else:
        rows = cell.filter(pl.col(col).is_not_null())
        values = rows[col]
        observed = ~rows[kpi.censored_by].fill_null(False).to_numpy() if kpi.censored_by else None
    if kpi.indicator:
        values = indicator(kpi, values, params)
    return Sample(
        values.cast(pl.Float64).to_numpy(), observed=observed,
        months=rows["period"].to_numpy() if "period" in rows.columns else None,
        clusters=rows["customer_id"].cast(pl.String).to_numpy() if kpi.source == "survey" and "customer_id" in rows.columns else None,
    )


Estimator = Callable[[Sample, float], st.Estimate]

ESTIMATORS: dict[str, Estimator] = {
    "nps": lambda s, alpha: st.nps_estimate(s.values, alpha),
    "mean": lambda s, alpha: st.mean_estimate(s.values, alpha),
    "proportion": lambda s, alpha: st.proportion_estimate(s.values, alpha),
    "rate": lambda s, alpha: st.rate_estimate(s.n, s.exposure, alpha),
    "median": lambda s, alpha: st.median_estimate(s.values, alpha),
    "survival": lambda s, alpha: st.km_median(s.values, s.observed, alpha),
}
Deff = tuple[float, float]
COMPARERS: dict[str, Callable[[Sample, Sample, float, float, Deff], st.Comparison]] = {
    "nps": lambda a, b, alpha, power, deff: st.compare_nps(a.values, b.values, alpha, power, deff),
    "mean": lambda a, b, alpha, power, deff: st.compare_means(a.values, b.values, alpha, power, deff),
    "proportion": lambda a, b, alpha, power, deff: st.compare_proportions(
        float(a.values.sum()), a.n, float(b.values.sum()), b.n, alpha, power, deff),
    "rate": lambda a, b, alpha, power, deff: st.compare_rates(a.n, a.exposure, b.n, b.exposure, alpha, power, deff),
    "median": lambda a, b, alpha, power, deff: st.compare_medians(a.values, b.values, alpha, power),
    "survival": lambda a, b, alpha, power, deff: st.compare_survival(a.values, a.observed, b.values, b.observed, alpha, power),
}
INFLATED = ("nps", "mean", "proportion", "rate")  # families the dependence inflation applies to


def estimate(kpi: Kpi, s: Sample, alpha: float) -> st.Estimate:
    """(value, ci_low, ci_high) of one non-empty sample."""
    return ESTIMATORS[kpi.family](s, alpha)


def compare_cell(kpi: Kpi, a: Sample, b: Sample, params: KpisParams, deff: Deff = (1.0, 1.0),
                 df: float = math.inf, power_df: float | None = None) -> st.Comparison:
    """Full comparison; below ``min_n`` in either period the estimates and interval only (no test, no MDE).

    Ticket volume is a count over a fixed exposure: the count is the outcome, not a sample size, so it is
    tested whenever both periods have exposure (gating on it would let the outcome pick the BH family).
    """
    if kpi.family == "rate":
        if a.exposure > 0 and b.exposure > 0:
            res = COMPARERS["rate"](a, b, params.alpha, params.power, deff)
            return st.with_t_reference(res, df, params.alpha, params.power, power_df)
    elif min(a.n, b.n) >= params.min_n:
        res = COMPARERS[kpi.family](a, b, params.alpha, params.power, deff)
        return st.with_t_reference(res, df, params.alpha, params.power, power_df)
    elif min(a.n, b.n) >= (2 if kpi.family == "mean" else 1):
        res = COMPARERS[kpi.family](a, b, params.alpha, params.power, deff)
        return replace(res, p_value=None, mde=None, mde_at=None)

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
# Dependence: variance inflation per period (see the module note)
# ---------------------------------------------------------------------------------------------


MIN_RESIDUAL_DF = 3  # month residuals needed to estimate the month component at all (fewer: none)


def _unit(kpi: Kpi, values: np.ndarray) -> np.ndarray:
    return st.nps_unit_scores(values) if kpi.family == "nps" else values


@dataclass(frozen=True)
class MonthNoise:
    """Covariance of a cell's monthly series (Σ̂ = σ̂² V, AR(1) errors) and the sampling part it contains."""

    rho: float = 0.0
    df: float = math.inf  # residual degrees of freedom behind σ̂² (for the t reference)
    months: tuple[str, ...] = ()  # "YYYY-MM" of the rows and columns of ``cov``
    cov: np.ndarray | None = None  # Σ̂: covariance of the monthly means, month noise and sampling together
    sampling: np.ndarray | None = None  # each month's sampling variance (the diagonal part of Σ̂ already known)

    def contrast(self, weights: dict[str, float]) -> tuple[float, float]:
        """(c'Σ̂c, Σ_m c_m² v_m) for a contrast c of the monthly means (months outside the series: weight 0)."""
        if self.cov is None:
            return 0.0, 0.0
        c = np.array([weights.get(m, 0.0) for m in self.months])
        return float(c @ self.cov @ c), float(np.sum(c ** 2 * self.sampling))


def month_variance(kpi: Kpi, series: Sample, exposures: dict[str, float] | None = None,
                   splits: Sequence[date] = ()) -> MonthNoise:
    """Covariance of one cell's monthly series under AR(1) errors, on the family's unit scale (per month for rates).

    Model: the monthly means are segment means plus errors with Cov = σ² V, V = S^½ R(ρ) S^½, R_ij = ρ^|i−j|
    (calendar months), the segments cut at ``splits`` (the boundaries being tested), so a real shift there does
    not count as noise. ρ: ``pipelines.stats.ar1_rho`` of the residuals around the segment means, one SE up (as
    in ``pipelines.its``). S_m = τ̃² + v_m shapes the months by their sampling variance v_m (τ̃² the moment
    estimate E[r'r] = τ² tr(M R) + Σ M_mm v_m, DerSimonian–Laird style; only the shape, so a short month
    weighs less). σ² is the scale of the feasible GLS fit (statsmodels ``GLS``, Prais–Winsten's error model):
    e'V⁻¹e / (T − p) from the whitened residuals, which for a given V is σ² χ²_{T−p}/(T−p) exactly, so the
    test can read t (the moment estimate of τ² alone reads a quadratic form with fewer effective df: liberal).
    Families not inflated, or fewer than ``MIN_RESIDUAL_DF`` residual degrees of freedom: no month component.
    """
    if kpi.family not in INFLATED or series.months is None or not series.n:
        return MonthNoise()
    months, inverse = np.unique(series.months, return_inverse=True)
    counts = np.bincount(inverse, minlength=months.size).astype(float)
    if kpi.family == "rate":
        expo = np.array([(exposures or {}).get(m, 1.0) for m in months])
        keep = expo > 0
        months, counts, expo = months[keep], counts[keep], expo[keep]
        means = counts / expo
        sampling = (counts.sum() / expo.sum()) / expo  # Poisson, at the pooled rate
    else:
        u = _unit(kpi, series.values)
        means = np.bincount(inverse, weights=u, minlength=months.size) / counts
        within = float(np.sum((u - means[inverse]) ** 2)) / max(u.size - months.size, 1)
        sampling = within / counts
    idx = np.array([int(m[:4]) * 12 + int(m[5:7]) - 1 for m in months])
    cuts = sorted({d.year * 12 + d.month - 1 + (d.day > 1) for d in splits})
    segment = np.searchsorted(np.array(cuts, dtype=int), idx, side="right")
    seg_ids, seg_inv = np.unique(segment, return_inverse=True)
    df = months.size - seg_ids.size
    if df < MIN_RESIDUAL_DF:
        return MonthNoise()
    # Residuals of the monthly means around their segment means; AR(1) ρ as in pipelines.its.
    X = (seg_inv[:, None] == np.arange(seg_ids.size)[None, :]).astype(float)
    M = np.eye(months.size) - X @ np.linalg.pinv(X)
    resid = M @ means
    denom = float(resid @ resid)
    if denom <= 0:  # the months agree exactly: nothing to estimate
        return MonthNoise()
    lag = np.abs(np.subtract.outer(idx, idx))
    A = (lag == 1) * (segment[:, None] == segment[None, :]) / 2.0
    rho = st.ar1_rho(resid, M, A, 0.9)
    R = rho ** lag
    # The whole series is read as AR(1), sampling noise included (as in pipelines.its): ρ̂ is measured on the
    # whole series, and a white part read as persistent only overstates the variance of a long contrast.
    tau2 = max((denom - float(np.sum(np.diag(M) * sampling))) / float(np.trace(M @ R)), 0.0)
    shape = np.sqrt(tau2 + sampling)
    V = shape[:, None] * R * shape[None, :]
    from statsmodels.regression.linear_model import GLS

    sigma2 = float(GLS(means, X, sigma=V).fit().scale)  # e'V⁻¹e / (T − p)
    # One df for ρ, as in pipelines.its (T − p − 1).
    return MonthNoise(rho, float(df - A.any()), tuple(str(m) for m in months), sigma2 * V, sampling)


def period_inflation(kpi: Kpi, s: Sample, exposures: dict[str, float] | None = None
                     ) -> tuple[float, dict[str, float], float]:
    """(cluster inflation ≥ 1, the months' shares of the period, the independent variance of the period's
    estimate)."""
    if kpi.family not in INFLATED or s.n < 2:
        return 1.0, {}, 0.0
    if kpi.family == "rate":
        expo = {m: e for m, e in (exposures or {}).items() if e > 0}
        independent = (s.n / s.exposure) / s.exposure if s.exposure > 0 else 0.0
        if independent <= 0 or not expo:
            return 1.0, {}, 0.0
        total = sum(expo.values())
        return 1.0, {m: e / total for m, e in expo.items()}, independent
    u = _unit(kpi, s.values)
    e = u - u.mean()
    ss = float(np.sum(e ** 2))
    if ss == 0:
        return 1.0, {}, 0.0
    independent = ss / (u.size - 1) / u.size
    cluster = 1.0
    if s.clusters is not None:
        keys = np.where(s.clusters == None, np.arange(u.size).astype(str), s.clusters).astype(str)  # noqa: E711
        _, inv = np.unique(keys, return_inverse=True)
        cluster = max(float(np.sum(np.bincount(inv, weights=e) ** 2)) / ss, 1.0)
    shares: dict[str, float] = {}
    if s.months is not None:
        months, counts = np.unique(s.months, return_counts=True)
        shares = {str(m): c / u.size for m, c in zip(months, counts, strict=True)}
    return cluster, shares, independent


def inflation(kpi: Kpi, a: Sample, b: Sample, noise: MonthNoise, exposures: tuple[dict[str, float], dict[str, float]]
              ) -> tuple[Deff, float, float]:
    """(deff per period, df of the t reference, df of the MDE's power).

    The month noise in the difference b − a is that of the contrast c (c_m = w_b,m − w_a,m, the months' shares
    of each period) of the monthly series: c'Σ̂c, with the covariance between the two periods' means (AR(1)
    makes it positive, so leaving it out would overstate the variance), less the sampling part Σ c_m² v_m the
    cell's own test already counts. For the overall cell the variance is then c'Σ̂c itself (the GLS variance of
    the contrast); a segment cell adds the month-wide noise to its own sampling. The month part is never below
    0: the sampling variance is known, and a whitened-residual scale below it is noise (the "max(1, q)" of the
    modified Knapp–Hartung method). It is spread over both periods' deff so the family's test sees the total.
    df: Satterthwaite, ``noise.df`` × (variance / c'Σ̂c)², the estimated part being σ̂²c'Vc; the overall cell
    reads t on the residual df (T − p − 1). The MDE's power uses the same df (for the overall cell it is the
    residual df, not a plug-in one that grows when σ̂² came out low).
    """
    ca, wa, va = period_inflation(kpi, a, exposures[0])
    cb, wb, vb = period_inflation(kpi, b, exposures[1])
    c = {m: wb.get(m, 0.0) - wa.get(m, 0.0) for m in {*wa, *wb}}
    estimated, sampling = noise.contrast(c)
    month = max(estimated - sampling, 0.0)
    total = ca * va + cb * vb + month
    if va + vb <= 0 or estimated <= 0:
        return (ca, cb), math.inf, math.inf
    extra = month / (va + vb)  # the same addition to both periods' deff: the sum is the total variance
    df = noise.df * max(total / estimated, 1.0) ** 2
    return (ca + extra, cb + extra), df, df


def month_exposures(span: Span) -> dict[str, float]:
    """Months of exposure per local month inside ``span`` (fractional at its ends)."""
    out: dict[str, float] = {}
    start = span.start.replace(day=1)
    while start < span.end:
        nxt = add_months(start, 1)
        out[f"{start:%Y-%m}"] = month_span(max(start, span.start), min(nxt, span.end))
        start = nxt
    return out


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
            skipped.append({"kpi": kpi.key, **reason})
        else:
            ok.append(kpi)
    return tuple(ok), skipped


def _missing(kpi: Kpi, fr: Frame | None, params: KpisParams) -> dict[str, Any] | None:
    """Why the KPI cannot be computed on this run's data (a ``reasons.why`` record), or None."""
    if kpi.scale and params.scale(kpi.key) is None:
        return why("scale_not_set", setting=kpi.scale)
    if fr is None:
        return why("no_dated_rows")
    if kpi.source == "customers":
        if not activity(fr, params.activity_sources).height:
            return why("no_customer_ids", sources=", ".join(params.activity_sources) or "none")
        return None
    if kpi.source == "tickets" and not fr.has_tickets:
        return why("no_tickets")
    table = fr.responses if kpi.source == "survey" else fr.tickets
    col = params.column(kpi.key)
    if col not in table.columns:
        return why("no_column_survey" if kpi.source == "survey" else "no_column_tickets", column=col)
    # A survey may leave a question out; tickets always carry their durations (an empty table is zero tickets).
    if kpi.source == "survey" and not table[col].drop_nulls().len():
        return why("no_answers", column=col)
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
    (per month of exposure: a month the data start or end inside counts in part); medians distribution-free; survival Kaplan–Meier median with open durations censored.
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
            start = date(int(period[:4]), int(period[5:7]), 1)
            exposure = fr.clip(Span(start, add_months(start, 1))).months  # a month the data cut short counts in part
            for col, value in cells(month, segments):
                cell = in_cell(month, col, value)
                for kpi in group:
                    s = sample(kpi, cell, params, exposure)
                    if s.n == 0:
                        continue
                    est, low, high = estimate(kpi, s, params.alpha)
                    rows.append(dict(period=period, segment_col=col, segment_value=value, kpi=kpi.key,
                                     value=est, n=s.n, ci_low=low, ci_high=high))
    return pl.DataFrame(rows, schema=MONTHLY_SCHEMA).sort(["kpi", "segment_col", "segment_value", "period"])
