"""Topics stage: BERTopic over the cached embeddings, with topic words that read as Japanese words.

Japanese is segmented with SudachiPy (split mode C keeps compounds such as ログイン and
コスパ whole, and normalises variants such as ｱﾌﾟﾘ → アプリ); English words pass through
lower-cased with English stop words removed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from pipelines._schema import StrictModel

STOP_WORDS_JA = [
    "する", "ある", "いる", "なる", "れる", "られる", "思う", "いう", "こと", "もの", "よう", "ため", "さん", "これ", "それ",
    "あれ", "どれ", "ここ", "そこ", "方", "時", "中", "上", "下", "前", "後", "的", "感じる", "できる", "出来る", "くる",
    "来る", "行く", "いく", "みる", "見る", "おる", "致す", "頂く", "いただく", "下さる", "くださる", "ない", "無い",
    "良い", "いい", "よい", "ちょっと", "少し", "とても", "すごい", "凄い", "様", "際", "点", "事", "物", "今",
]
BOILERPLATE_JA = [
    "困る", "本当", "毎回", "今回", "改善", "期待", "お願い", "願う", "思い", "御社", "弊社", "製品", "商品", "利用",
    "使用", "購入", "感じ", "全体", "特に", "非常", "大変", "是非", "ぜひ", "気", "感", "以上", "以外", "自分", "私",
]
STOP_WORDS_EN_EXTRA = ["really", "very", "just", "also", "would", "could", "please", "thank", "thanks", "product", "company"]


class TopicsParams(StrictModel):
    in_feedback: str = "data/clean/feedback.parquet"
    in_embeddings: str = "data/embed/embeddings.parquet"
    out_assignments: str = "data/topics/assignments.parquet"
    out_topics: str = "data/topics/topics.parquet"
    out_over_time: str = "data/topics/over_time.parquet"
    out_by_segment: str = "data/topics/by_segment.parquet"
    model_dir: str = "data/topics/model"
    metrics_path: str = "reports/metrics/topics.json"
    seed: int = 42
    umap_neighbors: int = Field(15, ge=2)
    umap_components: int = Field(5, ge=2)
    clusterer: Literal["kmeans", "hdbscan"] = "kmeans"
    n_topics: int = Field(12, ge=2)  # kmeans only
    min_cluster_size: int = Field(15, ge=2)  # hdbscan only
    top_n_words: int = Field(8, ge=3)
    stop_words: list[str] = Field(default_factory=lambda: list(STOP_WORDS_JA))
    boilerplate_words: list[str] = Field(default_factory=lambda: list(BOILERPLATE_JA))
    emerging_months: int = Field(2, ge=1)  # the recent window in which a topic may emerge
    emerging_min_ratio: float = Field(3.0, gt=1)  # recent share ≥ ratio × earlier share
    emerging_min_docs: int = Field(10, ge=1)
    labels: dict[int, str] = Field(default_factory=dict)  # researcher's labels by topic id
    merges: list[list[int]] = Field(default_factory=list)  # groups of topic ids to merge


_KEEP_POS = {"名詞", "動詞", "形容詞"}
_DROP_POS2 = {"非自立可能", "数詞", "代名詞"}
_LATIN = re.compile(r"^[A-Za-z][A-Za-z\-']*$")
_KANJI = re.compile(r"[\u4e00-\u9fff]")


_MAX_CHARS = 12_000  # Sudachi refuses inputs over 49,149 bytes; c-TF-IDF joins a whole topic into one text


def _chunks(text: str, limit: int = _MAX_CHARS):
    """Split at spaces (BERTopic joins documents with one) into pieces Sudachi accepts."""
    start = 0
    while len(text) - start > limit:
        cut = text.rfind(" ", start, start + limit)
        cut = cut if cut > start else start + limit
        yield text[start:cut]
        start = cut
    yield text[start:]


class Tokenizer:
    """Callable for scikit-learn's CountVectorizer: nouns, verbs, adjectives in normalised form."""

    def __init__(self, stop_words: list[str]):
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
        from sudachipy import Dictionary, SplitMode

        self._tok = Dictionary(dict="core").create(SplitMode.C)
        self._stop = set(stop_words) | set(ENGLISH_STOP_WORDS) | set(STOP_WORDS_EN_EXTRA)

    def __call__(self, text: str) -> list[str]:
        words: list[str] = []
        for chunk in _chunks(text):
            words += self._words(chunk)
        return words

    def _words(self, text: str) -> list[str]:
        words: list[str] = []
        for m in self._tok.tokenize(text):
            pos = m.part_of_speech()
            if pos[0] not in _KEEP_POS or pos[1] in _DROP_POS2:
                continue
            surface = m.surface()
            if _LATIN.match(surface):
                word = surface.lower()
                if len(word) < 2 or "'" in word:  # contractions (can't, don't) are stop words
                    continue
            else:
                word = m.normalized_form()
                # Single kana carry no meaning as topic words.
                if len(word) < 2 and not _KANJI.match(word):
                    continue
            if word not in self._stop and not word.isdigit():
                words.append(word)
        return words

    def __getstate__(self):  # Sudachi's dictionary handle cannot be pickled: rebuild on load
        return {"stop": sorted(self._stop)}

    def __setstate__(self, state):
        self.__init__(state["stop"])


def build_model(params: TopicsParams, embedder=None):
    """A BERTopic configured for Japanese + English from ``params`` (seeded: same inputs → same topics)."""
    from bertopic import BERTopic
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import CountVectorizer
    from umap import UMAP

    umap_model = UMAP(
        n_neighbors=params.umap_neighbors, n_components=params.umap_components, min_dist=0.0,
        metric="cosine", random_state=params.seed,
    )
    if params.clusterer == "kmeans":
        cluster_model = KMeans(n_clusters=params.n_topics, random_state=params.seed, n_init=10)
    else:
        from hdbscan import HDBSCAN

        cluster_model = HDBSCAN(min_cluster_size=params.min_cluster_size, metric="euclidean", prediction_data=True)
    vectorizer = CountVectorizer(
        tokenizer=Tokenizer(params.stop_words + params.boilerplate_words), lowercase=False, token_pattern=None,
        min_df=1,  # c-TF-IDF counts per topic: min_df=2 would mean "in two topics"
    )
    return BERTopic(
        embedding_model=embedder, umap_model=umap_model, hdbscan_model=cluster_model, vectorizer_model=vectorizer,
        language="multilingual", top_n_words=params.top_n_words, calculate_probabilities=False,
    )


def docs_and_embeddings(feedback: pl.DataFrame, embeddings: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """Verbatims to model (text_status ok), in a stable order, with their embedding matrix."""
    from pipelines.embed import text_hash

    docs = (
        feedback.filter(pl.col("text_status") == "ok")
        .with_columns(text_hash(pl.col("text")).alias("text_hash"))
        .sort("verbatim_id")
    )
    joined = docs.join(embeddings, on="text_hash", how="left", maintain_order="left")
    missing = joined.filter(pl.col("vector").is_null())
    if len(missing):
        raise ValueError(f"{len(missing)} verbatims have no embedding (e.g. {missing['verbatim_id'][0]}): re-run the embed stage")
    return docs, joined["vector"].to_numpy().astype(np.float32)


def fit(docs: pl.DataFrame, vectors: np.ndarray, params: TopicsParams):
    """Fit, apply the researcher's merges, return (model, per-verbatim topic ids)."""
    model = build_model(params)
    texts = docs["text"].to_list()
    topics, _ = model.fit_transform(texts, embeddings=vectors)
    if params.merges:
        model.merge_topics(texts, params.merges)
        topics = model.topics_
    return model, np.asarray(topics)


def topic_table(model, assignments: pl.DataFrame, params: TopicsParams) -> pl.DataFrame:
    """One row per topic: id, label, size, share, top words, representative (redacted) verbatims."""
    sizes = assignments.group_by("topic").len().rename({"len": "size"})
    total = len(assignments)
    rows = []
    for topic in sorted(sizes["topic"].to_list()):
        words = [w for w, _ in (model.get_topic(topic) or []) if w][: params.top_n_words]
        label = params.labels.get(topic) or ("外れ値 / outliers" if topic == -1 else "・".join(words[:3]))
        reps = (model.get_representative_docs(topic) or [])[:3] if topic != -1 else []
        rows.append({"topic": topic, "label": label, "words": words, "examples": reps})
    table = pl.DataFrame(rows, schema={"topic": pl.Int64, "label": pl.String, "words": pl.List(pl.String), "examples": pl.List(pl.String)})
    return (
        table.join(sizes.with_columns(pl.col("topic").cast(pl.Int64)), on="topic")
        .with_columns((pl.col("size") / total).alias("share"))
        .sort("topic")
    )


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
    recent = set(periods[-params.emerging_months:])
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
        ((pl.col("topic") != -1) & (pl.col("n_recent") >= params.emerging_min_docs) & grew).alias("emerging")
    ).sort("topic")


def topic_diversity(table: pl.DataFrame, top_k: int = 10) -> float:
    """Share of unique words among all topics' top words (1.0 = no word repeats across topics)."""
    words = [w for ws in table.filter(pl.col("topic") != -1)["words"].to_list() for w in ws[:top_k]]
    return len(set(words)) / len(words) if words else 0.0


def run(params: TopicsParams, root: str | Path = "."):
    root = Path(root)
    feedback = pl.read_parquet(root / params.in_feedback)
    embeddings = pl.read_parquet(root / params.in_embeddings)
    docs, vectors = docs_and_embeddings(feedback, embeddings)
    if len(docs) < max(params.n_topics * 3, 20):
        raise ValueError(f"only {len(docs)} verbatims to model: too few for topic modelling with n_topics={params.n_topics}")
    model, topics = fit(docs, vectors, params)
    assignments = docs.select(
        "verbatim_id", "response_id", "source", "period", "date_local", "persona", "channel", "product", "journey",
        "lang", "nps", "csat", "text",
    ).with_columns(pl.Series("topic", topics, dtype=pl.Int64))
    table = topic_table(model, assignments, params)
    em = emerging(assignments, params)
    table = table.join(em, on="topic", how="left")
    metrics = {
        "verbatims": len(assignments),
        "n_topics": int((table["topic"] != -1).sum()),
        "outlier_share": float((assignments["topic"] == -1).mean()),
        "topic_diversity": round(topic_diversity(table), 4),
        "emerging_topics": table.filter(pl.col("emerging"))["label"].to_list(),
    }
    return model, assignments, table, over_time(assignments), by_segment(assignments), metrics


def write(model, assignments, table, time_table, segment_table, metrics, params: TopicsParams, root: str | Path = ".") -> None:
    import shutil
    import tempfile

    from pipelines import io as kio

    root = Path(root)
    kio.write_parquet(assignments, root / params.out_assignments)
    kio.write_parquet(table, root / params.out_topics)
    kio.write_parquet(time_table, root / params.out_over_time)
    kio.write_parquet(segment_table, root / params.out_by_segment)
    target = root / params.model_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model.", dir=target.parent))
    try:
        model.save(staging / "model", serialization="safetensors", save_ctfidf=True, save_embedding_model=False)
        if target.exists():
            shutil.rmtree(target)
        (staging / "model").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kio.write_json(metrics, root / params.metrics_path)
