"""The stage contract: pipelines/stages.py, dvc.yaml, params.yaml, the notebooks, the README's stage tree and each
stage's Result agree, and the one writer saves a Result by type, atomically."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import nbformat
import papermill
import polars as pl
import pytest
import yaml

from pipelines import io as kio
from pipelines import cli, params_cell, stages
from pipelines.params import STAGES as NOTEBOOKS
from pipelines.params import load
from pipelines.stages import STAGES, result_field

ROOT = Path(__file__).resolve().parent.parent
RAW = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def _resolve(entry: str | dict) -> str:
    """A dvc.yaml path with ${section.key} filled in from params.yaml (as DVC does)."""
    path = next(iter(entry)) if isinstance(entry, dict) else entry
    return re.sub(r"\$\{(\w+)\.(\w+)\}", lambda m: str(RAW[m.group(1)][m.group(2)]), path)


def _dvc_outputs(spec: dict) -> set[str]:
    return {_resolve(o) for kind in ("outs", "metrics", "plots") for o in spec.get(kind, [])}


def _dvc_upstream() -> dict[str, set[str]]:
    """Stage → the stages whose outputs (dvc.yaml outs/metrics/plots) it lists among its deps."""
    made = {path: name for name, spec in DVC.items() for path in _dvc_outputs(spec)}
    return {name: {made[_resolve(d)] for d in spec["deps"] if _resolve(d) in made} for name, spec in DVC.items()}


def test_params_stages_stays_a_name_to_notebook_map_in_dag_order():
    assert NOTEBOOKS == {s.name: s.notebook for s in stages.STAGE_LIST}
    assert [Path(nb).name[:2] for nb in NOTEBOOKS.values()] == ["01", "02", "03", "04", "05", "06"]
    order = list(STAGES)
    for stage, ups in _dvc_upstream().items():
        assert all(order.index(u) < order.index(stage) for u in ups), (stage, ups)


def test_dvc_yaml_runs_each_stage_with_its_declared_inputs_and_outputs():
    assert list(DVC) == list(STAGES)
    for name, stage in STAGES.items():
        spec = DVC[name]
        assert spec["cmd"] == f"koe stage {name}"
        assert stage.notebook in spec["deps"] and stage.module in spec["deps"]
        assert name in spec["params"]
        declared = {RAW[name][k] for k in stage.outputs}
        # the executed notebook is the run's log (timings, absolute paths), not an output: dvc.lock is committed and
        # records only what the same inputs make byte for byte
        assert _dvc_outputs(spec) == declared and stage.executed not in _dvc_outputs(spec), name
        deps = {_resolve(d) for d in spec["deps"]}
        assert {RAW[name][k] for k in stage.inputs} <= deps, name


def test_every_input_is_an_earlier_stages_output():
    params = load(ROOT / "params.yaml")
    assert stages.unmatched_inputs(params) == []
    assert {k: set(v) for k, v in stages.upstream(params).items()} == _dvc_upstream()
    drifted = params.model_copy(update={"kpis": params.kpis.model_copy(update={"in_topics": "data/topics/topic.parquet"})})
    problems = stages.unmatched_inputs(drifted)
    assert len(problems) == 1 and problems[0].startswith("kpis.in_topics = 'data/topics/topic.parquet' is no earlier stage's output")
    assert "data/topics/topics.parquet" in problems[0]


@pytest.mark.parametrize("name", list(STAGES))
def test_notebook_parameters_equal_the_schema_and_params_yaml(name):
    declared = papermill.inspect_notebook(str(ROOT / STAGES[name].notebook))
    assert list(declared) == list(STAGES[name].schema.model_fields)
    assert set(declared) == set(RAW[name])


def test_parameters_cells_are_generated_from_schema_and_params_yaml(tmp_path):
    assert params_cell.sync(ROOT, check=True) == []
    # a hand edit is caught, and the command writes the cell back
    for rel in ("params.yaml", "notebooks"):
        (shutil.copytree if rel == "notebooks" else shutil.copy)(ROOT / rel, tmp_path / rel)
    path = tmp_path / STAGES["embed"].notebook
    nb = nbformat.read(path, as_version=4)
    cell = params_cell.parameters_cell(nb, path)
    cell.source = cell.source.replace("threads: int = 1", "threads: int = 4")
    nbformat.write(nb, path)
    assert params_cell.sync(tmp_path, ["embed", "topics"], check=True) == [STAGES["embed"].notebook]
    assert cli.main(["--root", str(tmp_path), "params-cell", "--check"]) == 1
    assert cli.main(["--root", str(tmp_path), "params-cell", "embed"]) == 0
    assert cli.main(["--root", str(tmp_path), "params-cell", "--check"]) == 0
    assert "threads: int = 1" in params_cell.parameters_cell(nbformat.read(path, as_version=4), path).source


def test_parameters_cell_lines_carry_type_value_and_comment():
    source = params_cell.cell_source(STAGES["kpis"], RAW["kpis"])
    assert "\nas_of: Optional[str] = None  # end (exclusive) of the current window" in source
    assert "\nprogramme_date: Optional[str] = '2026-05-01'  # before/after split; None → no programme comparison" in source
    topics = params_cell.cell_source(STAGES["topics"], {**RAW["topics"], "labels": {3: "ログイン不具合"}})
    assert "\nlabels: dict = {3: 'ログイン不具合'}  # researcher's Japanese labels" in topics
    assert "\nclusterer: str = 'hdbscan'  # kmeans | hdbscan" in topics
    with pytest.raises(KeyError, match="n_topic"):
        params_cell.cell_source(STAGES["topics"], {"n_topic": 3})


def _readme_tree() -> dict[str, tuple[str, set[str]]]:
    """README's stage tree → stage: (notebook, upstream stages = its parent in the tree + those after '← also')."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## How it fits together", 1)[1].split("```", 2)[1]
    tree, parents = {}, []  # parents: (column of the branch mark, stage) down the current path
    for line in block.splitlines():
        m = re.match(r"^(\s*)[└├]─ (\w+)\s+(\S+\.ipynb)\s+→[^←]*(?:← also (.+))?$", line)
        if not m:
            continue
        col = len(m.group(1))
        while parents and parents[-1][0] >= col:
            parents.pop()
        also = {s.strip() for s in (m.group(4) or "").split(",") if s.strip()}
        tree[m.group(2)] = (m.group(3), ({parents[-1][1]} if parents else set()) | also)
        parents.append((col, m.group(2)))
    return tree


def test_readme_stage_tree_is_dvc_yamls_dag():
    tree = _readme_tree()
    assert list(tree) == list(STAGES)
    upstream = _dvc_upstream()
    for name, (notebook, ups) in tree.items():
        assert notebook == Path(STAGES[name].notebook).name
        assert ups == upstream[name], (name, ups, upstream[name])


def test_readme_tells_the_fast_test_tier():
    assert "make test-fast" in (ROOT / "README.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------ Results and the writer

def _result_classes():
    from pipelines import clean, embed, report, sentiment, topics

    return {"clean": clean.CleanResult, "embed": embed.EmbedResult, "topics": topics.TopicsResult,
            "sentiment": sentiment.SentimentResult, "report": report.ReportResult}


@pytest.mark.parametrize("name", ["clean", "embed", "topics", "sentiment", "report"])
def test_each_result_has_one_field_per_declared_output(name):
    fields = [f.name for f in dataclasses.fields(_result_classes()[name])]
    assert sorted(fields) == sorted(result_field(k) for k in STAGES[name].outputs)


def test_output_keys_map_to_result_fields():
    assert [result_field(k) for k in ("out_alerts", "metrics_path", "plots_path", "model_dir", "umap_cache")] == [
        "alerts", "metrics", "plots", "model", "umap_cache"]
    with pytest.raises(KeyError, match="does not name an output"):
        result_field("in_feedback")


def _save_pair(value: dict, folder: Path) -> None:
    folder.mkdir()
    for k, v in value.items():
        (folder / k).write_text(v, encoding="utf-8")


def test_write_result_saves_each_field_by_type(tmp_path):
    from pipelines.schema import StrictModel

    class Params(StrictModel):
        in_x: str = "in.parquet"
        out_table: str = "data/t.parquet"
        out_page: str = "reports/p.html"
        out_cache: str = "data/cache.parquet"
        model_dir: str = "data/model"
        metrics_path: str = "reports/m.json"
        plots_path: str = "reports/plot.json"
        seed: int = 1

    @dataclasses.dataclass
    class Result:
        table: pl.DataFrame
        page: str
        cache: pl.DataFrame | None
        model: dict = kio.saved_with(_save_pair)
        metrics: dict = dataclasses.field(default_factory=dict)
        plots: list = dataclasses.field(default_factory=list)

    frame = pl.DataFrame({"a": [1, 2], "b": ["声", "x"]})
    result = Result(frame, "<p>声</p>", None, {"weights.txt": "w1"}, {"label": "ログイン", "n": 2}, [{"x": 1}])
    written = kio.write_result(result, Params(), tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "data/model", "data/t.parquet", "reports/m.json", "reports/p.html", "reports/plot.json"]
    assert pl.read_parquet(tmp_path / "data/t.parquet").equals(frame)
    assert (tmp_path / "reports/p.html").read_text(encoding="utf-8") == "<p>声</p>"
    assert not (tmp_path / "data/cache.parquet").exists()  # None: nothing to write
    metrics = (tmp_path / "reports/m.json").read_bytes()
    assert metrics.isascii() and json.loads(metrics) == {"label": "ログイン", "n": 2}  # DVC reads non-ASCII as binary
    assert json.loads((tmp_path / "reports/plot.json").read_text()) == [{"x": 1}]
    assert (tmp_path / "data/model/weights.txt").read_text() == "w1"
    # the folder is replaced whole; a failing save leaves the previous one
    kio.write_result(dataclasses.replace(result, model={"weights.txt": "w2"}), Params(), tmp_path)
    assert [p.name for p in (tmp_path / "data/model").iterdir()] == ["weights.txt"]
    assert (tmp_path / "data/model/weights.txt").read_text() == "w2"
    with pytest.raises(FileExistsError):
        kio.write_dir(lambda folder: (folder.mkdir(), folder.mkdir()), tmp_path / "data/model")
    assert (tmp_path / "data/model/weights.txt").read_text() == "w2"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["model", "t.parquet"]  # no staging left


def test_write_result_refuses_a_result_that_does_not_match_the_params(tmp_path):
    from pipelines.schema import SentimentParams

    @dataclasses.dataclass
    class Partial:
        verbatims: pl.DataFrame
        net: pl.DataFrame
        extra: dict

    with pytest.raises(TypeError, match=r"fields without an output \['extra'\]; outputs without a field \['metrics', 'tickets'\]"):
        kio.write_result(Partial(pl.DataFrame(), pl.DataFrame(), {}), SentimentParams(), tmp_path)
    with pytest.raises(TypeError, match="no writer for a set"):
        kio.write_value({1, 2}, tmp_path / "x")


def test_write_result_takes_the_kpis_stage_result_by_its_output_names(tmp_path):
    """kpis.run returns KpisResult(tests, monthly, drivers, alerts, metrics, plots): one writer call saves it."""
    from pipelines.schema import KpisParams

    @dataclasses.dataclass
    class KpisShaped:
        tests: pl.DataFrame
        monthly: pl.DataFrame
        drivers: pl.DataFrame
        alerts: dict
        metrics: dict
        plots: list

    frame = pl.DataFrame({"kpi": ["nps"], "diff": [12.5]})
    params = KpisParams()
    kio.write_result(KpisShaped(frame, frame, frame, {"schema_version": 1, "alerts": []}, {"n_tests": 1}, [{"period": "2026-01"}]),
                     params, tmp_path)
    assert json.loads((tmp_path / params.out_alerts).read_text()) == {"schema_version": 1, "alerts": []}
    assert json.loads((tmp_path / params.plots_path).read_text()) == [{"period": "2026-01"}]
    assert all(pl.read_parquet(tmp_path / p).equals(frame) for p in (params.out_tests, params.out_monthly, params.out_drivers))
