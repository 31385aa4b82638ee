"""Topic stage pieces on tiny inputs: Japanese tokens, emerging topics, diversity."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.topics import STOP_WORDS_JA, BOILERPLATE_JA, Tokenizer, TopicsParams, emerging, over_time, topic_diversity


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(STOP_WORDS_JA + BOILERPLATE_JA)


def test_japanese_compounds_stay_whole_and_variants_normalise(tok):
    words = tok("ｱﾌﾟﾘのアップデート後にログインできない。コスパが悪いし、Wi-Fi接続がすぐ切れる")
    assert "ログイン" in words and "コスパ" in words and "アプリ" in words
    assert "ログ" not in words and "イン" not in words
    assert "接続" in words and "悪い" in words


def test_no_particles_single_kana_or_english_glosses(tok):
    words = tok("アプリの操作が本当に分かりにくくて困ります。毎回設定をやり直すのは大変です")
    assert not {"の", "が", "に", "て", "は", "を", "です", "ます"} & set(words)
    assert all(len(w) > 1 or "\u4e00" <= w <= "\u9fff" for w in words)
    assert not any("-" in w for w in words)  # UniDic-style glosses such as アプリ-application
    assert not {"本当", "困る", "毎回"} & set(words)  # survey boilerplate
    assert "操作" in words and "設定" in words


def test_english_is_lower_cased_without_stop_words(tok):
    words = tok("The app keeps crashing and I can't log in since the update")
    assert {"app", "update", "crashing", "log"} <= set(words)
    assert not {"the", "The", "and", "since", "i"} & set(words)


def test_tokenizer_survives_pickling(tok):
    import pickle

    clone = pickle.loads(pickle.dumps(tok))
    assert clone("ログインできない") == tok("ログインできない")


def _assignments(counts: dict[tuple[str, int], int]) -> pl.DataFrame:
    rows = [{"period": p, "topic": t} for (p, t), n in counts.items() for _ in range(n)]
    return pl.DataFrame(rows, schema={"period": pl.String, "topic": pl.Int64})


def test_emerging_flags_a_new_theme_and_not_a_steady_one():
    counts = {}
    for m in range(1, 11):
        period = f"2026-{m:02d}"
        counts[(period, 0)] = 50  # steady
        counts[(period, 1)] = 30  # steady
        counts[(period, 2)] = 25 if m >= 9 else 1  # appears in the last two months
        counts[(period, 3)] = 4 if m >= 9 else 1  # grows, but too few to call
    em = emerging(_assignments(counts), TopicsParams())
    flags = dict(zip(em["topic"], em["emerging"]))
    assert flags == {0: False, 1: False, 2: True, 3: False}
    row = em.filter(pl.col("topic") == 2).row(0, named=True)
    assert row["n_recent"] == 50 and row["n_before"] == 8


def test_over_time_shares_sum_to_one_per_month():
    a = _assignments({("2026-01", 0): 3, ("2026-01", 1): 1, ("2026-02", 1): 2})
    t = over_time(a)
    assert t.group_by("period").agg(pl.col("share").sum())["share"].to_list() == pytest.approx([1.0, 1.0])
    assert t.filter((pl.col("period") == "2026-01") & (pl.col("topic") == 0))["share"].item() == 0.75


def test_topic_diversity():
    table = pl.DataFrame({"topic": [0, 1, -1], "words": [["a", "b"], ["b", "c"], ["x", "y"]]})
    assert topic_diversity(table) == 0.75  # 3 unique of 4; outliers ignored


def test_a_whole_topic_joined_into_one_text_is_tokenised(tok):
    """c-TF-IDF tokenises one document per topic: far beyond Sudachi's 49 kB input limit."""
    doc = "アプリにログインできない。" * 3
    words = tok(" ".join([doc] * 4000))  # ~156,000 characters
    assert words.count("ログイン") == 3 * 4000
