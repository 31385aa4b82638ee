"""The kpis stage: monthly KPI values and shift tests with FDR control, drivers, alerts and metrics.

The pieces live in small modules: ``pipelines.stats`` (statistical primitives), ``pipelines.periods``
(spans and month arithmetic), ``pipelines.samples`` (per-KPI samples and the monthly table, driven by
``pipelines.kpi_registry``), ``pipelines.its`` (interrupted time series) and ``pipelines.drivers``. This
module runs them as one stage (``run`` → ``KpisResult``, ``write``) and re-exports what notebooks use.

Comparisons (column ``comparison`` of the tests table), all in one Benjamini–Hochberg family:
``programme`` (before/after the programme date; none when ``programme_date`` is null), ``window``
(previous vs current window), ``yoy`` (current window vs a year earlier — only when the data reach back
that far), and ``its_level`` / ``its_slope`` (interrupted time series on the monthly series). Whatever the
data or params do not support is listed in the metrics (``skipped``: ``{kpi, comparison, reason}``) and as
plain notes in ``alerts.json`` — never silently left out.

Verdict rule of ``shift_tests`` (in this order):

1. fewer than ``min_n`` observations in either period, or no test possible
   → "too few responses to tell" (such cells get no p-value and stay out of the BH family);
   Ticket volume is exempt from ``min_n``: its count is the outcome, tested whenever both spans have exposure;
2. BH-adjusted p ≤ ``fdr_q`` → "improved" / "worsened" by the direction of the test and the KPI's
   direction — when the difference shown agrees with the test's direction; otherwise "changed, direction
   unclear" (a difference that is None, e.g. an unreached median, does not contradict);
3. not significant and the minimum detectable |difference| exceeds the KPI's
   ``meaningful_change`` → "too few responses to tell" (a real, meaningful change could
   have been missed). The MDE is stated at the threshold the BH decision applies to one more finding,
   q·(R + 1)/m (``mde_alpha``; see ``decision_alpha``), not at the nominal α;
4. otherwise → "no detectable change".
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pipelines import kpi_registry
from pipelines.drivers import drivers
from pipelines.its import its_mde_multiplier, its_segmented, its_tests, poisson_its
from pipelines.kpi_registry import KPIS
from pipelines.kpi_tables import DRIVERS_SCHEMA, MONTHLY_SCHEMA, SHIFT_SCHEMA, comparison_row
from datetime import timedelta

from pipelines.periods import Span, spans, yoy_missing
from pipelines.reasons import why
from pipelines.samples import (
    activity,
    cells,
    compare_cell,
    coverage,
    customer_sample,
    customers,
    frame,
    groups,
    in_cell,
    MonthNoise,
    month_exposures,
    month_variance,
    monthly_kpis,
    inflation,
    sample,
)
from pipelines.schema import CesParams, CsatParams, KpisParams, RatingParams
from pipelines.stats import (
    Comparison,
    bh_adjust,
    compare_means,
    compare_medians,
    compare_nps,
    compare_proportions,
    compare_rates,
    compare_survival,
    finite,
    km_median,
    nps_adjusted_wald_ci,
    nps_bootstrap_ci,
    nps_counts,
    nps_value,
    nps_variance,
    nps_wald_ci,
)

# Groups kept for callers; the records in pipelines.kpi_registry define every KPI.
SURVEY_KPIS = tuple(k.key for k in kpi_registry.REGISTRY if k.source == "survey" and k.column in ("nps", "csat"))
CES_KPIS = tuple(k.key for k in kpi_registry.REGISTRY if k.scale == "ces")
TICKET_KPIS = kpi_registry.by_source("tickets")
CUSTOMER_KPIS = kpi_registry.by_source("customers")

VERDICT_IMPROVED = "improved"
VERDICT_WORSENED = "worsened"
VERDICT_NO_CHANGE = "no detectable change"
VERDICT_TOO_FEW = "too few responses to tell"
VERDICT_UNCLEAR = "changed, direction unclear"  # significant, but the shown difference does not carry the direction

COMPARISON_NAMES = {
    "programme": "before/after the programme date",
    "its": "interrupted time series",
    "yoy": "year over year",
}


# ---------------------------------------------------------------------------------------------
# Shift tests
# ---------------------------------------------------------------------------------------------


def shift_tests(
    feedback: pl.DataFrame,
    tickets: pl.DataFrame | None,
    params: KpisParams | None = None,
    monthly: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Every comparison of the run, with one Benjamini–Hochberg family over all of them.

    * ``programme``, ``window`` and ``yoy`` (see ``pipelines.periods.spans``): survey KPIs overall and per
      value of each ``params.segments`` column; ticket KPIs overall and per ticket ``channel`` / ``product``;
      customer KPIs (churn, repeat) overall.
    * ``its_level`` / ``its_slope``: the interrupted time series on ``monthly`` (computed when
      not given), see ``pipelines.its.its_tests``.

    Only the KPIs the data support are compared (``skipped`` lists the others; ``tickets`` None means no
    tickets table). Each row gets a verdict following the rule in the module docstring. Returns an empty
    frame when there is no data to date.
    """
    params = params or KpisParams()
    fr = frame(feedback, tickets, params)
    if fr is None:
        return pl.DataFrame(schema=SHIFT_SCHEMA)
    kpis, _ = coverage(fr, params)
    touches = activity(fr, params.activity_sources)
    rows: list[dict[str, Any]] = []
    results: list[Comparison] = []
    whole = fr.clip(Span(fr.first, fr.as_of))
    all_exposure = month_exposures(whole)
    run_spans = spans(params, fr.first, fr.as_of)
    # Month noise is measured around segment means cut at every boundary the run tests: a shift the run
    # itself asks about (the programme, the latest window) must not count as noise for another comparison.
    boundaries = sorted({d for a, b in run_spans.values() for d in (a.start, b.start)})
    noise: dict[str, MonthNoise] = {}  # month noise per KPI, over all the data
    for comparison, (span_a, span_b) in run_spans.items():
        # Exposure ends where the data end: a month the export cuts short is not a drop.
        exp_a, exp_b = fr.clip(span_a), fr.clip(span_b)
        for group, table, segments in groups(kpis, fr, params):
            part_a, part_b = span_a.select(table), span_b.select(table)
            for col, value in cells(pl.concat([part_a, part_b]), segments) if group else ():
                cell_a, cell_b = in_cell(part_a, col, value), in_cell(part_b, col, value)
                for kpi in group:
                    a = sample(kpi, cell_a, params, exp_a.months)
                    b = sample(kpi, cell_b, params, exp_b.months)
                    if kpi.key not in noise:  # measured on the overall series, where it can be (see samples)
                        noise[kpi.key] = month_variance(kpi, sample(kpi, table, params), all_exposure, boundaries)
                    deff, df, power_df = inflation(kpi, a, b, noise[kpi.key], (month_exposures(exp_a), month_exposures(exp_b)))
                    res = compare_cell(kpi, a, b, params, deff, df, power_df)
                    results.append(res)
                    rows.append(comparison_row(comparison, kpi.key, col, value, span_a.label, span_b.label, res, params))
        # Churn and repeat depend on the span's length: both sides get the same length, next to the split.
        days = timedelta(days=max(min((exp_a.end - exp_a.start).days, (exp_b.end - exp_b.start).days), 0))
        cust_a, cust_b = Span(exp_a.end - days, exp_a.end), Span(exp_b.start, exp_b.start + days)
        customer_kpis = [k for k in kpis if k.source == "customers"]
        if customer_kpis:
            units_a, units_b = customers(touches, cust_a.start, cust_a.end), customers(touches, cust_b.start, cust_b.end)
        for kpi in customer_kpis:
            res = compare_cell(kpi, sample(kpi, units_a, params), sample(kpi, units_b, params), params)
            results.append(res)
            rows.append(comparison_row(comparison, kpi.key, "all", "all", cust_a.label, cust_b.label, res, params))
    if monthly is None:
        monthly = monthly_kpis(feedback, tickets, params)
    its_rows, its_results = its_tests(monthly, params, coverage=(whole.start, whole.end), with_results=True)
    rows.extend(its_rows)
    results.extend(its_results)
    adjusted, rejected = bh_adjust([r["p_value"] for r in rows], params.fdr_q)
    threshold = decision_alpha(rejected, [r["p_value"] for r in rows], params.fdr_q)
    for row, res, p_adj, reject in zip(rows, results, adjusted, rejected, strict=True):
        row["p_adjusted"], row["significant"] = p_adj, reject
        # The MDE at the threshold the BH decision actually applies to one more finding.
        row["mde"] = finite(res.mde_at(threshold)) if res.mde_at is not None and row["p_value"] is not None else None
        row["mde_alpha"] = threshold if row["mde"] is not None else None
        row["verdict"] = _verdict(row, params)
    return pl.DataFrame(rows, schema=SHIFT_SCHEMA)


def decision_alpha(rejected: Sequence[bool], p_values: Sequence[float | None], q: float) -> float:
    """The per-test threshold the Benjamini–Hochberg decision applies to a further finding: q·(R + 1)/m.

    With R rejections among m tests, one more test is rejected as soon as its p is at most q(R + 1)/m
    (then R + 1 p-values lie below that step). With no rejections it is q/m, Bonferroni's. Power and the
    minimum detectable effect are stated at this threshold, not at the nominal α.
    """
    m = sum(p is not None for p in p_values)
    if m == 0:
        return q
    return min(q * (sum(rejected) + 1) / m, q)


def skipped(feedback: pl.DataFrame, tickets: pl.DataFrame | None, params: KpisParams | None = None) -> list[dict[str, Any]]:
    """What the run cannot compute and why: ``{kpi, comparison, code, args, reason}`` ("all" where the whole
    KPI or comparison is left out; ``code``/``args`` word the reason in the report's language, ``reason`` is
    the English sentence)."""
    params = params or KpisParams()
    fr = frame(feedback, tickets, params)
    out: list[dict[str, Any]] = []
    if params.programme_date is None:
        out += [{"kpi": "all", "comparison": c, **why("no_programme_date")} for c in ("programme", "its")]
    if fr is not None and (yoy := yoy_missing(params, fr.first, fr.as_of)):
        out.append({"kpi": "all", "comparison": "yoy", **yoy})
    out += [{**s, "comparison": "all"} for s in coverage(fr, params)[1]]
    return out


def coverage_notes(feedback: pl.DataFrame, tickets: pl.DataFrame | None, params: KpisParams | None = None) -> list[str]:
    """``skipped`` as plain statements (shown in outputs, never silent); one line per shared reason."""
    params = params or KpisParams()
    if frame(feedback, tickets, params) is None:
        return ["no responses or tickets: nothing to compare"]
    by_reason: dict[str, list[str]] = {}
    for s in skipped(feedback, tickets, params):
        name = COMPARISON_NAMES[s["comparison"]] if s["kpi"] == "all" else kpi_registry.get(s["kpi"]).name_en
        by_reason.setdefault(s["reason"], []).append(name)
    return [f"{' / '.join(names)}: not computed — {reason}" for reason, names in by_reason.items()]


def _verdict(row: dict[str, Any], params: KpisParams) -> str:
    """Apply the verdict rule documented in the module docstring.

    The direction is the test's own (``direction``); the difference shown must agree with it, else the row
    says "changed, direction unclear" (a median difference against a Mann–Whitney shift, crossing survival
    curves). For ``its_slope`` rows the meaningful change is spread over the post-programme months (a
    slope change that would add up to it by the end of the series); for counts the slope is
    on the log scale, so the relative threshold becomes log(1 + threshold).
    """
    kpi = kpi_registry.get(row["kpi"])
    gated = kpi.family != "rate" and min(row["n_a"], row["n_b"]) < params.min_n  # a count is the outcome, not n
    if gated or row["p_value"] is None:
        return VERDICT_TOO_FEW
    if row["significant"]:
        direction, diff = row["direction"], row["diff"]
        if not direction or (diff is not None and (diff == 0 or (diff > 0) != (direction > 0))):
            return VERDICT_UNCLEAR
        return VERDICT_IMPROVED if (direction > 0) == row["higher_is_better"] else VERDICT_WORSENED
    threshold = params.meaningful_change.get(kpi.key, kpi.meaningful_change)
    if row["comparison"] == "its_slope":
        if kpi.is_count:
            threshold = math.log1p(threshold)
        elif kpi.relative:
            threshold *= abs(row["baseline"] or 0.0)  # relative to the level at the programme month
        threshold /= max(row["n_periods_b"] or 1, 1)
    elif kpi.relative:
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
    ``latest_*`` are the overall values of the latest month in ``monthly``. Every survey KPI of the
    registry has its keys (null when not computed), so runs compare key by key.
    """
    survey = kpi_registry.by_source("survey")
    overall = tests.filter((pl.col("comparison") == "window") & (pl.col("segment_col") == "all"))
    by_kpi = {r["kpi"]: r for r in overall.iter_rows(named=True)}
    metrics: dict[str, Any] = {}
    for kpi in survey:
        row = by_kpi.get(kpi, {})
        metrics[f"{kpi}_now"] = _json_float(row.get("est_b"))
        metrics[f"{kpi}_before"] = _json_float(row.get("est_a"))
    survey_months = monthly.filter((pl.col("segment_col") == "all") & pl.col("kpi").is_in(survey))
    latest = survey_months["period"].max() if survey_months.height else None
    metrics["latest_period"] = latest
    for kpi in survey:
        hit = survey_months.filter((pl.col("kpi") == kpi) & (pl.col("period") == (latest or "")))
        metrics[f"{kpi}_latest"] = _json_float(hit["value"][0]) if hit.height else None
    metrics["n_tests"] = int(tests["p_value"].is_not_null().sum())
    metrics["n_rows"] = tests.height
    metrics["n_significant"] = int(tests["significant"].sum())
    metrics["n_alerts"] = len(alerts(tests))
    return metrics


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
        "programme_date": params.programme_date.isoformat() if params.programme_date else None,
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
    """The stage's outputs, one field per declared output: ``x`` → ``params.out_x``; ``metrics`` →
    ``metrics_path``; ``plots`` → ``plots_path``."""

    tests: pl.DataFrame
    monthly: pl.DataFrame
    drivers: pl.DataFrame
    alerts: dict[str, Any]  # the alerts.json document (``alerts_document``)
    metrics: dict[str, Any]
    plots: list[dict[str, Any]]  # monthly NPS for `dvc plots`

    @property
    def notes(self) -> list[str]:
        """What this run could not compute, and why."""
        return self.alerts["notes"]


def run(params: KpisParams, root: str | Path = ".") -> KpisResult:
    """Read the clean tables (and topic outputs) under ``root``; compute every KPI, test, driver and alert (no writing).

    No tickets (a missing or empty clean tickets table: clean writes an empty one when no ticket source is
    configured) leaves the ticket KPIs out; missing topic outputs leave the drivers table empty. Both are
    said in the notes and metrics.
    """
    root = Path(root)
    feedback = pl.read_parquet(root / params.in_feedback)
    tickets_path = root / params.in_tickets
    tickets = pl.read_parquet(tickets_path) if tickets_path.is_file() else None
    if tickets is not None and not tickets.height:
        tickets = None
    monthly = monthly_kpis(feedback, tickets, params)
    tests = shift_tests(feedback, tickets, params, monthly=monthly)
    left_out = skipped(feedback, tickets, params)
    notes = coverage_notes(feedback, tickets, params)
    assignments_path, topics_path = root / params.in_assignments, root / params.in_topics
    if assignments_path.is_file():
        topics = pl.read_parquet(topics_path) if topics_path.is_file() else None
        driver_table = drivers(feedback, pl.read_parquet(assignments_path), topics, params)
    else:
        driver_table = pl.DataFrame(schema=DRIVERS_SCHEMA)
        missing = why("no_assignments", path=params.in_assignments)
        left_out.append({"kpi": "all", "comparison": "drivers", **missing})
        notes.append(f"drivers: not computed — {missing['reason']}")
    metrics = kpi_metrics(tests, monthly)
    # DVC metrics want flat scalars: flags plus one joined string (alerts.json keeps the list).
    metrics["yoy_computed"] = bool(tests.height and (tests["comparison"] == "yoy").any())
    metrics["drivers_computed"] = bool(driver_table.height)
    metrics["notes"] = " | ".join(notes)
    metrics["skipped"] = left_out
    metrics["n_drivers_significant"] = int(driver_table["coef_significant"].sum()) if driver_table.height else 0
    metrics["top_driver"] = driver_table["label"][0] if driver_table.height else None
    return KpisResult(tests, monthly, driver_table, alerts_document(tests, params, notes), metrics, nps_plot_data(monthly))


def nps_plot_data(monthly: pl.DataFrame) -> list[dict[str, Any]]:
    """Overall monthly NPS for `dvc plots`."""
    rows = monthly.filter((pl.col("kpi") == "nps") & (pl.col("segment_col") == "all")).sort("period")
    return [{"period": r["period"], "nps": _json_float(r["value"]), "n": r["n"]} for r in rows.iter_rows(named=True)]




def write(result: KpisResult, params: KpisParams, root: str | Path = ".") -> list[Path]:
    """The stage's outputs through the one writer every stage uses."""
    from pipelines.io import write_result

    return write_result(result, params, root)


__all__ = [
    "ALERTS_SCHEMA_VERSION", "CUSTOMER_KPIS", "DRIVERS_SCHEMA", "KPIS", "MONTHLY_SCHEMA", "SHIFT_SCHEMA",
    "SURVEY_KPIS", "TICKET_KPIS", "CesParams", "Comparison", "CsatParams", "KpisParams", "KpisResult",
    "RatingParams", "alerts", "alerts_document", "bh_adjust", "compare_means", "compare_medians", "compare_nps",
    "compare_proportions", "compare_rates", "compare_survival", "coverage_notes", "customer_sample", "drivers",
    "headline_findings", "its_mde_multiplier", "its_segmented", "its_tests", "km_median", "kpi_metrics",
    "monthly_kpis", "nps_adjusted_wald_ci", "nps_bootstrap_ci", "nps_counts", "nps_value",
    "nps_variance", "nps_wald_ci", "poisson_its", "read_alerts", "run", "shift_tests", "skipped", "write",
    "decision_alpha", "VERDICT_UNCLEAR",
]
