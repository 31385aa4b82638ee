"""Topic ids that are stable across runs: centroids, Hungarian matching with the registry of earlier runs, the
researcher's merges, and the registry's update (a DVC ``persist`` output)."""

from __future__ import annotations

import numpy as np
import polars as pl

def centroids(vectors: np.ndarray, topics: np.ndarray) -> dict[int, np.ndarray]:
    """Unit-length mean embedding per topic (outliers excluded): what identifies a topic across runs."""
    out = {}
    for t in sorted(set(topics.tolist()) - {-1}):
        c = vectors[topics == t].mean(axis=0)
        out[t] = (c / max(np.linalg.norm(c), 1e-12)).astype(np.float32)
    return out


def match_topics(current: dict[int, np.ndarray], registry: pl.DataFrame | None, min_similarity: float) -> pl.DataFrame:
    """Map this run's topic ids to stable ids: Hungarian matching on centroid cosine with the registry.

    Returns (raw, topic, similarity, new): matched topics keep the registry's id; unmatched ones get
    fresh ids above every id ever used (``new`` is True when there was a previous run to match).
    """
    from scipy.optimize import linear_sum_assignment

    raw = sorted(current)
    stable = {r: None for r in raw}
    sims = {r: None for r in raw}
    has_prev = registry is not None and len(registry) > 0
    next_id = 0
    if has_prev:
        prev_ids = registry["topic"].to_list()
        prev = np.asarray(registry["centroid"].to_list(), dtype=np.float32)
        cur = np.stack([current[r] for r in raw]) if raw else np.zeros((0, prev.shape[1]), np.float32)
        sim = cur @ prev.T
        rows, cols = linear_sum_assignment(-sim)
        for i, j in zip(rows, cols):
            if sim[i, j] >= min_similarity:
                stable[raw[i]], sims[raw[i]] = prev_ids[j], float(sim[i, j])
        next_id = max(prev_ids) + 1
    for r in raw:  # raw ids are ordered by size, so new ids are too
        if stable[r] is None:
            stable[r], next_id = next_id, next_id + 1
    return pl.DataFrame(
        {"raw": raw, "topic": [stable[r] for r in raw], "similarity": [sims[r] for r in raw],
         "new": [has_prev and sims[r] is None for r in raw]},
        schema={"raw": pl.Int64, "topic": pl.Int64, "similarity": pl.Float64, "new": pl.Boolean},
    )


def apply_merges(topics: np.ndarray, merges: list[list[int]]) -> np.ndarray:
    """Researcher's merges in stable ids: every id of a group becomes the group's first id."""
    out = topics.copy()
    seen: set[int] = set()
    for group in merges:
        if len(group) < 2:
            raise ValueError(f"topics.merges: group {group} needs at least two topic ids")
        if -1 in group or seen & set(group):
            raise ValueError(f"topics.merges: group {group} repeats a topic or includes the outliers (-1)")
        seen |= set(group)
        out[np.isin(topics, group[1:])] = group[0]
    return out


def registry_update(registry: pl.DataFrame | None, matching: pl.DataFrame, cents: dict[int, np.ndarray],
                    table: pl.DataFrame) -> pl.DataFrame:
    """Every topic id ever used, with its latest centroid (pre-merge, so merges re-apply cleanly next run)."""
    labels = dict(zip(table["topic"], table["label"]))
    now = pl.DataFrame(
        {"topic": matching["topic"], "centroid": [cents[r].tolist() for r in matching["raw"]], "active": True,
         "label": [labels.get(t, "") for t in matching["topic"]]},
        schema={"topic": pl.Int64, "centroid": pl.List(pl.Float32), "active": pl.Boolean, "label": pl.String},
    )
    if registry is not None and len(registry):
        retired = registry.join(now.select("topic"), on="topic", how="anti").with_columns(pl.lit(False).alias("active"))
        now = pl.concat([now, retired.select(now.columns)])
    return now.sort("topic")
