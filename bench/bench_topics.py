"""Embed + topics wall time and throughput on demo data of several sizes (a benchmark, not a test).

    python bench/bench_topics.py                 # 1,500 and 6,000 responses (the test and `make demo` sizes)
    python bench/bench_topics.py --sizes 100000  # the issue's scale target

For each size: clean, embed (cold cache), embed again (warm cache: nothing to embed), topics, then topics
again after changing only a clustering parameter (what a researcher's re-run costs). Prints one line per step.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from pipelines import clean, demo, embed, params, topics

ROOT = Path(__file__).resolve().parent.parent


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench(n: int, workdir: Path) -> dict:
    p = params.load(ROOT / "params.yaml")
    demo.generate(p.demo.model_copy(update={"n_responses": n, "n_tickets": max(n // 2, 50)}), workdir)
    result = clean.run(p.clean, workdir)
    clean.write(result, p.clean, workdir)
    (table, m1), t_embed = _timed(lambda: embed.run(p.embed, workdir))
    embed.write(table, m1, p.embed, workdir)
    (_, m2), t_embed_warm = _timed(lambda: embed.run(p.embed, workdir))
    out, t_topics = _timed(lambda: topics.run(p.topics, workdir))
    topics.write(*out, p.topics, workdir)
    changed = p.topics.model_copy(update={"min_cluster_size": p.topics.min_cluster_size + 5})
    out2, t_rerun = _timed(lambda: topics.run(changed, workdir))
    verbatims = out[5]["verbatims"]
    return {
        "responses": n, "verbatims": verbatims, "unique_texts": m1["texts"],
        "embed_s": round(t_embed, 1), "embed_texts_per_s": round(m1["embedded_now"] / t_embed),
        "embed_warm_s": round(t_embed_warm, 1), "embedded_on_warm_run": m2["embedded_now"],
        "topics_s": round(t_topics, 1), "topics_verbatims_per_s": round(verbatims / t_topics),
        "topics_rerun_s": round(t_rerun, 1),
        "rerun_share_of_cold": round(t_rerun / (t_embed + t_topics), 3),
        "n_topics": out[5]["n_topics"], "outlier_share": out[5]["outlier_share"],
        "coherence_npmi": out[5]["coherence_npmi"], "n_topics_rerun": out2[5]["n_topics"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1500, 6000])
    args = parser.parse_args()
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"koe-bench-{n}-") as tmp:
            print(json.dumps(bench(n, Path(tmp)), ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
