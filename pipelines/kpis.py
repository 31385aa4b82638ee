"""Voice-of-the-customer KPIs: monthly values and shift tests with FDR control.

Two public layers:

* statistical primitives (``nps_*``, ``compare_*``, ``bh_adjust``) on plain arrays, each
  delegating to statsmodels / scipy / lifelines where those provide the test;
* table functions (``monthly_kpis``, ``shift_tests``, ``alerts``, ``kpi_metrics``,
  ``headline_findings``) on the FEEDBACK_SCHEMA / TICKETS_SCHEMA tables.

Survey KPIs count each response once: feedback has one row per response × question, so it
is collapsed on ``response_id`` first. Ticket dates for period splits are the UTC creation
date (the tables carry no local ticket date; monthly rows use the local ``period`` column).

Comparisons (column ``comparison`` of the tests table), all in one Benjamini–Hochberg family:
``programme`` (before/after the programme date), ``window`` (previous vs current window),
``yoy`` (current window vs a year earlier — only when the data reach back that far; otherwise
``coverage_notes`` says so and the note lands in the metrics and ``alerts.json``), and
``its_level`` / ``its_slope`` (interrupted time series on the monthly series, ``its_segmented``).
``drivers`` ranks topics by how much they move NPS (its own BH family over coefficients).

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
import json
import math
from functools import lru_cache
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
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

from pipelines import kpi_registry
from pipelines.schema import CesParams, KpisParams  # noqa: F401  (re-exported)

PROMOTER_MIN = 9  # NPS promoters answer 9–10
DETRACTOR_MAX = 6  # NPS detractors answer 0–6
CSAT_TOP2_MIN = 4  # top-2 box of the 1–5 CSAT scale

SURVEY_KPIS = ("nps", "csat_mean", "csat_top2")
CES_KPIS = ("ces_mean", "ces_top2")  # only when the clean table carries a CES column
TICKET_KPIS = ("ticket_volume", "first_response_h", "resolution_h")
CUSTOMER_KPIS = ("churn_rate", "repeat_rate")  # from customer activity across responses and tickets
KPIS = SURVEY_KPIS + CES_KPIS + TICKET_KPIS + CUSTOMER_KPIS
HIGHER_IS_BETTER = {
    "nps": True,
    "csat_mean": True,
    "csat_top2": True,
    "ces_mean": True,  # overridden by params.ces.higher_is_better
    "ces_top2": True,
    "ticket_volume": False,
    "first_response_h": False,
    "resolution_h": False,
    "churn_rate": False,
    "repeat_rate": True,
}
# Ticket KPIs have no natural absolute scale, so their meaningful change is relative to period a.
RELATIVE_THRESHOLD_KPIS = frozenset(TICKET_KPIS)
COUNT_KPIS = frozenset({"ticket_volume"})  # modelled as Poisson counts in the interrupted time series
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
    "n_periods_a": pl.Int64(),  # months in each segment of an interrupted time series (else null)
    "n_periods_b": pl.Int64(),
    "baseline": pl.Float64(),  # ITS: the pre-trend's counterfactual level at the programme month
}

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
    from lifelines import KaplanMeierFitter  # ~3 s to import: only where durations are compared
    from lifelines.utils import median_survival_times

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
        from lifelines.statistics import logrank_test

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


def _responses(feedback: pl.DataFrame, segments: Sequence[str], ces_column: str | None = None) -> pl.DataFrame:
    """One row per response: scores are taken from whichever question row carries them.

    ``ces`` is the configured CES column when the table has one, else all null.
    """
    cols = [c for c in segments if c in feedback.columns]
    ces = (
        pl.col(ces_column).cast(pl.Float64).drop_nulls().first()
        if ces_column and ces_column in feedback.columns
        else pl.lit(None, dtype=pl.Float64)
    )
    return (
        feedback.group_by("response_id")
        .agg(
            pl.col("date_local").min(),
            pl.col("period").min(),
            pl.col("customer_id").drop_nulls().first(),
            pl.col("nps").drop_nulls().first(),
            pl.col("csat").drop_nulls().first(),
            ces.alias("ces"),
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


def _yoy_span(params: KpisParams, as_of: date) -> _Span:
    """The current window moved back a year."""
    return _Span(_add_months(as_of, -params.window_months - 12), _add_months(as_of, -12))


def _spans(params: KpisParams, first: date, as_of: date) -> dict[str, tuple[_Span, _Span]]:
    w = params.window_months
    current = _Span(_add_months(as_of, -w), as_of)
    spans = {
        "programme": (_Span(first.replace(day=1), params.programme_date), _Span(params.programme_date, as_of)),
        "window": (_Span(_add_months(as_of, -2 * w), _add_months(as_of, -w)), current),
    }
    year_ago = _yoy_span(params, as_of)
    if first.replace(day=1) <= year_ago.start:  # only where the data cover the whole year-earlier window
        spans["yoy"] = (year_ago, current)
    return spans


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


# KPIs whose sample is a 0/1 indicator per unit (response or customer): proportions in pp.
_INDICATOR_KPIS = frozenset({"ces_top2", "churn_rate", "repeat_rate"})


def _sample(kpi: str, frame: pl.DataFrame, exposure: float = 1.0, ces_top: int = 6) -> _Sample:
    if kpi == "nps":
        return _Sample(frame["nps"].drop_nulls().to_numpy().astype(int))
    if kpi in ("csat_mean", "csat_top2"):
        return _Sample(frame["csat"].drop_nulls().to_numpy().astype(float))
    if kpi == "ces_mean":
        return _Sample(frame["ces"].drop_nulls().to_numpy().astype(float))
    if kpi == "ces_top2":
        return _Sample((frame["ces"].drop_nulls().to_numpy() >= ces_top).astype(float))
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
    if kpi in ("csat_mean", "ces_mean"):
        if s.n < 2:
            return float(s.values.mean()), None, None
        low, high = DescrStatsW(s.values).tconfint_mean(alpha=alpha)
        return float(s.values.mean()), _finite(low), _finite(high)
    if kpi == "csat_top2" or kpi in _INDICATOR_KPIS:
        k = int(np.sum(s.values >= CSAT_TOP2_MIN)) if kpi == "csat_top2" else int(np.sum(s.values))
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
    if kpi in ("csat_mean", "ces_mean"):
        return compare_means(a.values, b.values, alpha, power)
    if kpi == "csat_top2":
        k_a, k_b = int(np.sum(a.values >= CSAT_TOP2_MIN)), int(np.sum(b.values >= CSAT_TOP2_MIN))
        return compare_proportions(k_a, a.n, k_b, b.n, alpha, power)
    if kpi in _INDICATOR_KPIS:
        return compare_proportions(int(a.values.sum()), a.n, int(b.values.sum()), b.n, alpha, power)
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
    "ces_mean": "cohen_d",
    "ces_top2": "cohen_h",
    "churn_rate": "cohen_h",
    "repeat_rate": "cohen_h",
    "ticket_volume": "rate_ratio",
    "first_response_h": "rank_biserial",
    "resolution_h": "median_ratio",
}
_METHOD = {
    "nps": "wald_trinomial",
    "csat_mean": "welch_t",
    "csat_top2": "score_test+newcombe",
    "ces_mean": "welch_t",
    "ces_top2": "score_test+newcombe",
    "churn_rate": "score_test+newcombe",
    "repeat_rate": "score_test+newcombe",
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


def _survey_kpis(params: KpisParams, responses: pl.DataFrame) -> tuple[str, ...]:
    """Enabled survey KPIs; CES only when the clean table carries CES answers."""
    kpis = params.enabled(SURVEY_KPIS)
    if responses.height and responses["ces"].drop_nulls().len():
        kpis += params.enabled(CES_KPIS)
    return kpis


def _groups(params: KpisParams, responses: pl.DataFrame, tix: pl.DataFrame):
    """(KPIs, frame, segment columns) for the per-row KPI groups."""
    ticket_segments = [c for c in params.segments if c in TICKET_SEGMENTS]
    return (
        (_survey_kpis(params, responses), responses, params.segments),
        (params.enabled(TICKET_KPIS), tix, ticket_segments),
    )


def monthly_kpis(feedback: pl.DataFrame, tickets: pl.DataFrame, params: KpisParams | None = None) -> pl.DataFrame:
    """KPI value, n and CI per local month, overall and per segment value.

    Intervals: NPS adjusted Wald (Rocks 2016); CSAT/CES mean t; top-2 Wilson; ticket volume
    exact Poisson (per month); first response distribution-free CI of the median; resolution
    Kaplan–Meier median CI with open tickets censored. Cells with n = 0 produce no row.
    Customer KPIs (churn, repeat) are defined over a window, not per month, and are absent.
    """
    params = params or KpisParams()
    responses, tix = _responses(feedback, params.segments, params.ces.column), _tickets(tickets)
    rows: list[dict[str, Any]] = []
    for kpis, frame, segments in _groups(params, responses, tix):
        for period in frame["period"].drop_nulls().unique().sort().to_list():
            month = frame.filter(pl.col("period") == period)
            for col, value in _cells(month, segments):
                cell = _in_cell(month, col, value)
                for kpi in kpis:
                    sample = _sample(kpi, cell, ces_top=params.ces.top_box_min)
                    if sample.n == 0:
                        continue
                    est, low, high = _estimate(kpi, sample, params.alpha)
                    rows.append(
                        dict(period=period, segment_col=col, segment_value=value, kpi=kpi,
                             value=est, n=sample.n, ci_low=low, ci_high=high)
                    )
    return pl.DataFrame(rows, schema=MONTHLY_SCHEMA).sort(["kpi", "segment_col", "segment_value", "period"])


@dataclass(frozen=True)
class _Frame:
    """The run's per-response and per-ticket tables and its date frame."""

    responses: pl.DataFrame
    tickets: pl.DataFrame
    first: date
    as_of: date


def _frame(feedback: pl.DataFrame, tickets: pl.DataFrame | None, params: KpisParams) -> _Frame | None:
    responses = _responses(feedback, params.segments, params.ces.column)
    tix = _tickets(tickets) if tickets is not None else pl.DataFrame(schema={"date": pl.Date()})
    _check_ces(responses, params.ces)
    as_of = params.as_of
    if as_of is None:
        latest = _latest(responses) or _latest(tix)
        if latest is None:
            return None
        as_of = _add_months(latest.replace(day=1), 1)
    firsts = [f["date"].min() for f in (responses, tix) if f.height]
    return _Frame(responses, tix, min(firsts) if firsts else as_of, as_of)


def _check_ces(responses: pl.DataFrame, ces: CesParams) -> None:
    """CES answers must lie on the configured scale: a clear error names the first bad response."""
    bad = responses.filter(pl.col("ces").is_not_null() & ~pl.col("ces").is_between(ces.scale_min, ces.scale_max))
    if bad.height:
        raise ValueError(
            f"clean feedback column {ces.column!r}: {bad.height} CES answer(s) outside {ces.scale_min}–{ces.scale_max}, "
            f"e.g. {bad['ces'][0]:g} in response {bad['response_id'][0]} (check params.yaml › kpis.ces)"
        )


def _activity(fr: _Frame, sources: Sequence[str]) -> pl.DataFrame:
    """One row per customer touch (a survey response or a ticket): customer_id, date."""
    parts = []
    if "survey" in sources and fr.responses.height:
        parts.append(fr.responses.select("customer_id", "date"))
    if "tickets" in sources and fr.tickets.height:
        parts.append(fr.tickets.select("customer_id", "date"))
    if not parts:
        return pl.DataFrame(schema={"customer_id": pl.String(), "date": pl.Date()})
    return pl.concat(parts).filter(pl.col("customer_id").is_not_null() & (pl.col("customer_id") != ""))


def customer_sample(kpi: str, activity: pl.DataFrame, start: date, end: date) -> np.ndarray:
    """0/1 per customer for a customer KPI over [start, end).

    * ``repeat_rate``: customers active in the span; 1 when they were active at least twice.
    * ``churn_rate``: customers active in the first half of the span; 1 when they were not
      active again in the second half (churned).
    """
    inside = activity.filter((pl.col("date") >= start) & (pl.col("date") < end))
    if kpi == "repeat_rate":
        counts = inside.group_by("customer_id").len().sort("customer_id")
        return (counts["len"] >= 2).to_numpy().astype(float)
    mid = start + (end - start) / 2
    cohort = inside.filter(pl.col("date") < mid)["customer_id"].unique().sort()
    returned = set(inside.filter(pl.col("date") >= mid)["customer_id"].to_list())
    return np.array([c not in returned for c in cohort.to_list()], dtype=float)


def _row_of(comparison: str, kpi: str, col: str, value: str, label_a: str, label_b: str,
            res: Comparison, params: KpisParams, n_periods: tuple[int | None, int | None] = (None, None)) -> dict[str, Any]:
    return dict(comparison=comparison, kpi=kpi, segment_col=col, segment_value=value,
                label_a=label_a, label_b=label_b,
                est_a=res.est_a, est_b=res.est_b, diff=res.diff,
                ci_low=res.ci_low, ci_high=res.ci_high, p_value=res.p_value,
                n_a=res.n_a, n_b=res.n_b, effect_size=res.effect_size,
                effect_size_kind=res.effect_size_kind, mde=res.mde,
                higher_is_better=params.higher_is_better(kpi), method=res.method,
                n_periods_a=n_periods[0], n_periods_b=n_periods[1], baseline=None)


def shift_tests(
    feedback: pl.DataFrame,
    tickets: pl.DataFrame,
    params: KpisParams | None = None,
    monthly: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Every comparison of the run, with one Benjamini–Hochberg family over all of them.

    * ``programme`` (before/after the programme date), ``window`` (previous vs current window)
      and ``yoy`` (current window vs the same months a year earlier, only when the data reach
      back that far — see ``coverage_notes``): survey KPIs overall and per value of each
      ``params.segments`` column; ticket KPIs overall and per ticket ``channel`` / ``product``;
      customer KPIs (churn, repeat) overall.
    * ``its_level`` / ``its_slope``: the interrupted time series on ``monthly`` (computed when
      not given), see ``its_tests``.

    Each row gets a verdict following the rule in the module docstring. Returns an empty
    frame when there is no data to date.
    """
    params = params or KpisParams()
    fr = _frame(feedback, tickets, params)
    if fr is None:
        return pl.DataFrame(schema=SHIFT_SCHEMA)
    rows: list[dict[str, Any]] = []
    activity = _activity(fr, params.activity_sources)
    for comparison, (span_a, span_b) in _spans(params, fr.first, fr.as_of).items():
        for kpis, frame, segments in _groups(params, fr.responses, fr.tickets):
            part_a, part_b = span_a.select(frame), span_b.select(frame)
            for col, value in _cells(pl.concat([part_a, part_b]), segments):
                cell_a, cell_b = _in_cell(part_a, col, value), _in_cell(part_b, col, value)
                for kpi in kpis:
                    a = _sample(kpi, cell_a, span_a.months, params.ces.top_box_min)
                    b = _sample(kpi, cell_b, span_b.months, params.ces.top_box_min)
                    res = _compare_cell(kpi, a, b, params)
                    rows.append(_row_of(comparison, kpi, col, value, span_a.label, span_b.label, res, params))
        for kpi in params.enabled(CUSTOMER_KPIS):
            if not activity.height:
                continue
            a = _Sample(customer_sample(kpi, activity, span_a.start, span_a.end))
            b = _Sample(customer_sample(kpi, activity, span_b.start, span_b.end))
            res = _compare_cell(kpi, a, b, params)
            rows.append(_row_of(comparison, kpi, "all", "all", span_a.label, span_b.label, res, params))
    if monthly is None:
        monthly = monthly_kpis(feedback, tickets, params)
    rows.extend(its_tests(monthly, params))
    adjusted, rejected = bh_adjust([r["p_value"] for r in rows], params.fdr_q)
    for row, p_adj, reject in zip(rows, adjusted, rejected, strict=True):
        row["p_adjusted"], row["significant"] = p_adj, reject
        row["verdict"] = _verdict(row, params)
    return pl.DataFrame(rows, schema=SHIFT_SCHEMA)


def coverage_notes(feedback: pl.DataFrame, tickets: pl.DataFrame, params: KpisParams | None = None) -> list[str]:
    """Plain statements of what the run could not compute and why (shown in outputs, never silent)."""
    params = params or KpisParams()
    fr = _frame(feedback, tickets, params)
    if fr is None:
        return ["no responses or tickets: nothing to compare"]
    notes = []
    yoy = _yoy_span(params, fr.as_of)
    if fr.first.replace(day=1) > yoy.start:
        notes.append(
            f"year over year: not computed — the data start {fr.first:%Y-%m-%d}; comparing "
            f"{_add_months(fr.as_of, -params.window_months):%Y-%m}〜{fr.as_of - timedelta(days=1):%Y-%m} with the same "
            f"months a year earlier needs data from {yoy.start:%Y-%m-%d}"
        )
    if params.enabled(CES_KPIS) and not fr.responses["ces"].drop_nulls().len():
        notes.append(f"CES: not computed — the clean feedback table has no CES answers (column {params.ces.column!r})")
    if params.enabled(CUSTOMER_KPIS) and not _activity(fr, params.activity_sources).height:
        notes.append("churn / repeat rate: not computed — no customer ids in the configured activity sources")
    return notes


# ---------------------------------------------------------------------------------------------
# Driver analysis: which topics move the score
# ---------------------------------------------------------------------------------------------

DRIVERS_SCHEMA: dict[str, pl.DataType] = {
    "topic": pl.Int64(),
    "label": pl.String(),
    "n_mentions": pl.Int64(),  # responses with at least one verbatim in the topic
    "n_rest": pl.Int64(),
    "share": pl.Float64(),  # % of scored responses mentioning the topic
    "nps_topic": pl.Float64(),
    "nps_rest": pl.Float64(),
    "nps_diff": pl.Float64(),  # topic − rest, NPS points (Wald, trinomial variance)
    "nps_ci_low": pl.Float64(),
    "nps_ci_high": pl.Float64(),
    "nps_p": pl.Float64(),
    "csat_topic": pl.Float64(),
    "csat_rest": pl.Float64(),
    "csat_diff": pl.Float64(),  # Welch
    "csat_ci_low": pl.Float64(),
    "csat_ci_high": pl.Float64(),
    "csat_p": pl.Float64(),
    "impact": pl.Float64(),  # overall NPS − NPS without the topic's responses = share × nps_diff
    "impact_ci_low": pl.Float64(),
    "impact_ci_high": pl.Float64(),
    "coef": pl.Float64(),  # OLS of the ±100 promoter/detractor score on topic indicators (NPS points)
    "coef_ci_low": pl.Float64(),
    "coef_ci_high": pl.Float64(),
    "coef_p": pl.Float64(),
    "coef_p_adjusted": pl.Float64(),  # BH over the topics' coefficients
    "coef_significant": pl.Boolean(),
    "regression_reference": pl.String(),
    "share_a": pl.Float64(),  # % of commenting responses mentioning the topic, previous window
    "share_b": pl.Float64(),  # … current window
    "trend": pl.Float64(),  # share_b / share_a, each smoothed by +0.5 mentions
    "priority": pl.Float64(),  # |impact| × trend
    "rank": pl.Int64(),
    "direction": pl.String(),  # "drags" (impact < 0) | "lifts"
}


def drivers(
    feedback: pl.DataFrame,
    assignments: pl.DataFrame,
    topics: pl.DataFrame | None = None,
    params: KpisParams | None = None,
) -> pl.DataFrame:
    """Per topic: the score of responses that mention it vs the rest, its impact, and a regression.

    Unit: the survey response (a response mentions a topic when any of its verbatims is
    assigned to it; topic −1, the outliers, counts as no topic). Populations are every response
    with an NPS answer, so ``impact`` = overall NPS − NPS of the other responses = share ×
    ``nps_diff`` exactly (its interval is the diff interval scaled by the share).
    The regression is OLS (HC3 errors) of +100 / 0 / −100 (promoter / passive / detractor) on
    all topic indicators at once, so each coefficient is in NPS points relative to responses
    mentioning none of the topics; when every response mentions one (no such reference), the
    most frequent topic is left out as the reference. Its p-values are BH-adjusted across topics.
    Trend compares topic shares in the previous and current windows of ``shift_tests``; topics
    are ranked by |impact| × trend (a large drag that is growing first).
    """
    import statsmodels.api as sm

    params = params or KpisParams()
    fr = _frame(feedback, None, params)
    missing = {"response_id", "topic"} - set(assignments.columns)
    if missing:
        raise ValueError(f"topic assignments lack column(s) {sorted(missing)}")
    if fr is None or not assignments.height:
        return pl.DataFrame(schema=DRIVERS_SCHEMA)
    scored = fr.responses.filter(pl.col("nps").is_not_null()).select("response_id", "date", "nps", "csat")
    mentions = (
        assignments.filter(pl.col("response_id").is_not_null() & (pl.col("topic") >= 0))
        .select("response_id", pl.col("topic").cast(pl.Int64))
        .unique()
    )
    topic_ids = sorted(mentions["topic"].unique().to_list())
    if not topic_ids or not scored.height:  # only outliers, or no scored responses
        return pl.DataFrame(schema=DRIVERS_SCHEMA)
    wide = scored.join(
        mentions.with_columns(pl.lit(1).alias("m")).pivot(on="topic", index="response_id", values="m"),
        on="response_id", how="left",
    ).sort("response_id")
    ind = {t: wide[str(t)].fill_null(0).to_numpy().astype(bool) if str(t) in wide.columns else np.zeros(wide.height, bool)
           for t in topic_ids}
    nps, csat = wide["nps"].to_numpy().astype(int), wide["csat"].to_numpy()
    unit = 100.0 * _nps_unit_scores(nps)
    labels = dict(zip(topics["topic"].to_list(), topics["label"].to_list())) if topics is not None and topics.height else {}

    # Regression on all indicators together.
    any_topic = np.any(np.column_stack([ind[t] for t in topic_ids]), axis=1) if topic_ids else np.zeros(0, bool)
    reference = "no topic"
    regressors = [t for t in topic_ids if ind[t].sum() > 0]
    if regressors and any_topic.all():
        ref = max(regressors, key=lambda t: (int(ind[t].sum()), -t))
        regressors = [t for t in regressors if t != ref]
        reference = f"topic {ref}"
    coef: dict[int, tuple[float, float, float, float]] = {}
    if regressors and nps.size > len(regressors) + 1:
        X = sm.add_constant(np.column_stack([ind[t] for t in regressors]).astype(float), has_constant="add")
        fit = sm.OLS(unit, X).fit(cov_type="HC3")
        ci = np.asarray(fit.conf_int(params.alpha))
        for j, t in enumerate(regressors, start=1):
            coef[t] = (float(fit.params[j]), float(ci[j, 0]), float(ci[j, 1]), float(fit.pvalues[j]))
    adj, rej = bh_adjust([_finite(coef[t][3]) if t in coef else None for t in topic_ids], params.fdr_q)

    # Trend: topic shares among commenting responses in the previous vs current window.
    spans = _spans(params, fr.first, fr.as_of)["window"]
    commenters = set(mentions["response_id"].to_list())
    dates = wide["date"].to_numpy()
    commented = np.array([r in commenters for r in wide["response_id"].to_list()])
    in_span = [(dates >= np.datetime64(sp.start)) & (dates < np.datetime64(sp.end)) & commented for sp in spans]

    rows = []
    for i, t in enumerate(topic_ids):
        m = ind[t]
        n_m, n_r = int(m.sum()), int((~m).sum())
        row: dict[str, Any] = dict(topic=t, label=labels.get(t, str(t)), n_mentions=n_m, n_rest=n_r,
                                   share=100.0 * n_m / nps.size)
        if min(n_m, n_r) >= 2:
            c = compare_nps(nps[~m], nps[m], params.alpha, params.power)
            share = n_m / nps.size
            row.update(nps_topic=c.est_b, nps_rest=c.est_a, nps_diff=c.diff, nps_ci_low=c.ci_low,
                       nps_ci_high=c.ci_high, nps_p=c.p_value,
                       impact=share * c.diff,
                       impact_ci_low=share * c.ci_low if c.ci_low is not None else None,
                       impact_ci_high=share * c.ci_high if c.ci_high is not None else None)
            ca, cb = csat[~m], csat[m]
            ca, cb = ca[~np.isnan(ca)], cb[~np.isnan(cb)]
            if min(ca.size, cb.size) >= 2:
                cm = compare_means(ca, cb, params.alpha, params.power)
                row.update(csat_topic=cm.est_b, csat_rest=cm.est_a, csat_diff=cm.diff, csat_ci_low=cm.ci_low,
                           csat_ci_high=cm.ci_high, csat_p=cm.p_value)
        if t in coef:
            row.update(coef=coef[t][0], coef_ci_low=coef[t][1], coef_ci_high=coef[t][2], coef_p=coef[t][3])
        row.update(coef_p_adjusted=adj[i], coef_significant=rej[i], regression_reference=reference)
        (k_a, n_a), (k_b, n_b) = [(int((m & s).sum()), int(s.sum())) for s in in_span]
        row.update(share_a=100.0 * k_a / n_a if n_a else None, share_b=100.0 * k_b / n_b if n_b else None,
                   trend=((k_b + 0.5) / (n_b + 1)) / ((k_a + 0.5) / (n_a + 1)))
        if row.get("impact") is not None:
            row["priority"] = abs(row["impact"]) * row["trend"]
            row["direction"] = "drags" if row["impact"] < 0 else "lifts"
        rows.append(row)
    out = pl.DataFrame(rows, schema={k: v for k, v in DRIVERS_SCHEMA.items() if k != "rank"}, strict=False)
    out = out.sort(["priority", "topic"], descending=[True, False], nulls_last=True)
    out = out.with_columns(rank=pl.int_range(1, out.height + 1, dtype=pl.Int64))
    return out.select(list(DRIVERS_SCHEMA))


# ---------------------------------------------------------------------------------------------
# Interrupted time series
# ---------------------------------------------------------------------------------------------


def newey_west_lags(n_obs: int) -> int:
    """Newey–West (1994) rule of thumb for the HAC truncation lag: floor(4 (T/100)^(2/9))."""
    return int(math.floor(4 * (n_obs / 100) ** (2 / 9)))


@lru_cache(maxsize=256)
def its_mde_multiplier(df: int, alpha: float = 0.05, power: float = 0.8, grid: int = 400) -> float:
    """k such that a shift of k × (estimated SE) is found with probability ``power`` on average.

    The t-test's power at shift δ is the noncentral-t tail P(T(df, δ/σ) > t_{1−α/2}). The reported
    MDE plugs in an estimated SE, σ·sqrt(χ²_df/df), which on a 12-month series (df = 8) is often
    too small: the textbook k = t_{1−α/2} + t_power gives power ≈ 0.75 on average at the reported
    MDE. Here k is solved so that the power averaged over the SE's sampling distribution (a
    quantile grid of χ²_df) equals ``power``; for large df it equals the textbook value.
    """
    scale = np.sqrt(stats.chi2.ppf((np.arange(grid) + 0.5) / grid, df) / df)
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    # The opposite tail is below 1e-4 at these shifts; nct.cdf there returns NaN for large shifts.
    def shortfall(k: float) -> float:
        return float(np.mean(stats.nct.sf(crit, df, k * scale))) - power

    upper = 4.0
    while shortfall(upper) < 0:  # heavy χ² tails at tiny df: widen until the root is bracketed
        upper *= 2
        if upper > 1e6:
            return math.inf
    return float(optimize.brentq(shortfall, 0.0, upper))


def _month_index(period: str) -> int:
    year, month = period.split("-")
    return int(year) * 12 + int(month) - 1


def its_segmented(
    periods: Sequence[str],
    values: Sequence[float],
    start: str,
    *,
    weights: Sequence[float] | None = None,
    count: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
    maxlags: int | None = None,
) -> tuple[Comparison, Comparison]:
    """Segmented regression of a monthly series around ``start`` (first month of the new regime).

    Model: y_t = b0 + b1·t + b2·post_t + b3·(t − t0)·post_t, t in months. b2 is the level
    change at t0 and b3 the slope change per month. Errors are Newey–West HAC (small-sample
    corrected), but never smaller than the classical ones: see the comment in the body.

    * Rates and scores: weighted least squares, weights = the month's n.
    * Counts (``count=True``): Poisson GLM, log link, offset log(days in month), with the HAC
      sandwich covariance — robust to over-dispersion as quasi-Poisson is, and to autocorrelation.
      The level row is in counts per month at t0 (est_a: the pre-trend's counterfactual);
      the slope row in log-rate per month (effect size: the monthly rate ratio).

    Returns (level, slope) comparisons; n_a/n_b are the months' summed weights.
    """
    import statsmodels.api as sm

    idx = np.array([_month_index(p) for p in periods])
    order = np.argsort(idx)
    idx, y = idx[order], np.asarray(values, dtype=float)[order]
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)[order]
    t0 = _month_index(start)
    t, post = (idx - idx[0]).astype(float), (idx >= t0).astype(float)
    since = np.where(post > 0, idx - t0, 0).astype(float)
    X = np.column_stack([np.ones_like(t), t, post, since])
    lags = newey_west_lags(len(y)) if maxlags is None else maxlags
    cov = dict(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": True}, use_t=True)
    tt0 = float(t0 - idx[0])
    n_a, n_b = int(round(w[post == 0].sum())), int(round(w[post > 0].sum()))
    df = len(y) - X.shape[1]
    if df < 1:
        raise ValueError(f"{len(y)} months: too few for a segmented regression (4 parameters)")
    crit = its_mde_multiplier(df, alpha, power)
    if count:
        days = np.array([calendar.monthrange(i // 12, i % 12 + 1)[1] for i in idx], dtype=float)
        model = sm.GLM(y, X, family=sm.families.Poisson(), offset=np.log(days))
        res, classical = model.fit(**cov), model.fit(scale="X2")  # HAC sandwich; quasi-Poisson
        method = "its_poisson_glm_hac"
    else:
        model = sm.WLS(y, X, weights=w)
        res, classical = model.fit(**cov), model.fit()
        method = "its_wls_hac"
    # Newey–West errors are badly anti-conservative on short series (12 monthly points: 20 %
    # rejections at nominal 5 % in tests/test_kpis.py), so the larger of the HAC and the
    # classical (quasi-Poisson for counts) standard error is used, with t(T − 4) references.
    b = np.asarray(res.params)
    se = np.maximum(np.asarray(res.bse), np.asarray(classical.bse))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(b / se), df)
    half = stats.t.ppf(1 - alpha / 2, df) * se
    ci = np.column_stack([b - half, b + half])
    finite = bool(np.isfinite(se[2:]).all() and (se[2:] > 0).all())
    resid_sd = float(np.std(y - np.asarray(res.fittedvalues), ddof=X.shape[1])) if not count else None

    def comparison(est_a, est_b, diff, low, high, pv, effect, kind, mde) -> Comparison:
        ok = finite
        return Comparison(
            est_a=_finite(est_a), est_b=_finite(est_b), diff=_finite(diff),
            ci_low=_finite(low) if ok else None, ci_high=_finite(high) if ok else None,
            p_value=_finite(pv) if ok else None, effect_size=_finite(effect), effect_size_kind=kind,
            mde=_finite(mde) if ok else None, n_a=n_a, n_b=n_b, method=method,
        )

    n_post = int(post.sum())
    if count:
        days_t0 = float(calendar.monthrange(t0 // 12, t0 % 12 + 1)[1])
        base = math.exp(b[0] + b[1] * tt0) * days_t0
        level = comparison(base, base * math.exp(b[2]), base * math.expm1(b[2]),
                           base * math.expm1(ci[2, 0]), base * math.expm1(ci[2, 1]), p[2],
                           math.exp(b[2]), "rate_ratio", base * math.expm1(crit * se[2]))
        slope = comparison(b[1], b[1] + b[3], b[3], ci[3, 0], ci[3, 1], p[3],
                           math.exp(b[3]), "rate_ratio_per_month", crit * se[3])
    else:
        sd = resid_sd if resid_sd else None
        level = comparison(b[0] + b[1] * tt0, b[0] + b[1] * tt0 + b[2], b[2], ci[2, 0], ci[2, 1], p[2],
                           b[2] / sd if sd else None, "level_change_sd", crit * se[2])
        slope = comparison(b[1], b[1] + b[3], b[3], ci[3, 0], ci[3, 1], p[3],
                           b[3] * n_post / sd if sd else None, "slope_change_sd_by_end", crit * se[3])
    return level, slope


def _its_start(programme_date: date) -> tuple[str, str | None]:
    """First post month and the transition month to leave out (a month the date splits)."""
    if programme_date.day == 1:
        return f"{programme_date:%Y-%m}", None
    return f"{_add_months(programme_date.replace(day=1), 1):%Y-%m}", f"{programme_date:%Y-%m}"


def its_tests(monthly: pl.DataFrame, params: KpisParams | None = None) -> list[dict[str, Any]]:
    """Interrupted-time-series rows (``its_level``, ``its_slope``) for every KPI × cell of ``monthly``.

    A cell needs ``its_min_periods`` months with a value on each side of the programme date
    (a month the date splits is left out); otherwise its rows carry estimates of n only and
    the verdict "too few responses to tell". Rows are not yet BH-adjusted.
    """
    params = params or KpisParams()
    start, transition = _its_start(params.programme_date)
    rows: list[dict[str, Any]] = []
    series = monthly.filter(pl.col("value").is_not_null() & (pl.col("period") != (transition or "")))
    keys = series.select("kpi", "segment_col", "segment_value").unique().sort(["kpi", "segment_col", "segment_value"])
    order = {k: i for i, k in enumerate(KPIS)}
    for kpi, col, value in sorted(keys.iter_rows(), key=lambda k: (order.get(k[0], 99), k[1], k[2])):
        if kpi not in params.enabled_kpis:
            continue
        cell = series.filter((pl.col("kpi") == kpi) & (pl.col("segment_col") == col) & (pl.col("segment_value") == value)).sort("period")
        periods = cell["period"].to_list()
        before = [p for p in periods if p < start]
        after = [p for p in periods if p >= start]
        label_a = f"{before[0]}〜{before[-1]}" if before else "(empty)"
        label_b = f"{after[0]}〜{after[-1]}" if after else "(empty)"
        n_a = int(cell.filter(pl.col("period") < start)["n"].sum())
        n_b = int(cell.filter(pl.col("period") >= start)["n"].sum())
        count = kpi in COUNT_KPIS
        fitted = None
        if min(len(before), len(after)) >= params.its_min_periods and min(n_a, n_b) >= params.min_n:
            try:
                fitted = its_segmented(
                    periods, cell["value"].to_list(), start, weights=None if count else cell["n"].to_list(),
                    count=count, alpha=params.alpha, power=params.power, maxlags=params.its_hac_maxlags,
                )
            except (np.linalg.LinAlgError, ValueError):  # singular design: treated as not testable
                fitted = None
        for comparison, i in (("its_level", 0), ("its_slope", 1)):
            res = fitted[i] if fitted else Comparison(
                None, None, None, None, None, None, None,
                ("rate_ratio" if i == 0 else "rate_ratio_per_month") if count else ("level_change_sd" if i == 0 else "slope_change_sd_by_end"),
                None, n_a, n_b, "its_poisson_glm_hac" if count else "its_wls_hac",
            )
            row = _row_of(comparison, kpi, col, value, label_a, label_b, res, params, (len(before), len(after)))
            row["baseline"] = fitted[0].est_a if fitted else None
            rows.append(row)
    return rows


def _verdict(row: dict[str, Any], params: KpisParams) -> str:
    """Apply the verdict rule documented in the module docstring.

    For ``its_slope`` rows the meaningful change is spread over the post-programme months (a
    slope change that would add up to it by the end of the series); for counts the slope is
    on the log scale, so the relative threshold becomes log(1 + threshold).
    """
    if min(row["n_a"], row["n_b"]) < params.min_n or row["p_value"] is None:
        return VERDICT_TOO_FEW
    if row["significant"]:
        return VERDICT_IMPROVED if (row["diff"] > 0) == row["higher_is_better"] else VERDICT_WORSENED
    threshold = params.meaningful_change.get(row["kpi"], kpi_registry.get(row["kpi"]).meaningful_change)
    if row["comparison"] == "its_slope":
        if row["kpi"] in COUNT_KPIS:
            threshold = math.log1p(threshold)
        elif row["kpi"] in RELATIVE_THRESHOLD_KPIS:
            threshold *= abs(row["baseline"] or 0.0)  # relative to the level at the programme month
        threshold /= max(row["n_periods_b"] or 1, 1)
    elif row["kpi"] in RELATIVE_THRESHOLD_KPIS:
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
    "ALERTS_SCHEMA_VERSION",
    "DRIVERS_SCHEMA",
    "KPIS",
    "MONTHLY_SCHEMA",
    "SHIFT_SCHEMA",
    "Comparison",
    "KpisParams",
    "alerts",
    "alerts_document",
    "read_alerts",
    "bh_adjust",
    "compare_means",
    "compare_medians",
    "compare_nps",
    "compare_proportions",
    "compare_rates",
    "compare_survival",
    "coverage_notes",
    "customer_sample",
    "drivers",
    "its_segmented",
    "its_tests",
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


ALERTS_SCHEMA_VERSION = 1


def alerts_document(tests: pl.DataFrame, params: KpisParams, notes: Sequence[str] = ()) -> dict[str, Any]:
    """The stable machine-readable form of ``alerts.json`` for scheduled runs.

    Keys (schema_version 1): ``schema_version``, ``programme_date``, ``fdr_q``, ``windows``
    (label pairs per comparison), ``n_tests`` (the BH family size), ``n_alerts``, ``alerts``
    (``alerts(tests)``: significant adverse shifts, stable order) and ``notes`` (what could
    not be computed). Consumers should check ``schema_version`` before reading.
    """
    windows = {
        r["comparison"]: {"a": r["label_a"], "b": r["label_b"]}
        for r in tests.select("comparison", "label_a", "label_b").unique(subset="comparison", keep="first", maintain_order=True).iter_rows(named=True)
    }
    found = alerts(tests)
    return {
        "schema_version": ALERTS_SCHEMA_VERSION,
        "programme_date": params.programme_date.isoformat(),
        "fdr_q": params.fdr_q,
        "windows": dict(sorted(windows.items())),
        "n_tests": int(tests["p_value"].is_not_null().sum()),
        "n_alerts": len(found),
        "alerts": found,
        "notes": list(notes),
    }


def read_alerts(path: str | Path) -> list[dict[str, Any]]:
    """The alert list of an ``alerts.json`` (schema_version 1; the unversioned bare list of older runs too)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(doc, list):
        return doc
    if doc.get("schema_version") != ALERTS_SCHEMA_VERSION:
        raise ValueError(f"{path}: alerts.json schema_version {doc.get('schema_version')!r}, expected {ALERTS_SCHEMA_VERSION}")
    return doc["alerts"]


@dataclass
class KpisResult:
    tests: pl.DataFrame
    monthly: pl.DataFrame
    alerts: list[dict[str, Any]]
    metrics: dict[str, Any]
    drivers: pl.DataFrame
    notes: list[str]
    alerts_document: dict[str, Any]


def run(params: KpisParams, root: str | Path = ".") -> KpisResult:
    """Read the clean tables (and topic outputs) under ``root``; compute every KPI, test, driver and alert (no writing).

    Missing topic outputs leave the drivers table empty and say so in the notes.
    """
    root = Path(root)
    feedback = pl.read_parquet(root / params.in_feedback)
    tickets = pl.read_parquet(root / params.in_tickets)
    monthly = monthly_kpis(feedback, tickets, params)
    tests = shift_tests(feedback, tickets, params, monthly=monthly)
    notes = coverage_notes(feedback, tickets, params)
    assignments_path, topics_path = root / params.in_assignments, root / params.in_topics
    if assignments_path.is_file():
        topics = pl.read_parquet(topics_path) if topics_path.is_file() else None
        driver_table = drivers(feedback, pl.read_parquet(assignments_path), topics, params)
    else:
        driver_table = pl.DataFrame(schema=DRIVERS_SCHEMA)
        notes.append(f"drivers: not computed — no topic assignments at {params.in_assignments}")
    metrics = kpi_metrics(tests, monthly)
    # DVC metrics want flat scalars: flags plus one joined string (alerts.json keeps the list).
    metrics["yoy_computed"] = bool(tests.height and (tests["comparison"] == "yoy").any())
    metrics["drivers_computed"] = bool(driver_table.height)
    metrics["notes"] = " | ".join(notes)
    metrics["n_drivers_significant"] = int(driver_table["coef_significant"].sum()) if driver_table.height else 0
    metrics["top_driver"] = driver_table["label"][0] if driver_table.height else None
    return KpisResult(tests, monthly, alerts(tests), metrics, driver_table, notes, alerts_document(tests, params, notes))


def nps_plot_data(monthly: pl.DataFrame) -> list[dict[str, Any]]:
    """Overall monthly NPS for `dvc plots`."""
    rows = monthly.filter((pl.col("kpi") == "nps") & (pl.col("segment_col") == "all")).sort("period")
    return [{"period": r["period"], "nps": _json_float(r["value"]), "n": r["n"]} for r in rows.iter_rows(named=True)]


def write(result: KpisResult, params: KpisParams, root: str | Path = ".") -> None:
    from pipelines import io as kio

    root = Path(root)
    kio.write_parquet(result.tests, root / params.out_tests)
    kio.write_parquet(result.monthly, root / params.out_monthly)
    kio.write_parquet(result.drivers, root / params.out_drivers)
    kio.write_json(result.alerts_document, root / params.out_alerts)
    kio.write_json(result.metrics, root / params.metrics_path)
    kio.write_json(nps_plot_data(result.monthly), root / params.plots_path)
