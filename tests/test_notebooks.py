"""The blog notebooks run, top to bottom, against the committed reference run.

Each notebook in ``notebooks/`` is executed with nbclient in a fresh kernel of *this*
interpreter (``sys.executable -m ipykernel_launcher``), never a kernelspec found on
the machine: a user-level ``python3`` kernelspec may point at another Python without
ipcbench installed, and ``make setup``'s venv installs none of its own. The kernel's
working directory is ``notebooks/``, as when a reader opens the notebook in Jupyter.

A notebook passes when no cell raises (the failing cell's source and traceback are
the failure message) and it drew at least one figure. ``notebooks/_build.py`` is the
source of the notebooks: the committed .ipynb files must be what it writes, and must
be committed without outputs.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
REFERENCE = ROOT / "results" / "reference"
NOTEBOOK_PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 60  # the slowest cell (a live demo with worker processes) takes a few seconds
KERNEL_NAME = "ipcbench-this-python"
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks; a test report should not


class ThisPythonKernels(KernelSpecManager):
    """Knows one kernel: ipykernel in the interpreter running the tests."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name=f"Python ({sys.executable})",
            language="python",
            resource_dir=str(NOTEBOOKS),
        )


def load_builder():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_post_has_a_notebook() -> None:
    names = [path.stem for path in NOTEBOOK_PATHS]
    assert names == sorted(load_builder().NOTEBOOKS), "notebooks/*.ipynb and notebooks/_build.py disagree"
    assert len(names) == 6
    listed = (NOTEBOOKS / "README.md").read_text()
    assert all(f"{name}.ipynb" in listed for name in names), "notebooks/README.md must list every notebook"


def test_committed_notebooks_are_the_built_ones_without_outputs() -> None:
    for path, text in load_builder().rendered().items():
        assert path.read_text() == text, f"{path.name} differs from notebooks/_build.py: run it and commit"
        notebook = nbformat.reads(text, as_version=4)
        assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[p.stem for p in NOTEBOOK_PATHS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert (REFERENCE / "samples.jsonl").is_file(), f"{REFERENCE} is missing: the notebooks read it"
    monkeypatch.delenv("IPCBENCH_RUN", raising=False)  # the notebooks must read the committed run
    # The kernel inherits this environment: keep IPython's history database out of the home folder.
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    notebook = nbformat.read(path, as_version=4)
    manager = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ThisPythonKernels())
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=60,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{path.name}: a cell raised\n{ANSI_COLOUR.sub('', str(error))}", pytrace=False)
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert images, f"{path.name} drew no figure"
