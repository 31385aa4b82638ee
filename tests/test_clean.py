"""Clean stage on tiny exports: decoding, rules, redaction, quarantine, and the row invariant."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import clean, parsing, pii, readers, schema, textnorm
from pipelines.io import write_result
from pipelines.readers import InputError
from pipelines.schema import CleanParams, SurveyColumns, SurveySource, TicketSource

HEADER = "回答ID,顧客ID,回答日時,推奨度,満足度,ご意見・ご要望,ペルソナ,チャネル,製品ライン,ジャーニー"
COLUMNS = SurveyColumns(response_id="回答ID", customer_id="顧客ID", timestamp="回答日時", nps="推奨度", csat="満足度",
                        persona="ペルソナ", channel="チャネル", product="製品ライン", journey="ジャーニー")


def params(path: str = "raw/*.csv", tickets: str | None = None, **kw) -> CleanParams:
    src = SurveySource(name="survey", path=path, columns=COLUMNS, text_columns={"comment": "ご意見・ご要望"})
    return CleanParams(surveys=[src], tickets=TicketSource(path=tickets) if tickets else None, **kw)


def write(tmp: Path, name: str, lines: list[str], encoding: str = "utf-8", newline: str = "\n") -> Path:
    path = tmp / "raw" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(newline.join(lines).encode(encoding) + newline.encode())
    return path


ROWS = [
    "R1,C1,2026/01/05 13:22,9,5,ｱﾌﾟﾘの操作が分かりやすい👍,シニア,app,スマート照明,使用",
    "R2,C2,2026/01/06 09:00,3,2,連絡は taro.yamada@example.com か 090-1234-5678 まで,共働き世帯,web,スマートロック,購買",
    "R3,C3,2026/02/01 10:00,7,4,特になし,単身者,store,ロボット掃除機,認知",
    "R4,C4,2026/02/02 10:00,11,4,点数がおかしい,単身者,store,ロボット掃除機,認知",
    "R5,C5,2026/02/03 10:00,abc,4,数字じゃない,単身者,store,ロボット掃除機,認知",
    "R1,C1,2026/01/05 13:22,9,5,ｱﾌﾟﾘの操作が分かりやすい👍,シニア,app,スマート照明,使用",
    "R6,C6,not a date,5,3,日付が変,単身者,phone,ロボット掃除機,認知",
    "R7,C7,2026/03/01 10:00,10,5",
    "",
    "R8,C8,2026/03/02 10:00,6,3,,ガジェット好き,phone,スマートエアコン,アフターフォロー",
]


def test_reads_utf8_bom_and_cp932_and_records_the_encoding(tmp_path):
    write(tmp_path, "a.csv", [HEADER] + ROWS[:2], encoding="utf-8-sig")
    write(tmp_path, "b.csv", [HEADER, "R9,C9,2026/04/01 10:00,10,5,とても満足です,シニア,store,スマート照明,使用"],
          encoding="cp932", newline="\r\n")
    result = clean.run(params(), tmp_path)
    encodings = {f["file"]: f["encoding"] for f in result.metrics["files"]}
    assert encodings == {"raw/a.csv": "utf-8-sig", "raw/b.csv": "cp932"}
    assert "とても満足です" in result.feedback["text"].to_list()


def test_undecodable_file_names_file_and_byte_offset(tmp_path):
    good = (HEADER + "\nR1,C1,2026/01/05 13:22,9,5,良い,シニア,app,スマート照明,使用\n").encode("utf-8")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "bad.csv").write_bytes(good + b"R2,C2,\xff\xfe\x80\x81")
    with pytest.raises(InputError, match=r"raw/bad.csv: .*offset \d+"):
        clean.run(params(), tmp_path)
    with pytest.raises(InputError, match=rf"raw/bad.csv: not valid utf-8: bytes ff at byte offset {len(good) + 6}, line 3; "):
        readers.decode((tmp_path / "raw" / "bad.csv").read_bytes(), "raw/bad.csv", "utf-8")


def test_rules_quarantine_and_invariant(tmp_path):
    write(tmp_path, "a.csv", [HEADER] + ROWS)
    result = clean.run(params(), tmp_path)
    m = result.metrics
    assert m["rows_in"] == 9  # the blank line is not a row
    assert m["files"][0]["blank_lines"] == 1
    assert m["rows_in"] == m["rows_kept"] + m["rows_quarantined"]
    reasons = dict(zip(result.quarantine["row"].to_list(), result.quarantine["reason"].to_list()))
    assert reasons == {
        4: "nps_out_of_range:推奨度", 5: "nps_not_a_number:推奨度", 6: "duplicate",
        7: "bad_timestamp:回答日時", 8: "ragged_row:5_fields_expected_10",
    }
    fb = result.feedback.sort("response_id")
    assert fb["response_id"].to_list() == ["R1", "R2", "R3", "R8"]
    status = dict(zip(fb["response_id"], fb["text_status"]))
    assert status == {"R1": "ok", "R2": "ok", "R3": "non_answer", "R8": "empty"}
    r1 = fb.filter(pl.col("response_id") == "R1").row(0, named=True)
    assert r1["text"] == "アプリの操作が分かりやすい👍"  # NFKC: half-width kana → full-width, emoji kept
    assert r1["lang"] == "ja" and r1["period"] == "2026-01" and r1["nps"] == 9
    assert str(r1["ts_utc"]) == "2026-01-05 04:22:00+00:00"  # 13:22 JST
    assert r1["verbatim_id"] == "survey:R1:comment"


def test_personal_data_never_leaves_the_stage(tmp_path):
    pii = ["taro.yamada@example.com", "090-1234-5678", "03-1234-5678", "+81 90 1234 5678", "〒123-4567", "4111 1111 1111 1111"]
    lines = [HEADER] + [
        f"R{i},C{i},2026/01/05 13:22,5,3,連絡先は{p}です,シニア,app,スマート照明,使用" for i, p in enumerate(pii)
    ] + ["R99,C99,2026/01/05 13:22,12,3,範囲外 hanako@example.jp,シニア,app,スマート照明,使用"]
    write(tmp_path, "a.csv", lines)
    result = clean.run(params(), tmp_path)
    texts = result.feedback["text"].to_list()
    dump = json.dumps(texts + result.quarantine["content"].to_list(), ensure_ascii=False)
    for p in pii + ["hanako@example.jp"]:
        assert p not in dump
    assert texts[0] == "連絡先は[EMAIL]です"
    assert set(result.feedback["redactions"].to_list()) == {"EMAIL", "PHONE", "POSTCODE", "CARD"}
    assert result.metrics["redactions"] == {"CARD": 1, "EMAIL": 1, "PHONE": 3, "POSTCODE": 1}


def test_card_like_numbers_need_a_valid_luhn_checksum():
    frame = pl.DataFrame({"t": ["注文番号 1234 5678 9012 3456", "カード 4111 1111 1111 1111"]})
    out = pii.redact(frame, "t")
    assert out["t"].to_list()[1] == "カード [CARD]"
    assert "[CARD]" not in out["t"].to_list()[0]


def test_missing_column_is_a_clear_error(tmp_path):
    write(tmp_path, "a.csv", ["回答ID,回答日時,推奨度", "R1,2026/01/05 13:22,9"])
    with pytest.raises(InputError, match=r"raw/a.csv: missing column\(s\) \['顧客ID'"):
        clean.run(params(), tmp_path)


def test_empty_file_and_no_files_are_clear_errors(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(InputError, match="no input files match"):
        clean.run(params(), tmp_path)
    (tmp_path / "raw" / "a.csv").write_bytes(b"")
    with pytest.raises(InputError, match="raw/a.csv: empty file"):
        clean.run(params(), tmp_path)


def test_html_is_stripped_and_script_text_is_inert():
    frame = pl.DataFrame({"t": ['<script>alert("koe")</script>使いにくい', "A&amp;B&nbsp;&lt;b&gt;", "ゼロ\u200b幅\u3000 空白\n改行"]})
    out = frame.select(textnorm.normalise_text(pl.col("t")))["t"].to_list()
    assert out == ['alert("koe") 使いにくい', "A&B", "ゼロ幅 空白 改行"]


def test_tickets_open_ones_are_censored_not_dropped(tmp_path):
    write(tmp_path, "a.csv", [HEADER] + ROWS[:1])
    lines = [
        {"id": 1, "requester_id": "C1", "created_at": "2026-01-05T10:00:00+09:00", "first_reply_at": "2026-01-05T12:30:00+09:00",
         "solved_at": "2026-01-06T10:00:00+09:00", "status": "solved", "via": "web", "product": "スマート照明", "description": "繋がらない"},
        {"id": 2, "requester_id": "C2", "created_at": "2026-01-07T10:00:00+09:00", "first_reply_at": None,
         "solved_at": None, "status": "open", "via": "app", "product": "スマート照明", "description": "電話 090-1111-2222"},
    ]
    path = tmp_path / "raw" / "t.jsonl"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{broken\n", encoding="utf-8")
    result = clean.run(params(tickets="raw/t.jsonl"), tmp_path)
    t = result.tickets.sort("ticket_id")
    assert t["is_open"].to_list() == [False, True]
    assert t["first_response_h"].to_list()[0] == pytest.approx(2.5)
    assert t["resolution_h"].to_list() == pytest.approx([24.0, 0.0])  # censored at the latest timestamp seen
    assert t["text"].to_list()[1] == "電話 [PHONE]"
    q = result.quarantine.filter(pl.col("file") == "raw/t.jsonl")
    assert q["reason"].to_list() == ["bad_json:col_2"]
    rep = next(f for f in result.metrics["files"] if f["file"] == "raw/t.jsonl")
    assert rep["rows_in"] == 3 and rep["rows_kept"] == 2 and rep["rows_quarantined"] == 1


field_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["R1", "R2", "R3", "", "R4"]), st.sampled_from(["2026/01/05 13:22", "bad", ""]),
                          st.sampled_from(["0", "10", "11", "-1", "x", "", "7"]), field_text,
                          st.integers(min_value=8, max_value=11)), max_size=25))
def test_rows_in_equals_kept_plus_quarantined(rows):
    """Whatever the rows (ragged, duplicate, invalid), every one is kept or quarantined, once."""
    header = HEADER.split(",")
    records = []
    for i, (rid, ts, nps, text, width) in enumerate(rows, start=1):
        fields = [rid, "C", ts, nps, "3", text, "シニア", "app", "スマート照明", "使用"][:width] + [""] * max(0, width - 10)
        records.append((i, fields))
    p = params()
    raw = readers.records_table([f for _, f in records], [header], "test")
    fb, q = clean.clean_survey(raw, p.surveys[0], "f.csv", p)
    assert fb["row"].n_unique() + len(q) == len(records) - raw.blank_lines
    assert set(fb["row"].to_list()).isdisjoint(q["row"].to_list())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_normalisation_is_idempotent(text):
    once = pl.DataFrame({"t": [text]}).select(textnorm.normalise_text(pl.col("t")))
    twice = once.select(textnorm.normalise_text(pl.col("t")))
    assert once["t"][0] == twice["t"][0]


# ---------------------------------------------------------------- real export layouts (tests/fixtures/clean)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "clean"
JA_COLUMNS = COLUMNS.model_copy(update={"ces": "努力度"})


def staged(tmp_path: Path, *names: str) -> Path:
    """Copy fixture files into tmp_path/raw (the stage reads globs under a project root)."""
    (tmp_path / "raw").mkdir(exist_ok=True)
    for name in names:
        (tmp_path / "raw" / Path(name).name).write_bytes((FIXTURES / name).read_bytes())
    return tmp_path


def run_one(tmp_path: Path, source: SurveySource, **kw) -> clean.CleanResult:
    return clean.run(CleanParams(surveys=[source], **kw), tmp_path)


def by_verbatim(result: clean.CleanResult) -> dict[str, dict]:
    return {r["verbatim_id"]: r for r in result.feedback.iter_rows(named=True)}


def test_qualtrics_preset_three_header_rows_and_several_questions(tmp_path):
    staged(tmp_path, "qualtrics.csv")
    src = SurveySource(
        name="q", path="raw/qualtrics.csv", preset="qualtrics",
        columns=SurveyColumns(response_id="ResponseId", timestamp="RecordedDate", customer_id="ExternalReference",
                              nps="Q1", ces="Q3"),
        text_columns={"reason": "Q2_TEXT", "other": "Q4_TEXT"},
    )
    result = run_one(tmp_path, src)
    f = result.metrics["files"][0]
    assert (f["encoding"], f["rows_in"], f["rows_kept"], f["quarantined_by_reason"]) == ("utf-8-sig", 3, 2, {"nps_out_of_range:Q1": 1})
    v = by_verbatim(result)
    assert sorted(v) == ["q:R_1abcDEF:other", "q:R_1abcDEF:reason", "q:R_2ghiJKL:other", "q:R_2ghiJKL:reason"]
    r1 = v["q:R_1abcDEF:reason"]
    assert (r1["nps"], r1["ces"], r1["customer_id"], r1["lang"]) == (9, 6, "C001", "ja")
    assert str(r1["ts_utc"]) == "2026-01-05 04:22:35+00:00" and str(r1["date_local"]) == "2026-01-05"
    assert v["q:R_1abcDEF:other"]["text_status"] == "non_answer"
    assert v["q:R_2ghiJKL:reason"]["lang"] == "en"  # each free-text question is its own verbatim, with its id
    assert v["q:R_2ghiJKL:other"]["text"] == "Call me on [PHONE]"


def test_surveymonkey_preset_two_header_rows(tmp_path):
    staged(tmp_path, "surveymonkey.csv")
    nps_q = "How likely is it that you would recommend us to a friend or colleague?"
    src = SurveySource(
        name="sm", path="raw/*.csv", preset="surveymonkey", timezone="America/New_York",
        columns=SurveyColumns(response_id="Respondent ID", timestamp="End Date", customer_id="Custom Data 1", nps=nps_q,
                              channel="Which channel did you buy through?"),
        text_columns={"reason": "What is the main reason for your score?",
                      "channel_other": "Which channel did you buy through? | Other (please specify)"},
    )
    result = run_one(tmp_path, src)
    v = by_verbatim(result)
    assert str(v["sm:114000001:reason"]["ts_utc"]) == "2026-01-05 18:22:35+00:00"  # 1:22 PM in New York
    assert str(v["sm:114000002:reason"]["ts_utc"]) == "2026-01-06 14:03:10+00:00"  # unpadded 1/6/2026 9:03:10 AM
    assert v["sm:114000002:channel_other"]["text"] == "家電量販店"
    assert v["sm:114000001:channel_other"]["text_status"] == "empty"
    # The export's e-mail column is not mapped, so it never reaches an output.
    assert "example" not in json.dumps(result.feedback.rows(), default=str)


def test_excel_workbook_with_date_cells_serials_and_japanese_dates(tmp_path):
    staged(tmp_path, "survey.xlsx")
    src = SurveySource(name="x", path="raw/survey.xlsx", sheet="回答", columns=JA_COLUMNS,
                       text_columns={"comment": "ご意見・ご要望"})
    result = run_one(tmp_path, src)
    f = result.metrics["files"][0]
    assert (f["encoding"], f["parser"], f["rows_in"], f["blank_lines"]) == ("binary", "fastexcel", 5, 1)
    assert f["quarantined_by_reason"] == {"ces_out_of_range:努力度": 1}
    fb = {r["response_id"]: r for r in result.feedback.iter_rows(named=True)}
    local = {k: str(r["ts_utc"].astimezone(ZoneInfo("Asia/Tokyo")).replace(tzinfo=None)) for k, r in fb.items()}
    assert local == {"X1": "2026-01-05 13:22:00", "X2": "2026-01-06 09:00:00", "X4": "2026-01-08 09:05:00",
                     "X5": "2026-01-09 10:00:00"}
    assert fb["X2"]["nps"] == 7  # Excel stores 7 as 7.0
    assert fb["X1"]["text"] == "アプリが使いやすい😊" and fb["X1"]["ces"] == 2
    with pytest.raises(InputError, match=r"raw/survey.xlsx: no sheet 'Sheet9'"):
        run_one(tmp_path, src.model_copy(update={"sheet": "Sheet9"}))


def test_parquet_with_typed_columns(tmp_path):
    staged(tmp_path, "survey.parquet")
    src = SurveySource(name="p", path="raw/*.parquet",
                       columns=SurveyColumns(response_id="response_id", timestamp="submitted", customer_id="customer", nps="nps"),
                       text_columns={"comment": "comment", "reason": "reason_text"})
    result = run_one(tmp_path, src)
    assert result.metrics["quarantined_by_reason"] == {"bad_timestamp": 1}
    v = by_verbatim(result)
    assert str(v["p:P1:comment"]["ts_utc"]) == "2026-01-05 04:22:00+00:00"
    assert str(v["p:P1:comment"]["date_local"]) == "2026-01-05" and v["p:P2:comment"]["nps"] == 0
    assert v["p:P2:reason"]["text_status"] == "empty"


def test_json_lines_survey_with_bad_lines(tmp_path):
    staged(tmp_path, "survey.jsonl")
    src = SurveySource(name="j", path="raw/survey.jsonl",
                       columns=SurveyColumns(response_id="id", timestamp="created", nps="nps"), text_columns={"c": "comment"})
    result = run_one(tmp_path, src)
    f = result.metrics["files"][0]
    assert (f["rows_in"], f["rows_kept"], f["blank_lines"]) == (4, 2, 1)
    assert f["quarantined_by_reason"] == {"bad_json": 1, "not_an_object": 1}
    assert sorted(result.feedback["nps"].to_list()) == [9, 10]


@pytest.mark.parametrize(
    ("value", "fmt", "expected_local"),
    [
        ("2026/01/05", "auto", "2026-01-05 00:00:00"),
        ("2026/1/5 9:05", "auto", "2026-01-05 09:05:00"),
        ("2026年1月5日", "auto", "2026-01-05 00:00:00"),
        ("２０２６年１月５日 ９時０５分", "auto", "2026-01-05 09:05:00"),  # full-width digits (NFKC)
        ("2026-01-05T09:05:00Z", "auto", "2026-01-05 18:05:00"),
        ("2026-01-05 09:05:00+09:00", "%Y/%m/%d %H:%M", "2026-01-05 09:05:00"),  # ISO always accepted
        ("46027.5", "excel", "2026-01-05 12:00:00"),
        ("46027", "auto", "2026-01-05 00:00:00"),
        ("05.01.2026 09:05", "%d.%m.%Y %H:%M", "2026-01-05 09:05:00"),
        ("2026/02/30", "auto", None),
        ("next tuesday", "auto", None),
    ],
)
def test_timestamp_formats(value, fmt, expected_local):
    out = pl.DataFrame({"t": [value]}).select(parsing.parse_timestamp(pl.col("t"), fmt, "Asia/Tokyo").dt.convert_time_zone("Asia/Tokyo"))
    got = out.item()
    assert (None if got is None else str(got.replace(tzinfo=None))) == expected_local


def test_language_detection_ja_en_other():
    texts = ["アプリが落ちる", "The app keeps crashing after the update", "最高の製品", "C'est beaucoup trop cher",
             "배송이 너무 느려요", "👍👍", "", "12345"]
    assert textnorm.detect_language(pl.Series(texts)).to_list() == ["ja", "en", "ja", "other", "other", "other", "", "other"]


# ---------------------------------------------------------------- the bad-input corpus (tests/fixtures/clean/bad)

# file → (error regex) or (kept response ids, quarantine reasons by row, parser)
CORPUS: dict[str, str | tuple[list[str], dict[int, str], str]] = {
    "cp932.csv": (["R1"], {}, "polars-csv"),
    "mixed_encoding.csv": r"raw/mixed_encoding.csv: not valid utf-8: bytes [0-9a-f ]+ at byte offset \d+, line 3; ",
    "unclosed_quote.csv": r"raw/unclosed_quote.csv: line 3: broken quoting",
    "text_after_quote.csv": r"raw/text_after_quote.csv: line 3: broken quoting",
    "stray_quote.csv": (["R1", "R2"], {}, "python-csv"),
    "ragged.csv": (["R1", "R4"], {2: "ragged_row:4_fields_expected_11", 3: "ragged_row:12_fields_expected_11"}, "polars-csv"),
    "missing_column.csv": r"raw/missing_column.csv: missing column\(s\) \['顧客ID', '満足度', '努力度', .*header has \['回答ID'",
    "out_of_range.csv": (["R6", "R7"], {1: "nps_out_of_range:推奨度", 2: "csat_out_of_range:満足度", 3: "ces_out_of_range:努力度",
                                       4: "nps_out_of_range:推奨度", 5: "nps_not_a_number:推奨度",
                                       8: "bad_timestamp:回答日時", 9: "bad_timestamp:回答日時"}, "polars-csv"),
    "empty.csv": r"raw/empty.csv: empty file",
    "header_only.csv": ([], {}, "polars-csv"),
    "invisible_emoji.csv": (["R1", "R2"], {}, "polars-csv"),
    "script.csv": (["R1", "R2"], {}, "polars-csv"),
    "pii.csv": ([f"R{i}" for i in range(1, 15)], {15: "nps_out_of_range:推奨度"}, "polars-csv"),
}


def corpus_source(name: str) -> SurveySource:
    return SurveySource(name="survey", path=f"raw/{name}", columns=JA_COLUMNS, text_columns={"comment": "ご意見・ご要望"})


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bad_input_corpus_gives_the_documented_outcome(tmp_path, name):
    staged(tmp_path, f"bad/{name}")
    expected = CORPUS[name]
    if isinstance(expected, str):
        with pytest.raises(InputError, match=expected):
            run_one(tmp_path, corpus_source(name))
        return
    kept, reasons, parser = expected
    result = run_one(tmp_path, corpus_source(name), redact_patterns={"MEMBER": r"KM-[0-9]{7}"})
    assert sorted(result.feedback["response_id"].to_list()) == sorted(kept)
    assert dict(zip(result.quarantine["row"].to_list(), result.quarantine["reason"].to_list())) == reasons
    f = result.metrics["files"][0]
    assert f["parser"] == parser and f["rows_in"] == f["rows_kept"] + f["rows_quarantined"]


def test_corpus_texts_are_cleaned_as_documented(tmp_path):
    names = ["invisible_emoji.csv", "script.csv", "stray_quote.csv", "out_of_range.csv", "ragged.csv"]
    staged(tmp_path, *[f"bad/{n}" for n in names])
    sources = [corpus_source(n).model_copy(update={"name": n}) for n in names]  # one source each: ids repeat across files
    result = clean.run(CleanParams(surveys=sources), tmp_path)
    text = {(Path(r["file"]).stem, r["response_id"]): (r["text"], r["text_status"]) for r in result.feedback.iter_rows(named=True)}
    # zero-width characters and the BOM go, NBSP becomes a space, emoji (with skin tone and flags) stay
    assert text[("invisible_emoji", "R1")] == ("ゼロ幅の文字 と絵文字👍🏻🇯🇵", "ok")
    assert text[("invisible_emoji", "R2")] == ("", "empty")
    # tags are stripped, entities decoded then stripped too: no markup survives (reports escape HTML anyway)
    assert text[("script", "R1")] == ("alert(1) 使いにくい 太字", "ok")
    assert text[("script", "R2")] == ("画像", "ok")
    assert text[("stray_quote", "R1")] == ('途中の"引用符', "ok")
    assert text[("stray_quote", "R2")] == ("改行を 含む, 引用", "ok")
    assert text[("out_of_range", "R6")][0] == "全角は読める"
    scores = result.feedback.filter(pl.col("file") == "raw/out_of_range.csv").sort("response_id").select("nps", "csat", "ces").rows()
    assert scores == [(10, 4, 3), (None, None, None)]  # full-width "１０" reads as 10; blank scores are null
    q = result.quarantine.filter(pl.col("file") == "raw/ragged.csv").sort("row")
    # mapped fields only, by koe field name: a short row shows what it has
    assert q["content"][0] == "response_id=R2 | timestamp=2026/01/05 13:22 | customer_id=C2 | nps=8"


def test_a_one_megabyte_verbatim_is_kept_whole_and_redacted(tmp_path):
    big = ("とても長い感想です。" * 35_000)[:340_000]
    big = big[:170_000] + " 連絡は taro.yamada@example.com まで " + big[170_000:]
    assert len(big.encode("utf-8")) > 1_000_000
    write(tmp_path, "big.csv", [HEADER, f"R1,C1,2026/01/05 13:22,9,5,{big},シニア,app,スマート照明,使用"])
    result = clean.run(params(), tmp_path)
    row = result.feedback.row(0, named=True)
    assert row["text_status"] == "ok" and row["lang"] == "ja" and row["redactions"] == "EMAIL"
    assert len(row["text"]) == len(big) - len("taro.yamada@example.com") + len("[EMAIL]")


def test_no_personal_data_survives_into_any_output(tmp_path):
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    PII = fixtures.PII
    staged(tmp_path, "bad/pii.csv")
    p = CleanParams(surveys=[corpus_source("pii.csv")], redact_patterns={"MEMBER": r"KM-[0-9]{7}"},
                    out_feedback="out/f.parquet", out_tickets="out/t.parquet", out_quarantine="out/q.parquet",
                    metrics_path="out/m.json")
    result = clean.run(p, tmp_path)
    write_result(result, p, tmp_path)
    # metrics are ASCII JSON (\u escapes): compared decoded
    dump = json.dumps(json.loads((tmp_path / "out/m.json").read_text(encoding="ascii")), ensure_ascii=False)
    for name in ("f", "t", "q"):
        dump += json.dumps(pl.read_parquet(tmp_path / f"out/{name}.parquet").rows(), ensure_ascii=False, default=str)
    for kind, values in PII.items():
        for value in values:
            assert value not in dump, (kind, value)
            assert value.replace(" ", "") not in dump.replace(" ", ""), (kind, value)
    texts = result.feedback.sort("row")["text"].to_list()
    assert texts[:3] == ["連絡先は[EMAIL]です", "連絡先は[EMAIL]です", "連絡先は[PHONE]です"]
    assert result.metrics["redactions"] == {"CARD": 2, "EMAIL": 2, "MEMBER": 1, "PHONE": 7, "POSTCODE": 2}
    assert "[EMAIL]" in result.quarantine["content"][0]


# ---------------------------------------------------------------- the fast reader agrees with the exact one

# (A bare CR inside a quoted field is left out: Python's csv module itself splits records there.)
csv_field = st.text(alphabet=st.sampled_from(list('ab,"\n あ\t')), max_size=6)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(csv_field, min_size=1, max_size=5), min_size=1, max_size=12), st.sampled_from([",", "\t"]),
       st.sampled_from(["\n", "\r\n"]))
def test_fast_reader_matches_python_csv(rows, sep, terminator):
    import csv as pycsv
    import io as pyio

    buf = pyio.StringIO()
    writer = pycsv.writer(buf, delimiter=sep, lineterminator=terminator)
    writer.writerow(["h1", "h2", "h3"])
    writer.writerows(rows)
    text = buf.getvalue()
    fast = readers.read_delimited(text, "f.csv", sep)
    exact = readers.read_delimited_python(text, "f.csv", sep)
    assert fast.blank_lines == exact.blank_lines
    assert fast.frame["row"].to_list() == exact.frame["row"].to_list()
    assert fast.ragged.select("row", "n_fields").rows() == exact.ragged.select("row", "n_fields").rows()
    norm = lambda f: f.with_columns(pl.all().exclude("row").fill_null("").str.replace_all("\r", "")).rows()  # noqa: E731
    assert norm(fast.frame) == norm(exact.frame)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("aあかﾞ゛\u3099Ａ① ＆&<>;lt\u200b\u3000\n\t。なし特に-0@ｱ👍\u1100\u1161é\u0301")), max_size=14), max_size=12))
def test_column_fast_paths_equal_the_reference_rules(texts):
    """The column-wise rules (rare rules only where needed) give exactly what the plain expressions give."""
    frame = pl.DataFrame({"t": texts}, schema={"t": pl.String})
    reference = frame.select(textnorm.normalise_text(pl.col("t")))["t"]
    fast = textnorm.normalise_series(frame["t"])
    assert fast.to_list() == reference.to_list()
    na = schema.NON_ANSWERS_DEFAULT
    assert textnorm.text_status_series(fast, na).to_list() == fast.to_frame().select(textnorm.text_status(pl.col("t"), na)).to_series().to_list()
    both = pii.redact(fast.to_frame("t"), "t")
    assert both.rows() == pii._redact_all(fast.to_frame("t"), "t").rows()


def test_a_respondent_repeating_a_comment_is_a_duplicate_verbatim(tmp_path):
    write(tmp_path, "a.csv", [HEADER,
                              "R1,C1,2026/01/05 13:22,9,5,バッテリーがすぐ切れる,シニア,app,スマート照明,使用",
                              "R2,C1,2026/02/05 13:22,8,4, ﾊﾞｯﾃﾘｰがすぐ切れる ,シニア,app,スマート照明,使用",
                              "R3,C2,2026/02/05 13:22,8,4,バッテリーがすぐ切れる,シニア,app,スマート照明,使用"])
    result = clean.run(params(), tmp_path)
    status = dict(zip(result.feedback["response_id"], result.feedback["text_status"]))
    # R2 is C1 again with the same text (after normalisation): its scores count, its text is not modelled twice
    assert status == {"R1": "ok", "R2": "duplicate", "R3": "ok"} and result.metrics["duplicate_texts"] == 1
    assert result.feedback.filter(pl.col("response_id") == "R2")["nps"].to_list() == [8]


# ---------------------------------------------------------------- issue 13: any export, first try

def test_every_html_entity_is_decoded_numeric_named_and_double_encoded():
    frame = pl.DataFrame({"t": ["I can&#039;t log in", "it&rsquo;s slow &hellip;", "&#x2019;ok&#8217;", "&amp;rsquo;twice&amp;#039;",
                                "caf&eacute; &lt;b&gt;bold&lt;/b&gt;"]})
    assert frame.select(textnorm.normalise_text(pl.col("t")))["t"].to_list() == [
        "I can't log in", "it’s slow ...", "’ok’", "’twice'", "café bold"]
    assert textnorm.normalise_series(frame["t"]).to_list() == frame.select(textnorm.normalise_text(pl.col("t")))["t"].to_list()


def test_a_text_rating_mapped_as_a_score_fails_naming_file_column_examples_and_fix(tmp_path):
    rows = [f"R{i},C{i},2026/01/0{i % 9 + 1} 10:00,9,{'positive' if i % 3 else 'negative'},良い,シニア,app,スマート照明,使用"
            for i in range(12)]
    write(tmp_path, "a.csv", [HEADER] + rows)
    with pytest.raises(InputError) as e:
        clean.run(params(), tmp_path)
    msg = str(e.value)
    assert "raw/a.csv" in msg and "'満足度'" in msg and "12 of 12 rows" in msg
    assert "'positive'" in msg and "'negative'" in msg and "columns.rating: 満足度" in msg


def test_most_rows_out_of_range_asks_for_the_scale_and_a_declared_scale_reads_them(tmp_path):
    rows = [f"R{i},C{i},2026/01/05 10:00,9,{i % 3 + 5},良い,シニア,app,スマート照明,使用" for i in range(14)]
    write(tmp_path, "a.csv", [HEADER] + rows)
    with pytest.raises(InputError, match=r"csat_out_of_range.*csat_scale: \[lowest, highest\]"):
        clean.run(params(), tmp_path)
    src = params().surveys[0].model_copy(update={"csat_scale": (1, 7)})
    result = clean.run(CleanParams(surveys=[src]), tmp_path)
    assert result.metrics["rows_kept"] == 14 and sorted(set(result.feedback["csat"])) == [5, 6, 7]


def test_a_few_bad_rows_are_quarantined_not_fatal(tmp_path):
    rows = [f"R{i},C{i},2026/01/05 10:00,{'x' if i < 4 else 9},4,良い,シニア,app,スマート照明,使用" for i in range(10)]
    write(tmp_path, "a.csv", [HEADER] + rows)
    assert clean.run(params(), tmp_path).metrics["rows_quarantined"] == 4


def test_categorical_rating_and_own_segments_reach_the_feedback_table(tmp_path):
    header = "id,when,評価,年代,ご意見"
    write(tmp_path, "a.csv", [header, "1,2026/01/05 10:00, 満足 ,20代,良い", "2,2026/01/06 10:00,不満,３０代,悪い", "3,2026/01/07 10:00,,20代,普通"])
    src = SurveySource(name="s", path="raw/*.csv", columns=SurveyColumns(response_id="id", timestamp="when", rating="評価"),
                       text_columns={"comment": "ご意見"}, segments={"age_band": "年代"})
    fb = clean.run(CleanParams(surveys=[src]), tmp_path).feedback.sort("row")
    assert fb["rating"].to_list() == ["満足", "不満", None] and fb["age_band"].to_list() == ["20代", "30代", "20代"]
    with pytest.raises(ValueError, match="feedback-table columns"):
        SurveySource(name="s", path="x", columns=src.columns, text_columns={"c": "x"}, segments={"channel": "x"})


def test_no_tickets_source_is_fine_and_metrics_say_so(tmp_path):
    write(tmp_path, "a.csv", [HEADER] + ROWS[:3])
    result = clean.run(params(), tmp_path)
    assert len(result.tickets) == 0 and result.metrics["tickets"] == 0
    assert result.metrics["tickets_provided"] is False and result.metrics["surveys_provided"] is True


def test_metrics_json_is_ascii_so_dvc_reads_it_as_text(tmp_path):
    write(tmp_path, "a.csv", [HEADER] + ROWS[:3])
    p = params()
    result = clean.run(p, tmp_path)
    result.metrics["label"] = "ログイン不具合"
    write_result(result, p, tmp_path)
    data = (tmp_path / p.metrics_path).read_bytes()
    assert data.isascii() and json.loads(data)["label"] == "ログイン不具合"
