"""The `koe` command: demo data, one stage, or the whole pipeline."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date

from pipelines.paths import project_root


def _demo(args: argparse.Namespace) -> int:
    from pipelines import demo
    from pipelines.params import load

    root = project_root(args.root)
    params = load(root / "params.yaml").demo
    overrides = {k: v for k, v in {"n_responses": args.n_responses, "n_tickets": args.n_tickets, "seed": args.seed}.items() if v is not None}
    summary = demo.generate(params.model_copy(update=overrides), root)
    print(f"demo data written to {root / params.raw_dir}: {summary}")
    return 0


def _stage(args: argparse.Namespace) -> int:
    from pipelines.runner import run_stage

    run_stage(args.name, project_root(args.root))
    return 0


def _run(args: argparse.Namespace) -> int:
    from pipelines import schedule

    try:
        result = schedule.run(project_root(args.root), args.as_of, wait_s=args.wait)
    except schedule.RunLocked as e:
        print(f"koe: refused: {e}", file=sys.stderr)
        return schedule.EXIT_LOCKED
    except schedule.RunFailed as e:
        print(f"koe: error: run {args.as_of} failed: {e}; nothing was published", file=sys.stderr)
        return schedule.EXIT_FAILED
    except Exception as e:  # anything else is a failure too: never let Python's exit 1 read as "ok with alerts"
        logging.getLogger("koe").exception("run %s failed", args.as_of)
        print(f"koe: error: run {args.as_of} failed: {type(e).__name__}: {e}; nothing was published", file=sys.stderr)
        return schedule.EXIT_FAILED
    return result.exit_code


def _check(args: argparse.Namespace) -> int:
    from pipelines.params import ParamsError, load, section
    from pipelines.runner import check_notebook_params, semantic_check
    from pipelines.stages import STAGES, unmatched_inputs

    root = project_root(args.root)
    params = load(root / "params.yaml")
    for stage in STAGES:
        check_notebook_params(stage, root, section(params, stage))
    problems = unmatched_inputs(params)
    if problems:
        raise ParamsError(f"{root / 'params.yaml'}: " + "; ".join(problems))
    semantic_check(None, params, root)
    print(f"{root / 'params.yaml'}: valid; every notebook's parameters match their params.yaml section, "
          f"every input is an earlier stage's output, segments, KPIs, dates and windows fit the data")
    return 0


def _params_cell(args: argparse.Namespace) -> int:
    from pipelines.params import load
    from pipelines.params_cell import sync

    root = project_root(args.root)
    load(root / "params.yaml")  # an invalid params.yaml is named as such, not as a notebook problem
    differ = sync(root, args.stages or None, check=args.check)
    if args.check:
        for nb in differ:
            print(f"koe: {nb}: the parameters cell differs from pipelines/schema.py + params.yaml; run `koe params-cell`",
                  file=sys.stderr)
        return 1 if differ else 0
    print(f"parameters cells rewritten: {', '.join(differ) or 'none, all up to date'}")
    return 0


def _init(args: argparse.Namespace) -> int:
    from pipelines import init

    return init.main(args.files, project_root(args.root), dry_run=args.dry_run, programme_date=args.programme_date,
                     lang=args.lang, title=args.title)


def build_parser() -> argparse.ArgumentParser:
    from pipelines import __version__
    from pipelines.stages import STAGES  # light (pydantic schema only): an unknown stage is refused before any stage import

    parser = argparse.ArgumentParser(prog="koe", description="koe (声): voice-of-the-customer pipeline")
    parser.add_argument("--version", action="version", version=f"koe {__version__}")
    parser.add_argument("--root", default=None, help="project folder (default: the one holding params.yaml above the cwd)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo-data", help="write the built-in demo exports (Company A) into data/raw")
    p.add_argument("--n-responses", type=int, metavar="N", help="survey responses to generate (default: params.yaml › demo)")
    p.add_argument("--n-tickets", type=int, metavar="N", help="support tickets to generate (default: params.yaml › demo)")
    p.add_argument("--seed", type=int, help="random seed; the same seed writes the same files (default: params.yaml › demo)")
    p.set_defaults(func=_demo)
    p = sub.add_parser(
        "init", help="inspect your exports, print what each column seems to be and why, and write them into params.yaml",
        description="Guesses each export's format, encoding, preset and every column's role from its values, then "
                    "replaces the demo's sources in params.yaml (comments kept, validated, atomic). Exports are read from "
                    "data/raw/: a file given from elsewhere is copied there.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="survey exports (csv, tsv, xlsx, parquet, jsonl) and Zendesk ticket JSON Lines")
    p.add_argument("--dry-run", action="store_true", help="only print the guesses and the changes; copy and write nothing")
    p.add_argument("--programme-date", type=date.fromisoformat, default=None, metavar="DATE",
                   help="YYYY-MM-DD: compare before and after this date (default: no programme comparison)")
    p.add_argument("--lang", choices=("ja", "en"), default=None, help="report language (default: the language of the text)")
    p.add_argument("--title", default=None, help="report title (default: from the first file's name)")
    p.set_defaults(func=_init)
    p = sub.add_parser("stage", help="run one pipeline stage's notebook with its params.yaml section (dvc.yaml calls this)")
    p.add_argument("name", choices=list(STAGES), metavar="NAME", help=f"one of: {', '.join(STAGES)}")
    p.set_defaults(func=_stage)
    p = sub.add_parser(
        "run", help="scheduled run: the whole pipeline for one window, published to reports/runs/<as-of>/",
        description="Exit codes: 0 ok, 1 ok with alerts (see alerts.json), 2 failed (nothing published), "
                    "3 another run holds the lock.",
    )
    p.add_argument("--as-of", type=date.fromisoformat, default=date.today().replace(day=1),
                   help="end (exclusive) of the current window, YYYY-MM-DD (default: the 1st of this month)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to this long for a running run to finish instead of refusing at once")
    p.set_defaults(func=_run)
    p = sub.add_parser("check", help="validate params.yaml against the schema and the notebooks",
                       description="Validates params.yaml against pipelines/schema.py, checks that every stage notebook "
                                   "declares exactly its section's keys, and that every in_* path is an earlier stage's "
                                   "output. Exit 2 with the key's path on the first problem.")
    p.set_defaults(func=_check)
    p = sub.add_parser("params-cell", help="write each stage notebook's parameters cell from the schema and params.yaml")
    p.add_argument("stages", nargs="*", metavar="STAGE", help="default: every stage")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a notebook's cell differs")
    p.set_defaults(func=_params_cell)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="koe: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except Exception as e:  # one clear line for cron logs; the traceback is in the failed notebook
        from pipelines.params import ParamsError
        from pipelines.runner import StageFailed
        from pipelines.readers import InputError

        if isinstance(e, (ParamsError, StageFailed, InputError, FileNotFoundError)):
            print(f"koe: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
