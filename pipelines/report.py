"""Report stage: the stakeholder page, read from the stage outputs and rendered through Jinja2 templates.

The report computes no statistics: shifts, verdicts and intervals come from the kpis stage's tests table, topic
effects from its drivers table, net sentiment from the sentiment stage. Words live in ``templates/strings.yaml``
(ja and en side by side), markup in ``templates/report/*.html.j2`` with autoescape on: every verbatim and every
label derived from data is escaped by the template engine. A section, sentence, column or chart appears only when
its data exist; what a stage skipped is listed in the data-quality section.

The notebook calls the fragment functions and shows them with ``show``; ``run`` turns the executed notebook into
one self-contained HTML file with no code, no script and no external requests.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from pipelines import kpi_registry
from pipelines.schema import CleanParams, KoeParams, KpisParams, ReportParams  # noqa: F401  (re-exported)

TEMPLATE_DIR = Path(__file__).parent / "templates"
STRINGS_PATH = TEMPLATE_DIR / "strings.yaml"
LANGS = ("ja", "en")
LOCALES = {"ja": "ja_JP", "en": "en_US"}  # number formats (thousands separators, decimal mark)

TOO_FEW = "too few responses to tell"
IMPROVED, WORSENED, NO_CHANGE = "improved", "worsened", "no detectable change"
# Colour-blind-safe (Okabe–Ito) colours for verdicts; each comes with a mark and a word.
UNCLEAR = "changed, direction unclear"  # significant, but the shown difference does not carry the direction
VERDICT_COLOURS = {IMPROVED: "#009E73", WORSENED: "#D55E00", NO_CHANGE: "#555555", TOO_FEW: "#999999", UNCLEAR: "#E69F00"}
VERDICT_MARK = {IMPROVED: "▲", WORSENED: "▼", NO_CHANGE: "＝", TOO_FEW: "?", UNCLEAR: "≠"}
SEGMENT_FIELDS = ("persona", "channel", "product", "journey")
TOPIC_ROWS = 12  # topics shown open; the rest fold under one line (keeps the page and its print short)
JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff00-\uffef]")  # kana, kanji, full-width forms
EMPTY_SPAN = "(empty)"  # the kpis stage's label of a span with no months (programme date outside the data)


# ------------------------------------------------------------------ words and numbers

@lru_cache(maxsize=1)
def catalogue() -> dict[str, dict[str, str]]:
    """The ja/en strings; every key must carry both languages."""
    import yaml

    data = yaml.safe_load(STRINGS_PATH.read_text(encoding="utf-8"))
    broken = sorted(k for k, v in data.items() if not isinstance(v, dict) or set(v) != set(LANGS))
    if broken:
        raise ValueError(f"{STRINGS_PATH}: keys without exactly {LANGS} strings: {broken}")
    return data


def text(lang: str, key: str, **fields: Any) -> str:
    """Catalogue string ``key`` in ``lang`` with its named fields filled in."""
    try:
        template = catalogue()[key][lang]
    except KeyError:
        raise KeyError(f"{STRINGS_PATH.name} has no string {key!r} in {lang!r}") from None
    return template.format_map(fields) if fields else template


def say(lang: str, key: str, **fields: Any) -> str | None:
    """Like ``text``, but None when a field is missing: a sentence is left out rather than printed with a gap."""
    if any(v is None or v == "" for v in fields.values()):
        return None
    return text(lang, key, **fields)


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def number(x: Any, lang: str, digits: int = 1, style: str = "plain") -> str | None:
    """The one number format of the report (locale thousands separators): ``plain``, ``signed`` (+/−),
    ``percent`` (a fraction shown as %) or ``count`` (an integer). None for a missing or non-finite value."""
    from babel.numbers import format_decimal, format_percent

    if _missing(x):
        return None
    locale = LOCALES[lang]
    if style == "count":
        return format_decimal(int(round(float(x))), "#,##0", locale=locale)
    frac = "0" * digits
    pattern = "#,##0" + ("." + frac if digits else "")
    value = Decimal(float(x))  # exact binary value: rounds like Python's own format()
    if style == "signed" and round(value, digits) == 0:  # a change that rounds to nothing: never "-0.0"
        return "±" + format_decimal(Decimal(0), pattern, locale=locale)
    if style == "percent":
        return format_percent(value, pattern + "%", locale=locale)
    if style == "signed":
        return format_decimal(value, f"+{pattern};-{pattern}", locale=locale)
    return format_decimal(value, pattern, locale=locale)


def p_text(p: float | None) -> str | None:
    """'<0.001' or '=0.012' (follows a 'p')."""
    return None if _missing(p) else ("<0.001" if p < 0.001 else f"={p:.3f}")


_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def period(label: str, lang: str) -> str:
    """'2026-05〜2026-10' → '2026年5月〜10月' (ja) or 'May–Oct 2026' (en); other labels unchanged."""
    m = re.fullmatch(r"(\d{4})-(\d{2})(?:〜(\d{4})-(\d{2}))?", label or "")
    if not m:
        return label
    y1, m1, y2, m2 = m.group(1), int(m.group(2)), m.group(3) or m.group(1), int(m.group(4) or m.group(2))
    if lang == "ja":
        end = f"{m2}月" if y1 == y2 else f"{y2}年{m2}月"
        return f"{y1}年{m1}月" if (y1, m1) == (y2, m2) else f"{y1}年{m1}月〜{end}"
    if (y1, m1) == (y2, m2):
        return f"{_MONTHS_EN[m1 - 1]} {y1}"
    start = _MONTHS_EN[m1 - 1] if y1 == y2 else f"{_MONTHS_EN[m1 - 1]} {y1}"
    return f"{start}–{_MONTHS_EN[m2 - 1]} {y2}"


@lru_cache(maxsize=2)
def _environment(lang: str):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR / "report"),
        autoescape=True,  # verbatims and labels are untrusted
        undefined=jinja2.StrictUndefined,  # a missing field is an error, never an empty gap
        trim_blocks=True,
    )
    env.filters["num"] = lambda x, digits=1, style="plain": number(x, lang, digits, style) or ""
    env.globals.update(
        t=lambda key, **f: text(lang, key, **f),
        colour=lambda verdict: VERDICT_COLOURS.get(verdict, "#555555"),
        mark=lambda verdict: VERDICT_MARK.get(verdict, ""),
        too_few=TOO_FEW,
        lang=lang,
    )
    return env


def render(template: str, lang: str, **fields: Any) -> str:
    return _environment(lang).get_template(template).render(**fields)


# ------------------------------------------------------------------ inputs

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
            names.setdefault(name, column)
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


# ------------------------------------------------------------------ findings

def finding_sentence(ctx: Context, row: dict) -> str | None:
    """One plain sentence with numbers and uncertainty for a test result row; None when a number is missing."""
    lang, kpi = ctx.lang, row["kpi"]
    digits = _digits(kpi)
    unit = kpi_registry.get(kpi).unit if kpi in kpi_registry.BY_KEY else None
    diff = row["diff"]
    if _missing(diff):
        return None
    verdict_key = f"finding.verdict.{row['verdict']}" if row["verdict"] in (IMPROVED, WORSENED) else "finding.verdict.other"
    if row["p_adjusted"] is None:
        sig = ctx.t("finding.sig.untested")
    elif row["significant"]:
        sig = say(lang, "finding.sig.yes", n_tests=number(_n_tests(ctx), lang, style="count"), p=p_text(row["p_adjusted"]))
    else:
        sig = ctx.t("finding.sig.no")
    return say(
        lang, "finding.shift",
        segment=_segment(ctx, row["segment_col"], row["segment_value"]), kpi=ctx.kpi(kpi),
        period_a=period(row["label_a"], lang), period_b=period(row["label_b"], lang),
        est_a=number(row["est_a"], lang, digits), est_b=number(row["est_b"], lang, digits),
        diff=number(diff, lang, digits, "signed"), unit=ctx.t(f"unit.{unit}") if unit else "",
        verb=ctx.t("finding.verb." + ("up" if diff > 0 else "down" if diff < 0 else "flat")),
        verdict=ctx.t(verdict_key, verdict=ctx.t(f"verdict.{row['verdict']}")),
        ci=ctx.t("ci", level=ctx.level), ci_low=number(row["ci_low"], lang, digits), ci_high=number(row["ci_high"], lang, digits),
        n_a=number(row["n_a"], lang, style="count"), n_b=number(row["n_b"], lang, style="count"), sig=sig,
    )


def window_finding(ctx: Context) -> str | None:
    """What changed in the latest window for the lead survey KPI (the support one when there is no survey), with
    the adverse shifts flagged as alerts."""
    survey, support = _lead_kpis(ctx)
    kpi = survey or support
    row = _row(ctx, "window", kpi) if kpi else None
    text_ = finding_sentence(ctx, row) if row else None
    if text_ is None:
        return None
    lang = ctx.lang
    worst = sorted((a for a in ctx.alerts if a.get("segment_col") != "all" and a.get("kpi") == kpi and not _missing(a.get("diff"))),
                   key=lambda a: a["diff"] * (1 if kpi_registry.get(kpi).higher_is_better else -1))[:2]
    if ctx.alerts:
        n = number(len(ctx.alerts), lang, style="count")
        segs = ctx.t("join.list").join(f"{_segment(ctx, a['segment_col'], a['segment_value'])} {number(a['diff'], lang, _digits(kpi), 'signed')}"
                                       for a in worst)
        extra = say(lang, "finding.alerts_worst", n=n, kpi=ctx.kpi(kpi), segments=segs) if segs else ctx.t("finding.alerts", n=n)
        text_ += ctx.t("join.sentence") + extra
    return text_


def emerging_finding(ctx: Context) -> str | None:
    """The first emerging theme, with its NPS effect when the drivers table says it is significant after BH."""
    lang = ctx.lang
    em = ctx.topics.filter(pl.col("emerging").fill_null(False) & (pl.col("topic") != -1)) if "emerging" in ctx.topics.columns else ctx.topics.clear()
    if not em.height:
        return None
    row = em.row(0, named=True)
    out = say(lang, "finding.emerging", label=ctx.t("quote", text=topic_label(ctx, row)),
              share_recent=number(row.get("share_recent"), lang, 1, "percent"),
              share_before=number(row.get("share_before"), lang, 1, "percent"),
              n_recent=number(row.get("n_recent"), lang, style="count"))
    d = _driver(ctx, row["topic"])
    if out and d and d.get("nps_significant"):
        extra = say(lang, "finding.emerging_impact", nps_topic=number(d["nps_topic"], lang), diff=number(d["nps_diff"], lang, 1, "signed"),
                    ci=ctx.t("ci", level=ctx.level), ci_low=number(d["nps_ci_low"], lang), ci_high=number(d["nps_ci_high"], lang))
        if extra:
            out += ctx.t("join.sentence") + extra
    return out


def segments_finding(ctx: Context) -> str | None:
    """Where the programme worked for the lead survey KPI: significant rises by segment, and the rest of that column."""
    kpi = _lead_kpis(ctx)[0]
    if kpi is None:
        return None
    lang = ctx.lang
    rows = _comparison(ctx, "programme").filter((pl.col("kpi") == kpi) & (pl.col("segment_col") != "all"))
    up = rows.filter(pl.col("significant").fill_null(False) & (pl.col("verdict") == IMPROVED)).sort("p_adjusted").head(2)
    if not up.height:
        return None
    parts = [say(lang, "finding.segment_part", segment=_segment(ctx, r["segment_col"], r["segment_value"]),
                 diff=number(r["diff"], lang, _digits(kpi), "signed"), ci=ctx.t("ci", level=ctx.level),
                 ci_low=number(r["ci_low"], lang, _digits(kpi)), ci_high=number(r["ci_high"], lang, _digits(kpi)))
             for r in up.iter_rows(named=True)]
    parts = [p for p in parts if p]
    if not parts:
        return None
    out = ctx.t("finding.segments_one" if len(parts) == 1 else "finding.segments_many", kpi=ctx.kpi(kpi),
                parts=ctx.t("join.and").join(parts))
    col = up["segment_col"][0]
    flat = rows.filter((pl.col("segment_col") == col) & ~pl.col("significant").fill_null(False))
    by_verdict: dict[str, list[str]] = {}
    for r in flat.iter_rows(named=True):
        by_verdict.setdefault(r["verdict"], []).append(_segment(ctx, r["segment_col"], r["segment_value"]))
    for verdict, segs in by_verdict.items():
        if f"finding.segments_rest.{verdict}" in catalogue():
            out += ctx.t("join.sentence") + ctx.t(f"finding.segments_rest.{verdict}", segments=_join(ctx, segs, "join.and"))
    return out


def executive_findings(ctx: Context, top: int = 5) -> list[str]:
    """3–5 findings, most decision-relevant first: the latest window, the emerging theme, the programme effect,
    where it worked, and the support response time. The same comparison (KPI, segment, spans, estimates) is
    said once even when two comparisons share their spans."""
    survey, support = _lead_kpis(ctx)
    seen: set[tuple] = set()
    out: list[str] = []

    def add(sentence: str | None, row: dict | None = None) -> None:
        if not sentence:
            return
        if row is not None:
            if _key(row) in seen:
                return
            seen.add(_key(row))
        out.append(sentence)

    window = _row(ctx, "window", survey or support) if survey or support else None
    add(window_finding(ctx), window)
    add(emerging_finding(ctx))
    programme = {k: _row(ctx, "programme", k) if k else None for k in (survey, support)}
    add(finding_sentence(ctx, programme[survey]) if programme[survey] else None, programme[survey])
    add(segments_finding(ctx))  # where the overall programme effect came from
    add(finding_sentence(ctx, programme[support]) if programme[support] else None, programme[support])
    if not out:  # e.g. only customer KPIs: lead with the first overall shift that holds, if any
        held = _usable(ctx).filter((pl.col("segment_col") == "all") & pl.col("significant").fill_null(False))
        for row in sorted(held.iter_rows(named=True), key=lambda r: kpi_registry.sort_key(r["kpi"]))[:1]:
            add(finding_sentence(ctx, row), row)
    if not out:  # say so rather than leave the reader without a summary
        out.append(ctx.t("finding.none", n_tests=number(_n_tests(ctx), ctx.lang, style="count")) if _n_tests(ctx)
                   else ctx.t("finding.no_tests"))
    return out[:top]


# ------------------------------------------------------------------ sections

class Section(str):
    """An HTML fragment that is one section of the page: ``anchor`` is its id, ``title`` its entry in the
    contents bar. It is a plain string everywhere else."""

    anchor: str
    title: str

    def __new__(cls, html: str, anchor: str, title: str) -> "Section":
        obj = super().__new__(cls, html)
        obj.anchor, obj.title = anchor, title
        return obj


TOC_KEY = "koe_section"  # display-output metadata naming a section for the contents bar


def _section(ctx: Context, key: str, template: str, **fields: Any) -> Section:
    anchor = f"koe-{key}"
    return Section(render(template, ctx.lang, anchor=anchor, **fields), anchor, ctx.t(f"toc.{key}"))


def show(*items: Any) -> None:
    """Display each non-empty fragment (HTML string or chart); an absent section leaves no trace on the page.
    A ``Section`` carries its anchor and title in the output's metadata, where the page's contents bar finds them."""
    from IPython.display import HTML, display

    for item in items:
        if item is None or (isinstance(item, str) and not item.strip()):
            continue
        if isinstance(item, Section):
            display(HTML(item), metadata={TOC_KEY: {"anchor": item.anchor, "title": item.title}})
        else:
            display(HTML(item) if isinstance(item, str) else item)


def header_html(ctx: Context, run_info: dict) -> str:
    subtitle = " · ".join(str(run_info[k]) for k in ("data window", "generated") if run_info.get(k))
    return render("header.html.j2", ctx.lang, title=ctx.params.title, subtitle=subtitle)


def summary_html(ctx: Context) -> str:
    findings = executive_findings(ctx)
    return _section(ctx, "summary", "summary.html.j2", findings=findings) if findings else ""


def _tile_comparison(ctx: Context) -> pl.DataFrame:
    rows = _comparison(ctx, "programme")
    return rows if rows.height else _comparison(ctx, "window")


def tiles_html(ctx: Context, chart: str = "") -> str:
    """Overall KPIs after the programme (or in the latest window when there is no programme comparison), then
    ``chart`` (from ``chart_html``) when given."""
    rows = _tile_comparison(ctx).filter(pl.col("segment_col") == "all")
    if not rows.height:
        return ""
    tiles = sorted(({**r, "name": ctx.kpi(r["kpi"]), "digits": _digits(r["kpi"])} for r in rows.iter_rows(named=True)),
                   key=lambda r: kpi_registry.sort_key(r["kpi"]))
    a, b = _spans(rows)
    note = ctx.t("tiles_note", period_a=period(a, ctx.lang), period_b=period(b, ctx.lang), ci=ctx.t("ci", level=ctx.level))
    return _section(ctx, "kpis", "tiles.html.j2", tiles=tiles, note=note, level=ctx.level, chart=_markup(chart))


def _matrix(ctx: Context, comparison: str, same_spans: bool = False) -> dict | None:
    rows = _comparison(ctx, comparison)
    if not rows.height:
        return None
    kpis = sorted(set(rows["kpi"]), key=kpi_registry.sort_key)
    cells = {(r["segment_col"], r["segment_value"], r["kpi"]): {**r, "digits": _digits(r["kpi"])} for r in rows.iter_rows(named=True)}
    volume = (rows.group_by("segment_col", "segment_value").agg((pl.col("n_a") + pl.col("n_b")).max().alias("v"))
              .sort(["segment_col", "v", "segment_value"], descending=[False, True, False]))
    cap, more, segs = ctx.params.max_segment_values, [], [("all", "all")] if (volume["segment_col"] == "all").any() else []
    for col in [c for c in volume["segment_col"].unique(maintain_order=True).to_list() if c != "all"]:
        values = volume.filter(pl.col("segment_col") == col)["segment_value"].to_list()
        segs += [(col, v) for v in sorted(values[:cap])]  # the largest, in a stable reading order
        if len(values) > cap:
            more.append(ctx.t("more_segments", column=column_label(ctx, col), n=number(len(values) - cap, ctx.lang, style="count"),
                              shown=number(cap, ctx.lang, style="count"), path=ctx.params.in_kpi_tests))
    a, b = _spans(rows)
    return {
        "title": ctx.t(f"shift.{comparison}"), "period_a": period(a, ctx.lang), "period_b": period(b, ctx.lang),
        "same_spans": same_spans, "more": more,
        "kpis": [{"key": k, "name": ctx.kpi(k)} for k in kpis],
        "rows": [{"label": _segment(ctx, col, value), "cells": [cells.get((col, value, k)) for k in kpis]} for col, value in segs],
    }


def _matrices(ctx: Context) -> list[dict]:
    window, programme = _comparison(ctx, "window"), _comparison(ctx, "programme")
    same = window.height > 0 and _spans(window) == _spans(programme)
    out = [_matrix(ctx, "window", same_spans=same)] + ([] if same else [_matrix(ctx, "programme")])
    return [m for m in out if m]


def shift_matrix_html(ctx: Context, comparison: str) -> str:
    """Every KPI × segment for one comparison: change and verdict per cell (colour plus a mark and a word,
    so it reads without colour vision and in print); the largest ``max_segment_values`` values per segment."""
    m = _matrix(ctx, comparison)
    return render("matrix.html.j2", ctx.lang, m=m) if m else ""


def shift_table_html(ctx: Context, max_rows: int = 40) -> str:
    """The KPI × segment matrices for the latest window and the programme, then the significant shifts in detail
    (a shift seen identically by two comparisons is one row)."""
    matrices = _matrices(ctx)
    rows = _usable(ctx).filter(pl.col("significant").fill_null(False)).sort(["comparison", "p_adjusted"], descending=[True, False])
    merged: dict[tuple, dict] = {}
    for r in rows.iter_rows(named=True):
        entry = merged.setdefault(_key(r), {**r, "names": []})
        entry["names"].append(ctx.t(f"comparison.{r['comparison']}") if f"comparison.{r['comparison']}" in catalogue() else r["comparison"])
    detail = [{**r, "name": ctx.kpi(r["kpi"]), "segment": _segment(ctx, r["segment_col"], r["segment_value"]),
               "comparisons": ctx.t("join.list").join(r["names"]), "digits": _digits(r["kpi"]), "p": p_text(r["p_adjusted"]) or ""}
              for r in merged.values()]
    if not matrices and not detail:
        return ""
    more = max(len(detail) - max_rows, 0)
    return _section(ctx, "shifts", "shifts.html.j2", matrices=matrices, detail=detail[:max_rows], more=more,
                    path=ctx.params.in_kpi_tests, level=ctx.level)


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


def topic_sentiment(net: pl.DataFrame | None) -> pl.DataFrame:
    """Per-topic net sentiment of the survey verbatims, from the sentiment stage's long table."""
    schema = {"topic": pl.Int64, "sent_net": pl.Float64, "sent_low": pl.Float64, "sent_high": pl.Float64, "sent_enough": pl.Boolean}
    if net is None or not net.height:
        return pl.DataFrame(schema=schema)
    return net.filter((pl.col("source") == "survey") & (pl.col("level") == "topic")).select(
        pl.col("value").cast(pl.Int64).alias("topic"),
        pl.col("net_sentiment").alias("sent_net"), pl.col("ci_low").alias("sent_low"),
        pl.col("ci_high").alias("sent_high"), pl.col("enough").alias("sent_enough"),
    )


def topics_html(ctx: Context, chart: str = "") -> str:
    """Topics by size, one row each: label, size, monthly-share sparkline, NPS effect (from the drivers table) and
    net sentiment when those exist, and example verbatims. The largest ``TOPIC_ROWS`` are open, the rest folded."""
    rows = ctx.topics.filter(pl.col("topic") != -1)
    if not rows.height:
        return ""
    drivers_cols = ["topic", "nps_diff", "nps_ci_low", "nps_ci_high"]
    has_drivers = ctx.drivers is not None and ctx.drivers.height > 0 and ctx.drivers["nps_diff"].is_not_null().any()
    if has_drivers:
        d = ctx.drivers.select(drivers_cols + (["nps_significant"] if ctx.has_significance else []))
        if not ctx.has_significance:
            d = d.with_columns(pl.lit(None, dtype=pl.Boolean).alias("nps_significant"))
        rows = rows.join(d, on="topic", how="left")
    sentiment = topic_sentiment(ctx.sentiment_net)
    has_sentiment = sentiment.height > 0
    if has_sentiment:
        rows = rows.join(sentiment, on="topic", how="left")
    # emerging topics first (they never fold away), then by size
    rows = rows.with_columns(pl.col("emerging").fill_null(False).alias("_em") if "emerging" in rows.columns else pl.lit(False).alias("_em"))
    rows = rows.sort(["_em", "size"], descending=[True, True])
    sparks = _sparklines(ctx.topics_over_time)
    out = []
    for r in rows.iter_rows(named=True):
        label, words = topic_label(ctx, r), topic_words(ctx, r)
        out.append({**{k: r.get(k) for k in ("nps_diff", "nps_ci_low", "nps_ci_high", "nps_significant", "sent_net", "sent_low",
                                              "sent_high", "sent_enough", "share_recent")},
                    "label": label, "label_orig": _foreign(ctx, label), "emerging": bool(r.get("emerging")),
                    "size": r["size"], "share": r["share"], "spark": sparks.get(r["topic"], ""),
                    "words": words[:6], "words_orig": _foreign(ctx, " ".join(words)),
                    "examples": list(r.get("examples") or [])[: ctx.params.max_examples]})
    note = None
    if has_drivers:
        q = number(ctx.fdr_q, ctx.lang, 2)
        note = ctx.t("impact_note", q=q) if ctx.has_significance else ctx.t("impact_note_unknown")
    return _section(ctx, "topics", "topics.html.j2", rows=out, show_impact=has_drivers, show_sentiment=has_sentiment,
                    impact_note=note, level=ctx.level, shown=TOPIC_ROWS, chart=_markup(chart))


def _foreign(ctx: Context, shown: str) -> str:
    """'ja' when an English page must show Japanese data as it is (no English label exists), for its lang attribute."""
    return "ja" if ctx.lang == "en" and JAPANESE.search(shown or "") else ""


def _sparklines(over_time: pl.DataFrame, width: float = 90, height: float = 20) -> dict[int, str]:
    """topic → SVG polyline points of its monthly share, scaled to its own peak (shape, not level)."""
    if not over_time.height or not {"topic", "period", "share"} <= set(over_time.columns):
        return {}
    periods = over_time["period"].unique().sort().to_list()
    if len(periods) < 2:
        return {}
    full = (pl.DataFrame({"period": periods}).join(over_time.select("topic").unique(), how="cross")
            .join(over_time.select("topic", "period", "share"), on=["topic", "period"], how="left")
            .with_columns(pl.col("share").fill_null(0.0)).sort("topic", "period"))
    out = {}
    step = width / (len(periods) - 1)
    for (topic,), g in full.group_by("topic"):
        shares = g.sort("period")["share"].to_list()
        peak = max(shares) or 1.0
        out[int(topic)] = " ".join(f"{i * step:.1f},{height - 1 - (height - 2) * v / peak:.1f}" for i, v in enumerate(shares))
    return out


def _notes(value: Any) -> list[str]:
    """A stage's notes as a list: a list of strings, or one ' | '-joined string (DVC metrics want scalars)."""
    if isinstance(value, str):
        return [s.strip() for s in value.split(" | ") if s.strip()]
    return [str(s) for s in (value or []) if str(s).strip()]


def skipped_notes(ctx: Context) -> list[tuple[str, str]]:
    """(stage, sentence) for everything a stage did not compute or the report left out, and why."""
    lang, out = ctx.lang, []
    out += [("clean", s) for s in _notes(ctx.clean_metrics.get("notes"))]
    for item in ctx.kpis_metrics.get("skipped") or []:
        if isinstance(item, dict) and item.get("reason"):
            out.append(("kpis", ctx.t("skipped.kpi", kpi=ctx.kpi(str(item.get("kpi", ""))), reason=item["reason"])))
    out += [("kpis", s) for s in _notes(ctx.kpis_metrics.get("notes"))]
    out += [("topics", s) for s in _notes(ctx.topics_metrics.get("notes"))]
    for item in ctx.topics_metrics.get("skipped") or []:  # e.g. too few verbatims for a topic model
        if isinstance(item, dict) and item.get("reason"):
            out.append(("topics", ctx.t("skipped.topics", reason=item["reason"])))
    stale = ctx.topics_metrics.get("stale_curation_ids")
    if stale:
        out.append(("topics", ctx.t("skipped.stale_curation", ids=ctx.t("join.list").join(str(i) for i in stale))))
    for comparison in ("programme", "window"):
        rows = ctx.tests.filter(pl.col("comparison") == comparison)
        if rows.height and not _comparison(ctx, comparison).height:
            spans = [period(x, lang) for x in (rows["label_a"][0], rows["label_b"][0]) if x and x != EMPTY_SPAN]
            out.append(("kpis", ctx.t("skipped.empty_comparison", comparison=ctx.t(f"comparison.{comparison}"),
                                      detail=ctx.t("skipped.only_span", span=" → ".join(spans)) if spans else ctx.t("skipped.no_span"))))
    out += [("report", ctx.t("skipped.missing_file", file=rel)) for rel in ctx.missing]
    if ctx.drivers is not None and ctx.drivers.height and not ctx.has_significance:
        out.append(("report", ctx.t("skipped.old_drivers")))
    elif ctx.topics.filter(pl.col("topic") != -1).height and (ctx.drivers is None or not ctx.drivers.height):
        out.append(("report", ctx.t("skipped.no_drivers")))
    return out


def quality_html(ctx: Context) -> str:
    m, lang = ctx.clean_metrics, ctx.lang
    counts = [("rows read", "rows_in"), ("rows kept", "rows_kept"), ("rows quarantined", "rows_quarantined"),
              ("non-answers", "non_answers"), ("empty comments", "empty_texts"), ("verbatims modelled", "verbatims_ok"),
              ("tickets", "tickets")]
    lines = [(ctx.t(label), number(m[k], lang, style="count")) for label, k in counts if not _missing(m.get(k))]
    lines += [(ctx.t("quarantined", reason=k), number(v, lang, style="count")) for k, v in (m.get("quarantined_by_reason") or {}).items()]
    lines += [(ctx.t("redacted", kind=k), number(v, lang, style="count")) for k, v in (m.get("redactions") or {}).items()]
    lines += [(ctx.t("encoding", file=f["file"]), f["encoding"]) for f in (m.get("files") or []) if f.get("encoding")]
    lines = [(k, v) for k, v in lines if v]
    skipped = skipped_notes(ctx)
    if not lines and not skipped:
        return ""
    return _section(ctx, "quality", "quality.html.j2", lines=lines, skipped=skipped)


def method_html(ctx: Context, run_info: dict) -> str:
    lang = ctx.lang
    present = set(_usable(ctx)["kpi"].to_list())
    families = sorted({kpi_registry.get(k).family for k in present if k in kpi_registry.BY_KEY},
                      key=["nps", "mean", "proportion", "median", "survival", "rate"].index)
    sentences = [ctx.t(f"method.{f}") for f in families]
    sentences.append(ctx.t("method.family", n_tests=number(_n_tests(ctx), lang, style="count"), q=number(ctx.fdr_q, lang, 2), level=ctx.level))
    body = ctx.t("join.sentence").join(sentences)
    meta = [(ctx.t(k) if k in catalogue() else k, str(v)) for k, v in run_info.items() if not _missing(v) and str(v) != ""]
    return _section(ctx, "method", "method.html.j2", text=body, meta=meta)


def nps_takeaway(ctx: Context) -> str:
    """One sentence under the NPS chart: the programme effect, else the latest month."""
    lang = ctx.lang
    r = _row(ctx, "programme", "nps")
    if r:
        return say(lang, "takeaway.programme", kpi=ctx.kpi("nps"), diff=number(r["diff"], lang, 1, "signed"),
                   verdict=ctx.t(f"verdict.{r['verdict']}")) or ""
    latest = _nps_series(ctx).filter(pl.col("segment_col") == "all").sort("period").tail(1)
    if latest.height:
        return say(lang, "takeaway.monthly", kpi=ctx.kpi("nps"), period=period(latest["period"][0], lang),
                   value=number(latest["value"][0], lang)) or ""
    return ""


def topic_takeaway(ctx: Context) -> str:
    em = ctx.topics.filter(pl.col("emerging").fill_null(False) & (pl.col("topic") != -1)) if "emerging" in ctx.topics.columns else ctx.topics.clear()
    if not ctx.topics.filter(pl.col("topic") != -1).height:
        return ""
    if not em.height:
        return ctx.t("takeaway.topics_none")
    labels = [topic_label(ctx, r) for r in em.iter_rows(named=True)]
    return ctx.t("takeaway.topics_emerging", labels=ctx.t("join.list").join(ctx.t("quote", text=x) for x in labels))


def takeaway_html(text_: str) -> str:
    return render("takeaway.html.j2", "ja", text=text_) if text_ else ""


# ------------------------------------------------------------------ charts

def plot_setup() -> None:
    """seaborn theme with a Japanese font (set_theme resets the family, so name it here)."""
    import matplotlib_fontja  # noqa: F401  registers IPAexGothic
    import seaborn as sns

    sns.set_theme(style="whitegrid", font="IPAexGothic", palette="colorblind")


def _nps_series(ctx: Context) -> pl.DataFrame:
    if not ctx.monthly.height:
        return ctx.monthly
    return ctx.monthly.filter((pl.col("kpi") == "nps") & pl.col("segment_col").is_in(["all", "channel"])
                              & pl.col("value").is_not_null() & pl.col("value").is_finite())


def plot_nps_trend(ctx: Context, programme_date: str | None = None):
    """Monthly NPS overall and for the largest channels; None when the data have no NPS."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = _nps_series(ctx)
    if not data.filter(pl.col("segment_col") == "all").height:
        return None
    channels = (data.filter(pl.col("segment_col") == "channel").group_by("segment_value").agg(pl.col("n").sum())
                .sort(["n", "segment_value"], descending=[True, False]).head(6)["segment_value"].to_list())
    data = data.filter((pl.col("segment_col") == "all") | pl.col("segment_value").is_in(channels)).with_columns(
        pl.when(pl.col("segment_col") == "all").then(pl.lit(ctx.t("all")))
        .otherwise(pl.col("segment_value").map_elements(lambda v: value_label(ctx, "channel", v), return_dtype=pl.String))
        .alias("series")
    ).sort("period")
    fig, ax = plt.subplots(figsize=(9, 4))
    sns.lineplot(data=data.to_pandas(), x="period", y="value", hue="series", style="series", markers=True, ax=ax)
    ax.set_title(ctx.t("nps_trend"))
    ax.set_xlabel(ctx.t("month"))
    ax.set_ylabel("NPS")
    ax.legend(title=None)
    ax.tick_params(axis="x", rotation=45)
    if programme_date:
        periods = data["period"].unique().sort().to_list()
        marker = str(programme_date)[:7]
        if marker in periods:
            ax.axvline(periods.index(marker), color="#D55E00", linestyle="--", linewidth=1)
            ax.text(periods.index(marker) + 0.1, ax.get_ylim()[1] * 0.95, ctx.t("programme"), color="#D55E00", va="top")
    fig.tight_layout()
    return fig


def plot_topic_trend(ctx: Context, top: int = 8):
    """Monthly share of the largest topics; None when there are no topics over time."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not ctx.topics_over_time.height or not ctx.topics.height:
        return None
    largest = ctx.topics.filter(pl.col("topic") != -1).sort("size", descending=True).head(top)
    keep = pl.DataFrame({"topic": largest["topic"], "label": [topic_label(ctx, r) for r in largest.iter_rows(named=True)]},
                        schema={"topic": largest.schema["topic"], "label": pl.String})
    data = ctx.topics_over_time.join(keep, on="topic").sort("period")
    if not data.height:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    sns.lineplot(data=data.to_pandas(), x="period", y="share", hue="label", ax=ax)
    ax.set_title(ctx.t("topic_trend"))
    ax.set_xlabel(ctx.t("month"))
    ax.set_ylabel(ctx.t("share"))
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def _markup(html: str | None):
    """A fragment this module rendered (already escaped) passed into another template."""
    from markupsafe import Markup

    return Markup(html or "")


def chart_html(fig, alt: str, caption: str = "", lang: str = "ja") -> str:
    """The chart as an embedded PNG inside its section, with alt text and the sentence it supports as caption;
    "" for no chart."""
    import base64
    import io as _io

    import matplotlib.pyplot as plt
    from PIL import Image as _PIL

    if fig is None:
        return ""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    width, height = _PIL.open(_io.BytesIO(buf.getvalue())).size
    return render("chart.html.j2", lang, png=base64.b64encode(buf.getvalue()).decode("ascii"), alt=alt or caption,
                  caption=caption, width=width, height=height)


def figure(fig, alt: str):
    """The chart as a PNG output carrying alt text (read aloud by screen readers, shown if images are off);
    None for no chart."""
    import io as _io

    import matplotlib.pyplot as plt
    from IPython.display import Image

    if fig is None:
        return None
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Image(data=buf.getvalue(), format="png", metadata={"alt": alt})


# ------------------------------------------------------------------ run metadata and the page

def code_hash() -> str:
    """sha256 over the pipelines package's sources and templates: what made the page, committed or not."""
    import hashlib

    import pipelines

    pkg, digest = Path(pipelines.__file__).parent, hashlib.sha256()
    for path in sorted(p for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"):
        digest.update(path.relative_to(pkg).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_info(ctx: Context, root: str | Path, params) -> dict:
    """Run metadata for the appendix: data window, what was compared, hashes of data, params and code.
    Entries the run does not have are None (and not shown).

    Nothing here depends on when or where the page was made (no clock, no git commit, no path): the same data, params
    and code give the same bytes, so the committed dvc.lock still matches after `make demo` on a fresh clone."""
    import hashlib

    import pipelines

    root = Path(root)
    data_hash = hashlib.sha256()
    for rel in (ctx.params.in_kpi_tests, ctx.params.in_topics, ctx.params.in_clean_metrics):
        data_hash.update((root / rel).read_bytes())
    params_hash = hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    periods = ctx.monthly["period"].drop_nulls().unique().sort().to_list() if ctx.monthly.height else []
    window = _spans(_comparison(ctx, "window"))
    programme_date = getattr(params.kpis, "programme_date", None)
    return {
        "data window": f"{periods[0]} – {periods[-1]}" if periods else None,
        "programme date": str(programme_date) if programme_date else None,
        "window comparison": f"{period(window[0], ctx.lang)} → {period(window[1], ctx.lang)}" if window else None,
        "FDR q": params.kpis.fdr_q,
        "tests in the family": _n_tests(ctx),
        "data hash (sha256)": data_hash.hexdigest()[:16],
        "params hash (sha256)": params_hash[:16],
        "code version": f"koe {pipelines.__version__} (code sha256 {code_hash()[:12]})",
    }


def embedded_font_css(text: str) -> str:
    """@font-face with IPAexGothic cut down to the characters of this page, as a data: URL (WOFF).

    Readers without a Japanese font (a fresh Linux box, some kiosks) would otherwise see tofu; the subset keeps the
    file small and the CSP (font-src data:) allows nothing else. IPA Font License permits embedding in documents.
    """
    import base64
    import io as _io
    import logging

    import matplotlib_fontja
    from fontTools import subset

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # it logs every pruned table at INFO

    chars = {c for c in text if ord(c) > 0x7F}  # ASCII is drawn by the reader's own sans-serif
    if not chars:
        return ""
    font_path = Path(matplotlib_fontja.__file__).parent / "fonts" / "ipaexg.ttf"
    options = subset.Options()
    options.flavor = "woff"  # zlib-compressed; woff2 would need brotli
    options.layout_features = ["*"]
    font = subset.load_font(str(font_path), options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(ord(c) for c in chars))
    subsetter.subset(font)
    buf = _io.BytesIO()
    subset.save_font(font, buf, options)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<style type="text/css">@font-face {{ font-family: "KoeJP"; '
            f'src: url(data:font/woff;base64,{data}) format("woff"); }}</style>')


def contents(nb) -> list[tuple[str, str]]:
    """(anchor, title) of every section the executed notebook showed, in page order."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            entry = (o.get("metadata") or {}).get(TOC_KEY)
            if entry and entry.get("anchor") and entry.get("title"):
                out.append((str(entry["anchor"]), str(entry["title"])))
    return out


def html_page(executed_notebook: str | Path, lang: str = "ja", title: str | None = None) -> str:
    """Executed report notebook → one self-contained HTML page (koe's own template, a contents bar linking every
    section): no code, no script, no external requests."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed_notebook), as_version=4)
    # Warnings and logs are for the researcher's copy, not the stakeholder's page.
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    exporter = HTMLExporter(template_name="koe_report", extra_template_basedirs=[str(TEMPLATE_DIR)])
    exporter.language_code = lang  # <html lang=…>: screen readers and hyphenation follow it
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    resources = {"language_code": lang, "koe_title": title or nb.metadata.get("title") or "koe report",
                 "koe_toc": contents(nb), "koe_toc_label": text(lang, "contents")}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return body.replace("</head>", embedded_font_css(body) + "\n</head>", 1)


# ------------------------------------------------------------------ the stage contract

@dataclass
class ReportResult:
    """The stage's outputs (``out_html``, ``metrics_path``), written by ``pipelines.io.write_result``."""

    html: str
    metrics: dict


def headline_metrics(params: ReportParams, root: str | Path = ".") -> dict[str, Any]:
    """The run's DVC metrics: a few flat numbers that fit one terminal line in `dvc metrics show` and `dvc exp show`.

    Every key is always there (null when a stage did not compute it), so runs and experiments compare key by key; the
    stages' own files (reports/metrics/<stage>.json) keep the detail: counts by reason, files, notes, what was skipped.
    """
    def read(rel: str) -> dict:
        path = Path(root) / rel
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def rounded(value: Any, digits: int) -> float | None:  # short columns: NPS points to 0.1, shares to 0.001
        return None if value is None else round(float(value), digits)

    clean, topics, kpis = read(params.in_clean_metrics), read(params.in_topics_metrics), read(params.in_kpis_metrics)
    return {
        "verbatims": clean.get("verbatims_ok"),
        "topics": topics.get("n_topics"),
        "outliers": rounded(topics.get("outlier_share"), 3),
        "npmi": rounded(topics.get("coherence_npmi"), 3),  # topic coherence
        "nps_prev": rounded(kpis.get("nps_before"), 1),  # the window comparison: previous window …
        "nps_now": rounded(kpis.get("nps_now"), 1),  # … and the current one
        "alerts": kpis.get("n_alerts"),
    }


def run(params: ReportParams, root: str | Path = ".", notebook: str | Path | None = None) -> ReportResult:
    """The stakeholder page from the executed report notebook (default: the stage's executed copy under ``root``),
    and the run's headline metrics."""
    from pipelines.stages import STAGES

    page = html_page(notebook or Path(root) / STAGES["report"].executed, params.lang, params.title)
    return ReportResult(page, headline_metrics(params, root))
