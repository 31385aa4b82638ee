"""Topic stage: Japanese tokens, emerging topics, metrics, identity across runs, curation, reproducibility."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipelines import topics
from pipelines.io import write_result, write_value
from pipelines.schema import BOILERPLATE_JA, STOP_WORDS_JA, TopicsParams
from pipelines.topic_words import Tokenizer, topic_diversity
from pipelines.topics import emerging, over_time
from projects import cleaned_demo

ROOT = Path(__file__).resolve().parent.parent


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


def test_two_months_compare_the_last_month_with_the_first_and_one_month_emerges_nothing():
    steady = {("2026-09", 0): 40, ("2026-10", 0): 40, ("2026-09", 1): 30, ("2026-10", 1): 30}
    em = emerging(_assignments({**steady, ("2026-09", 2): 2, ("2026-10", 2): 25}), TopicsParams(emerging_months=2))
    assert dict(zip(em["topic"], em["emerging"])) == {0: False, 1: False, 2: True}
    assert em.filter(pl.col("topic") == 0)["n_before"].item() == 40  # the first month is the baseline
    one = emerging(_assignments({("2026-10", 0): 40, ("2026-10", 1): 30}), TopicsParams())
    assert not one["emerging"].any()


def test_too_few_verbatims_give_an_empty_explained_result_and_every_declared_output(tmp_path):
    from pipelines import topics
    from pipelines.io import write_result
    from pipelines.tables import FEEDBACK_SCHEMA

    pl.DataFrame(schema=FEEDBACK_SCHEMA).write_parquet(tmp_path / "feedback.parquet")
    pl.DataFrame(schema={"text_hash": pl.String, "vector": pl.Array(pl.Float32, 512), "model_id": pl.String}
                 ).write_parquet(tmp_path / "embeddings.parquet")
    params = TopicsParams(in_feedback="feedback.parquet", in_embeddings="embeddings.parquet")
    result = topics.run(params, tmp_path)
    (why,) = result.metrics["skipped"]
    assert "only 0 verbatims" in why["reason"] and "min_cluster_size=15 (hdbscan)" in why["reason"]
    assert "n_topics" not in why["reason"] and "tickets-only" in why["reason"]
    assert result.topics.height == 0 and result.assignments.height == 0
    write_result(result, params, tmp_path)
    for key in ("out_assignments", "out_topics", "out_over_time", "out_by_segment", "out_registry", "umap_cache",
                "metrics_path"):
        assert (tmp_path / getattr(params, key)).is_file(), key
    assert (tmp_path / params.model_dir / "NO_MODEL.txt").is_file()
    kmeans = topics.too_few(30, TopicsParams(clusterer="kmeans", n_topics=12), pl.DataFrame(schema=FEEDBACK_SCHEMA))
    assert kmeans is not None and kmeans["code"] == "no_verbatims"
    assert "topics.n_topics=12 (kmeans)" in kmeans["reason"] and "36 needed" in kmeans["reason"]


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


def test_a_joined_topic_gives_the_words_of_its_verbatims_and_keeps_spaced_english_words(tok):
    """The tokenizer remembers verbatims: a topic joined with spaces reads as its verbatims read one by one."""
    verbatims = ["アプリにログインできない。", "It's been at the repair shop for two weeks.", "Wi-Fi 接続がすぐ切れる",
                 "The smart device was easy to set up.", "配送 が 遅い", "ゴミ箱が使いにくい"]
    one_by_one = [w for v in verbatims for w in Tokenizer(STOP_WORDS_JA + BOILERPLATE_JA)(v)]
    assert tok(" ".join(verbatims)) == one_by_one
    assert "repair shop" in one_by_one and "smart device" in one_by_one  # Sudachi's spaced words stay whole
    assert {"ログイン", "接続", "配送", "遅い", "ゴミ箱"} <= set(one_by_one)


# --------------------------------------------------------------------------- small pure pieces


def test_exact_neighbours_match_a_brute_force_search_with_each_point_first():
    from sklearn.neighbors import NearestNeighbors

    from pipelines.knn import ExactIndex, cosine_knn

    rng = np.random.default_rng(3)
    x = rng.normal(size=(2500, 24)).astype(np.float32)
    x[7] = x[3]  # a duplicate: itself still comes first
    idx, dist = cosine_knn(x, x, 10, exclude_self=True)
    assert (idx[:, 0] == np.arange(len(x))).all() and (dist[:, 0] == 0).all()
    assert idx[3, 1] == 7 and idx[7, 1] == 3 and dist[3, 1] < 1e-6
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(x).kneighbors(x)
    assert np.allclose(np.sort(dist[:, 1:], axis=1), np.sort(ref_dist[:, 1:], axis=1), atol=1e-5)
    assert np.mean(idx[:, 1:] == ref_idx[:, 1:]) > 0.99  # the same neighbours (float ties aside)
    q = rng.normal(size=(5, 24)).astype(np.float32)
    qi, qd = ExactIndex(x).query(q, k=4)
    ri = NearestNeighbors(n_neighbors=4, metric="cosine", algorithm="brute").fit(x).kneighbors(q)[1]
    assert (qi == ri).all() and (np.diff(qd, axis=1) >= 0).all()


@pytest.mark.slow  # UMAP on 4,500 points
def test_umap_above_its_small_data_bound_fits_and_transforms_on_exact_neighbours():
    from umap import UMAP

    from pipelines.knn import ExactIndex

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 64))
    labels = rng.integers(0, 3, 4500)
    x = (centres[labels] + 0.3 * rng.normal(size=(4500, 64))).astype(np.float32)
    reducer = topics.CachedUMAP(UMAP(n_neighbors=15, n_components=2, metric="cosine", random_state=1), None)
    y = reducer.fit_transform(x)
    assert isinstance(reducer.umap._knn_search_index, ExactIndex)  # pynndescent never ran
    assert reducer.umap.get_params()["precomputed_knn"] == (None, None, None)  # the cache key stays array-free
    means = np.stack([y[labels == k].mean(axis=0) for k in range(3)])
    assert (np.linalg.norm(y[:, None, :] - means[None], axis=2).argmin(axis=1) == labels).mean() > 0.99
    new = (centres[[0, 1, 2]] + 0.3 * rng.normal(size=(3, 64))).astype(np.float32)
    placed = reducer.transform(new)
    assert (np.linalg.norm(placed[:, None, :] - means[None], axis=2).argmin(axis=1) == [0, 1, 2]).all()


def test_npmi_matches_hand_computed_values():
    from pipelines.topic_words import npmi_coherence

    docs = [["a", "b"], ["a", "b"], ["a", "c"], ["d"]]
    # p(a)=3/4, p(b)=2/4, p(a,b)=2/4 → log((1/2)/(3/8)) / -log(1/2) = log(4/3)/log 2; (a,d) never co-occur → -1
    expected_ab = float(np.log(4 / 3) / np.log(2))
    scores = npmi_coherence([["a", "b"], ["a", "d"], ["a", "b", "d"]], docs)
    assert scores[0] == pytest.approx(expected_ab)
    assert scores[1] == -1.0
    assert scores[2] == pytest.approx((expected_ab - 1 - 1) / 3)


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_topics_keep_their_ids_across_runs_and_unmatched_ones_are_new():
    from pipelines.topic_ids import match_topics

    registry = pl.DataFrame(
        {"topic": [0, 1, 5], "centroid": [_unit([1, 0, 0, 0]).tolist(), _unit([0, 1, 0, 0]).tolist(), _unit([0, 0, 1, 0]).tolist()]}
    )
    # This run: old topic 5 came back as raw 0, old topic 0 as raw 2 (slightly moved), raw 1 is a new direction.
    current = {0: _unit([0, 0.1, 1, 0]), 1: _unit([0, 0, 0, 1]), 2: _unit([1, 0.2, 0, 0])}
    m = match_topics(current, registry, min_similarity=0.8)
    got = {r["raw"]: (r["topic"], r["new"]) for r in m.iter_rows(named=True)}
    assert got == {0: (5, False), 1: (6, True), 2: (0, False)}  # new ids start above every id ever used
    first = match_topics(current, None, min_similarity=0.8)
    assert first["topic"].to_list() == [0, 1, 2] and not first["new"].any()  # first run: nothing to be new against


def test_merges_use_the_first_id_and_reject_bad_groups():
    from pipelines.topic_ids import apply_merges

    topics = np.array([0, 1, 2, 3, -1, 3])
    assert apply_merges(topics, [[3, 1]]).tolist() == [0, 3, 2, 3, -1, 3]
    with pytest.raises(ValueError, match="outliers"):
        apply_merges(topics, [[1, -1]])
    with pytest.raises(ValueError, match="at least two"):
        apply_merges(topics, [[1]])


# --------------------------------------------------------------------------- on a small demo

N_DEMO = 500


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory):
    """Clean + embedded small demo (the topic stage's real inputs) in a temporary workspace."""
    from pipelines import embed

    ws = tmp_path_factory.mktemp("topics-ws")
    p = cleaned_demo(ws, N_DEMO, 20)
    write_result(embed.run(p.embed, ws), p.embed, ws)
    return ws


@pytest.fixture(scope="module")
def base_params():
    from pipelines import params

    return params.load(ROOT / "params.yaml").topics


@pytest.fixture(scope="module")
def first_run(demo_ws, base_params):
    out = topics.run(base_params, demo_ws)
    write_result(out, base_params, demo_ws)
    return out


@pytest.mark.slow  # BERTopic fits on the demo
def test_topic_words_are_clean_japanese_and_english_words(first_run):
    table = first_run.topics.filter(pl.col("topic") != -1)
    words = [w for ws in table["words"].to_list() for w in ws]
    assert words
    particles = {"の", "が", "に", "て", "は", "を", "で", "と", "も", "です", "ます", "た", "ね", "よ"}
    kana = re.compile(r"^[\u3040-\u30ff]$")
    assert not particles & set(words)
    assert not [w for w in words if kana.match(w)]
    assert not [w for w in words if "-" in w and re.search(r"[\u3040-\u9fff]", w)]  # アプリ-application style glosses
    assert not {"ve", "the", "and", "couldn", "困る", "本当"} & set(words)
    assert all(r["label"] and r["label_en"] for r in table.iter_rows(named=True))
    assert all(3 <= len(x) <= 5 for x in table["examples"].to_list())
    m = first_run.metrics
    assert -1 <= m["coherence_npmi"] <= 1 and 0 < m["topic_diversity"] <= 1 and m["n_topics"] == len(table)


@pytest.mark.slow  # BERTopic fits on the demo
def test_researcher_curation_is_honoured(demo_ws, base_params, first_run):
    table = first_run.topics.filter(pl.col("topic") != -1).sort("size", descending=True)
    a, b = table["topic"][0], table["topic"][1]
    curated = base_params.model_copy(update={
        "merges": [[a, b], [998, 999]], "labels": {a: "使い方と価格", 999: "消えたトピック"}, "labels_en": {a: "Usage and price"},
    })
    r = topics.run(curated, demo_ws)
    assign, t2, metrics = r.assignments, r.topics, r.metrics
    rows = {r["topic"]: r for r in t2.iter_rows(named=True)}
    assert b not in rows and rows[a]["label"] == "使い方と価格" and rows[a]["label_en"] == "Usage and price"
    assert rows[a]["size"] == int((assign["topic"] == a).sum()) == int(table["size"][0] + table["size"][1])
    assert metrics["stale_curation_ids"] == [998, 999]  # ids this run does not have: reported, not fatal


@pytest.mark.slow  # BERTopic fits on the demo
def test_a_codebook_theme_becomes_a_named_topic(demo_ws, base_params):
    guided = base_params.model_copy(update={
        "codebook": [topics.CodebookTheme(name="ログイン不具合", name_en="Login failures",
                                          seed_words=["ログイン", "できない", "アップデート", "login"])],
    })
    r = topics.run(guided, demo_ws)
    assign, t2 = r.assignments, r.topics
    login = t2.filter(pl.col("codebook") == "ログイン不具合")
    assert len(login) == 1 and login["label"][0] == "ログイン不具合" and login["label_en"][0] == "Login failures"
    members = assign.filter(pl.col("topic") == login["topic"][0])["text"].to_list()
    about_login = re.compile(r"ログイン|log ?in|sign ?in", re.I)
    assert sum(bool(about_login.search(t)) for t in members) / len(members) >= 0.8


@pytest.mark.slow  # BERTopic fits on the demo
def test_ids_labels_carry_over_to_a_run_with_changed_parameters(demo_ws, base_params, first_run):
    """The registry written by the first run maps a refit's topics back to the same ids."""
    table = first_run.topics.filter(pl.col("topic") != -1)
    labelled = {t: f"テーマ{t}" for t in table["topic"].to_list()}
    changed = base_params.model_copy(update={"min_cluster_size": base_params.min_cluster_size + 2, "labels": labelled})
    r = topics.run(changed, demo_ws)
    assign, t2 = r.assignments, r.topics
    before = first_run.assignments.select("verbatim_id", pl.col("topic").alias("before"))
    joined = assign.join(before, on="verbatim_id")
    assert (joined["topic"] == joined["before"]).mean() >= 0.8  # same verbatims, same ids
    kept = t2.filter((pl.col("topic") != -1) & ~pl.col("new"))
    assert len(kept) >= 0.7 * len(table)
    assert all(r["label"] == f"テーマ{r['topic']}" for r in kept.iter_rows(named=True))
    assert t2.filter(pl.col("new"))["topic"].min() is None or t2.filter(pl.col("new"))["topic"].min() > table["topic"].max()


_REPRO = """
import hashlib, sys
from pipelines import params, topics
# No registry and a cache of its own: each process fits from scratch.
p = params.load(sys.argv[1]).topics.model_copy(update={"out_registry": "none/registry.parquet", "umap_cache": sys.argv[3]})
r = topics.run(p, sys.argv[2])
a, t, m = r.assignments, r.topics, r.metrics
assert not m["umap_cache_hit"]
print(hashlib.sha1(a.select("verbatim_id", "topic").write_csv().encode()).hexdigest(), "|".join(t["label"]))
"""


@pytest.mark.slow  # BERTopic fits on the demo
def test_same_data_params_seed_give_identical_assignments_in_two_processes(demo_ws):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", _REPRO, str(ROOT / "params.yaml"), str(demo_ws)]
    procs = [subprocess.Popen([*cmd, f"repro/umap_{i}.parquet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outs.append(out.strip().splitlines()[-1])
    assert outs[0] == outs[1]


@pytest.mark.slow  # BERTopic fits on the demo
def test_a_rerun_reads_umap_from_its_cache_with_identical_results(demo_ws, base_params):
    cold_params = base_params.model_copy(update={"out_registry": "none/registry.parquet", "umap_cache": "cache-test/umap.parquet"})
    cold = topics.run(cold_params, demo_ws)
    assert cold.umap_cache is not None and not (demo_ws / cold_params.umap_cache).exists()  # run writes nothing
    write_value(cold.umap_cache, demo_ws / cold_params.umap_cache)
    warm = topics.run(cold_params, demo_ws)
    assert not cold.metrics["umap_cache_hit"] and warm.metrics["umap_cache_hit"]
    assert cold.assignments.select("verbatim_id", "topic").equals(warm.assignments.select("verbatim_id", "topic"))
    # zero-shot themes make BERTopic transform a subset too: cached as well, same result
    guided = cold_params.model_copy(update={"umap_cache": "cache-test/guided.parquet", "codebook": [
        topics.CodebookTheme(name="ログイン不具合", seed_words=["ログイン", "アップデート", "login"])]})
    runs = [topics.run(guided, demo_ws)]
    write_value(runs[0].umap_cache, demo_ws / guided.umap_cache)
    runs.append(topics.run(guided, demo_ws))
    assert [r.metrics["umap_cache_hit"] for r in runs] == [False, True]
    assert runs[0].assignments.select("verbatim_id", "topic").equals(runs[1].assignments.select("verbatim_id", "topic"))
    # other input → the cache does not apply
    fewer = cold_params.model_copy(update={"umap_neighbors": base_params.umap_neighbors - 5})
    assert not topics.run(fewer, demo_ws).metrics["umap_cache_hit"]


def test_the_smallest_topic_scales_with_the_verbatims_fitted(base_params):
    p = base_params.model_copy(update={"min_cluster_size": 15, "min_topic_share": 0.01})
    assert topics.min_cluster_size(p, 500) == 15 and topics.min_cluster_size(p, 20_000) == 200


def test_fit_sample_keeps_every_month_and_language_in_proportion():
    rng = np.random.default_rng(0)
    periods = rng.choice(["2026-01", "2026-02", "2026-03"], 5000, p=[0.6, 0.3, 0.1])
    langs = rng.choice(["ja", "en", "other"], 5000, p=[0.8, 0.19, 0.01])
    docs = pl.DataFrame({"period": periods, "lang": langs})
    sample = topics.fit_sample(docs, 1000, seed=1)
    assert np.array_equal(sample, topics.fit_sample(docs, 1000, seed=1)) and not np.array_equal(sample, topics.fit_sample(docs, 1000, seed=2))
    assert 1000 <= len(sample) <= 1000 + 9 and len(set(sample.tolist())) == len(sample)  # rounded up per stratum
    full = docs.group_by("period", "lang").len()
    got = docs[sample].group_by("period", "lang").len().rename({"len": "kept"})
    both = full.join(got, on=["period", "lang"], how="left")
    assert both["kept"].null_count() == 0  # no stratum dropped, however small
    assert ((both["kept"] - both["len"] / 5).abs() <= 1).all()
    assert np.array_equal(topics.fit_sample(docs, 6000, seed=1), np.arange(5000))


@pytest.mark.slow  # BERTopic fits on the demo
def test_beyond_the_fit_sample_verbatims_go_where_the_saved_model_puts_them(demo_ws, base_params, tmp_path):
    from bertopic import BERTopic

    p = base_params.model_copy(update={
        "fit_max_verbatims": 200, "out_registry": "none/registry.parquet", "umap_cache": "sample-test/umap.parquet",
        "model_dir": str(tmp_path / "model"), "metrics_path": str(tmp_path / "m.json"),
        "out_assignments": str(tmp_path / "a.parquet"), "out_topics": str(tmp_path / "t.parquet"),
        "out_over_time": str(tmp_path / "o.parquet"), "out_by_segment": str(tmp_path / "s.parquet"),
    })
    out = topics.run(p, demo_ws)
    assign, table, metrics = out.assignments, out.topics, out.metrics
    docs, vectors = topics.docs_and_embeddings(pl.read_parquet(demo_ws / p.in_feedback), pl.read_parquet(demo_ws / p.in_embeddings))
    sample = topics.fit_sample(docs, 200, p.seed)
    assert metrics["fitted_verbatims"] == len(sample) < len(docs) == len(assign)
    write_result(out, p, demo_ws)
    saved = BERTopic.load(str(tmp_path / "model"))
    rest = np.setdiff1d(np.arange(len(docs)), sample)
    predicted, _ = saved.transform(docs["text"].to_list(), embeddings=vectors)
    to_table = {r: row["topic"] for row in table.iter_rows(named=True) for r in row["raw_topics"]} | {-1: -1}
    placed = np.array([to_table[int(x)] for x in np.asarray(predicted)[rest]])
    assert np.array_equal(placed, assign["topic"].to_numpy()[rest])


def test_topic_words_are_written_as_people_write_them_and_function_words_go_in_any_form(tok):
    words = tok("ゴミ箱が使いにくいため、それぞれのお客様によって違う事がある。故障の為、修理に出した。アップデートに因る不具合のこと")
    assert {"ゴミ箱", "それぞれ", "お客様", "故障", "修理", "アップデート", "不具合"} <= set(words)
    assert not {"塵箱", "其々", "御客様", "為", "ため", "よる", "因る", "事", "こと"} & set(words)


def test_umap_compiled_code_goes_to_numba_disk_cache():
    """Every compiled UMAP/pynndescent function caches its machine code (else each topics run recompiles ~30 s)."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher
    from umap import umap_

    from pipelines import jit_cache

    jit_cache.enable()
    assert jit_cache.enable() == 0  # nothing left uncached: a second call changes nothing
    compiled = [v for v in vars(umap_).values() if isinstance(v, Dispatcher)]
    assert compiled and not [v for v in compiled if isinstance(v._cache, NullCache)]
