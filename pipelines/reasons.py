"""Why something was not computed: a code and its fields, worded by the strings catalogue in either language.

Stages store ``{"code", "args", "reason"}``; ``reason`` is the English sentence for readers of the metrics files,
and the report words the code in its own language, so a Japanese report never quotes an English sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.report_format import catalogue, text


def why(code: str, **args: Any) -> dict[str, Any]:
    """A reason record: ``code`` names catalogue entry ``why.<code>``; its fields are kept as strings."""
    fields = {k: f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for k, v in args.items()}
    return {"code": code, "args": fields, "reason": text("en", f"why.{code}", **fields)}


def word(item: Mapping[str, Any], lang: str) -> str:
    """The reason in ``lang``; a record without a known code (older metrics files) keeps its own sentence."""
    code = item.get("code")
    if code and f"why.{code}" in catalogue():
        return text(lang, f"why.{code}", **(item.get("args") or {}))
    return str(item.get("reason") or "")
