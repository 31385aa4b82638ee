"""The demo's records: survey responses and support tickets drawn as frames, with their dirt, and the truths the
tests check against.

Scores are assigned by quota within each (channel, period) cell — the detractor/passive/
promoter split of a cell matches its target to within one row — so the effects are visible
even at n_responses=1500 while each individual row is still random.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipelines.demo_text import _SURVEY_OPENER_BANK, _TICKET_OPENER_BANK, _add_noise, _compose, _plant_pii
from pipelines.demo_world import (
    _CHANNEL_BY_PERSONA, _HOUR_P, _JOURNEY_BY_THEME, _LOGIN, _LOGIN_EXTRA, _LOGIN_WITHIN, _MIX, _PERSONA_P, _POLITE_BY_PERSONA, _THEME_APPWEB_AFTER,
    _THEME_APPWEB_BEFORE, _THEME_BASE, _TICKET_HOUR_P, _TICKET_THEME_AFTER, _TICKET_THEME_BEFORE, _TONE_CLASS, _USABILITY, _EN, CHANNELS,
    EXPORT_S, JOURNEYS, LOGIN_DAY, N_DAYS, NON_ANSWERS, PERSONAS, PRODUCTS, PROGRAMME_DAY, SCRIPT_VERBATIMS, START, START_S, THEMES, VIA,
    _choice, _choice_rows,
)


def _local_strings(seconds: np.ndarray, fmt: str) -> pl.Series:
    """Format local (Asia/Tokyo wall-clock) epoch-like seconds with strftime."""
    return pl.from_epoch(pl.Series(seconds, dtype=pl.Int64), time_unit="s").dt.strftime(fmt)


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
