"""Words and numbers of the report: the ja/en strings catalogue, the one number and period format, verdict colours
and marks, and rendering of the Jinja2 templates (autoescape on: every label derived from data is escaped)."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any


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


def _markup(html: str | None):
    """A fragment this module rendered (already escaped) passed into another template."""
    from markupsafe import Markup

    return Markup(html or "")
