"""Report fragments on small hand-made tables: findings, escaping, formats per language, topic impact."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipelines import report
from pipelines.kpis import compare_nps

EVIL = '<script>window.__koe=1</script><img src=x onerror="alert(1)">'


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
    rng = np.random.default_rng(0)
    n = 400
    topic = rng.integers(0, 3, n)
    nps = np.where(topic == 2, rng.integers(0, 5, n), rng.integers(5, 11, n))  # topic 2 drags the score down
    assignments = pl.DataFrame({"response_id": [f"r{i}" for i in range(n)], "source": "survey", "nps": nps, "topic": topic})
    topics = pl.DataFrame({"topic": [0, 1, 2], "label": ["使いやすさ", "サポート", EVIL], "words": [["a"], ["b"], ["c"]],
                           "examples": [["良い"], ["速い"], [EVIL]], "size": [140, 130, 130], "share": [0.35, 0.33, 0.32],
                           "n_recent": [20, 20, 60], "n_before": [120, 110, 70], "share_recent": [0.2, 0.2, 0.6],
                           "share_before": [0.4, 0.37, 0.23], "emerging": [False, False, True]})
    clean = {"rows_in": 10, "rows_kept": 8, "rows_quarantined": 2, "non_answers": 1, "empty_texts": 0, "verbatims_ok": 7,
             "quarantined_by_reason": {"duplicate": 2}, "redactions": {"EMAIL": 1}, "files": [{"file": "a.csv", "encoding": "cp932"}]}

    # per-topic net sentiment as the sentiment stage writes it; topic 1 has too few verbatims to tell
    sentiment = pl.DataFrame({"source": "survey", "level": "topic", "value": ["0", "1", "2"], "net_sentiment": [35.0, 5.0, -80.0],
                              "ci_low": [20.0, -30.0, -90.0], "ci_high": [50.0, 40.0, -65.0], "enough": [True, False, True]})

    def make(lang: str) -> report.Context:
        return report.Context(params=report.ReportParams(lang=lang), clean_metrics=clean, topics=topics,
                              topics_over_time=pl.DataFrame(), topics_metrics={}, assignments=assignments, tests=tests,
                              sentiment_net=sentiment, monthly=pl.DataFrame(), alerts=[{"kpi": "nps", "segment_col": "all", "segment_value": "all", "diff": -22.1}])
    return make


def test_summary_leads_with_the_latest_window_and_states_uncertainty(ctx_factory):
    ja, en = report.executive_findings(ctx_factory("ja")), report.executive_findings(ctx_factory("en"))
    assert 3 <= len(ja) <= 5 and len(ja) == len(en)
    assert "2026年9月〜10月" in ja[0] and "悪化しました" in ja[0] and "95%信頼区間 -26.1〜-18.1" in ja[0]
    assert "Sep–Oct 2026" in en[0] and "significant after correcting for 5 comparisons" in en[0]
    assert any("rose from -20.0 in Nov 2025–Apr 2026" in s for s in en)
    assert any("too few responses to tell" in s for s in en)  # the control that cannot be judged is said so
    assert any("Emerging theme" in s for s in en)


def test_every_data_string_is_escaped(ctx_factory):
    for lang in ("ja", "en"):
        ctx = ctx_factory(lang)
        page = "".join([report.summary_html(ctx), report.tiles_html(ctx), report.shift_table_html(ctx),
                        report.topics_html(ctx), report.quality_html(ctx)])
        assert "<script" not in page and "<img" not in page and "onerror=\"" not in page
        assert "&lt;script&gt;" in page


def test_matrix_says_too_few_responses(ctx_factory):
    html = report.shift_matrix_html(ctx_factory("ja"), "programme")
    assert "回答数が少なく判断できない" in html and "?" in html
    assert report.shift_matrix_html(ctx_factory("en"), "programme").count("<tr>") == 4  # header + 3 segments


def test_topic_impact_is_the_wald_nps_difference(ctx_factory):
    ctx = ctx_factory("en")
    impact = report.topic_impact(ctx.assignments).sort("topic")
    a = ctx.assignments
    expected = compare_nps(a.filter(pl.col("topic") != 2)["nps"].to_numpy(), a.filter(pl.col("topic") == 2)["nps"].to_numpy())
    row = impact.filter(pl.col("topic") == 2).row(0, named=True)
    assert row["nps_impact"] == pytest.approx(expected.diff) and row["impact_low"] == pytest.approx(expected.ci_low)
    assert row["nps_impact"] < -50 and row["impact_significant"]


@pytest.mark.parametrize(("label", "ja", "en"), [
    ("2026-05〜2026-10", "2026年5月〜10月", "May–Oct 2026"),
    ("2025-11〜2026-04", "2025年11月〜2026年4月", "Nov 2025–Apr 2026"),
    ("2026-09", "2026年9月", "Sep 2026"),
    ("whatever", "whatever", "whatever"),
])
def test_period_formats(label, ja, en):
    assert report.period(label, "ja") == ja and report.period(label, "en") == en


def test_font_subset_covers_the_page_text():
    css = report.embedded_font_css("<h2>エグゼクティブサマリー</h2>")
    assert css.startswith("<style") and "data:font/woff;base64," in css and len(css) < 60_000
    assert report.embedded_font_css("ascii only") == ""


def test_topics_show_net_sentiment_or_say_too_few(ctx_factory):
    html_ja = report.topics_html(ctx_factory("ja"))
    assert "ネット感情" in html_ja and "<b>-80</b><br><small>-90…-65</small>" in html_ja and "<b>+35</b>" in html_ja
    assert "回答数が少なく判断できない" in html_ja  # topic 1: below min_n
    assert "Net sentiment" in report.topics_html(ctx_factory("en"))
