"""Tests for pipelines.demo: formats, dirt and planted truths of the demo exports."""

from __future__ import annotations

import calendar
import csv
import io
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pydantic
import pytest

from pipelines.demo import (
    HEADER,
    SURVEY_FILES,
    TICKETS_FILE,
    DemoParams,
    generate,
)
from pipelines.demo_world import NON_ANSWERS, SCRIPT_VERBATIMS, THEMES

TICKET_KEYS = {
    "id", "requester_id", "created_at", "first_reply_at", "solved_at", "status", "via", "product", "description"
}  # fmt: skip
ENCODINGS = {SURVEY_FILES[0]: "utf-8-sig", SURVEY_FILES[1]: "cp932"}


def _run(root: Path, **kw: int) -> dict:
    params = DemoParams(**kw)
    summary = generate(params, root)
    truth = json.loads((root / params.truth_path).read_text(encoding="utf-8"))
    return {"root": root, "raw": root / params.raw_dir, "summary": summary, "truth": truth}


def _records(path: Path) -> list[list[str]]:
    """All CSV records after the header; blank lines come back as []."""
    text = path.read_bytes().decode(ENCODINGS[path.name])
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == HEADER.split(",")
    return rows[1:]


def _responses(raw: Path) -> list[dict[str, str]]:
    """Unique responses of both surveys (first occurrence of each 回答ID), blank lines skipped."""
    seen: dict[str, dict[str, str]] = {}
    columns = HEADER.split(",")
    for name in SURVEY_FILES:
        for rec in _records(raw / name):
            if rec:
                seen.setdefault(rec[0], dict(zip(columns, rec)))
    return list(seen.values())


def _tickets(raw: Path) -> list[dict]:
    return [json.loads(line) for line in (raw / TICKETS_FILE).read_text(encoding="utf-8").splitlines()]


def _int_in(value: str, lo: int, hi: int) -> bool:
    return value.lstrip("-").isdigit() and lo <= int(value) <= hi


def _is_japanese(ch: str) -> bool:
    """Kana (full- or half-width) or a CJK ideograph."""
    return "\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" or "\uff66" <= ch <= "\uff9f"


def _nps(scores: list[int]) -> float:
    a = np.array(scores)
    return 100 * (np.mean(a >= 9) - np.mean(a <= 6))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _run(tmp_path_factory.mktemp("small"), n_responses=600, n_tickets=300)


@pytest.fixture(scope="module")
def moderate(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _run(tmp_path_factory.mktemp("moderate"), n_responses=3000, n_tickets=1500)


def test_params_are_strict() -> None:
    with pytest.raises(pydantic.ValidationError):
        DemoParams(n_respones=10)


def test_same_params_give_identical_bytes_and_seed_changes_them(small: dict, tmp_path: Path) -> None:
    again = _run(tmp_path / "again", n_responses=600, n_tickets=300)
    other = _run(tmp_path / "other", n_responses=600, n_tickets=300, seed=7)
    for name in (*SURVEY_FILES, TICKETS_FILE):
        assert (small["raw"] / name).read_bytes() == (again["raw"] / name).read_bytes(), name
        assert (small["raw"] / name).read_bytes() != (other["raw"] / name).read_bytes(), name
    truth_path = DemoParams().truth_path
    assert (small["root"] / truth_path).read_bytes() == (again["root"] / truth_path).read_bytes()


def test_utf8_export_has_bom_lf_and_emoji(small: dict) -> None:
    data = (small["raw"] / SURVEY_FILES[0]).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8")
    assert text[1:].startswith(HEADER + "\n")
    assert "\r" not in text
    assert any(e in text for e in ("😡", "👍", "🙏"))


def test_cp932_export_is_excel_style(small: dict) -> None:
    data = (small["raw"] / SURVEY_FILES[1]).read_bytes()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    text = data.decode("cp932")
    assert text.startswith(HEADER + "\r\n")
    records = _records(small["raw"] / SURVEY_FILES[1])
    # Every record and blank line ends in CRLF (line breaks inside quoted fields stay LF).
    assert text.count("\r\n") == 1 + len(records)
    assert text.endswith("\r\n")
    assert "?" in text and not any(e in text for e in ("😡", "👍", "🙏"))


def test_row_counts_match_truth(small: dict) -> None:
    counts = small["truth"]["counts"]
    blank = 0
    for name in SURVEY_FILES:
        records = _records(small["raw"] / name)
        assert sum(1 for r in records if r) == counts["rows"][name] == small["summary"]["rows"][name]
        assert all(len(r) == 10 for r in records if r)
        blank += sum(1 for r in records if not r)
    assert blank == counts["blank_lines"] > 0
    assert len(_tickets(small["raw"])) == counts["rows"][TICKETS_FILE] == 300


def test_dates_split_at_programme_and_ids_unique(small: dict) -> None:
    for name, (lo, hi) in zip(SURVEY_FILES, (("2025/11/01", "2026/04/30"), ("2026/05/01", "2026/10/31"))):
        dates = [r[2][:10] for r in _records(small["raw"] / name) if r]
        assert lo <= min(dates) and max(dates) <= hi
    responses = _responses(small["raw"])
    assert len(responses) == 600
    assert all(r["回答ID"].startswith("R") and r["顧客ID"].startswith("C") for r in responses)
    # Customers answer more than once.
    assert len({r["顧客ID"] for r in responses}) < len(responses)


def test_every_theme_present_and_matches_comments(small: dict) -> None:
    truth = small["truth"]
    assert truth["themes"] == list(THEMES) and len(THEMES) >= 9
    assert set(truth["theme_by_response"].values()) == set(THEMES)
    assert set(truth["theme_by_ticket"].values()) == set(THEMES)
    by_id = {r["回答ID"]: r["ご意見・ご要望"] for r in _responses(small["raw"])}
    themed = [by_id[rid] for rid in truth["theme_by_response"]]
    assert all(t.strip() and t not in NON_ANSWERS for t in themed)
    lengths = [len(t) for t in themed]
    assert min(lengths) >= 10 and max(lengths) <= 160
    assert len(set(themed)) > 0.6 * len(themed)  # composed, not a handful of canned strings
    # Japanese comments may start with Latin words (Wi-Fi, UI, QR, Bluetooth); English ones never contain kana.
    english = sum(not any(_is_japanese(ch) for ch in t) for t in themed)
    assert 0.08 < english / len(themed) < 0.25


def test_login_failure_only_in_sep_oct(moderate: dict) -> None:
    truth = moderate["truth"]
    month = {r["回答ID"]: r["回答日時"][:7] for r in _responses(moderate["raw"])}
    per_month: dict[str, list[bool]] = {}
    for rid, theme in truth["theme_by_response"].items():
        per_month.setdefault(month[rid], []).append(theme == "login_failure")
    for m, flags in per_month.items():
        share = sum(flags) / len(flags)
        assert (0.12 < share < 0.30) if m in ("2026/09", "2026/10") else share == 0, m
    created = {str(t["id"]): t["created_at"][:7] for t in _tickets(moderate["raw"])}
    login_months = {created[i] for i, theme in truth["theme_by_ticket"].items() if theme == "login_failure"}
    assert login_months == {"2026-09", "2026-10"}


def test_monthly_volume_is_flat(moderate: dict) -> None:
    months: dict[str, int] = {}
    for r in _responses(moderate["raw"]):
        months[r["回答日時"][:7]] = months.get(r["回答日時"][:7], 0) + 1
    assert len(months) == 12
    # Responses per day of each month: flat up to month-level and sampling noise.
    rates = [count / calendar.monthrange(int(m[:4]), int(m[5:]))[1] for m, count in months.items()]
    assert max(rates) < 1.5 * min(rates)


def test_dirt_is_present_with_recorded_counts(small: dict) -> None:
    truth, raw = small["truth"], small["raw"]
    counts = truth["counts"]

    duplicates = 0
    for name in SURVEY_FILES:
        lines: dict[str, list[str]] = {}
        for rec in _records(raw / name):
            if rec and rec[0] in lines:
                assert rec == lines[rec[0]]  # exact repeat of the same record
                duplicates += 1
            elif rec:
                lines[rec[0]] = rec
    assert duplicates == counts["duplicates"] > 0

    responses = _responses(raw)
    comments = [r["ご意見・ご要望"] for r in responses]
    assert sum(c in NON_ANSWERS for c in comments) == counts["non_answers"] > 0
    assert sum(not c.strip() for c in comments) == counts["blank_comments"] > 0
    out_of_range = [r for r in responses if not (_int_in(r["推奨度"], 0, 10) and _int_in(r["満足度"], 1, 5))]
    assert len(out_of_range) == counts["out_of_range_rows"] > 0
    assert any(r["推奨度"] == "abc" for r in out_of_range)

    survey_text = "\n".join(comments)
    ticket_text = "\n".join(t["description"] for t in _tickets(raw))
    pii = truth["pii_strings"]
    assert len(pii) == counts["pii_rows"] + counts["pii_tickets"]
    assert all(p in survey_text or p in ticket_text for p in pii)
    assert sum(any(p in c for p in pii) for c in comments) == counts["pii_rows"]
    assert any("@" in p for p in pii) and any(p.startswith("〒") for p in pii)
    assert any(p[0] in "0+" for p in pii)  # phone numbers

    file1 = [r[5] for r in _records(raw / SURVEY_FILES[0]) if r]
    assert truth["script_verbatims"] == list(SCRIPT_VERBATIMS)
    for script in SCRIPT_VERBATIMS:
        assert file1.count(script) == 1


def test_nps_rises_in_app_and_web_but_not_in_store(moderate: dict) -> None:
    scores: dict[tuple[str, bool], list[int]] = {}
    usability: dict[tuple[str, bool], list[bool]] = {}
    themes = moderate["truth"]["theme_by_response"]
    for r in _responses(moderate["raw"]):
        key = (r["チャネル"], r["回答日時"] >= "2026/05/01")
        if _int_in(r["推奨度"], 0, 10):
            scores.setdefault(key, []).append(int(r["推奨度"]))
        if r["回答ID"] in themes:
            usability.setdefault(key, []).append(themes[r["回答ID"]] == "usability")
    expected = moderate["truth"]["expected"]["nps"]
    for channel in ("web", "app", "phone", "store"):
        before, after = _nps(scores[(channel, False)]), _nps(scores[(channel, True)])
        assert before == pytest.approx(expected[channel]["before"], abs=1e-3)
        assert after == pytest.approx(expected[channel]["after"], abs=1e-3)
        if channel in ("web", "app"):
            assert after - before >= 15
            assert np.mean(usability[(channel, True)]) < 0.5 * np.mean(usability[(channel, False)])
        else:
            assert abs(after - before) < 10


def test_tickets_shape_and_response_times(moderate: dict) -> None:
    tickets = _tickets(moderate["raw"])
    assert all(set(t) == TICKET_KEYS for t in tickets)
    assert all(isinstance(t["id"], int) and t["requester_id"].startswith("C") for t in tickets)
    assert all(t["created_at"].endswith("+09:00") for t in tickets)
    assert all("2025-11-01" <= t["created_at"][:10] <= "2026-10-31" for t in tickets)
    for t in tickets:
        assert (t["status"] == "solved") == (t["solved_at"] is not None)
        assert t["status"] in ("solved", "open", "pending")
        if t["first_reply_at"] is None:
            assert t["created_at"] >= "2026-10-25" and t["status"] == "open"
    unsolved = sum(t["solved_at"] is None for t in tickets)
    assert 0.05 < unsolved / len(tickets) < 0.12
    assert 0 < sum(t["first_reply_at"] is None for t in tickets) < 0.02 * len(tickets)

    waits: dict[bool, list[float]] = {False: [], True: []}
    for t in tickets:
        if t["first_reply_at"] is not None:
            created = datetime.fromisoformat(t["created_at"])
            hours = (datetime.fromisoformat(t["first_reply_at"]) - created).total_seconds() / 3600
            waits[t["created_at"] >= "2026-05-01"].append(hours)
    before, after = np.median(waits[False]), np.median(waits[True])
    expected = moderate["truth"]["expected"]["first_response_median_h"]
    assert before == pytest.approx(expected["before"], abs=1e-3)
    assert after == pytest.approx(expected["after"], abs=1e-3)
    assert 15 < before < 26 and 2 < after < 4.5
    resolution = moderate["truth"]["expected"]["resolution_median_h"]
    assert resolution["after"] < resolution["before"]
