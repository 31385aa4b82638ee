"""Atomic output writing: a stage's outputs appear whole or not at all.

``write_result`` is the one writer of every stage: it saves each field of a stage's Result to the path its params
name (field ``x`` ↔ ``out_x``, ``metrics`` ↔ ``metrics_path`` …, see pipelines.stages), by the value's type.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable
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


def write_json(obj: Any, path: str | Path, ascii: bool = True) -> Path:
    """JSON, ASCII by default (Japanese as \\u escapes): DVC reads a metrics file with non-ASCII bytes as binary."""
    return write_text(json.dumps(obj, ensure_ascii=ascii, indent=2, sort_keys=True, default=str) + "\n", path)


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


def write_dir(save: Callable[[Path], None], path: str | Path) -> Path:
    """A folder made by ``save(folder)``: built aside, then swapped in (a failed save leaves the old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    try:
        save(staging / path.name)
        if path.exists():
            os.rename(path, old)
        try:
            os.rename(staging / path.name, path)
        except OSError:
            if old.exists():
                os.rename(old, path)  # put the previous one back
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path


def saved_with(save: Callable[[Any, Path], None]) -> Any:
    """A Result field whose value saves itself: ``save(value, folder)`` writes it into a new folder.

    ``model: Any = saved_with(save_model)`` in a Result dataclass; ``write_result`` calls the hook atomically.
    """
    return dataclasses.field(metadata={"save": save})


def write_value(value: Any, path: str | Path, save: Callable[[Any, Path], None] | None = None) -> Path:
    """One output by type: DataFrame → Parquet, dict/list → JSON, str → UTF-8 text, bytes as they are."""
    if save is not None:
        return write_dir(lambda folder: save(value, folder), path)
    if isinstance(value, pl.DataFrame):
        return write_parquet(value, path)
    if isinstance(value, (dict, list)):
        return write_json(value, path)
    if isinstance(value, str):
        return write_text(value, path)
    if isinstance(value, bytes):
        return write_bytes(value, path)
    raise TypeError(f"{path}: no writer for a {type(value).__name__}; give the Result field a hook (io.saved_with)")


def write_result(result: Any, params: Any, root: str | Path = ".") -> list[Path]:
    """Save every field of a stage's Result to the path its params name; return the paths written.

    A field set to None is not written (the stage had nothing new for it). A Result field naming no output
    in ``params``, or an output of ``params`` missing from the Result, is an error: the contract is exact.
    """
    from pipelines.stages import is_output, result_field

    root = Path(root)
    fields = {f.name: f for f in dataclasses.fields(result)}
    outputs = {result_field(k): k for k in type(params).model_fields if is_output(k)}
    if set(fields) != set(outputs):
        raise TypeError(
            f"{type(result).__name__} and {type(params).__name__} disagree: fields without an output "
            f"{sorted(set(fields) - set(outputs)) or '-'}; outputs without a field {sorted(set(outputs) - set(fields)) or '-'}"
        )
    written = []
    for name, key in outputs.items():
        value = getattr(result, name)
        if value is not None:
            written.append(write_value(value, root / getattr(params, key), fields[name].metadata.get("save")))
    return written
