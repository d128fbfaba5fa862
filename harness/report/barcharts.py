"""Bar charts: memory peaks, start-up / first batch / shutdown, CPU per batch, stages per batch.

Each function takes a RunData and returns a matplotlib Figure. Bars are medians with
IQR whiskers; groups along x are the run's *variants* (usually the worker count),
one bar per strategy in its colour. A value too small to see gets a coloured stub on
the axis, so "measured, about zero" never looks like "missing". A cell of a single
value gets no whisker but "n=1", and the /dev/shm panel leaves out the strategies that
use no /dev/shm and measured none, naming them (:mod:`.cells`).
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.results import RunData, stage_medians, variant_keys, variant_label

from . import style
from .cells import MIN_SPREAD, has_workers, uses_shared_memory, value_counts

STAGE_BAR_HEIGHT_IN = 0.32  # per cell of the stages figure, which grows with the run
TICK_CHAR_IN = 0.065  # about how wide a character of a 9 pt tick label is
WRAPPED_FONT_PT, WRAPPED_CHAR_IN = 8, 0.058  # a wrapped variant label, and its characters' width
NOTE_WIDTH_CHARS = 30  # a note in a panel wraps at this many characters
MAX_LABEL_LINES = 6  # a variant label wraps onto at most this many lines under its group, else it is turned
PANEL_HEIGHT_IN = 2.6  # one panel of a figure whose panels stand one under another


def _panels(run: RunData, count: int, height_in: float) -> tuple[Figure, list]:
    """A figure of ``count`` panels of variant groups: side by side, or one under another when the run's
    variant labels need more than a side-by-side panel's width (several settings swept at once)."""
    summary = run.summary
    keys = variant_keys(summary)
    groups = summary[keys].drop_duplicates().to_dict("records") if keys else [{}]
    needed_in = sum(len(variant_label(pd.Series(g), keys)) for g in groups) * TICK_CHAR_IN
    if count > 1 and needed_in > style.FIGURE_WIDTH_IN / count:
        figure, axes = style.new_figure(1, count, height_in=PANEL_HEIGHT_IN * count + 0.8)
        return figure, list(axes[:, 0])
    figure, axes = style.new_figure(count, height_in=height_in)
    return figure, list(axes[0])


def _grouped_bars(
    ax, run: RunData, metric: str, *, scale: float = 1.0, leave_out: tuple[str, ...] = (), why: str = "not drawn"
) -> None:
    """Bars of ``metric`` medians (times ``scale``) with IQR whiskers: groups = variants, colour = strategy.

    A cell whose metric rests on a single value gets no whisker (its IQR of 0 measured
    nothing) but "n=1" above its bar, or one note for the panel when no cell has more.
    ``leave_out``: strategies not drawn at all, named in a note in the panel after ``why``.
    """
    summary = run.summary
    counts = value_counts(run, metric)
    keys = variant_keys(summary)
    groups = summary[keys].drop_duplicates().sort_values(keys).to_dict("records") if keys else [{}]
    strategies = [s for s in style.order_strategies(summary["strategy"]) if s not in leave_out]
    width = min(0.8 / max(len(strategies), 1), 0.25)  # two strategies should not look like a wall
    shown = summary["strategy"].isin(strategies) & summary[f"{metric}_median"].notna()
    top = float(np.nanmax(summary.loc[shown, f"{metric}_q75"].to_numpy(float) * scale, initial=0.0))
    no_spread_at_all = bool(shown.any()) and bool((counts[shown] < MIN_SPREAD).all())
    for g, group in enumerate(groups):
        rows = summary
        for key, value in group.items():
            rows = rows[rows[key] == value]
        present = [s for s in strategies if (rows["strategy"] == s).any()]
        for i, strategy in enumerate(present):
            row = rows[rows["strategy"] == strategy].iloc[0]
            n = int(counts[rows.index[rows["strategy"] == strategy][0]])
            median = row[f"{metric}_median"] * scale
            if pd.isna(median):
                continue
            x = g + (i - (len(present) - 1) / 2) * width
            if n >= MIN_SPREAD:
                low, high = (median - row[f"{metric}_q25"] * scale, row[f"{metric}_q75"] * scale - median)
                whiskers = {"yerr": [[max(low, 0)], [max(high, 0)]], "error_kw": {"elinewidth": 1, "ecolor": "black"}}
            else:
                whiskers = {}
                if not no_spread_at_all:
                    ax.annotate(
                        f"n={n}",
                        (x, median),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        rotation=90,
                        fontsize=7,
                    )
            ax.bar(x, median, width * 0.92, color=style.colour(strategy), **whiskers)
            if median < 0.015 * top:
                # Too short to see: a coloured stub on the axis says "measured, about zero"; a gap would read "missing".
                ax.plot(
                    [x - width * 0.46, x + width * 0.46],
                    [0, 0],
                    color=style.colour(strategy),
                    linewidth=4,
                    solid_capstyle="butt",
                    clip_on=False,
                    zorder=3,
                )
    labels = [variant_label(pd.Series(g), keys) for g in groups]
    # Each label gets its group's share of the axis: wrapped onto lines of that width (at most
    # MAX_LABEL_LINES), else turned, so that long variant labels do not run into each other.
    slot_chars = int(ax.get_position().width * style.FIGURE_WIDTH_IN / len(groups) / WRAPPED_CHAR_IN)
    wrapped = [textwrap.fill(label, max(slot_chars, 1), break_long_words=False) for label in labels]
    if max(text.count("\n") + 1 for text in wrapped) <= MAX_LABEL_LINES:
        ax.set_xticks(range(len(groups)), wrapped, fontsize=WRAPPED_FONT_PT if wrapped != labels else None)
    else:
        ax.set_xticks(range(len(groups)), labels)
        ax.tick_params(axis="x", labelrotation=25)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set_ylim(bottom=0)
    ax.grid(axis="x", visible=False)
    notes = []
    if no_spread_at_all:
        notes.append("no whiskers: one value per cell (n=1)")
    if leave_out:
        notes.append(f"{why}: {', '.join(leave_out)}")
    if notes:
        ax.set_ylim(top=max(ax.get_ylim()[1], top * 1.05) * 1.25)  # room for the notes above the bars
        ax.text(
            0.03,
            0.97,
            "\n".join(textwrap.fill(note, NOTE_WIDTH_CHARS) for note in notes),
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=7.5,
            color="dimgrey",
        )


def _no_shm_strategies(run: RunData) -> tuple[str, ...]:
    """Strategies that hand nothing over through /dev/shm (their class says so) and measured none there either.

    A stub bar would read "measured, about zero" for what is no use at all; the panel
    names them instead. One that did measure some (a queue's semaphores) keeps its bar.
    """
    summary = run.summary
    return tuple(
        strategy
        for strategy in style.order_strategies(summary["strategy"])
        if not uses_shared_memory(strategy)
        and not (summary.loc[summary["strategy"] == strategy, "shm_peak_mb_q75"].fillna(0) > 0).any()
    )


def _time_scale(summary: pd.DataFrame, metric: str) -> tuple[float, str]:
    """Seconds, or milliseconds when every median is under one second."""
    top = summary[f"{metric}_median"].max()
    return (1000.0, "ms") if pd.notna(top) and top < 1.0 else (1.0, "s")


def memory(run: RunData) -> Figure:
    """PSS, USS and /dev/shm peaks per strategy, grouped by variant."""
    panels = [
        (m, t)
        for m, t in (("pss_peak_mb", "PSS peak"), ("uss_peak_mb", "USS peak"), ("shm_peak_mb", "/dev/shm peak"))
        if f"{m}_median" in run.summary
    ]
    figure, axes = _panels(run, len(panels), height_in=3.8)
    figure.suptitle("Memory per strategy (main process + all workers)")
    if len(panels) > 1 and panels[1][0] == "uss_peak_mb":
        axes[1].sharey(axes[0])  # PSS and USS on one scale: USS is the part of PSS a process owns alone
    for ax, (metric, title) in zip(axes, panels, strict=True):
        leave_out = _no_shm_strategies(run) if metric == "shm_peak_mb" else ()
        _grouped_bars(ax, run, metric, leave_out=leave_out, why="no /dev/shm, not drawn")
        ax.set_title(title)
        ax.set_ylabel("MB")
    style.legend_below(figure, *style.patch_handles(run.summary["strategy"]))
    return figure


def lifecycle(run: RunData) -> Figure:
    """Startup, time to first batch and shutdown, per strategy."""
    panels = [
        (m, t)
        for m, t in (("startup_s", "Start-up"), ("time_to_first_batch_s", "First batch"), ("shutdown_s", "Shutdown"))
        if f"{m}_median" in run.summary
    ]
    figure, axes = _panels(run, len(panels), height_in=3.8)
    figure.suptitle("Start-up, first batch and shutdown times")
    for ax, (metric, title) in zip(axes, panels, strict=True):
        scale, unit = _time_scale(run.summary, metric)
        _grouped_bars(ax, run, metric, scale=scale)
        ax.set_title(title)
        ax.set_ylabel(f"time ({unit})")
    style.legend_below(figure, *style.patch_handles(run.summary["strategy"]))
    return figure


def cpu_per_batch(run: RunData) -> Figure:
    """CPU time (user + sys, every process) per delivered batch."""
    figure, axes = style.new_figure(1, height_in=3.6)
    ax = axes[0, 0]
    _grouped_bars(ax, run, "cpu_s_per_batch", scale=1000.0)
    ax.set_title("CPU time per batch (user + system, all processes)")
    ax.set_ylabel("CPU ms per batch")
    style.legend_below(figure, *style.patch_handles(run.summary["strategy"]))
    return figure


def stage_cells(summary: pd.DataFrame) -> pd.DataFrame:
    """The cells of the stages figure and table: strategies in canonical order, then their variants."""
    order = {name: i for i, name in enumerate(style.order_strategies(summary["strategy"]))}
    keys = [k for k in variant_keys(summary) if k != "strategy"]
    return summary.assign(_order=summary["strategy"].map(order)).sort_values(["_order", *keys]).drop(columns="_order")


def stages(run: RunData) -> Figure:
    """Milliseconds per batch by stage, stacked, one bar per cell at the most workers; a tick at the wall time.

    Only each strategy's most-workers cells: the figure is about where a batch's time
    goes, and one worker count keeps it readable for a run of many workloads and batch
    sizes (the table beside it has every cell). Where the samples carry the main
    process's own share (``stage_main_ms_per_batch``), two panels: each worker's time
    per batch (the workers' sum over their count: they run side by side) and the main
    process's wall time per batch, beside the wall time a batch took in all; an older
    run gets one panel of the sum.
    """
    most = run.summary.groupby("strategy")["workers"].transform("max")
    summary = stage_cells(run.summary[run.summary["workers"] == most])
    columns = stage_medians(summary)
    main_columns = dict(stage_medians(summary, "main"))
    keys = [k for k in variant_keys(summary) if k != "workers"]
    split = bool(main_columns)
    height = 1.6 + STAGE_BAR_HEIGHT_IN * len(summary)
    figure, axes = style.new_figure(2 if split else 1, height_in=height, sharey=True)
    labels = []
    for y, (_, row) in enumerate(summary.iterrows()):
        labels.append(row["strategy"] + (f", {variant_label(row, keys)}" if keys else ""))
        if split:
            workers = int(row["workers"]) if has_workers(str(row["strategy"])) else 0
            main = {stage: _value(row, main_columns.get(stage)) for stage, _ in columns}
            worker = {
                stage: max(0.0, _value(row, column) - main[stage]) / workers if workers else 0.0
                for stage, column in columns
            }
            drawn = _stack(axes[0, 0], y, worker) + _stack(axes[0, 1], y, main)
            wall_ax = axes[0, 1]
        else:
            drawn = _stack(axes[0, 0], y, {stage: _value(row, column) for stage, column in columns})
            wall_ax = axes[0, 0]
        if drawn == 0.0:
            axes[0, 0].annotate(
                "no stage timers", (0, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8
            )
        wall_ms = 1000.0 / row["batches_per_s_median"] if row.get("batches_per_s_median", 0) > 0 else None
        if wall_ms is not None:
            wall_ax.plot(wall_ms, y, marker="|", markersize=14, markeredgewidth=2, color="black", linestyle="none")
    for ax in axes[0]:
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlim(left=0)
        ax.grid(axis="y", visible=False)
    axes[0, 0].invert_yaxis()  # the first cell on top, as in the table (the panels share y)
    if split:
        axes[0, 0].set_title("Each worker (in parallel)")
        axes[0, 0].set_xlabel("ms of one worker's time per batch")
        axes[0, 1].set_title("Main process (wall time)")
        axes[0, 1].set_xlabel("ms per batch in the training loop's process")
    else:
        axes[0, 0].set_xlabel("ms per batch (worker stages summed over workers)")
    figure.suptitle("Where the time goes per batch (each strategy at its most workers)")
    handles, labels = style.stage_handles(stage for stage, _ in columns)
    handles.append(Line2D([], [], marker="|", markersize=10, markeredgewidth=2, color="black", linestyle="none"))
    style.legend_below(figure, handles, [*labels, "wall time per batch"])
    return figure


def _value(row: pd.Series, column: str | None) -> float:
    value = row.get(column) if column is not None else None
    return float(value) if value is not None and pd.notna(value) and value > 0 else 0.0


def _stack(ax, y: int, ms_by_stage: dict[str, float]) -> float:
    """One stacked bar of ``ms_by_stage`` at ``y``; returns its length."""
    left = 0.0
    for stage, value in ms_by_stage.items():
        if value > 0:
            ax.barh(y, value, left=left, height=0.7, **style.stage_patch(stage))
            left += value
    return left
