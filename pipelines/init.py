"""`koe init FILE…`: point koe at a researcher's own exports.

Each file is inspected (pipelines.inspect_export); the guesses are printed with their evidence, then written into
params.yaml in place of the demo's sources: clean.surveys and clean.tickets, the KPIs the data supports and their
scales, the segments, the report's language and title, the comparison window from the data's span, and no programme
date unless one is given. The file is edited as pipelines.curation edits it: only those keys' values change (comments
and layout stay), the result is validated with the pipeline's schema first and replaces the file atomically.

Where the files live: every export must be under data/raw/, the folder the clean stage's DVC dependency watches (a
file elsewhere would not re-run the pipeline when it changes). A file given from elsewhere is copied into data/raw/
(never over a different file of the same name) and params.yaml points at the copy; `--dry-run` copies and writes
nothing.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pipelines.inspect_export import ExportInspection, inspect_file
from pipelines.kpi_registry import KPIS
from pipelines.params import ParamsError

RAW_DIR = "data/raw"
SLOTS = ("persona", "channel", "product", "journey")


@dataclass
class InitPlan:
    inspections: list[ExportInspection]
    changes: dict[str, Any]  # dotted params.yaml key → new value
    copies: list[tuple[Path, Path]] = field(default_factory=list)  # (given file, its place under data/raw)
    notes: list[str] = field(default_factory=list)


def _place(file: Path, root: Path) -> tuple[Path, Path | None]:
    """(where the file is read from under data/raw, the file to copy there or None)."""
    raw = (root / RAW_DIR).resolve()
    file = file.resolve()
    if file.is_relative_to(raw):
        return file, None
    dest = raw / file.name
    if dest.exists() and dest.read_bytes() != file.read_bytes():
        raise ParamsError(f"{file}: koe reads exports from {RAW_DIR}/, and {dest} already exists with other content; "
                          "rename one of them")
    return dest, file


def _months(span: tuple[date, date]) -> int:
    a, b = span
    return (b.year - a.year) * 12 + b.month - a.month + 1


def _glob_for(paths: list[Path], root: Path) -> list[str]:
    """One glob for files of one layout (survey_export_1.csv, survey_export_2.csv → survey_export_*.csv), else one
    path each. The glob must match exactly these files."""
    rels = sorted(p.relative_to(root).as_posix() for p in paths)
    if len(rels) == 1:
        return rels
    prefix = os.path.commonprefix(rels)
    suffix = os.path.commonprefix([r[::-1] for r in rels])[::-1]
    if "/" not in rels[0][len(prefix):] and len(prefix) + len(suffix) <= min(len(r) for r in rels):
        pattern = prefix + "*" + suffix
        if sorted(p.relative_to(root).as_posix() for p in root.glob(pattern)) == rels:
            return [pattern]
    return rels


def _slug(text: str, fallback: str) -> str:
    slug = re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")
    return slug or fallback


def _survey_source(ins: ExportInspection, name: str, path: str, lang: str) -> tuple[dict, list[str], list[str]]:
    """(the source's params, its segment names, notes)."""
    columns: dict[str, str] = {}
    for role in ("response_id", "customer_id", "timestamp", "nps", "csat", "ces", "rating"):
        guess = ins.first(role)
        if guess is not None:
            columns[role] = guess.name
    notes = []
    if "response_id" not in columns or "timestamp" not in columns:
        missing = [r for r in ("response_id", "timestamp") if r not in columns]
        raise ParamsError(f"{ins.path}: no column reads as {' or '.join(missing)}; koe needs both (see the guesses above)")
    segments: dict[str, str] = {}
    slots: dict[str, str] = {}
    for g in ins.role("segment"):
        seg = g.segment or _slug(g.name, "segment")
        if seg in SLOTS and seg not in slots:
            slots[seg] = g.name
        else:
            while seg in SLOTS or seg in segments:
                seg = f"{seg}_2"
            segments[seg] = g.name
    columns.update(slots)
    texts = ins.role("text")
    if not texts:
        raise ParamsError(f"{ins.path}: no free-text column found; koe needs at least one (see the guesses above)")
    text_columns = {"comment": texts[0].name} if len(texts) == 1 else {_slug(t.name, f"q{i + 1}"): t.name for i, t in enumerate(texts)}
    source: dict[str, Any] = {"name": name, "path": path}
    if ins.preset:
        source["preset"] = ins.preset
    else:
        source["format"] = ins.format
        if ins.header_rows != 1:
            source["header_rows"] = ins.header_rows
    source["encoding"] = "auto"
    source["timezone"] = "Asia/Tokyo" if lang == "ja" else "UTC"
    if lang != "ja":
        notes.append(f"{name}: timestamps without an offset are read as {source['timezone']}: set clean.surveys[].timezone if not")
    ts = ins.first("timestamp")
    if not ins.preset and ts is not None and ts.timestamp_format:
        source["timestamp_format"] = ts.timestamp_format
    source["columns"] = columns
    source["text_columns"] = text_columns
    if segments:
        source["segments"] = segments
    for role, default in (("csat", (1, 5)), ("ces", (1, 7))):
        g = ins.first(role)
        if g is not None and g.scale and g.scale != default:
            source[f"{role}_scale"] = list(g.scale)
    return source, [*slots, *segments], notes


def plan(files: list[str | Path], root: str | Path, programme_date: date | None = None, lang: str | None = None,
         title: str | None = None) -> InitPlan:
    """What `koe init` would write: inspect every file, then derive params.yaml's new values (nothing written)."""
    root = Path(root).resolve()
    if not files:
        raise ParamsError("koe init: name at least one export file")
    placed, copies = [], []
    for f in files:
        f = Path(f)
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such file")
        dest, copy_from = _place(f, root)
        placed.append((f, dest))
        if copy_from is not None:
            copies.append((copy_from, dest))
    inspections = [inspect_file(f) for f, _ in placed]
    where = {id(ins): dest for ins, (_, dest) in zip(inspections, placed)}
    surveys_ins = [i for i in inspections if i.kind == "survey"]
    tickets_ins = [i for i in inspections if i.kind == "tickets"]
    notes: list[str] = [n for i in inspections for n in i.notes]

    # Language: the one most verbatims are written in.
    weights: dict[str, int] = {}
    for i in inspections:
        if i.language:
            weights[i.language] = weights.get(i.language, 0) + i.rows
    language = lang or (max(weights, key=weights.get) if weights else "ja")

    # Files with one layout (same columns, format, preset) become one source with a glob.
    groups: dict[tuple, list[ExportInspection]] = {}
    for i in surveys_ins:
        key = (i.format, i.preset, tuple((c.name, c.role) for c in i.columns))
        groups.setdefault(key, []).append(i)
    surveys, segment_names = [], []
    for n, group in enumerate(groups.values()):
        paths = _glob_for([where[id(i)] for i in group], root)
        for k, path in enumerate(paths):
            name = "survey" if n == 0 and k == 0 else f"survey_{len(surveys) + 1}"
            source, segs, more = _survey_source(group[0], name, path, language)
            surveys.append(source)
            segment_names += [s for s in segs if s not in segment_names]
            notes += more
    tickets = None
    if tickets_ins:
        paths = _glob_for([where[id(i)] for i in tickets_ins], root)
        if len(paths) > 1:
            raise ParamsError(f"koe init: ticket files {paths} share no name pattern; put them in one file or name them alike")
        tickets = {"name": "tickets", "path": paths[0], "preset": "zendesk", "timezone": "Asia/Tokyo" if language == "ja" else "UTC"}

    def has(role: str) -> ExportInspection | None:
        return next((i for i in surveys_ins if i.first(role) is not None), None)

    wanted = []
    if has("nps"):
        wanted.append("nps")
    if has("csat"):
        wanted += ["csat_mean", "csat_top2"]
    if has("rating"):
        wanted.append("rating_share")
    if has("ces"):
        wanted += ["ces_mean", "ces_top2"]
    if tickets:
        wanted += ["ticket_volume", "first_response_h", "resolution_h"]
    activity = (["survey"] if has("customer_id") else []) + (["tickets"] if tickets else [])
    if activity:
        wanted += ["churn_rate", "repeat_rate"]
    enabled = [k for k in wanted if k in KPIS]
    if len(enabled) < len(wanted):
        notes.append(f"KPIs {sorted(set(wanted) - set(enabled))} are not known to this koe version: left out")

    spans = [i.span for i in inspections if i.span]
    span = (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None
    months = _months(span) if span else 0
    window = 1 if months <= 3 else 2

    changes: dict[str, Any] = {
        "clean.surveys": surveys,
        "clean.tickets": tickets,
        "kpis.segments": segment_names,
        "kpis.enabled_kpis": enabled,
        "kpis.activity_sources": activity or ["survey"],
        "kpis.programme_date": programme_date.isoformat() if programme_date else None,
        "kpis.window_months": window,
        "sentiment.segments": segment_names,
        "report.lang": language,
        "report.title": title or _title(inspections[0].path),
    }
    csat = has("csat")
    if csat is not None:
        lo, hi = csat.first("csat").scale
        changes["kpis.csat"] = {"scale_min": lo, "scale_max": hi, "top_box_min": hi - 1}
    ces = has("ces")
    if ces is not None:
        lo, hi = ces.first("ces").scale
        changes["kpis.ces"] = {"column": "ces", "scale_min": lo, "scale_max": hi, "top_box_min": hi - 1, "higher_is_better": True}
        notes.append("CES read as higher-is-better (\"the company made it easy\"); set kpis.ces.higher_is_better: false for effort scales")
    rating = has("rating")
    changes["kpis.rating"] = {"column": "rating", "good_values": list(rating.first("rating").good_values)} if rating else None
    if rating is not None and rating.first("rating").note:
        notes.append(rating.first("rating").note)
    if span:
        notes.append(f"data spans {span[0]}..{span[1]} ({months} month(s)): comparison window {window} month(s)")
    if not programme_date:
        notes.append("no programme date: the report has no before/after section (koe init --programme-date YYYY-MM-DD adds one)")
    return InitPlan(inspections, changes, copies, notes)


def _title(path: Path) -> str:
    stem = re.sub(r"[_\-]+", " ", path.stem).strip()
    return stem or "Voice of the Customer"


def describe(p: InitPlan, root: Path) -> str:
    """What was guessed and why, and what params.yaml gets."""
    lines = []
    for ins in p.inspections:
        head = (f"{ins.path}: {ins.kind}, {ins.format}, encoding {ins.encoding}, preset {ins.preset or '—'}, "
                f"{ins.header_rows} header row(s), {ins.rows} rows, language {ins.language or '—'}")
        if ins.span:
            head += f", dates {ins.span[0]}..{ins.span[1]}"
        lines.append(head)
        if ins.kind == "survey":
            for c in ins.columns:
                detail = c.role + (f" ({c.segment})" if c.segment and c.role == "segment" else "")
                if c.scale:
                    detail += f" {c.scale[0]}–{c.scale[1]}"
                lines.append(f"  {c.name:<24} → {detail:<22} {c.evidence}" + (f"  [check: {c.note}]" if c.note else ""))
    for src, dest in p.copies:
        lines.append(f"copy {src} → {dest.relative_to(root)} (koe reads exports from {RAW_DIR}/)")
    lines.append("params.yaml:")
    for key, value in p.changes.items():
        lines.append(f"  {key}: {value}")
    lines += [f"note: {n}" for n in p.notes]
    return "\n".join(lines)


def apply(p: InitPlan, root: str | Path):
    """Copy files into data/raw and write the changes into root/params.yaml (validated, atomic). Returns the params."""
    from pipelines import curation

    root = Path(root)
    # Validate before copying anything: an invalid plan leaves the project as it was.
    text = (root / "params.yaml").read_text(encoding="utf-8")
    for dotted, value in p.changes.items():
        text = curation.splice(text, tuple(dotted.split(".")), value)
    curation._validate(text, root / "params.yaml")
    for src, dest in p.copies:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    return curation.update(p.changes, root / "params.yaml")


def main(files: list[str], root: Path, dry_run: bool = False, programme_date: date | None = None,
         lang: str | None = None, title: str | None = None) -> int:
    p = plan(files, root, programme_date, lang, title)
    print(describe(p, root.resolve()))
    if dry_run:
        print("dry run: nothing copied or written")
        return 0
    apply(p, root)
    print(f"{root / 'params.yaml'}: written (valid). Next: dvc repro")
    return 0
