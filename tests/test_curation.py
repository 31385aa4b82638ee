"""Writing decisions back into params.yaml: only the edited key changes, every comment stays, invalid edits never land."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest
import yaml

from pipelines import curation
from pipelines.params import ParamsError, load

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def params_copy(tmp_path) -> Path:
    target = tmp_path / "params.yaml"
    target.write_bytes((ROOT / "params.yaml").read_bytes())
    return target


def _changed(before: str, after: str) -> list[str]:
    return [d for d in difflib.ndiff(before.splitlines(), after.splitlines()) if d[:1] in "+-"]


def _comments(text: str) -> list[str]:
    return [line[line.index("#"):] for line in text.splitlines() if "#" in line]


def test_a_label_changes_only_that_key_and_keeps_every_comment(params_copy):
    before = params_copy.read_text(encoding="utf-8")
    written = curation.label_topics({3: "ログイン不具合"}, params_copy)
    after = params_copy.read_text(encoding="utf-8")
    assert written == {3: "ログイン不具合"}
    diff = _changed(before, after)
    assert len(diff) == 2, diff
    assert diff[0] == "-   labels: {}               # researcher's Japanese labels by topic id, e.g. {3: ログイン不具合}"
    assert re.fullmatch(r"\+   labels: \{3: ログイン不具合\} {2,}# researcher's Japanese labels by topic id, e\.g\. \{3: ログイン不具合\}", diff[1]), diff
    assert _comments(after) == _comments(before)
    # The pipeline reads what was written, and nothing else moved.
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    assert new["topics"].pop("labels") == {3: "ログイン不具合"}
    old["topics"].pop("labels")
    assert new == old
    assert load(params_copy).topics.labels == {3: "ログイン不具合"}


def test_labels_accumulate_and_an_empty_label_removes_one(params_copy):
    curation.label_topics({3: "ログイン不具合", 5: 'Price: "too high" # not a comment'}, params_copy)
    curation.label_topics({"7": "配送", 3: ""}, params_copy)
    assert load(params_copy).topics.labels == {5: 'Price: "too high" # not a comment', 7: "配送"}
    assert len(_changed((ROOT / "params.yaml").read_text(encoding="utf-8"), params_copy.read_text(encoding="utf-8"))) == 2


def test_merges_are_validated_and_written_in_place(params_copy):
    before = params_copy.read_text(encoding="utf-8")
    assert curation.merge_topics([[4, 1], [7, 2, 2]], params_copy) == [[1, 4], [2, 7]]
    diff = _changed(before, params_copy.read_text(encoding="utf-8"))
    assert len(diff) == 2 and diff[1].startswith("+   merges: [[1, 4], [2, 7]]") and "# groups of topic ids" in diff[1]
    with pytest.raises(ParamsError, match="at least two"):
        curation.merge_topics([[3]], params_copy)
    with pytest.raises(ParamsError, match="more than one merge group"):
        curation.merge_topics([[1, 2], [2, 3]], params_copy)


def test_an_invalid_change_is_refused_and_the_file_left_untouched(params_copy):
    before = params_copy.read_bytes()
    with pytest.raises(ParamsError, match=r"topics\.n_topics"):
        curation.update({"topics.n_topics": "twelve"}, params_copy)
    with pytest.raises(ParamsError, match="at least one seed word"):
        curation.seed_topics({"ログイン不具合": [" "]}, params_copy)
    with pytest.raises(ParamsError, match="no section 'nosuch'"):
        curation.update({"nosuch.key": 1}, params_copy)
    assert params_copy.read_bytes() == before
    assert not [p for p in os.listdir(params_copy.parent) if p != "params.yaml"]  # no temporary file left behind


def test_block_style_values_and_new_keys(tmp_path):
    text = (
        "# header\n"
        "topics:\n"
        "  labels:          # by topic id\n"
        "    3: a\n"
        "    4: b\n"
        "  merges: []       # groups\n"
        "  n_topics: 12\n"
        "\n"
        "# trailer\n"
    )
    out = curation.splice(text, ("topics", "labels"), {1: "x", 2: "y z"})
    assert out == text.replace("    3: a\n    4: b\n", "    1: x\n    2: y z\n")
    out = curation.splice(text, ("topics", "labels"), {})
    assert yaml.safe_load(out)["topics"]["labels"] == {} and "# by topic id" in out and "# trailer" in out
    out = curation.splice(text, ("topics", "seed_topics"), [["ログイン", "パスワード"]])
    assert out == text.replace("  n_topics: 12\n", "  n_topics: 12\n  seed_topics: [[ログイン, パスワード]]\n")
    out = curation.splice("a:\n  b: null   # why\n", ("a", "b"), "2026-09-01")
    assert out == "a:\n  b: '2026-09-01'  # why\n"  # comment kept, two spaces before it


def test_seed_topics_become_the_topics_codebook(params_copy):
    before = params_copy.read_text(encoding="utf-8")
    book = curation.seed_topics({"ログイン不具合": ["ログイン", "パスワード"]}, params_copy, names_en={"ログイン不具合": "Login failures"})
    assert book == [{"name": "ログイン不具合", "name_en": "Login failures", "seed_words": ["ログイン", "パスワード"]}]
    params = load(params_copy)
    assert params.topics.codebook[0].seed_words == ["ログイン", "パスワード"]
    diff = _changed(before, params_copy.read_text(encoding="utf-8"))
    assert len(diff) == 2 and diff[0].startswith("-   codebook: []") and "# guided themes" in diff[1]
