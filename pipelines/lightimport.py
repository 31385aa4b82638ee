"""Imports without the import-time work of optional extras koe never uses.

papermill and BERTopic (through plotly's renderers and nbformat) import jsonschema, whose format checkers for
IRIs (rfc3987_syntax builds a Lark grammar at import, ~2 s of CPU) and durations (isoduration → arrow) koe never
calls, and papermill pulls in pyarrow.fs (its HDFS handler). nbformat's schemas use no "format", so validation is
unchanged.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

UNUSED_AT_IMPORT = ("rfc3987_syntax", "isoduration", "pyarrow.fs")


@contextlib.contextmanager
def without(modules: tuple[str, ...] = UNUSED_AT_IMPORT) -> Iterator[None]:
    """Make ``modules`` unimportable while the block imports (an ImportError their importers handle), then restore."""
    blocked = [m for m in modules if m not in sys.modules]
    for m in blocked:
        sys.modules[m] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for m in blocked:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
