"""Clean stage on tiny exports: decoding, rules, redaction, quarantine, and the row invariant."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import clean
from pipelines.clean import CleanParams, InputError, SurveyColumns, SurveySource, TicketSource

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
    with pytest.raises(InputError, match=rf"raw/bad.csv: not valid utf-8 at byte offset {len(good) + 6}$"):
        clean.decode((tmp_path / "raw" / "bad.csv").read_bytes(), "raw/bad.csv", "utf-8")


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
    out = clean.redact(frame, "t")
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
    out = frame.select(clean.normalise_text(pl.col("t")))["t"].to_list()
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
    raw = clean.records_table([f for _, f in records], [header], "test")
    fb, q = clean.clean_survey(raw, p.surveys[0], "f.csv", p)
    assert fb["row"].n_unique() + len(q) == len(records) - raw.blank_lines
    assert set(fb["row"].to_list()).isdisjoint(q["row"].to_list())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_normalisation_is_idempotent(text):
    once = pl.DataFrame({"t": [text]}).select(clean.normalise_text(pl.col("t")))
    twice = once.select(clean.normalise_text(pl.col("t")))
    assert once["t"][0] == twice["t"][0]
