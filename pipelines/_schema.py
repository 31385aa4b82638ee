"""Base model for every params.yaml section: unknown or mistyped keys fail loudly."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
