"""Statistical primitives on plain arrays: NPS intervals, two-sample comparisons with effect sizes and minimum
detectable effects, single-sample intervals, and Benjamini–Hochberg. Each delegates to statsmodels / scipy /
lifelines where those provide the test. Knows nothing of KPIs or tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
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

PROMOTER_MIN = 9  # NPS promoters answer 9–10
DETRACTOR_MAX = 6  # NPS detractors answer 0–6


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


def z_crit(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


def finite(x: float | None) -> float | None:
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
    half = z_crit(alpha) * 100.0 * math.sqrt(nps_variance(counts))
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


def nps_unit_scores(scores: np.ndarray) -> np.ndarray:
    """Promoter +1, passive 0, detractor −1: NPS/100 is the mean of these."""
    return np.where(scores >= PROMOTER_MIN, 1.0, np.where(scores <= DETRACTOR_MAX, -1.0, 0.0))


def nps_bootstrap_ci(
    scores: Sequence[int] | np.ndarray, alpha: float = 0.05, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval for NPS in points (a cross-check for the Wald interval)."""
    unit = nps_unit_scores(np.asarray(scores))
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
    unit_a, unit_b = nps_unit_scores(np.asarray(scores_a)), nps_unit_scores(np.asarray(scores_b))
    p_value = float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else None
    half = z_crit(alpha) * se
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
        mde=(z_crit(alpha) + float(stats.norm.ppf(power))) * se if se > 0 else None,
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
        ci_low=finite(ci_low) if testable else None,
        ci_high=finite(ci_high) if testable else None,
        p_value=finite(p_value) if testable else None,
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
        p_value = finite(test_proportions_2indep(k_b, n_b, k_a, n_a, method="score", compare="diff").pvalue)
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
        ci_low=finite(boot.confidence_interval.low),
        ci_high=finite(boot.confidence_interval.high),
        p_value=finite(p_value),
        effect_size=2.0 * float(u_b) / (a.size * b.size) - 1.0,
        effect_size_kind="rank_biserial",
        mde=(z_crit(alpha) + float(stats.norm.ppf(power))) * se,
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
    return finite(kmf.median_survival_time_), finite(ci.iloc[0, 0]), finite(ci.iloc[0, 1])


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

        p_value = finite(
            logrank_test(durations_a, durations_b, event_observed_A=observed_a, event_observed_B=observed_b).p_value
        )
        share = n_a / (n_a + n_b)
        log_hr = (z_crit(alpha) + float(stats.norm.ppf(power))) / math.sqrt(events * share * (1 - share))
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
        p_value = finite(
            test_poisson_2indep(count_b, exposure_b, count_a, exposure_a, compare="diff", method="score").pvalue
        )
        low, high = confint_poisson_2indep(count_b, exposure_b, count_a, exposure_a, compare="diff", method="score", alpha=alpha)
        ci_low, ci_high = finite(low), finite(high)
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
# Single-sample estimates: (value, ci_low, ci_high), the sample non-empty
# ---------------------------------------------------------------------------------------------

Estimate = tuple[float | None, float | None, float | None]


def nps_estimate(scores: np.ndarray, alpha: float = 0.05) -> Estimate:
    """NPS with the adjusted-Wald interval (Rocks 2016)."""
    counts = nps_counts(scores)
    return (nps_value(counts), *nps_adjusted_wald_ci(counts, alpha))


def mean_estimate(values: np.ndarray, alpha: float = 0.05) -> Estimate:
    """Mean with its t interval (none from one value)."""
    if values.size < 2:
        return float(values.mean()), None, None
    low, high = DescrStatsW(values).tconfint_mean(alpha=alpha)
    return float(values.mean()), finite(low), finite(high)


def proportion_estimate(indicator: np.ndarray, alpha: float = 0.05) -> Estimate:
    """Share of 1s in percent with the Wilson interval."""
    k, n = int(np.sum(indicator)), int(indicator.size)
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    return 100.0 * k / n, 100.0 * float(low), 100.0 * float(high)


def rate_estimate(count: int, exposure: float, alpha: float = 0.05) -> Estimate:
    """Events per unit exposure with the exact (Garwood) Poisson interval."""
    low, high = confint_poisson(count, exposure, method="exact-c", alpha=alpha)
    return count / exposure, finite(low), finite(high)


def median_estimate(values: np.ndarray, alpha: float = 0.05) -> Estimate:
    """Median with the distribution-free (binomial order-statistic) interval."""
    median = float(np.median(values))
    ci = stats.quantile_test(values, q=median, p=0.5).confidence_interval(1 - alpha)
    return median, finite(ci.low), finite(ci.high)
