"""The report's inputs: the stage outputs loaded into a Context, and the lookups on them (usable test rows, labels
of segments and topics in the reader's language) that findings, sections and charts share."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pipelines import kpi_registry
from pipelines.report_format import catalogue, number, text
from pipelines.schema import CleanParams, KoeParams, KpisParams, ReportParams


SEGMENT_FIELDS = ("persona", "channel", "product", "journey")

EMPTY_SPAN = "(empty)"  # the kpis stage's label of a span with no months (programme date outside the data)


@dataclass
class Context:
    params: ReportParams
    clean_metrics: dict
    topics: pl.DataFrame
    tests: pl.DataFrame
    monthly: pl.DataFrame
    alerts: list
    topics_over_time: pl.DataFrame = field(default_factory=pl.DataFrame)
    topics_metrics: dict = field(default_factory=dict)
    drivers: pl.DataFrame | None = None  # None: no drivers file
    sentiment_net: pl.DataFrame | None = None
    kpis_metrics: dict = field(default_factory=dict)
    segment_names: dict[str, str] = field(default_factory=dict)  # persona → the export's own column name
    alpha: float = 0.05  # the kpis stage's interval level 1 − alpha
    fdr_q: float = 0.05
    missing: list[str] = field(default_factory=list)  # optional inputs that were not there

    @property
    def lang(self) -> str:
        return self.params.lang

    def t(self, key: str, **fields: Any) -> str:
        return text(self.lang, key, **fields)

    def kpi(self, key: str) -> str:
        return kpi_registry.get(key).name(self.lang) if key in kpi_registry.BY_KEY else key

    @property
    def level(self) -> str:
        return number(100 * (1 - self.alpha), self.lang, 0 if (100 * (1 - self.alpha)).is_integer() else 1)

    @property
    def has_significance(self) -> bool:
        return self.drivers is not None and {"nps_p_adjusted", "nps_significant"} <= set(self.drivers.columns)


REQUIRED_TEST_COLUMNS = ("comparison", "kpi", "segment_col", "segment_value", "label_a", "label_b", "est_a", "est_b",
                         "diff", "ci_low", "ci_high", "p_value", "p_adjusted", "significant", "n_a", "n_b", "verdict")


_QUESTION_CODE = re.compile(r"Q(ID)?\d+(_\w+)?")


def segment_names(clean: CleanParams | None) -> dict[str, str]:
    """Segment column (persona/channel/…, or a source's own ``segments`` name) → the header the export used for it
    (the first survey source mapping it)."""
    names: dict[str, str] = {}
    for source in (clean.surveys if clean else []):
        for f in SEGMENT_FIELDS:
            column = getattr(source.columns, f)
            if column and f not in names:
                names[f] = column
        for name, column in source.segments.items():
            # A question code (Qualtrics "Q3", "QID3_1") means nothing to a reader: the name koe init gave it does
            names.setdefault(name, name.replace("_", " ") if _QUESTION_CODE.fullmatch(column) else column)
    return names


def _required(root: Path, rel: str) -> Path:
    path = root / rel
    if not path.is_file():
        raise FileNotFoundError(f"report input {rel} not found under {root}: run the stage that writes it (dvc repro)")
    return path


def _or_empty(frame: pl.DataFrame | None) -> pl.DataFrame:
    return pl.DataFrame() if frame is None else frame


def load(params: ReportParams, root: str | Path = ".", project: KoeParams | None = None) -> Context:
    """Read every stage output the report shows. ``project`` (the whole params.yaml) supplies the kpis interval
    level and FDR q and the export's segment column names; without it the defaults are used."""
    from pipelines.kpis import read_alerts

    root = Path(root)
    tests_path = _required(root, params.in_kpi_tests)
    tests = pl.read_parquet(tests_path)
    lacking = [c for c in REQUIRED_TEST_COLUMNS if c not in tests.columns]
    if lacking:
        raise ValueError(f"{params.in_kpi_tests}: columns {lacking} missing; re-run the kpis stage (dvc repro kpis)")
    missing: list[str] = []

    def optional(rel: str, read):
        path = root / rel
        if path.is_file():
            return read(path)
        missing.append(rel)
        return None

    kpis = project.kpis if project else KpisParams()
    return Context(
        params=params,
        clean_metrics=json.loads(_required(root, params.in_clean_metrics).read_text(encoding="utf-8")),
        topics=pl.read_parquet(_required(root, params.in_topics)),
        tests=tests,
        monthly=pl.read_parquet(_required(root, params.in_kpi_monthly)),
        alerts=read_alerts(_required(root, params.in_alerts)),
        topics_over_time=_or_empty(optional(params.in_topics_over_time, pl.read_parquet)),
        topics_metrics=optional(params.in_topics_metrics, lambda p: json.loads(p.read_text(encoding="utf-8"))) or {},
        drivers=optional(params.in_drivers, pl.read_parquet),
        sentiment_net=optional(params.in_sentiment_net, pl.read_parquet),
        kpis_metrics=optional(params.in_kpis_metrics, lambda p: json.loads(p.read_text(encoding="utf-8"))) or {},
        segment_names=segment_names(project.clean if project else None),
        alpha=kpis.alpha,
        fdr_q=kpis.fdr_q,
        missing=missing,
    )


# ------------------------------------------------------------------ reading the tests table

def _usable(ctx: Context) -> pl.DataFrame:
    """Rows that compare two real spans with both estimates and some observations (a span outside the data, or a
    KPI whose source is absent, e.g. ticket volume 0 → 0 with no tickets exported, has no comparison)."""
    t = ctx.tests
    return t.filter(
        ((pl.col("n_a").fill_null(0) + pl.col("n_b").fill_null(0)) > 0) &
        pl.col("label_a").is_not_null() & pl.col("label_b").is_not_null()
        & (pl.col("label_a") != EMPTY_SPAN) & (pl.col("label_b") != EMPTY_SPAN)
        & pl.col("est_a").is_not_null() & pl.col("est_b").is_not_null() & pl.col("diff").is_not_null()
        & pl.col("est_a").is_finite() & pl.col("est_b").is_finite() & pl.col("diff").is_finite()
    )


def _comparison(ctx: Context, comparison: str) -> pl.DataFrame:
    return _usable(ctx).filter(pl.col("comparison") == comparison)


def _spans(rows: pl.DataFrame) -> tuple[str, str] | None:
    return (rows["label_a"][0], rows["label_b"][0]) if rows.height else None


def _key(row: dict) -> tuple:
    """A finding's identity: the same KPI, segment, spans and estimates is the same finding."""
    return (row["kpi"], row["segment_col"], row["segment_value"], row["label_a"], row["label_b"],
            round(row["est_a"], 9), round(row["est_b"], 9))


def _row(ctx: Context, comparison: str, kpi: str, col: str = "all", value: str = "all") -> dict | None:
    t = _comparison(ctx, comparison).filter((pl.col("kpi") == kpi) & (pl.col("segment_col") == col)
                                            & (pl.col("segment_value") == value))
    return t.row(0, named=True) if t.height else None


def _n_tests(ctx: Context) -> int:
    return int(ctx.tests["p_value"].is_not_null().sum())


def _digits(kpi: str) -> int:
    return kpi_registry.get(kpi).digits if kpi in kpi_registry.BY_KEY else 1


def value_label(ctx: Context, col: str, value: str) -> str:
    """A segment value as the reader's language names it: in English through ``report.value_labels_en`` (keyed by
    the field, e.g. ``journey``, or by the export's header), else the value as exported."""
    if ctx.lang != "en":
        return value
    mapping = ctx.params.value_labels_en
    names = mapping.get(col) or mapping.get(ctx.segment_names.get(col, col)) or {}
    return names.get(value, value)


def column_label(ctx: Context, col: str) -> str:
    """A segment field: the export's own header in Japanese, the field's English name in English."""
    if ctx.lang == "en" and f"field.{col}" in catalogue():
        return ctx.t(f"field.{col}")
    return ctx.segment_names.get(col, col)


def _segment(ctx: Context, col: str, value: str) -> str:
    if col == "all":
        return ctx.t("all")
    return ctx.t("segment_value", column=column_label(ctx, col), value=value_label(ctx, col, value))


def topic_label(ctx: Context, row: dict) -> str:
    """A topic's label in the report's language: in English ``label_en`` (curated ``topics.labels_en`` or the
    English top words), else the English words, else the original label."""
    if ctx.lang == "en":
        return row.get("label_en") or ", ".join(list(row.get("words_en") or [])[:3]) or row["label"]
    return row["label"]


def topic_words(ctx: Context, row: dict) -> list[str]:
    words = list(row.get("words_en") or []) if ctx.lang == "en" else []
    return words or list(row.get("words") or [])


def _lead_kpis(ctx: Context) -> tuple[str | None, str | None]:
    """The survey and the support headline KPI the summary leads with (registry order), if the data have them."""
    present = set(_usable(ctx).filter(pl.col("segment_col") == "all")["kpi"].to_list())

    def lead(source: str) -> str | None:  # a headline KPI first, else the first the data have (e.g. a rating share)
        order = list(kpi_registry.HEADLINE) + list(kpi_registry.KPIS)
        return next((k for k in order if k in present and kpi_registry.get(k).source == source), None)

    return lead("survey"), lead("tickets")


def _join(ctx: Context, items: list[str], key: str = "join.list") -> str:
    """Items joined; beyond max_segment_values the rest are counted, not listed."""
    cap = ctx.params.max_segment_values
    shown = items[:cap] + ([ctx.t("list.more", n=number(len(items) - cap, ctx.lang, style="count"))] if len(items) > cap else [])
    return ctx.t(key).join(shown)


def _driver(ctx: Context, topic: int) -> dict | None:
    if ctx.drivers is None or not ctx.drivers.height:
        return None
    hit = ctx.drivers.filter(pl.col("topic") == topic)
    if not hit.height:
        return None
    row = hit.row(0, named=True)
    if not ctx.has_significance:
        row["nps_significant"] = None  # unknown, not "no"
    return row


def _nps_series(ctx: Context) -> pl.DataFrame:
    if not ctx.monthly.height:
        return ctx.monthly
    return ctx.monthly.filter((pl.col("kpi") == "nps") & pl.col("segment_col").is_in(["all", "channel"])
                              & pl.col("value").is_not_null() & pl.col("value").is_finite())
