"""The report on stage outputs: findings, escaping, formats per language, and robustness on exports other than the
demo. Stage outputs are written into tmp_path by the real kpis stage (``kpis.run`` / ``kpis.write``) from small
hand-made clean tables; topic, sentiment and clean-metrics outputs are built with the schemas those stages write."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipelines import kpis, report, report_charts, report_data, report_findings, report_format, report_page
from pipelines.params import load as load_params
from pipelines.tables import FEEDBACK_SCHEMA, TICKETS_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
EVIL = '<script>window.__koe=1</script><img src=x onerror="alert(1)">'
UTC = timezone.utc
PROJECT = load_params(ROOT / "params.yaml")


# ------------------------------------------------------------------ small stage outputs

def _feedback(rng: np.random.Generator, start: date, end: date, n: int, *, nps: bool, personas: list[str],
              lift_after: date | None) -> pl.DataFrame:
    """One question row per response; NPS rises after ``lift_after`` for the first persona."""
    rows, span = [], (end - start).days
    for i in range(n):
        d = start + timedelta(days=i * span // n)
        persona = personas[i % len(personas)]
        lifted = lift_after is not None and d >= lift_after and persona == personas[0]
        score = int(rng.choice(11, p=[.02] * 5 + [.05, .05, .1, .1, .25, .35] if lifted else [.07] * 7 + [.13, .13, .13, .12]))
        rows.append({
            "verbatim_id": f"survey:r{i:05d}:comment", "source": "survey", "file": "raw/s.csv", "row": i + 1,
            "response_id": f"r{i:05d}", "customer_id": f"c{i % 400}", "ts_utc": datetime(d.year, d.month, d.day, 3, tzinfo=UTC),
            "date_local": d, "period": f"{d:%Y-%m}", "nps": score if nps else None, "csat": int(rng.integers(1, 6)),
            "persona": persona, "channel": ("web", "app")[i % 2], "product": "p1", "journey": "使用",
            "question_id": "comment", "text": "ok", "lang": "ja", "text_status": "ok", "redactions": "", "ces": None,
        })
    return pl.DataFrame(rows, schema=FEEDBACK_SCHEMA)


def _tickets(start: date, end: date, n: int) -> pl.DataFrame:
    rows, span = [], (end - start).days
    for i in range(n):
        d = start + timedelta(days=i * span // n)
        created = datetime(d.year, d.month, d.day, 1, tzinfo=UTC)
        first_h = float(1 + i % 7) * (0.5 if d >= date(2026, 5, 1) else 1.0)
        rows.append({
            "ticket_id": f"t{i:05d}", "customer_id": f"c{i % 400}", "file": "raw/t.jsonl", "row": i + 1,
            "channel": ("email", "chat")[i % 2], "product": "p1", "status": "solved", "created_utc": created,
            "first_response_utc": created + timedelta(hours=first_h), "resolved_utc": created + timedelta(hours=10 + i % 30),
            "period": f"{d:%Y-%m}", "first_response_h": first_h, "resolution_h": float(10 + i % 30), "is_open": False,
            "text": "", "lang": "ja",
        })
    return pl.DataFrame(rows, schema=TICKETS_SCHEMA)


def _topics(feedback: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Three topics; topic 2 (hostile label) is raised by detractors, so it drags NPS down."""
    scores = feedback["nps"].fill_null(5).to_numpy()
    topic = np.where(scores <= 3, 2, np.arange(feedback.height) % 2)
    assignments = feedback.select("verbatim_id", "response_id", "source", "period", "nps").with_columns(
        pl.Series("topic", topic, dtype=pl.Int64))
    sizes = [int((topic == t).sum()) for t in range(3)]
    topics = pl.DataFrame({
        "topic": [-1, 0, 1, 2], "label": ["outliers", "使いやすさ", "サポート", EVIL],
        "words": [[], ["使う", "簡単"], ["サポート"], ["エラー"]],
        "examples": [[], ["良い"], ["速い"], [EVIL, "ログインできない"]],
        "size": [0, *sizes], "share": [0.0, *(s / sum(sizes) for s in sizes)],
        "n_recent": [0, 20, 20, 60], "n_before": [0, 120, 110, 70], "share_recent": [0.0, 0.2, 0.2, 0.6],
        "share_before": [0.0, 0.4, 0.37, 0.23], "emerging": [False, False, False, True],
    })
    return assignments, topics




def build(root: Path, *, lang: str = "ja", nps: bool = True, tickets: bool = True, start: date = date(2026, 1, 1),
          end: date = date(2026, 9, 1), programme_date: date = date(2026, 5, 1), personas: list[str] | None = None,
          n: int = 1600, drop_programme: bool = False, old_drivers: bool = False, max_segment_values: int = 12
          ) -> report_data.Context:
    """Write every input of the report under ``root`` (real kpis stage on small tables) and load it."""
    rng = np.random.default_rng(7)
    personas = personas or ["若年", "シニア", EVIL]
    fb = _feedback(rng, start, end, n, nps=nps, personas=personas, lift_after=programme_date)
    tix = _tickets(start, end, 500) if tickets else pl.DataFrame(schema=TICKETS_SCHEMA)
    assignments, topics = _topics(fb)
    kp = PROJECT.kpis.model_copy(update={"programme_date": programme_date, "segments": ["persona", "channel"],
                                         "its_min_periods": 3})
    (root / "data/clean").mkdir(parents=True)
    (root / "data/topics").mkdir(parents=True)
    (root / "data/sentiment").mkdir(parents=True)
    (root / "reports/metrics").mkdir(parents=True)
    fb.write_parquet(root / kp.in_feedback)
    tix.write_parquet(root / kp.in_tickets)
    assignments.write_parquet(root / kp.in_assignments)
    topics.write_parquet(root / kp.in_topics)
    result = kpis.run(kp, root)
    if drop_programme:  # what a run without a programme date writes: no programme rows at all
        result.tests = result.tests.filter(~pl.col("comparison").is_in(["programme", "its_level", "its_slope"]))
    if old_drivers:  # a drivers file written before the BH columns existed
        result.drivers = result.drivers.drop("nps_p_adjusted", "nps_significant")
    kpis.write(result, kp, root)
    over_time = assignments.group_by("period", "topic").len().with_columns(
        (pl.col("len") / pl.col("len").sum().over("period")).alias("share"))
    over_time.write_parquet(root / "data/topics/over_time.parquet")
    pl.DataFrame({"source": "survey", "level": "topic", "value": ["0", "1", "2"], "net_sentiment": [35.0, 5.0, -80.0],
                  "ci_low": [20.0, -30.0, -90.0], "ci_high": [50.0, 40.0, -65.0], "enough": [True, False, True]}
                 ).write_parquet(root / "data/sentiment/net.parquet")
    clean = {"rows_in": 1610, "rows_kept": n, "rows_quarantined": 10, "non_answers": 3, "empty_texts": 0, "verbatims_ok": n,
             "tickets": tix.height, "quarantined_by_reason": {"duplicate": 10}, "redactions": {"EMAIL": 2},
             "files": [{"file": "raw/s.csv", "encoding": "cp932"}], "notes": ["column ces not mapped: CES not read"]}
    (root / "reports/metrics/clean.json").write_text(json.dumps(clean), encoding="utf-8")
    (root / "reports/metrics/topics.json").write_text(json.dumps({"stale_curation_ids": [9]}), encoding="utf-8")
    project = PROJECT.model_copy(update={"kpis": kp})
    params = report.ReportParams(lang=lang, max_segment_values=max_segment_values)
    return report_data.load(params, root, project)


def page(ctx: report_data.Context) -> str:
    info = {"data window": "2026-01 – 2026-08", "programme date": None, "generated": "2026-09-01 00:00 UTC"}
    return "".join([report.header_html(ctx, info), report.summary_html(ctx), report.tiles_html(ctx),
                    report.shift_table_html(ctx), report.topics_html(ctx), report.quality_html(ctx),
                    report.method_html(ctx, info)])


def findings_of(html: str) -> list[str]:
    summary = re.search(r'<section[^>]*class="koe-summary"[^>]*>.*?</section>', html, flags=re.S)
    return re.findall(r"<li>(.*?)</li>", summary.group(0), flags=re.S) if summary else []


def assert_clean(html: str) -> None:
    """No placeholder junk, nothing executable, nothing fetched."""
    for junk in (r"\bNone\b", r"\bnan\b", r"\bNaN\b", r"\(empty\)", r"\binf\b"):
        assert not re.search(junk, html), f"{junk} in the page"
    assert "<script" not in html and "<img" not in html and 'onerror="' not in html
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", html) and "cdn" not in html.lower()
    for sentence in findings_of(html):
        assert re.search(r"\d", sentence) and not re.fullmatch(r"[\s–-]*", sentence)
    assert not re.search(r"<table[^>]*>\s*(<thead>.*?</thead>)?\s*<tbody>\s*</tbody>", html, flags=re.S), "empty table"
    findings = findings_of(html)
    assert len(findings) == len(set(findings))


# ------------------------------------------------------------------ robustness on exports unlike the demo

def test_demo_like_full_case(tmp_path):
    ctx = build(tmp_path)
    html = page(ctx)
    assert_clean(html)
    assert "&lt;script&gt;" in html  # the hostile topic label, example and persona value are shown, escaped
    assert 3 <= len(findings_of(html)) <= 5
    assert "ペルソナ = 若年" in html and "persona = " not in html  # the export's own column name
    assert "NPS" in html and "初回応答時間（時間）" in html and "施策前後の変化" in html
    assert "補正後の有意性は不明" not in html
    # topic effects are the drivers table's numbers, not recomputed
    d = ctx.drivers.filter(pl.col("topic") == 2).row(0, named=True)
    assert f"<b>{report_format.number(d['nps_diff'], 'ja', 1, 'signed')}</b>" in html and d["nps_significant"]
    # data quality lists what the stages skipped, and why
    assert "column ces not mapped" in html and "トピックID 9" in html


def test_no_nps_in_english(tmp_path):
    ctx = build(tmp_path, lang="en", nps=False)
    html = page(ctx)
    assert_clean(html)
    nps_rows = ctx.tests.filter(pl.col("kpi") == "nps")  # the kpis stage writes them, without estimates
    assert nps_rows["est_b"].is_null().all() and nps_rows["diff"].is_null().all()
    assert ">NPS<" not in html and "NPS (" not in html and "NPS impact" not in html  # no NPS tiles, sentences, column
    assert "CSAT mean" in html and findings_of(html)
    assert report_charts.plot_nps_trend(ctx) is None and report_findings.nps_takeaway(ctx) == ""


def test_no_tickets(tmp_path):
    html = page(build(tmp_path, tickets=False))
    assert_clean(html)
    quality = html.index("データ品質")  # the data-quality section says what was skipped; nothing else names them
    for name in ("問い合わせ件数", "初回応答時間", "解決時間"):
        assert name not in html[:quality]
        assert name in html[quality:]


def test_programme_date_outside_the_data(tmp_path):
    ctx = build(tmp_path, programme_date=date(2027, 1, 1))
    assert (ctx.tests.filter(pl.col("comparison") == "programme")["label_b"] == "(empty)").all()
    html = page(ctx)
    assert_clean(html)
    assert "施策前後の変化" not in html and "施策前後" not in "".join(findings_of(html))
    assert "データの期間外" in html  # said in the data-quality section
    assert "直近期間の変化" in html and findings_of(html)  # the latest window still reported


def test_no_programme_rows(tmp_path):
    html = page(build(tmp_path, lang="en", drop_programme=True))
    assert_clean(html)
    assert "Before vs after the programme" not in html and "Latest window vs the previous one" in html
    assert '<div class="koe-tile"' in html  # tiles fall back to the latest window


def test_segment_with_150_values_shows_the_largest(tmp_path):
    personas = [f"p{i:03d}" for i in range(150)]
    ctx = build(tmp_path, personas=personas, n=3000, max_segment_values=12)
    html = page(ctx)
    assert_clean(html)
    matrix = re.search(r"<h3>施策前後の変化</h3>.*?</section>", html, flags=re.S).group(0)
    assert len(re.findall(r"<th>ペルソナ = ", matrix)) == 12
    assert "ペルソナはほかに138区分あります" in matrix and "data/kpis/tests.parquet" in matrix
    assert len(html) < 300_000


def test_window_and_programme_on_the_same_months_are_said_once(tmp_path):
    # data from March, window 2 months, programme on 1 May: both compare Mar–Apr with May–Jun
    ctx = build(tmp_path, start=date(2026, 3, 1), end=date(2026, 7, 1), programme_date=date(2026, 5, 1))
    window = ctx.tests.filter((pl.col("comparison") == "window") & (pl.col("kpi") == "nps") & (pl.col("segment_col") == "all"))
    programme = ctx.tests.filter((pl.col("comparison") == "programme") & (pl.col("kpi") == "nps") & (pl.col("segment_col") == "all"))
    assert window["label_a"][0] == programme["label_a"][0] and window["est_b"][0] == programme["est_b"][0]
    html = page(ctx)
    assert_clean(html)
    findings = findings_of(html)
    assert sum("全体のNPSは" in f for f in findings) == 1
    assert html.count("<h3>直近期間の変化") == 1 and "<h3>施策前後の変化" not in html
    assert "同じ期間のため" in html
    detail = re.search(r"有意な変化の詳細.*?</table>", html, flags=re.S)
    if detail:
        rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td>", detail.group(0))
        assert len(rows) == len(set(rows))  # one row per shift, its comparisons joined


def test_old_drivers_file_says_significance_is_unknown(tmp_path):
    ctx = build(tmp_path, old_drivers=True)
    assert "nps_significant" not in ctx.drivers.columns
    html = page(ctx)
    assert_clean(html)
    assert "補正後の有意性は不明" in html and "nps_p_adjusted" in html
    assert " ▼" not in re.search(r"<h2>トピック.*?</section>", html, flags=re.S).group(0)  # no verdict without BH


def test_rendered_file_is_self_contained(tmp_path):
    import nbformat

    ctx = build(tmp_path, lang="en")
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": page(ctx)})]
    nb.cells = [cell]
    src = tmp_path / "executed.ipynb"
    nbformat.write(nb, str(src))
    out = report.run(report.ReportParams(lang="en"), tmp_path, notebook=src).html
    assert "Content-Security-Policy" in out and "default-src 'none'" in out
    assert '<html lang="en"' in out
    assert not re.search(r"<script[^>]*\bsrc=", out) and not re.search(r"(src|href)=[\"']https?:", out)
    assert "&lt;script&gt;window.__koe" in out and "<script>window.__koe" not in out


# ------------------------------------------------------------------ words, numbers and the catalogue

def test_catalogue_has_both_languages_and_no_language_branches_in_code():
    strings = report_format.catalogue()
    assert all(set(v) == {"ja", "en"} for v in strings.values())
    source = "".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "pipelines").glob("report*.py")))
    assert 'lang == "ja"' not in source.replace('if lang == "ja":\n        end', "")  # period() spells dates per calendar
    assert not re.search(r"KPI_NAMES|KPI_ORDER", source)


def test_number_format_is_locale_aware_and_counts_are_integers():
    assert report_format.number(12345.678, "ja", 1) == "12,345.7" and report_format.number(12345.678, "en", 1) == "12,345.7"
    assert report_format.number(-3.25, "en", 1, "signed") == "-3.2" and report_format.number(19.3, "ja", 1, "signed") == "+19.3"
    assert report_format.number(1234.0, "en", style="count") == "1,234"
    assert report_format.number(-0.01, "ja", 1, "signed") == "±0.0" and report_format.number(-0.4, "en", 0, "signed") == "±0"
    assert report_format.number(0.345, "ja", 1, "percent") == "34.5%"
    assert report_format.number(None, "ja") is None and report_format.number(float("nan"), "en") is None


def test_a_sentence_with_a_missing_number_is_left_out():
    assert report_format.say("en", "takeaway.programme", kpi="NPS", diff=None, verdict="improved") is None


# ------------------------------------------------------------------ fragments on hand-made tables

def _test_row(comparison: str, kpi: str, col: str, value: str, diff: float, verdict: str, significant: bool,
              labels=("2025-11〜2026-04", "2026-05〜2026-10")) -> dict:
    return {"comparison": comparison, "kpi": kpi, "segment_col": col, "segment_value": value, "label_a": labels[0],
            "label_b": labels[1], "est_a": -20.0, "est_b": -20.0 + diff, "diff": diff, "ci_low": diff - 4, "ci_high": diff + 4,
            "p_value": 1e-6 if significant else 0.4, "p_adjusted": 1e-5 if significant else 0.6, "significant": significant,
            "n_a": 900, "n_b": 950, "verdict": verdict}


@pytest.fixture
def ctx_factory():
    tests = pl.DataFrame([
        _test_row("programme", "nps", "all", "all", 19.3, "improved", True),
        _test_row("programme", "nps", "channel", "app", 30.3, "improved", True),
        _test_row("programme", "nps", "channel", EVIL, -0.1, "too few responses to tell", False),
        _test_row("programme", "first_response_h", "all", "all", -16.9, "improved", True),
        _test_row("window", "nps", "all", "all", -22.1, "worsened", True, ("2026-07〜2026-08", "2026-09〜2026-10")),
    ])
    topics = pl.DataFrame({"topic": [0, 1, 2], "label": ["使いやすさ", "サポート", EVIL], "words": [["a"], ["b"], ["c"]],
                           "examples": [["良い"], ["速い"], [EVIL]], "size": [140, 130, 130], "share": [0.35, 0.33, 0.32],
                           "n_recent": [20, 20, 60], "n_before": [120, 110, 70], "share_recent": [0.2, 0.2, 0.6],
                           "share_before": [0.4, 0.37, 0.23], "emerging": [False, False, True]})
    drivers = pl.DataFrame({"topic": [0, 1, 2], "nps_topic": [10.0, 5.0, -90.0], "nps_diff": [12.0, 3.0, -75.5],
                            "nps_ci_low": [2.0, -8.0, -82.0], "nps_ci_high": [22.0, 14.0, -69.0],
                            "nps_p": [0.02, 0.6, 1e-9], "nps_p_adjusted": [0.03, 0.6, 3e-9], "nps_significant": [True, False, True]})
    clean = {"rows_in": 10, "rows_kept": 8, "rows_quarantined": 2, "non_answers": 1, "empty_texts": 0, "verbatims_ok": 7,
             "quarantined_by_reason": {"duplicate": 2}, "redactions": {"EMAIL": 1}, "files": [{"file": "a.csv", "encoding": "cp932"}]}
    # per-topic net sentiment as the sentiment stage writes it; topic 1 has too few verbatims to tell
    sentiment = pl.DataFrame({"source": "survey", "level": "topic", "value": ["0", "1", "2"], "net_sentiment": [35.0, 5.0, -80.0],
                              "ci_low": [20.0, -30.0, -90.0], "ci_high": [50.0, 40.0, -65.0], "enough": [True, False, True]})

    def make(lang: str) -> report_data.Context:
        return report_data.Context(params=report.ReportParams(lang=lang), clean_metrics=clean, topics=topics, tests=tests,
                              monthly=pl.DataFrame(), drivers=drivers, sentiment_net=sentiment,
                              alerts=[{"kpi": "nps", "segment_col": "all", "segment_value": "all", "diff": -22.1}])
    return make


def test_summary_leads_with_the_latest_window_and_states_uncertainty(ctx_factory):
    ja, en = report_findings.executive_findings(ctx_factory("ja")), report_findings.executive_findings(ctx_factory("en"))
    assert 3 <= len(ja) <= 5 and len(ja) == len(en)
    assert "2026年9月〜10月" in ja[0] and "悪化しました" in ja[0] and "95%信頼区間 -26.1〜-18.1" in ja[0]
    assert "Sep–Oct 2026" in en[0] and "significant after correcting for 5 comparisons" in en[0]
    assert any("rose from -20.0 in Nov 2025–Apr 2026" in s for s in en)
    assert any("too few responses to tell" in s for s in en)  # the control that cannot be judged is said so
    assert any("Emerging theme" in s and "-75.5 points" in s for s in en)  # the drivers table's effect


def test_every_data_string_is_escaped(ctx_factory):
    for lang in ("ja", "en"):
        ctx = ctx_factory(lang)
        html = "".join([report.summary_html(ctx), report.tiles_html(ctx), report.shift_table_html(ctx),
                        report.topics_html(ctx), report.quality_html(ctx)])
        assert "<script" not in html and "<img" not in html and "onerror=\"" not in html
        assert "&lt;script&gt;" in html


def test_matrix_says_too_few_responses(ctx_factory):
    html = report.shift_matrix_html(ctx_factory("ja"), "programme")
    assert "回答数が少なく判断できない" in html and "?" in html
    assert report.shift_matrix_html(ctx_factory("en"), "programme").count("<tr>") == 4  # header + 3 segments


def test_topic_effects_come_from_the_drivers_table(ctx_factory):
    html = report.topics_html(ctx_factory("en"))
    assert "<b>-75.5</b> ▼" in html and "-82.0…-69.0" in html  # as the kpis stage computed them
    assert "<b>+3.0</b> <small>(-8.0…14.0 · not significant after correction)" in html
    assert "unadjusted" in html  # the interval shown is not the BH one, and the header says so


@pytest.mark.parametrize(("label", "ja", "en"), [
    ("2026-05〜2026-10", "2026年5月〜10月", "May–Oct 2026"),
    ("2025-11〜2026-04", "2025年11月〜2026年4月", "Nov 2025–Apr 2026"),
    ("2026-09", "2026年9月", "Sep 2026"),
    ("whatever", "whatever", "whatever"),
])
def test_period_formats(label, ja, en):
    assert report_format.period(label, "ja") == ja and report_format.period(label, "en") == en


def test_font_subset_covers_the_page_text():
    css = report_page.embedded_font_css("<h2>エグゼクティブサマリー</h2>")
    assert css.startswith("<style") and "data:font/woff;base64," in css and len(css) < 60_000
    assert report_page.embedded_font_css("ascii only") == ""


def test_topics_show_net_sentiment_or_say_too_few(ctx_factory):
    html_ja = report.topics_html(ctx_factory("ja"))
    assert "ネット感情" in html_ja and "<b>-80</b> <small>(-90…-65)</small>" in html_ja and "<b>+35</b>" in html_ja
    assert "回答数が少なく判断できない" in html_ja  # topic 1: below min_n
    assert "Net sentiment" in report.topics_html(ctx_factory("en"))


def test_segment_names_come_from_the_mapping_including_a_source_own_segments():
    from pipelines.schema import CleanParams

    clean = CleanParams.model_validate({"surveys": [{
        "name": "s", "path": "data/raw/x.csv", "columns": {"response_id": "回答ID", "timestamp": "回答日", "channel": "経路"},
        "text_columns": {"comment": "ご意見"}, "segments": {"age_band": "年代"}}]})
    assert report_data.segment_names(clean) == {"channel": "経路", "age_band": "年代"}


def test_english_report_names_topics_and_segments_in_english(tmp_path):
    ctx = build(tmp_path)
    ctx.params = ctx.params.model_copy(update={"lang": "en", "value_labels_en": {"journey": {"使用": "use"}}})
    ctx.topics = ctx.topics.with_columns(
        pl.Series("label_en", [None, "ease of use", None, None], dtype=pl.String),
        pl.Series("words_en", [[], ["easy"], ["support", "staff"], []], dtype=pl.List(pl.String)))
    rows = {r["topic"]: r for r in ctx.topics.iter_rows(named=True)}
    assert report_data.topic_label(ctx, rows[0]) == "ease of use"  # labels_en / label_en first
    assert report_data.topic_label(ctx, rows[1]) == "support, staff"  # else the English words
    assert report_data.topic_label(ctx, rows[2]) == EVIL  # else the label as it is
    assert report_data._segment(ctx, "journey", "使用") == "Journey = use"
    assert report_data._segment(ctx, "persona", "共働き") == "Persona = 共働き"  # unmapped: shown as exported
    html = report.topics_html(ctx)
    assert "ease of use" in html and "使いやすさ" not in html and "support, staff" in html
    ja = dataclasses.replace(ctx, params=ctx.params.model_copy(update={"lang": "ja"}))
    assert "使いやすさ" in report.topics_html(ja) and report_data._segment(ja, "journey", "使用").endswith("= 使用")


def test_sections_carry_their_anchor_for_the_contents_bar(tmp_path):
    ctx = build(tmp_path)
    sections = [report.summary_html(ctx), report.tiles_html(ctx), report.shift_table_html(ctx), report.topics_html(ctx),
                report.quality_html(ctx)]
    assert all(isinstance(s, report_page.Section) for s in sections)
    for s in sections:
        assert f'<section id="{s.anchor}"' in s and s.title
    assert len({s.anchor for s in sections}) == len(sections)
    topics = sections[3]
    assert '<polyline points="' in topics and "<article" in topics and '<li class="koe-quote">' in topics


def test_quarantine_reasons_are_worded_in_the_report_language(ctx_factory):
    """The data-quality table says why rows were set aside in words, not the clean stage's codes."""
    ja, en = ctx_factory("ja"), ctx_factory("en")
    assert report.quarantine_reason(ja, "nps_out_of_range") == "NPSが尺度の範囲外"
    assert report.quarantine_reason(en, "csat_not_a_number") == "CSAT is not a number"
    assert report.quarantine_reason(ja, "bad_json") == "JSONとして読めない行"
    assert report.quarantine_reason(en, "duplicate") == "duplicate responses"
    assert report.quarantine_reason(en, "some_new_code") == "some_new_code"  # unknown codes are shown, not dropped
    html = report.quality_html(ja)
    assert "隔離: 重複した回答" in html and "隔離: duplicate" not in html
