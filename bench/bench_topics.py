"""Embed + topics wall time and throughput on demo data of several sizes (a benchmark, not a test).

    python bench/bench_topics.py                 # 1,500 and 6,000 responses (the test and `make demo` sizes)
    python bench/bench_topics.py --sizes 100000  # the issue's scale target
    python bench/bench_topics.py --sizes 1000000 --engine dask --n-workers 1 --no-rerun   # on a Dask LocalCluster

For each size: clean, embed (cold cache), embed again (warm cache: nothing to embed), topics, then topics
again after changing only a clustering parameter (what a researcher's re-run costs: UMAP's output comes from
its cache). Above `topics.fit_max_verbatims` BERTopic is fitted on a stratified sample and the rest are
assigned to their nearest topic. Prints one JSON line per size, with `uptime` (load changes the figures).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from pipelines import clean, demo, embed, params, topics
from pipelines.io import write_result

ROOT = Path(__file__).resolve().parent.parent


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench(n: int, workdir: Path, engine: str = "local", n_workers: int = 1, rerun: bool = True) -> dict:
    p = params.load(ROOT / "params.yaml")
    if engine != "local":  # embed and topic assignment as Dask tasks on a LocalCluster (started by each stage)
        setting = p.embed.engine.model_copy(update={"kind": engine, "n_workers": n_workers})
        p = p.model_copy(update={"embed": p.embed.model_copy(update={"engine": setting}),
                                 "topics": p.topics.model_copy(update={"engine": setting})})
    demo.generate(p.demo.model_copy(update={"n_responses": n, "n_tickets": max(n // 2, 50)}), workdir)
    result = clean.run(p.clean, workdir)
    write_result(result, p.clean, workdir)
    embedded, t_embed = _timed(lambda: embed.run(p.embed, workdir))
    write_result(embedded, p.embed, workdir)
    m1 = embedded.metrics
    del embedded
    warm, t_embed_warm = (None, 0.0) if not rerun else _timed(lambda: embed.run(p.embed, workdir))
    m2 = warm.metrics if warm else {"embedded_now": None}
    out, t_topics = _timed(lambda: topics.run(p.topics, workdir))
    write_result(out, p.topics, workdir)
    # A clustering change a researcher makes: larger smallest topic (reads UMAP's output from the cache).
    changed = p.topics.model_copy(update={"min_topic_share": p.topics.min_topic_share * 1.5})
    out2, t_rerun = (out, float("nan")) if not rerun else _timed(lambda: topics.run(changed, workdir))
    verbatims = out.metrics["verbatims"]
    agreement = _agreement(out.assignments, workdir)
    return {
        "responses": n, "engine": engine if engine == "local" else f"{engine} LocalCluster x{n_workers}",
        "verbatims": verbatims, "unique_texts": m1["texts"],
        "embed_s": round(t_embed, 1), "embed_texts_per_s": round(m1["embedded_now"] / t_embed),
        "embed_warm_s": round(t_embed_warm, 1), "embedded_on_warm_run": m2["embedded_now"],
        "topics_s": round(t_topics, 1), "topics_verbatims_per_s": round(verbatims / t_topics),
        "fitted_verbatims": out.metrics["fitted_verbatims"], "min_cluster_size": out.metrics["min_cluster_size"],
        "topics_rerun_s": round(t_rerun, 1), "rerun_umap_cache_hit": out2.metrics["umap_cache_hit"] if rerun else None,
        "rerun_share_of_cold": round(t_rerun / (t_embed + t_topics), 3),
        "n_topics": out.metrics["n_topics"], "outlier_share": out.metrics["outlier_share"],
        "coherence_npmi": out.metrics["coherence_npmi"], "n_topics_rerun": out2.metrics["n_topics"], **agreement,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),  # whole process so far
    }


def _agreement(assignments, workdir: Path) -> dict:
    """NMI / ARI of the topics against the demo's planted themes (as tests/test_pipeline.py measures them)."""
    import polars as pl
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    truth = json.loads((workdir / "data/demo/truth.json").read_text(encoding="utf-8"))["theme_by_response"]
    joined = assignments.join(pl.DataFrame({"response_id": list(truth), "theme": list(truth.values())}), on="response_id")
    return {"nmi_vs_planted": round(normalized_mutual_info_score(joined["theme"], joined["topic"]), 3),
            "ari_vs_planted": round(adjusted_rand_score(joined["theme"], joined["topic"]), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1500, 6000])
    parser.add_argument("--engine", choices=["local", "dask"], default="local")
    parser.add_argument("--n-workers", type=int, default=1, help="dask: LocalCluster worker processes")
    parser.add_argument("--no-rerun", action="store_true", help="skip the warm embed and the re-clustering re-run")
    args = parser.parse_args()
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"koe-bench-{n}-") as tmp:
            out = bench(n, Path(tmp), args.engine, args.n_workers, rerun=not args.no_rerun)
            print(json.dumps(out, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
