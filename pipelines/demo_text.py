"""Verbatim text of the demo: phrase banks, composition of one verbatim per row, the noise real respondents add,
and personal data planted for the clean stage to redact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from pipelines.demo_world import _EN, _TONE_POLARITY, NEG, PERSONAS, POS, PRODUCTS, PRODUCTS_EN, REGISTERS, THEMES, _choice


# Phrase banks (pipelines/demo_data/phrases.json): fragments a verbatim is composed of, by register or language,
# theme and polarity. Core phrasings are product-neutral on purpose, because any product line can carry any theme;
# details are a concrete follow-up sentence (plain Japanese reads naturally after polite and casual alike);
# softeners turn a complaint into a passive's mixed comment and hedges do the same to praise; closings go by
# class (0 negative, 1 positive, 2 neutral, 3 ticket); Japanese often links a second topic with a connective.
_PHRASES = json.loads((Path(__file__).parent / "demo_data" / "phrases.json").read_text(encoding="utf-8"))
_POLARITY = {"negative": NEG, "positive": POS}
_CLASS = {"negative": 0, "positive": 1, "neutral": 2, "ticket": 3}


def _by_theme(section: dict) -> dict[tuple[str, str, int], list[str]]:
    return {(lang, theme, _POLARITY[pol]): v for lang, themes in section.items() for theme, pols in themes.items() for pol, v in pols.items()}


_CORE: dict[tuple[str, str, int], list[str]] = _by_theme(_PHRASES["core"])
_DETAIL: dict[tuple[str, str, int], list[str]] = _by_theme(_PHRASES["detail"])
_GENERIC_OPENERS: dict[str, list[str]] = _PHRASES["generic_openers"]
_PERSONA_OPENERS: dict[tuple[str, str], list[str]] = {(r, p): v for r, ps in _PHRASES["persona_openers"].items() for p, v in ps.items()}
_TICKET_OPENERS: dict[str, list[str]] = _PHRASES["ticket_openers"]
_SOFTENERS: dict[str, list[str]] = _PHRASES["softeners"]
_HEDGES: dict[str, list[str]] = _PHRASES["hedges"]
_CLOSINGS: dict[tuple[str, int], list[str]] = {(r, _CLASS[c]): v for r, cs in _PHRASES["closings"].items() for c, v in cs.items()}
_CONNECTIVES: dict[str, list[str]] = _PHRASES["connectives"]
_EMOJI: dict[int, list[str]] = {_CLASS[c]: v for c, v in _PHRASES["emoji"].items()}
# Full/half-width mixes and typos real respondents produce: (register, old, new, rate).
# Applied before PII is appended so planted PII strings stay byte-exact.
_NOISE_RULES: tuple[tuple[int, str, str, float], ...] = (
    (0, "アプリ", "ｱﾌﾟﾘ", 0.08),
    (1, "アプリ", "ｱﾌﾟﾘ", 0.12),
    (0, "アプリ", "ＡＰＰ", 0.02),
    (0, "Wi-Fi", "ＷｉＦｉ", 0.10),
    (1, "Wi-Fi", "wifi", 0.20),
    (1, "ログイン", "ﾛｸﾞｲﾝ", 0.08),
    (1, "サポート", "ｻﾎﾟｰﾄ", 0.08),
    (0, "3", "３", 0.15),
    (0, "2", "２", 0.15),
    (1, "づらい", "ずらい", 0.30),
    (0, "づらい", "ずらい", 0.10),
    (0, "ません。", "ませｎ。", 0.02),
    (1, "ている", "てる", 0.30),
    (0, "ください", "下さい", 0.20),
    (2, "Wi-Fi", "wifi", 0.25),
    (2, "Wi-Fi", "ＷｉＦｉ", 0.05),
    (2, "the ", "teh ", 0.03),
    (2, "connection", "conection", 0.10),
    (2, "doesn't", "doesnt", 0.20),
    (2, "really", "realy", 0.08),
    (2, "I'm", "im", 0.05),
)
_GIVEN = ("taro", "hanako", "yuki", "kenji", "akiko", "sho", "mika", "daisuke", "naomi", "ryo", "emi", "hiroshi")
_FAMILY = ("yamada", "suzuki", "tanaka", "sato", "takahashi", "ito", "watanabe", "nakamura", "kobayashi", "kato")
_DOMAINS = ("example.com", "example.jp", "example.co.jp", "example.net", "mail.example.org")
_PII_TEMPLATES: dict[tuple[str, str], list[str]] = {(lang, k): v for lang, ks in _PHRASES["pii_templates"].items() for k, v in ks.items()}


# --------------------------------------------------------------------------- banks

class _Bank:
    """Flat string pool addressed by (group code, uniform draw), so picking is vectorised."""

    def __init__(self, groups: list[list[str]]) -> None:
        self.values = pl.Series([s for g in groups for s in g], dtype=pl.String)
        self.sizes = np.array([len(g) for g in groups], dtype=np.int64)
        self.offsets = np.cumsum(self.sizes) - self.sizes

    def pick(self, group: np.ndarray, rng: np.random.Generator) -> pl.Series:
        size = self.sizes[group]
        if (size == 0).any():
            raise ValueError("picked from an empty fragment group")
        idx = self.offsets[group] + (rng.random(len(group)) * size).astype(np.int64)
        return self.values.gather(idx)


def _core_groups(store: dict[tuple[str, str, int], list[str]], langs: tuple[str, ...]) -> list[list[str]]:
    """Groups ordered by code (lang * len(THEMES) + theme) * 2 + polarity."""
    return [store.get((lang, theme, pol), []) for lang in langs for theme in THEMES for pol in (NEG, POS)]


_CORE_BANK = _Bank(_core_groups(_CORE, REGISTERS))
_DETAIL_BANK = _Bank(_core_groups(_DETAIL, ("ja", "en")))
_SURVEY_OPENER_BANK = _Bank([_GENERIC_OPENERS[r] + _PERSONA_OPENERS[(r, p)] for r in REGISTERS for p in PERSONAS])
_TICKET_OPENER_BANK = _Bank([_TICKET_OPENERS[r] for r in REGISTERS])
_SOFTENER_BANK = _Bank([_SOFTENERS[r] for r in REGISTERS])
_HEDGE_BANK = _Bank([_HEDGES[r] for r in REGISTERS])
_CLOSING_BANK = _Bank([_CLOSINGS[(r, c)] for r in REGISTERS for c in range(4)])
_EMOJI_BANK = _Bank([_EMOJI[c] for c in range(4)])
_CONNECTIVE_BANK = _Bank([_CONNECTIVES["ja"], _CONNECTIVES["en"]])


# --------------------------------------------------------------------------- composition

def _compose(
    rng: np.random.Generator,
    register: np.ndarray,
    theme: np.ndarray,
    tone: np.ndarray,
    product: np.ndarray,
    opener_group: np.ndarray,
    opener_bank: _Bank,
    closing_class: np.ndarray,
    p_opener: float,
) -> pl.Series:
    """Compose one verbatim per row from fragments; length stays within about 10–150 chars."""
    n = len(register)
    lang = (register == _EN).astype(np.int64)
    polarity = _TONE_POLARITY[tone]
    n_base = len(THEMES) - 1
    # Secondary theme: any other base theme, mentioned with the same polarity.
    second_theme = np.where(
        theme < n_base, (theme + 1 + rng.integers(0, n_base - 1, n)) % n_base, rng.integers(0, n_base, n)
    )

    opener = opener_bank.pick(opener_group, rng)
    core = _CORE_BANK.pick((register * len(THEMES) + theme) * 2 + polarity, rng)
    detail = _DETAIL_BANK.pick((lang * len(THEMES) + theme) * 2 + polarity, rng)
    second = _CONNECTIVE_BANK.pick(lang, rng) + _CORE_BANK.pick(
        (register * len(THEMES) + second_theme) * 2 + polarity, rng
    )
    softener = _SOFTENER_BANK.pick(register, rng)
    hedge = _HEDGE_BANK.pick(register, rng)
    closing = _CLOSING_BANK.pick(register * 4 + closing_class, rng)
    emoji = _EMOJI_BANK.pick(closing_class, rng)

    parts = {
        "opener": opener,
        "softener": softener,
        "core": core,
        "detail": detail,
        "second": second,
        "hedge": hedge,
        "closing": closing,
        "emoji": emoji,
    }
    use = {
        "opener": rng.random(n) < p_opener,
        "softener": tone == 2,
        "core": np.ones(n, dtype=bool),
        "detail": rng.random(n) < 0.40,
        "second": rng.random(n) < 0.15,
        "hedge": tone == 3,
        "closing": rng.random(n) < 0.40,
        "emoji": rng.random(n) < np.where(closing_class == 2, 0.04, 0.08),
    }
    # Part length plus its separator (English parts are joined by a space, Japanese abut).
    lengths = {k: s.str.len_chars().to_numpy().astype(np.int64) + lang for k, s in parts.items()}
    total = sum(np.where(use[k], lengths[k], 0) for k in parts)
    # Too long: drop optional parts in order of least importance until within budget.
    for key in ("second", "detail", "opener", "closing"):
        drop = use[key] & (total > 140)
        use[key] = use[key] & ~drop
        total = total - np.where(drop, lengths[key], 0)
    # Too short (e.g. a bare "値段高すぎ。"): add a closing, then an opener.
    for key in ("closing", "opener"):
        add = ~use[key] & (total < 12)
        use[key] = use[key] | add
        total = total + np.where(add, lengths[key], 0)

    # Japanese sentences abut; English ones take a space; a few comments span lines.
    sep = np.where(lang == 1, " ", "")
    tail_sep = np.where(rng.random(n) < 0.04, "\n", sep)
    seps = {"opener": np.full(n, ""), "softener": sep, "core": sep, "emoji": sep}
    product_name = np.where(lang == 1, np.array(PRODUCTS_EN)[product], np.array(PRODUCTS)[product])
    frame = pl.DataFrame(
        {"product": product_name}
        | {f"p_{k}": v for k, v in parts.items()}
        | {f"u_{k}": use[k] for k in parts}
        | {f"s_{k}": pl.Series(seps.get(k, tail_sep), dtype=pl.String) for k in parts}
    )
    pieces = [
        pl.when(pl.col(f"u_{k}")).then(pl.col(f"s_{k}") + pl.col(f"p_{k}")).otherwise(pl.lit("")) for k in parts
    ]
    text = pl.concat_str(pieces).str.strip_chars_start(" ")
    return frame.select(text.str.replace("{P}", pl.col("product"), literal=True).alias("text"))["text"]


def _add_noise(rng: np.random.Generator, text: pl.Series, register: np.ndarray) -> pl.Series:
    """Apply full/half-width mixes and typos to random subsets of rows."""
    frame = pl.DataFrame({"t": text})
    for reg, old, new, rate in _NOISE_RULES:
        mask = pl.lit(pl.Series((register == reg) & (rng.random(len(text)) < rate)))
        # One rule per pass: nesting them would double the expression tree at every rule.
        replaced = pl.col("t").str.replace_all(old, new, literal=True)
        frame = frame.with_columns(pl.when(mask).then(replaced).otherwise(pl.col("t")))
    return frame["t"]


def _digits(rng: np.random.Generator, k: int, width: int) -> list[str]:
    """k random zero-padded digit strings of the given width."""
    return [f"{v:0{width}d}" for v in rng.integers(0, 10**width, k)]


def _plant_pii(
    rng: np.random.Generator, text: pl.Series, rows: np.ndarray, register: np.ndarray
) -> tuple[pl.Series, list[str]]:
    """Append a sentence carrying an email, phone number or postcode to the given rows.

    Returns the new texts and the planted PII strings in row order.
    """
    k = len(rows)
    kind = _choice(rng, np.array([0.5, 0.4, 0.1]), k)
    kind[: min(k, 3)] = np.arange(3)[: min(k, 3)]  # every export carries each kind at least once
    given, family = rng.integers(0, len(_GIVEN), k), rng.integers(0, len(_FAMILY), k)
    dot, domain = rng.integers(0, 3, k), rng.integers(0, len(_DOMAINS), k)
    suffix = rng.integers(0, 100, k)
    phone_fmt = _choice(rng, np.array([0.6, 0.25, 0.15]), k)
    prefix = rng.integers(7, 10, k)
    area = rng.integers(0, 2, k)
    mid, last = _digits(rng, k, 4), _digits(rng, k, 4)
    zip_a, zip_b = _digits(rng, k, 3), _digits(rng, k, 4)
    template_draw = rng.random(k)
    strings: list[str] = []
    new_texts: list[str] = []
    old = text.gather(rows).to_list()
    for i in range(k):
        if kind[i] == 0:
            num = f"{suffix[i]:02d}" if suffix[i] < 40 else ""
            local = f"{_GIVEN[given[i]]}{('.', '_', '')[dot[i]]}{_FAMILY[family[i]]}{num}"
            value = f"{local}@{_DOMAINS[domain[i]]}"
        elif kind[i] == 1:
            if phone_fmt[i] == 0:
                value = f"0{prefix[i]}0-{mid[i]}-{last[i]}"
            elif phone_fmt[i] == 1:
                value = f"0{(3, 6)[area[i]]}-{mid[i]}-{last[i]}"
            else:
                value = f"+81 {prefix[i]}0 {mid[i]} {last[i]}"
        else:
            value = f"〒{zip_a[i]}-{zip_b[i]}"
        lang = "en" if register[rows[i]] == _EN else "ja"
        templates = _PII_TEMPLATES[(lang, ("email", "phone", "postcode")[kind[i]])]
        sentence = templates[int(template_draw[i] * len(templates))].replace("{X}", value)
        strings.append(value)
        new_texts.append(old[i] + (" " if lang == "en" else "") + sentence)
    return text.scatter(rows, pl.Series(new_texts, dtype=pl.String)), strings
