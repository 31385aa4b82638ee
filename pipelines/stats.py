"""Statistical primitives on plain arrays: NPS intervals, two-sample comparisons with effect sizes and minimum
detectable effects, single-sample intervals, and Benjamini–Hochberg. Each delegates to statsmodels / scipy /
lifelines where those provide the test. Knows nothing of KPIs or tables.

Every comparison says the direction its own test found (``direction``: +1 when period b tends higher) and
reports a difference that agrees with it (Mann–Whitney goes with the Hodges–Lehmann shift, not the median
difference). ``mde_at(alpha)`` re-states the minimum detectable effect at another threshold (the BH threshold
the decision uses). ``deff`` (variance inflation per period, ≥ 1) widens the NPS, mean, proportion and rate
tests for dependence between observations (see ``pipelines.samples.inflation``): they are run on the Kish
effective sample size n / deff, so each family keeps its own test and interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
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
    direction: int | None = None  # sign of the test's own statistic: +1 b tends higher, −1 lower, 0 none
    # The MDE at another two-sided threshold (None: not testable); not a table column.
    mde_at: Callable[[float], float | None] | None = field(default=None, compare=False, repr=False)


P_FLOOR = float(np.finfo(float).tiny)  # p-values underflow to 0 far out in the tail: stored as this, never 0


def p_value(p: float | None) -> float | None:
    """A finite p-value, floored at ``P_FLOOR`` (an exact 0 is an underflow, not a certainty)."""
    p = finite(p)
    return None if p is None else max(p, P_FLOOR)


def sign(x: float | None) -> int | None:
    return None if x is None or not math.isfinite(x) else int(np.sign(x))


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


def compare_nps(
    scores_a: np.ndarray, scores_b: np.ndarray, alpha: float = 0.05, power: float = 0.8,
    deff: tuple[float, float] = (1.0, 1.0),
) -> Comparison:
    """Wald z-test and interval for NPS_b − NPS_a with the trinomial variance (Rocks 2016), each period's
    variance multiplied by its ``deff``. Two constant samples: p 1 when equal (MDE 0), the floor otherwise."""
    ca, cb = nps_counts(scores_a), nps_counts(scores_b)
    n_a, n_b = sum(ca), sum(cb)
    est_a, est_b = nps_value(ca), nps_value(cb)
    diff = est_b - est_a
    se = 100.0 * math.sqrt(deff[0] * nps_variance(ca) + deff[1] * nps_variance(cb))
    unit_a, unit_b = nps_unit_scores(np.asarray(scores_a)), nps_unit_scores(np.asarray(scores_b))
    if se > 0:
        p = p_value(2 * stats.norm.sf(abs(diff) / se))
    else:
        p = 1.0 if diff == 0 else P_FLOOR

    def mde_at(a: float) -> float:
        # Normal-approximation MDE at the observed variances: no library covers the NPS.
        return (z_crit(a) + float(stats.norm.ppf(power))) * se

    half = z_crit(alpha) * se
    return Comparison(
        est_a=est_a,
        est_b=est_b,
        diff=diff,
        ci_low=diff - half,
        ci_high=diff + half,
        p_value=p,
        effect_size=_cohen_d(unit_a, unit_b),
        effect_size_kind="cohen_d",
        mde=mde_at(alpha),
        n_a=n_a,
        n_b=n_b,
        method="wald_trinomial",
        direction=sign(diff),
        mde_at=mde_at,
    )


def compare_means(
    a: np.ndarray, b: np.ndarray, alpha: float = 0.05, power: float = 0.8, deff: tuple[float, float] = (1.0, 1.0)
) -> Comparison:
    """Welch t-test and interval for mean_b − mean_a; effect Cohen's d; MDE from the same Welch SE and df.

    ``deff`` enters as frequency weights 1/deff (the effective sample size). Two constant samples: p 1 when
    equal (MDE 0), the floor otherwise; a single value per period cannot be tested.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    da = DescrStatsW(a, weights=np.full(a.size, 1.0 / deff[0]))
    db = DescrStatsW(b, weights=np.full(b.size, 1.0 / deff[1]))
    diff = float(b.mean() - a.mean())
    pooled = _pooled_sd(a, b)
    ci_low = ci_high = p = mde_at = None
    if a.size > 1 and b.size > 1 and da.sum_weights > 1 and db.sum_weights > 1:
        if pooled > 0:
            cm = CompareMeans(db, da)
            _, p, df = cm.ttest_ind(usevar="unequal")
            ci_low, ci_high = cm.tconfint_diff(alpha=alpha, usevar="unequal")
            se = float(cm.std_meandiff_separatevar)

            def mde_at(x: float, se: float = se, df: float = float(df)) -> float:
                return (float(stats.t.ppf(1 - x / 2, df)) + float(stats.t.ppf(power, df))) * se
        else:  # both constant: no noise, the difference is exact
            p, ci_low, ci_high = (1.0 if diff == 0 else P_FLOOR), diff, diff

            def mde_at(x: float) -> float:
                return 0.0
    return Comparison(
        est_a=float(a.mean()),
        est_b=float(b.mean()),
        diff=diff,
        ci_low=finite(ci_low),
        ci_high=finite(ci_high),
        p_value=p_value(p),
        effect_size=_cohen_d(a, b),
        effect_size_kind="cohen_d",
        mde=mde_at(alpha) if mde_at else None,
        n_a=int(a.size),
        n_b=int(b.size),
        method="welch_t",
        direction=sign(diff),
        mde_at=mde_at,
    )


def compare_proportions(
    k_a: float, n_a: float, k_b: float, n_b: float, alpha: float = 0.05, power: float = 0.8,
    deff: tuple[float, float] = (1.0, 1.0),
) -> Comparison:
    """Score test and Newcombe hybrid-score interval for p_b − p_a, all in percentage points.

    The interval exists whenever both periods have units (0/10 vs 0/20 too); the test needs a unit on
    each side of the boundary. ``deff`` divides each period's k and n (effective sample size).
    """
    p_a, p_b = k_a / n_a, k_b / n_b
    ea, eb = (k_a / deff[0], n_a / deff[0]), (k_b / deff[1], n_b / deff[1])
    low, high = confint_proportions_2indep(eb[0], eb[1], ea[0], ea[1], method="newcomb", compare="diff", alpha=alpha)
    # The score test is undefined when both samples sit on the same boundary (all 0 or all 1).
    testable = 0 < k_a + k_b < n_a + n_b
    p = mde_at = None
    if testable:
        p = test_proportions_2indep(eb[0], eb[1], ea[0], ea[1], method="score", compare="diff").pvalue

        def mde_at(x: float) -> float:
            h = _mde_standardised("normal", ea[1], eb[1], x, power)
            # Cohen's h back to a difference of proportions, on the side of 0.5 (the larger one).
            phi = math.asin(math.sqrt(p_a))
            target = math.sin(min(phi + h / 2, math.pi / 2)) ** 2 if p_a <= 0.5 else math.sin(max(phi - h / 2, 0.0)) ** 2
            return 100.0 * abs(target - p_a)
    return Comparison(
        est_a=100.0 * p_a,
        est_b=100.0 * p_b,
        diff=100.0 * (p_b - p_a),
        ci_low=finite(100.0 * float(low)),
        ci_high=finite(100.0 * float(high)),
        p_value=p_value(p),
        effect_size=float(proportion_effectsize(p_b, p_a)),
        effect_size_kind="cohen_h",
        mde=mde_at(alpha) if mde_at else None,
        n_a=int(round(n_a)),
        n_b=int(round(n_b)),
        method="score_test+newcombe",
        direction=sign(p_b - p_a),
        mde_at=mde_at,
    )


def _pairwise_order_stat(a_sorted: np.ndarray, b: np.ndarray, k: int) -> float:
    """The k-th smallest (1-based) of the n_a·n_b differences b_j − a_i, without forming them all."""
    lo, hi = float(b.min() - a_sorted[-1]), float(b.max() - a_sorted[0])

    def count_le(x: float) -> int:  # pairs with b_j − a_i ≤ x  ⇔  a_i ≥ b_j − x
        return int(np.sum(a_sorted.size - np.searchsorted(a_sorted, b - x, side="left")))

    for _ in range(200):  # bisection on the value; stops at float resolution
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (lo, mid) if count_le(mid) >= k else (mid, hi)
    # Snap to the largest actual difference ≤ hi (the bisection stops within float resolution of it).
    i = np.searchsorted(a_sorted, b - hi, side="left")
    ok = i < a_sorted.size
    return float(np.max(b[ok] - a_sorted[i[ok]]))


def hodges_lehmann(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float]:
    """Hodges–Lehmann shift b − a (median of pairwise differences) with the Moses interval that inverts the
    Mann–Whitney test (normal approximation for the critical rank)."""
    a_sorted, b = np.sort(np.asarray(a, dtype=float)), np.asarray(b, dtype=float)
    nm = a_sorted.size * b.size
    mid = (nm + 1) / 2
    hl = (_pairwise_order_stat(a_sorted, b, math.floor(mid)) + _pairwise_order_stat(a_sorted, b, math.ceil(mid))) / 2
    k = int(math.floor(nm / 2 - z_crit(alpha) * math.sqrt(nm * (a_sorted.size + b.size + 1) / 12)))
    if k < 1:
        return hl, float(b.min() - a_sorted[-1]), float(b.max() - a_sorted[0])
    return hl, _pairwise_order_stat(a_sorted, b, k), _pairwise_order_stat(a_sorted, b, nm - k + 1)


def compare_medians(
    a: np.ndarray, b: np.ndarray, alpha: float = 0.05, power: float = 0.8, seed: int = 0
) -> Comparison:
    """Mann–Whitney U test; medians as the period estimates; the difference is the Hodges–Lehmann shift.

    The shift (median of all b − a differences) is the estimate that belongs to the Mann–Whitney test, so
    its sign follows the test: the difference of medians can point the other way (a slower tail with a
    faster median). Interval: Moses (inverting the test). Effect size: rank-biserial correlation (positive: b
    tends to be larger). MDE: (z_{1−α/2} + z_power) × the interval's implied SE. ``seed`` is unused (kept for
    callers).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    u_b, p = stats.mannwhitneyu(b, a, alternative="two-sided")
    rank_biserial = 2.0 * float(u_b) / (a.size * b.size) - 1.0
    hl, low, high = hodges_lehmann(a, b, alpha)
    se = (high - low) / (2 * z_crit(alpha))

    def mde_at(x: float) -> float:
        return (z_crit(x) + float(stats.norm.ppf(power))) * se

    return Comparison(
        est_a=float(np.median(a)),
        est_b=float(np.median(b)),
        diff=float(hl),
        ci_low=finite(low),
        ci_high=finite(high),
        p_value=p_value(p),
        effect_size=rank_biserial,
        effect_size_kind="rank_biserial",
        mde=mde_at(alpha),
        n_a=int(a.size),
        n_b=int(b.size),
        method="mann_whitney",
        direction=sign(rank_biserial),
        mde_at=mde_at,
    )


def km_median(durations: np.ndarray, observed: np.ndarray, alpha: float = 0.05) -> tuple[float | None, float | None, float | None]:
    """Kaplan–Meier median with its interval (lifelines); None where the curve never reaches it."""
    from lifelines import KaplanMeierFitter  # ~3 s to import: only where durations are compared
    from lifelines.utils import median_survival_times

    kmf = KaplanMeierFitter(alpha=alpha).fit(durations, event_observed=observed)
    ci = median_survival_times(kmf.confidence_interval_)
    return finite(kmf.median_survival_time_), finite(ci.iloc[0, 0]), finite(ci.iloc[0, 1])


def logrank_direction(durations_a: np.ndarray, observed_a: np.ndarray, durations_b: np.ndarray,
                      observed_b: np.ndarray) -> int:
    """Direction of the log-rank statistic on the duration scale: +1 when period b's durations run longer.

    Period b has fewer events than expected under a common hazard (O_b < E_b) exactly when its durations
    tend to be longer; the sign of O_b − E_b is the sign of the log-rank score (and of the Cox coefficient).
    """
    t = np.concatenate([durations_a, durations_b]).astype(float)
    d = np.concatenate([observed_a, observed_b]).astype(bool)
    in_b = np.concatenate([np.zeros(len(durations_a), bool), np.ones(len(durations_b), bool)])
    times = np.unique(t[d])
    order = np.sort(t)
    order_b = np.sort(t[in_b])
    at_risk = t.size - np.searchsorted(order, times, side="left")
    at_risk_b = order_b.size - np.searchsorted(order_b, times, side="left")
    deaths = np.bincount(np.searchsorted(times, t[d]), minlength=times.size)
    expected_b = float(np.sum(deaths * at_risk_b / at_risk))
    observed_events_b = float(np.sum(d & in_b))
    return -int(np.sign(observed_events_b - expected_b))


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
    data); the difference is None where a KM median is not reached (most still open). The test's
    own direction is in ``direction``. The MDE uses Schoenfeld's events formula, log HR =
    (z_{1−α/2} + z_power) / sqrt(D·c(1−c)), turned into hours as a reduction of the period-a median.
    """
    med_a = km_median(durations_a, observed_a, alpha)[0]
    med_b = km_median(durations_b, observed_b, alpha)[0]
    events = int(np.sum(observed_a) + np.sum(observed_b))
    n_a, n_b = len(durations_a), len(durations_b)
    p = mde_at = direction = None
    if events > 0 and n_a and n_b:
        from lifelines.statistics import logrank_test

        p = logrank_test(durations_a, durations_b, event_observed_A=observed_a, event_observed_B=observed_b).p_value
        direction = logrank_direction(durations_a, observed_a, durations_b, observed_b)
        share = n_a / (n_a + n_b)

        def mde_at(x: float) -> float | None:
            log_hr = (z_crit(x) + float(stats.norm.ppf(power))) / math.sqrt(events * share * (1 - share))
            return med_a * (1 - math.exp(-log_hr)) if med_a is not None else None
    both = med_a is not None and med_b is not None
    return Comparison(
        est_a=med_a,
        est_b=med_b,
        diff=med_b - med_a if both else None,
        ci_low=None,
        ci_high=None,
        p_value=p_value(p),
        effect_size=med_b / med_a if both and med_a > 0 else None,
        effect_size_kind="median_ratio",
        mde=mde_at(alpha) if mde_at else None,
        n_a=n_a,
        n_b=n_b,
        method="logrank",
        direction=direction,
        mde_at=mde_at,
    )


def compare_rates(
    count_a: float, exposure_a: float, count_b: float, exposure_b: float, alpha: float = 0.05, power: float = 0.8,
    deff: tuple[float, float] = (1.0, 1.0),
) -> Comparison:
    """Poisson score test and interval for rate_b − rate_a (events per unit exposure).

    ``deff`` (over-dispersion per period, ≥ 1) divides count and exposure: the rate stays, its variance grows.
    """
    rate_a, rate_b = count_a / exposure_a, count_b / exposure_b
    ea, eb = (count_a / deff[0], exposure_a / deff[0]), (count_b / deff[1], exposure_b / deff[1])
    p = ci_low = ci_high = mde_at = None
    if count_a + count_b > 0:
        p = test_poisson_2indep(eb[0], eb[1], ea[0], ea[1], compare="diff", method="score").pvalue
        ci_low, ci_high = confint_poisson_2indep(eb[0], eb[1], ea[0], ea[1], compare="diff", method="score", alpha=alpha)
        if rate_a > 0:
            def mde_at(x: float) -> float:
                return _poisson_mde(rate_a, ea[1], eb[1], x, power)
    return Comparison(
        est_a=rate_a,
        est_b=rate_b,
        diff=rate_b - rate_a,
        ci_low=finite(ci_low),
        ci_high=finite(ci_high),
        p_value=p_value(p),
        effect_size=rate_b / rate_a if rate_a > 0 else None,
        effect_size_kind="rate_ratio",
        mde=mde_at(alpha) if mde_at else None,
        n_a=int(round(count_a)),
        n_b=int(round(count_b)),
        method="poisson_score",
        direction=sign(rate_b - rate_a),
        mde_at=mde_at,
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


@lru_cache(maxsize=256)
def mde_multiplier(df: int, alpha: float = 0.05, power: float = 0.8, grid: int = 400) -> float:
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


MAX_T_DF = 10_000  # beyond this t is normal for every threshold used here


def with_t_reference(res: Comparison, df: float, alpha: float = 0.05, power: float = 0.8,
                     power_df: float | None = None) -> Comparison:
    """The comparison's z statistic read against t with ``df`` degrees of freedom (part of the variance is
    estimated from few months): p and interval half-widths widened to match; the MDE is ``mde_multiplier``
    × SE on ``power_df`` (default ``df``), so a shift of the reported MDE is found with ``power`` on average
    over the estimated SE."""
    if not math.isfinite(df) or res.p_value is None:
        return res
    df = min(df, MAX_T_DF)
    k_df = max(int(min(df if power_df is None else power_df, MAX_T_DF)), 1)
    z = float(stats.norm.isf(res.p_value / 2))
    ratio = float(stats.t.ppf(1 - alpha / 2, df)) / z_crit(alpha)
    low = res.diff - (res.diff - res.ci_low) * ratio if res.ci_low is not None and res.diff is not None else res.ci_low
    high = res.diff + (res.ci_high - res.diff) * ratio if res.ci_high is not None and res.diff is not None else res.ci_high
    inner = res.mde_at

    def mde_at(x: float) -> float | None:
        m = inner(x) if inner else None
        return None if m is None else m * mde_multiplier(k_df, x, power) / (z_crit(x) + float(stats.norm.ppf(power)))

    return replace(res, p_value=p_value(2 * stats.t.sf(z, df)), ci_low=low, ci_high=high,
                   mde=mde_at(alpha) if inner else None, mde_at=mde_at if inner else None)


def ar1_rho(resid: np.ndarray, M: np.ndarray, A: np.ndarray, cap: float) -> float:
    """AR(1) ρ of residuals r = M y for the variance, from few points: bias-corrected, then one SE up.

    r'Ar / r'r less its exact expectation under independence, tr(MA)/tr(M), plus Kendall's 3ρ/T; then
    Bartlett's SE sqrt((1 − ρ²)/T) is added: on 12 months ρ̂ is uncertain by about ±0.27, and an
    understated ρ understates the variance (false alarms), an overstated one only costs power.
    """
    T = resid.size
    denom = float(resid @ resid)
    if denom <= 0 or not A.any():
        return 0.0
    rho_hat = float(resid @ A @ resid) / denom
    rho = max(rho_hat - float(np.trace(M @ A) / np.trace(M)) + 3 * max(rho_hat, 0.0) / T, 0.0)
    return float(min(rho + math.sqrt((1 - min(rho, 1.0) ** 2) / T), cap))


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
