"""Write environment.yml from requirements.lock so conda users get the same pinned set."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pins(lock_text: str) -> list[str]:
    return [line.strip() for line in lock_text.splitlines() if re.match(r"^[A-Za-z0-9_.\-\[\]]+==", line.strip())]


# bertopic declares sentence-transformers (→ torch, GBs of CUDA); koe embeds without it, so conda
# users install bertopic without its dependencies, as the Makefile's pinned closure does.
# asari pins packaging<22 and wants skl2onnx, needed only to retrain its model (overrides.txt drops both).
NO_DEPS = ("bertopic", "asari")


def render(lock_text: str) -> str:
    no_deps = [p for p in pins(lock_text) if p.split("==")[0] in NO_DEPS]
    lines = [
        "# Generated from requirements.lock by scripts/sync_environment.py (make lock); do not edit by hand.",
        "# conda env create -f environment.yml && conda activate koe && \\",
        f"#   pip install --no-deps {' '.join(no_deps)} -e .",
        "name: koe",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python=3.11",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {p}" for p in pins(lock_text) if p not in no_deps]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = render((ROOT / "requirements.lock").read_text(encoding="utf-8"))
    (ROOT / "environment.yml").write_text(out, encoding="utf-8")
    sys.stdout.write(f"environment.yml: {out.count('==')} pinned packages\n")
