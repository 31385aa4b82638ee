"""Report stage: the stakeholder page's sections, read from the stage outputs and rendered through Jinja2 templates.

The report computes no statistics: shifts, verdicts and intervals come from the kpis stage's tests table, topic
effects from its drivers table, net sentiment from the sentiment stage. Words live in ``templates/strings.yaml``
(ja and en side by side), markup in ``templates/report/*.html.j2`` with autoescape on: every verbatim and every
label derived from data is escaped by the template engine. A section, sentence, column or chart appears only when
its data exist; what a stage skipped is listed in the data-quality section.

The notebook loads a Context (``report_data``), calls the section functions here, the findings (``report_findings``)
and charts (``report_charts``), and shows them with ``report_page.show``; ``run`` turns the executed notebook into
one self-contained HTML file (``report_page.html_page``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pipelines import kpi_registry, reasons
from pipelines.report_data import (EMPTY_SPAN, Context, _comparison, _digits, _key, _n_tests, _segment, _spans, _usable, column_label,
                                   topic_label, topic_words)
from pipelines.report_findings import executive_findings
from pipelines.report_format import _markup, _missing, catalogue, number, p_text, period, render
from pipelines.report_page import Section, html_page
from pipelines.schema import ReportParams


TOPIC_ROWS = 12  # topics shown open; the rest fold under one line (keeps the page and its print short)
JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff00-\uffef]")  # kana, kanji, full-width forms


# ------------------------------------------------------------------ sections

def _section(ctx: Context, key: str, template: str, **fields: Any) -> Section:
    anchor = f"koe-{key}"
    return Section(render(template, ctx.lang, anchor=anchor, **fields), anchor, ctx.t(f"toc.{key}"))


def header_html(ctx: Context, run_info: dict) -> str:
    subtitle = " · ".join(str(run_info[k]) for k in ("data window", "generated") if run_info.get(k))
    return render("header.html.j2", ctx.lang, title=ctx.params.title, subtitle=subtitle)


def summary_html(ctx: Context) -> str:
    findings = executive_findings(ctx)
    return _section(ctx, "summary", "summary.html.j2", findings=findings) if findings else ""


def _tile_comparison(ctx: Context) -> pl.DataFrame:
    rows = _comparison(ctx, "programme")
    return rows if rows.height else _comparison(ctx, "window")


def tiles_html(ctx: Context, chart: str = "") -> str:
    """Overall KPIs after the programme (or in the latest window when there is no programme comparison), then
    ``chart`` (from ``chart_html``) when given."""
    rows = _tile_comparison(ctx).filter(pl.col("segment_col") == "all")
    if not rows.height:
        return ""
    tiles = sorted(({**r, "name": ctx.kpi(r["kpi"]), "digits": _digits(r["kpi"])} for r in rows.iter_rows(named=True)),
                   key=lambda r: kpi_registry.sort_key(r["kpi"]))
    a, b = _spans(rows)
    note = ctx.t("tiles_note", period_a=period(a, ctx.lang), period_b=period(b, ctx.lang), ci=ctx.t("ci", level=ctx.level))
    return _section(ctx, "kpis", "tiles.html.j2", tiles=tiles, note=note, level=ctx.level, chart=_markup(chart))


def _matrix(ctx: Context, comparison: str, same_spans: bool = False) -> dict | None:
    rows = _comparison(ctx, comparison)
    if not rows.height:
        return None
    kpis = sorted(set(rows["kpi"]), key=kpi_registry.sort_key)
    cells = {(r["segment_col"], r["segment_value"], r["kpi"]): {**r, "digits": _digits(r["kpi"])} for r in rows.iter_rows(named=True)}
    volume = (rows.group_by("segment_col", "segment_value").agg((pl.col("n_a") + pl.col("n_b")).max().alias("v"))
              .sort(["segment_col", "v", "segment_value"], descending=[False, True, False]))
    cap, more, segs = ctx.params.max_segment_values, [], [("all", "all")] if (volume["segment_col"] == "all").any() else []
    for col in [c for c in volume["segment_col"].unique(maintain_order=True).to_list() if c != "all"]:
        values = volume.filter(pl.col("segment_col") == col)["segment_value"].to_list()
        segs += [(col, v) for v in sorted(values[:cap])]  # the largest, in a stable reading order
        if len(values) > cap:
            more.append(ctx.t("more_segments", column=column_label(ctx, col), n=number(len(values) - cap, ctx.lang, style="count"),
                              shown=number(cap, ctx.lang, style="count"), path=ctx.params.in_kpi_tests))
    a, b = _spans(rows)
    return {
        "title": ctx.t(f"shift.{comparison}"), "period_a": period(a, ctx.lang), "period_b": period(b, ctx.lang),
        "same_spans": same_spans, "more": more,
        "kpis": [{"key": k, "name": ctx.kpi(k)} for k in kpis],
        "rows": [{"label": _segment(ctx, col, value), "cells": [cells.get((col, value, k)) for k in kpis]} for col, value in segs],
    }


def _matrices(ctx: Context) -> list[dict]:
    window, programme = _comparison(ctx, "window"), _comparison(ctx, "programme")
    same = window.height > 0 and _spans(window) == _spans(programme)
    out = [_matrix(ctx, "window", same_spans=same)] + ([] if same else [_matrix(ctx, "programme")])
    return [m for m in out if m]


def shift_matrix_html(ctx: Context, comparison: str) -> str:
    """Every KPI × segment for one comparison: change and verdict per cell (colour plus a mark and a word,
    so it reads without colour vision and in print); the largest ``max_segment_values`` values per segment."""
    m = _matrix(ctx, comparison)
    return render("matrix.html.j2", ctx.lang, m=m) if m else ""


def shift_table_html(ctx: Context, max_rows: int = 40) -> str:
    """The KPI × segment matrices for the latest window and the programme, then the significant shifts in detail
    (a shift seen identically by two comparisons is one row)."""
    matrices = _matrices(ctx)
    rows = _usable(ctx).filter(pl.col("significant").fill_null(False)).sort(["comparison", "p_adjusted"], descending=[True, False])
    merged: dict[tuple, dict] = {}
    for r in rows.iter_rows(named=True):
        entry = merged.setdefault(_key(r), {**r, "names": []})
        entry["names"].append(ctx.t(f"comparison.{r['comparison']}") if f"comparison.{r['comparison']}" in catalogue() else r["comparison"])
    detail = [{**r, "name": ctx.kpi(r["kpi"]), "segment": _segment(ctx, r["segment_col"], r["segment_value"]),
               "comparisons": ctx.t("join.list").join(r["names"]), "digits": _digits(r["kpi"]), "p": p_text(r["p_adjusted"]) or ""}
              for r in merged.values()]
    if not matrices and not detail:
        return ""
    more = max(len(detail) - max_rows, 0)
    return _section(ctx, "shifts", "shifts.html.j2", matrices=matrices, detail=detail[:max_rows], more=more,
                    path=ctx.params.in_kpi_tests, level=ctx.level)


def topic_sentiment(net: pl.DataFrame | None) -> pl.DataFrame:
    """Per-topic net sentiment of the survey verbatims, from the sentiment stage's long table."""
    schema = {"topic": pl.Int64, "sent_net": pl.Float64, "sent_low": pl.Float64, "sent_high": pl.Float64, "sent_enough": pl.Boolean}
    if net is None or not net.height:
        return pl.DataFrame(schema=schema)
    return net.filter((pl.col("source") == "survey") & (pl.col("level") == "topic")).select(
        pl.col("value").cast(pl.Int64).alias("topic"),
        pl.col("net_sentiment").alias("sent_net"), pl.col("ci_low").alias("sent_low"),
        pl.col("ci_high").alias("sent_high"), pl.col("enough").alias("sent_enough"),
    )


def topics_html(ctx: Context, chart: str = "") -> str:
    """Topics by size, one row each: label, size, monthly-share sparkline, NPS effect (from the drivers table) and
    net sentiment when those exist, and example verbatims. The largest ``TOPIC_ROWS`` are open, the rest folded."""
    rows = ctx.topics.filter(pl.col("topic") != -1)
    if not rows.height:
        return ""
    drivers_cols = ["topic", "nps_diff", "nps_ci_low", "nps_ci_high"]
    has_drivers = ctx.drivers is not None and ctx.drivers.height > 0 and ctx.drivers["nps_diff"].is_not_null().any()
    if has_drivers:
        d = ctx.drivers.select(drivers_cols + (["nps_significant"] if ctx.has_significance else []))
        if not ctx.has_significance:
            d = d.with_columns(pl.lit(None, dtype=pl.Boolean).alias("nps_significant"))
        rows = rows.join(d, on="topic", how="left")
    sentiment = topic_sentiment(ctx.sentiment_net)
    has_sentiment = sentiment.height > 0
    if has_sentiment:
        rows = rows.join(sentiment, on="topic", how="left")
    # emerging topics first (they never fold away), then by size
    rows = rows.with_columns(pl.col("emerging").fill_null(False).alias("_em") if "emerging" in rows.columns else pl.lit(False).alias("_em"))
    rows = rows.sort(["_em", "size"], descending=[True, True])
    sparks = _sparklines(ctx.topics_over_time)
    out = []
    for r in rows.iter_rows(named=True):
        label, words = topic_label(ctx, r), topic_words(ctx, r)
        out.append({**{k: r.get(k) for k in ("nps_diff", "nps_ci_low", "nps_ci_high", "nps_significant", "sent_net", "sent_low",
                                              "sent_high", "sent_enough", "share_recent")},
                    "label": label, "label_orig": _foreign(ctx, label), "emerging": bool(r.get("emerging")),
                    "size": r["size"], "share": r["share"], "spark": sparks.get(r["topic"], ""),
                    "words": words[:6], "words_orig": _foreign(ctx, " ".join(words)),
                    "examples": list(r.get("examples") or [])[: ctx.params.max_examples]})
    note = None
    if has_drivers:
        q = number(ctx.fdr_q, ctx.lang, 2)
        note = ctx.t("impact_note", q=q) if ctx.has_significance else ctx.t("impact_note_unknown")
    return _section(ctx, "topics", "topics.html.j2", rows=out, show_impact=has_drivers, show_sentiment=has_sentiment,
                    impact_note=note, level=ctx.level, shown=TOPIC_ROWS, chart=_markup(chart))


def _foreign(ctx: Context, shown: str) -> str:
    """'ja' when an English page must show Japanese data as it is (no English label exists), for its lang attribute."""
    return "ja" if ctx.lang == "en" and JAPANESE.search(shown or "") else ""


def _sparklines(over_time: pl.DataFrame, width: float = 90, height: float = 20) -> dict[int, str]:
    """topic → SVG polyline points of its monthly share, scaled to its own peak (shape, not level)."""
    if not over_time.height or not {"topic", "period", "share"} <= set(over_time.columns):
        return {}
    periods = over_time["period"].unique().sort().to_list()
    if len(periods) < 2:
        return {}
    full = (pl.DataFrame({"period": periods}).join(over_time.select("topic").unique(), how="cross")
            .join(over_time.select("topic", "period", "share"), on=["topic", "period"], how="left")
            .with_columns(pl.col("share").fill_null(0.0)).sort("topic", "period"))
    out = {}
    step = width / (len(periods) - 1)
    for (topic,), g in full.group_by("topic"):
        shares = g.sort("period")["share"].to_list()
        peak = max(shares) or 1.0
        out[int(topic)] = " ".join(f"{i * step:.1f},{height - 1 - (height - 2) * v / peak:.1f}" for i, v in enumerate(shares))
    return out


def _notes(value: Any) -> list[str]:
    """A stage's notes as a list: a list of strings, or one ' | '-joined string (DVC metrics want scalars)."""
    if isinstance(value, str):
        return [s.strip() for s in value.split(" | ") if s.strip()]
    return [str(s) for s in (value or []) if str(s).strip()]


def skipped_notes(ctx: Context) -> list[tuple[str, str]]:
    """(stage, sentence) for everything a stage did not compute or the report left out, and why."""
    lang, out = ctx.lang, []
    out += [("clean", s) for s in _notes(ctx.clean_metrics.get("notes"))]
    # One line per reason, naming every KPI or comparison it leaves out (kpis' ``notes`` say the same in English).
    by_reason: dict[str, list[str]] = {}
    for item in ctx.kpis_metrics.get("skipped") or []:
        if isinstance(item, dict) and item.get("reason"):
            kpi, comparison = str(item.get("kpi", "")), str(item.get("comparison", ""))
            name = ctx.t(f"comparison.{comparison}") if kpi == "all" else ctx.kpi(kpi)
            by_reason.setdefault(reasons.word(item, lang), []).append(name)
    out += [("kpis", ctx.t("skipped.kpi", kpi=ctx.t("join.list").join(names), reason=r)) for r, names in by_reason.items()]
    out += [("topics", s) for s in _notes(ctx.topics_metrics.get("notes"))]
    for item in ctx.topics_metrics.get("skipped") or []:  # e.g. too few verbatims for a topic model
        if isinstance(item, dict) and item.get("reason"):
            out.append(("topics", ctx.t("skipped.topics", reason=reasons.word(item, lang))))
    stale = ctx.topics_metrics.get("stale_curation_ids")
    if stale:
        out.append(("topics", ctx.t("skipped.stale_curation", ids=ctx.t("join.list").join(str(i) for i in stale))))
    for comparison in ("programme", "window"):
        rows = ctx.tests.filter(pl.col("comparison") == comparison)
        if rows.height and not _comparison(ctx, comparison).height:
            spans = [period(x, lang) for x in (rows["label_a"][0], rows["label_b"][0]) if x and x != EMPTY_SPAN]
            out.append(("kpis", ctx.t("skipped.empty_comparison", comparison=ctx.t(f"comparison.{comparison}"),
                                      detail=ctx.t("skipped.only_span", span=" → ".join(spans)) if spans else ctx.t("skipped.no_span"))))
    out += [("report", ctx.t("skipped.missing_file", file=rel)) for rel in ctx.missing]
    if ctx.drivers is not None and ctx.drivers.height and not ctx.has_significance:
        out.append(("report", ctx.t("skipped.old_drivers")))
    elif ctx.topics.filter(pl.col("topic") != -1).height and (ctx.drivers is None or not ctx.drivers.height):
        out.append(("report", ctx.t("skipped.no_drivers")))
    return out


def quarantine_reason(ctx: Context, code: str) -> str:
    """The clean stage's quarantine code in the report's language ("nps_out_of_range" → "NPSが尺度の範囲外");
    a code the catalogue does not know is shown as it is (reports/metrics/clean.json has the same codes)."""
    for kind in ("not_a_number", "out_of_range"):
        if code.endswith("_" + kind):
            field = code[: -len(kind) - 1]
            return ctx.t(f"quarantine.{kind}", field=ctx.kpi(field) if field in kpi_registry.BY_KEY else field.upper())
    return ctx.t(f"quarantine.{code}") if f"quarantine.{code}" in catalogue() else code


def quality_html(ctx: Context) -> str:
    m, lang = ctx.clean_metrics, ctx.lang
    counts = [("rows read", "rows_in"), ("rows kept", "rows_kept"), ("rows quarantined", "rows_quarantined"),
              ("non-answers", "non_answers"), ("empty comments", "empty_texts"), ("verbatims modelled", "verbatims_ok"),
              ("tickets", "tickets")]
    lines = [(ctx.t(label), number(m[k], lang, style="count")) for label, k in counts if not _missing(m.get(k))]
    lines += [(ctx.t("quarantined", reason=quarantine_reason(ctx, k)), number(v, lang, style="count"))
              for k, v in (m.get("quarantined_by_reason") or {}).items()]
    lines += [(ctx.t("redacted", kind=k), number(v, lang, style="count")) for k, v in (m.get("redactions") or {}).items()]
    lines += [(ctx.t("encoding", file=f["file"]), f["encoding"]) for f in (m.get("files") or []) if f.get("encoding")]
    lines = [(k, v) for k, v in lines if v]
    skipped = skipped_notes(ctx)
    if not lines and not skipped:
        return ""
    return _section(ctx, "quality", "quality.html.j2", lines=lines, skipped=skipped)


def method_html(ctx: Context, run_info: dict) -> str:
    lang = ctx.lang
    present = set(_usable(ctx)["kpi"].to_list())
    families = sorted({kpi_registry.get(k).family for k in present if k in kpi_registry.BY_KEY},
                      key=["nps", "mean", "proportion", "median", "survival", "rate"].index)
    sentences = [ctx.t(f"method.{f}") for f in families]
    sentences.append(ctx.t("method.family", n_tests=number(_n_tests(ctx), lang, style="count"), q=number(ctx.fdr_q, lang, 2), level=ctx.level))
    body = ctx.t("join.sentence").join(sentences)
    meta = [(ctx.t(k) if k in catalogue() else k, str(v)) for k, v in run_info.items() if not _missing(v) and str(v) != ""]
    return _section(ctx, "method", "method.html.j2", text=body, meta=meta)


# ------------------------------------------------------------------ run metadata

def code_hash() -> str:
    """sha256 over the pipelines package's sources and templates: what made the page, committed or not."""
    import hashlib

    import pipelines

    pkg, digest = Path(pipelines.__file__).parent, hashlib.sha256()
    for path in sorted(p for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"):
        digest.update(path.relative_to(pkg).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_info(ctx: Context, root: str | Path, params) -> dict:
    """Run metadata for the appendix: data window, what was compared, hashes of data, params and code.
    Entries the run does not have are None (and not shown).

    Nothing here depends on when or where the page was made (no clock, no git commit, no path): the same data, params
    and code give the same bytes, so the committed dvc.lock still matches after `make demo` on a fresh clone."""
    import hashlib

    import pipelines

    root = Path(root)
    data_hash = hashlib.sha256()
    for rel in (ctx.params.in_kpi_tests, ctx.params.in_topics, ctx.params.in_clean_metrics):
        data_hash.update((root / rel).read_bytes())
    params_hash = hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    periods = ctx.monthly["period"].drop_nulls().unique().sort().to_list() if ctx.monthly.height else []
    window = _spans(_comparison(ctx, "window"))
    programme_date = getattr(params.kpis, "programme_date", None)
    return {
        "data window": f"{periods[0]} – {periods[-1]}" if periods else None,
        "programme date": str(programme_date) if programme_date else None,
        "window comparison": f"{period(window[0], ctx.lang)} → {period(window[1], ctx.lang)}" if window else None,
        "FDR q": params.kpis.fdr_q,
        "tests in the family": _n_tests(ctx),
        "data hash (sha256)": data_hash.hexdigest()[:16],
        "params hash (sha256)": params_hash[:16],
        "code version": f"koe {pipelines.__version__} (code sha256 {code_hash()[:12]})",
    }


# ------------------------------------------------------------------ the stage contract

@dataclass
class ReportResult:
    """The stage's outputs (``out_html``, ``metrics_path``), written by ``pipelines.io.write_result``."""

    html: str
    metrics: dict


def headline_metrics(params: ReportParams, root: str | Path = ".") -> dict[str, Any]:
    """The run's DVC metrics: a few flat numbers that fit one terminal line in `dvc metrics show` and `dvc exp show`.

    Every key is always there (null when a stage did not compute it), so runs and experiments compare key by key; the
    stages' own files (reports/metrics/<stage>.json) keep the detail: counts by reason, files, notes, what was skipped.
    """
    def read(rel: str) -> dict:
        path = Path(root) / rel
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def rounded(value: Any, digits: int) -> float | None:  # short columns: NPS points to 0.1, shares to 0.001
        return None if value is None else round(float(value), digits)

    clean, topics, kpis = read(params.in_clean_metrics), read(params.in_topics_metrics), read(params.in_kpis_metrics)
    return {
        "verbatims": clean.get("verbatims_ok"),
        "topics": topics.get("n_topics"),
        "outliers": rounded(topics.get("outlier_share"), 3),
        "npmi": rounded(topics.get("coherence_npmi"), 3),  # topic coherence
        "nps_prev": rounded(kpis.get("nps_before"), 1),  # the window comparison: previous window …
        "nps_now": rounded(kpis.get("nps_now"), 1),  # … and the current one
        "alerts": kpis.get("n_alerts"),
    }


def run(params: ReportParams, root: str | Path = ".", notebook: str | Path | None = None) -> ReportResult:
    """The stakeholder page from the executed report notebook (default: the stage's executed copy under ``root``),
    and the run's headline metrics."""
    from pipelines.stages import STAGES

    page = html_page(notebook or Path(root) / STAGES["report"].executed, params.lang, params.title)
    return ReportResult(page, headline_metrics(params, root))
