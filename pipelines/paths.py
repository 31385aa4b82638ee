"""Where the project is: notebooks find it from their own folder, cron and tests from KOE_ROOT."""

from __future__ import annotations

import os
from pathlib import Path


def project_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: KOE_ROOT, else the working directory) holding params.yaml."""
    here = Path(start or os.environ.get("KOE_ROOT") or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no params.yaml at or above {here}: run from inside a koe project")
