"""Old vs new report on the same demo outputs (findings text, tiles, topic rows, shift rows). Needs a demo workspace
built by `dvc repro` at /tmp/rpt-demo/ws and the pre-Jinja report.py saved as /tmp/rpt-demo/old_report.py; with
--simulate-kpis it adds the nps_p_adjusted / nps_significant columns the kpis branch writes. One-off check, not a test."""
import html
import re
import sys
import types
from pathlib import Path
import polars as pl

sys.path.insert(0, "/tmp/rpt-demo")
import old_report as old  # the report.py of main before this change
from pipelines import report as new, report_data, report_findings
from pipelines.params import load

root = Path("/tmp/rpt-demo/ws")
SIMULATE = "--simulate-kpis" in sys.argv
project = load(root / "params.yaml")

def strip(s):
    s = re.sub(r"<br>", " ", s)
    return html.unescape(re.sub(r"\s+", "", re.sub(r"<[^>]+>", "", s))).strip()

def rows_of(fragment, cls=None):
    return [strip(r) for r in re.findall(r"<tr>(.*?)</tr>", fragment, flags=re.S)]

def tiles_of(fragment):
    return [strip(t) for t in re.findall(r'<div class="koe-tile".*?</div></div>', fragment, flags=re.S)]

for lang in ("ja", "en"):
    p = project.report.model_copy(update={"lang": lang})
    nctx = report_data.load(p, root, project)
    if SIMULATE and "nps_significant" not in nctx.drivers.columns:  # what the kpis branch adds: BH over topics at fdr_q
        from pipelines.kpis import bh_adjust
        adj, sig = bh_adjust(nctx.drivers["nps_p"].to_list(), q=project.kpis.fdr_q)
        nctx.drivers = nctx.drivers.with_columns(pl.Series("nps_p_adjusted", adj, dtype=pl.Float64), pl.Series("nps_significant", sig, dtype=pl.Boolean))
    op = types.SimpleNamespace(lang=lang, max_examples=p.max_examples)
    octx = old.Context(params=op, clean_metrics=nctx.clean_metrics, topics=nctx.topics, topics_over_time=nctx.topics_over_time,
                       topics_metrics=nctx.topics_metrics,
                       assignments=pl.read_parquet(root / "data/topics/assignments.parquet", columns=["response_id", "source", "nps", "topic"]),
                       sentiment_net=nctx.sentiment_net, tests=nctx.tests, monthly=nctx.monthly, alerts=nctx.alerts)
    print(f"===== {lang}")
    of, nf = old.executive_findings(octx), report_findings.executive_findings(nctx)
    print(f"findings: old {len(of)} new {len(nf)}; identical: {sum(a == b for a, b in zip(of, nf))}")
    for a, b in zip(of, nf):
        if a != b:
            print("  OLD:", a)
            print("  NEW:", b)
    ot, nt = tiles_of(old.tiles_html(octx)), tiles_of(new.tiles_html(nctx))
    print(f"tiles: old {len(ot)} new {len(nt)}; identical: {sum(a == b for a, b in zip(ot, nt))}")
    for a, b in zip(ot, nt):
        if a != b:
            print("  OLD:", a)
            print("  NEW:", b)
    orows, nrows = rows_of(old.topics_html(octx))[1:], rows_of(new.topics_html(nctx))[1:]
    print(f"topic rows: old {len(orows)} new {len(nrows)}; identical: {sum(a == b for a, b in zip(orows, nrows))}")
    for a, b in list(zip(orows, nrows))[:20]:
        if a != b:
            print("  OLD:", a[:300])
            print("  NEW:", b[:300])
    om, nm = rows_of(old.shift_table_html(octx)), rows_of(new.shift_table_html(nctx))
    print(f"shift rows: old {len(om)} new {len(nm)}; identical: {sum(a == b for a, b in zip(om, nm))}")
    diffs = [(a, b) for a, b in zip(om, nm) if a != b]
    for a, b in diffs[:6]:
        print("  OLD:", a[:300])
        print("  NEW:", b[:300])
    def mk(rows):
        return [(re.sub(r"[-+0-9.,…%]", "", r)[:12], "▲" in r, "▼" in r) for r in rows]

    print("topic labels + significance marks identical:", mk(orows) == mk(nrows))
