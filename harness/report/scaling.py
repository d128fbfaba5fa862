"""How cost grows: throughput, memory and first batch against batch size, worker count and image size.

A run that measures three or more batch sizes (``--batch-size`` for the full workload,
``--batch-mib`` for the transfer workload), three or more worker counts, or three or more
datasets of different image sizes (``--dataset a,b,c``) gets a figure and a report
section. Each *axis* is read from the run's own cells:

- ``batch``: MB per batch (the batch's data and masks, ``mb_per_s / batches_per_s``), per
  workload, at one worker count (the largest one not above the machine's cores);
- ``workers``: the worker count, for strategies that have workers; counts above the
  machine's cores (oversubscription) are drawn and marked, not left out;
- ``image``: megapixels per image (height x width, the mean over a dataset's images), per
  workload, at one worker count as for ``batch`` and one batch size.

Other settings the run varies are held at their defaults (:data:`harness.results.SWEPT_DEFAULTS`,
else their smallest value); the batch and worker axes are drawn on the run's first dataset.
How a cost grows is summarised by the exponent *k* of a least-squares fit of log(cost)
against log(axis): 0 is flat, 1 proportional, -1 inversely proportional. It is a summary
of the measured range, not a law.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from harness.results import ALL_RANKS, SWEPT_DEFAULTS, RunData, machine_cores
from strategies import LoaderConfig

from . import style
from .cells import first_dataset, has_workers, hold_at_defaults, strategy_label
from .provenance import lookup

MIN_POINTS = 3  # an axis needs this many values to show how a cost grows
COSTS: tuple[tuple[str, str, bool], ...] = (  # (metric, label with unit, log axis)
    ("batches_per_s", "batches/s", True),
    ("pss_peak_mb", "PSS peak, MB", True),
    ("time_to_first_batch_s", "first batch, s", False),
)
DEFAULT_BATCH_SIZE = LoaderConfig().batch_size  # the worker axis is shown at it when the run measured it
HELD_KEYS = ("prefetch", "start_method", "tile", "step_ms", "dtype", *SWEPT_DEFAULTS)


@dataclass(frozen=True, slots=True)
class Axis:
    """One scaling axis of a run: its cells (one row per strategy and axis value) and how to label it."""

    name: str  # "batch", "workers" or "image"
    label: str  # the x axis label
    cells: pd.DataFrame  # summary rows with an "x" column
    title: str  # e.g. "batch size (full workload, 2 workers)"
    cores: int | None  # the machine's cores (marked on the workers axis)

    @property
    def unit(self) -> str:
        """What follows a value of the axis in a table header."""
        return {"batch": " MB", "image": " MP"}.get(self.name, "")


def _hold_others(rows: pd.DataFrame, free: tuple[str, ...]) -> pd.DataFrame:
    """``rows`` with every varying key but ``free`` held at its default, else its smallest value."""
    rows = rows[rows["rank"].astype(str) == ALL_RANKS] if "rank" in rows else rows
    return hold_at_defaults(rows, (key for key in HELD_KEYS if key not in free))


def image_megapixels(env: dict) -> dict[str, float]:
    """Megapixels per image (height x width, the mean over its images) of each dataset env.json describes."""
    infos = env.get("datasets") or [env.get("dataset") or {}]
    sizes = {}
    for info in infos:
        counted = [(entry["shape"], entry["images"]) for entry in info.get("sizes") or []]
        if not counted and isinstance(info.get("shape"), list):
            counted = [(info["shape"], 1)]
        if info.get("name") and counted:
            pixels = sum(shape[-2] * shape[-1] * images for shape, images in counted)
            sizes[str(info["name"])] = pixels / sum(images for _, images in counted) / 1e6
    return sizes


def _largest_fitting(rows: pd.DataFrame, cores: int | None) -> int | None:
    """The worker count a batch or image axis is drawn at: the largest the run measured not above the cores."""
    counts = sorted(int(w) for w in rows.loc[rows["strategy"].map(has_workers).astype(bool), "workers"].unique())
    fitting = [w for w in counts if cores is None or w <= cores]
    return (fitting or counts or [None])[-1]


def _at_workers(rows: pd.DataFrame, workers: int | None) -> pd.DataFrame:
    """``rows`` at one worker count (strategies without workers keep their one cell)."""
    if workers is None:
        return rows
    return rows[(rows["workers"] == workers) | ~rows["strategy"].map(has_workers).astype(bool)]


def _image_axes(summary: pd.DataFrame, env: dict, cores: int | None) -> list[Axis]:
    """The image-size axis of each workload, where the run measured three or more datasets of different sizes."""
    sizes = image_megapixels(env)
    measured = {sizes.get(str(name)) for name in summary["dataset"].unique()} if "dataset" in summary else set()
    if len(measured - {None}) < MIN_POINTS:
        return []
    axes = []
    for workload, rows in summary.groupby("workload", sort=True):
        rows = _hold_others(rows[rows["dataset"].astype(str).isin(sizes)], ("dataset",))
        batch_sizes = set(rows["batch_size"])
        rows = rows[
            rows["batch_size"] == (DEFAULT_BATCH_SIZE if DEFAULT_BATCH_SIZE in batch_sizes else min(batch_sizes))
        ]
        chosen = _largest_fitting(rows, cores)
        rows = _at_workers(rows, chosen)
        rows = rows[~rows.duplicated(["strategy", "dataset"], keep="last")]
        if rows["dataset"].map(lambda name: sizes[str(name)]).nunique() < MIN_POINTS:
            continue
        cells = rows.assign(x=rows["dataset"].map(lambda name: round(sizes[str(name)], 3)))
        title = f"image size ({workload} workload" + (f", {chosen} workers" if chosen is not None else "")
        title += f", batch of {int(rows['batch_size'].iloc[0])} tiles)"
        axes.append(Axis("image", "megapixels per image (log scale)", cells, title, cores))
    return axes


def scaling_axes(run: RunData) -> list[Axis]:
    """The axes along which the run measured three or more values (none: no scaling figure or section)."""
    if run.summary.empty or "batches_per_s_median" not in run.summary:
        return []
    summary = first_dataset(run)[0].summary
    cores = machine_cores(run.env)
    shape = lookup(run.env, "dataset.shape")  # [C, H, W], or [H, W] for one channel
    channels = (int(shape[0]) if len(shape) == 3 else 1) if isinstance(shape, list) else None
    axes: list[Axis] = []
    with_workers = summary[summary["strategy"].map(has_workers).astype(bool)]
    for workload, rows in with_workers.groupby("workload", sort=True):
        rows = _hold_others(rows, ("workers",))
        sizes = set(rows["batch_size"])
        rows = rows[rows["batch_size"] == (DEFAULT_BATCH_SIZE if DEFAULT_BATCH_SIZE in sizes else min(sizes))]
        if rows["workers"].nunique() >= MIN_POINTS:
            cells = rows.assign(x=rows["workers"].astype(int))
            title = f"worker count ({workload} workload, batch of {_batch_mb(cells, channels).median():.1f} MB)"
            axes.append(Axis("workers", "workers (processes or threads)", cells, title, cores))
    for workload, rows in summary.groupby("workload", sort=True):
        rows = _hold_others(rows, ("batch_size",))
        if rows["batch_size"].nunique() < MIN_POINTS:
            continue
        chosen = _largest_fitting(rows, cores)
        if chosen is not None:
            rows = _at_workers(rows, chosen)
            rows = rows[~rows.duplicated(["strategy", "batch_size"], keep="last")]
        cells = rows.assign(x=_batch_mb(rows, channels))
        title = f"batch size ({workload} workload" + (f", {chosen} workers)" if chosen is not None else ")")
        axes.append(Axis("batch", "MB per batch (data and masks; log scale)", cells, title, cores))
    return axes + _image_axes(run.summary, run.env, cores)


def _tick(value: float, _position: object) -> str:
    """A plain tick label: 10,000 rather than 1e+04."""
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def _batch_mb(rows: pd.DataFrame, channels: int | None) -> pd.Series:
    """MB of a whole batch of each cell (data and masks), from its tiles, tile size, dtype and the images' channels;
    without the channels (an env.json that lacks the dataset's shape), the measured MB/s over batches/s, which an
    epoch's last, shorter batch pulls a little under."""
    if channels is None:
        per_tile = float((rows["mb_per_s_median"] / rows["batches_per_s_median"] / rows["batch_size"]).median())
        return (rows["batch_size"] * per_tile).map(lambda mb: float(f"{mb:.3g}"))
    itemsize = rows["dtype"].map(lambda name: np.dtype(str(name)).itemsize)
    return rows["batch_size"] * rows["tile"] ** 2 * (channels * itemsize + 1) / 1e6


def has_scaling(run: RunData) -> bool:
    """Whether the run has the scaling figure and section."""
    return bool(scaling_axes(run))


def growth_exponent(x: pd.Series | np.ndarray, y: pd.Series | np.ndarray) -> float | None:
    """The slope k of log(y) = k log(x) + c, least squares; None for fewer than two usable points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    usable = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if usable.sum() < 2 or np.ptp(np.log(x[usable])) == 0:
        return None
    slope, _ = np.polyfit(np.log(x[usable]), np.log(y[usable]), 1)
    return float(slope)


def growth_words(exponent: float | None) -> str:
    """``k`` read aloud: flat, proportional, inversely proportional, or ``x^k``."""
    if exponent is None:
        return "–"
    if abs(exponent) < 0.15:
        return f"flat (k = {exponent:+.2f})"
    if abs(exponent - 1) < 0.15:
        return f"proportional (k = {exponent:+.2f})"
    if abs(exponent + 1) < 0.15:
        return f"inversely proportional (k = {exponent:+.2f})"
    return f"as x^{exponent:.2f}"


def growth_table(axis: Axis) -> pd.DataFrame:
    """One row per strategy: its cells' range on the axis and how each cost grows along it."""
    rows = []
    for strategy in style.order_strategies(axis.cells["strategy"].unique()):
        cells = axis.cells[axis.cells["strategy"] == strategy].sort_values("x")
        if axis.name == "workers" and not has_workers(strategy):
            continue
        row: dict[str, object] = {"strategy": strategy}
        for metric, label, _ in COSTS:
            column = f"{metric}_median"
            if column in cells:
                row[label] = growth_exponent(cells["x"], cells[column])
        rows.append(row)
    return pd.DataFrame(rows)


def _named(axes: list[Axis]) -> str:
    """``"batch size and worker count"``: the settings the axes vary, in words."""
    words = list(
        dict.fromkeys({"batch": "batch size", "workers": "worker count", "image": "image size"}[a.name] for a in axes)
    )
    return " and ".join(words) if len(words) < 3 else f"{', '.join(words[:-1])} and {words[-1]}"


def scaling(run: RunData) -> Figure:
    """One row of panels per axis: batches/s, PSS and first batch against the axis, one line per strategy."""
    axes_found = scaling_axes(run)
    figure, panels = style.new_figure(len(COSTS), len(axes_found), height_in=1.2 + 2.6 * len(axes_found))
    figure.suptitle(f"How cost grows with {_named(axes_found)}")
    strategies: list[str] = []
    for row, axis in enumerate(axes_found):
        for col, (metric, label, log_y) in enumerate(COSTS):
            ax = panels[row, col]
            column = f"{metric}_median"
            if column not in axis.cells:
                ax.set_visible(False)
                continue
            for strategy in style.order_strategies(axis.cells["strategy"].unique()):
                cells = axis.cells[axis.cells["strategy"] == strategy].sort_values("x")
                values = cells[column]
                if values.notna().sum() == 0:
                    continue
                if axis.name == "workers" and not has_workers(strategy):
                    continue
                ax.plot(
                    cells["x"],
                    values,
                    color=style.colour(strategy),
                    marker=style.marker(strategy),
                    linestyle=style.linestyle(strategy),
                )
                if strategy not in strategies:
                    strategies.append(strategy)
            ticks = sorted(axis.cells["x"].unique())
            if axis.name in ("batch", "image"):
                ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
            if axis.name == "workers" and axis.cores is not None and max(ticks) > axis.cores:
                ax.axvline(axis.cores, color="0.35", linestyle=":", linewidth=1.2)
                ax.annotate(
                    f"{axis.cores} cores",
                    (axis.cores, 0),
                    xycoords=("data", "axes fraction"),
                    xytext=(3, 3),
                    textcoords="offset points",
                    fontsize="small",
                    color="0.35",
                )
            if log_y:
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_formatter(FuncFormatter(_tick))
            ax.set_title(label, fontsize="medium")
            if col == 0:
                ax.set_ylabel(f"{axis.label.split(' (')[0]}\n({axis.cells['workload'].iloc[0]} workload)")
            if col == len(COSTS) // 2:
                ax.set_xlabel(axis.label)
    handles, labels = style.line_handles(strategies)
    style.legend_below(figure, handles, [strategy_label(s) for s in labels])
    return figure
