"""The shared setup of the blog notebooks (``notebooks/src/*.py``): the run they read, and helpers around it.

Every notebook opens with one setup cell::

    from harness.notebook import RUN as run
    from harness.notebook import figure, medians, only, run_text, show, show_source

    print(run_text())

What the notebooks read:

- ``ROOT``: the repository root, the first folder from the current directory upwards that holds
  ``pyproject.toml`` (a notebook runs from ``notebooks/`` or from the root);
- ``RUN_DIR``: the results folder named by the environment variable ``IPCBENCH_RUN``, or else the
  committed reference run, ``ROOT/results/reference``;
- ``RUN``: that folder loaded by :func:`harness.results.load_run` (a :class:`~harness.results.RunData`, its
  summary recomputed from the raw samples).

The three are computed on first use (a module ``__getattr__``) and then kept, so importing this module
reads nothing; :func:`root_dir`, :func:`run_dir` and :func:`loaded_run` are the same values as functions.
Importing it does apply the report's figure style (:func:`harness.report.style.apply`) and sets pandas'
display precision to 3 digits, which is what a notebook wants before its first table or figure.

The helpers wrap the report's own functions (``harness.report``) and the results model (``harness.results``),
so a notebook holds no measurement logic of its own: :func:`only` narrows a run to some strategies,
:func:`medians` tabulates its summary, :func:`figure` draws one of the report's figures, :func:`show`
displays any matplotlib figure as the report saves it, :func:`show_source` prints code from this checkout,
and :func:`run_text` says which run the notebook reads.

Nothing else in ``harness`` imports this module. It needs IPython (installed with the ``dev`` extra, through
ipykernel), which is not a dependency of the harness itself.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import os
import textwrap
from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display
from matplotlib.figure import Figure

from harness.report import plots, provenance, style
from harness.results import RunData, load_run, summarize

RUN_ENV_VAR = "IPCBENCH_RUN"
FIGURE_WIDTH_PX = 800  # the report's figures are drawn for a blog column of this width

# Computed on first use by __getattr__ below; declared here for readers and type checkers.
ROOT: Path
RUN_DIR: Path
RUN: RunData

style.apply()  # the report's look: blog-width figures, one colour and marker per strategy
pd.set_option("display.precision", 3)


@functools.cache
def root_dir() -> Path:
    """The repository root: the current directory or the nearest parent that holds ``pyproject.toml``."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    raise FileNotFoundError(f"no pyproject.toml in {here} or above it: run the notebook inside the repository")


@functools.cache
def run_dir() -> Path:
    """The results folder the notebooks read: ``$IPCBENCH_RUN``, or else the committed reference run."""
    named = os.environ.get(RUN_ENV_VAR)
    return Path(named) if named else root_dir() / "results" / "reference"


@functools.cache
def loaded_run() -> RunData:
    """The run in :func:`run_dir`, loaded once."""
    return load_run(run_dir())


_LAZY = {"ROOT": root_dir, "RUN_DIR": run_dir, "RUN": loaded_run}


def __getattr__(name: str) -> object:
    """``ROOT``, ``RUN_DIR`` and ``RUN``, computed on first use."""
    if name in _LAZY:
        return _LAZY[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_text(data: RunData | None = None) -> str:
    """One line saying which run ``data`` (default: ``RUN``) is: id, folder, machine, dataset, config and n."""
    data = loaded_run() if data is None else data
    return (
        f"run {provenance.lookup(data.env, 'run_id')} from {data.root}: {provenance.machine_text(data.env)}; "
        f"dataset {provenance.dataset_text(data)}; {provenance.config_text(data.samples)}; {provenance.n_text(data)}"
    )


def only(data: RunData, *strategies: str) -> RunData:
    """``data`` restricted to some strategies: same colours, summary recomputed from the raw samples."""
    samples = data.samples[data.samples["strategy"].isin(strategies)]
    return dataclasses.replace(data, samples=samples, summary=summarize(samples))


def show(fig: Figure) -> None:
    """Display a matplotlib Figure as the report saves it (PNG at the report's dpi, 800 px wide)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    display(Image(buffer.getvalue(), width=FIGURE_WIDTH_PX))


def figure(name: str, data: RunData | None = None) -> None:
    """One of the report's figures (``harness.report.plots``) for ``data`` (default: ``RUN``), captioned."""
    data = loaded_run() if data is None else data
    specs = {spec.name: spec for spec in (*plots.FIGURES, plots.FAULTS_FIGURE)}
    if name not in specs:
        raise ValueError(f"no figure {name!r}: the report draws {', '.join(specs)}")
    spec = specs[name]
    show(spec.draw(data))
    context = provenance.caption_context(data, "wait_ms" if name == "wait_ecdf" else None)
    display(Markdown(f"*{spec.describe}* {context}"))


def medians(data: RunData, *metrics: str) -> pd.DataFrame:
    """Median of each metric per cell (strategy x workers), from the summary recomputed from the samples."""
    columns = ["strategy", "workers", "n", *(f"{m}_median" for m in metrics)]
    return data.summary[columns].rename(columns=lambda c: c.removesuffix("_median")).set_index(["strategy", "workers"])


def show_source(obj: object) -> None:
    """The source of ``obj`` as it is in this checkout, so the notebook cannot drift from the code."""
    display(Markdown("```python\n" + textwrap.dedent(inspect.getsource(obj)) + "```"))
