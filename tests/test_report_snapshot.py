"""The test demo's report content (findings, KPI tiles, topic cards) against a committed snapshot.

A refactor must not change what a stakeholder reads. A change that is meant (a statistics fix, a new string) is
recorded by re-running with KOE_UPDATE_SNAPSHOT=1 and committing the snapshot diff with the change, so every change
to the report's content shows up in review.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

pytestmark = pytest.mark.slow

SNAPSHOT = Path(__file__).parent / "fixtures" / "report_snapshot.json"


def _text(node) -> str:
    return re.sub(r"\s+", " ", node.get_text(" ", strip=True)).strip()


def report_content(html: str) -> dict[str, list]:
    soup = BeautifulSoup(html, "html.parser")
    return {
        "findings": [_text(li) for li in soup.select(".koe-summary li")],
        "tiles": [_text(t) for t in soup.select(".koe-tile")],
        "topics": [
            {
                "label": _text(card.select_one("h3")),
                "facts": _text(card.select_one("dl")),
                "words": _text(card.select_one(".koe-words")) if card.select_one(".koe-words") else "",
                "quotes": [_text(q) for q in card.select(".koe-quote")],
            }
            for card in soup.select(".koe-topic")
        ],
    }


def test_report_content_matches_the_snapshot(report_html):
    content = report_content(report_html)
    assert content["findings"] and content["tiles"] and content["topics"], "the report lost a section"
    if os.environ.get("KOE_UPDATE_SNAPSHOT") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(content, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        pytest.skip(f"snapshot written to {SNAPSHOT}: review and commit it")
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    if content != expected:  # the new content beside the old, for a diff in review
        actual = Path(__file__).parent / "artifacts" / "report_snapshot.actual.json"
        actual.parent.mkdir(parents=True, exist_ok=True)
        actual.write_text(json.dumps(content, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    for part in ("findings", "tiles", "topics"):
        assert content[part] == expected[part], (
            f"the report's {part} changed; if meant, re-run with KOE_UPDATE_SNAPSHOT=1 and commit {SNAPSHOT.name}"
        )
