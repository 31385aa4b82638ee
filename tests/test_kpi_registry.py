"""The KPI registry drives every KPI: each record has a sample path, new scales and a categorical rating work by
params (checked against values computed here by hand), and every source is optional."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from pipelines import kpi_registry, kpis, samples
from pipelines.kpi_registry import REGISTRY, Kpi
from pipelines.schema import KpisParams, RatingParams
from pipelines.tables import FEEDBACK_SCHEMA, TICKETS_SCHEMA

UTC = timezone.utc
AS_OF = date(2026, 7, 1)  # window: 2026-03〜04 vs 2026-05〜06
SCALES = dict(csat={"scale_min": 1, "scale_max": 7, "top_box_min": 6},
              rating=RatingParams(column="rating", good_values=["positive", "very positive"]))
PARAMS = KpisParams(as_of=AS_OF, programme_date=date(2026, 5, 1), **SCALES)

# ---------------------------------------------------------------------------------------------
# Every record has a sample path
# ---------------------------------------------------------------------------------------------

# A few values of every column a record reads (a new KPI reading a new column adds its line here).
UNIT_VALUES: dict[str, list] = {
    "nps": [0, 6, 7, 8, 9, 10, 10, 3],
    "csat": [1, 2, 3, 4, 5, 6, 7, 7],
    "ces": [1, 2, 3, 4, 5, 6, 7, 7],
    "rating": ["positive", "negative", "neutral", "very positive", "positive", "negative", "positive", "neutral"],
    "ticket_id": [f"t{i}" for i in range(8)],
    "first_response_h": [1.0, 2.0, 2.5, 4.0, 8.0, 3.0, 1.5, 6.0],
    "resolution_h": [10.0, 20.0, 30.0, 45.0, 50.0, 12.0, 80.0, 500.0],
    "is_open": [False, False, False, True, False, False, False, True],
    "churned": [True, False, None, False, True, False, False, None],
    "repeated": [True, False, True, False, True, True, False, False],
}


@pytest.mark.parametrize("kpi", REGISTRY, ids=lambda k: k.key)
def test_every_record_has_a_sample_path(kpi: Kpi):
    assert kpi.family in samples.ESTIMATORS and kpi.family in samples.COMPARERS
    assert (kpi.indicator is not None) == (kpi.family == "proportion")
    assert (kpi.censored_by is not None or kpi.censored_at is not None) == (kpi.family == "survival")
    assert kpi.name("ja") and kpi.name("en") and kpi.key in KpisParams().meaningful_change
    if kpi.scale:
        assert kpi.scale in KpisParams.model_fields
    params = PARAMS.model_copy(update={"min_n": 1})
    col = params.column(kpi.key)
    table = pl.DataFrame({c: UNIT_VALUES[c] for c in {col, kpi.censored_by, kpi.censored_at} - {None}})
    s = samples.sample(kpi, table, params, exposure=2.0)
    expected_n = 8 if kpi.family == "rate" else sum(v is not None for v in UNIT_VALUES[col])
    assert s.n == expected_n
    value, low, high = samples.estimate(kpi, s, params.alpha)
    assert value is not None
    res = samples.compare_cell(kpi, s, s, params)  # the same sample on both sides: no change
    assert res.diff == pytest.approx(0.0)
    assert (res.method, res.effect_size_kind) == (kpi.method, kpi.effect_kind)


def test_registry_names_are_unique_and_headline_is_ordered():
    assert len(kpi_registry.KPIS) == len(set(kpi_registry.KPIS))
    assert list(kpi_registry.HEADLINE) == sorted(kpi_registry.HEADLINE, key=kpi_registry.sort_key)
    from pipelines import schedule

    assert schedule.HEADLINE_KPIS == kpi_registry.HEADLINE


# ---------------------------------------------------------------------------------------------
# CSAT on a 1–7 scale and the share of good ratings, by hand
# ---------------------------------------------------------------------------------------------


def _feedback(rows: list[dict], rating: bool = True) -> pl.DataFrame:
    """Two question rows per response (both carry the scores, as the clean stage writes them)."""
    out = []
    for r in rows:
        for q in ("q1", "q2"):
            d: date = r["date"]
            out.append({
                "verbatim_id": f"survey:{r['id']}:{q}", "source": "survey", "file": "raw/s.csv", "row": len(out) + 1,
                "response_id": r["id"], "customer_id": r.get("customer", f"c{r['id']}"),
                "ts_utc": datetime(d.year, d.month, d.day, 3, tzinfo=UTC), "date_local": d, "period": f"{d:%Y-%m}",
                "nps": r.get("nps"), "csat": r.get("csat"), "persona": "p", "channel": "web", "product": "p1",
                "journey": "使用", "question_id": q, "text": "ok", "lang": "ja", "text_status": "ok", "redactions": "",
                "ces": None, "rating": r.get("rating"),
            })
    frame = pl.DataFrame(out, schema={**FEEDBACK_SCHEMA, "rating": pl.String()})
    return frame if rating else frame.drop("rating")


RATINGS = ["positive", "neutral", "negative", "very positive"]


@pytest.fixture(scope="module")
def scaled() -> pl.DataFrame:
    """120 responses per month, 2026-03〜06: CSAT 1–7 rising after May, ratings turning positive."""
    rng = np.random.default_rng(12)
    rows = []
    for month in (3, 4, 5, 6):
        after = month >= 5
        csat = rng.choice(np.arange(1, 8), 120, p=[.05, .1, .15, .2, .2, .15, .15] if not after
                          else [.02, .03, .1, .15, .25, .25, .2])
        rating = rng.choice(RATINGS, 120, p=[.3, .3, .3, .1] if not after else [.45, .25, .1, .2])
        for i in range(120):
            rows.append({"id": f"r{month}{i:03d}", "date": date(2026, month, 1 + i % 28), "nps": int(rng.integers(0, 11)),
                         "csat": int(csat[i]), "rating": str(rating[i])})
    return _feedback(rows)


def _wilson(k: int, n: int, z: float = stats.norm.ppf(0.975)) -> tuple[float, float]:
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _by_response(feedback: pl.DataFrame) -> pl.DataFrame:
    return feedback.unique("response_id", keep="first").sort("response_id")


def test_csat_1_to_7_and_rating_share_monthly_by_hand(scaled):
    monthly = kpis.monthly_kpis(scaled, None, PARAMS).filter(pl.col("segment_col") == "all")
    resp = _by_response(scaled)
    for period in ("2026-03", "2026-06"):
        month = resp.filter(pl.col("period") == period)
        csat = month["csat"].to_numpy().astype(float)
        good = month["rating"].is_in(["positive", "very positive"]).to_numpy()

        def row(kpi: str, period: str = period) -> dict:
            return monthly.filter((pl.col("kpi") == kpi) & (pl.col("period") == period)).row(0, named=True)

        mean = row("csat_mean")
        half = stats.t.ppf(0.975, csat.size - 1) * csat.std(ddof=1) / math.sqrt(csat.size)
        assert (mean["value"], mean["ci_low"], mean["ci_high"]) == pytest.approx((csat.mean(), csat.mean() - half, csat.mean() + half))
        top = row("csat_top2")  # top box of 1–7 at 6: answers 6 and 7
        k = int((csat >= 6).sum())
        assert top["value"] == pytest.approx(100 * k / csat.size)
        assert (top["ci_low"], top["ci_high"]) == pytest.approx(tuple(100 * x for x in _wilson(k, csat.size)))
        share = row("rating_share")
        assert share["n"] == 120 and share["value"] == pytest.approx(100 * good.mean())
        assert (share["ci_low"], share["ci_high"]) == pytest.approx(tuple(100 * x for x in _wilson(int(good.sum()), 120)))


def test_csat_1_to_7_and_rating_share_shift_tests_by_hand(scaled):
    tests = kpis.shift_tests(scaled, None, PARAMS)
    resp = _by_response(scaled)
    before, after = (resp.filter(pl.col("date_local") < date(2026, 5, 1)), resp.filter(pl.col("date_local") >= date(2026, 5, 1)))

    def row(kpi: str) -> dict:
        hit = tests.filter((pl.col("comparison") == "window") & (pl.col("kpi") == kpi) & (pl.col("segment_col") == "all"))
        assert hit.height == 1
        return hit.row(0, named=True)

    a, b = before["csat"].to_numpy().astype(float), after["csat"].to_numpy().astype(float)
    mean = row("csat_mean")
    welch = stats.ttest_ind(b, a, equal_var=False)
    assert mean["diff"] == pytest.approx(b.mean() - a.mean()) and mean["p_value"] == pytest.approx(welch.pvalue)
    assert mean["verdict"] == "improved" and mean["method"] == "welch_t"

    share = row("rating_share")
    k_a = int(before["rating"].is_in(["positive", "very positive"]).sum())
    k_b = int(after["rating"].is_in(["positive", "very positive"]).sum())
    n_a, n_b = before.height, after.height
    # Score test of p_b − p_a = 0: the pooled z with the Miettinen–Nurminen N/(N−1) variance factor.
    pooled, total = (k_a + k_b) / (n_a + n_b), n_a + n_b
    z = (k_b / n_b - k_a / n_a) / math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b) * total / (total - 1))
    assert share["diff"] == pytest.approx(100 * (k_b / n_b - k_a / n_a))
    assert share["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)))
    # Newcombe's hybrid score interval from the two Wilson intervals.
    (la, ua), (lb, ub) = _wilson(k_a, n_a), _wilson(k_b, n_b)
    d = k_b / n_b - k_a / n_a
    low = d - math.sqrt((k_b / n_b - lb) ** 2 + (ua - k_a / n_a) ** 2)
    high = d + math.sqrt((ub - k_b / n_b) ** 2 + (k_a / n_a - la) ** 2)
    assert (share["ci_low"], share["ci_high"]) == pytest.approx((100 * low, 100 * high))
    assert share["verdict"] == "improved" and share["higher_is_better"]


def test_answers_outside_the_csat_scale_stop_the_stage(scaled):
    bad = scaled.with_columns(csat=pl.when(pl.col("response_id") == "r3005").then(8).otherwise(pl.col("csat")).cast(pl.Int8))
    with pytest.raises(ValueError, match=r"column 'csat': 1 CSAT answer\(s\) outside 1–7, e\.g\. 8 in response r3005 .*kpis\.csat"):
        kpis.shift_tests(bad, None, PARAMS)
    # The default 1–5 scale refuses the 1–7 answers instead of counting them.
    with pytest.raises(ValueError, match=r"outside 1–5"):
        kpis.monthly_kpis(scaled, None, KpisParams(as_of=AS_OF))


def test_csat_scale_is_validated():
    with pytest.raises(ValueError, match="top_box_min"):
        KpisParams(csat={"scale_min": 0, "scale_max": 10, "top_box_min": 11})
    assert KpisParams(csat={"scale_min": 0, "scale_max": 10, "top_box_min": 9}).csat.scale_max == 10


# ---------------------------------------------------------------------------------------------
# Every source is optional
# ---------------------------------------------------------------------------------------------


def _skipped(feedback, tickets, params) -> dict[str, str]:
    return {s["kpi"] if s["kpi"] != "all" else s["comparison"]: s["reason"] for s in kpis.skipped(feedback, tickets, params)}


def test_rating_not_configured_or_column_absent_is_skipped_not_a_crash(scaled):
    unset = PARAMS.model_copy(update={"rating": None})
    assert "kpis.rating is not set" in _skipped(scaled, None, unset)["rating_share"]
    assert "rating_share" not in set(kpis.shift_tests(scaled, None, unset)["kpi"])
    no_column = scaled.drop("rating")
    assert _skipped(no_column, None, PARAMS)["rating_share"] == "the clean feedback table has no column 'rating'"
    tests = kpis.shift_tests(no_column, None, PARAMS)
    assert "rating_share" not in set(tests["kpi"]) and "csat_mean" in set(tests["kpi"])
    assert any(n.startswith("Share of positive ratings: not computed") for n in kpis.coverage_notes(no_column, None, PARAMS))


def test_no_tickets_no_nps_no_customer_ids(scaled):
    feedback = scaled.with_columns(nps=pl.lit(None, pl.Int8), customer_id=pl.lit(None, pl.String))
    left_out = _skipped(feedback, None, PARAMS)
    for kpi in kpi_registry.by_source("tickets"):
        assert left_out[kpi].startswith("there is no tickets table")
    assert left_out["nps"] == "the clean feedback table has no answers in column 'nps'"
    assert left_out["churn_rate"].startswith("no customer ids") and "repeat_rate" in left_out
    tests = kpis.shift_tests(feedback, None, PARAMS)
    assert set(tests["kpi"]) == {"csat_mean", "csat_top2", "rating_share"}
    assert kpis.drivers(feedback, pl.DataFrame({"response_id": ["r3001"], "topic": [1]}), None, PARAMS).height == 0
    no_column = kpis.drivers(feedback.drop("nps"), pl.DataFrame({"response_id": ["r3001"], "topic": [1]}), None, PARAMS)
    assert no_column.height == 0 and no_column.schema == pl.Schema(kpis.DRIVERS_SCHEMA)


def test_programme_date_null_means_no_programme_comparison_and_no_its(scaled):
    params = PARAMS.model_copy(update={"programme_date": None, "its_min_periods": 2})
    tests = kpis.shift_tests(scaled, None, params)
    assert set(tests["comparison"]) == {"window"}
    left_out = _skipped(scaled, None, params)
    assert left_out["programme"] == left_out["its"] == "no programme date is set (kpis.programme_date is null)"
    assert kpis.alerts_document(tests, params)["programme_date"] is None
    # With a date the same data get both.
    assert {"programme", "its_level", "its_slope"} <= set(kpis.shift_tests(scaled, None, PARAMS.model_copy(update={"its_min_periods": 2}))["comparison"])


def test_run_without_tickets_or_topics_writes_every_output_and_lists_what_it_skipped(scaled, tmp_path: Path):
    params = PARAMS.model_copy(update={"rating": None})
    (tmp_path / "data/clean").mkdir(parents=True)
    scaled.write_parquet(tmp_path / params.in_feedback)
    pl.DataFrame(schema=TICKETS_SCHEMA).write_parquet(tmp_path / params.in_tickets)  # clean's output without a ticket source
    result = kpis.run(params, tmp_path)
    kpis.write(result, params, tmp_path)
    metrics = json.loads((tmp_path / params.metrics_path).read_text(encoding="utf-8"))
    skipped = {(s["kpi"], s["comparison"]) for s in metrics["skipped"]}
    assert {("ticket_volume", "all"), ("rating_share", "all"), ("ces_mean", "all"), ("all", "yoy")} <= skipped
    assert all(isinstance(s["reason"], str) and s["reason"] for s in metrics["skipped"])
    assert not set(kpi_registry.by_source("tickets")) & set(result.tests["kpi"])
    assert result.drivers.height == 0 and any(n.startswith("drivers: not computed") for n in result.notes)
    assert json.loads((tmp_path / params.out_alerts).read_text(encoding="utf-8")) == result.alerts
    assert pl.read_parquet(tmp_path / params.out_tests).equals(result.tests)
    assert json.loads((tmp_path / params.plots_path).read_text(encoding="utf-8")) == result.plots
    assert metrics["csat_mean_now"] == pytest.approx(result.tests.filter(
        (pl.col("comparison") == "window") & (pl.col("kpi") == "csat_mean") & (pl.col("segment_col") == "all"))["est_b"][0])


# ---------------------------------------------------------------------------------------------
# Drivers: the topic-vs-rest NPS difference is BH-adjusted across topics
# ---------------------------------------------------------------------------------------------


def test_drivers_nps_difference_is_bh_adjusted_across_topics():
    rows = [{"id": f"r{i:03d}", "date": date(2026, 6, 1 + i % 28), "nps": s, "csat": 3}
            for i, s in enumerate([0] * 20 + [10] * 20 + [8] * 20 + [9, 6] * 10)]
    feedback = _feedback(rows, rating=False)
    # topic 1: the detractors (strong drag); topic 2: half promoters, half detractors (no difference);
    # topic 3: 4 promoters and 12 passives (a mild lift: raw p just under 0.05, not after BH over 3 topics).
    assignments = pl.DataFrame({
        "response_id": [f"r{i:03d}" for i in [*range(20), *range(60, 80), *range(36, 52)]],
        "topic": [1] * 20 + [2] * 20 + [3] * 16,
    })
    d = kpis.drivers(feedback, assignments, None, PARAMS).sort("topic")
    p = d["nps_p"].to_list()
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):  # step-up: adjusted p_(i) = min over j ≥ i of p_(j)·m/j
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        adjusted[i] = running
    assert d["nps_p_adjusted"].to_list() == pytest.approx(adjusted.tolist())
    assert d["nps_significant"].to_list() == [bool(a <= PARAMS.fdr_q) for a in adjusted]
    assert d["nps_significant"].to_list() == [True, False, False]
    assert p[2] < PARAMS.fdr_q < adjusted[2]  # the adjustment is what keeps topic 3 out
