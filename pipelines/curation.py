"""Writing a researcher's decisions back into params.yaml, so the next `dvc repro` applies them.

Only the edited key's value changes in the file: every comment, blank line, key order and the layout of every
other value stay byte for byte (a round-trip YAML dump would re-wrap long flow lists and rewrite ``null``).
The value's position comes from ruamel.yaml's composer; the new value is emitted by ruamel.yaml in flow style
(or in block style where the old value was block style). The edited file is validated with the same schema as
the pipeline (pipelines.params.KoeParams) before it atomically replaces the original.

Topic ids are those of the topics table (after the merges already in params.yaml are applied). A merge renumbers
topics, so label after a `dvc repro` that applied the merge.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from pipelines import io as kio
from pipelines.params import KoeParams, ParamsError


def _yaml() -> YAML:
    y = YAML()  # round-trip
    y.width = 1 << 16  # never wrap an emitted value
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _content_end(node: Node) -> int:
    """Index just past the last character of ``node``'s own text (block collections end at the next token)."""
    if isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        return _content_end(last[1] if isinstance(node, MappingNode) else last)
    return node.end_mark.index


def _emit(value: Any, flow: bool, indent: int) -> str:
    y = _yaml()
    y.default_flow_style = flow if value else True  # an empty collection can only be written {} or []
    buf = io.StringIO()
    y.dump(value, buf)
    text = buf.getvalue()
    text = text.removesuffix("\n...\n").rstrip("\n")  # scalars end with a document-end marker
    if flow:
        return text
    return "\n".join(" " * indent + line if line else line for line in text.split("\n"))


def _find(node: MappingNode, key: str) -> tuple[Node, Node] | None:
    return next(((k, v) for k, v in node.value if k.value == key or str(k.value) == str(key)), None)


def splice(text: str, keys: tuple[str, ...], value: Any) -> str:
    """``text`` with the value at ``keys`` (e.g. ("topics", "labels")) replaced or added; nothing else changes."""
    root = _yaml().compose(text)
    if not isinstance(root, MappingNode):
        raise ParamsError("params.yaml: the top level is not a mapping")
    node = root
    for depth, key in enumerate(keys[:-1]):
        found = _find(node, key)
        if found is None or not isinstance(found[1], MappingNode):
            raise ParamsError(f"params.yaml: no section {'.'.join(keys[: depth + 1])!r} to write into")
        node = found[1]
    found = _find(node, keys[-1])
    if found is None:  # a new key: append it after the section's last entry, at the section's indentation
        if node.flow_style or not node.value:
            raise ParamsError(f"params.yaml: cannot add {'.'.join(keys)!r} to a flow-style section")
        col = node.value[0][0].start_mark.column
        end = text.find("\n", _content_end(node))
        end = len(text) if end < 0 else end
        line = f"{' ' * col}{keys[-1]}: {_emit(value, True, 0)}"
        return text[:end] + "\n" + line + text[end:]
    key_node, old = found
    if old.start_mark.line == key_node.start_mark.line:  # value on the key's line: replace it in place
        start, end = old.start_mark.index, _content_end(old)
        new = (" " if start == end else "") + _emit(value, True, 0)  # `key:` with an empty value needs a space
        rest = text[end:]
        gap = len(rest) - len(rest.lstrip(" "))
        if rest[gap:gap + 1] == "#":  # keep a trailing comment in its column where the new value leaves room
            rest = " " * max(2, end + gap - start - len(new)) + rest[gap:]
        return text[:start] + new + rest
    end = text.find("\n", _content_end(old))
    end = len(text) if end < 0 else end
    if not isinstance(value, (dict, list)) or not value:  # a scalar or {} / [] goes on the key's line
        colon = text.index(":", key_node.end_mark.index)
        line_end = text.find("\n", colon)  # the key's line keeps its comment; the old block's lines go
        return text[:colon + 1] + " " + _emit(value, True, 0) + text[colon + 1:line_end] + text[end:]
    # Block value on the following lines: rewrite those lines at the same indentation.
    col = old.start_mark.column
    start = text.rfind("\n", 0, old.start_mark.index) + 1
    return text[:start] + _emit(value, False, col) + text[end:]


def _validate(text: str, path: Path) -> KoeParams:
    from pydantic import ValidationError
    from ruamel.yaml import YAML as _Y

    data = _Y(typ="safe", pure=True).load(text)
    try:
        return KoeParams.model_validate(data or {})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ParamsError(f"{path}: not written, the change would make it invalid: {problems}") from None


def update(changes: dict[str, Any], path: str | Path = "params.yaml") -> KoeParams:
    """Set each dotted key (e.g. "topics.labels") to its value, validate, and atomically replace ``path``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    for dotted, value in changes.items():
        text = splice(text, tuple(dotted.split(".")), value)
    params = _validate(text, path)
    kio.write_text(text, path)
    return params


def _params_path(path: str | Path | None) -> Path:
    from pipelines.paths import project_root

    return Path(path) if path is not None else project_root() / "params.yaml"


def label_topics(labels: dict[int, str], path: str | Path | None = None, replace: bool = False) -> dict[int, str]:
    """Name topics: ``labels`` maps topic id → label, added to (or, with ``replace``, instead of) the current ones.

    An empty label removes that topic's label (the pipeline then names it by its top words). Returns the labels written.
    """
    path = _params_path(path)
    current = {} if replace else dict(_current(path).topics.labels)
    for topic, label in labels.items():
        topic = int(topic)
        label = (label or "").strip()
        if label:
            current[topic] = label
        else:
            current.pop(topic, None)
    current = dict(sorted(current.items()))
    update({"topics.labels": current}, path)
    return current


def merge_topics(groups: list[list[int]], path: str | Path | None = None) -> list[list[int]]:
    """Record groups of topic ids to merge (replacing the current merges); each group needs two or more ids."""
    path = _params_path(path)
    clean = [sorted({int(t) for t in g}) for g in groups]
    for g in clean:
        if len(g) < 2:
            raise ParamsError(f"{path}: a merge needs at least two topic ids, got {g}")
    seen = [t for g in clean for t in g]
    if len(seen) != len(set(seen)):
        raise ParamsError(f"{path}: a topic id appears in more than one merge group: {clean}")
    update({"topics.merges": clean}, path)
    return clean


def seed_topics(themes: dict[str, list[str]], path: str | Path | None = None, names_en: dict[str, str] | None = None) -> list[dict]:
    """Record guided themes (name → seed words) as the topics stage's codebook (``topics.codebook``).

    The next ``dvc repro`` assigns verbatims close to a theme to it (zero-shot); see TopicsParams.codebook.
    """
    path = _params_path(path)
    codebook = []
    for name, words in themes.items():
        seed = [w.strip() for w in words if w and w.strip()]
        if not name.strip() or not seed:
            raise ParamsError(f"{path}: a seed topic needs a name and at least one seed word (got {name!r}: {words!r})")
        codebook.append({"name": name.strip(), "name_en": (names_en or {}).get(name, ""), "seed_words": seed})
    update({"topics.codebook": codebook}, path)
    return codebook


def _current(path: Path) -> KoeParams:
    return _validate(path.read_text(encoding="utf-8"), path)
