"""Voice-of-the-customer KPIs: monthly values and shift tests with FDR control.

Two public layers:

* statistical primitives (``nps_*``, ``compare_*``, ``bh_adjust``) on plain arrays, each
  delegating to statsmodels / scipy / lifelines where those provide the test;
* table functions (``monthly_kpis``, ``shift_tests``, ``alerts``, ``kpi_metrics``,
  ``headline_findings``) on the FEEDBACK_SCHEMA / TICKETS_SCHEMA tables.

Survey KPIs count each response once: feedback has one row per response × question, so it
is collapsed on ``response_id`` first. Ticket dates for period splits are the UTC creation
date (the tables carry no local ticket date; monthly rows use the local ``period`` column).

Verdict rule of ``shift_tests`` (in this order):

1. fewer than ``min_n`` observations in either period, or no test possible
   → "too few responses to tell" (such cells get no p-value and stay out of the BH family);
2. BH-adjusted p ≤ ``fdr_q`` → "improved" / "worsened" by the sign of the difference and
   the KPI's direction;
3. not significant and the minimum detectable |difference| exceeds the KPI's
   ``meaningful_change`` → "too few responses to tell" (a real, meaningful change could
   have been missed);
4. otherwise → "no detectable change".
"""

from __future__ import annotations

import calendar
import math
from functools import lru_cache
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test
from lifelines.utils import median_survival_times
from pydantic import Field
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    test_proportions_2indep,
)
from statsmodels.stats.rates import (
    confint_poisson,
    confint_poisson_2indep,
    power_poisson_diff_2indep,
    test_poisson_2indep,
)
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from pipelines._schema import StrictModel

PROMOTER_MIN = 9  # NPS promoters answer 9–10
DETRACTOR_MAX = 6  # NPS detractors answer 0–6
CSAT_TOP2_MIN = 4  # top-2 box of the 1–5 CSAT scale

SURVEY_KPIS = ("nps", "csat_mean", "csat_top2")
TICKET_KPIS = ("ticket_volume", "first_response_h", "resolution_h")
KPIS = SURVEY_KPIS + TICKET_KPIS
HIGHER_IS_BETTER = {
    "nps": True,
    "csat_mean": True,
    "csat_top2": True,
    "ticket_volume": False,
    "first_response_h": False,
    "resolution_h": False,
}
# Ticket KPIs have no natural absolute scale, so their meaningful change is relative to period a.
RELATIVE_THRESHOLD_KPIS = frozenset(TICKET_KPIS)
TICKET_SEGMENTS = ("channel", "product")

VERDICT_IMPROVED = "improved"
VERDICT_WORSENED = "worsened"
VERDICT_NO_CHANGE = "no detectable change"
VERDICT_TOO_FEW = "too few responses to tell"

MONTHLY_SCHEMA: dict[str, pl.DataType] = {
    "period": pl.String(),
    "segment_col": pl.String(),
    "segment_value": pl.String(),
    "kpi": pl.String(),
    "value": pl.Float64(),
    "n": pl.Int64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
}

SHIFT_SCHEMA: dict[str, pl.DataType] = {
    "comparison": pl.String(),
    "kpi": pl.String(),
    "segment_col": pl.String(),
    "segment_value": pl.String(),
    "label_a": pl.String(),
    "label_b": pl.String(),
    "est_a": pl.Float64(),
    "est_b": pl.Float64(),
    "diff": pl.Float64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
    "p_value": pl.Float64(),
    "p_adjusted": pl.Float64(),
    "significant": pl.Boolean(),
    "n_a": pl.Int64(),
    "n_b": pl.Int64(),
    "effect_size": pl.Float64(),
    "effect_size_kind": pl.String(),
    "mde": pl.Float64(),
    "higher_is_better": pl.Boolean(),
    "method": pl.String(),
    "verdict": pl.String(),
}

_DEFAULT_MEANINGFUL_CHANGE = {
    "nps": 10.0,  # NPS points
    "csat_mean": 0.3,  # scale points on 1–5
    "csat_top2": 10.0,  # percentage points
    "ticket_volume": 0.2,  # relative to period a
    "first_response_h": 0.2,  # relative to period a
    "resolution_h": 0.2,  # relative to period a
}


class KpisParams(StrictModel):
    """params.yaml ``kpis`` section."""

    programme_date: date = date(2026, 5, 1)  # before/after comparison split
    as_of: date | None = None  # end (exclusive) of the current window; None → month after latest response
    window_months: int = Field(2, ge=1)  # current vs previous window length
    fdr_q: float = Field(0.05, gt=0, lt=1)  # Benjamini–Hochberg q over the whole run
    alpha: float = Field(0.05, gt=0, lt=1)  # confidence intervals and MDEs
    power: float = Field(0.8, gt=0, lt=1)  # minimum detectable effects
    min_n: int = Field(30, ge=1)  # fewer in either period → "too few responses to tell"
    segments: list[str] = Field(default_factory=lambda: ["persona", "channel", "product", "journey"])
    # Smallest change worth knowing about, in KPI units (points / pp); relative for ticket KPIs.
    meaningful_change: dict[str, float] = Field(default_factory=lambda: dict(_DEFAULT_MEANINGFUL_CHANGE))
    in_feedback: str = "data/clean/feedback.parquet"
    in_tickets: str = "data/clean/tickets.parquet"
    out_tests: str = "data/kpis/tests.parquet"
    out_monthly: str = "data/kpis/monthly.parquet"
    out_alerts: str = "reports/alerts.json"
    metrics_path: str = "reports/metrics/kpis.json"
    plots_path: str = "reports/plots/nps_monthly.json"


# ---------------------------------------------------------------------------------------------
# Statistical primitives
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Two-sample comparison of one KPI; ``diff`` and its CI are b − a in KPI units."""

    est_a: float | None
    est_b: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    effect_size: float | None
    effect_size_kind: str
    mde: float | None
    n_a: int
    n_b: int
    method: str


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


def _finite(x: float | None) -> float | None:
    """Plain float, or None for missing / NaN / infinite values (keeps tables JSON-safe)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def nps_counts(scores: Sequence[int] | np.ndarray) -> tuple[int, int, int]:
    """(promoters, passives, detractors) among 0–10 scores."""
    s = np.asarray(scores)
    promoters = int(np.sum(s >= PROMOTER_MIN))
    detractors = int(np.sum(s <= DETRACTOR_MAX))
    return promoters, int(s.size) - promoters - detractors, detractors


def nps_value(counts: tuple[float, float, float]) -> float:
    """NPS in points (−100..100) from (promoters, passives, detractors)."""
    promoters, passives, detractors = counts
    return 100.0 * (promoters - detractors) / (promoters + passives + detractors)


def nps_variance(counts: tuple[float, float, float]) -> float:
    """Variance of the NPS estimator on the −1..1 scale: (p_P + p_D − (p_P − p_D)²) / n.

    The trinomial variance of Rocks (2016), "Interval Estimation for the Net Promoter Score",
    The American Statistician 70(4).
    """
    promoters, passives, detractors = counts
    n = promoters + passives + detractors
    p_p, p_d = promoters / n, detractors / n
    return (p_p + p_d - (p_p - p_d) ** 2) / n


def nps_wald_ci(counts: tuple[float, float, float], alpha: float = 0.05) -> tuple[float, float]:
    """Wald interval for NPS in points (not clipped, so it can be checked by hand)."""
    half = _z(alpha) * 100.0 * math.sqrt(nps_variance(counts))
    centre = nps_value(counts)
    return centre - half, centre + half


# Pseudo-observations (detractors, passives, promoters) of the adjusted Wald interval, as in
# Rocks' own R package `nps` (nps_test_, pseudo_observations = c(0.75, 1.50, 0.75)) and
# Sauro & Lewis (MeasuringU, 2021): add 3 to n, 3/4 to detractors and 3/4 to promoters.
_ADJUSTED_WALD_PSEUDO = (0.75, 1.5, 0.75)


def nps_adjusted_wald_ci(counts: tuple[float, float, float], alpha: float = 0.05) -> tuple[float, float]:
    """Adjusted-Wald interval (Rocks 2016) for NPS in points, clipped to [−100, 100].

    Adds 3/4 promoter, 3/2 passive and 3/4 detractor pseudo-observations, then applies the
    Wald interval around the adjusted score — an Agresti–Coull-style correction that keeps
    coverage near nominal at small n and extreme scores.
    """
    det_add, pas_add, pro_add = _ADJUSTED_WALD_PSEUDO
    promoters, passives, detractors = counts
    low, high = nps_wald_ci((promoters + pro_add, passives + pas_add, detractors + det_add), alpha)
    return max(low, -100.0), min(high, 100.0)


def _nps_unit_scores(scores: np.ndarray) -> np.ndarray:
    """Promoter +1, passive 0, detractor −1: NPS/100 is the mean of these."""
    return np.where(scores >= PROMOTER_MIN, 1.0, np.where(scores <= DETRACTOR_MAX, -1.0, 0.0))


def nps_bootstrap_ci(
    scores: Sequence[int] | np.ndarray, alpha: float = 0.05, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval for NPS in points (a cross-check for the Wald interval)."""
    unit = _nps_unit_scores(np.asarray(scores))
    res = stats.bootstrap(
        (unit,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=1 - alpha,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return 100.0 * float(res.confidence_interval.low), 100.0 * float(res.confidence_interval.high)


@lru_cache(maxsize=4096)
def _mde_standardised(test: str, n_a: int, n_b: int, alpha: float, power: float) -> float:
    """Minimum detectable Cohen's d ("t") or h ("normal") at these sizes (statsmodels power).

    Cached: the root-finding is slow and depends on the cell sizes only.
    """
    solver = TTestIndPower() if test == "t" else NormalIndPower()
    # solve_power returns a 1-element array for some inputs, and the root of either sign (two-sided)
    return abs(float(np.ravel(solver.solve_power(nobs1=n_a, ratio=n_b / n_a, alpha=alpha, power=power))[0]))


def _cohen_d(a: np.ndarray, b: np.ndarray) -> float | None:
    """(mean b − mean a) / pooled SD."""
    pooled = _pooled_sd(a, b)
    return None if not pooled else (float(np.mean(b)) - float(np.mean(a))) / pooled


def _pooled_sd(a: np.ndarray, b: np.ndarray) -> float:
    if a.size + b.size <= 2:
        return 0.0
    ss = np.sum((a - a.mean()) ** 2) + np.sum((b - b.mean()) ** 2)
    return float(math.sqrt(ss / (a.size + b.size - 2)))


def compare_nps(scores_a: np.ndarray, scores_b: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> Comparison:
    """Wald z-test and interval for NPS_b − NPS_a with the trinomial variance (Rocks 2016)."""
    ca, cb = nps_counts(scores_a), nps_counts(scores_b)
    n_a, n_b = sum(ca), sum(cb)
    est_a, est_b = nps_value(ca), nps_value(cb)
    diff = est_b - est_a
    se = 100.0 * math.sqrt(nps_variance(ca) + nps_variance(cb))
    unit_a, unit_b = _nps_unit_scores(np.asarray(scores_a)), _nps_unit_scores(np.asarray(scores_b))
    p_value = float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else None
    half = _z(alpha) * se
    return Comparison(
        est_a=est_a,
        est_b=est_b,
        diff=diff,
        ci_low=diff - half if se > 0 else None,
        ci_high=diff + half if se > 0 else None,
        p_value=p_value,
        effect_size=_cohen_d(unit_a, unit_b),
        effect_size_kind="cohen_d",
        # Normal-approximation MDE at the observed variances: no library covers the NPS.
        mde=(_z(alpha) + float(stats.norm.ppf(power))) * se if se > 0 else None,
        n_a=n_a,
        n_b=n_b,
        method="wald_trinomial",
    )


def compare_means(a: np.ndarray, b: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> Comparison:
    """Welch t-test and interval for mean_b − mean_a; effect Cohen's d; MDE from the t-test power."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    cm = CompareMeans(DescrStatsW(b), DescrStatsW(a))
    pooled = _pooled_sd(a, b)
    testable = pooled > 0 and a.size > 1 and b.size > 1
    if testable:
        _, p_value, _ = cm.ttest_ind(usevar="unequal")
        ci_low, ci_high = cm.tconfint_diff(alpha=alpha, usevar="unequal")
        d_mde = _mde_standardised("t", int(a.size), int(b.size), alpha, power)
    return Comparison(
        est_a=float(a.mean()),
        est_b=float(b.mean()),
        diff=float(b.mean() - a.mean()),
        ci_low=_finite(ci_low) if testable else None,
        ci_high=_finite(ci_high) if testable else None,
        p_value=_finite(p_value) if testable else None,
        effect_size=_cohen_d(a, b),
        effect_size_kind="cohen_d",
        mde=float(d_mde) * pooled if testable else None,
        n_a=int(a.size),
        n_b=int(b.size),
        method="welch_t",
    )


def compare_proportions(
    k_a: int, n_a: int, k_b: int, n_b: int, alpha: float = 0.05, power: float = 0.8
) -> Comparison:
    """Score test and Newcombe hybrid-score interval for p_b − p_a, all in percentage points."""
    p_a, p_b = k_a / n_a, k_b / n_b
    # The score test is undefined when both samples sit on the same boundary (all 0 or all 1).
    testable = 0 < k_a + k_b < n_a + n_b
    p_value = ci_low = ci_high = mde = None
    if testable:
        p_value = _finite(test_proportions_2indep(k_b, n_b, k_a, n_a, method="score", compare="diff").pvalue)
        low, high = confint_proportions_2indep(k_b, n_b, k_a, n_a, method="newcomb", compare="diff", alpha=alpha)
        ci_low, ci_high = 100.0 * float(low), 100.0 * float(high)
        h = _mde_standardised("normal", n_a, n_b, alpha, power)
        # Cohen's h back to a difference of proportions, on the side of 0.5 (the larger one).
        phi = math.asin(math.sqrt(p_a))
        target = math.sin(min(phi + h / 2, math.pi / 2)) ** 2 if p_a <= 0.5 else math.sin(max(phi - h / 2, 0.0)) ** 2
        mde = 100.0 * abs(target - p_a)
    return Comparison(
        est_a=100.0 * p_a,
        est_b=100.0 * p_b,
        diff=100.0 * (p_b - p_a),
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        effect_size=float(proportion_effectsize(p_b, p_a)),
        effect_size_kind="cohen_h",
        mde=mde,
        n_a=n_a,
        n_b=n_b,
        method="score_test+newcombe",
    )


def compare_medians(
    a: np.ndarray, b: np.ndarray, alpha: float = 0.05, power: float = 0.8, seed: int = 0
) -> Comparison:
    """Mann–Whitney U test; medians as estimates; bootstrap interval for median_b − median_a.

    Effect size is the rank-biserial correlation (positive: b tends to be larger). The MDE
    is (z_{1−α/2} + z_power) × bootstrap SE of the median difference.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    u_b, p_value = stats.mannwhitneyu(b, a, alternative="two-sided")
    boot = stats.bootstrap(
        (b, a),
        lambda x, y, axis: np.median(x, axis=axis) - np.median(y, axis=axis),
        n_resamples=999,
        confidence_level=1 - alpha,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    se = float(boot.standard_error)
    return Comparison(
        est_a=float(np.median(a)),
        est_b=float(np.median(b)),
        diff=float(np.median(b) - np.median(a)),
        ci_low=_finite(boot.confidence_interval.low),
        ci_high=_finite(boot.confidence_interval.high),
        p_value=_finite(p_value),
        effect_size=2.0 * float(u_b) / (a.size * b.size) - 1.0,
        effect_size_kind="rank_biserial",
        mde=(_z(alpha) + float(stats.norm.ppf(power))) * se,
        n_a=int(a.size),
        n_b=int(b.size),
        method="mann_whitney",
    )


def km_median(durations: np.ndarray, observed: np.ndarray, alpha: float = 0.05) -> tuple[float | None, float | None, float | None]:
    """Kaplan–Meier median with its interval (lifelines); None where the curve never reaches it."""
    kmf = KaplanMeierFitter(alpha=alpha).fit(durations, event_observed=observed)
    ci = median_survival_times(kmf.confidence_interval_)
    return _finite(kmf.median_survival_time_), _finite(ci.iloc[0, 0]), _finite(ci.iloc[0, 1])


def compare_survival(
    durations_a: np.ndarray,
    observed_a: np.ndarray,
    durations_b: np.ndarray,
    observed_b: np.ndarray,
    alpha: float = 0.05,
    power: float = 0.8,
) -> Comparison:
    """Log-rank test (lifelines) with censoring; KM medians as the estimates.

    No interval is given for the median difference (no library provides one for censored
    data). The MDE uses Schoenfeld's events formula, log HR = (z_{1−α/2} + z_power) /
    sqrt(D·c(1−c)), turned into hours as a reduction of the period-a median.
    """
    med_a = km_median(durations_a, observed_a, alpha)[0]
    med_b = km_median(durations_b, observed_b, alpha)[0]
    events = int(np.sum(observed_a) + np.sum(observed_b))
    n_a, n_b = len(durations_a), len(durations_b)
    p_value = mde = None
    if events > 0:
        p_value = _finite(
            logrank_test(durations_a, durations_b, event_observed_A=observed_a, event_observed_B=observed_b).p_value
        )
        share = n_a / (n_a + n_b)
        log_hr = (_z(alpha) + float(stats.norm.ppf(power))) / math.sqrt(events * share * (1 - share))
        mde = med_a * (1 - math.exp(-log_hr)) if med_a is not None else None
    both = med_a is not None and med_b is not None
    return Comparison(
        est_a=med_a,
        est_b=med_b,
        diff=med_b - med_a if both else None,
        ci_low=None,
        ci_high=None,
        p_value=p_value,
        effect_size=med_b / med_a if both and med_a > 0 else None,
        effect_size_kind="median_ratio",
        mde=mde,
        n_a=n_a,
        n_b=n_b,
        method="logrank",
    )


def compare_rates(
    count_a: int, exposure_a: float, count_b: int, exposure_b: float, alpha: float = 0.05, power: float = 0.8
) -> Comparison:
    """Poisson score test and interval for rate_b − rate_a (events per unit exposure)."""
    rate_a, rate_b = count_a / exposure_a, count_b / exposure_b
    p_value = ci_low = ci_high = mde = None
    if count_a + count_b > 0:
        p_value = _finite(
            test_poisson_2indep(count_b, exposure_b, count_a, exposure_a, compare="diff", method="score").pvalue
        )
        low, high = confint_poisson_2indep(count_b, exposure_b, count_a, exposure_a, compare="diff", method="score", alpha=alpha)
        ci_low, ci_high = _finite(low), _finite(high)
        mde = _poisson_mde(rate_a, exposure_a, exposure_b, alpha, power) if rate_a > 0 else None
    return Comparison(
        est_a=rate_a,
        est_b=rate_b,
        diff=rate_b - rate_a,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        effect_size=rate_b / rate_a if rate_a > 0 else None,
        effect_size_kind="rate_ratio",
        mde=mde,
        n_a=count_a,
        n_b=count_b,
        method="poisson_score",
    )


def _poisson_mde(rate_a: float, exposure_a: float, exposure_b: float, alpha: float, power: float) -> float:
    """Smallest rise of rate_b over rate_a that the score test detects with the given power."""

    def shortfall(delta: float) -> float:
        res = power_poisson_diff_2indep(
            rate_a, rate_a + delta, nobs1=exposure_a, nobs_ratio=exposure_b / exposure_a, alpha=alpha
        )
        return float(res.power) - power

    upper = rate_a
    while shortfall(upper) < 0:  # power rises with delta, so widen until the root is bracketed
        upper *= 2
    return float(optimize.brentq(shortfall, 1e-9 * rate_a, upper, xtol=1e-9 * rate_a))


def bh_adjust(p_values: Sequence[float | None], q: float = 0.05) -> tuple[list[float | None], list[bool]]:
    """Benjamini–Hochberg over the non-missing p-values: (adjusted p, rejected at q)."""
    idx = [i for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    rejected = [False] * len(p_values)
    if idx:
        reject, p_adj, _, _ = multipletests([p_values[i] for i in idx], alpha=q, method="fdr_bh")
        for i, r, p in zip(idx, reject, p_adj, strict=True):
            adjusted[i], rejected[i] = float(p), bool(r)
    return adjusted, rejected


# ---------------------------------------------------------------------------------------------
# Table preparation and periods
# ---------------------------------------------------------------------------------------------


def _responses(feedback: pl.DataFrame, segments: Sequence[str]) -> pl.DataFrame:
    """One row per response: scores are taken from whichever question row carries them."""
    cols = [c for c in segments if c in feedback.columns]
    return (
        feedback.group_by("response_id")
        .agg(
            pl.col("date_local").min(),
            pl.col("period").min(),
            pl.col("nps").drop_nulls().first(),
            pl.col("csat").drop_nulls().first(),
            *[pl.col(c).drop_nulls().first() for c in cols],
        )
        .rename({"date_local": "date"})
        .sort("response_id")
    )


def _tickets(tickets: pl.DataFrame) -> pl.DataFrame:
    return tickets.with_columns(date=pl.col("created_utc").dt.date()).sort("ticket_id")


def _add_months(d: date, months: int) -> date:
    index = d.year * 12 + d.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(d.day, calendar.monthrange(year, month + 1)[1]))


def _month_span(start: date, end: date) -> float:
    """Calendar months in [start, end), fractional at partial months."""

    def position(d: date) -> float:
        return d.year * 12 + d.month + (d.day - 1) / calendar.monthrange(d.year, d.month)[1]

    return position(end) - position(start)


@dataclass(frozen=True)
class _Span:
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
        return max(_month_span(self.start, self.end), 0.0)

    def select(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter((pl.col("date") >= self.start) & (pl.col("date") < self.end))


def _latest(frame: pl.DataFrame) -> date | None:
    return frame["date"].max() if frame.height else None


def _spans(params: KpisParams, first: date, as_of: date) -> dict[str, tuple[_Span, _Span]]:
    w = params.window_months
    return {
        "programme": (_Span(first.replace(day=1), params.programme_date), _Span(params.programme_date, as_of)),
        "window": (_Span(_add_months(as_of, -2 * w), _add_months(as_of, -w)), _Span(_add_months(as_of, -w), as_of)),
    }


# ---------------------------------------------------------------------------------------------
# Per-KPI samples, single-sample estimates and comparisons
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sample:
    """What one KPI needs from one cell: values (and censoring flags) or a count and exposure."""

    values: np.ndarray
    observed: np.ndarray | None = None
    exposure: float = 1.0

    @property
    def n(self) -> int:
        return int(self.values.size)


def _sample(kpi: str, frame: pl.DataFrame, exposure: float = 1.0) -> _Sample:
    if kpi == "nps":
        return _Sample(frame["nps"].drop_nulls().to_numpy().astype(int))
    if kpi in ("csat_mean", "csat_top2"):
        return _Sample(frame["csat"].drop_nulls().to_numpy().astype(float))
    if kpi == "ticket_volume":
        return _Sample(np.ones(frame.height), exposure=exposure)
    if kpi == "first_response_h":
        return _Sample(frame["first_response_h"].drop_nulls().to_numpy())
    # resolution_h: open tickets stay in, censored at their current age.
    rows = frame.filter(pl.col("resolution_h").is_not_null())
    return _Sample(rows["resolution_h"].to_numpy(), observed=~rows["is_open"].fill_null(False).to_numpy())


def _estimate(kpi: str, s: _Sample, alpha: float) -> tuple[float | None, float | None, float | None]:
    """(value, ci_low, ci_high) for one sample; the sample is non-empty."""
    if kpi == "nps":
        counts = nps_counts(s.values)
        return (nps_value(counts), *nps_adjusted_wald_ci(counts, alpha))
    if kpi == "csat_mean":
        if s.n < 2:
            return float(s.values.mean()), None, None
        low, high = DescrStatsW(s.values).tconfint_mean(alpha=alpha)
        return float(s.values.mean()), _finite(low), _finite(high)
    if kpi == "csat_top2":
        k = int(np.sum(s.values >= CSAT_TOP2_MIN))
        low, high = proportion_confint(k, s.n, alpha=alpha, method="wilson")
        return 100.0 * k / s.n, 100.0 * float(low), 100.0 * float(high)
    if kpi == "ticket_volume":
        low, high = confint_poisson(s.n, s.exposure, method="exact-c", alpha=alpha)
        return s.n / s.exposure, _finite(low), _finite(high)
    if kpi == "first_response_h":
        ci = stats.quantile_test(s.values, q=float(np.median(s.values)), p=0.5).confidence_interval(1 - alpha)
        return float(np.median(s.values)), _finite(ci.low), _finite(ci.high)
    assert s.observed is not None
    return km_median(s.values, s.observed, alpha)


def _compare(kpi: str, a: _Sample, b: _Sample, alpha: float, power: float) -> Comparison:
    if kpi == "nps":
        return compare_nps(a.values, b.values, alpha, power)
    if kpi == "csat_mean":
        return compare_means(a.values, b.values, alpha, power)
    if kpi == "csat_top2":
        k_a, k_b = int(np.sum(a.values >= CSAT_TOP2_MIN)), int(np.sum(b.values >= CSAT_TOP2_MIN))
        return compare_proportions(k_a, a.n, k_b, b.n, alpha, power)
    if kpi == "ticket_volume":
        return compare_rates(a.n, a.exposure, b.n, b.exposure, alpha, power)
    if kpi == "first_response_h":
        return compare_medians(a.values, b.values, alpha, power)
    assert a.observed is not None and b.observed is not None
    return compare_survival(a.values, a.observed, b.values, b.observed, alpha, power)


_EFFECT_KIND = {
    "nps": "cohen_d",
    "csat_mean": "cohen_d",
    "csat_top2": "cohen_h",
    "ticket_volume": "rate_ratio",
    "first_response_h": "rank_biserial",
    "resolution_h": "median_ratio",
}
_METHOD = {
    "nps": "wald_trinomial",
    "csat_mean": "welch_t",
    "csat_top2": "score_test+newcombe",
    "ticket_volume": "poisson_score",
    "first_response_h": "mann_whitney",
    "resolution_h": "logrank",
}


def _compare_cell(kpi: str, a: _Sample, b: _Sample, params: KpisParams) -> Comparison:
    """Full comparison, or point estimates only when either period is below ``min_n``."""
    if min(a.n, b.n) >= params.min_n:
        return _compare(kpi, a, b, params.alpha, params.power)

    def point(s: _Sample) -> float | None:
        if kpi == "ticket_volume":  # zero tickets is a real rate of zero, not a missing estimate
            return s.n / s.exposure if s.exposure > 0 else None
        return _estimate(kpi, s, params.alpha)[0] if s.n else None

    est_a, est_b = point(a), point(b)
    return Comparison(
        est_a=est_a,
        est_b=est_b,
        diff=est_b - est_a if est_a is not None and est_b is not None else None,
        ci_low=None,
        ci_high=None,
        p_value=None,
        effect_size=None,
        effect_size_kind=_EFFECT_KIND[kpi],
        mde=None,
        n_a=a.n,
        n_b=b.n,
        method=_METHOD[kpi],
    )


def _cells(frame: pl.DataFrame, segments: Sequence[str]) -> list[tuple[str, str]]:
    """("all", "all") plus every (segment column, value) present in ``frame``.

    A column whose single value covers every row would only repeat the overall cell (and
    inflate the BH family), so it is skipped.
    """
    cells = [("all", "all")]
    for col in segments:
        if col not in frame.columns:
            continue
        values = frame[col].drop_nulls().unique().sort().to_list()
        if len(values) == 1 and frame[col].null_count() == 0:
            continue
        cells.extend((col, str(v)) for v in values)
    return cells


def _in_cell(frame: pl.DataFrame, col: str, value: str) -> pl.DataFrame:
    return frame if col == "all" else frame.filter(pl.col(col).cast(pl.String) == value)


# ---------------------------------------------------------------------------------------------
# Public table functions
# ---------------------------------------------------------------------------------------------


def monthly_kpis(feedback: pl.DataFrame, tickets: pl.DataFrame, params: KpisParams | None = None) -> pl.DataFrame:
    """KPI value, n and CI per local month, overall and per segment value.

    Intervals: NPS adjusted Wald (Rocks 2016); CSAT mean t; top-2 Wilson; ticket volume
    exact Poisson (per month); first response distribution-free CI of the median; resolution
    Kaplan–Meier median CI with open tickets censored. Cells with n = 0 produce no row.
    """
    params = params or KpisParams()
    responses, tix = _responses(feedback, params.segments), _tickets(tickets)
    ticket_segments = [c for c in params.segments if c in TICKET_SEGMENTS]
    rows: list[dict[str, Any]] = []
    for kpis, frame, segments in ((SURVEY_KPIS, responses, params.segments), (TICKET_KPIS, tix, ticket_segments)):
        for period in frame["period"].drop_nulls().unique().sort().to_list():
            month = frame.filter(pl.col("period") == period)
            for col, value in _cells(month, segments):
                cell = _in_cell(month, col, value)
                for kpi in kpis:
                    sample = _sample(kpi, cell)
                    if sample.n == 0:
                        continue
                    est, low, high = _estimate(kpi, sample, params.alpha)
                    rows.append(
                        dict(period=period, segment_col=col, segment_value=value, kpi=kpi,
                             value=est, n=sample.n, ci_low=low, ci_high=high)
                    )
    return pl.DataFrame(rows, schema=MONTHLY_SCHEMA).sort(["kpi", "segment_col", "segment_value", "period"])


def shift_tests(feedback: pl.DataFrame, tickets: pl.DataFrame, params: KpisParams | None = None) -> pl.DataFrame:
    """Before/after-programme and previous/current-window tests for every KPI × cell.

    Survey KPIs are tested overall and per value of each ``params.segments`` column; ticket
    KPIs overall and per ticket ``channel`` / ``product``. p-values of every row of the run
    are adjusted together (Benjamini–Hochberg), and each row gets a verdict following the
    rule in the module docstring. Returns an empty frame when there is no data to date.
    """
    params = params or KpisParams()
    responses, tix = _responses(feedback, params.segments), _tickets(tickets)
    as_of = params.as_of
    if as_of is None:
        latest = _latest(responses) or _latest(tix)
        if latest is None:
            return pl.DataFrame(schema=SHIFT_SCHEMA)
        as_of = _add_months(latest.replace(day=1), 1)
    firsts = [d for d in (responses["date"].min() if responses.height else None, tix["date"].min() if tix.height else None) if d]
    first = min(firsts) if firsts else as_of
    ticket_segments = [c for c in params.segments if c in TICKET_SEGMENTS]

    rows: list[dict[str, Any]] = []
    for comparison, (span_a, span_b) in _spans(params, first, as_of).items():
        for kpis, frame, segments in ((SURVEY_KPIS, responses, params.segments), (TICKET_KPIS, tix, ticket_segments)):
            part_a, part_b = span_a.select(frame), span_b.select(frame)
            for col, value in _cells(pl.concat([part_a, part_b]), segments):
                cell_a, cell_b = _in_cell(part_a, col, value), _in_cell(part_b, col, value)
                for kpi in kpis:
                    a = _sample(kpi, cell_a, span_a.months)
                    b = _sample(kpi, cell_b, span_b.months)
                    res = _compare_cell(kpi, a, b, params)
                    rows.append(
                        dict(comparison=comparison, kpi=kpi, segment_col=col, segment_value=value,
                             label_a=span_a.label, label_b=span_b.label,
                             est_a=res.est_a, est_b=res.est_b, diff=res.diff,
                             ci_low=res.ci_low, ci_high=res.ci_high, p_value=res.p_value,
                             n_a=res.n_a, n_b=res.n_b, effect_size=res.effect_size,
                             effect_size_kind=res.effect_size_kind, mde=res.mde,
                             higher_is_better=HIGHER_IS_BETTER[kpi], method=res.method)
                    )
    adjusted, rejected = bh_adjust([r["p_value"] for r in rows], params.fdr_q)
    for row, p_adj, reject in zip(rows, adjusted, rejected, strict=True):
        row["p_adjusted"], row["significant"] = p_adj, reject
        row["verdict"] = _verdict(row, params)
    return pl.DataFrame(rows, schema=SHIFT_SCHEMA)


def _verdict(row: dict[str, Any], params: KpisParams) -> str:
    """Apply the verdict rule documented in the module docstring."""
    if min(row["n_a"], row["n_b"]) < params.min_n or row["p_value"] is None:
        return VERDICT_TOO_FEW
    if row["significant"]:
        return VERDICT_IMPROVED if (row["diff"] > 0) == row["higher_is_better"] else VERDICT_WORSENED
    threshold = params.meaningful_change.get(row["kpi"], _DEFAULT_MEANINGFUL_CHANGE[row["kpi"]])
    if row["kpi"] in RELATIVE_THRESHOLD_KPIS:
        threshold *= abs(row["est_a"] or 0.0)
    if row["mde"] is None or row["mde"] > threshold:
        return VERDICT_TOO_FEW
    return VERDICT_NO_CHANGE


def _json_float(x: float | None) -> float | None:
    """Float with 8 significant digits (stable JSON bytes, tiny p-values survive), or None."""
    return None if x is None or not math.isfinite(x) else float(f"{x:.8g}")


def _finding(row: dict[str, Any]) -> dict[str, Any]:
    segment = "all" if row["segment_col"] == "all" else f"{row['segment_col']}={row['segment_value']}"
    return {
        "comparison": row["comparison"],
        "kpi": row["kpi"],
        "segment": segment,
        "segment_col": row["segment_col"],
        "segment_value": row["segment_value"],
        "label_a": row["label_a"],
        "label_b": row["label_b"],
        "est_a": _json_float(row["est_a"]),
        "est_b": _json_float(row["est_b"]),
        "diff": _json_float(row["diff"]),
        "ci_low": _json_float(row["ci_low"]),
        "ci_high": _json_float(row["ci_high"]),
        "p_adjusted": _json_float(row["p_adjusted"]),
        "n_a": int(row["n_a"]),
        "n_b": int(row["n_b"]),
        "verdict": row["verdict"],
    }


def alerts(tests: pl.DataFrame) -> list[dict[str, Any]]:
    """Significant adverse shifts (verdict "worsened"), smallest adjusted p first, then by key."""
    worse = tests.filter(pl.col("verdict") == VERDICT_WORSENED).sort(
        ["p_adjusted", "comparison", "kpi", "segment_col", "segment_value"]
    )
    return [_finding(r) for r in worse.iter_rows(named=True)]


def headline_findings(tests: pl.DataFrame, top: int = 5) -> list[dict[str, Any]]:
    """The ``top`` significant shifts, strongest first.

    Strength is |diff| / mde (how many minimum detectable effects the shift spans), which
    puts KPIs of different units on one scale; ties fall back to adjusted p, then the key.
    """
    significant = tests.filter(pl.col("verdict").is_in([VERDICT_IMPROVED, VERDICT_WORSENED]))
    ranked = significant.with_columns(
        strength=pl.when(pl.col("mde") > 0).then(pl.col("diff").abs() / pl.col("mde"))
    ).sort(
        ["strength", "p_adjusted", "comparison", "kpi", "segment_col", "segment_value"],
        descending=[True, False, False, False, False, False],
        nulls_last=True,
    )
    out = []
    for row in ranked.head(top).iter_rows(named=True):
        finding = _finding(row)
        finding.update(
            effect_size=_json_float(row["effect_size"]),
            effect_size_kind=row["effect_size_kind"],
            mde=_json_float(row["mde"]),
            strength=_json_float(row["strength"]),
        )
        out.append(finding)
    return out


def kpi_metrics(tests: pl.DataFrame, monthly: pl.DataFrame) -> dict[str, Any]:
    """Small flat summary for DVC metrics: overall survey KPIs now/before and test counts.

    "now"/"before" are the current and previous windows of the "window" comparison;
    ``latest_*`` are the overall values of the latest month in ``monthly``.
    """
    overall = tests.filter((pl.col("comparison") == "window") & (pl.col("segment_col") == "all"))
    by_kpi = {r["kpi"]: r for r in overall.iter_rows(named=True)}
    metrics: dict[str, Any] = {}
    for kpi in SURVEY_KPIS:
        row = by_kpi.get(kpi, {})
        metrics[f"{kpi}_now"] = _json_float(row.get("est_b"))
        metrics[f"{kpi}_before"] = _json_float(row.get("est_a"))
    monthly_all = monthly.filter(pl.col("segment_col") == "all")
    survey_months = monthly_all.filter(pl.col("kpi").is_in(SURVEY_KPIS))
    latest = survey_months["period"].max() if survey_months.height else None
    metrics["latest_period"] = latest
    for kpi in SURVEY_KPIS:
        hit = survey_months.filter((pl.col("kpi") == kpi) & (pl.col("period") == (latest or "")))
        metrics[f"{kpi}_latest"] = _json_float(hit["value"][0]) if hit.height else None
    metrics["n_tests"] = int(tests["p_value"].is_not_null().sum())
    metrics["n_rows"] = tests.height
    metrics["n_significant"] = int(tests["significant"].sum())
    metrics["n_alerts"] = len(alerts(tests))
    return metrics


__all__ = [
    "KPIS",
    "MONTHLY_SCHEMA",
    "SHIFT_SCHEMA",
    "Comparison",
    "KpisParams",
    "alerts",
    "bh_adjust",
    "compare_means",
    "compare_medians",
    "compare_nps",
    "compare_proportions",
    "compare_rates",
    "compare_survival",
    "headline_findings",
    "km_median",
    "kpi_metrics",
    "monthly_kpis",
    "nps_adjusted_wald_ci",
    "nps_bootstrap_ci",
    "nps_counts",
    "nps_value",
    "nps_variance",
    "nps_wald_ci",
    "shift_tests",
]


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


@dataclass
class KpisResult:
    tests: pl.DataFrame
    monthly: pl.DataFrame
    alerts: list[dict[str, Any]]
    metrics: dict[str, Any]


def run(params: KpisParams, root: str | Path = ".") -> KpisResult:
    """Read the clean tables under ``root`` and compute every KPI, test and alert (no writing)."""
    root = Path(root)
    feedback = pl.read_parquet(root / params.in_feedback)
    tickets = pl.read_parquet(root / params.in_tickets)
    tests = shift_tests(feedback, tickets, params)
    monthly = monthly_kpis(feedback, tickets, params)
    return KpisResult(tests, monthly, alerts(tests), kpi_metrics(tests, monthly))


def nps_plot_data(monthly: pl.DataFrame) -> list[dict[str, Any]]:
    """Overall monthly NPS for `dvc plots`."""
    rows = monthly.filter((pl.col("kpi") == "nps") & (pl.col("segment_col") == "all")).sort("period")
    return [{"period": r["period"], "nps": _json_float(r["value"]), "n": r["n"]} for r in rows.iter_rows(named=True)]


def write(result: KpisResult, params: KpisParams, root: str | Path = ".") -> None:
    from pipelines import io as kio

    root = Path(root)
    kio.write_parquet(result.tests, root / params.out_tests)
    kio.write_parquet(result.monthly, root / params.out_monthly)
    kio.write_json(result.alerts, root / params.out_alerts)
    kio.write_json(result.metrics, root / params.metrics_path)
    kio.write_json(nps_plot_data(result.monthly), root / params.plots_path)
