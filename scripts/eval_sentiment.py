"""Print the sentiment evaluation: accuracy / macro-F1 per language on the hand-labelled sample, and on a small demo
the Spearman correlation between the sentiment score and the respondent's own NPS answer.

    python scripts/eval_sentiment.py [--n-responses 800]

tests/test_sentiment.py asserts these figures (thresholds a little below what this prints).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines import clean, demo  # noqa: E402
from pipelines import params as kparams  # noqa: E402
from pipelines import sentiment as s  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labelled", default=str(ROOT / "tests/fixtures/sentiment/labelled.csv"))
    ap.add_argument("--n-responses", type=int, default=800)
    args = ap.parse_args()
    p = kparams.load(ROOT / "params.yaml")
    cfg = p.sentiment
    t = time.perf_counter()
    scorers = s.Scorers.load(cfg.threads)
    print(f"models loaded in {time.perf_counter() - t:.1f} s (asari ONNX + Janome, VADER)")

    labelled = s.read_labelled(args.labelled)
    t = time.perf_counter()
    ev = s.evaluate(labelled, cfg, scorers)
    print(f"\nLabelled sample ({labelled.height} verbatims, scored in {time.perf_counter() - t:.1f} s)")
    print(f"{'lang':4} {'model':6} {'n':>4} {'accuracy':>9} {'macro-F1':>9} {'polar acc':>10}  majority baseline")
    for lang, model in (("ja", "asari"), ("en", "VADER")):
        e = ev[lang]
        gold = labelled.filter(pl.col("lang") == lang)["label"]
        baseline = gold.value_counts().sort("count")["count"][-1] / gold.len()
        print(f"{lang:4} {model:6} {e['n']:>4} {e['accuracy']:>9.3f} {e['macro_f1']:>9.3f} {e['polar_accuracy']:>10.3f}  {baseline:.3f}")
        print(f"     confusion (rows gold, cols predicted; {', '.join(s.LABELS)}): {e['confusion']['matrix']}")

    with tempfile.TemporaryDirectory() as tmp:
        demo.generate(p.demo.model_copy(update={"n_responses": args.n_responses, "n_tickets": 50}), tmp)
        feedback = clean.run(p.clean, tmp).feedback.filter(pl.col("text_status") == "ok")
        t = time.perf_counter()
        scored = s.score(feedback, cfg, scorers)
        elapsed = time.perf_counter() - t
    print(f"\nDemo survey ({args.n_responses} responses → {scored.height} verbatims, scored in {elapsed:.1f} s)")
    print("Spearman(sentiment score, respondent's NPS):")
    print(json.dumps(s.nps_correlation(scored), indent=1))


if __name__ == "__main__":
    main()
