"""Any export, first try: every export shape goes through `koe init` (no further edit) and every stage notebook to a
report, which is checked for content — no crash, no placeholder, no empty chart, no duplicated finding, the sections
the data supports and none it does not — and each shape's headline number equals a value computed here from the raw
file, independently of koe.

The stage notebooks run in one shared kernel (tests/shared_kernel.py) so seven projects fit the test budget; the
demo's end-to-end test (test_pipeline) covers the per-stage processes of `dvc repro`.
"""

from __future__ import annotations

import csv
import html as htmllib
import io
import json
import re
import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from pipelines import cli
from pipelines.params import load
from pipelines.shapes import EXCEL_EPOCH, write_shape
from shared_kernel import SharedKernel

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDERS = re.compile(r">\s*(None|nan|NaN|null|\(empty\)|undefined|–|-)\s*<|\bNone\b|\bnan\b|\(empty\)")


@pytest.fixture(scope="module")
def kernel():
    k = SharedKernel()
    yield k
    k.close()


def project(tmp_path: Path, shape: str) -> tuple[Path, list[Path]]:
    root = tmp_path / shape
    root.mkdir()
    shutil.copytree(ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "explore"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, root / name)
    files = write_shape(shape, root / "data/raw", seed=0)
    assert cli.main(["--root", str(root), "init", *map(str, files)]) == 0
    return root, files


def run(kernel: SharedKernel, root: Path) -> tuple[str, pl.DataFrame, dict]:
    kernel.run_all(root)
    page = (root / "reports/report.html").read_text(encoding="utf-8")
    tests = pl.read_parquet(root / "data/kpis/tests.parquet")
    metrics = json.loads((root / "reports/metrics/kpis.json").read_text(encoding="utf-8"))
    return page, tests, metrics


def visible(page: str) -> str:
    body = re.sub(r"<(style|script)\b.*?</\1>", "", page, flags=re.S)
    return htmllib.unescape(re.sub(r"<[^>]+>", " ", body))


def check_page(page: str) -> None:
    body = re.sub(r"<(style|script)\b.*?</\1>", "", page, flags=re.S)
    shown = re.sub(r"data:[^\"')\s]+", "data:", body)  # base64 images can spell "nan"
    bad = PLACEHOLDERS.search(shown)
    assert bad is None, f"placeholder {bad.group(0)!r} near: {shown[max(0, bad.start() - 200):bad.end() + 100]}"
    for img in re.findall(r"<img\b[^>]*>", body):  # every chart has data and says what it shows
        alt = re.search(r'alt="([^"]*)"', img)
        assert alt and alt.group(1).strip(), f"chart without a description: {img[:120]}"
    summary = re.search(r'class="koe-summary".*?</section>', body, flags=re.S)
    assert summary, "no executive summary"
    findings = [re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", "", f))).strip()
                for f in re.findall(r"<(?:p|li)\b[^>]*>(.*?)</(?:p|li)>", summary.group(0), flags=re.S)]
    findings = [f for f in findings if f]
    assert findings and len(findings) == len(set(findings)), f"duplicated finding in {findings}"
    skipped = skipped_items(body)
    assert len(skipped) == len(set(skipped)), f"a reason is listed twice: {skipped}"
    if re.search(r'<html[^>]*\blang="ja"', page):  # a Japanese report words every reason in Japanese
        english = [s for s in skipped if not re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", s.split(":", 1)[-1])]
        assert not english, f"reasons left in English in a Japanese report: {english}"


def skipped_items(body: str) -> list[str]:
    """The data-quality section's list of what was not computed, as shown."""
    section = re.search(r"<h2>(?:データ品質|Data quality)</h2>(.*?)</section>", body, flags=re.S)
    items = re.findall(r"<li>(.*?)</li>", section.group(1), flags=re.S) if section else []
    return [re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", "", i))).strip() for i in items]


def window(dates: list[date], months: int) -> tuple[date, date]:
    """The latest window as koe defines it: the `months` calendar months before the month after the latest date."""
    last = max(dates)
    end = date(last.year + last.month // 12, last.month % 12 + 1, 1)
    start_month = end.year * 12 + end.month - 1 - months
    return date(start_month // 12, start_month % 12 + 1, 1), end


def nps(scores: list[int]) -> float:
    return 100.0 * (sum(s >= 9 for s in scores) - sum(s <= 6 for s in scores)) / len(scores)


def headline(tests: pl.DataFrame, kpi: str) -> dict:
    rows = tests.filter((pl.col("comparison") == "window") & (pl.col("kpi") == kpi) & (pl.col("segment_col") == "all"))
    assert rows.height == 1, f"no overall window row for {kpi}"
    return rows.row(0, named=True)


def test_japanese_cp932_survey_without_tickets(kernel, tmp_path):
    root, (path,) = project(tmp_path, "ja_cp932_survey")
    p = load(root / "params.yaml")
    assert p.clean.tickets is None and p.kpis.programme_date is None and p.report.lang == "ja"
    page, tests, metrics = run(kernel, root)
    check_page(page)
    text = visible(page)
    rows = list(csv.reader(io.StringIO(path.read_bytes().decode("cp932"))))[1:]
    parsed = []
    for r in rows:
        for fmt in ("%Y/%m/%d %H:%M", "%Y年%m月%d日 %H:%M"):
            try:
                parsed.append((datetime.strptime(r[2], fmt).date(), int(r[3])))
                break
            except ValueError:
                continue
    assert len(parsed) == 596  # four rows dated 不明 are quarantined
    start, end = window([d for d, _ in parsed], p.kpis.window_months)
    row = headline(tests, "nps")
    assert row["est_b"] == pytest.approx(nps([s for d, s in parsed if start <= d < end]))
    assert row["n_b"] == sum(start <= d < end for d, _ in parsed)
    assert "年代" in text and "age_band" not in text  # the export's own name for the segment
    for ticket_kpi in ("問い合わせ件数", "初回応答時間", "解決時間"):
        assert ticket_kpi not in text[:text.index("データ品質")]
    assert "施策" not in text[:text.index("データ品質")]  # no programme date: no before/after section
    assert not {"ticket_volume", "first_response_h", "resolution_h"} & set(p.kpis.enabled_kpis)  # init: no tickets
    assert {s["comparison"] for s in metrics["skipped"] if s["kpi"] == "all"} >= {"programme", "its"}  # and says why


def test_english_qualtrics_with_a_text_rating_and_no_nps(kernel, tmp_path):
    root, (path,) = project(tmp_path, "en_qualtrics_rating")
    p = load(root / "params.yaml")
    assert p.report.lang == "en" and p.kpis.rating is not None and p.kpis.rating.good_values == ["positive"]
    page, tests, _ = run(kernel, root)
    check_page(page)
    text = visible(page)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))[3:]
    parsed = [(datetime.strptime(r[6], "%Y-%m-%d %H:%M:%S").date(), r[9] == "positive") for r in rows]
    start, end = window([d for d, _ in parsed], p.kpis.window_months)
    inside = [good for d, good in parsed if start <= d < end]
    row = headline(tests, "rating_share")
    assert row["est_b"] == pytest.approx(100.0 * sum(inside) / len(inside)) and row["n_b"] == len(inside)
    assert "Share of positive ratings" in text and "Executive summary" in text
    assert "NPS" not in text[:text.index("Data quality")]
    assert "&#039;" not in text and "&rsquo;" not in text and "&amp;" not in text
    assert p.clean.surveys[0].segments == {"plan": "Q3"} and "Q3" not in text  # named by its question, not its code


def test_two_months_of_nps_only(kernel, tmp_path):
    root, (path,) = project(tmp_path, "nps_two_months")
    p = load(root / "params.yaml")
    assert p.kpis.window_months == 1 and p.kpis.enabled_kpis[0] == "nps" and "csat_mean" not in p.kpis.enabled_kpis
    page, tests, _ = run(kernel, root)
    check_page(page)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))[1:]
    oct_scores = [int(r[3]) for r in rows if r[2].startswith("2026-10") and int(r[3]) <= 10]
    row = headline(tests, "nps")
    assert (row["label_a"], row["label_b"]) == ("2026-09〜2026-09", "2026-10〜2026-10")
    assert row["est_b"] == pytest.approx(nps(oct_scores)) and row["n_b"] == len(oct_scores)
    topics = pl.read_parquet(root / "data/topics/topics.parquet")
    assert topics.height >= 2 and topics["emerging"].sum() < topics.height  # not everything is "emerging"


def test_tickets_only(kernel, tmp_path):
    root, (path,) = project(tmp_path, "zendesk_tickets")
    p = load(root / "params.yaml")
    assert p.clean.surveys == [] and p.clean.tickets is not None
    page, tests, _ = run(kernel, root)
    check_page(page)
    text = visible(page)
    tickets = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            t = json.loads(line)
        except json.JSONDecodeError:
            continue
        created = datetime.fromisoformat(t["created_at"])
        tickets.append((created.astimezone(timezone.utc).date(),
                        (datetime.fromisoformat(t["first_reply_at"]) - created).total_seconds() / 3600))
    assert len(tickets) == 400
    start, end = window([d for d, _ in tickets], p.kpis.window_months)
    hours = sorted(h for d, h in tickets if start <= d < end)
    row = headline(tests, "first_response_h")
    # Kaplan–Meier median (every ticket here has a reply, so no censoring): the first time half are answered
    assert row["est_b"] == pytest.approx(hours[(len(hours) + 1) // 2 - 1], rel=1e-6)
    assert "初回応答時間" in text and "NPS" not in text[:text.index("データ品質")]
    skipped = skipped_items(page)
    assert sum("施策日が設定されていません" in s for s in skipped) == 1  # programme and ITS: one line, both named


def test_a_segment_with_150_values(kernel, tmp_path):
    root, (path,) = project(tmp_path, "many_segments")
    p = load(root / "params.yaml")
    assert "store" in p.kpis.segments
    page, tests, _ = run(kernel, root)
    check_page(page)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))[1:]
    parsed = [(datetime.strptime(r[1], "%Y-%m-%d %H:%M").date(), int(r[2])) for r in rows]
    start, end = window([d for d, _ in parsed], p.kpis.window_months)
    before, _ = window([start - timedelta(days=1)], p.kpis.window_months)
    in_windows = {r[4] for r, (d, _) in zip(rows, parsed) if before <= d < end}
    stores = set(tests.filter((pl.col("comparison") == "window") & (pl.col("segment_col") == "store"))["segment_value"])
    assert stores == in_windows and len(stores) > 100  # the full table keeps every store of the two windows …
    shown = set(re.findall(r"店舗\d{3}", visible(page)))
    assert 0 < len(shown) <= p.report.max_segment_values  # … the page shows the largest ones
    assert len(page) < 1_500_000
    assert headline(tests, "nps")["est_b"] == pytest.approx(nps([s for d, s in parsed if start <= d < end]))


def test_csat_on_a_1_to_7_scale(kernel, tmp_path):
    root, (path,) = project(tmp_path, "csat_1_7")
    p = load(root / "params.yaml")
    assert (p.kpis.csat.scale_min, p.kpis.csat.scale_max) == (1, 7)
    page, tests, _ = run(kernel, root)
    check_page(page)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))[1:]
    parsed = [(datetime.strptime(r[1], "%Y-%m-%d %H:%M").date(), int(r[2])) for r in rows]
    start, end = window([d for d, _ in parsed], p.kpis.window_months)
    inside = [s for d, s in parsed if start <= d < end]
    assert headline(tests, "csat_mean")["est_b"] == pytest.approx(sum(inside) / len(inside))
    top = headline(tests, "csat_top2")
    assert top["est_b"] == pytest.approx(100.0 * sum(s >= p.kpis.csat.top_box_min for s in inside) / len(inside))


def test_xlsx_with_excel_serial_timestamps(kernel, tmp_path):
    import zipfile

    root, (path,) = project(tmp_path, "xlsx_excel_serials")
    p = load(root / "params.yaml")
    page, tests, _ = run(kernel, root)
    check_page(page)
    # The sheet's own XML (not koe's reader): numeric cells of columns B (serial day) and C (NPS, sometimes blank).
    xml = zipfile.ZipFile(path).read("xl/worksheets/sheet1.xml").decode("utf-8")
    cells = dict(re.findall(r'<c r="([A-Z]+\d+)"[^>]*><v>([^<]*)</v></c>', xml))
    parsed = [((EXCEL_EPOCH + timedelta(days=float(cells[f"B{i}"]))).date(),
               int(float(cells[f"C{i}"])) if f"C{i}" in cells else None) for i in range(2, 1002)]
    assert len(parsed) == 1000
    start, end = window([d for d, _ in parsed], p.kpis.window_months)
    inside = [s for d, s in parsed if start <= d < end and s is not None]
    row = headline(tests, "nps")
    assert row["est_b"] == pytest.approx(nps(inside)) and row["n_b"] == len(inside)
