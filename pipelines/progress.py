"""Progress of long loops (embedding, topic assignment, sentiment): count, rate and ETA.

In a notebook someone is running: a tqdm bar. Under ``koe stage`` (the runner sets ``KOE_PROGRESS``): plain lines
on stderr, which papermill forwards live from the kernel to the stage's stderr, so ``dvc repro`` and cron logs show
them, and the executed notebook keeps them. Lines are rate-limited: every ``TTY_INTERVAL_S`` seconds when a person
watches a terminal, every ``LOG_INTERVAL_S`` seconds otherwise (cron logs are not flooded), plus the final count.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm

TTY_INTERVAL_S = 2.0
LOG_INTERVAL_S = 10.0
PREFIX = "koe progress:"  # what a log reader (and tests/test_progress.py) greps for
LINE_FORMAT = PREFIX + " {desc} {n_fmt}/{total_fmt}{unit} ({percentage:.0f}%), {rate_fmt}, elapsed {elapsed}, ETA {remaining}"


class LineProgress(tqdm):
    """tqdm that prints one whole line per refresh instead of redrawing a bar with carriage returns."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        self.fp.write((msg or self.__str__()) + "\n")
        self.fp.flush()
        return True


def progress(total: int, desc: str, unit: str = "texts", mode: str | None = None, **kwargs: Any) -> tqdm:
    """A progress counter for ``total`` items: ``bar.update(n)`` after each chunk, ``close()`` (or ``with``) at the end.

    ``mode``: ``tty`` / ``log`` (lines on stderr every few / ~10 seconds) or ``bar`` (tqdm.auto: a notebook widget
    or a terminal bar); default from ``KOE_PROGRESS``, which ``koe stage`` sets, else ``bar``.
    """
    mode = mode or os.environ.get("KOE_PROGRESS") or "bar"
    if mode == "bar":
        from tqdm.auto import tqdm as auto_tqdm  # a widget in Jupyter (imports ipywidgets: only when wanted)

        return auto_tqdm(total=total, desc=desc, unit=f" {unit}", **kwargs)
    if mode not in ("tty", "log"):
        raise ValueError(f"KOE_PROGRESS={mode!r}: expected tty, log or bar")
    interval = TTY_INTERVAL_S if mode == "tty" else LOG_INTERVAL_S
    return LineProgress(
        total=total, desc=desc, unit=f" {unit}", file=kwargs.pop("file", sys.stderr), bar_format=LINE_FORMAT,
        mininterval=interval, maxinterval=interval, miniters=1, smoothing=0, **kwargs,
    )


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """(start, stop) pairs covering range(n) in steps of ``size``: the unit of work between progress updates."""
    return [(i, min(i + size, n)) for i in range(0, n, size)]
