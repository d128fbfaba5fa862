"""The blog notebooks run, top to bottom, against the committed reference run.

Each notebook in ``notebooks/`` is executed with nbclient in a fresh kernel of *this*
interpreter (``sys.executable -m ipykernel_launcher``), never a kernelspec found on
the machine: a user-level ``python3`` kernelspec may point at another Python without
ipcbench installed, and ``make setup``'s venv installs none of its own. The kernel's
working directory is ``notebooks/``, as when a reader opens the notebook in Jupyter.

A notebook passes when no cell raises (the failing cell's source and traceback are
the failure message) and it drew at least one figure. The notebooks' sources are
``notebooks/src/NAME.py`` (percent format), one per notebook; the committed .ipynb files
must be what ``notebooks/build.py`` writes from them, and must be committed without outputs.
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
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_post_has_a_notebook_and_a_source() -> None:
    names = [path.stem for path in NOTEBOOK_PATHS]
    sources = [path.stem for path in load_builder().sources()]
    assert sources == [path.stem for path in sorted((NOTEBOOKS / "src").glob("*.py"))], "stray file in notebooks/src"
    assert names == sources, "notebooks/*.ipynb and notebooks/src/*.py disagree: run notebooks/build.py"
    assert len(names) == 6
    listed = (NOTEBOOKS / "README.md").read_text()
    assert all(f"{name}.ipynb" in listed for name in names), "notebooks/README.md must list every notebook"


def test_committed_notebooks_are_the_built_ones_without_outputs() -> None:
    builder = load_builder()
    built = builder.rendered()
    assert sorted(built) == NOTEBOOK_PATHS
    assert builder.rendered() == built, "building twice must give identical notebooks"
    for path, text in built.items():
        assert path.read_text() == text, (
            f"{path.name} differs from notebooks/src/{path.stem}.py: run notebooks/build.py"
        )
        notebook = nbformat.reads(text, as_version=4)
        assert [cell.id for cell in notebook.cells] == [f"cell-{n:02d}" for n in range(len(notebook.cells))]
        assert all(not cell.get("outputs") and cell.get("execution_count") is None for cell in notebook.cells)
    assert builder.main(["--check"]) == 0


def test_builder_reads_percent_cells() -> None:
    source = "# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n\n\ndef f():\n    return x\n\n\n# %%\nf()\n"
    assert load_builder().parse(source) == [
        ("markdown", "# Title\n\ntext"),
        ("code", "x = 1\n\n\ndef f():\n    return x"),
        ("code", "f()"),
    ]
    for bad in ("x = 1\n# %%\n", "# %% [raw]\n", "# %% [markdown]\nnot a comment\n", ""):
        with pytest.raises(ValueError):
            load_builder().parse(bad)


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
