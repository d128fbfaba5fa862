"""The shared setup of the blog notebooks (``notebooks/src/*.py``): the run they read, and helpers around it.

Every notebook opens with one setup cell::

    from harness.notebook import RUN as run
    from harness.notebook import figure, medians, only, run_text, say, show, show_source, table

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
so a notebook holds no measurement logic of its own: :func:`committed` loads another committed results folder,
:func:`only` narrows a run to some strategies, :func:`medians` tabulates its summary, :func:`figure` draws one
of the report's figures, :func:`show` displays any matplotlib figure as the report saves it, :func:`show_source`
prints code from this checkout, and :func:`run_text` says which run the notebook reads.

Prose and numbers: a sentence that quotes a measured number is written by a code cell, :func:`say`, from the
value the cell computed; tables are shown with :func:`table`, as Markdown. The markdown cells hold no measured
number of their own (``tests/test_notebooks.py`` checks that every number they quote with a unit is in the
notebook's outputs), so a new run cannot leave the prose behind. The exported posts (``notebooks/blog.py``)
show both as the post's text.

Nothing else in ``harness`` imports this module. It needs IPython (installed with the ``dev`` extra, through
ipykernel), which is not a dependency of the harness itself.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import numbers
import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Image, Markdown, display
from matplotlib.figure import Figure

from harness.compare import weigh_change
from harness.report import plots, provenance, style
from harness.report.cells import has_workers
from harness.report.document import Table
from harness.report.markdown import table_lines
from harness.report.tables import fmt_number
from harness.results import RunData, load_run, metric_values, summarize

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
    root = Path(data.root).resolve()
    shown = root.relative_to(root_dir()) if root.is_relative_to(root_dir()) else root
    return (
        f"run {provenance.lookup(data.env, 'run_id')} from {shown}: {provenance.machine_text(data.env)}; "
        f"dataset {provenance.dataset_text(data)}; {provenance.config_text(data.samples)}; {provenance.n_text(data)}"
    )


def committed(name: str) -> RunData:
    """A committed results folder, ``results/NAME`` (e.g. ``"reference-goals"``), loaded like ``RUN``."""
    folder = root_dir() / "results" / name
    if not folder.is_dir():
        raise FileNotFoundError(f"no committed results folder {folder}")
    return load_run(folder)


def say(text: str) -> None:
    """Display ``text`` as Markdown prose: a sentence whose numbers the cell computed."""
    display(Markdown(text))


def number(value: float) -> str:
    """A measured value as the posts print it: the report's 3 significant digits (``fmt_number``), and small
    values as they are (a notebook's CPU seconds per batch are thousandths), ``n/a`` where nothing was measured."""
    if value != value:  # NaN: not measured
        return "n/a"
    return fmt_number(value) if value == 0 or abs(value) >= 0.01 else f"{value:.3g}"


def table(frame: pd.DataFrame | pd.Series, *, index: bool = True) -> None:
    """Display a table as Markdown (numbers by :func:`number`), which is how an exported post shows it."""
    frame = frame.to_frame() if isinstance(frame, pd.Series) else frame
    if index:
        frame = frame.reset_index()
    header = [str(c) for c in frame.columns]

    def cell(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, bool | np.bool_):
            return "yes" if value else "no"
        if isinstance(value, numbers.Integral):
            return f"{int(value):,}"
        if isinstance(value, numbers.Real):
            return number(float(value))
        return str(value)

    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame]
    rows = tuple(tuple(cell(v) for v in row) for row in frame.itertuples(index=False))
    display(Markdown("\n".join(table_lines(Table(tuple(header), rows, tuple(numeric))))))


@dataclasses.dataclass(frozen=True)
class Versus:
    """One cell against another on the raw samples of one metric (:func:`versus`)."""

    ratio: float  # median of the first / median of the second
    p_value: float  # two-sided Mann-Whitney U
    measurable: bool  # p < 0.05 and the medians at least 5% apart (harness.compare's defaults)

    def __str__(self) -> str:
        verdict = "a measurable difference" if self.measurable else "not measurably different"
        return f"{number(self.ratio)}x (Mann-Whitney p = {self.p_value:.2g}: {verdict})"


def cell_values(data: RunData, strategy: str, workers: int | None = None, metric: str = "batches_per_s") -> list:
    """The raw samples of ``metric`` for ``strategy`` (at ``workers``, if it has workers; the baseline pools all)."""
    rows = metric_values(data.samples, metric)  # measured windows (one row per process for per-process metrics)
    rows = rows[rows["strategy"] == strategy]
    if workers is not None and has_workers(strategy):
        rows = rows[rows["workers"] == workers]
    values = rows[metric].tolist()
    if not values:
        raise ValueError(f"no {metric} samples for {strategy} (workers={workers}) in {data.root}")
    return values


def cell_median(data: RunData, strategy: str, workers: int | None = None, metric: str = "batches_per_s") -> float:
    """The median of :func:`cell_values`: ``strategy`` at ``workers`` (the baseline: all its samples)."""
    return float(np.median(cell_values(data, strategy, workers, metric)))


def versus(data: RunData, first: str, second: str, workers: int | None = None, metric: str = "batches_per_s") -> Versus:
    """``first`` against ``second`` at ``workers``: ratio of medians, p-value, and whether it is measurable."""
    ratio, p_value, measurable = weigh_change(
        cell_values(data, second, workers, metric), cell_values(data, first, workers, metric)
    )
    return Versus(ratio, p_value, measurable)


def tiers(data: RunData, workers: int, metric: str = "batches_per_s") -> list[list[str]]:
    """The strategies at ``workers``, fastest first, in groups the measurements cannot order within.

    Sorted by median; a strategy opens a new group when it is measurably slower (:func:`versus`) than the
    first of the current group, so every strategy in a group is within the noise of the group's best.
    """
    strategies = data.summary.loc[data.summary["workers"] == workers, "strategy"].unique().tolist()
    strategies += [s for s in data.summary["strategy"].unique() if not has_workers(s) and s not in strategies]
    ordered = sorted(strategies, key=lambda s: -cell_median(data, s, workers, metric))
    groups: list[list[str]] = []
    for strategy in ordered:
        if groups and not versus(data, groups[-1][0], strategy, workers, metric).measurable:
            groups[-1].append(strategy)
        else:
            groups.append([strategy])
    return groups


def only(data: RunData, *strategies: str) -> RunData:
    """``data`` restricted to some strategies: same colours, summary recomputed from the raw samples."""
    samples = data.samples[data.samples["strategy"].isin(strategies)]
    return dataclasses.replace(data, samples=samples, summary=summarize(samples))


def where(data: RunData, **keys: object) -> RunData:
    """``data`` restricted to the cells whose keys have these values (``where(run, cache="cold", step_ms=20)``)."""
    samples = data.samples
    for key, value in keys.items():
        if key not in samples:
            raise KeyError(f"{data.root} has no cell key {key!r}")
        samples = samples[samples[key] == value]
    if samples.empty:
        raise ValueError(f"no cells of {data.root} with {keys}")
    return dataclasses.replace(data, samples=samples, summary=summarize(samples))


def show(fig: Figure) -> None:
    """Display a matplotlib Figure as the report saves it (PNG at the report's dpi, 800 px wide).

    The figure's title goes with the image as its ``alt`` text (the exported post's image description).
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    title = fig.get_suptitle() or next((ax.get_title() for ax in fig.axes if ax.get_title()), "figure")
    image = Image(buffer.getvalue(), width=FIGURE_WIDTH_PX)
    display(image, metadata={"image/png": {"width": FIGURE_WIDTH_PX, "alt": title}})


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
