"""Driver analysis: which topics move the score (NPS; CSAT alongside when present)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from pipelines.kpi_tables import DRIVERS_SCHEMA
from pipelines.periods import spans
from pipelines.samples import frame
from pipelines.schema import KpisParams
from pipelines.stats import bh_adjust, compare_means, compare_nps, finite, nps_unit_scores


TREND_CAP = 3.0  # bound of the trend ratio in the priority (see ``drivers``)


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
    most frequent topic is left out as the reference. Its p-values, and those of the topic-vs-rest
    NPS differences (``nps_p_adjusted``, ``nps_significant``), are BH-adjusted across topics at ``fdr_q``.
    No NPS answers (or no NPS column) → an empty table with the schema.
    Trend compares topic shares in the previous and current windows of ``shift_tests``, bounded to
    [1/TREND_CAP, TREND_CAP]: a topic new in the current window has an unbounded ratio (324 was seen) that
    would rank it on novelty alone; a tripling is as urgent as growth gets here. Topics are ranked by
    |impact| × trend (a large drag that is growing first). ``impact`` is this table's one definition (the
    report reads it from here): the topic's responses against every other scored response.
    """
    from statsmodels.regression.linear_model import OLS  # not statsmodels.api: it imports far more
    from statsmodels.tools.tools import add_constant

    params = params or KpisParams()
    fr = frame(feedback, None, params)
    missing = {"response_id", "topic"} - set(assignments.columns)
    if missing:
        raise ValueError(f"topic assignments lack column(s) {sorted(missing)}")
    if fr is None or not assignments.height or "nps" not in fr.responses.columns:
        return pl.DataFrame(schema=DRIVERS_SCHEMA)
    csat_col = params.column("csat_mean")
    scored = fr.responses.filter(pl.col("nps").is_not_null()).select(
        "response_id", "date", "nps",
        (pl.col(csat_col) if csat_col in fr.responses.columns else pl.lit(None)).cast(pl.Float64).alias("csat"),
    )
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
    nps, csat = wide["nps"].to_numpy().astype(int), wide["csat"].fill_null(np.nan).to_numpy()
    unit = 100.0 * nps_unit_scores(nps)
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
        X = add_constant(np.column_stack([ind[t] for t in regressors]).astype(float), has_constant="add")
        fit = OLS(unit, X).fit(cov_type="HC3")
        ci = np.asarray(fit.conf_int(params.alpha))
        for j, t in enumerate(regressors, start=1):
            coef[t] = (float(fit.params[j]), float(ci[j, 0]), float(ci[j, 1]), float(fit.pvalues[j]))
    adj, rej = bh_adjust([finite(coef[t][3]) if t in coef else None for t in topic_ids], params.fdr_q)

    # Trend: topic shares among commenting responses in the previous vs current window.
    windows = spans(params, fr.first, fr.as_of)["window"]
    commenters = set(mentions["response_id"].to_list())
    dates = wide["date"].to_numpy()
    commented = np.array([r in commenters for r in wide["response_id"].to_list()])
    in_span = [(dates >= np.datetime64(sp.start)) & (dates < np.datetime64(sp.end)) & commented for sp in windows]

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
                   trend=min(max(((k_b + 0.5) / (n_b + 1)) / ((k_a + 0.5) / (n_a + 1)), 1 / TREND_CAP), TREND_CAP))
        if row.get("impact") is not None:
            row["priority"] = abs(row["impact"]) * row["trend"]
            row["direction"] = "drags" if row["impact"] < 0 else "lifts"
        rows.append(row)
    nps_adj, nps_rej = bh_adjust([r.get("nps_p") for r in rows], params.fdr_q)
    for row, p_adj, reject in zip(rows, nps_adj, nps_rej, strict=True):
        row.update(nps_p_adjusted=p_adj, nps_significant=reject)
    out = pl.DataFrame(rows, schema={k: v for k, v in DRIVERS_SCHEMA.items() if k != "rank"}, strict=False)
    out = out.sort(["priority", "topic"], descending=[True, False], nulls_last=True)
    out = out.with_columns(rank=pl.int_range(1, out.height + 1, dtype=pl.Int64))
    return out.select(list(DRIVERS_SCHEMA))
