"""The `koe` command's own surface: version, help on everything, unknown stages refused at once."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import __version__, cli
from pipelines.stages import STAGES

ROOT = Path(__file__).resolve().parent.parent


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"koe {__version__}"


def test_every_subcommand_and_option_has_help():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert set(helps) == set(sub.choices) and all(helps.values()), helps
    lacking = [(name, a.dest) for name, p in [("koe", parser), *sub.choices.items()] for a in p._actions
               if not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert lacking == []


def test_unknown_stage_lists_the_valid_ones_without_importing_a_stage():
    code = ("import sys\nfrom pipelines import cli\ntry:\n    cli.main(['stage', 'foo'])\nexcept SystemExit as e:\n"
            "    print(e.code, 'papermill' in sys.modules, 'polars' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.split() == ["2", "False", "False"], proc
    assert "invalid choice: 'foo'" in proc.stderr and all(f"'{s}'" in proc.stderr for s in STAGES)
