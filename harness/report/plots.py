"""The report's figures: each function takes a RunData and returns a matplotlib Figure.

Nothing here writes a file; :mod:`harness.report` saves the figures. Every figure is
8 inches wide (shown ~800 px on a blog), titled, with units on its axes, one colour
and marker per strategy (:mod:`.style`), medians with IQR error bars.

Cells are told apart by strategy (colour) and by *variant*: the cell keys other than
the strategy that take more than one value in the run (usually just ``workers``). Bar
charts group bars by variant; line charts draw one line per strategy and variant.

``FIGURES`` lists them in report order with the sample columns each one needs, so a
run (or a pytest-benchmark file) lacking a column simply gets no such figure.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from . import style
from .load import RunData
from .provenance import lookup
from .summary import measured, variant_keys, variant_label

WAIT_FLOOR_MS = 1e-3  # log axes cannot show 0: waits under 1 µs are drawn at 1 µs
LINESTYLES = ("-", "--", ":", "-.")
ECDF_LEVELS = (0.50, 0.95, 0.99)
ECDF_Y_RANGE = (0.01, 0.999)
ECDF_TICKS = (0.01, 0.1, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)
MAX_PANELS = 6


def _new_figure(ncols: int, nrows: int = 1, *, height_in: float, **kwargs: object) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(style.FIGURE_WIDTH_IN, height_in), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False, **kwargs)
    return figure, axes


def _legend_below(figure: Figure, handles: list, labels: list[str]) -> None:
    figure.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6))


def _strategy_handles(strategies: list[str]) -> tuple[list, list[str]]:
    handles = [
        Line2D([], [], color=style.colour(s), marker=style.marker(s), linestyle="-", label=s) for s in strategies
    ]
    return handles, list(strategies)


# -- throughput -------------------------------------------------------------------------------------------


def throughput(run: RunData) -> Figure:
    """batches/s and MB/s vs workers, median with IQR bars; the memcpy limit as a reference line."""
    summary = run.summary
    panels = [m for m in ("batches_per_s", "mb_per_s") if f"{m}_median" in summary]
    figure, axes = _new_figure(len(panels), height_in=4.2)
    figure.suptitle("Throughput vs number of workers")
    others = [k for k in variant_keys(summary) if k != "workers"]
    variants = summary[others].drop_duplicates().to_dict("records") if others else [{}]
    all_workers = sorted(summary["workers"].unique())
    strategies = style.order_strategies(summary["strategy"])
    titles = {"batches_per_s": "Batches per second", "mb_per_s": "Payload megabytes per second"}
    ylabels = {"batches_per_s": "batches/s", "mb_per_s": "MB/s (10⁶ bytes/s)"}
    handles, labels = [], []
    for ax, metric in zip(axes[0], panels, strict=True):
        top = 0.0
        for strategy in strategies:
            for number, variant in enumerate(variants):
                rows = summary[summary["strategy"] == strategy]
                for key, value in variant.items():
                    rows = rows[rows[key] == value]
                rows = rows.sort_values("workers")
                if rows.empty:
                    continue
                median = rows[f"{metric}_median"].to_numpy(float)
                error = [median - rows[f"{metric}_q25"].to_numpy(float), rows[f"{metric}_q75"].to_numpy(float) - median]
                label = strategy + (f", {variant_label(pd.Series(variant), others)}" if others else "")
                line = ax.errorbar(
                    rows["workers"], median, yerr=error, color=style.colour(strategy), marker=style.marker(strategy),
                    linestyle=LINESTYLES[number % len(LINESTYLES)], label=label,
                )
                top = max(top, float(np.nanmax(median)))
                if strategy == "baseline" and len(rows) == 1 and len(all_workers) > 1:
                    # The baseline is one process whatever `workers` says: a level to beat, drawn across.
                    ax.axhline(median[0], color=style.colour(strategy), linestyle="--", linewidth=1, alpha=0.7)
                if metric == panels[0]:
                    handles.append(line)
                    labels.append(label)
        reference = _memcpy_mb_per_s(run) if metric == "mb_per_s" else None
        if reference:
            ax.axhline(reference, color="black", linestyle=":", linewidth=1.4)
            ax.annotate(
                f"memcpy limit, one core: {reference / 1000:,.1f} GB/s", (0.02, reference),
                xycoords=("axes fraction", "data"), xytext=(0, -4), textcoords="offset points", va="top", fontsize=8.5,
            )
            if top > 0 and reference / top > 3:
                # The physical limit is far above every strategy: a log axis shows both, with 1-2-5 labels.
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
                ax.yaxis.set_minor_formatter(NullFormatter())
        if ax.get_yscale() == "linear":
            ax.set_ylim(bottom=0)
        ax.set_title(titles[metric])
        ax.set_xlabel("workers (processes or threads)")
        ax.set_ylabel(ylabels[metric] + (", log scale" if ax.get_yscale() == "log" else ""))
        ax.set_xticks(all_workers)
        ax.set_xlim(min(all_workers) - 0.5, max(all_workers) + 0.5)
    _legend_below(figure, handles, labels)
    return figure


def _memcpy_mb_per_s(run: RunData) -> float | None:
    gb_per_s = lookup(run.env, "memcpy.gb_per_s", "memcpy.gb_per_s_median")
    return None if gb_per_s is None else float(gb_per_s) * 1000.0


# -- latency ------------------------------------------------------------------------------------------------


def _panel_cells(summary: pd.DataFrame) -> tuple[list[str], list[dict]]:
    keys = variant_keys(summary)
    variants = summary[keys].drop_duplicates().sort_values(keys).to_dict("records") if keys else [{}]
    return keys, variants[:MAX_PANELS]


def wait_ecdf(run: RunData) -> Figure:
    """ECDF of every batch's wait in next(), per strategy, one panel per variant; p50/p95/p99 marked."""
    rows = measured(run.samples)
    keys, variants = _panel_cells(run.summary)
    ncols = min(len(variants), 3)
    nrows = math.ceil(len(variants) / ncols)
    figure, axes = _new_figure(ncols, nrows, height_in=3.4 * nrows + 0.9, sharex=True, sharey=True)
    figure.suptitle("Per-batch wait in next(): empirical CDF")
    strategies = style.order_strategies(rows["strategy"])
    for ax, variant in zip(axes.flat, variants, strict=False):
        cell_rows = rows
        for key, value in variant.items():
            cell_rows = cell_rows[cell_rows[key] == value]
        for strategy in strategies:
            lists = cell_rows.loc[cell_rows["strategy"] == strategy, "wait_ms"]
            waits = np.sort(np.concatenate([np.asarray(v, float) for v in lists if isinstance(v, list)] or [[]]))
            if waits.size == 0:
                continue
            waits = np.maximum(waits, WAIT_FLOOR_MS)
            # Hazen positions (i + 0.5) / n keep every point off 0 and 1, where a logit axis is infinite.
            fraction = (np.arange(waits.size) + 0.5) / waits.size
            ax.step(waits, fraction, where="post", color=style.colour(strategy), linewidth=1.6)
            points = np.quantile(waits, ECDF_LEVELS)
            ax.plot(points, ECDF_LEVELS, linestyle="none", marker=style.marker(strategy), color=style.colour(strategy),
                    markeredgecolor="black", markeredgewidth=0.6, markersize=6, zorder=3)
        for level in ECDF_LEVELS:
            ax.axhline(level, color="grey", linewidth=0.7, linestyle="--", zorder=0)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        # A logit axis stretches the tail, where stalls live: p95 and p99 get as much room as the median.
        ax.set_yscale("logit")
        ax.set_ylim(ECDF_Y_RANGE)
        ax.yaxis.set_major_locator(FixedLocator(ECDF_TICKS))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_title(variant_label(pd.Series(variant), keys))
    for ax in axes[-1]:
        ax.set_xlabel("wait per batch (ms, log scale)")
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of batches (logit scale)")
    for ax in axes[:, -1]:
        for level in ECDF_LEVELS:
            ax.annotate(f"p{level * 100:.0f}", (1.0, level), xycoords=("axes fraction", "data"), xytext=(2, 0),
                        textcoords="offset points", va="center", fontsize=8, color="dimgrey")
    for ax in list(axes.flat)[len(variants):]:
        ax.set_visible(False)
    _legend_below(figure, *_strategy_handles(strategies))
    return figure


# -- grouped bars: memory, lifecycle, CPU -------------------------------------------------------------------


def _grouped_bars(ax, summary: pd.DataFrame, metric: str, *, scale: float = 1.0) -> None:
    """Bars of ``metric`` medians (times ``scale``) with IQR whiskers: groups = variants, colour = strategy."""
    keys = variant_keys(summary)
    groups = summary[keys].drop_duplicates().sort_values(keys).to_dict("records") if keys else [{}]
    strategies = style.order_strategies(summary["strategy"])
    width = 0.8 / len(strategies)
    top = float(np.nanmax(summary[f"{metric}_q75"].to_numpy(float) * scale, initial=0.0))
    for g, group in enumerate(groups):
        rows = summary
        for key, value in group.items():
            rows = rows[rows[key] == value]
        present = [s for s in strategies if (rows["strategy"] == s).any()]
        for i, strategy in enumerate(present):
            row = rows[rows["strategy"] == strategy].iloc[0]
            median = row[f"{metric}_median"] * scale
            if pd.isna(median):
                continue
            low, high = (median - row[f"{metric}_q25"] * scale, row[f"{metric}_q75"] * scale - median)
            x = g + (i - (len(present) - 1) / 2) * width
            ax.bar(x, median, width * 0.92, color=style.colour(strategy), yerr=[[max(low, 0)], [max(high, 0)]],
                   error_kw={"elinewidth": 1, "ecolor": "black"})
            if median < 0.015 * top:
                # Too short to see: a coloured stub on the axis says "measured, about zero", where a gap reads "missing".
                ax.plot([x - width * 0.46, x + width * 0.46], [0, 0], color=style.colour(strategy), linewidth=4,
                        solid_capstyle="butt", clip_on=False, zorder=3)
    ax.set_xticks(range(len(groups)), [variant_label(pd.Series(g), keys) for g in groups])
    ax.set_ylim(bottom=0)
    ax.grid(axis="x", visible=False)


def _time_scale(summary: pd.DataFrame, metric: str) -> tuple[float, str]:
    """Seconds, or milliseconds when every median is under one second."""
    top = summary[f"{metric}_median"].max()
    return (1000.0, "ms") if pd.notna(top) and top < 1.0 else (1.0, "s")


def memory(run: RunData) -> Figure:
    """PSS, USS and /dev/shm peaks per strategy, grouped by variant."""
    panels = [(m, t) for m, t in (("pss_peak_mb", "PSS peak"), ("uss_peak_mb", "USS peak"), ("shm_peak_mb", "/dev/shm peak"))
              if f"{m}_median" in run.summary]
    figure, axes = _new_figure(len(panels), height_in=3.8)
    figure.suptitle("Memory per strategy (main process + all workers)")
    if len(panels) > 1 and panels[1][0] == "uss_peak_mb":
        axes[0, 1].sharey(axes[0, 0])  # PSS and USS on one scale: USS is the part of PSS a process owns alone
    for ax, (metric, title) in zip(axes[0], panels, strict=True):
        _grouped_bars(ax, run.summary, metric)
        ax.set_title(title)
        ax.set_ylabel("MB")
    _legend_below(figure, *_bar_handles(run.summary))
    return figure


def lifecycle(run: RunData) -> Figure:
    """Startup, time to first batch and shutdown, per strategy."""
    panels = [(m, t) for m, t in (("startup_s", "Start-up"), ("time_to_first_batch_s", "First batch"),
                                  ("shutdown_s", "Shutdown")) if f"{m}_median" in run.summary]
    figure, axes = _new_figure(len(panels), height_in=3.8)
    figure.suptitle("Start-up, first batch and shutdown times")
    for ax, (metric, title) in zip(axes[0], panels, strict=True):
        scale, unit = _time_scale(run.summary, metric)
        _grouped_bars(ax, run.summary, metric, scale=scale)
        ax.set_title(title)
        ax.set_ylabel(f"time ({unit})")
    _legend_below(figure, *_bar_handles(run.summary))
    return figure


def cpu_per_batch(run: RunData) -> Figure:
    """CPU time (user + sys, every process) per delivered batch."""
    figure, axes = _new_figure(1, height_in=3.6)
    ax = axes[0, 0]
    _grouped_bars(ax, run.summary, "cpu_s_per_batch", scale=1000.0)
    ax.set_title("CPU time per batch (user + system, all processes)")
    ax.set_ylabel("CPU ms per batch")
    _legend_below(figure, *_bar_handles(run.summary))
    return figure


def _bar_handles(summary: pd.DataFrame) -> tuple[list, list[str]]:
    from matplotlib.patches import Patch

    strategies = style.order_strategies(summary["strategy"])
    return [Patch(color=style.colour(s)) for s in strategies], strategies


# -- memory over time -------------------------------------------------------------------------------------


def memory_trace(run: RunData) -> Figure:
    """One measured epoch per strategy (most workers; PSS peak nearest the cell median): memory vs time."""
    rows = measured(run.samples)
    rows = rows[rows["memory_trace"].map(lambda t: isinstance(t, list) and len(t) > 0)]
    strategies = style.order_strategies(rows["strategy"])
    ncols = min(len(strategies), 3)
    nrows = math.ceil(len(strategies) / ncols)
    figure, axes = _new_figure(ncols, nrows, height_in=2.7 * nrows + 0.9, sharey=True)
    figure.suptitle("Memory during one epoch (main process + workers)")
    top = 0.0
    for ax, strategy in zip(axes.flat, strategies, strict=False):
        epoch = _representative_epoch(rows[rows["strategy"] == strategy])
        trace = np.asarray(epoch["memory_trace"], float)
        colour = style.colour(strategy)
        for column, linestyle in ((1, "-"), (2, "--"), (3, ":")):
            if trace.shape[1] > column:
                ax.plot(trace[:, 0], trace[:, column], color=colour, linestyle=linestyle)
        ax.set_title(f"{strategy}, {variant_label(epoch, ['workers'])}")
        ax.set_xlim(left=0)
        top = max(top, float(np.nanmax(trace[:, 1:])))
    axes[0, 0].set_ylim(0, top * 1.08 or 1.0)  # shared y: set once, after every trace is drawn
    for ax in axes.flat:
        ax.set_xlabel("time in epoch (s)")
    for ax in axes[:, 0]:
        ax.set_ylabel("MB")
    for ax in list(axes.flat)[len(strategies):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color="black", linestyle=ls) for ls in ("-", "--", ":")]
    _legend_below(figure, handles, ["PSS", "USS", "/dev/shm in use"])
    return figure


def _representative_epoch(rows: pd.DataFrame) -> pd.Series:
    rows = rows[rows["workers"] == rows["workers"].max()]
    if "pss_peak_mb" not in rows or rows["pss_peak_mb"].isna().all():
        return rows.iloc[0]
    distance = (rows["pss_peak_mb"] - rows["pss_peak_mb"].median()).abs()
    return rows.loc[distance.idxmin()]


# -- faults -------------------------------------------------------------------------------------------------


def faults(run: RunData) -> Figure:
    """The shutdown-cleanliness matrix: scenario x strategy, clean or not clean with the reason."""
    frame = run.faults.copy()
    if "start_method" in frame and frame["start_method"].nunique() > 1:
        frame["scenario"] = frame["scenario"] + " (" + frame["start_method"].astype(str) + ")"
    scenarios = list(dict.fromkeys(frame["scenario"]))
    strategies = style.order_strategies(frame["strategy"])
    figure = Figure(figsize=(style.FIGURE_WIDTH_IN, 0.72 * len(scenarios) + 1.2), layout="constrained")
    ax = figure.subplots()
    # Characters per line of a cell: its share of ~6.4 inches of axes, at 7.5 pt (~0.6 em per character).
    chars = max(10, int(6.4 / len(strategies) * 72 / (7.5 * 0.6)))
    for r, scenario in enumerate(scenarios):
        for c, strategy in enumerate(strategies):
            match = frame[(frame["scenario"] == scenario) & (frame["strategy"] == strategy)]
            if match.empty:
                ax.add_patch(_cell_patch(c, r, style.MISSING_COLOUR))
                ax.text(c + 0.5, r + 0.5, "not run", ha="center", va="center", fontsize=7.5, color="dimgrey")
            elif match["clean"].all():
                ax.add_patch(_cell_patch(c, r, style.CLEAN_COLOUR))
                ax.text(c + 0.5, r + 0.5, "clean", ha="center", va="center", fontsize=8)
            else:
                reason = "; ".join(r for r in match.loc[~match["clean"], "reason"] if r) or "no reason given"
                ax.add_patch(_cell_patch(c, r, style.DIRTY_COLOUR))
                ax.text(c + 0.5, r + 0.12, "NOT clean", ha="center", va="top", fontsize=8, fontweight="bold")
                lines = textwrap.wrap(reason, chars, max_lines=3, placeholder=" …")
                ax.text(c + 0.5, r + 0.34, "\n".join(lines), ha="center", va="top", fontsize=7, linespacing=1.15)
    ax.set_xlim(0, len(strategies))
    ax.set_ylim(len(scenarios), 0)
    ax.set_xticks([c + 0.5 for c in range(len(strategies))], strategies)
    ax.set_yticks([r + 0.5 for r in range(len(scenarios))], scenarios)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.grid(visible=False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("Shutdown cleanliness: fault scenario x strategy", pad=24)
    return figure


def _cell_patch(column: int, row: int, fill: str):
    from matplotlib.patches import Rectangle

    return Rectangle((column, row), 1, 1, facecolor=fill, edgecolor="white", linewidth=2)


# -- the list the report walks -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FigureSpec:
    name: str  # file stem under plots/
    title: str
    draw: Callable[[RunData], Figure]
    needs: tuple[str, ...]  # summary columns (``M_median``) or sample columns that must hold data
    describe: str  # what the figure shows, for the caption


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("throughput", "Throughput", throughput, ("batches_per_s",),
               "Median batches/s and payload MB/s per strategy against the number of workers; error bars span the "
               "inter-quartile range; a dashed line carries the single-process baseline across."),
    FigureSpec("wait_ecdf", "Wait per batch", wait_ecdf, ("wait_ms",),
               "Empirical CDF of the time the training loop waited in next() for each batch, all measured epochs "
               "pooled; markers sit at each strategy's p50, p95 and p99 (dashed guides). Waits under 1 µs are "
               "drawn at 1 µs."),
    FigureSpec("memory", "Memory", memory, ("pss_peak_mb",),
               "Peak PSS and USS summed over the main process and every worker, and peak /dev/shm use above the "
               "level before the generator started; bars are medians over epochs, whiskers the IQR; a stub on the axis "
               "marks a value too small to see."),
    FigureSpec("memory_trace", "Memory over time", memory_trace, ("memory_trace",),
               "Memory sampled during one measured epoch per strategy (the run with the most workers whose PSS "
               "peak is nearest its cell's median): PSS solid, USS dashed, /dev/shm dotted."),
    FigureSpec("lifecycle", "Start-up and shutdown", lifecycle, ("startup_s",),
               "Median generator start-up (pool start to ready), time from iter() to the first batch, and "
               "shutdown (close() to every worker gone); whiskers are the IQR, a stub on the axis marks a value too "
               "small to see. Start-up and shutdown count once per process."),
    FigureSpec("cpu_per_batch", "CPU per batch", cpu_per_batch, ("cpu_s_per_batch",),
               "User + system CPU time of the main process and all workers during an epoch, divided by its "
               "batches; bars are medians, whiskers the IQR; a stub on the axis marks a value too small to see."),
)
FAULTS_FIGURE = FigureSpec(
    "faults", "Shutdown cleanliness", faults, (),
    "Each fault scenario (rows) run against each strategy (columns): clean means the error surfaced within the "
    "timeout, no process was left and /dev/shm was as before; otherwise the reason is given.",
)


def available(run: RunData) -> list[FigureSpec]:
    """The figures this run has data for, in report order (the faults matrix only with faults.jsonl)."""
    specs = [spec for spec in FIGURES if all(_has(run, need) for need in spec.needs)]
    if run.faults is not None and not run.faults.empty:
        specs.append(FAULTS_FIGURE)
    return specs


def _has(run: RunData, column: str) -> bool:
    if f"{column}_median" in run.summary:
        return bool(run.summary[f"{column}_median"].notna().any())
    if column in run.samples:
        return bool(measured(run.samples)[column].map(lambda v: isinstance(v, list) and len(v) > 0).any())
    return False
