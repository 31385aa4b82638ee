"""Atomic output writing: a stage's outputs appear whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import polars as pl


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are ordinary files
    return Path(tmp)


def write_parquet(frame: pl.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    tmp = _atomic_path(path)
    try:
        # Statistics off and fixed compression keep bytes identical across runs.
        frame.write_parquet(tmp, compression="zstd", statistics=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    # ASCII only (non-ASCII as \u escapes): DVC treats a metrics file with multi-byte text as binary and refuses it.
    return write_text(json.dumps(obj, ensure_ascii=True, indent=2, sort_keys=True, default=str) + "\n", path)


def write_text(text: str, path: str | Path, encoding: str = "utf-8") -> Path:
    return write_bytes(text.encode(encoding), path)


def write_bytes(data: bytes, path: str | Path) -> Path:
    path = Path(path)
    tmp = _atomic_path(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
