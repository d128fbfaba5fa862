"""Bar charts: memory peaks, start-up / first batch / shutdown, CPU per batch.

Each function takes a RunData and returns a matplotlib Figure. Bars are medians with
IQR whiskers; groups along x are the run's *variants* (usually the worker count),
one bar per strategy in its colour. A value too small to see gets a coloured stub on
the axis, so "measured, about zero" never looks like "missing".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import style
from .load import RunData
from .summary import variant_keys, variant_label


def _grouped_bars(ax, summary: pd.DataFrame, metric: str, *, scale: float = 1.0) -> None:
    """Bars of ``metric`` medians (times ``scale``) with IQR whiskers: groups = variants, colour = strategy."""
    keys = variant_keys(summary)
    groups = summary[keys].drop_duplicates().sort_values(keys).to_dict("records") if keys else [{}]
    strategies = style.order_strategies(summary["strategy"])
    width = min(0.8 / len(strategies), 0.25)  # two strategies should not look like a wall
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
            ax.bar(
                x,
                median,
                width * 0.92,
                color=style.colour(strategy),
                yerr=[[max(low, 0)], [max(high, 0)]],
                error_kw={"elinewidth": 1, "ecolor": "black"},
            )
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
    ax.set_xticks(range(len(groups)), [variant_label(pd.Series(g), keys) for g in groups])
    ax.set_ylim(bottom=0)
    ax.grid(axis="x", visible=False)


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
    figure, axes = style.new_figure(len(panels), height_in=3.8)
    figure.suptitle("Memory per strategy (main process + all workers)")
    if len(panels) > 1 and panels[1][0] == "uss_peak_mb":
        axes[0, 1].sharey(axes[0, 0])  # PSS and USS on one scale: USS is the part of PSS a process owns alone
    for ax, (metric, title) in zip(axes[0], panels, strict=True):
        _grouped_bars(ax, run.summary, metric)
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
    figure, axes = style.new_figure(len(panels), height_in=3.8)
    figure.suptitle("Start-up, first batch and shutdown times")
    for ax, (metric, title) in zip(axes[0], panels, strict=True):
        scale, unit = _time_scale(run.summary, metric)
        _grouped_bars(ax, run.summary, metric, scale=scale)
        ax.set_title(title)
        ax.set_ylabel(f"time ({unit})")
    style.legend_below(figure, *style.patch_handles(run.summary["strategy"]))
    return figure


def cpu_per_batch(run: RunData) -> Figure:
    """CPU time (user + sys, every process) per delivered batch."""
    figure, axes = style.new_figure(1, height_in=3.6)
    ax = axes[0, 0]
    _grouped_bars(ax, run.summary, "cpu_s_per_batch", scale=1000.0)
    ax.set_title("CPU time per batch (user + system, all processes)")
    ax.set_ylabel("CPU ms per batch")
    style.legend_below(figure, *style.patch_handles(run.summary["strategy"]))
    return figure
