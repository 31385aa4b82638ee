"""Deterministic demo data: raw feedback exports of the fictional smart-home maker "Company A".

Company A's new products sold poorly and customers complained about usability until a
customer-centric programme (simpler UI, 24-hour support) launched on 2026-05-01. This module
writes the raw files such a company would hand over — two survey exports in different
encodings and a Zendesk-style ticket dump — with the dirt real exports have, plus a truth
file that only tests read.

Planted effects (all recorded in the truth file):

* app and web channels: NPS rises by about 30 points after the programme and usability
  complaints fall sharply; store (the control) and phone keep the same score and theme mix.
* tickets: median first response drops from about 20 h to about 3 h; resolution drops modestly.
* login_failure ("can't log in since the latest app update") appears only in 2026-09/10.

Scores are assigned by quota within each (channel, period) cell — the detractor/passive/
promoter split of a cell matches its target to within one row — so the effects are visible
even at n_responses=1500 while each individual row is still random.

Everything is driven by one ``numpy.random.default_rng(seed)`` and vectorised, so the same
params give byte-identical files and a million responses take seconds. The sentences verbatims are composed of
are package data, demo_data/phrases.json.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import numpy as np
import polars as pl

from pipelines.schema import DemoParams  # noqa: F401  (re-exported)
from pipelines.io import write_bytes, write_json


# --------------------------------------------------------------------------- calendar
START = date(2025, 11, 1)
END = date(2026, 10, 31)
PROGRAMME_DATE = date(2026, 5, 1)
LOGIN_START = date(2026, 9, 1)
EXPORT_AT = datetime(2026, 11, 1)  # local Tokyo time the ticket dump was taken (censoring point)
N_DAYS = (END - START).days + 1
PROGRAMME_DAY = (PROGRAMME_DATE - START).days
LOGIN_DAY = (LOGIN_START - START).days
# Times are handled as integer seconds of Tokyo wall-clock time since 1970 (no zone maths needed:
# Japan has no DST), so formatting them as if they were UTC prints the local time.
START_S = (START - date(1970, 1, 1)).days * 86400
EXPORT_S = START_S + int((EXPORT_AT - datetime(START.year, START.month, START.day)).total_seconds())

# --------------------------------------------------------------------------- vocabulary
SURVEY_FILES = ("survey_export_1.csv", "survey_export_2.csv")
TICKETS_FILE = "tickets.jsonl"
HEADER = "回答ID,顧客ID,回答日時,推奨度,満足度,ご意見・ご要望,ペルソナ,チャネル,製品ライン,ジャーニー"
PERSONAS = ("共働き世帯", "シニア", "単身者", "ガジェット好き")
CHANNELS = ("web", "app", "phone", "store")
PRODUCTS = ("スマート照明", "スマートロック", "ロボット掃除機", "スマートエアコン")
PRODUCTS_EN = ("smart lights", "smart lock", "robot vacuum", "smart AC")
JOURNEYS = ("認知", "検討", "購買", "使用", "アフターフォロー")
VIA = ("web", "app", "phone", "email")
THEMES = (
    "usability",
    "delivery",
    "app_connectivity",
    "support_response",
    "price",
    "energy_efficiency",
    "product_quality",
    "setup",
    "login_failure",
)
_LOGIN = THEMES.index("login_failure")
_USABILITY = THEMES.index("usability")
NON_ANSWERS = ("特になし", "なし", "無し", "特にありません", "該当なし", "ない", "-", "N/A", "none", "no comment")
SCRIPT_VERBATIMS = ('<script>alert("koe")</script>使いにくい', "<img src=x onerror=alert(1)>画面が見づらい")

# Registers: how a verbatim is written. Japanese splits into polite (です/ます) and casual.
REGISTERS = ("ja_polite", "ja_casual", "en")
_EN = 2
NEG, POS = 0, 1
# Tones: 0 negative, 1 positive, 2 softened negative, 3 hedged positive (the last two are passives).
_TONE_POLARITY = np.array([NEG, POS, NEG, POS])
_TONE_CLASS = np.array([0, 1, 2, 2])  # closing/emoji class: negative, positive, neutral

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

# Target (detractor, passive, promoter) shares per channel and period. app/web improve after
# the programme; store and phone do not move. Sep/Oct adds login-failure detractors on top.
_MIX = {
    "before": {
        "web": (0.50, 0.30, 0.20),
        "app": (0.50, 0.30, 0.20),
        "phone": (0.40, 0.33, 0.27),
        "store": (0.35, 0.35, 0.30),
    },
    "after": {
        "web": (0.26, 0.36, 0.38),
        "app": (0.26, 0.36, 0.38),
        "phone": (0.40, 0.33, 0.27),
        "store": (0.35, 0.35, 0.30),
    },
}
# Share of Sep/Oct responses per channel that are login-failure complaints (≈20 % overall).
# In app/web they are extra detractors (the bug hurts the score); in phone they replace
# existing detractors' topics, so phone's score mix stays put. Store, the control, has none.
_LOGIN_EXTRA = {"web": 0.30, "app": 0.30}
_LOGIN_WITHIN = {"phone": 0.10}
_PERSONA_P = np.array([0.32, 0.22, 0.26, 0.20])
_CHANNEL_BY_PERSONA = np.array(
    [[0.35, 0.35, 0.15, 0.15], [0.15, 0.10, 0.40, 0.35], [0.35, 0.35, 0.10, 0.20], [0.30, 0.50, 0.05, 0.15]]
)
_POLITE_BY_PERSONA = np.array([0.60, 0.85, 0.45, 0.40])
# Survey theme mix (8 base themes). app/web lose most usability complaints after the programme.
_THEME_BASE = np.array([0.18, 0.10, 0.12, 0.12, 0.14, 0.10, 0.14, 0.10])
_THEME_APPWEB_BEFORE = np.array([0.36, 0.07, 0.10, 0.09, 0.11, 0.07, 0.12, 0.08])
_THEME_APPWEB_AFTER = np.array([0.06, 0.11, 0.15, 0.13, 0.15, 0.11, 0.16, 0.13])
_TICKET_THEME_BEFORE = np.array([0.20, 0.08, 0.17, 0.10, 0.05, 0.04, 0.15, 0.21])
_TICKET_THEME_AFTER = np.array([0.08, 0.09, 0.20, 0.10, 0.06, 0.05, 0.18, 0.24])
# Journey stage given the theme (rows follow THEMES).
_JOURNEY_BY_THEME = np.array(
    [
        [0.02, 0.08, 0.10, 0.70, 0.10],  # usability
        [0.02, 0.05, 0.80, 0.08, 0.05],  # delivery
        [0.02, 0.05, 0.08, 0.75, 0.10],  # app_connectivity
        [0.02, 0.05, 0.08, 0.15, 0.70],  # support_response
        [0.20, 0.45, 0.25, 0.05, 0.05],  # price
        [0.05, 0.20, 0.05, 0.65, 0.05],  # energy_efficiency
        [0.03, 0.07, 0.05, 0.60, 0.25],  # product_quality
        [0.02, 0.05, 0.25, 0.60, 0.08],  # setup
        [0.00, 0.00, 0.05, 0.80, 0.15],  # login_failure
    ]
)
_HOUR_P = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 2, 3, 4, 4, 4, 5, 5, 4, 4, 4, 4, 5, 6, 7, 7, 5, 3], dtype=float)
_TICKET_HOUR_P = np.array(
    [0.5, 0.3, 0.2, 0.2, 0.2, 0.4, 1, 2, 4, 6, 7, 7, 6, 7, 7, 6, 6, 5, 5, 5, 4, 3, 2, 1], dtype=float
)


# --------------------------------------------------------------------------- helpers
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


def _choice(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    """n draws from a categorical distribution (probs need not be normalised)."""
    cum = np.cumsum(probs) / np.sum(probs)
    return np.minimum(np.searchsorted(cum, rng.random(n), side="right"), len(probs) - 1)


def _choice_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (n, k) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return np.minimum((u >= cum).sum(axis=1), probs.shape[1] - 1)


def _local_strings(seconds: np.ndarray, fmt: str) -> pl.Series:
    """Format local (Asia/Tokyo wall-clock) epoch-like seconds with strftime."""
    return pl.from_epoch(pl.Series(seconds, dtype=pl.Int64), time_unit="s").dt.strftime(fmt)


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


def _timestamps(rng: np.random.Generator, n: int, hour_p: np.ndarray, month_noise: float) -> np.ndarray:
    """Sorted local seconds spread over the year, with a daily rhythm and mild month-level noise."""
    days = np.datetime64(START.isoformat()) + np.arange(N_DAYS)
    month = (days.astype("datetime64[M]") - np.datetime64(START.isoformat()[:7])).astype(np.int64)
    factor = np.clip(1 + month_noise * rng.standard_normal(12), 1 - 2 * month_noise, 1 + 2 * month_noise)
    day = _choice(rng, factor[month], n)
    seconds = day * 86400 + _choice(rng, hour_p, n) * 3600 + rng.integers(0, 3600, n)
    return START_S + np.sort(seconds)


def _quota_categories(
    rng: np.random.Generator, cell: np.ndarray, login_cut: np.ndarray, det_cut: np.ndarray, pas_cut: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Assign NPS categories (0 detractor, 1 passive, 2 promoter) by quota within each cell.

    Also returns the login-failure flag: the lowest-ranked rows of a cell, all detractors.

    Rows are ranked at random inside their cell; the rank's fraction is compared with the cell's
    cumulative cut points, so each cell's split matches its target to within one row.
    """
    order = np.lexsort((rng.random(len(cell)), cell))
    sorted_cell = cell[order]
    start = np.searchsorted(sorted_cell, sorted_cell, side="left")
    count = np.bincount(cell, minlength=len(det_cut))
    frac = np.empty(len(cell))
    frac[order] = (np.arange(len(cell)) - start + 0.5) / count[sorted_cell]
    category = np.where(frac < det_cut[cell], 0, np.where(frac < pas_cut[cell], 1, 2))
    return category, frac < login_cut[cell]


def _cell_cuts() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut points per cell = channel * 3 + period (0 before, 1 May–Aug, 2 Sep–Oct)."""
    login, det, pas = np.zeros(12), np.zeros(12), np.zeros(12)
    for c, channel in enumerate(CHANNELS):
        for period in range(3):
            d, p, _ = _MIX["before" if period == 0 else "after"][channel]
            share = 0.0
            if period == 2 and channel in _LOGIN_EXTRA:
                share = _LOGIN_EXTRA[channel]
                d, p = share + (1 - share) * d, (1 - share) * p
            elif period == 2:
                share = _LOGIN_WITHIN.get(channel, 0.0)
            login[c * 3 + period], det[c * 3 + period], pas[c * 3 + period] = share, d, d + p
    return login, det, pas


def _nps_of(category: np.ndarray, login: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0–10 scores within each category; users locked out of the app score lowest."""
    n = len(category)
    detractor = np.where(
        login,
        _choice(rng, np.array([15, 12, 14, 14, 14, 16, 15.0]), n),
        _choice(rng, np.array([4, 3, 5, 7, 10, 18, 20.0]), n),
    )
    passive = 7 + _choice(rng, np.array([55, 45.0]), n)
    promoter = 9 + _choice(rng, np.array([50, 50.0]), n)
    return np.select([category == 0, category == 1], [detractor, passive], promoter)


def _tone_of(category: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Comment tone follows the score: promoters praise, detractors complain, passives mix."""
    u = rng.random(len(category))
    detractor, passive, promoter = np.where(u < 0.9, 0, 2), np.where(u < 0.5, 2, 3), np.where(u < 0.9, 1, 3)
    return np.select([category == 0, category == 1], [detractor, passive], promoter)


def _register_of(persona: np.ndarray, polite_p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """15 % English; Japanese writers are polite with a persona-dependent probability."""
    u, v = rng.random(len(persona)), rng.random(len(persona))
    return np.where(u < 0.15, _EN, np.where(v < polite_p[persona], 0, 1))


def _pick_rows(candidates: np.ndarray, eligible: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Take the first k eligible candidates; return them and the candidates left over."""
    chosen = candidates[eligible[candidates]][:k]
    return chosen, candidates[~np.isin(candidates, chosen)]


def _survey(rng: np.random.Generator, n: int) -> dict:
    """Unique survey responses with their dirt applied (duplicates are added when writing)."""
    seconds = _timestamps(rng, n, _HOUR_P, 0.04)
    day = (seconds - START_S) // 86400
    period = np.where(day < PROGRAMME_DAY, 0, np.where(day < LOGIN_DAY, 1, 2))

    n_customers = _n_customers(n)
    customer_persona = _choice(rng, _PERSONA_P, n_customers)
    customer_product = rng.integers(0, len(PRODUCTS), n_customers)
    customer = rng.integers(0, n_customers, n)
    persona = customer_persona[customer]
    product = np.where(rng.random(n) < 0.7, customer_product[customer], rng.integers(0, len(PRODUCTS), n))
    channel = _choice_rows(rng, _CHANNEL_BY_PERSONA[persona])

    category, login = _quota_categories(rng, channel * 3 + period, *_cell_cuts())
    nps = _nps_of(category, login, rng)
    csat = np.clip(np.rint(1 + 0.4 * nps + 0.55 * rng.standard_normal(n)), 1, 5).astype(np.int64)
    tone = np.where(login, 0, _tone_of(category, rng))
    register = _register_of(persona, _POLITE_BY_PERSONA, rng)

    appweb = (channel == CHANNELS.index("app")) | (channel == CHANNELS.index("web"))
    appweb_weights = np.where((period == 0)[:, None], _THEME_APPWEB_BEFORE, _THEME_APPWEB_AFTER)
    weights = np.where(appweb[:, None], appweb_weights, _THEME_BASE)
    theme = np.where(login, _LOGIN, _choice_rows(rng, weights))
    journey = _choice_rows(rng, _JOURNEY_BY_THEME[theme])

    opener_group = register * len(PERSONAS) + persona
    text = _compose(rng, register, theme, tone, product, opener_group, _SURVEY_OPENER_BANK, _TONE_CLASS[tone], 0.45)
    text = _add_noise(rng, text, register)

    # Dirt goes to disjoint rows, drawn in one random order.
    candidates = rng.permutation(n)
    everyone = np.ones(n, dtype=bool)
    non_answer, candidates = _pick_rows(candidates, everyone, round(0.05 * n))
    blank, candidates = _pick_rows(candidates, everyone, round(0.03 * n))
    short = text.str.len_chars().to_numpy() <= 100
    pii_rows, candidates = _pick_rows(candidates, short, max(3, round(0.02 * n)))
    out_of_range, candidates = _pick_rows(candidates, everyone, max(5, round(0.005 * n)))
    script_rows, candidates = _pick_rows(candidates, period == 0, len(SCRIPT_VERBATIMS))
    duplicate_rows, _ = _pick_rows(candidates, everyone, max(2, round(0.01 * n)))

    text, pii_strings = _plant_pii(rng, text, np.sort(pii_rows), register)
    non_answer_text = np.array(NON_ANSWERS)[rng.integers(0, len(NON_ANSWERS), len(non_answer))]
    text = text.scatter(non_answer, pl.Series(non_answer_text))
    # Mostly empty, sometimes a stray half- or full-width space.
    blank_text = np.array(["", " ", "　"])[_choice(rng, np.array([0.8, 0.1, 0.1]), len(blank))]
    text = text.scatter(blank, pl.Series(blank_text))
    text = text.scatter(script_rows, pl.Series(SCRIPT_VERBATIMS))
    theme[script_rows] = _USABILITY
    theme[np.concatenate([non_answer, blank])] = -1

    nps_text = nps.astype(str).astype(object)
    csat_text = csat.astype(str).astype(object)
    bad = rng.integers(0, 4, len(out_of_range))
    bad[::25] = 4  # a few non-numeric scores among the out-of-range ones
    for row, kind in zip(out_of_range, bad):
        if kind in (0, 1):
            nps_text[row] = ("11", "-1")[kind]
        elif kind in (2, 3):
            csat_text[row] = ("6", "0")[kind - 2]
        else:
            nps_text[row] = "abc"
    nps_valid = np.ones(n, dtype=bool)
    nps_valid[out_of_range[np.isin(bad, (0, 1, 4))]] = False

    frame = pl.DataFrame(
        {
            "回答ID": _ids("R", np.arange(1, n + 1), 6),
            "顧客ID": _ids("C", customer + 1, max(5, len(str(n_customers)))),
            "回答日時": _local_strings(seconds, "%Y/%m/%d %H:%M"),
            "推奨度": pl.Series(nps_text, dtype=pl.String),
            "満足度": pl.Series(csat_text, dtype=pl.String),
            "ご意見・ご要望": text,
            "ペルソナ": pl.Series(np.array(PERSONAS)[persona]),
            "チャネル": pl.Series(np.array(CHANNELS)[channel]),
            "製品ライン": pl.Series(np.array(PRODUCTS)[product]),
            "ジャーニー": pl.Series(np.array(JOURNEYS)[journey]),
        }
    )
    return {
        "frame": frame,
        "file": (period > 0).astype(np.int64),
        "theme": theme,
        "channel": channel,
        "nps": nps,
        "nps_valid": nps_valid,
        "duplicates": duplicate_rows,
        "pii": pii_strings,
        "counts": {
            "non_answers": len(non_answer),
            "blank_comments": len(blank),
            "out_of_range_rows": len(out_of_range),
            "pii_rows": len(pii_rows),
        },
    }


def _tickets(rng: np.random.Generator, n: int, n_customers: int) -> dict:
    """Zendesk-style tickets: complaint texts plus reply/solve times censored at EXPORT_AT."""
    created = _timestamps(rng, n, _TICKET_HOUR_P, 0.04)
    day = (created - START_S) // 86400
    after, late = day >= PROGRAMME_DAY, day >= LOGIN_DAY
    via = _choice(rng, np.array([0.35, 0.25, 0.20, 0.20]), n)
    product = rng.integers(0, len(PRODUCTS), n)
    customer = rng.integers(0, n_customers, n)

    login_p = np.array([0.35, 0.35, 0.10, 0.15])[via]  # web, app, phone, email
    weights = np.where(after[:, None], _TICKET_THEME_AFTER, _TICKET_THEME_BEFORE)
    theme = np.where(late & (rng.random(n) < login_p), _LOGIN, _choice_rows(rng, weights))
    register = _register_of(np.zeros(n, dtype=np.int64), np.array([0.75]), rng)
    tone = np.where(rng.random(n) < 0.85, 0, 2)
    text = _compose(rng, register, theme, tone, product, register, _TICKET_OPENER_BANK, np.full(n, 3), 0.6)
    text = _add_noise(rng, text, register)
    short = text.str.len_chars().to_numpy() <= 100
    pii_rows, _ = _pick_rows(rng.permutation(n), short, max(1, round(0.02 * n)))
    text, pii_strings = _plant_pii(rng, text, np.sort(pii_rows), register)

    # 24-hour support cuts the wait for a first reply; the fix itself takes as long as before,
    # so resolution improves only by the shorter wait.
    frt_h = rng.lognormal(np.log(np.where(after, 3.0, 20.0)), 0.85)
    work_h = rng.lognormal(np.log(36.0), 0.9, n)
    replied = created + np.rint(frt_h * 3600).astype(np.int64)
    solved = replied + np.rint(work_h * 3600).astype(np.int64)
    age_days = (EXPORT_S - created) / 86400
    backlog = rng.random(n) < 0.065 + 0.30 * np.exp(-age_days / 10)
    no_reply = replied > EXPORT_S
    no_reply[-max(2, round(0.002 * n)) :] = True  # the newest tickets still wait for a first reply
    unsolved = no_reply | backlog | (solved > EXPORT_S)
    waiting = np.where(rng.random(n) < 0.45, "pending", "open")
    status = np.where(no_reply, "open", np.where(unsolved, waiting, "solved"))

    iso = "%Y-%m-%dT%H:%M:%S+09:00"
    ids = 100001 + np.arange(n)
    frame = pl.DataFrame(
        {
            "id": pl.Series(ids, dtype=pl.Int64),
            "requester_id": _ids("C", customer + 1, max(5, len(str(n_customers)))),
            "created_at": _local_strings(created, iso),
            "first_reply_at": _local_strings(np.where(no_reply, 0, replied), iso).set(pl.Series(no_reply), None),
            "solved_at": _local_strings(np.where(unsolved, 0, solved), iso).set(pl.Series(unsolved), None),
            "status": pl.Series(status),
            "via": pl.Series(np.array(VIA)[via]),
            "product": pl.Series(np.array(PRODUCTS)[product]),
            "description": text,
        }
    )
    frt = (replied - created)[~no_reply] / 3600
    resolution = (solved - created)[~unsolved] / 3600
    return {
        "frame": frame,
        "theme_by_ticket": {str(i): THEMES[t] for i, t in zip(ids.tolist(), theme.tolist())},
        "pii": pii_strings,
        "first_response_median_h": {
            "before": _round(np.median(frt[~after[~no_reply]])),
            "after": _round(np.median(frt[after[~no_reply]])),
        },
        "resolution_median_h": {
            "before": _round(np.median(resolution[~after[~unsolved]])),
            "after": _round(np.median(resolution[after[~unsolved]])),
        },
        "unsolved": int(unsolved.sum()),
    }


def _n_customers(n_responses: int) -> int:
    """Size of the customer pool; smaller than the response count so some customers answer twice."""
    return max(50, int(n_responses * 0.75))


def _ids(prefix: str, numbers: np.ndarray, min_width: int) -> pl.Series:
    """Zero-padded identifiers such as R000001; widen past min_width only when needed."""
    width = max(min_width, len(str(int(numbers.max()))))
    return pl.Series([prefix] * len(numbers)) + pl.Series(numbers).cast(pl.String).str.zfill(width)


def _round(x: float) -> float:
    """Plain float with fixed precision, so the truth file is stable and readable."""
    return round(float(x), 4)


def _csv_lines(frame: pl.DataFrame) -> np.ndarray:
    """One RFC-4180 record per row: quote only fields holding a comma, quote or line break."""
    fields = [
        pl.when(pl.col(c).str.contains('[",\r\n]'))
        .then(pl.lit('"') + pl.col(c).str.replace_all('"', '""', literal=True) + pl.lit('"'))
        .otherwise(pl.col(c))
        for c in frame.columns
    ]
    return frame.select(pl.concat_str(fields, separator=",").alias("line"))["line"].to_numpy()


def _export_body(
    rng: np.random.Generator, lines: np.ndarray, duplicates: np.ndarray, terminator: str
) -> tuple[str, int]:
    """Join records, repeating each duplicate a few rows later and sprinkling blank lines.

    Returns the text (header included) and the number of blank lines inserted.
    """
    n = len(lines)
    # A repeated record lands shortly after the original, as when an export pages twice.
    dup_keys = np.minimum(duplicates + rng.integers(1, 30, len(duplicates)), n - 1) + 0.5
    keys = np.concatenate([np.arange(n, dtype=float), dup_keys])
    records = np.concatenate([lines, lines[duplicates]])[np.argsort(keys, kind="stable")]
    n_blank = max(1, round(0.0005 * n))
    records = np.insert(records, np.sort(rng.integers(1, len(records) + 1, n_blank)), "")
    return terminator.join([HEADER, *records.tolist()]) + terminator, n_blank


def _nps(scores: np.ndarray) -> float | None:
    """Net promoter score in points; None for an empty segment (JSON has no NaN)."""
    return _round(100 * (np.mean(scores >= 9) - np.mean(scores <= 6))) if len(scores) else None


def generate(params: DemoParams, root: str | Path = ".") -> dict:
    """Write the demo exports under ``root/raw_dir`` and the truth file; return a summary.

    The summary holds the absolute paths written and the data-row count of every file
    (records, duplicates included; header and blank lines excluded).
    """
    rng = np.random.default_rng(params.seed)
    root = Path(root)
    raw = root / params.raw_dir
    survey = _survey(rng, params.n_responses)
    tickets = _tickets(rng, params.n_tickets, _n_customers(params.n_responses))

    lines = _csv_lines(survey["frame"])
    rows: dict[str, int] = {}
    blank_lines = 0
    paths: dict[str, str] = {}
    for f, (name, terminator) in enumerate(zip(SURVEY_FILES, ("\n", "\r\n"))):
        idx = np.flatnonzero(survey["file"] == f)
        local_dups = np.flatnonzero(np.isin(idx, survey["duplicates"]))
        body, n_blank = _export_body(rng, lines[idx], local_dups, terminator)
        # File 1 is "CSV UTF-8" with a BOM; file 2 is what Japanese Excel saves by default.
        data = ("\ufeff" + body).encode("utf-8") if f == 0 else body.encode("cp932", errors="replace")
        paths[name] = str(write_bytes(data, raw / name))
        rows[name] = len(idx) + len(local_dups)
        blank_lines += n_blank
    ndjson = tickets["frame"].write_ndjson().encode("utf-8")
    paths[TICKETS_FILE] = str(write_bytes(ndjson, raw / TICKETS_FILE))
    rows[TICKETS_FILE] = params.n_tickets

    frame, theme = survey["frame"], survey["theme"]
    response_ids = frame["回答ID"].to_list()
    before = survey["file"] == 0
    valid = survey["nps_valid"]
    nps_expected = {
        channel: {
            "before": _nps(survey["nps"][valid & before & (survey["channel"] == c)]),
            "after": _nps(survey["nps"][valid & ~before & (survey["channel"] == c)]),
        }
        for c, channel in enumerate(CHANNELS)
    }
    truth = {
        "seed": params.seed,
        "programme_date": PROGRAMME_DATE.isoformat(),
        "login_theme_start": LOGIN_START.isoformat(),
        "tickets_exported_at": EXPORT_AT.isoformat() + "+09:00",
        "improved_segments": [["channel", "app"], ["channel", "web"]],
        "control_segments": [["channel", "store"]],
        "themes": list(THEMES),
        "non_answer_strings": list(NON_ANSWERS),
        "theme_by_response": {rid: THEMES[t] for rid, t in zip(response_ids, theme.tolist()) if t >= 0},
        "theme_by_ticket": tickets["theme_by_ticket"],
        "pii_strings": survey["pii"] + tickets["pii"],
        "script_verbatims": list(SCRIPT_VERBATIMS),
        "counts": {
            "duplicates": len(survey["duplicates"]),
            **survey["counts"],
            "pii_tickets": len(tickets["pii"]),
            "blank_lines": blank_lines,
            "unsolved_tickets": tickets["unsolved"],
            "rows": rows,
        },
        "expected": {
            # NPS over unique responses whose 推奨度 is an integer 0–10, by file period.
            "nps": nps_expected,
            "first_response_median_h": tickets["first_response_median_h"],
            "resolution_median_h": tickets["resolution_median_h"],
        },
    }
    truth_path = write_json(truth, root / params.truth_path, ascii=False)  # read by the tests, not by DVC
    return {"files": paths, "truth": str(truth_path), "rows": rows}
