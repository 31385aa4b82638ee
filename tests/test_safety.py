"""Nothing lost, nothing leaked (issue 15): hostile inputs and killed processes.

CORPUS holds one bad input per probe with the outcome it must have; the slow tests run the whole pipeline on a
small demo plus that corpus, scan every file under data/ and reports/ for the planted personal data, and kill
`dvc repro` mid-stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import yaml

from pipelines import clean, inspect_export, pii, readers, schedule, semantic
from pipelines.readers import InputError
from pipelines.schema import CleanParams, SurveyColumns, SurveySource, TicketSource
from projects import demo_project

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HEADER = "回答ID,顧客ID,回答日時,推奨度,満足度,ご意見・ご要望,ペルソナ,チャネル,製品ライン,ジャーニー"
COLUMNS = SurveyColumns(response_id="回答ID", customer_id="顧客ID", timestamp="回答日時", nps="推奨度", csat="満足度",
                        persona="ペルソナ", channel="チャネル", product="製品ライン", journey="ジャーニー")

# Personal data planted in the corpus; none may reach any output (the scan also checks them NFKC'd and dash-folded).
PLANTED = {
    "POSTCODE": ["〒１５０ー０００１"],
    "PHONE": ["０９０ー１２３４ー５６７８", "090−1234−5678", "+33 1 23 45 67 89", "080‐9876‐5432", "+44 (0)20 7946 0958"],
    "CARD": ["4111−1111−1111−1111"],
    "EMAIL": ["hanako.suzuki@example.com", "ｊｉｒｏ＠ｅｘａｍｐｌｅ．ｊｐ"],
    "IP": ["198.51.100.77"],
}
CUSTOMER_EMAIL = "customer.id.is.mail@example.org"  # a mapped customer id holding an e-mail address
UNMAPPED = ["Unmapped-Secret-Value-1", "Requester Taro Unmapped"]  # values of columns koe does not map


def row(rid: str, text: str, ts: str = "2026/01/05 13:22", nps: str = "8", cid: str | None = None, persona: str = "シニア") -> str:
    return f"{rid},{cid or 'C' + rid},{ts},{nps},4,{text},{persona},app,スマート照明,使用"


def dated(n: int, start_month: int = 1) -> list[str]:
    """n ordinary rows spread over 2026 (the bulk the plausible-date window is measured from)."""
    return [row(f"B{i}", f"普通の感想その{i}", ts=f"2026/{(start_month + i) % 12 + 1:02d}/{i % 27 + 1:02d} 10:00") for i in range(n)]


def _csv(lines: list[str], encoding: str = "utf-8", newline: str = "\n") -> bytes:
    return (newline.join(lines) + newline).encode(encoding)


def _cp932_with_bad_sequence() -> bytes:
    head = _csv([HEADER, row("R1", "Excel で保存した CP932")], "cp932", "\r\n")
    return head + b"R2,C2,2026/01/06 10:00,7,4,\x81\x20\x82\xa0,\x83V\x83j\x83A,app,x,y\r\n"


def _utf8_with_lone_0x80() -> bytes:
    return _csv([HEADER, row("R1", "前半は正しい UTF-8 です")]) + "R2,C2,2026/01/06 10:00,7,4,壊れた".encode() + b"\x80" + "バイト,シニア,app,x,y\n".encode()


# --- the bad-input corpus: file → (bytes, expected outcome) ------------------------------------------------------
# An expected outcome is either an InputError pattern (the stage refuses, naming file, offset, line and bytes), or a
# dict: rows_in, kept response ids, quarantine reasons by row, texts by response id, and strings that must not occur
# anywhere in the clean outputs.
CORPUS: dict[str, tuple[bytes, str | dict]] = {
    # 2. decoding that refuses rather than guesses
    "cp932_bad_sequence.csv": (
        _cp932_with_bad_sequence(),
        r"raw/cp932_bad_sequence.csv: not valid cp932 \(also tried utf-8, euc-jp\): bytes 81 20 at byte offset 201, line 3; ",
    ),
    "utf8_lone_0x80.csv": (_utf8_with_lone_0x80(), r"raw/utf8_lone_0x80.csv: not valid utf-8: bytes 80 at byte offset 267, line 3; "),
    "euc_jp.csv": (_csv([HEADER, row("R1", "EUC-JP で保存されたファイル")], "euc-jp"),
                   {"rows_in": 1, "kept": ["R1"], "texts": {"R1": "EUC-JP で保存されたファイル"}, "encoding": "euc-jp"}),
    "utf16.csv": ("\ufeff".encode("utf-16-le") + _csv([HEADER, row("R1", "UTF-16 のファイル")], "utf-16-le"),
                  {"rows_in": 1, "kept": ["R1"], "texts": {"R1": "UTF-16 のファイル"}, "encoding": "utf-16"}),
    "c1_controls.csv": (_csv([HEADER, row("R1", "制御\u0080文字\u0085と\u009fC1\u0007")]),
                        {"rows_in": 1, "kept": ["R1"], "texts": {"R1": "制御文字とC1"}}),
    # 3. personal data written with full-width digits, dash variants and international formats
    "pii_variants.csv": (
        _csv([HEADER] + [row(f"P{i}", f"連絡先は{v}です") for i, v in enumerate(v for vs in PLANTED.values() for v in vs)]
             + [row("P90", "IDがメール", cid=CUSTOMER_EMAIL), row("P91", "区分がメール", persona="hanako.suzuki@example.com")]),
        {"rows_in": 12, "kept": [f"P{i}" for i in range(10)] + ["P90", "P91"],
         "texts": {"P0": "連絡先は[POSTCODE]です", "P1": "連絡先は[PHONE]です", "P2": "連絡先は[PHONE]です",
                   "P3": "連絡先は[PHONE]です", "P4": "連絡先は[PHONE]です", "P5": "連絡先は[PHONE]です",
                   "P6": "連絡先は[CARD]です", "P7": "連絡先は[EMAIL]です", "P8": "連絡先は[EMAIL]です", "P9": "連絡先は[IP]です"},
         "absent": [CUSTOMER_EMAIL, "hanako.suzuki"]},
    ),
    # 4. the quarantine holds mapped fields only: a ragged row with an unmapped column, a header named like a koe field
    "ragged_unmapped.csv": (
        _csv([HEADER + ",IPアドレス,メモ", row("R1", "正常") + ",198.51.100.77,Unmapped-Secret-Value-1",
              row("R2", "列が多い") + ",198.51.100.77,Unmapped-Secret-Value-1,extra"]),
        {"rows_in": 2, "kept": ["R1"], "reasons": {2: "ragged_row:13_fields_expected_12"}, "absent": UNMAPPED + ["198.51.100.77"]},
    ),
    # 5. dates nobody checks: far outside the file's bulk → quarantined with the value shown
    "implausible_dates.csv": (
        _csv([HEADER] + dated(20) + [row("D1", "未来", ts="9999/12/31 00:00"), row("D2", "紀元", ts="0001/01/01 00:00"),
                                     row("D3", "百年前", ts="1900/01/01 00:00"), row("D4", "2050", ts="2050/01/01 00:00")]),
        {"rows_in": 24, "kept": [f"B{i}" for i in range(20)],
         "reasons": {21: "implausible_timestamp:回答日時", 22: "implausible_timestamp:回答日時",
                     23: "implausible_timestamp:回答日時", 24: "implausible_timestamp:回答日時"},
         "content": {21: "timestamp=9999/12/31 00:00", 24: "timestamp=2050/01/01 00:00"}},
    ),
    # 7. a bare CR ends a record: five records are five rows, not four
    "bare_cr.csv": (_csv([HEADER] + [row(f"R{i}", f"旧Mac{i}") for i in range(1, 6)], newline="\r"),
                    {"rows_in": 5, "kept": ["R1", "R2", "R3", "R4", "R5"]}),
}


def _stage(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / "raw" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _run_one(tmp: Path, name: str, **kw) -> clean.CleanResult:
    src = SurveySource(name="survey", path=f"raw/{name}", columns=COLUMNS, text_columns={"comment": "ご意見・ご要望"}, **kw)
    return clean.run(CleanParams(surveys=[src]), tmp)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bad_input_corpus_gives_the_documented_outcome(tmp_path, name):
    data, expected = CORPUS[name]
    _stage(tmp_path, name, data)
    if isinstance(expected, str):
        with pytest.raises(InputError, match=expected):
            _run_one(tmp_path, name)
        return
    result = _run_one(tmp_path, name)
    f = result.metrics["files"][0]
    assert f["rows_in"] == expected["rows_in"] == f["rows_kept"] + f["rows_quarantined"]
    assert sorted(result.feedback["response_id"].to_list()) == sorted(
        ["pii-" + hashlib.sha256(k.encode()).hexdigest()[:16] if k == CUSTOMER_EMAIL else k for k in expected["kept"]])
    assert dict(zip(result.quarantine["row"].to_list(), result.quarantine["reason"].to_list())) == expected.get("reasons", {})
    texts = dict(zip(result.feedback["response_id"].to_list(), result.feedback["text"].to_list()))
    for rid, text in expected.get("texts", {}).items():
        assert texts[rid] == text, rid
    if "encoding" in expected:
        assert f["encoding"] == expected["encoding"]
    content = dict(zip(result.quarantine["row"].to_list(), result.quarantine["content"].to_list()))
    for r, part in expected.get("content", {}).items():
        assert part in content[r]
    dump = json.dumps([result.feedback.rows(), result.quarantine.rows(), result.metrics], ensure_ascii=False, default=str)
    for value in expected.get("absent", []):
        assert value not in dump, value


def test_the_cp932_offset_is_the_bad_bytes_even_with_japanese_headers():
    data = _cp932_with_bad_sequence()
    offset = data.index(b"\x81\x20")
    with pytest.raises(InputError, match=rf"byte offset {offset}, line 3"):
        readers.decode(data, "x.csv")
    assert offset == 201
    # an ASCII file with a lone 0x80: CP932 would read it as U+0080, but Shift_JIS never writes that byte
    with pytest.raises(InputError, match=r"x.csv: not valid utf-8 \(also tried cp932, euc-jp\): bytes 80 at byte offset 15, line 2"):
        readers.decode(b"id,text\nR1,bad \x80 byte\n", "x.csv")


def test_koe_init_refuses_the_same_bytes_with_the_same_message(tmp_path):
    path = _stage(tmp_path, "cp932_bad_sequence.csv", _cp932_with_bad_sequence())
    with pytest.raises(InputError, match=r"not valid cp932 .*bytes 81 20 at byte offset 201, line 3"):
        inspect_export.inspect_file(path)


def test_a_customer_id_with_an_email_is_pseudonymised_the_same_in_surveys_and_tickets(tmp_path):
    _stage(tmp_path, "s.csv", _csv([HEADER, row("R1", "ok", cid=CUSTOMER_EMAIL)]))
    ticket = {"id": "T1", "requester_id": CUSTOMER_EMAIL, "created_at": "2026-01-05T10:00:00+09:00", "status": "open",
              "via": "email", "description": "電話は０９０ー１２３４ー５６７８"}
    _stage(tmp_path, "t.jsonl", (json.dumps(ticket, ensure_ascii=False) + "\n").encode())
    src = SurveySource(name="survey", path="raw/s.csv", columns=COLUMNS, text_columns={"comment": "ご意見・ご要望"})
    result = clean.run(CleanParams(surveys=[src], tickets=TicketSource(path="raw/t.jsonl")), tmp_path)
    pseudonym = "pii-" + hashlib.sha256(CUSTOMER_EMAIL.encode()).hexdigest()[:16]
    assert result.feedback["customer_id"].to_list() == [pseudonym] == result.tickets["customer_id"].to_list()
    assert result.tickets["text"].to_list() == ["電話は[PHONE]"]
    assert result.metrics["redacted_fields"] == {"feedback.customer_id": 1, "tickets.customer_id": 1}


def test_quarantined_tickets_keep_only_the_fields_koe_reads(tmp_path):
    lines = [
        {"id": "T1", "requester_id": "C1", "requester_name": "Requester Taro Unmapped", "ip": "198.51.100.77",
         "created_at": "2026-01-05T10:00:00+09:00", "first_reply_at": "2026-01-04T10:00:00+09:00", "description": "返信が先"},
        {"id": "T2", "requester_id": "C2", "requester_name": "Requester Taro Unmapped", "created_at": "2026-01-05T11:00:00+09:00"},
    ]
    text = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + '\n{"id": "T3", "requester_name": "Requester Taro Unmapped", \n'
    tk, q, _ = clean.clean_tickets(text.splitlines(), TicketSource(path="t.jsonl"), "t.jsonl", CleanParams(surveys=[]))
    assert dict(zip(q["row"].to_list(), q["reason"].to_list())) == {1: "reply_before_creation", 3: "bad_json:col_59"}
    dump = json.dumps(q.rows(), ensure_ascii=False)
    assert "Requester Taro Unmapped" not in dump and "198.51.100.77" not in dump
    assert "id=T1 | requester_id=C1" in q["content"][0]


def test_a_header_named_like_a_koe_field_keeps_the_offending_value_in_the_quarantine(tmp_path):
    _stage(tmp_path, "h.csv", _csv(["id,ts,nps,comment", "A1,2026/01/05 10:00,9,良い", "A2,2026/01/05 11:00,11,範囲外"]))
    src = SurveySource(name="s", path="raw/h.csv", columns=SurveyColumns(response_id="id", timestamp="ts", nps="nps"),
                       text_columns={"c": "comment"})
    q = clean.run(CleanParams(surveys=[src]), tmp_path).quarantine
    assert q["reason"].to_list() == ["nps_out_of_range:nps"] and "nps=11" in q["content"][0]


def test_tickets_far_outside_the_bulk_are_quarantined_and_kpis_never_see_year_9999(tmp_path):
    tickets = [{"id": f"T{i}", "requester_id": "C1", "created_at": f"2026-{i % 12 + 1:02d}-05T10:00:00+09:00"} for i in range(12)]
    tickets.append({"id": "T99", "requester_id": "C1", "created_at": "9999-12-31T10:00:00+09:00"})
    tk, q, _ = clean.clean_tickets([json.dumps(t) for t in tickets], TicketSource(path="t"), "t", CleanParams(surveys=[]))
    assert len(tk) == 12 and q["reason"].to_list() == ["implausible_timestamp:created_at"]
    assert "created_at=9999-12-31" in q["content"][0]


# --- 7. semantic checks: params the schema accepts but the data cannot answer -------------------------------------

def _params(**kpis) -> object:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["kpis"].update(kpis)
    from pipelines.schema import KoeParams

    return KoeParams.model_validate(raw)


def test_a_misspelt_segment_and_kpi_key_are_named_with_what_is_valid():
    found = semantic.problems(_params(segments=["persona", "chanel"], meaningful_change={"nps": 10.0, "nsp": 5.0}))
    assert found == [
        "kpis.segments: 'chanel' is not a segment of the data; valid: ['persona', 'channel', 'product', 'journey'] "
        "(map it under clean.surveys[].columns or .segments first)",
        "kpis.meaningful_change: 'nsp' is not a KPI; valid: " + str(list(semantic.KPIS)),
    ]
    assert semantic.problems(_params()) == []


def test_programme_date_and_windows_outside_the_data_are_refused(tmp_path):
    (tmp_path / "data/clean").mkdir(parents=True)
    days = pl.date_range(date(2025, 11, 1), date(2026, 10, 31), "1d", eager=True)
    pl.DataFrame({"date_local": days}).write_parquet(tmp_path / "data/clean/feedback.parquet")
    assert semantic.data_problems(_params(), tmp_path) == []
    found = semantic.data_problems(_params(programme_date="2030-01-01", as_of="2035-01-01"), tmp_path)
    assert len(found) == 2
    assert found[0].startswith("kpis.programme_date: 2030-01-01 leaves the before or after period empty (the data run "
                               "from 2025-11-01 to 2026-10-31); valid: a date after 2025-11-01 and on or before 2026-10-31")
    assert "kpis.as_of = 2035-01-01 with kpis.window_months = 2" in found[1] and "valid: as_of after 2026-01-01 and on or before 2026-12-31" in found[1]
    assert semantic.data_problems(_params(window_months=12), tmp_path)[0].startswith("kpis.as_of (null: the month after the data, 2026-11-01)")


def test_koe_check_and_stage_start_refuse_a_segment_the_data_lack(tmp_path):
    for name in ("notebooks", "pipelines"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["kpis"]["segments"] = ["persona", "chanel"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(tmp_path)}
    for cmd in (["koe", "check"], ["koe", "stage", "kpis"]):
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert "kpis.segments: 'chanel' is not a segment of the data; valid: ['persona', 'channel'" in proc.stderr


# --- 8. length cap before embedding ---------------------------------------------------------------------------------

def test_a_one_megabyte_verbatim_is_cut_before_embedding_and_kept_whole_in_the_clean_table(tmp_path):
    from pipelines import embed

    big = "アプリの設定画面が分かりにくいです。" * 60_000  # ~1.1 M characters
    feedback = pl.DataFrame({"text": [big, "短い感想"], "text_status": ["ok", "ok"]})
    texts = embed.texts_to_embed(feedback)
    embedder = embed.Embedder(threads=2)
    t0 = time.perf_counter()
    table, n = embed.embed_texts(texts, None, embedder, max_chars=2000)
    seconds = time.perf_counter() - t0
    assert n == 2 and seconds < 15, seconds  # uncut: 21 s and 3.7 GB for this one text alone (cut: ~0.4 s idle)
    vec = dict(zip(table["text_hash"].to_list(), table["vector"].to_list()))[texts.filter(pl.col("text") == big)["text_hash"][0]]
    import numpy as np

    assert np.allclose(vec, embedder.embed([big[:2000]])[0], atol=1e-5)
    assert table["max_chars"].to_list() == [2000, 2000]
    # a cached vector made with another cut is not reused for a text longer than the cut; short texts are
    _, n_again = embed.embed_texts(texts, table, embedder, max_chars=1000)
    assert n_again == 1


# --- 6. the run lock lives as long as the process group ----------------------------------------------------------

HOLDER = """
import subprocess, sys, time
from pathlib import Path
from pipelines import schedule
with schedule.run_lock(Path(sys.argv[1]), "2026-01-01"):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=schedule.lock_fds())
    print(child.pid, flush=True)
    time.sleep(60)
"""


def test_the_run_lock_outlives_a_killed_koe_run_while_its_child_runs(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    child = int(proc.stdout.readline())
    try:
        os.kill(proc.pid, signal.SIGKILL)  # `koe run` dies; its `dvc repro` child runs on
        proc.wait()
        with pytest.raises(schedule.RunLocked, match=r"another run is in progress \(pid \d+, as-of 2026-01-01, started .*, process group \d+\)"):
            with schedule.run_lock(tmp_path, "2026-02-01"):
                pass
    finally:
        os.kill(child, signal.SIGKILL)
    for _ in range(50):  # the child gone, the lock is free
        try:
            with schedule.run_lock(tmp_path, "2026-02-01"):
                break
        except schedule.RunLocked:
            time.sleep(0.1)
    else:
        pytest.fail("the lock stayed held after every holder died")


def test_staging_litter_is_cleared_and_run_folders_are_world_readable(tmp_path):
    (tmp_path / "reports/.staging-2026-01-01-abc").mkdir(parents=True)
    (tmp_path / "reports/.replaced-2026-01-01-12").mkdir()
    (tmp_path / "reports/keep").mkdir()
    assert sorted(p.name for p in schedule.clear_staging(tmp_path)) == [".replaced-2026-01-01-12", ".staging-2026-01-01-abc"]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["keep"]
    old = os.umask(0o022)
    try:
        staged = schedule.staging_dir(tmp_path, "2026-02-01")
    finally:
        os.umask(old)
    assert staged.stat().st_mode & 0o777 == 0o755


def test_dvc_yaml_persists_every_output_and_parses_strictly():
    from ruamel.yaml import YAML

    spec = YAML(typ="safe", pure=True).load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))  # duplicate keys fail
    for name, stage in spec["stages"].items():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                (path, opts), = out.items()
                assert opts.get("persist") is True, (name, path)


# --- slow: the whole pipeline on a small demo plus the corpus ------------------------------------------------------

CORPUS_SURVEY = "data/raw/survey_export_9_corpus.csv"  # matches the demo's survey glob (survey_*.csv)


def _corpus_survey() -> bytes:
    planted = [v for vs in PLANTED.values() for v in vs]
    lines = [HEADER]
    lines += [row(f"Z{i}", f"アプリの通知が遅い。連絡先は{v}です", ts=f"2026/0{i % 8 + 1}/1{i % 9} 10:00") for i, v in enumerate(planted)]
    lines += [row("Z50", "IDがメールアドレス", ts="2026/03/03 10:00", cid=CUSTOMER_EMAIL),
              row("Z51", "区分がメールアドレス", ts="2026/03/04 10:00", persona=PLANTED["EMAIL"][0]),
              row("Z52", f"列が多い {PLANTED['PHONE'][0]}", ts="2026/03/05 10:00") + f",{PLANTED['IP'][0]},{UNMAPPED[0]}",
              row("Z53", f"範囲外 {PLANTED['EMAIL'][1]}", ts="2026/03/06 10:00", nps="12"),
              row("Z54", f"未来の日付 {PLANTED['CARD'][0]}", ts="9999/12/31 00:00"),
              row("Z55", f"百年前 {PLANTED['PHONE'][2]}", ts="1900/01/01 00:00")]
    return _csv(lines, newline="\r")  # bare CR line endings as well


def _corpus_tickets() -> str:
    base = {"requester_name": UNMAPPED[1], "ip": PLANTED["IP"][0], "status": "open", "via": "email", "product": "スマート照明"}
    lines = [
        {**base, "id": 900001, "requester_id": CUSTOMER_EMAIL, "created_at": "2026-03-01T10:00:00+09:00",
         "description": f"電話は{PLANTED['PHONE'][0]}、郵便は{PLANTED['POSTCODE'][0]}"},
        {**base, "id": 900002, "requester_id": "C00001", "created_at": "2026-03-02T10:00:00+09:00",
         "first_reply_at": "2026-03-01T10:00:00+09:00", "description": f"カード {PLANTED['CARD'][0]}"},
        {**base, "id": 900003, "requester_id": "C00002", "created_at": "9999-12-31T10:00:00+09:00",
         "description": f"{PLANTED['EMAIL'][0]}"},
    ]
    return "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines) + f'{{"id": 900004, "description": "{PLANTED["EMAIL"][0]}", \n'


def _sh(cmd: list[str], ws: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KOE_ROOT": str(ws), "PYTHONPATH": str(ws)}
    proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=1800, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def corpus_ws(tmp_path_factory) -> Path:
    """A 300-response demo plus the corpus survey and tickets, through `dvc repro` once."""
    ws = demo_project(tmp_path_factory.mktemp("koe-safety"), 300, 60)
    (ws / CORPUS_SURVEY).write_bytes(_corpus_survey())
    with open(ws / "data/raw/tickets.jsonl", "a", encoding="utf-8") as f:
        f.write(_corpus_tickets())
    _sh(["dvc", "repro"], ws)
    return ws


def _as_text(path: Path) -> str:
    """A file as a reader of it would see it: Parquet cells, JSON and notebooks unescaped, HTML entities decoded."""
    import html

    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
        return json.dumps(frame.select(pl.exclude(pl.List, pl.Array)).rows(), ensure_ascii=False, default=str)
    raw = path.read_bytes().decode("utf-8", errors="ignore")
    if path.suffix in (".json", ".ipynb"):
        try:
            return json.dumps(json.loads(raw), ensure_ascii=False)
        except ValueError:
            return raw
    return html.unescape(raw)


def _variants(value: str) -> set[str]:
    import re
    import unicodedata

    nfkc = unicodedata.normalize("NFKC", value)
    folded = re.sub(f"[{pii.DASHES}]", "-", nfkc)
    return {value, nfkc, folded, folded.replace(" ", "")}


@pytest.mark.slow
def test_no_planted_personal_data_in_any_file_under_data_or_reports(corpus_ws):
    files = [p for d in ("data", "reports") for p in sorted((corpus_ws / d).rglob("*")) if p.is_file() and "raw" not in p.parts]
    assert any(p.suffix == ".ipynb" for p in files) and any(p.suffix == ".parquet" for p in files)
    planted = [v for vs in PLANTED.values() for v in vs] + [CUSTOMER_EMAIL] + UNMAPPED
    leaks = [(str(p.relative_to(corpus_ws)), v) for p in files for text in [_as_text(p)] for value in planted
             for v in _variants(value) if v in text or v in text.replace(" ", "")]
    assert leaks == []
    m = json.loads((corpus_ws / "reports/metrics/clean.json").read_text(encoding="ascii"))
    corpus = next(f for f in m["files"] if f["file"] == CORPUS_SURVEY)
    assert corpus["rows_in"] == 16 and corpus["quarantined_by_reason"] == {
        "implausible_timestamp:回答日時": 2, "nps_out_of_range:推奨度": 1, "ragged_row:12_fields_expected_10": 1}
    assert m["redacted_fields"]["feedback.customer_id"] >= 1 and m["redacted_fields"]["feedback.persona"] >= 1


def _snapshot(ws: Path) -> dict[str, str]:
    return {str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("data", "reports") for p in sorted((ws / d).rglob("*")) if p.is_file() and "raw" not in p.parts}


@pytest.mark.slow
def test_kill_9_mid_stage_leaves_previous_outputs_identical_and_the_next_repro_reruns(corpus_ws):
    before = _snapshot(corpus_ws)
    params = yaml.safe_load((corpus_ws / "params.yaml").read_text(encoding="utf-8"))
    params["topics"]["top_n_words"] = 9  # topics and what reads it must re-run
    (corpus_ws / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KOE_ROOT": str(corpus_ws),
           "PYTHONPATH": str(corpus_ws)}
    proc = subprocess.Popen(["dvc", "repro"], cwd=corpus_ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    running = corpus_ws / "reports/notebooks/.03_topics.running.ipynb"
    deadline = time.monotonic() + 600
    while not running.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert running.exists(), "the topics stage never started"
    time.sleep(3)  # inside the notebook: importing BERTopic alone takes longer
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    after = _snapshot(corpus_ws)
    litter = sorted(set(after) - set(before))
    assert all(Path(p).name.startswith(".") for p in litter), litter  # only hidden half-written files
    assert {k: v for k, v in after.items() if k not in litter} == before  # every previous output byte-identical
    again = _sh(["dvc", "repro"], corpus_ws)
    assert "Running stage 'topics'" in again.stdout and "Running stage 'clean'" not in again.stdout
    assert not [p for p in _snapshot(corpus_ws) if Path(p).name.startswith(".")]  # the litter is gone


@pytest.mark.slow
def test_a_failing_clean_stage_leaves_every_output_identical(corpus_ws):
    before = _snapshot(corpus_ws)
    good = (corpus_ws / CORPUS_SURVEY).read_bytes()
    (corpus_ws / CORPUS_SURVEY).write_bytes(good + "Z99,C99,2026/03/07 10:00,7,4,壊れた".encode() + b"\x81\x20\r")
    try:
        proc = _sh(["dvc", "repro"], corpus_ws, check=False)
        assert proc.returncode != 0 and "not valid utf-8: bytes 81 at byte offset" in proc.stderr + proc.stdout
        after = _snapshot(corpus_ws)
        assert set(after) - set(before) == {"reports/notebooks/01_clean.failed.ipynb"}
        assert {k: after[k] for k in before} == before
    finally:
        (corpus_ws / CORPUS_SURVEY).write_bytes(good)
    assert "up to date" in _sh(["dvc", "status"], corpus_ws).stdout  # the restored file is what dvc.lock recorded
