"""Run the pipeline's stage notebooks, as `koe stage` does, in ONE long-lived kernel.

The export-shape matrix runs every stage notebook of several projects; a fresh process and kernel per stage (what
`dvc repro` does, and what the demo's end-to-end test checks) would cost minutes of start-up. Here each notebook is
parameterised by papermill from its project's params.yaml, executed cell by cell by nbclient on a shared kernel (the
project chosen through KOE_ROOT and the working directory, as the runner sets them), and the report page is written
by the report stage's own run/write pair — the same code path minus the per-stage process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from papermill.parameterize import parameterize_notebook

from pipelines import stages
from pipelines.io import write_result
from pipelines.params import load, section
from pipelines.runner import KERNEL, check_notebook_params


class SharedKernel:
    def __init__(self, kernel_name: str = KERNEL):
        self.km = KernelManager(kernel_name=kernel_name)
        self.km.start_kernel()

    def close(self) -> None:
        self.km.shutdown_kernel(now=True)

    def _execute(self, nb: nbformat.NotebookNode) -> None:
        NotebookClient(nb, km=self.km, kernel_name=self.km.kernel_name, timeout=900, allow_errors=False).execute()

    def run_stage(self, stage: str, root: Path) -> Path:
        root = Path(root).resolve()
        params = load(root / "params.yaml")
        values = section(params, stage)
        check_notebook_params(stage, root, values)
        notebook = root / stages.STAGES[stage].notebook
        nb = nbformat.read(notebook, as_version=4)
        # What papermill's execute_notebook prepares before parameterising: tags on every cell, its metadata block.
        for cell in nb.cells:
            cell.metadata.setdefault("tags", [])
        nb.metadata.setdefault("papermill", {})
        nb = parameterize_notebook(nb, values, kernel_name=self.km.kernel_name, language="python")
        # Where `koe stage` would start its kernel: the notebook's folder, with KOE_ROOT naming the project.
        setup = nbformat.v4.new_code_cell(
            f"import os\nos.environ['KOE_ROOT'] = {json.dumps(str(root))}\nos.chdir({json.dumps(str(notebook.parent))})")
        nb.cells.insert(0, setup)
        out_dir = root / stages.EXECUTED_DIR
        out_dir.mkdir(parents=True, exist_ok=True)
        executed = out_dir / notebook.name
        try:
            self._execute(nb)
        except CellExecutionError as e:
            failed = out_dir / f"{notebook.stem}.failed.ipynb"
            nbformat.write(nb, failed)
            raise AssertionError(f"stage {stage} failed in {root}: {e.ename}: {e.evalue}") from None
        del nb.cells[0]
        nbformat.write(nb, executed)
        if stage == "report":
            from pipelines import report

            write_result(report.run(params.report, root, notebook=executed), params.report, root)
        return executed

    def run_all(self, root: Path) -> None:
        env = os.environ.get("KOE_ROOT")
        try:
            for stage in stages.STAGES:
                self.run_stage(stage, root)
        finally:
            if env is not None:
                os.environ["KOE_ROOT"] = env
