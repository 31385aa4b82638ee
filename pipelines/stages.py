"""The pipeline's stages in DAG order: the one registry the runner, `koe check`, the workspace and scheduled runs read.

A stage's inputs and outputs are the params fields that name files: ``in_*`` are inputs; ``out_*``,
``metrics_path``, ``plots_path``, ``model_dir`` and ``umap_cache`` are outputs. Each stage module's
``run(params, root)`` returns one Result dataclass with a field per output (``out_x`` ↔ ``x``,
``metrics_path`` ↔ ``metrics``, ``plots_path`` ↔ ``plots``, ``model_dir`` ↔ ``model``), which
``pipelines.io.write_result`` saves. tests/test_contract.py checks dvc.yaml, params.yaml, the notebooks and the
README's stage tree against this file.

Light on purpose (pydantic schema only): the runner imports it before any stage module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipelines.schema import (
    CleanParams, EmbedParams, KoeParams, KpisParams, ReportParams, SentimentParams, StrictModel, TopicsParams,
)

EXECUTED_DIR = "reports/notebooks"  # executed copies of the stage notebooks

# Output params that do not start with out_, and the Result field each one fills.
_NAMED_OUTPUTS = {"metrics_path": "metrics", "plots_path": "plots", "model_dir": "model", "umap_cache": "umap_cache"}


def is_output(key: str) -> bool:
    return key.startswith("out_") or key in _NAMED_OUTPUTS


def is_input(key: str) -> bool:
    return key.startswith("in_")


def result_field(key: str) -> str:
    """The Result field that carries the output named by params key ``key`` (out_x → x, metrics_path → metrics …)."""
    if key.startswith("out_"):
        return key[len("out_"):]
    if key in _NAMED_OUTPUTS:
        return _NAMED_OUTPUTS[key]
    raise KeyError(f"{key!r} does not name an output (out_*, {', '.join(_NAMED_OUTPUTS)})")


@dataclass(frozen=True)
class Stage:
    name: str  # also its params.yaml section and its module pipelines/<name>.py
    notebook: str  # relative to the project root
    schema: type[StrictModel]
    # Workspace name → output key, for the tables a researcher loads by name (pipelines.workspace).
    tables: dict[str, str] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return f"pipelines/{self.name}.py"

    @property
    def executed(self) -> str:
        """Where the runner puts the executed notebook."""
        return f"{EXECUTED_DIR}/{Path(self.notebook).name}"

    @property
    def outputs(self) -> tuple[str, ...]:
        """Params keys naming the stage's outputs, in schema order."""
        return tuple(k for k in self.schema.model_fields if is_output(k))

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(k for k in self.schema.model_fields if is_input(k))

    def params(self, params: KoeParams) -> StrictModel:
        return getattr(params, self.name)

    def paths(self, params: KoeParams, keys: tuple[str, ...]) -> dict[str, str]:
        section = self.params(params)
        return {k: getattr(section, k) for k in keys}


STAGE_LIST: tuple[Stage, ...] = (
    Stage("clean", "notebooks/01_clean.ipynb", CleanParams,
          tables={"feedback": "out_feedback", "tickets": "out_tickets", "quarantine": "out_quarantine"}),
    Stage("embed", "notebooks/02_embed.ipynb", EmbedParams, tables={"embeddings": "out_embeddings"}),
    Stage("topics", "notebooks/03_topics.ipynb", TopicsParams,
          tables={"assignments": "out_assignments", "topics": "out_topics", "topics_over_time": "out_over_time",
                  "topics_by_segment": "out_by_segment"}),
    Stage("kpis", "notebooks/04_kpis.ipynb", KpisParams,
          tables={"kpi_tests": "out_tests", "kpi_monthly": "out_monthly", "kpi_drivers": "out_drivers"}),
    Stage("sentiment", "notebooks/05_sentiment.ipynb", SentimentParams,
          tables={"sentiment_verbatims": "out_verbatims", "sentiment_tickets": "out_tickets", "sentiment_net": "out_net"}),
    Stage("report", "notebooks/06_report.ipynb", ReportParams),
)
STAGES: dict[str, Stage] = {s.name: s for s in STAGE_LIST}


def get(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}") from None


def upstream(params: KoeParams) -> dict[str, list[str]]:
    """Stage → the stages whose outputs it reads (by path in params), in DAG order."""
    made_by = {path: s.name for s in STAGE_LIST for path in s.paths(params, s.outputs).values()}
    return {
        s.name: [u for u in STAGES if u in {made_by.get(p) for p in s.paths(params, s.inputs).values()}]
        for s in STAGE_LIST
    }


def unmatched_inputs(params: KoeParams) -> list[str]:
    """Every ``in_*`` path that no earlier stage writes, as a message naming the key and the paths it could be."""
    problems, made = [], {}
    for s in STAGE_LIST:
        for key, path in s.paths(params, s.inputs).items():
            if path not in made:
                problems.append(f"{s.name}.{key} = {path!r} is no earlier stage's output; earlier stages write {sorted(made)}")
        made.update({path: s.name for path in s.paths(params, s.outputs).values()})
    return problems
