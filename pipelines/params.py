"""params.yaml: the single source of truth for every knob, validated by one typed schema."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from pipelines.schema import KoeParams
from pipelines.stages import STAGE_LIST


# Stage name → notebook that runs it, in DAG order (kept for callers of this name; pipelines.stages is the registry).
STAGES: dict[str, str] = {s.name: s.notebook for s in STAGE_LIST}


class ParamsError(ValueError):
    """params.yaml is invalid; the message names the file, key path and problem."""


def load(path: str | Path = "params.yaml") -> KoeParams:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    try:
        return KoeParams.model_validate(raw or {})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            + (f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else "")
            for err in e.errors()
        )
        raise ParamsError(f"{path}: {problems}") from None


def section(params: KoeParams, stage: str) -> dict:
    """The stage's section as plain JSON-able values (what papermill injects)."""
    return getattr(params, stage).model_dump(mode="json")
