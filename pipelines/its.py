"""Interrupted time series: segmented regression of each monthly KPI series around the programme date.

Rows ``its_level`` / ``its_slope`` join the run's one Benjamini–Hochberg family in ``pipelines.kpis``.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import polars as pl
from scipy import optimize, stats

from pipelines import kpi_registry
from pipelines.kpi_tables import comparison_row
from pipelines.periods import its_start, month_index
from pipelines.schema import KpisParams
from pipelines.stats import Comparison, finite


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
    # The modules themselves: statsmodels.api also imports graphics, tsa and more (~1-3 s per kpis run).
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM
    from statsmodels.regression.linear_model import WLS

    idx = np.array([month_index(p) for p in periods])
    order = np.argsort(idx)
    idx, y = idx[order], np.asarray(values, dtype=float)[order]
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)[order]
    t0 = month_index(start)
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
        model = GLM(y, X, family=families.Poisson(), offset=np.log(days))
        res, classical = model.fit(**cov), model.fit(scale="X2")  # HAC sandwich; quasi-Poisson
        method = "its_poisson_glm_hac"
    else:
        model = WLS(y, X, weights=w)
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
    testable = bool(np.isfinite(se[2:]).all() and (se[2:] > 0).all())
    resid_sd = float(np.std(y - np.asarray(res.fittedvalues), ddof=X.shape[1])) if not count else None

    def comparison(est_a, est_b, diff, low, high, pv, effect, kind, mde) -> Comparison:
        ok = testable
        return Comparison(
            est_a=finite(est_a), est_b=finite(est_b), diff=finite(diff),
            ci_low=finite(low) if ok else None, ci_high=finite(high) if ok else None,
            p_value=finite(pv) if ok else None, effect_size=finite(effect), effect_size_kind=kind,
            mde=finite(mde) if ok else None, n_a=n_a, n_b=n_b, method=method,
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



def its_tests(monthly: pl.DataFrame, params: KpisParams | None = None) -> list[dict[str, Any]]:
    """Interrupted-time-series rows (``its_level``, ``its_slope``) for every KPI × cell of ``monthly``.

    A cell needs ``its_min_periods`` months with a value on each side of the programme date
    (a month the date splits is left out); otherwise its rows carry estimates of n only and
    the verdict "too few responses to tell". Rows are not yet BH-adjusted. No programme date, no rows.
    """
    params = params or KpisParams()
    if params.programme_date is None:
        return []
    start, transition = its_start(params.programme_date)
    rows: list[dict[str, Any]] = []
    series = monthly.filter(pl.col("value").is_not_null() & (pl.col("period") != (transition or "")))
    keys = series.select("kpi", "segment_col", "segment_value").unique().sort(["kpi", "segment_col", "segment_value"])
    for kpi, col, value in sorted(keys.iter_rows(), key=lambda k: (*kpi_registry.sort_key(k[0]), k[1], k[2])):
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
        count = kpi_registry.get(kpi).is_count
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
            row = comparison_row(comparison, kpi, col, value, label_a, label_b, res, params, (len(before), len(after)))
            row["baseline"] = fitted[0].est_a if fitted else None
            rows.append(row)
    return rows
