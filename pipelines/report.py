"""Report stage: the stakeholder page's sections as HTML fragments and seaborn charts.

The report notebook calls these and displays the results; ``run`` turns the
executed notebook into one self-contained HTML file with no code and no external requests.
Every verbatim and every label derived from data is HTML-escaped here.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipelines.schema import ReportParams  # noqa: F401  (re-exported)
from pipelines.kpis import read_alerts

TEMPLATE_DIR = Path(__file__).parent / "templates"


T = {
    "ja": {
        "summary": "エグゼクティブサマリー", "kpis": "主要KPI", "shifts": "KPIの変化（多重比較補正後）",
        "topics": "トピック（顧客が話していること）", "quality": "データ品質", "method": "方法",
        "run": "実行情報", "emerging": "新たに増えている", "examples": "代表的な声", "words": "キーワード",
        "size": "件数", "share": "構成比", "label": "トピック", "trend": "直近の構成比",
        "kpi": "KPI", "segment": "セグメント", "before": "前", "after": "後", "diff": "差",
        "ci": "95%信頼区間", "p_adj": "補正後p値", "verdict": "判定", "n": "n",
        "improved": "改善", "worsened": "悪化", "no detectable change": "有意な変化なし",
        "too few responses to tell": "回答数が少なく判断できない",
        "all": "全体", "nps_trend": "月次NPSの推移", "topic_trend": "トピック構成比の推移",
        "programme": "施策開始", "month": "月",
        "shift_window": "直近期間の変化（前期間との比較）", "shift_programme": "施策前後の変化",
        "period": "比較", "matrix_note": "▲改善 ▼悪化 ＝有意な変化なし ?回答数が少なく判断できない（判定は多重比較補正後）",
        "significant_detail": "有意な変化の詳細", "cmp_window": "直近", "cmp_programme": "施策前後", "few_short": "回答不足", "impact": "NPSへの影響（このトピックに触れた回答者−それ以外、95%信頼区間）",
        "sentiment": "ネット感情（肯定%−否定%、95%信頼区間）",
        "not_sig": "補正後は有意でない", "more_rows": "ほか {n} 件はデータファイル（data/kpis/tests.parquet）を参照",
        "rows read": "読み込んだ行", "rows kept": "採用した行", "rows quarantined": "隔離した行",
        "non-answers": "無回答（「特になし」など）", "empty comments": "空のコメント", "verbatims modelled": "分析したコメント",
        "quarantined": "隔離", "redacted": "個人情報の伏せ字", "encoding": "文字コード",
        "data window": "データ期間", "programme date": "施策開始日", "window comparison": "直近期間の比較",
        "FDR q": "FDR q", "tests in the family": "補正の対象とした検定数", "data hash (sha256)": "データのハッシュ (sha256)",
        "params hash (sha256)": "パラメータのハッシュ (sha256)", "code version": "コードのバージョン", "generated": "生成日時",
    },
    "en": {
        "summary": "Executive summary", "kpis": "Key KPIs", "shifts": "KPI shifts (after multiple-comparison control)",
        "topics": "Topics (what customers talk about)", "quality": "Data quality", "method": "Methodology",
        "run": "Run metadata", "emerging": "emerging", "examples": "Example verbatims", "words": "Top words",
        "size": "Verbatims", "share": "Share", "label": "Topic", "trend": "Recent share",
        "kpi": "KPI", "segment": "Segment", "before": "Before", "after": "After", "diff": "Change",
        "ci": "95% CI", "p_adj": "Adjusted p", "verdict": "Verdict", "n": "n",
        "improved": "improved", "worsened": "worsened", "no detectable change": "no detectable change",
        "too few responses to tell": "too few responses to tell",
        "all": "overall", "nps_trend": "Monthly NPS", "topic_trend": "Topic share by month",
        "programme": "programme launch", "month": "Month", "period": "Comparison",
        "shift_window": "Latest window vs the previous one", "shift_programme": "Before vs after the programme",
        "matrix_note": "▲ improved ▼ worsened ＝ no detectable change ? too few responses to tell (verdicts after FDR control)",
        "significant_detail": "Significant shifts in detail", "cmp_window": "latest", "cmp_programme": "programme", "few_short": "too few to tell",
        "impact": "NPS impact (respondents raising it − the others, 95% CI)",
        "sentiment": "Net sentiment (% positive − % negative, 95% CI)", "not_sig": "not significant after correction", "more_rows": "{n} more in data/kpis/tests.parquet",
        "quarantined": "quarantined", "redacted": "redacted", "encoding": "encoding",
    },
}

KPI_NAMES = {
    "ja": {"nps": "NPS", "csat_mean": "CSAT平均", "csat_top2": "CSAT上位2box", "ticket_volume": "問い合わせ件数",
           "first_response_h": "初回応答時間（時間）", "resolution_h": "解決時間（時間）", "churn_rate": "離反率（%）",
           "repeat_rate": "リピート率（%）", "ces_mean": "CES平均", "ces_top2": "CES上位2box"},
    "en": {"nps": "NPS", "csat_mean": "CSAT mean", "csat_top2": "CSAT top-2-box", "ticket_volume": "Ticket volume",
           "first_response_h": "First response time (h)", "resolution_h": "Resolution time (h)", "churn_rate": "Churn rate (%)",
           "repeat_rate": "Repeat rate (%)", "ces_mean": "CES mean", "ces_top2": "CES top-2-box"},
}

# Colour-blind-safe (Okabe–Ito) colours for verdicts.
VERDICT_COLOURS = {"improved": "#009E73", "worsened": "#D55E00", "no detectable change": "#555555",
                   "too few responses to tell": "#999999"}

e = html.escape  # every data-derived string goes through this


@dataclass
class Context:
    params: ReportParams
    clean_metrics: dict
    topics: pl.DataFrame
    topics_over_time: pl.DataFrame
    topics_metrics: dict
    assignments: pl.DataFrame
    sentiment_net: pl.DataFrame
    tests: pl.DataFrame
    monthly: pl.DataFrame
    alerts: list

    def t(self, key: str) -> str:
        return T[self.params.lang].get(key, key)

    def kpi(self, key: str) -> str:
        return KPI_NAMES[self.params.lang].get(key, key)


def load(params: ReportParams, root: str | Path = ".") -> Context:
    root = Path(root)
    return Context(
        params=params,
        clean_metrics=json.loads((root / params.in_clean_metrics).read_text(encoding="utf-8")),
        topics=pl.read_parquet(root / params.in_topics),
        topics_over_time=pl.read_parquet(root / params.in_topics_over_time),
        topics_metrics=json.loads((root / params.in_topics_metrics).read_text(encoding="utf-8")),
        assignments=pl.read_parquet(root / params.in_assignments, columns=["response_id", "source", "nps", "topic"]),
        sentiment_net=pl.read_parquet(root / params.in_sentiment_net),
        tests=pl.read_parquet(root / params.in_kpi_tests),
        monthly=pl.read_parquet(root / params.in_kpi_monthly),
        alerts=read_alerts(root / params.in_alerts),
    )


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _signed(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:+,.{digits}f}"


def _segment(ctx: Context, col: str, value: str) -> str:
    return ctx.t("all") if col == "all" else f"{col} = {value}"


_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def period(label: str, lang: str) -> str:
    """'2026-05〜2026-10' → '2026年5月〜10月' (ja) or 'May–Oct 2026' (en); other labels unchanged."""
    import re

    m = re.fullmatch(r"(\d{4})-(\d{2})(?:〜(\d{4})-(\d{2}))?", label or "")
    if not m:
        return label
    y1, m1, y2, m2 = m.group(1), int(m.group(2)), m.group(3) or m.group(1), int(m.group(4) or m.group(2))
    if lang == "ja":
        end = f"{m2}月" if y1 == y2 else f"{y2}年{m2}月"
        return f"{y1}年{m1}月" if (y1, m1) == (y2, m2) else f"{y1}年{m1}月〜{end}"
    if (y1, m1) == (y2, m2):
        return f"{_MONTHS_EN[m1 - 1]} {y1}"
    start = _MONTHS_EN[m1 - 1] if y1 == y2 else f"{_MONTHS_EN[m1 - 1]} {y1}"
    return f"{start}–{_MONTHS_EN[m2 - 1]} {y2}"


def _p(p: float | None) -> str:
    return "–" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _n_tests(ctx: Context) -> int:
    return int(ctx.tests["p_value"].is_not_null().sum())


def finding_sentence(ctx: Context, row: dict) -> str:
    """One plain sentence with numbers and uncertainty for a test result row."""
    lang = ctx.params.lang
    name = ctx.kpi(row["kpi"])
    seg = _segment(ctx, row["segment_col"], row["segment_value"])
    unit = {"nps": " ポイント", "csat_top2": " ポイント", "first_response_h": " 時間", "resolution_h": " 時間"}.get(row["kpi"], "") \
        if lang == "ja" else {"nps": " points", "csat_top2": " points", "first_response_h": " h", "resolution_h": " h"}.get(row["kpi"], "")
    digits = 2 if row["kpi"] == "csat_mean" else 1
    ci = f"{_fmt(row['ci_low'], digits)}〜{_fmt(row['ci_high'], digits)}" if lang == "ja" else f"{_fmt(row['ci_low'], digits)} to {_fmt(row['ci_high'], digits)}"
    n_tests = _n_tests(ctx)
    if lang == "ja":
        verdict = {"improved": "改善しました", "worsened": "悪化しました"}.get(row["verdict"], f"変化しました（{ctx.t(row['verdict'])}）")
        sig = f"{n_tests}件の比較で多重比較補正後も有意（補正後p{_p(row['p_adjusted']) if _p(row['p_adjusted']).startswith('<') else '=' + _p(row['p_adjusted'])}）" if row["significant"] else "補正後は有意ではない"
        return (f"{seg}の{name}は{period(row['label_a'], lang)}の{_fmt(row['est_a'], digits)}から{period(row['label_b'], lang)}の{_fmt(row['est_b'], digits)}へ"
                f"{_signed(row['diff'], digits)}{unit}{verdict}（95%信頼区間 {ci}、n={row['n_a']:,}/{row['n_b']:,}）。{sig}。")
    verb = "rose" if row["diff"] > 0 else "fell"
    sig = (f"significant after correcting for {n_tests} comparisons (adjusted p{_p(row['p_adjusted']) if _p(row['p_adjusted']).startswith('<') else '=' + _p(row['p_adjusted'])})"
           if row["significant"] else "not significant after correction")
    return (f"{name} ({seg}) {verb} from {_fmt(row['est_a'], digits)} in {period(row['label_a'], lang)} to {_fmt(row['est_b'], digits)} in "
            f"{period(row['label_b'], lang)} ({_signed(row['diff'], digits)}{unit}, 95% CI {ci}, n={row['n_a']:,}/{row['n_b']:,}); {sig}.")


def _row(ctx: Context, comparison: str, kpi: str, col: str = "all", value: str = "all") -> dict | None:
    t = ctx.tests.filter((pl.col("comparison") == comparison) & (pl.col("kpi") == kpi) & (pl.col("segment_col") == col)
                         & (pl.col("segment_value") == value))
    return t.row(0, named=True) if len(t) else None


def window_finding(ctx: Context) -> str | None:
    """What changed in the latest window: overall NPS, with the adverse shifts flagged as alerts."""
    row = _row(ctx, "window", "nps")
    if row is None:
        return None
    text = finding_sentence(ctx, row)
    worst = sorted((a for a in ctx.alerts if a.get("segment_col") != "all" and a.get("kpi") == "nps"),
                   key=lambda a: a["diff"])[:2]
    ja = ctx.params.lang == "ja"
    if ctx.alerts:
        segs = ("、" if ja else ", ").join(f"{_segment(ctx, a['segment_col'], a['segment_value'])} {_signed(a['diff'])}"
                                          for a in worst)
        text += (f"悪化のアラートは{len(ctx.alerts)}件" + (f"（NPSの下げ幅が大きいのは{segs}）" if segs else "") + "。"
                 if ja else f" {len(ctx.alerts)} adverse shifts are flagged" + (f" (largest NPS drops: {segs})" if segs else "") + ".")
    return text


def segments_finding(ctx: Context) -> str | None:
    """Where the programme worked: significant NPS rises by segment, and the control that did not move."""
    rows = ctx.tests.filter((pl.col("comparison") == "programme") & (pl.col("kpi") == "nps") & (pl.col("segment_col") != "all"))
    up = rows.filter(pl.col("significant") & (pl.col("verdict") == "improved")).sort("p_adjusted").head(2)
    if not len(up):
        return None
    ja = ctx.params.lang == "ja"
    parts = [f"{_segment(ctx, r['segment_col'], r['segment_value'])} {_signed(r['diff'])}"
             + (f"（95%信頼区間 {_fmt(r['ci_low'])}〜{_fmt(r['ci_high'])}）" if ja else f" (95% CI {_fmt(r['ci_low'])} to {_fmt(r['ci_high'])})")
             for r in up.iter_rows(named=True)]
    col = up["segment_col"][0]
    flat = rows.filter((pl.col("segment_col") == col) & ~pl.col("significant")).iter_rows(named=True)
    by_verdict: dict[str, list[str]] = {}
    for r in flat:
        by_verdict.setdefault(r["verdict"], []).append(_segment(ctx, r["segment_col"], r["segment_value"]))
    if ja:
        rest = "".join(f"{'、'.join(v)}は{'回答数が少なく変化を判断できません' if k == 'too few responses to tell' else '有意な変化がありません'}。"
                       for k, v in by_verdict.items())
        return f"NPSの改善は{'、'.join(parts)}に集中しています（いずれも補正後も有意）。" + rest
    rest = "".join(f" {' and '.join(v)}: {ctx.t(k)}." for k, v in by_verdict.items())
    return f"The NPS gain is concentrated in {' and '.join(parts)}, both significant after correction." + rest


def executive_findings(ctx: Context, top: int = 5) -> list[str]:
    """3–5 findings, most decision-relevant first: the latest window, the emerging theme, the programme effect,
    where it worked, and the support response time."""
    out: list[str | None] = [window_finding(ctx)]
    impact = {r["topic"]: r for r in topic_impact(ctx.assignments).iter_rows(named=True)}
    for row in ctx.topics.filter(pl.col("emerging")).head(1).iter_rows(named=True):
        imp = impact.get(row["topic"])
        if ctx.params.lang == "ja":
            text = (f"新しいテーマ「{row['label']}」が直近に急増：直近の声の{row['share_recent']:.1%}"
                    f"（それ以前は{row['share_before']:.1%}、直近{row['n_recent']:,}件）。")
            if imp and imp["impact_significant"]:
                text += (f"この話題に触れた回答者のNPSは{_fmt(imp['nps_topic'])}で、それ以外より{_signed(imp['nps_impact'])} ポイント"
                         f"（95%信頼区間 {_fmt(imp['impact_low'])}〜{_fmt(imp['impact_high'])}）。")
        else:
            text = (f"Emerging theme “{row['label']}”: {row['share_recent']:.1%} of recent verbatims "
                    f"(was {row['share_before']:.1%}; {row['n_recent']:,} recent verbatims).")
            if imp and imp["impact_significant"]:
                text += (f" Respondents raising it give an NPS of {_fmt(imp['nps_topic'])}, {_signed(imp['nps_impact'])} points "
                         f"against the others (95% CI {_fmt(imp['impact_low'])} to {_fmt(imp['impact_high'])}).")
        out.append(text)
    overall = _row(ctx, "programme", "nps")
    out.append(finding_sentence(ctx, overall) if overall else None)
    out.append(segments_finding(ctx))
    frt = _row(ctx, "programme", "first_response_h")
    out.append(finding_sentence(ctx, frt) if frt else None)
    return [x for x in out if x][:top]


def summary_html(ctx: Context) -> str:
    items = "".join(f"<li>{e(s)}</li>" for s in executive_findings(ctx))
    return f'<section class="koe-summary"><h2>{e(ctx.t("summary"))}</h2><ul>{items}</ul></section>'


def tiles_html(ctx: Context) -> str:
    rows = ctx.tests.filter((pl.col("comparison") == "programme") & (pl.col("segment_col") == "all"))
    rows = rows.with_columns(pl.col("kpi").replace_strict({k: i for i, k in enumerate(KPI_ORDER)}, default=99).alias("_o")).sort("_o")
    tiles = []
    for r in rows.iter_rows(named=True):
        colour = VERDICT_COLOURS.get(r["verdict"], "#555")
        digits = 2 if r["kpi"] == "csat_mean" else 1
        tiles.append(
            f'<div class="koe-tile" style="border-top:4px solid {colour}"><div class="koe-tile-name">{e(ctx.kpi(r["kpi"]))}</div>'
            f'<div class="koe-tile-value">{_fmt(r["est_b"], digits)}</div>'
            f'<div class="koe-tile-change">{_signed(r["diff"], digits)}'
            + (f' ({e(ctx.t("ci"))} {_fmt(r["ci_low"], digits)}…{_fmt(r["ci_high"], digits)})' if r["ci_low"] is not None else "")
            + f'</div>'
            f'<div class="koe-tile-verdict" style="color:{colour}">{e(ctx.t(r["verdict"]))}</div></div>'
        )
    return f'<section><h2>{e(ctx.t("kpis"))}</h2><div class="koe-tiles">{"".join(tiles)}</div></section>'


KPI_ORDER = ("nps", "csat_mean", "csat_top2", "ticket_volume", "first_response_h", "resolution_h")
VERDICT_MARK = {"improved": "▲", "worsened": "▼", "no detectable change": "＝", "too few responses to tell": "?"}


def shift_matrix_html(ctx: Context, comparison: str) -> str:
    """Every KPI × every segment for one comparison: change and verdict per cell (colour plus a mark and a word,
    so it reads without colour vision and in print)."""
    rows = ctx.tests.filter(pl.col("comparison") == comparison)
    if not len(rows):
        return ""
    kpis = [k for k in KPI_ORDER if k in set(rows["kpi"])] + sorted(set(rows["kpi"]) - set(KPI_ORDER))
    cells = {(r["segment_col"], r["segment_value"], r["kpi"]): r for r in rows.iter_rows(named=True)}
    segs = sorted({(r["segment_col"], r["segment_value"]) for r in rows.iter_rows(named=True)},
                  key=lambda sv: (sv[0] != "all", sv))
    head = f"<th>{e(ctx.t('segment'))}</th>" + "".join(f"<th>{e(ctx.kpi(k))}</th>" for k in kpis)
    body = []
    for col, value in segs:
        tds = []
        for k in kpis:
            r = cells.get((col, value, k))
            if r is None:
                tds.append("<td>–</td>")
                continue
            colour = VERDICT_COLOURS.get(r["verdict"], "#555555")
            digits = 2 if k == "csat_mean" else 1
            diff = _signed(r["diff"], digits) if r["verdict"] != "too few responses to tell" else ""
            tds.append(f'<td class="koe-cell" style="color:{colour}"><b>{VERDICT_MARK.get(r["verdict"], "")}</b> {diff}'
                       f'<br><small>{e(ctx.t("few_short") if r["verdict"] == "too few responses to tell" else ctx.t(r["verdict"]))}</small></td>')
        body.append(f"<tr><th>{e(_segment(ctx, col, value))}</th>{''.join(tds)}</tr>")
    first = rows.row(0, named=True)
    title = ctx.t("shift_window" if comparison == "window" else "shift_programme")
    caption = f"{e(period(first['label_a'], ctx.params.lang))} → {e(period(first['label_b'], ctx.params.lang))}"
    return (f'<section><h3>{e(title)}</h3><p class="koe-caption">{caption}. {e(ctx.t("matrix_note"))}</p>'
            f'<table class="koe-table koe-matrix"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></section>')


def shift_table_html(ctx: Context, max_rows: int = 40) -> str:
    """The KPI × segment matrices for the latest window and the programme, then the significant shifts in detail."""
    matrices = shift_matrix_html(ctx, "window") + shift_matrix_html(ctx, "programme")
    rows = ctx.tests.filter(pl.col("significant")).sort(["comparison", "p_adjusted"], descending=[True, False])
    head = "".join(f"<th>{e(ctx.t(k))}</th>" for k in ("kpi", "segment", "period", "before", "after", "diff", "ci", "p_adj", "n", "verdict"))
    body = []
    for r in rows.head(max_rows).iter_rows(named=True):
        digits = 2 if r["kpi"] == "csat_mean" else 1
        colour = VERDICT_COLOURS.get(r["verdict"], "#555")
        when = ctx.t("cmp_" + r["comparison"])
        body.append(
            f"<tr><td>{e(ctx.kpi(r['kpi']))}</td><td>{e(_segment(ctx, r['segment_col'], r['segment_value']))}</td><td>{e(when)}</td>"
            f"<td>{_fmt(r['est_a'], digits)}</td><td>{_fmt(r['est_b'], digits)}</td><td>{_signed(r['diff'], digits)}</td>"
            f"<td>{_fmt(r['ci_low'], digits)}…{_fmt(r['ci_high'], digits)}</td><td>{e(_p(r['p_adjusted']))}</td><td>{r['n_a']:,}/{r['n_b']:,}</td>"
            f'<td style="color:{colour}">{VERDICT_MARK.get(r["verdict"], "")} {e(ctx.t(r["verdict"]))}</td></tr>'
        )
    more = len(rows) - min(len(rows), max_rows)
    note = f'<p class="koe-caption">{e(ctx.t("more_rows").format(n=more))}</p>' if more > 0 else ""
    return (f'<section><h2>{e(ctx.t("shifts"))}</h2>{matrices}<h3>{e(ctx.t("significant_detail"))}</h3>'
            f'<table class="koe-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{note}</section>')


def topic_impact(assignments: pl.DataFrame, alpha: float = 0.05, q: float = 0.05) -> pl.DataFrame:
    """NPS of respondents who raised each topic minus NPS of those who did not (Wald, trinomial variance),
    Benjamini–Hochberg over the topics: which themes weigh on the score, and whether that is more than noise."""
    import numpy as np

    from pipelines.kpis import bh_adjust, compare_nps

    resp = (assignments.filter(pl.col("nps").is_not_null() & pl.col("response_id").is_not_null())
            .group_by("response_id").agg(pl.col("nps").first(), pl.col("topic").unique()))
    out = []
    for topic in sorted(assignments["topic"].unique().to_list()):
        if topic == -1:
            continue
        mask = resp["topic"].list.contains(topic)
        inside, outside = resp.filter(mask)["nps"].to_numpy(), resp.filter(~mask)["nps"].to_numpy()
        if len(inside) < 2 or len(outside) < 2:
            continue
        c = compare_nps(np.asarray(outside), np.asarray(inside), alpha=alpha)
        out.append({"topic": topic, "nps_topic": c.est_b, "nps_impact": c.diff, "impact_low": c.ci_low,
                    "impact_high": c.ci_high, "impact_p": c.p_value, "impact_n": c.n_b})
    frame = pl.DataFrame(out, schema={"topic": pl.Int64, "nps_topic": pl.Float64, "nps_impact": pl.Float64,
                                      "impact_low": pl.Float64, "impact_high": pl.Float64, "impact_p": pl.Float64,
                                      "impact_n": pl.Int64})
    p_adj, sig = bh_adjust(frame["impact_p"].to_list(), q=q)
    return frame.with_columns(pl.Series("impact_p_adj", p_adj, dtype=pl.Float64), pl.Series("impact_significant", sig, dtype=pl.Boolean))


def topic_sentiment(net: pl.DataFrame) -> pl.DataFrame:
    """Per-topic net sentiment of the survey verbatims, from the sentiment stage's long table."""
    return net.filter((pl.col("source") == "survey") & (pl.col("level") == "topic")).select(
        pl.col("value").cast(pl.Int64).alias("topic"),
        pl.col("net_sentiment").alias("sent_net"), pl.col("ci_low").alias("sent_low"),
        pl.col("ci_high").alias("sent_high"), pl.col("enough").alias("sent_enough"),
    )


def _sentiment_cell(ctx: Context, r: dict) -> str:
    if r.get("sent_net") is None:
        return "–"
    if not r["sent_enough"]:
        return f"<small>{e(ctx.t('too few responses to tell'))}</small>"
    return f"<b>{_signed(r['sent_net'], 0)}</b><br><small>{_fmt(r['sent_low'], 0)}…{_fmt(r['sent_high'], 0)}</small>"


def topics_html(ctx: Context) -> str:
    impact = topic_impact(ctx.assignments)
    rows = (
        ctx.topics.filter(pl.col("topic") != -1)
        .join(impact, on="topic", how="left")
        .join(topic_sentiment(ctx.sentiment_net), on="topic", how="left")
        .sort("size", descending=True)
    )
    body = []
    for r in rows.iter_rows(named=True):
        if r.get("nps_impact") is None:
            effect = "–"
        else:
            mark = "" if not r["impact_significant"] else (" ▼" if r["nps_impact"] < 0 else " ▲")
            effect = (f"<b>{_signed(r['nps_impact'])}</b>{mark}<br><small>{_fmt(r['impact_low'])}…{_fmt(r['impact_high'])}"
                      f"{'' if r['impact_significant'] else ' · ' + e(ctx.t('not_sig'))}</small>")
        badge = f' <span class="koe-badge">{e(ctx.t("emerging"))}</span>' if r.get("emerging") else ""
        examples = "".join(f"<li>{e(x)}</li>" for x in (r["examples"] or [])[: ctx.params.max_examples])
        body.append(
            f"<tr><td><b>{e(r['label'])}</b>{badge}</td><td>{r['size']:,}</td><td>{r['share']:.1%}</td>"
            f"<td>{r['share_recent']:.1%}</td><td>{effect}</td><td>{_sentiment_cell(ctx, r)}</td><td>{e('、'.join(r['words'][:6]))}</td><td><ul class='koe-examples'>{examples}</ul></td></tr>"
        )
    head = "".join(f"<th>{e(ctx.t(k))}</th>" for k in ("label", "size", "share", "trend", "impact", "sentiment", "words", "examples"))
    return f'<section><h2>{e(ctx.t("topics"))}</h2><table class="koe-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></section>'


def quality_html(ctx: Context) -> str:
    m = ctx.clean_metrics
    lines = [
        ("rows read", m["rows_in"]), ("rows kept", m["rows_kept"]), ("rows quarantined", m["rows_quarantined"]),
        ("non-answers", m["non_answers"]), ("empty comments", m["empty_texts"]), ("verbatims modelled", m["verbatims_ok"]),
    ]
    lines = [(ctx.t(k), v) for k, v in lines]
    lines += [(f"{ctx.t('quarantined')}: {k}", v) for k, v in m["quarantined_by_reason"].items()]
    lines += [(f"{ctx.t('redacted')}: [{k}]", v) for k, v in m["redactions"].items()]
    lines += [(f"{ctx.t('encoding')}: {f['file']}", f["encoding"]) for f in m["files"]]
    body = "".join(f"<tr><td>{e(str(k))}</td><td>{e(f'{v:,}' if isinstance(v, int) else str(v))}</td></tr>" for k, v in lines)
    return f'<section><h2>{e(ctx.t("quality"))}</h2><table class="koe-table">{body}</table></section>'


def method_html(ctx: Context, run_info: dict) -> str:
    tests_n = _n_tests(ctx)
    text = {
        "en": ("NPS = % promoters (9–10) − % detractors (0–6); its difference uses the Wald interval with the trinomial variance "
               "(Rocks 2016). CSAT means: Welch's t-test; top-2-box: Newcombe's hybrid score interval; first-response time: "
               "Mann–Whitney; resolution time: Kaplan–Meier medians and a log-rank test with open tickets censored; ticket volume: "
               f"Poisson rate comparison. Benjamini–Hochberg FDR over all {tests_n} tests of the run. Cells whose minimum "
               "detectable effect is larger than a meaningful change are reported as too few responses to tell."),
        "ja": ("NPS＝推奨者（9–10）の割合−批判者（0–6）の割合。NPSの差は三項分布の分散によるWald区間（Rocks 2016）。"
               "CSAT平均はWelchのt検定、上位2boxはNewcombeのハイブリッドスコア区間、初回応答時間はMann–Whitney検定、"
               "解決時間は未解決チケットを打ち切りとしたKaplan–Meier中央値とログランク検定、件数はPoisson率の比較。"
               f"実行内の全{tests_n}検定にBenjamini–Hochberg法（FDR）を適用。最小検出効果が大きすぎるセルは「回答数が少なく判断できない」と表示。"),
    }[ctx.params.lang]
    meta = "".join(f"<tr><td>{e(ctx.t(str(k)))}</td><td>{e(str(v))}</td></tr>" for k, v in run_info.items())
    return (f'<section><h2>{e(ctx.t("method"))}</h2><p>{e(text)}</p><h2>{e(ctx.t("run"))}</h2>'
            f'<table class="koe-table">{meta}</table></section>')


def plot_setup() -> None:
    """seaborn theme with a Japanese font (set_theme resets the family, so name it here)."""
    import matplotlib_fontja  # noqa: F401  registers IPAexGothic
    import seaborn as sns

    sns.set_theme(style="whitegrid", font="IPAexGothic", palette="colorblind")


def plot_nps_trend(ctx: Context, programme_date: str | None = None):
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = ctx.monthly.filter((pl.col("kpi") == "nps") & (pl.col("segment_col").is_in(["all", "channel"]))).with_columns(
        pl.when(pl.col("segment_col") == "all").then(pl.lit(ctx.t("all"))).otherwise(pl.col("segment_value")).alias("series")
    ).sort("period")
    fig, ax = plt.subplots(figsize=(9, 4))
    sns.lineplot(data=data.to_pandas(), x="period", y="value", hue="series", style="series", markers=True, ax=ax)
    ax.set_title(ctx.t("nps_trend"))
    ax.set_xlabel(ctx.t("month"))
    ax.set_ylabel("NPS")
    ax.legend(title=None)
    ax.tick_params(axis="x", rotation=45)
    if programme_date:
        periods = data["period"].unique().sort().to_list()
        marker = programme_date[:7]
        if marker in periods:
            ax.axvline(periods.index(marker), color="#D55E00", linestyle="--", linewidth=1)
            ax.text(periods.index(marker) + 0.1, ax.get_ylim()[1] * 0.95, ctx.t("programme"), color="#D55E00", va="top")
    fig.tight_layout()
    return fig


def plot_topic_trend(ctx: Context, top: int = 8):
    import matplotlib.pyplot as plt
    import seaborn as sns

    keep = ctx.topics.filter(pl.col("topic") != -1).sort("size", descending=True).head(top).select("topic", "label")
    data = ctx.topics_over_time.join(keep, on="topic").sort("period")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    sns.lineplot(data=data.to_pandas(), x="period", y="share", hue="label", ax=ax)
    ax.set_title(ctx.t("topic_trend"))
    ax.set_xlabel(ctx.t("month"))
    ax.set_ylabel(ctx.t("share"))
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def nps_takeaway(ctx: Context) -> str:
    rows = ctx.tests.filter((pl.col("comparison") == "programme") & (pl.col("kpi") == "nps") & (pl.col("segment_col") == "all"))
    if not len(rows):
        return ""
    r = rows.row(0, named=True)
    if ctx.params.lang == "ja":
        return f"施策開始後、全体のNPSは{_signed(r['diff'])}ポイント変化（{ctx.t(r['verdict'])}）。"
    return f"After the programme launch overall NPS moved {_signed(r['diff'])} points ({ctx.t(r['verdict'])})."


def topic_takeaway(ctx: Context) -> str:
    em = ctx.topics.filter(pl.col("emerging"))
    if not len(em):
        return "直近で急増したトピックはありません。" if ctx.params.lang == "ja" else "No topic grew sharply in the recent months."
    labels = "、".join(f"「{x}」" for x in em["label"].to_list())
    return f"直近で急増：{labels}" if ctx.params.lang == "ja" else f"Grew sharply in recent months: {labels}"


def figure(fig, alt: str):
    """The chart as a PNG output carrying alt text (read aloud by screen readers, shown if images are off)."""
    import io as _io

    import matplotlib.pyplot as plt
    from IPython.display import Image

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Image(data=buf.getvalue(), format="png", metadata={"alt": alt})


def takeaway_html(text: str) -> str:
    return f'<p class="koe-takeaway">{e(text)}</p>'


def header_html(ctx: Context, run_info: dict) -> str:
    return (f'<header class="koe-header"><h1>{e(ctx.params.title)}</h1>'
            f'<p>{e(str(run_info.get("data window", "")))} · {e(str(run_info.get("generated", "")))}</p></header>')


def run_info(ctx: Context, root: str | Path, params) -> dict:
    """Run metadata for the appendix: data window, what was compared, hashes of data and params, code version."""
    import hashlib
    import subprocess
    from datetime import datetime, timezone

    import pipelines

    root = Path(root)
    data_hash = hashlib.sha256()
    for rel in (ctx.params.in_kpi_tests, ctx.params.in_topics, ctx.params.in_clean_metrics):
        data_hash.update((root / rel).read_bytes())
    params_hash = hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    periods = ctx.monthly["period"].unique().sort().to_list()
    windows = ctx.tests.filter(pl.col("comparison") == "window").select("label_a", "label_b").head(1)
    return {
        "data window": f"{periods[0]} – {periods[-1]}" if periods else "",
        "programme date": str(params.kpis.programme_date),
        "window comparison": f"{windows['label_a'][0]} → {windows['label_b'][0]}" if len(windows) else "",
        "FDR q": params.kpis.fdr_q,
        "tests in the family": _n_tests(ctx),
        "data hash (sha256)": data_hash.hexdigest()[:16],
        "params hash (sha256)": params_hash[:16],
        "code version": f"koe {pipelines.__version__}" + (f" ({commit})" if commit else ""),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def embedded_font_css(text: str) -> str:
    """@font-face with IPAexGothic cut down to the characters of this page, as a data: URL (WOFF).

    Readers without a Japanese font (a fresh Linux box, some kiosks) would otherwise see tofu; the subset keeps the
    file small and the CSP (font-src data:) allows nothing else. IPA Font License permits embedding in documents.
    """
    import base64
    import io as _io

    import logging

    import matplotlib_fontja
    from fontTools import subset

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # it logs every pruned table at INFO

    chars = {c for c in text if ord(c) > 0x7F}  # ASCII is drawn by the reader's own sans-serif
    if not chars:
        return ""
    font_path = Path(matplotlib_fontja.__file__).parent / "fonts" / "ipaexg.ttf"
    options = subset.Options()
    options.flavor = "woff"  # zlib-compressed; woff2 would need brotli
    options.layout_features = ["*"]
    font = subset.load_font(str(font_path), options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(ord(c) for c in chars))
    subsetter.subset(font)
    buf = _io.BytesIO()
    subset.save_font(font, buf, options)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<style type="text/css">@font-face {{ font-family: "KoeJP"; '
            f'src: url(data:font/woff;base64,{data}) format("woff"); }}</style>')


def html_page(executed_notebook: str | Path, lang: str = "ja") -> str:
    """Executed report notebook → one self-contained HTML page: no code, no external requests."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed_notebook), as_version=4)
    # Warnings and logs are for the researcher's copy, not the stakeholder's page.
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    exporter = HTMLExporter(template_name="koe_report", extra_template_basedirs=[str(TEMPLATE_DIR)])
    exporter.language_code = lang  # <html lang=…>: screen readers and hyphenation follow it
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    nb.metadata["title"] = nb.metadata.get("title") or "koe report"
    body, _ = exporter.from_notebook_node(nb, resources={"language_code": lang})
    return body.replace("</head>", embedded_font_css(body) + "\n</head>", 1)


# ------------------------------------------------------------------ the stage contract

@dataclass
class ReportResult:
    """The stage's output (``out_html``), written by ``pipelines.io.write_result``."""

    html: str


def run(params: ReportParams, root: str | Path = ".", notebook: str | Path | None = None) -> ReportResult:
    """The stakeholder page from the executed report notebook (default: the stage's executed copy under ``root``)."""
    from pipelines.stages import STAGES

    return ReportResult(html_page(notebook or Path(root) / STAGES["report"].executed, params.lang))
