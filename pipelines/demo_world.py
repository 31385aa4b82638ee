"""Company A's world in the demo: its calendar, vocabulary (themes, personas, channels, products) and the
distributions the records are drawn from, where the planted effects are set as numbers."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np


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


# --------------------------------------------------------------------------- distributions

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


def _choice(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    """n draws from a categorical distribution (probs need not be normalised)."""
    cum = np.cumsum(probs) / np.sum(probs)
    return np.minimum(np.searchsorted(cum, rng.random(n), side="right"), len(probs) - 1)


def _choice_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (n, k) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return np.minimum((u >= cum).sum(axis=1), probs.shape[1] - 1)
