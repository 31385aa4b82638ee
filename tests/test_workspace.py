"""The workbench API over the session's demo workspace: outputs by name, run metadata, verbatim browsing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest

from pipelines import curation
from pipelines.workspace import OUTPUTS, Workspace, compare_assignments

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ws(workspace) -> Workspace:
    return Workspace.open(workspace / "notebooks" / "explore")  # found from a notebook's folder, as in JupyterLab


def test_every_output_loads_by_name_and_is_fresh(ws, workspace):
    status = ws.status()
    assert status["name"].to_list() == list(OUTPUTS)
    assert {"kpi_drivers", "sentiment_net"} <= set(OUTPUTS)  # every stage's tables, from pipelines.stages
    assert status["fresh"].to_list() == [True] * len(OUTPUTS), status
    for row in status.iter_rows(named=True):
        assert row["rows"] == pl.read_parquet(workspace / row["path"]).height > 0
    assert ws.load("clean").equals(ws.load("feedback"))  # aliases


def test_run_metadata_comes_from_the_run(ws, workspace):
    info = ws.info("topics")
    assert info.stage == "topics" and info.matches_lock and info.params_changed == [] and info.fresh
    assert info.metrics == json.loads((workspace / "reports/metrics/topics.json").read_text(encoding="utf-8"))
    assert info.notebook == workspace / "reports/notebooks/03_topics.ipynb"
    assert ws.info("kpi_tests").metrics.keys() == json.loads((workspace / "reports/metrics/kpis.json").read_text(encoding="utf-8")).keys()


def test_staleness_is_reported(workspace, tmp_path):
    copy = tmp_path / "ws"
    shutil.copytree(workspace, copy, symlinks=True, ignore=shutil.ignore_patterns(".dvc", "raw", "embed"))
    curation.update({"topics.n_topics": Workspace(copy).params.topics.n_topics + 3}, copy / "params.yaml")
    info = Workspace(copy).info("topics")
    assert info.params_changed == ["topics.n_topics"] and info.matches_lock and info.fresh is False
    kpis = copy / "data/kpis/tests.parquet"
    kpis.write_bytes(kpis.read_bytes())  # same bytes: still what dvc.lock recorded
    assert Workspace(copy).info("kpi_tests").fresh
    pl.read_parquet(kpis).head(3).write_parquet(kpis)
    assert Workspace(copy).info("kpi_tests").matches_lock is False
    (copy / "dvc.lock").unlink()
    assert Workspace(copy).info("topics").fresh is None  # no record, no claim
    (copy / "data/kpis/tests.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="koe stage kpis"):
        Workspace(copy).load("kpi_tests")
    with pytest.raises(KeyError, match="outputs are feedback, tickets"):
        Workspace(copy).load("nps")


def test_verbatims_by_topic_segment_and_period(ws):
    a = ws.load("assignments")
    topic = int(ws.load("topics").filter(pl.col("emerging"))["topic"][0])
    periods = sorted(a["period"].unique().to_list())
    got = ws.verbatims(topic=topic, segment="channel", value="app", period=f"{periods[-2]}..{periods[-1]}", limit=None)
    expected = a.filter((pl.col("topic") == topic) & (pl.col("channel") == "app") & pl.col("period").is_in(periods[-2:]))
    assert len(got) == len(expected) > 0
    assert set(got["verbatim_id"]) == set(expected["verbatim_id"])
    assert got["label"].unique().to_list() == [ws.labels()[topic]]
    assert got["period"].to_list() == sorted(got["period"].to_list(), reverse=True)  # newest first
    assert len(ws.verbatims(period=periods[0], limit=7)) == 7
    with pytest.raises(ValueError, match="segment column"):
        ws.verbatims(value="app")
    with pytest.raises(KeyError, match="no segment column 'region'"):
        ws.verbatims(segment="region")
    table = ws.crosstab("channel", period=periods[-1])
    assert int(table.select(pl.exclude("topic", "label")).sum_horizontal().sum()) == (a["period"] == periods[-1]).sum()


def test_documents_and_views_line_up_with_the_pipeline(ws):
    docs, vectors = ws.documents()
    assert docs["verbatim_id"].to_list() == ws.load("assignments")["verbatim_id"].to_list()
    assert vectors.shape == (len(docs), 512) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)
    over = ws.over_time_for_bertopic()
    assert list(over.columns) == ["Topic", "Words", "Frequency", "Timestamp"]
    assert over["Frequency"].sum() == len(docs)


def test_the_saved_model_loads_labelled_and_places_new_text(ws):
    model = ws.model()
    topics = ws.load("topics")
    login = topics.filter(pl.col("emerging")).row(0, named=True)
    model_labels = dict(zip(sorted(model.topic_labels_), model.custom_labels_))
    # every model topic carries the label of the table topic it belongs to
    for row in topics.filter(pl.col("topic") != -1).iter_rows(named=True):
        assert {model_labels[r] for r in row["raw_topics"]} == {row["label"]}
    text = "アプリをアップデートしたらログインできなくなりました。パスワードも通りません。"
    predicted, _ = model.transform([text])
    assert int(predicted[0]) in login["raw_topics"]
    placed = ws.place([text, "The app logs me out after the update and I cannot sign in again."])
    assert placed["topic"].to_list() == [login["topic"]] * 2 and placed["label"][0] == login["label"]


def test_placing_the_modelled_verbatims_again_reproduces_their_topics(ws):
    # The model's topic embeddings are the topics' mean embeddings, so a verbatim goes back to
    # its own topic unless it sits nearer another topic's centre (HDBSCAN clusters are not convex).
    docs, vectors = ws.documents()
    a = ws.load("assignments").sort("verbatim_id")
    model = ws.model(with_embedder=False)
    predicted, _ = model.transform(docs["text"].head(400).to_list(), embeddings=vectors[:400])
    table_ids = [ws._model_to_table()[int(p)] for p in predicted]
    agree = float(np.mean(np.array(table_ids) == a["topic"].head(400).to_numpy()))
    print(f"model.transform agrees with the table on {agree:.1%} of 400 modelled verbatims")
    assert agree >= 0.8


def test_comparing_assignments():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert compare_assignments(a, np.array([5, 5, 3, 3, 4, 4]))["ari"] == pytest.approx(1.0)
    assert compare_assignments(a, np.array([0, 1, 0, 1, 0, 1]))["ari"] < 0.1
    with pytest.raises(ValueError, match="6 vs 5"):
        compare_assignments(a, a[:5])
