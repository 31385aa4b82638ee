"""The kpis stage's output tables (polars schemas, documented once here) and the row every comparison adds."""

from __future__ import annotations

from typing import Any

import polars as pl

from pipelines.schema import KpisParams
from pipelines.stats import Comparison

# data/kpis/monthly.parquet — one row per KPI × local month × cell (overall, or one segment value).
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

# data/kpis/tests.parquet — one row per comparison × KPI × cell, one BH family over the run.
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
    "mde": pl.Float64(),  # minimum detectable |diff| at power ``power`` and two-sided threshold ``mde_alpha``
    "mde_alpha": pl.Float64(),  # the BH decision's per-test threshold q·(R + 1)/m the MDE is stated at
    "direction": pl.Int64(),  # the test's own direction: +1 period b higher, −1 lower (durations: longer/shorter)
    "higher_is_better": pl.Boolean(),
    "method": pl.String(),
    "verdict": pl.String(),
    "n_periods_a": pl.Int64(),  # months in each segment of an interrupted time series (else null)
    "n_periods_b": pl.Int64(),
    "baseline": pl.Float64(),  # ITS: the pre-trend's counterfactual level at the programme month
}

# data/kpis/drivers.parquet — one row per topic: how much it moves NPS (see pipelines.drivers).
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
    "nps_p_adjusted": pl.Float64(),  # BH over the topics' NPS differences (the run's fdr_q)
    "nps_significant": pl.Boolean(),
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
    "trend": pl.Float64(),  # share_b / share_a, each smoothed by +0.5 mentions, bounded to [1/3, 3]
    "priority": pl.Float64(),  # |impact| × trend
    "rank": pl.Int64(),
    "direction": pl.String(),  # "drags" (impact < 0) | "lifts"
}


def comparison_row(comparison: str, kpi: str, col: str, value: str, label_a: str, label_b: str, res: Comparison,
                   params: KpisParams, n_periods: tuple[int | None, int | None] = (None, None)) -> dict[str, Any]:
    """One row of the tests table, before BH adjustment and verdict."""
    return dict(comparison=comparison, kpi=kpi, segment_col=col, segment_value=value,
                label_a=label_a, label_b=label_b,
                est_a=res.est_a, est_b=res.est_b, diff=res.diff,
                ci_low=res.ci_low, ci_high=res.ci_high, p_value=res.p_value,
                n_a=res.n_a, n_b=res.n_b, effect_size=res.effect_size,
                effect_size_kind=res.effect_size_kind, mde=res.mde, mde_alpha=None, direction=res.direction,
                higher_is_better=params.higher_is_better(kpi), method=res.method,
                n_periods_a=n_periods[0], n_periods_b=n_periods[1], baseline=None)
