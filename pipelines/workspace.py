"""The workbench's view of a project: the latest stage outputs by name, with when and how they were made.

Exploration notebooks read the pipeline's outputs through this module and never write them::

    ws = Workspace.open()          # the project holding params.yaml above the notebook (or KOE_ROOT)
    ws.status()                    # every output: stage, rows, modified, fresh against dvc.lock?
    topics = ws.load("topics")     # a polars frame; ws.info("topics") says how it was made
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from pipelines.params import KoeParams, load
from pipelines.paths import project_root
from pipelines.stages import STAGE_LIST, STAGES

# name → (stage, the stage's params key holding the output's path): every table pipelines.stages declares
OUTPUTS: dict[str, tuple[str, str]] = {name: (s.name, key) for s in STAGE_LIST for name, key in s.tables.items()}
ALIASES = {"clean": "feedback", "kpis": "kpi_tests", "over_time": "topics_over_time", "by_segment": "topics_by_segment"}


@dataclass(frozen=True)
class RunInfo:
    """How and when one output was made."""

    name: str
    stage: str
    path: Path
    modified: datetime  # UTC, the file's modification time
    rows: int
    # dvc.lock's record of the run that made it: does the file still match it, and was it made with
    # the current params.yaml section? None where there is no dvc.lock entry (e.g. a stage run by hand).
    matches_lock: bool | None
    params_changed: list[str] | None
    metrics: dict[str, Any] = field(default_factory=dict)  # the stage's DVC metrics file
    notebook: Path | None = None  # the executed stage notebook (reports/notebooks/)

    @property
    def fresh(self) -> bool | None:
        """True when the file is what dvc.lock recorded and params.yaml has not changed since."""
        if self.matches_lock is None or self.params_changed is None:
            return None
        return self.matches_lock and not self.params_changed


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """As JSON would hold it: YAML's int keys become the string keys dvc.lock has."""
    return json.loads(json.dumps(value, default=str))


def _changed_keys(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new), key=str)
        return [k for key in keys for k in _changed_keys(old.get(key), new.get(key), f"{prefix}.{key}")]
    return [] if old == new else [prefix]


class Workspace:
    """Read-only access to a koe project's latest outputs."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.params: KoeParams = load(self.root / "params.yaml")
        lock = self.root / "dvc.lock"
        self._lock = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {}) if lock.is_file() else {}

    @classmethod
    def open(cls, start: str | Path | None = None) -> "Workspace":
        return cls(project_root(start))

    @staticmethod
    def _name(name: str) -> str:
        name = ALIASES.get(name, name)
        if name not in OUTPUTS:
            raise KeyError(f"no output named {name!r}; outputs are {', '.join(OUTPUTS)} (aliases: {', '.join(ALIASES)})")
        return name

    def path(self, name: str) -> Path:
        stage, key = OUTPUTS[self._name(name)]
        return self.root / getattr(getattr(self.params, stage), key)

    def load(self, name: str) -> pl.DataFrame:
        """The output ``name`` (see OUTPUTS) as a polars frame."""
        path = self.path(name)
        if not path.is_file():
            stage = OUTPUTS[self._name(name)][0]
            raise FileNotFoundError(f"{path}: not there yet; run the pipeline (`dvc repro`) or `koe stage {stage}`")
        return pl.read_parquet(path)

    def info(self, name: str) -> RunInfo:
        name = self._name(name)
        stage, _ = OUTPUTS[name]
        path = self.path(name)
        frame = self.load(name)
        rel = path.relative_to(self.root).as_posix()
        entry = self._lock.get(stage)
        matches = changed = None
        if entry:
            recorded = next((o for o in entry.get("outs", []) if o.get("path") == rel), None)
            matches = recorded is not None and recorded.get("md5") == _md5(path)
            # Compared as written in params.yaml, as DVC does (schema defaults are not in dvc.lock).
            used = entry.get("params", {}).get("params.yaml", {}).get(stage)
            current = (yaml.safe_load((self.root / "params.yaml").read_text(encoding="utf-8")) or {}).get(stage)
            changed = _changed_keys(_plain(used), _plain(current), stage) if used is not None else None
        metrics_path = self.root / getattr(self.params, stage).metrics_path
        notebook = self.root / STAGES[stage].executed
        notebook = notebook if notebook.is_file() else None
        return RunInfo(
            name=name, stage=stage, path=path,
            modified=datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc),
            rows=frame.height, matches_lock=matches, params_changed=changed,
            metrics=json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {},
            notebook=notebook,
        )

    def status(self) -> pl.DataFrame:
        """One row per output that exists: stage, path, rows, modified, fresh against dvc.lock."""
        rows = []
        for name in OUTPUTS:
            if not self.path(name).is_file():
                continue
            i = self.info(name)
            rows.append({
                "name": name, "stage": i.stage, "path": i.path.relative_to(self.root).as_posix(), "rows": i.rows,
                "modified": i.modified, "fresh": i.fresh, "params_changed": ", ".join(i.params_changed or []),
            })
        return pl.DataFrame(rows)

    # ---- topics -------------------------------------------------------------------------------------

    def labels(self) -> dict[int, str]:
        """Topic id → the label the pipeline used (the researcher's from params.yaml, else its top words)."""
        t = self.load("topics")
        return dict(zip(t["topic"].to_list(), t["label"].to_list()))

    def model(self, with_embedder: bool = True):
        """The pipeline's BERTopic model (saved without UMAP/clusterer), labelled as in the topics table.

        The model speaks its own topic ids, which differ from the table's stable ids once topics are
        matched to an earlier run or merged (the table's ``raw_topics`` lists each topic's model ids).
        ``place`` gives the table's ids for new text. With ``with_embedder`` the project's embedder is
        attached so ``transform`` works on new text.
        """
        from bertopic import BERTopic

        model = BERTopic.load(str(self.root / self.params.topics.model_dir), embedding_model=self._embedder() if with_embedder else None)
        labels = self.labels()
        model.set_topic_labels({raw: labels[topic] for raw, topic in self._model_to_table().items() if topic in labels})
        return model

    def place(self, texts: list[str]) -> pl.DataFrame:
        """New verbatims → the topics table's ids and labels, as the pipeline would assign them.

        Each text goes to the topic whose mean embedding is closest (cosine), the rule the pipeline
        uses for outliers and for verbatims beyond a fitted sample. Texts should be cleaned first
        (``pipelines.clean``): the model never saw personal data and should not now.
        """
        model = self.model()
        predicted, similarity = model.transform(list(texts))
        to_table = self._model_to_table()
        ids = [to_table.get(int(p), -1) for p in predicted]
        labels = self.labels()
        return pl.DataFrame(
            {"text": list(texts), "topic": ids, "label": [labels.get(t, "外れ値") for t in ids],
             "similarity": np.asarray(similarity, dtype=float)},
            schema={"text": pl.String, "topic": pl.Int64, "label": pl.String, "similarity": pl.Float64},
        )

    def _model_to_table(self) -> dict[int, int]:
        t = self.load("topics").select("topic", "raw_topics").explode("raw_topics").drop_nulls()
        return {-1: -1} | dict(zip(t["raw_topics"].to_list(), t["topic"].to_list()))

    def _embedder(self):
        from pipelines.embed import Embedder
        from pipelines.topics import bertopic_backend

        e = self.params.embed
        return bertopic_backend(Embedder(e.backend, e.model, e.threads))

    def documents(self) -> tuple[pl.DataFrame, np.ndarray]:
        """The modelled verbatims in the pipeline's order with their cached embeddings (no re-embedding)."""
        from pipelines.topics import docs_and_embeddings

        return docs_and_embeddings(self.load("feedback"), self.load("embeddings"))

    def over_time_for_bertopic(self):
        """The topics stage's monthly counts in the shape BERTopic's ``visualize_topics_over_time`` takes.

        Topics are given under the model's id (a merged topic under its lowest, usually largest, part), so the
        model's labels from ``model()`` name them.
        """
        t = self.load("topics").select(
            "topic", pl.col("words").list.head(5).list.join(", ").alias("Words"),
            pl.when(pl.col("topic") == -1).then(-1).otherwise(pl.col("raw_topics").list.first()).alias("model_topic"),
        )
        frame = (
            self.load("topics_over_time").join(t, on="topic")
            .select(pl.col("model_topic").alias("Topic"), "Words", pl.col("n").alias("Frequency"),
                    pl.col("period").str.to_date("%Y-%m").alias("Timestamp"))
            .sort("Timestamp", "Topic")
        )
        return frame.to_pandas()

    def verbatims(self, topic: int | None = None, segment: str | None = None, value: str | None = None,
                  period: str | None = None, limit: int | None = 50) -> pl.DataFrame:
        """Verbatims of one topic × segment value × period (any left None means all), with topic labels.

        ``segment`` is a column of the assignments (persona, channel, product, journey, lang, source);
        ``period`` a month "YYYY-MM" or a range "YYYY-MM..YYYY-MM".
        """
        a = self.load("assignments")
        if topic is not None:
            a = a.filter(pl.col("topic") == topic)
        if segment is not None:
            if segment not in a.columns:
                raise KeyError(f"no segment column {segment!r} in the assignments; columns: {', '.join(a.columns)}")
            if value is not None:
                a = a.filter(pl.col(segment) == value)
        elif value is not None:
            raise ValueError("a segment value needs its segment column (segment=...)")
        if period is not None:
            lo, _, hi = period.partition("..")
            a = a.filter((pl.col("period") >= lo) & (pl.col("period") <= (hi or lo)))
        labels = self.load("topics").select("topic", "label")
        out = (
            a.join(labels, on="topic", how="left")
            .select("verbatim_id", "period", "topic", "label", "persona", "channel", "product", "journey", "nps", "csat", "text")
            .sort("period", "verbatim_id", descending=[True, False])
        )
        return out.head(limit) if limit else out

    def crosstab(self, segment: str, period: str | None = None) -> pl.DataFrame:
        """Verbatims per topic (rows, labelled) × value of ``segment`` (columns), optionally for one period/range."""
        a = self.verbatims(segment=segment, period=period, limit=None)
        return (
            a.group_by("topic", "label", segment).len()
            .pivot(on=segment, index=["topic", "label"], values="len", sort_columns=True)
            .fill_null(0).sort("topic")
        )


def compare_assignments(a: np.ndarray | list[int], b: np.ndarray | list[int]) -> dict[str, float]:
    """Agreement between two topic assignments of the same verbatims (1.0 = the same partition)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"assignments differ in length: {a.shape[0]} vs {b.shape[0]} verbatims")
    return {"ari": float(adjusted_rand_score(a, b)), "nmi": float(normalized_mutual_info_score(a, b)),
            "n_topics_a": int(len(set(a.tolist()) - {-1})), "n_topics_b": int(len(set(b.tolist()) - {-1}))}
