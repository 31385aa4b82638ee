"""Export shapes koe must read on the first try: small, seeded exports of the layouts researchers bring.

Each shape is a few hundred to 1,500 rows, written by ``write_shape(name, folder, seed)``, with verbatims drawn from
the demo's phrase bank (so they carry themes) and a little planted dirt whose size is known. ``SHAPES`` maps each name
to its writer; ``PLANTED`` describes what each shape holds, so a test can loop over shapes: write, ``koe init``,
clean, and check the headline numbers against values it computes from the files itself.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from pipelines.demo_text import _CORE
from pipelines.demo_world import NEG, POS, THEMES

EXCEL_EPOCH = datetime(1899, 12, 30)


def _phrase(rng: random.Random, register: str, positive: bool) -> str:
    """One or two sentences on a theme, in a register (ja_polite, ja_casual, en), of the given polarity."""
    theme = rng.choice([t for t in THEMES if (register, t, POS if positive else NEG) in _CORE])
    first = rng.choice(_CORE[(register, theme, POS if positive else NEG)])
    if rng.random() < 0.4:
        other = rng.choice([t for t in THEMES if (register, t, POS if positive else NEG) in _CORE])
        return first + (" " if register == "en" else "") + rng.choice(_CORE[(register, other, POS if positive else NEG)])
    return first


def _nps_score(rng: random.Random) -> int:
    return rng.choices(range(11), weights=[2, 1, 2, 3, 3, 6, 8, 12, 16, 14, 11])[0]


def _moment(rng: random.Random, start: datetime, days: int) -> datetime:
    return start + timedelta(days=rng.randrange(days), hours=rng.randrange(8, 23), minutes=rng.randrange(60))


def _csv_text(rows: list[list[object]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ the shapes

AGE_BANDS = ("20代", "30代", "40代", "50代", "60代", "70代以上")


def ja_cp932_survey(folder: Path, seed: int) -> list[Path]:
    """(a) Japanese survey, CP932 CSV as Excel saves it; two date formats mixed; an age band (年代); no tickets.

    Planted: 600 data rows; 4 with the date 不明 (bad timestamp); 30 comments 特になし (non-answers).
    """
    rng = random.Random(seed)
    rows: list[list[object]] = [["回答ID", "会員番号", "回答日", "おすすめ度", "満足度", "年代", "ご意見", "地域"]]
    start = datetime(2026, 1, 1)
    for i in range(600):
        when = _moment(rng, start, 181)
        stamp = f"{when.year}/{when.month}/{when.day} {when.hour}:{when.minute:02d}" if i % 2 else when.strftime("%Y年%m月%d日 %H:%M")
        if i in (17, 170, 333, 517):
            stamp = "不明"
        score = _nps_score(rng)
        text = "特になし" if i % 20 == 7 else _phrase(rng, rng.choice(["ja_polite", "ja_casual"]), score >= 7)
        rows.append([f"A{i + 1:05d}", f"M{rng.randrange(1, 450):04d}", stamp, score, min(5, max(1, round(score / 2.2))),
                     rng.choice(AGE_BANDS), text, rng.choice(["関東", "関西", "中部", "九州", "北海道・東北"])])
    path = folder / "アンケート結果_2026上期.csv"
    path.write_bytes(_csv_text(rows).encode("cp932"))
    return [path]


def en_qualtrics_rating(folder: Path, seed: int) -> list[Path]:
    """(b) English Qualtrics export (3 header rows) whose rating is the text positive/negative; no NPS, no tickets.

    Planted: 900 responses; a third of the comments carry HTML entities (&#039; &rsquo; &amp;).
    """
    rng = random.Random(seed)
    ids = ["StartDate", "EndDate", "Status", "Progress", "Duration (in seconds)", "Finished", "RecordedDate",
           "ResponseId", "UserLanguage", "Q1", "Q2", "Q3"]
    text = ["Start Date", "End Date", "Response Type", "Progress", "Duration (in seconds)", "Finished", "Recorded Date",
            "Response ID", "User Language", "Overall, how was your experience?", "Tell us why", "Which plan are you on?"]
    imports = [json.dumps({"ImportId": k}) for k in ("startDate", "endDate", "status", "progress", "duration", "finished",
                                                     "recordedDate", "_recordId", "userLanguage", "QID1", "QID2_TEXT", "QID3")]
    rows: list[list[object]] = [ids, text, imports]
    start = datetime(2026, 3, 1)
    for i in range(900):
        end = _moment(rng, start, 150)
        took = rng.randrange(40, 900)
        good = rng.random() < 0.62
        comment = _phrase(rng, "en", good)
        if i % 3 == 0:
            comment = comment.replace("'", "&#039;", 1).replace(".", " &amp; more.", 1) + " Thanks &rsquo;"
        rows.append([(end - timedelta(seconds=took)).strftime("%Y-%m-%d %H:%M:%S"), end.strftime("%Y-%m-%d %H:%M:%S"),
                     "IP Address", 100, took, "True", end.strftime("%Y-%m-%d %H:%M:%S"), f"R_{rng.getrandbits(52):013x}",
                     "EN", "positive" if good else "negative", comment, rng.choice(["Basic", "Pro", "Enterprise"])])
    path = folder / "Customer_Experience_Survey_Q2.csv"
    path.write_text(_csv_text(rows), encoding="utf-8")
    return [path]


def nps_two_months(folder: Path, seed: int) -> list[Path]:
    """(c) Two months of NPS only (UTF-8 CSV, ISO dates), Japanese comments, a channel column.

    Planted: 500 rows over 2026-09 and 2026-10; 3 scores of 11 (out of range).
    """
    rng = random.Random(seed)
    rows: list[list[object]] = [["id", "customer_id", "answered_at", "nps", "comment", "channel"]]
    start = datetime(2026, 9, 1)
    for i in range(500):
        score = 11 if i in (5, 250, 499) else _nps_score(rng)
        rows.append([f"N{i + 1}", f"C{rng.randrange(1, 380)}", _moment(rng, start, 61).strftime("%Y-%m-%d %H:%M:%S"),
                     score, _phrase(rng, "ja_polite", score >= 7), rng.choice(["web", "app", "phone"])])
    path = folder / "nps_2026-09_10.csv"
    path.write_text(_csv_text(rows), encoding="utf-8")
    return [path]


def zendesk_tickets(folder: Path, seed: int) -> list[Path]:
    """(d) Support tickets only: Zendesk JSON Lines (the fields clean's zendesk preset reads); no survey.

    Planted: 400 tickets; every 10th still open (no solved_at); 2 broken lines.
    """
    rng = random.Random(seed)
    lines = []
    start = datetime(2026, 4, 1)
    for i in range(400):
        created = _moment(rng, start, 120)
        reply = created + timedelta(hours=rng.uniform(0.5, 30))
        solved = None if i % 10 == 0 else reply + timedelta(hours=rng.uniform(1, 72))
        fmt = "%Y-%m-%dT%H:%M:%S+09:00"
        lines.append(json.dumps({
            "id": 50_000 + i, "requester_id": f"U{rng.randrange(1, 300)}", "created_at": created.strftime(fmt),
            "first_reply_at": reply.strftime(fmt), "solved_at": solved.strftime(fmt) if solved else None,
            "status": "open" if solved is None else "solved", "via": rng.choice(["web", "email", "phone"]),
            "product": rng.choice(["スマート照明", "スマートロック"]),
            "description": _phrase(rng, rng.choice(["ja_polite", "en"]), False),
        }, ensure_ascii=False))
    lines[100:100] = ["{broken", "not json at all"]
    path = folder / "zendesk_tickets.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [path]


def many_segments(folder: Path, seed: int) -> list[Path]:
    """(e) A survey whose store column has 150 values (and a 3-valued channel); NPS, Japanese comments.

    Planted: 1,200 rows; every store appears at least 3 times.
    """
    rng = random.Random(seed)
    rows: list[list[object]] = [["response_id", "submitted_at", "nps", "comment", "store", "channel"]]
    start = datetime(2026, 1, 1)
    for i in range(1200):
        score = _nps_score(rng)
        store = f"店舗{(i % 150) + 1:03d}" if i < 450 else f"店舗{rng.randrange(1, 151):03d}"
        rows.append([f"S{i + 1:05d}", _moment(rng, start, 240).strftime("%Y-%m-%d %H:%M"), score,
                     _phrase(rng, "ja_polite", score >= 7), store, rng.choice(["web", "app", "store"])])
    path = folder / "store_survey.csv"
    path.write_text(_csv_text(rows), encoding="utf-8")
    return [path]


def csat_1_7(folder: Path, seed: int) -> list[Path]:
    """(f) CSAT on a 1–7 scale (no NPS), English and Japanese comments, a product column.

    Planted: 700 rows; answers 1–7 all present.
    """
    rng = random.Random(seed)
    rows: list[list[object]] = [["Response ID", "Date", "Satisfaction", "Comment", "Product"]]
    start = datetime(2026, 2, 1)
    for i in range(700):
        score = (i % 7) + 1 if i < 14 else rng.choices(range(1, 8), weights=[3, 3, 5, 8, 12, 14, 10])[0]
        rows.append([f"F-{i + 1}", _moment(rng, start, 180).strftime("%Y-%m-%d %H:%M"), score,
                     _phrase(rng, rng.choice(["en", "ja_polite"]), score >= 5), rng.choice(["lights", "lock", "vacuum"])])
    path = folder / "csat_survey_2026.csv"
    path.write_text(_csv_text(rows), encoding="utf-8")
    return [path]


def xlsx_excel_serials(folder: Path, seed: int) -> list[Path]:
    """(g) An .xlsx whose timestamps are Excel serial numbers (days since 1899-12-30); NPS and CSAT 1–5.

    Planted: 1,000 rows (the benchmark size); 5 blank NPS cells (kept, score missing).
    """
    import xlsxwriter

    rng = random.Random(seed)
    path = folder / "survey_results.xlsx"
    book = xlsxwriter.Workbook(path)
    sheet = book.add_worksheet("Responses")
    sheet.write_row(0, 0, ["ID", "Timestamp", "NPS", "CSAT", "Comment", "Region"])
    start = datetime(2025, 11, 1)
    for i in range(1000):
        when = _moment(rng, start, 300)
        serial = round((when - EXCEL_EPOCH).total_seconds() / 86_400, 6)
        score = _nps_score(rng)
        sheet.write_number(i + 1, 0, 10_000 + i)
        sheet.write_number(i + 1, 1, serial)
        if i % 200 != 3:
            sheet.write_number(i + 1, 2, score)
        sheet.write_number(i + 1, 3, min(5, max(1, round(score / 2.2))))
        sheet.write_string(i + 1, 4, _phrase(rng, rng.choice(["ja_polite", "ja_casual", "en"]), score >= 7))
        sheet.write_string(i + 1, 5, rng.choice(["North", "South", "East", "West"]))
    book.close()
    return [path]


SHAPES: dict[str, Callable[[Path, int], list[Path]]] = {
    "ja_cp932_survey": ja_cp932_survey,
    "en_qualtrics_rating": en_qualtrics_rating,
    "nps_two_months": nps_two_months,
    "zendesk_tickets": zendesk_tickets,
    "many_segments": many_segments,
    "csat_1_7": csat_1_7,
    "xlsx_excel_serials": xlsx_excel_serials,
}


def write_shape(name: str, folder: str | Path, seed: int = 0) -> list[Path]:
    """Write the export(s) of shape ``name`` into ``folder`` (created); returns the files written."""
    if name not in SHAPES:
        raise KeyError(f"unknown shape {name!r}; shapes are {list(SHAPES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return SHAPES[name](folder, seed)
