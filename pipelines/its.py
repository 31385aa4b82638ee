"""Interrupted time series: segmented regression of each monthly KPI series around the programme date.

Rows ``its_level`` / ``its_slope`` join the run's one Benjamini–Hochberg family in ``pipelines.kpis``.

Model (Lopez Bernal, Cummins & Gasparrini 2017, IJE): y_t = b0 + b1·t + b2·post_t + b3·(t − t0)·post_t
[+ Fourier terms of the month of year], t in months. Scores and shares: weighted least squares (weights the
month's n). Counts: a Poisson GLM with log link and the month's exposure (days the data cover) as offset,
over-dispersion by the Pearson scale (quasi-Poisson). ``poisson_its`` is the paper's own model and
reproduces its Sicily smoking-ban rate ratios.

Autocorrelation. Monthly KPI series carry AR(1)-like month-to-month persistence, and 12 points are too few
for Newey–West (20 % rejections at nominal 5 % in the tests; so no HAC and no lag choice) or for GLSAR's own
ρ estimate (biased towards 0 by about −(1 + 3ρ)/T and by the regression). The errors here are those of the fitted coefficients under
AR(1) errors with a bias-corrected ρ (Prais–Winsten's error model, keeping the WLS/GLM point estimates):
  Var(b) = σ² (X'WX)⁻¹ X'W^½ R(ρ) W^½ X (X'WX)⁻¹,  R(ρ)_ij = ρ^|i−j|,
ρ from the lag-1 autocorrelation of the (Pearson) residuals minus its exact expectation under independence
for this design, tr(M A)/tr(M), plus Kendall's 3ρ/T, then one Bartlett SE up (``pipelines.stats.ar1_rho``:
an understated ρ is a false alarm, an overstated one only costs power); σ² = RSS / tr(M R(ρ)) so the
residual variance is not understated either. References: t with T − p − 1 df (one for ρ). ``bench/robustness.py`` shows the size
at ρ = 0.3 and 0.6. Seasonality: ``harmonics`` sine/cosine pairs of the month of year, used only when the
series spans at least 24 months (a shorter series cannot tell a season from the programme).
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from pipelines import kpi_registry
from pipelines.kpi_tables import comparison_row
from pipelines.periods import add_months, its_start, month_index
from pipelines.schema import KpisParams
from pipelines.stats import Comparison, ar1_rho, finite, p_value, sign
from pipelines.stats import mde_multiplier as its_mde_multiplier

SEASONAL_MIN_MONTHS = 24


def fourier(month_of_year: np.ndarray, harmonics: int, period: int = 12) -> np.ndarray:
    """sin/cos pairs of the month of year (R's ``tsModel::harmonic(month, k, 12)``), k = 1..harmonics."""
    m = np.asarray(month_of_year, dtype=float)
    cols = [f(2 * np.pi * k * m / period) for k in range(1, harmonics + 1) for f in (np.sin, np.cos)]
    return np.column_stack(cols) if cols else np.empty((m.size, 0))


def poisson_its(
    counts: Sequence[float],
    time: Sequence[float],
    post: Sequence[float],
    offset: Sequence[float],
    *,
    month_of_year: Sequence[int] | None = None,
    harmonics: int = 0,
    quasi: bool = False,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Level-change rate ratio (with its Wald interval) of a Poisson ITS: log E[y] = log(offset) + b0 + b1·t +
    b2·post [+ harmonics]; ``quasi`` scales the errors by the Pearson X² / df (quasi-Poisson).

    Lopez Bernal et al. (2017), Sicily acute coronary events: 0.894 (0.865–0.925) without seasonality,
    0.885 (0.839–0.933) with harmonic(month, 2, 12) and quasi-Poisson.
    """
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM

    t, d = np.asarray(time, dtype=float), np.asarray(post, dtype=float)
    X = np.column_stack([np.ones_like(t), d, t])
    if harmonics:
        if month_of_year is None:
            raise ValueError("harmonics need month_of_year")
        X = np.column_stack([X, fourier(np.asarray(month_of_year), harmonics)])
    fit = GLM(np.asarray(counts, dtype=float), X, family=families.Poisson(),
                 offset=np.log(np.asarray(offset, dtype=float))).fit(scale="X2" if quasi else None)
    low, high = np.asarray(fit.conf_int(alpha))[1]
    return math.exp(fit.params[1]), math.exp(low), math.exp(high)


def _ar1_cov(X: np.ndarray, w: np.ndarray, resid: np.ndarray) -> tuple[np.ndarray, float]:
    """Covariance of WLS/GLM coefficients under AR(1) errors with a bias-corrected ρ (module note); (cov, ρ)."""
    T, p = X.shape
    sw = np.sqrt(w)
    Xw = X * sw[:, None]
    bread = np.linalg.pinv(Xw.T @ Xw)
    M = np.eye(T) - Xw @ bread @ Xw.T
    r = sw * resid  # standardised (Pearson) residuals
    A = (np.eye(T, k=1) + np.eye(T, k=-1)) / 2
    denom = float(r @ r)
    rho = ar1_rho(r, M, A, 0.95)
    lag = np.abs(np.subtract.outer(np.arange(T), np.arange(T)))
    R = rho ** lag
    sigma2 = denom / float(np.trace(M @ R))
    return sigma2 * bread @ (Xw.T @ R @ Xw) @ bread, rho


def its_segmented(
    periods: Sequence[str],
    values: Sequence[float],
    start: str,
    *,
    weights: Sequence[float] | None = None,
    count: bool = False,
    exposure_days: Sequence[float] | None = None,
    harmonics: int = 0,
    alpha: float = 0.05,
    power: float = 0.8,
) -> tuple[Comparison, Comparison]:
    """Segmented regression of a monthly series around ``start`` (first month of the new regime).

    See the module note for the model and its AR(1) errors. ``harmonics`` Fourier pairs of the month of
    year enter only when the series spans ``SEASONAL_MIN_MONTHS``.

    * Rates and scores: weighted least squares, weights = the month's n.
    * Counts (``count=True``, ``values`` the month's counts): Poisson GLM, log link, offset log(days the
      data cover in the month; default the calendar month), quasi-Poisson scale. The level row is in counts
      per month at t0 (est_a: the pre-trend's counterfactual); the slope row in log-rate per month (effect
      size: the monthly rate ratio).

    Returns (level, slope) comparisons; n_a/n_b are the summed weights (counts: the events).
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
    seasonal = harmonics > 0 and idx[-1] - idx[0] + 1 >= SEASONAL_MIN_MONTHS
    if seasonal:
        X = np.column_stack([X, fourier(idx % 12 + 1, harmonics)])
    tt0 = float(t0 - idx[0])
    df = len(y) - X.shape[1] - 1  # one more for ρ
    if df < 1:
        raise ValueError(f"{len(y)} months: too few for a segmented regression ({X.shape[1]} parameters and ρ)")
    if count:
        n_a, n_b = int(round(y[post == 0].sum())), int(round(y[post > 0].sum()))
        days = (np.array([calendar.monthrange(i // 12, i % 12 + 1)[1] for i in idx], dtype=float)
                if exposure_days is None else np.asarray(exposure_days, dtype=float)[order])
        fit = GLM(y, X, family=families.Poisson(), offset=np.log(days)).fit()
        mu = np.asarray(fit.fittedvalues)
        cov, _ = _ar1_cov(X, mu, (y - mu) / mu)  # working weights μ; Pearson residuals (y − μ)/√μ
        method = "its_poisson_glm_ar1"
    else:
        n_a, n_b = int(round(w[post == 0].sum())), int(round(w[post > 0].sum()))
        fit = WLS(y, X, weights=w).fit()
        cov, _ = _ar1_cov(X, w, y - np.asarray(fit.fittedvalues))
        method = "its_wls_ar1"
    b = np.asarray(fit.params)
    se = np.sqrt(np.maximum(np.diag(cov), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(b / se), df)
    half = stats.t.ppf(1 - alpha / 2, df) * se
    ci = np.column_stack([b - half, b + half])
    testable = bool(np.isfinite(se[2:4]).all() and (se[2:4] > 0).all())
    resid_sd = float(np.sqrt(np.sum(w * (y - np.asarray(fit.fittedvalues)) ** 2) / w.sum() * len(y) / (len(y) - X.shape[1]))) if not count else None
    season_t0 = float(fourier(np.array([t0 % 12 + 1]), harmonics)[0] @ b[4:]) if seasonal else 0.0

    def comparison(est_a, est_b, diff, low, high, pv, effect, kind, mde_at) -> Comparison:
        ok = testable
        return Comparison(
            est_a=finite(est_a), est_b=finite(est_b), diff=finite(diff),
            ci_low=finite(low) if ok else None, ci_high=finite(high) if ok else None,
            p_value=p_value(pv) if ok else None, effect_size=finite(effect), effect_size_kind=kind,
            mde=finite(mde_at(alpha)) if ok else None, n_a=n_a, n_b=n_b, method=method,
            direction=sign(diff), mde_at=mde_at if ok else None,
        )

    def k(x: float) -> float:
        return its_mde_multiplier(df, x, power)

    n_post = int(post.sum())
    if count:
        days_t0 = float(calendar.monthrange(t0 // 12, t0 % 12 + 1)[1])
        base = math.exp(b[0] + b[1] * tt0 + season_t0) * days_t0
        level = comparison(base, base * math.exp(b[2]), base * math.expm1(b[2]),
                           base * math.expm1(ci[2, 0]), base * math.expm1(ci[2, 1]), p[2],
                           math.exp(b[2]), "rate_ratio", lambda x: base * math.expm1(k(x) * se[2]))
        slope = comparison(b[1], b[1] + b[3], b[3], ci[3, 0], ci[3, 1], p[3],
                           math.exp(b[3]), "rate_ratio_per_month", lambda x: k(x) * se[3])
    else:
        sd = resid_sd if resid_sd else None
        base = b[0] + b[1] * tt0 + season_t0
        level = comparison(base, base + b[2], b[2], ci[2, 0], ci[2, 1], p[2],
                           b[2] / sd if sd else None, "level_change_sd", lambda x: k(x) * se[2])
        slope = comparison(b[1], b[1] + b[3], b[3], ci[3, 0], ci[3, 1], p[3],
                           b[3] * n_post / sd if sd else None, "slope_change_sd_by_end", lambda x: k(x) * se[3])
    return level, slope


def _covered_days(period: str, coverage: tuple[date, date] | None) -> float:
    """Days of ``period`` ("YYYY-MM") inside the data's coverage [start, end)."""
    start = date(int(period[:4]), int(period[5:7]), 1)
    end = add_months(start, 1)
    if coverage is not None:
        start, end = max(start, coverage[0]), min(end, coverage[1])
    return max(float((end - start).days), 0.0)


def its_tests(
    monthly: pl.DataFrame,
    params: KpisParams | None = None,
    coverage: tuple[date, date] | None = None,
    with_results: bool = False,
) -> list[dict[str, Any]] | tuple[list[dict[str, Any]], list[Comparison]]:
    """Interrupted-time-series rows (``its_level``, ``its_slope``) for every KPI × cell of ``monthly``.

    A cell needs ``its_min_periods`` months with a value on each side of the programme date
    (a month the date splits is left out) and, except for counts, ``min_n`` observations on each side;
    otherwise its rows carry estimates of n only and the verdict "too few responses to tell". Counts
    (ticket volume) are modelled on the month's events with the days ``coverage`` (the data's [start, end))
    covers as exposure, so a month the export cuts short is not a drop; their n is the events. Rows are not yet
    BH-adjusted. No programme date, no rows. ``with_results`` also returns each row's ``Comparison``.
    """
    params = params or KpisParams()
    rows: list[dict[str, Any]] = []
    results: list[Comparison] = []
    if params.programme_date is None:
        return (rows, results) if with_results else rows
    start, transition = its_start(params.programme_date)
    series = monthly.filter(pl.col("value").is_not_null() & (pl.col("period") != (transition or "")))
    keys = series.select("kpi", "segment_col", "segment_value").unique().sort(["kpi", "segment_col", "segment_value"])
    for kpi, col, value in sorted(keys.iter_rows(), key=lambda k: (*kpi_registry.sort_key(k[0]), k[1], k[2])):
        if kpi not in params.enabled_kpis:
            continue
        cell = series.filter((pl.col("kpi") == kpi) & (pl.col("segment_col") == col) & (pl.col("segment_value") == value)).sort("period")
        count = kpi_registry.get(kpi).is_count
        if count:  # a month with no exposure has no rate
            cell = cell.filter(pl.col("period").map_elements(lambda p: _covered_days(p, coverage) > 0, return_dtype=pl.Boolean))
        periods = cell["period"].to_list()
        before = [p for p in periods if p < start]
        after = [p for p in periods if p >= start]
        label_a = f"{before[0]}〜{before[-1]}" if before else "(empty)"
        label_b = f"{after[0]}〜{after[-1]}" if after else "(empty)"
        n_a = int(cell.filter(pl.col("period") < start)["n"].sum())
        n_b = int(cell.filter(pl.col("period") >= start)["n"].sum())
        fitted = None
        enough_n = count or min(n_a, n_b) >= params.min_n  # a count is the outcome, not a sample size
        if min(len(before), len(after)) >= params.its_min_periods and enough_n:
            try:
                fitted = its_segmented(
                    periods, (cell["n"] if count else cell["value"]).to_list(), start,
                    weights=None if count else cell["n"].to_list(), count=count,
                    exposure_days=[_covered_days(p, coverage) for p in periods] if count else None,
                    harmonics=params.its_harmonics, alpha=params.alpha, power=params.power,
                )
            except (np.linalg.LinAlgError, ValueError):  # singular design: treated as not testable
                fitted = None
        for comparison, i in (("its_level", 0), ("its_slope", 1)):
            res = fitted[i] if fitted else Comparison(
                None, None, None, None, None, None, None,
                ("rate_ratio" if i == 0 else "rate_ratio_per_month") if count else ("level_change_sd" if i == 0 else "slope_change_sd_by_end"),
                None, n_a, n_b, "its_poisson_glm_ar1" if count else "its_wls_ar1",
            )
            row = comparison_row(comparison, kpi, col, value, label_a, label_b, res, params, (len(before), len(after)))
            row["baseline"] = fitted[0].est_a if fitted else None
            rows.append(row)
            results.append(res)
    return (rows, results) if with_results else rows
