"""Charts of the report: seaborn line charts of NPS and topic shares, embedded as PNG with alt text and caption."""

from __future__ import annotations

import polars as pl

from pipelines.report_data import Context, _nps_series, topic_label, value_label
from pipelines.report_format import render


def plot_setup() -> None:
    """seaborn theme with a Japanese font (set_theme resets the family, so name it here)."""
    import matplotlib_fontja  # noqa: F401  registers IPAexGothic
    import seaborn as sns

    sns.set_theme(style="whitegrid", font="IPAexGothic", palette="colorblind")


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
