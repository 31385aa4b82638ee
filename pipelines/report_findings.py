"""Findings of the report in plain sentences: 3–5 for the summary (change, interval, n, significance after correcting
for every test of the run), and the one-sentence takeaways under the charts. A sentence with a missing number is
left out, never printed with a gap."""

from __future__ import annotations

import polars as pl

from pipelines import kpi_registry
from pipelines.report_data import (Context, _comparison, _digits, _driver, _join, _key, _lead_kpis, _n_tests, _nps_series, _row,
                                   _segment, _usable, topic_label)
from pipelines.report_format import IMPROVED, WORSENED, _missing, catalogue, number, p_text, period, render, say


def finding_sentence(ctx: Context, row: dict) -> str | None:
    """One plain sentence with numbers and uncertainty for a test result row; None when a number is missing."""
    lang, kpi = ctx.lang, row["kpi"]
    digits = _digits(kpi)
    unit = kpi_registry.get(kpi).unit if kpi in kpi_registry.BY_KEY else None
    diff = row["diff"]
    if _missing(diff):
        return None
    verdict_key = f"finding.verdict.{row['verdict']}" if row["verdict"] in (IMPROVED, WORSENED) else "finding.verdict.other"
    if row["p_adjusted"] is None:
        sig = ctx.t("finding.sig.untested")
    elif row["significant"]:
        sig = say(lang, "finding.sig.yes", n_tests=number(_n_tests(ctx), lang, style="count"), p=p_text(row["p_adjusted"]))
    else:
        sig = ctx.t("finding.sig.no")
    return say(
        lang, "finding.shift",
        segment=_segment(ctx, row["segment_col"], row["segment_value"]), kpi=ctx.kpi(kpi),
        period_a=period(row["label_a"], lang), period_b=period(row["label_b"], lang),
        est_a=number(row["est_a"], lang, digits), est_b=number(row["est_b"], lang, digits),
        diff=number(diff, lang, digits, "signed"), unit=ctx.t(f"unit.{unit}") if unit else "",
        verb=ctx.t("finding.verb." + ("up" if diff > 0 else "down" if diff < 0 else "flat")),
        verdict=ctx.t(verdict_key, verdict=ctx.t(f"verdict.{row['verdict']}")),
        ci=ctx.t("ci", level=ctx.level), ci_low=number(row["ci_low"], lang, digits), ci_high=number(row["ci_high"], lang, digits),
        n_a=number(row["n_a"], lang, style="count"), n_b=number(row["n_b"], lang, style="count"), sig=sig,
    )


def window_finding(ctx: Context) -> str | None:
    """What changed in the latest window for the lead survey KPI (the support one when there is no survey), with
    the adverse shifts flagged as alerts."""
    survey, support = _lead_kpis(ctx)
    kpi = survey or support
    row = _row(ctx, "window", kpi) if kpi else None
    text_ = finding_sentence(ctx, row) if row else None
    if text_ is None:
        return None
    lang = ctx.lang
    worst = sorted((a for a in ctx.alerts if a.get("segment_col") != "all" and a.get("kpi") == kpi and not _missing(a.get("diff"))),
                   key=lambda a: a["diff"] * (1 if kpi_registry.get(kpi).higher_is_better else -1))[:2]
    if ctx.alerts:
        n = number(len(ctx.alerts), lang, style="count")
        segs = ctx.t("join.list").join(f"{_segment(ctx, a['segment_col'], a['segment_value'])} {number(a['diff'], lang, _digits(kpi), 'signed')}"
                                       for a in worst)
        extra = say(lang, "finding.alerts_worst", n=n, kpi=ctx.kpi(kpi), segments=segs) if segs else ctx.t("finding.alerts", n=n)
        text_ += ctx.t("join.sentence") + extra
    return text_


def emerging_finding(ctx: Context) -> str | None:
    """The first emerging theme, with its NPS effect when the drivers table says it is significant after BH."""
    lang = ctx.lang
    em = ctx.topics.filter(pl.col("emerging").fill_null(False) & (pl.col("topic") != -1)) if "emerging" in ctx.topics.columns else ctx.topics.clear()
    if not em.height:
        return None
    row = em.row(0, named=True)
    out = say(lang, "finding.emerging", label=ctx.t("quote", text=topic_label(ctx, row)),
              share_recent=number(row.get("share_recent"), lang, 1, "percent"),
              share_before=number(row.get("share_before"), lang, 1, "percent"),
              n_recent=number(row.get("n_recent"), lang, style="count"))
    d = _driver(ctx, row["topic"])
    if out and d and d.get("nps_significant"):
        extra = say(lang, "finding.emerging_impact", nps_topic=number(d["nps_topic"], lang), diff=number(d["nps_diff"], lang, 1, "signed"),
                    ci=ctx.t("ci", level=ctx.level), ci_low=number(d["nps_ci_low"], lang), ci_high=number(d["nps_ci_high"], lang))
        if extra:
            out += ctx.t("join.sentence") + extra
    return out


def segments_finding(ctx: Context) -> str | None:
    """Where the programme worked for the lead survey KPI: significant rises by segment, and the rest of that column."""
    kpi = _lead_kpis(ctx)[0]
    if kpi is None:
        return None
    lang = ctx.lang
    rows = _comparison(ctx, "programme").filter((pl.col("kpi") == kpi) & (pl.col("segment_col") != "all"))
    up = rows.filter(pl.col("significant").fill_null(False) & (pl.col("verdict") == IMPROVED)).sort("p_adjusted").head(2)
    if not up.height:
        return None
    parts = [say(lang, "finding.segment_part", segment=_segment(ctx, r["segment_col"], r["segment_value"]),
                 diff=number(r["diff"], lang, _digits(kpi), "signed"), ci=ctx.t("ci", level=ctx.level),
                 ci_low=number(r["ci_low"], lang, _digits(kpi)), ci_high=number(r["ci_high"], lang, _digits(kpi)))
             for r in up.iter_rows(named=True)]
    parts = [p for p in parts if p]
    if not parts:
        return None
    out = ctx.t("finding.segments_one" if len(parts) == 1 else "finding.segments_many", kpi=ctx.kpi(kpi),
                parts=ctx.t("join.and").join(parts))
    col = up["segment_col"][0]
    flat = rows.filter((pl.col("segment_col") == col) & ~pl.col("significant").fill_null(False))
    by_verdict: dict[str, list[str]] = {}
    for r in flat.iter_rows(named=True):
        by_verdict.setdefault(r["verdict"], []).append(_segment(ctx, r["segment_col"], r["segment_value"]))
    for verdict, segs in by_verdict.items():
        if f"finding.segments_rest.{verdict}" in catalogue():
            out += ctx.t("join.sentence") + ctx.t(f"finding.segments_rest.{verdict}", segments=_join(ctx, segs, "join.and"))
    return out


def executive_findings(ctx: Context, top: int = 5) -> list[str]:
    """3–5 findings, most decision-relevant first: the latest window, the emerging theme, the programme effect,
    where it worked, and the support response time. The same comparison (KPI, segment, spans, estimates) is
    said once even when two comparisons share their spans."""
    survey, support = _lead_kpis(ctx)
    seen: set[tuple] = set()
    out: list[str] = []

    def add(sentence: str | None, row: dict | None = None) -> None:
        if not sentence:
            return
        if row is not None:
            if _key(row) in seen:
                return
            seen.add(_key(row))
        out.append(sentence)

    window = _row(ctx, "window", survey or support) if survey or support else None
    add(window_finding(ctx), window)
    add(emerging_finding(ctx))
    programme = {k: _row(ctx, "programme", k) if k else None for k in (survey, support)}
    add(finding_sentence(ctx, programme[survey]) if programme[survey] else None, programme[survey])
    add(segments_finding(ctx))  # where the overall programme effect came from
    add(finding_sentence(ctx, programme[support]) if programme[support] else None, programme[support])
    if not out:  # e.g. only customer KPIs: lead with the first overall shift that holds, if any
        held = _usable(ctx).filter((pl.col("segment_col") == "all") & pl.col("significant").fill_null(False))
        for row in sorted(held.iter_rows(named=True), key=lambda r: kpi_registry.sort_key(r["kpi"]))[:1]:
            add(finding_sentence(ctx, row), row)
    if not out:  # say so rather than leave the reader without a summary
        out.append(ctx.t("finding.none", n_tests=number(_n_tests(ctx), ctx.lang, style="count")) if _n_tests(ctx)
                   else ctx.t("finding.no_tests"))
    return out[:top]


# ------------------------------------------------------------------ takeaways

def nps_takeaway(ctx: Context) -> str:
    """One sentence under the NPS chart: the programme effect, else the latest month."""
    lang = ctx.lang
    r = _row(ctx, "programme", "nps")
    if r:
        return say(lang, "takeaway.programme", kpi=ctx.kpi("nps"), diff=number(r["diff"], lang, 1, "signed"),
                   verdict=ctx.t(f"verdict.{r['verdict']}")) or ""
    latest = _nps_series(ctx).filter(pl.col("segment_col") == "all").sort("period").tail(1)
    if latest.height:
        return say(lang, "takeaway.monthly", kpi=ctx.kpi("nps"), period=period(latest["period"][0], lang),
                   value=number(latest["value"][0], lang)) or ""
    return ""


def topic_takeaway(ctx: Context) -> str:
    em = ctx.topics.filter(pl.col("emerging").fill_null(False) & (pl.col("topic") != -1)) if "emerging" in ctx.topics.columns else ctx.topics.clear()
    if not ctx.topics.filter(pl.col("topic") != -1).height:
        return ""
    if not em.height:
        return ctx.t("takeaway.topics_none")
    labels = [topic_label(ctx, r) for r in em.iter_rows(named=True)]
    return ctx.t("takeaway.topics_emerging", labels=ctx.t("join.list").join(ctx.t("quote", text=x) for x in labels))


def takeaway_html(text_: str) -> str:
    return render("takeaway.html.j2", "ja", text=text_) if text_ else ""
