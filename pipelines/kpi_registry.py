"""Every KPI koe knows, one record each: where its sample comes from, how it is estimated and tested, its
direction, unit, default meaningful change and display names. Stages, the report and scheduled runs read
names, units and order from here; adding a KPI is one record (plus its test).

Light on purpose (no numpy/statsmodels): the params schema imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["survey", "tickets", "customers"]
# Statistical family: which estimator/test pair of pipelines.stats the KPI uses.
Family = Literal["nps", "mean", "proportion", "rate", "median", "survival"]
Unit = Literal["nps_points", "scale_points", "percent", "per_month", "hours"]


@dataclass(frozen=True)
class Kpi:
    key: str
    source: Source
    family: Family
    column: str  # column of the clean table the sample is read from
    higher_is_better: bool
    unit: Unit
    meaningful_change: float  # default smallest change worth detecting (relative when ``relative``)
    name_ja: str
    name_en: str
    digits: int = 1  # decimals shown
    relative: bool = False  # meaningful change relative to the earlier period (no natural scale)
    headline: bool = False  # shown in `koe run`'s index
    # Proportion KPIs: the 0/1 indicator per unit. "top_box": column >= the scale section's ``top_box_min``;
    # "good_values": column in the scale section's ``good_values``; "flag": the column is already 0/1.
    indicator: Literal["top_box", "good_values", "flag"] | None = None
    # kpis params sub-section describing the column (its ``column``, ``scale_min``/``scale_max``, top box,
    # good values, direction). A KPI whose section is null in params.yaml does not apply.
    scale: Literal["csat", "ces", "rating"] | None = None
    censored_by: str | None = None  # survival KPIs: the column that is True while the duration is still running
    # Survival KPIs whose column is null while the duration runs (no reply yet): such rows are censored at
    # this column's value (the time elapsed so far), never dropped.
    censored_at: str | None = None

    @property
    def effect_kind(self) -> str:
        return EFFECT_KIND[self.family]

    @property
    def method(self) -> str:
        return METHOD[self.family]

    @property
    def is_count(self) -> bool:  # modelled as Poisson counts in the interrupted time series
        return self.family == "rate"

    def name(self, lang: str) -> str:
        return self.name_ja if lang == "ja" else self.name_en


EFFECT_KIND: dict[str, str] = {
    "nps": "cohen_d", "mean": "cohen_d", "proportion": "cohen_h", "rate": "rate_ratio",
    "median": "rank_biserial", "survival": "median_ratio",
}
METHOD: dict[str, str] = {
    "nps": "wald_trinomial", "mean": "welch_t", "proportion": "score_test+newcombe", "rate": "poisson_score",
    "median": "mann_whitney", "survival": "logrank",
}

# Order is the display order (tiles, matrices, index).
REGISTRY: tuple[Kpi, ...] = (
    Kpi("nps", "survey", "nps", "nps", True, "nps_points", 10.0, "NPS", "NPS", headline=True),
    Kpi("csat_mean", "survey", "mean", "csat", True, "scale_points", 0.3, "CSAT平均", "CSAT mean", digits=2,
        headline=True, scale="csat"),
    Kpi("csat_top2", "survey", "proportion", "csat", True, "percent", 10.0, "CSAT上位2box", "CSAT top-2-box",
        indicator="top_box", scale="csat"),
    Kpi("rating_share", "survey", "proportion", "rating", True, "percent", 10.0, "好評価の割合", "Share of positive ratings",
        indicator="good_values", scale="rating"),
    Kpi("ces_mean", "survey", "mean", "ces", True, "scale_points", 0.3, "CES平均", "CES mean", digits=2,
        scale="ces"),
    Kpi("ces_top2", "survey", "proportion", "ces", True, "percent", 10.0, "CES上位2box", "CES top-2-box",
        indicator="top_box", scale="ces"),
    Kpi("ticket_volume", "tickets", "rate", "ticket_id", False, "per_month", 0.2, "問い合わせ件数", "Ticket volume",
        digits=0, relative=True),
    Kpi("first_response_h", "tickets", "survival", "first_response_h", False, "hours", 0.2, "初回応答時間（時間）",
        "First response time (h)", relative=True, headline=True, censored_at="resolution_h"),
    Kpi("resolution_h", "tickets", "survival", "resolution_h", False, "hours", 0.2, "解決時間（時間）",
        "Resolution time (h)", relative=True, censored_by="is_open"),
    Kpi("churn_rate", "customers", "proportion", "churned", False, "percent", 5.0, "離反率（%）", "Churn rate (%)",
        indicator="flag"),
    Kpi("repeat_rate", "customers", "proportion", "repeated", True, "percent", 5.0, "リピート率（%）", "Repeat rate (%)",
        indicator="flag"),
)

BY_KEY: dict[str, Kpi] = {k.key: k for k in REGISTRY}
KPIS: tuple[str, ...] = tuple(BY_KEY)
ORDER: dict[str, int] = {k: i for i, k in enumerate(KPIS)}
HEADLINE: tuple[str, ...] = tuple(k.key for k in REGISTRY if k.headline)


def get(key: str) -> Kpi:
    try:
        return BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown KPI {key!r}; known: {', '.join(KPIS)}") from None


def by_source(source: Source) -> tuple[str, ...]:
    return tuple(k.key for k in REGISTRY if k.source == source)


def default_meaningful_change() -> dict[str, float]:
    return {k.key: k.meaningful_change for k in REGISTRY}


def sort_key(key: str) -> tuple[int, str]:
    return (ORDER.get(key, len(ORDER)), key)
