"""`koe init` on every export shape: roles guessed from values, params.yaml written and valid, and the clean stage
reading the shape with its headline numbers equal to values computed here from the raw files."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from pipelines import clean, cli, parsing
from pipelines.inspect_export import inspect_file
from pipelines.params import load
from pipelines.shapes import SHAPES, write_shape

ROOT = Path(__file__).resolve().parent.parent

# Per shape: column → role (segments as "segment:<name>"), as koe init must guess them.
ROLES = {
    "ja_cp932_survey": {"回答ID": "response_id", "会員番号": "customer_id", "回答日": "timestamp", "おすすめ度": "nps",
                        "満足度": "csat", "年代": "segment:age_band", "ご意見": "text", "地域": "segment:region"},
    "en_qualtrics_rating": {"ResponseId": "response_id", "RecordedDate": "timestamp", "Q1": "rating", "Q2": "text",
                            "Q3": "segment:plan", "StartDate": "ignored", "Status": "ignored", "Duration (in seconds)": "ignored"},
    "nps_two_months": {"id": "response_id", "customer_id": "customer_id", "answered_at": "timestamp", "nps": "nps",
                       "comment": "text", "channel": "segment:channel"},
    "many_segments": {"response_id": "response_id", "submitted_at": "timestamp", "nps": "nps", "comment": "text",
                      "store": "segment:store", "channel": "segment:channel"},
    "csat_1_7": {"Response ID": "response_id", "Date": "timestamp", "Satisfaction": "csat", "Comment": "text",
                 "Product": "segment:product"},
    "xlsx_excel_serials": {"ID": "response_id", "Timestamp": "timestamp", "NPS": "nps", "CSAT": "csat", "Comment": "text",
                           "Region": "segment:region"},
}


def _roles(path: Path) -> dict[str, str]:
    ins = inspect_file(path)
    return {c.name: c.role + (f":{c.segment}" if c.role == "segment" else "") for c in ins.columns}


@pytest.mark.parametrize("shape", sorted(ROLES))
def test_inspect_guesses_every_role(tmp_path, shape):
    (path,) = write_shape(shape, tmp_path, seed=1)
    roles = _roles(path)
    assert {k: roles[k] for k in ROLES[shape]} == ROLES[shape]


def test_inspect_reads_format_encoding_preset_and_scales(tmp_path):
    (ja,) = write_shape("ja_cp932_survey", tmp_path / "a")
    ins = inspect_file(ja)
    assert (ins.format, ins.encoding, ins.preset, ins.header_rows, ins.language) == ("csv", "cp932", None, 1, "ja")
    assert ins.first("timestamp").timestamp_format == "auto"  # two formats mixed
    (qx,) = write_shape("en_qualtrics_rating", tmp_path / "b")
    ins = inspect_file(qx)
    assert (ins.preset, ins.header_rows, ins.language) == ("qualtrics", 3, "en")
    assert ins.first("rating").good_values == ("positive",)
    (c7,) = write_shape("csat_1_7", tmp_path / "c")
    assert inspect_file(c7).first("csat").scale == (1, 7)
    (xl,) = write_shape("xlsx_excel_serials", tmp_path / "d")
    assert inspect_file(xl).first("timestamp").timestamp_format == "excel"
    (tk,) = write_shape("zendesk_tickets", tmp_path / "e")
    ins = inspect_file(tk)
    assert (ins.kind, ins.preset) == ("tickets", "zendesk")
    (nps,) = write_shape("nps_two_months", tmp_path / "f")
    assert inspect_file(nps).first("nps").scale == (0, 10)  # three planted 11s do not widen the scale


def test_unknown_rating_values_take_the_first_and_say_to_check():
    from pipelines.inspect_export import guess_column

    g = guess_column("評価", pl.Series(["A", "B", "C", "A"] * 30), 120)
    assert g.role == "rating" and g.good_values == ("A",) and "check" in g.note


# ------------------------------------------------------------------ koe init on each shape, then clean

def project(tmp_path: Path, shape: str) -> tuple[Path, list[Path]]:
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    return root, write_shape(shape, root / "data" / "raw", seed=3)


def _init(root: Path, *args: str) -> None:
    assert cli.main(["--root", str(root), "init", *args]) == 0


def _raw_rows(path: Path) -> list[dict[str, str]]:
    """The export's data rows as dicts, read here without koe (csv module, or polars for xlsx)."""
    if path.suffix == ".xlsx":
        frame = pl.read_excel(path, infer_schema_length=0)
        return [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in frame.iter_rows(named=True)]
    data = path.read_bytes()
    text = data.decode("cp932") if "アンケート" in path.name else data.decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    skip = 3 if rows[2] and rows[2][0].startswith('{"ImportId"') else 1
    return [dict(zip(rows[0], r)) for r in rows[skip:] if any(r)]


def _nps(scores: list[int]) -> float:
    return 100 * (sum(s >= 9 for s in scores) - sum(s <= 6 for s in scores)) / len(scores)


def _responses(feedback: pl.DataFrame) -> pl.DataFrame:
    return feedback.unique("response_id", keep="first")


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_init_writes_valid_params_and_clean_reads_the_shape(tmp_path, shape):
    root, files = project(tmp_path, shape)
    _init(root, *[str(f) for f in files])
    params = load(root / "params.yaml")
    result = clean.run(params.clean, root)
    m = result.metrics
    assert m["rows_in"] == m["rows_kept"] + m["rows_quarantined"]
    (path,) = files
    if shape == "zendesk_tickets":
        assert params.clean.surveys == [] and params.clean.tickets.path == "data/raw/zendesk_tickets.jsonl"
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        good = [json.loads(ln) for ln in lines if ln.startswith("{") and ln.endswith("}")]
        assert m["rows_in"] == len(lines) and m["rows_kept"] == len(good) == 400
        assert int(result.tickets["is_open"].sum()) == sum(t["solved_at"] is None for t in good)
        assert m["surveys_provided"] is False and m["tickets_provided"] is True
        assert params.kpis.enabled_kpis == ["ticket_volume", "first_response_h", "resolution_h", "churn_rate", "repeat_rate"]
        return
    src = params.clean.surveys[0]
    expected = {k.removeprefix("segment:"): col for col, k in ROLES[shape].items() if k not in ("ignored", "text")}
    mapped = {**{k: v for k, v in src.columns.model_dump().items() if v}, **src.segments}
    assert mapped == {("customer_id" if k == "customer_id" else k): v for k, v in expected.items()}
    assert params.clean.tickets is None and m["tickets_provided"] is False
    assert params.kpis.programme_date is None
    raw = _raw_rows(path)
    assert m["rows_in"] == len(raw)
    fb = _responses(result.feedback)
    if shape == "ja_cp932_survey":
        bad_dates = [r for r in raw if not re.match(r"^\d{4}(/|年)", r["回答日"])]
        assert m["rows_quarantined"] == len(bad_dates) == 4
        kept = [int(r["おすすめ度"]) for r in raw if r not in bad_dates]
        assert fb["nps"].drop_nulls().to_list() and _nps(fb["nps"].to_list()) == pytest.approx(_nps(kept))
        assert set(fb["age_band"].unique()) == {r["年代"] for r in raw}
        assert params.kpis.segments == ["age_band", "region"] and params.report.lang == "ja"
    elif shape == "en_qualtrics_rating":
        assert m["rows_quarantined"] == 0
        share = sum(r["Q1"] == "positive" for r in raw) / len(raw)
        assert (fb["rating"] == "positive").mean() == pytest.approx(share)
        assert params.kpis.rating.good_values == ["positive"] and "nps" not in params.kpis.enabled_kpis
        assert "rating_share" in params.kpis.enabled_kpis and params.report.lang == "en"
        assert not result.feedback["text"].str.contains("&#039;|&rsquo;|&amp;").any()
        assert params.report.title == "Customer Experience Survey Q2"
    elif shape == "nps_two_months":
        valid = [int(r["nps"]) for r in raw if int(r["nps"]) <= 10]
        assert m["quarantined_by_reason"] == {"nps_out_of_range": len(raw) - len(valid)} == {"nps_out_of_range": 3}
        assert _nps(fb["nps"].to_list()) == pytest.approx(_nps(valid))
        assert params.kpis.window_months == 1  # two months of data
    elif shape == "many_segments":
        assert fb["store"].n_unique() == len({r["store"] for r in raw}) == 150
        assert params.kpis.segments == ["channel", "store"]
    elif shape == "csat_1_7":
        assert src.csat_scale == (1, 7) and params.kpis.csat.scale_max == 7 and params.kpis.csat.top_box_min == 6
        assert fb["csat"].mean() == pytest.approx(sum(int(r["Satisfaction"]) for r in raw) / len(raw))
        assert m["rows_quarantined"] == 0
    elif shape == "xlsx_excel_serials":
        scores = [int(float(r["NPS"])) for r in raw if r["NPS"]]
        assert m["rows_quarantined"] == 0 and fb["nps"].null_count() == len(raw) - len(scores) == 5
        assert _nps(fb["nps"].drop_nulls().to_list()) == pytest.approx(_nps(scores))
        first = min(float(r["Timestamp"]) for r in raw)
        assert str(fb["ts_utc"].dt.convert_time_zone("Asia/Tokyo").min())[:10] == str(
            pl.Series([first]).map_elements(lambda d: str(parsing._EXCEL_EPOCH + __import__("datetime").timedelta(days=d)), return_dtype=pl.String)[0])[:10]


def test_dry_run_writes_nothing_and_outside_files_are_copied_into_data_raw(tmp_path, capsys):
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    (path,) = write_shape("csat_1_7", tmp_path / "elsewhere")
    before = (root / "params.yaml").read_bytes()
    _init(root, "--dry-run", str(path))
    out = capsys.readouterr().out
    assert "Satisfaction" in out and "csat 1–7" in out and "dry run" in out
    assert (root / "params.yaml").read_bytes() == before and not (root / "data").exists()
    _init(root, str(path), "--programme-date", "2026-04-01", "--title", "CSAT 2026")
    assert (root / "data/raw/csat_survey_2026.csv").read_bytes() == path.read_bytes()
    params = load(root / "params.yaml")
    assert params.clean.surveys[0].path == "data/raw/csat_survey_2026.csv"
    assert str(params.kpis.programme_date) == "2026-04-01" and params.report.title == "CSAT 2026"
    text = (root / "params.yaml").read_text(encoding="utf-8")
    assert "# koe — every knob of the pipeline." in text and "# Benjamini–Hochberg q" in text  # comments kept


def test_init_on_the_demo_exports_reproduces_todays_mapping(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    assert cli.main(["--root", str(root), "demo-data", "--n-responses", "400", "--n-tickets", "100"]) == 0
    files = sorted(str(p) for p in (root / "data/raw").iterdir())
    _init(root, *files)
    ours, today = load(root / "params.yaml"), load(ROOT / "params.yaml")
    (src,), (want,) = ours.clean.surveys, today.clean.surveys
    assert src.columns == want.columns and src.text_columns == want.text_columns and src.segments == {}
    assert sorted(root.glob(src.path)) == sorted(root.glob(want.path))
    assert src.resolved("format", "x.csv") == want.format and src.encoding == want.encoding
    assert ours.clean.tickets.path == today.clean.tickets.path and ours.clean.tickets.preset == "zendesk"
    assert ours.kpis.segments == today.kpis.segments
    assert ours.kpis.enabled_kpis == [k for k in today.kpis.enabled_kpis if not k.startswith("ces")]
    assert ours.kpis.window_months == today.kpis.window_months and ours.report.lang == today.report.lang
