"""Line charts: throughput against workers, the per-batch wait ECDF, memory over one epoch.

Each function takes a RunData and returns a matplotlib Figure (nothing is saved here).
Lines are told apart by strategy (colour and marker, :mod:`.style`) and, when a run
varies more than the worker count, by line style per *variant* (the other cell keys
that take several values).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator
from matplotlib.transforms import blended_transform_factory

from harness.results import RunData, measured, variant_keys, variant_label

from . import style
from .cells import MIN_SPREAD, has_workers, pooled_units, strategy_label
from .provenance import lookup
from .utilization import IDEAL, METRIC, largest_workers, utilization_cells

LINE_LABEL_GID = "line-label"  # the gid of a line's name at its right end (tests tell them from notes)
WAIT_FLOOR_MS = 1e-3  # log axes cannot show 0: waits under 1 µs are drawn at 1 µs
LINESTYLES = ("-", "--", ":", "-.")
ECDF_LEVELS = (0.50, 0.95, 0.99)
ECDF_Y_RANGE = (0.01, 0.999)
ECDF_TICKS = (0.01, 0.1, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)
MAX_PANELS = 6
DODGE = 0.04  # workers-axis units between neighbouring strategies' points
LABEL_FONT_PT = 8.5  # a line's name at its right end
LABEL_GAP_PT = LABEL_FONT_PT * 1.25  # the least distance between two names' baselines
LABEL_OFFSET = 0.08  # workers-axis units between the rightmost point and the names' column
# The throughput axes' share of the figure, about, once titles, labels and ticks have theirs: what a
# name's height and length are worked out against before the layout is done.
AXES_HEIGHT_SHARE, AXES_WIDTH_SHARE = 0.75, 0.86
LABEL_MARKER_IN = 0.1  # a name's marker and the space before the name


# -- throughput -------------------------------------------------------------------------------------------


def throughput(run: RunData) -> Figure:
    """batches/s vs workers, median with IQR bars; the memcpy limit (R, in batches/s) as a reference line.

    With cold-cache cells, the disk's limit (harness.report.bounds) is a dash-dot line.
    One panel: MB/s would repeat it (batches/s times the batch's bytes).

    A strategy without workers (the baseline) is drawn at no worker count: it is a
    horizontal line across the axis at the median of all its cells, its IQR shaded. A
    cell with a single value gets no error bar but "n=1" beside its point (one note for
    the panel when no cell has more).

    Every line is named in a column right of its end, with its marker, in its colour,
    tied to its end by a thin leader (the baseline's band is named there too, at its
    level), the names nudged apart where they would overlap (:func:`spread_labels`).
    Where line styles tell variants apart (a run that varies more than the worker
    count), or the names would not fit the axis' height, the legend below names the
    lines instead.
    """
    summary = run.summary
    figure, axes = style.new_figure(1, height_in=4.2)
    ax = axes[0, 0]
    figure.suptitle("Throughput vs number of workers")
    others = [k for k in variant_keys(summary) if k != "workers"]
    variants = summary[others].drop_duplicates().to_dict("records") if others else [{}]
    all_workers = sorted(summary["workers"].unique())
    strategies = style.order_strategies(summary["strategy"])
    by_workers = [s for s in strategies if has_workers(s)]
    handles, labels = [], []
    ends: list[tuple[str, str, float, float]] = []  # (name, strategy, x, y) of each line's right end
    units = pooled_units(run, "batches_per_s")
    units = units[units["median"].notna()]
    no_spread_at_all = len(units) > 0 and bool((units["n"] < MIN_SPREAD).all())
    top = 0.0
    for strategy in strategies:
        # A small sideways dodge per strategy keeps overlapping IQR bars apart at the same worker count.
        position = by_workers.index(strategy) if strategy in by_workers else 0
        dodge = (position - (len(by_workers) - 1) / 2) * DODGE
        for number, variant in enumerate(variants):
            rows = units[units["strategy"] == strategy]
            for key, value in variant.items():
                rows = rows[rows[key] == value]
            if rows.empty:
                continue
            rows = rows.sort_values("workers")
            label = strategy_label(strategy) + (f", {variant_label(pd.Series(variant), others)}" if others else "")
            linestyle = LINESTYLES[number % len(LINESTYLES)]
            median = rows["median"].to_numpy(float)
            counts = rows["n"].to_numpy(int)
            spread = counts >= MIN_SPREAD
            top = max(top, float(np.nanmax(median)))
            if not has_workers(strategy):
                line = _level_line(ax, strategy, linestyle, rows.iloc[0], label_n=not no_spread_at_all)
                ends.append((label, strategy, math.nan, float(median[0])))  # x: beside the other names
            else:
                x = rows["workers"].to_numpy(float) + dodge
                low = np.where(spread, median - rows["q25"].to_numpy(float), np.nan)
                high = np.where(spread, rows["q75"].to_numpy(float) - median, np.nan)
                line = ax.errorbar(
                    x,
                    median,
                    yerr=[low, high],  # NaN: no bar at all for a cell with a single value
                    color=style.colour(strategy),
                    marker=style.marker(strategy),
                    linestyle=linestyle,
                    label=label,
                )
                if not no_spread_at_all:
                    for xi, yi, ni in zip(x[~spread], median[~spread], counts[~spread], strict=True):
                        _n_label(ax, (xi, yi), ni, strategy)
                ends.append((label, strategy, float(x[-1]), float(median[-1])))
            handles.append(line)
            labels.append(label)
    if no_spread_at_all:
        ax.annotate(
            "no error bars: one value per cell (n=1)",
            (0.98, 0.02),
            xycoords="axes fraction",
            ha="right",
            va="bottom",
            fontsize=8,
            color="dimgrey",
        )
    io_bound = _disk_batches_per_s(run)
    if io_bound:
        mb_per_s = lookup(run.env, "disk.read_mb_per_s")
        text = f"disk limit, cold cache: {io_bound:,.0f} batches/s ({mb_per_s:,.0f} MB/s)"
        _reference_line(ax, io_bound, text, linestyle="-.", linewidth=1.2, above=True)
        top = max(top, io_bound)
    reference = _memcpy_batches_per_s(run)
    if reference:
        text = f"memcpy limit, one core: {reference:,.0f} batches/s (R)"
        _reference_line(ax, reference, text, linestyle=":", linewidth=1.4, above=False)
        if top > 0 and reference / top > 3:
            # The physical limit is far above every strategy: a log axis shows both, with 1-2-5 labels.
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
    if ax.get_yscale() == "linear":
        ax.set_ylim(bottom=0)
    ax.set_title("Batches per second")
    ax.set_xlabel("workers (processes or threads)")
    ax.set_ylabel("batches/s" + (", log scale" if ax.get_yscale() == "log" else ""))
    ax.set_xticks(all_workers)
    xlim = (min(all_workers) - 0.5, max(all_workers) + 0.5)
    # One line per strategy: each named at its end. Variants (line styles) or too many names: the legend.
    if others or not _label_line_ends(figure, ax, ends, xlim):
        ax.set_xlim(*xlim)
        style.legend_below(figure, handles, labels)
    return figure


def _label_line_ends(figure: Figure, ax, ends: list[tuple[str, str, float, float]], xlim: tuple[float, float]) -> bool:
    """Each line's name, in one column right of every line's end: its marker, then its name in its colour.

    Names are nudged apart vertically where they would overlap (in the axis' own scale,
    log included), and each is tied to its line's end by a thin dotted grey leader (not in the
    line's colour, which would read as more data). The axis is widened on the right for the
    column. Lines without an end (the baseline's band, x NaN) are named in the column at their
    level, without a marker.
    False, and nothing drawn, where there are no lines or more names than the axis' height holds.
    """
    width_in, height_in = figure.get_size_inches()
    gap = LABEL_GAP_PT / 72 / (height_in * AXES_HEIGHT_SHARE)
    if not ends or len(ends) * gap > 1:
        return False
    longest_in = LABEL_MARKER_IN + max(len(name) for name, *_ in ends) * style.LEGEND_CHAR_IN * LABEL_FONT_PT / 9
    share = min(0.45, longest_in / (width_in * AXES_WIDTH_SHARE))  # of the axes' width the column needs
    column = max([x for *_, x, _ in ends if not math.isnan(x)], default=xlim[1] - 0.5) + LABEL_OFFSET
    ax.set_xlim(xlim[0], max(xlim[1], (column - share * xlim[0]) / (1 - share)))
    ax.autoscale_view(scalex=False)
    to_axes = ax.transScale + ax.transLimits  # data -> the axes' 0..1 (the scale, log included, applied)
    targets = [float(to_axes.transform((xlim[0], y))[1]) for *_, y in ends]
    in_column = blended_transform_factory(ax.transData, ax.transAxes)
    placements = spread_labels(targets, gap, low=gap / 2, high=1 - gap / 2)  # clear of the axes' edges
    for (name, strategy, x, _), target, placed in zip(ends, targets, placements, strict=True):
        colour = style.colour(strategy)
        if not math.isnan(x):
            ax.plot(
                [column],
                [placed],
                transform=in_column,
                marker=style.marker(strategy),
                color=colour,
                markersize=5,
                clip_on=False,
                gid=LINE_LABEL_GID,
            )
            ax.plot(  # the leader, from the line's end to its name: dotted grey, so it reads as no data
                [x, column],
                [target, placed],
                transform=in_column,
                color="0.55",
                linestyle=(0, (1, 2)),
                linewidth=0.8,
                gid=LINE_LABEL_GID,
            )
        ax.annotate(
            name,
            (column, placed),
            xycoords=in_column,
            xytext=(LABEL_MARKER_IN * 72, 0),
            textcoords="offset points",
            va="center",
            ha="left",
            fontsize=LABEL_FONT_PT,
            color=style.text_colour(strategy),
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.3},  # over a line, readable
            gid=LINE_LABEL_GID,
        )
    return True


def spread_labels(targets: list[float], gap: float, low: float = 0.0, high: float = 1.0) -> list[float]:
    """Positions as near ``targets`` as can be with at least ``gap`` between any two, within [low, high].

    Labels that would overlap form a group, centred on their targets' mean, in the
    targets' order; groups that then touch merge. Returned in the order of ``targets``.
    """
    order = sorted(range(len(targets)), key=lambda i: targets[i])
    groups: list[list[int]] = []  # each a run of label indices, bottom to top

    def bottom(group: list[int]) -> float:
        centre = sum(targets[i] for i in group) / len(group)
        return min(max(centre - gap * (len(group) - 1) / 2, low), high - gap * (len(group) - 1))

    for index in order:
        groups.append([index])
        while len(groups) > 1 and bottom(groups[-2]) + gap * len(groups[-2]) > bottom(groups[-1]) + 1e-12:
            groups[-2:] = [groups[-2] + groups[-1]]
    placed = [0.0] * len(targets)
    for group in groups:
        start = bottom(group)
        for rank, index in enumerate(group):
            placed[index] = start + rank * gap
    return placed


def _reference_line(ax, y: float, text: str, *, linestyle: str, linewidth: float, above: bool) -> None:
    """A black horizontal limit across the axis, labelled at its left end, just above or just below it."""
    ax.axhline(y, color="black", linestyle=linestyle, linewidth=linewidth)
    ax.annotate(
        text,
        (0.02, y),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3 if above else -4),
        textcoords="offset points",
        va="bottom" if above else "top",
        fontsize=8.5,
    )


def _n_label(ax, xy: tuple[float, float], n: int, strategy: str, xycoords: object = "data") -> None:
    """ "n=1" beside a point drawn without an error bar."""
    ax.annotate(
        f"n={n}",
        xy,
        xycoords=xycoords,
        xytext=(5, 3),
        textcoords="offset points",
        fontsize=7.5,
        color=style.colour(strategy),
    )


def _level_line(ax, strategy: str, linestyle: str, unit: pd.Series, *, label_n: bool) -> Line2D:
    """A strategy without workers: a horizontal line across the workers axis at its median, its IQR shaded."""
    colour = style.colour(strategy)
    median = float(unit["median"])
    line = ax.axhline(median, color=colour, linestyle=linestyle, linewidth=1.6, zorder=2)
    if int(unit["n"]) >= MIN_SPREAD:
        ax.axhspan(float(unit["q25"]), float(unit["q75"]), color=colour, alpha=0.12, linewidth=0, zorder=1)
    elif label_n:
        _n_label(ax, (0.01, median), int(unit["n"]), strategy, xycoords=("axes fraction", "data"))
    return line


def _disk_batches_per_s(run: RunData) -> float | None:
    """The I/O bound of the run's cold-cache cells in batches/s (harness.report.bounds), None without one."""
    from .bounds import disk_bound

    if "cache" not in run.summary or not (run.summary["cache"] == "cold").any():
        return None
    return disk_bound(run, {"cache": "cold"})


def _memcpy_batches_per_s(run: RunData) -> float | None:
    """R, one core's batch copies per second, where every cell of the run has the same batch size (else None)."""
    sizes = set(run.summary["batch_size"])
    if len(sizes) != 1:
        return None  # R differs by batch size; the summary table gives each transfer cell its own
    from .goals import copies_per_s

    return copies_per_s(run.env, int(next(iter(sizes))))


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
    figure, axes = style.new_figure(ncols, nrows, height_in=3.4 * nrows + 0.9, sharex=True, sharey=True)
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
            ax.plot(
                points,
                ECDF_LEVELS,
                linestyle="none",
                marker=style.marker(strategy),
                color=style.colour(strategy),
                markeredgecolor="black",
                markeredgewidth=0.6,
                markersize=6,
                zorder=3,
            )
        for level in ECDF_LEVELS:
            ax.axhline(level, color="grey", linewidth=0.7, linestyle="--", zorder=0)
        share = new_image_share(cell_rows)
        if share is not None and ECDF_Y_RANGE[0] < 1 - share < ECDF_Y_RANGE[1]:
            _label_plateau(ax, share)
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
            ax.annotate(
                f"p{level * 100:.0f}",
                (1.0, level),
                xycoords=("axes fraction", "data"),
                xytext=(2, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
                color="dimgrey",
            )
    for ax in list(axes.flat)[len(variants) :]:
        ax.set_visible(False)
    style.legend_below(figure, *style.line_handles(strategies))
    return figure


def new_image_share(rows: pd.DataFrame) -> float | None:
    """The share of batches whose tiles start a new image: images per epoch over batches per epoch.

    A batch cut from an image already processed waits only for slicing (well under a
    millisecond); one that needs the next image waits for its work (tens of ms). The
    ECDF's plateau sits between the two, at ``1 - share``. None where the samples do not
    say which images their epochs had.
    """
    if "images" not in rows or rows.empty:
        return None
    images = sum(len(v) for v in rows["images"] if isinstance(v, list))
    batches = float(pd.to_numeric(rows["batches"], errors="coerce").sum())
    return images / batches if images and batches > 0 and images < batches else None


def _label_plateau(ax, share: float) -> None:
    """A dotted line where the batches that need the next image begin, and what lies on each side of it."""
    level = 1.0 - share
    ax.axhline(level, color="black", linewidth=0.8, linestyle=":", zorder=1)
    style_kw = {
        "fontsize": 7.5,
        "color": "#333333",
        "xycoords": ("axes fraction", "data"),
        "textcoords": "offset points",
        "bbox": {"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 0.5},
        "zorder": 4,
    }
    ax.annotate(f"{share:.0%} wait for the next image's work", (0.02, level), xytext=(0, 3), va="bottom", **style_kw)
    ax.annotate(f"{1 - share:.0%} cut from an image already here", (0.02, level), xytext=(0, -3), va="top", **style_kw)


# -- memory over time -------------------------------------------------------------------------------------


def memory_trace(run: RunData) -> Figure:
    """One epoch per strategy (most workers), memory vs time.

    The densest trace is drawn: usually a warm-up epoch, which the runner samples
    every 50 ms because it is not timed (measured windows are sampled sparsely, to
    keep the sampler's cost off the throughput). It also shows the first epoch's
    ramp as buffers are touched for the first time.
    """
    rows = run.samples
    rows = rows[rows["memory_trace"].map(lambda t: isinstance(t, list) and len(t) > 0)]
    strategies = style.order_strategies(rows["strategy"])
    ncols = min(len(strategies), 3)
    nrows = math.ceil(len(strategies) / ncols)
    figure, axes = style.new_figure(ncols, nrows, height_in=2.7 * nrows + 0.9, sharey=True)
    top = 0.0
    kinds: set[str] = set()
    for ax, strategy in zip(axes.flat, strategies, strict=False):
        epoch = _representative_epoch(rows[rows["strategy"] == strategy])
        trace = np.asarray(epoch["memory_trace"], float)
        colour = style.colour(strategy)
        for column, linestyle in ((1, "-"), (2, "--"), (3, ":")):
            if trace.shape[1] > column:
                # A sparse trace (a short epoch, a slow sampler) shows its samples, so nobody reads the lines as data.
                ax.plot(
                    trace[:, 0],
                    trace[:, column],
                    color=colour,
                    linestyle=linestyle,
                    marker="." if len(trace) < 20 else None,
                )
        kinds.add("warm-up" if bool(epoch.get("warmup", False)) else "measured")
        workers = variant_label(epoch, ["workers"])
        ax.set_title(f"{strategy}, {workers}" if has_workers(strategy) else strategy_label(strategy))
        ax.set_xlim(left=0)
        top = max(top, float(np.nanmax(trace[:, 1:])))
    figure.suptitle(f"Memory during one {' or '.join(sorted(kinds))} epoch (main process + workers)")
    axes[0, 0].set_ylim(0, top * 1.08 or 1.0)  # shared y: set once, after every trace is drawn
    for ax in axes.flat:
        ax.set_xlabel("time in epoch (s)")
    for ax in axes[:, 0]:
        ax.set_ylabel("MB")
    for ax in list(axes.flat)[len(strategies) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color="black", linestyle=ls) for ls in ("-", "--", ":")]
    style.legend_below(figure, handles, ["PSS", "USS", "/dev/shm in use"])
    return figure


def _representative_epoch(rows: pd.DataFrame) -> pd.Series:
    """Of the most-workers cell, the epoch with the most memory samples (the first such)."""
    rows = rows[rows["workers"] == rows["workers"].max()]
    return rows.loc[rows["memory_trace"].map(len).idxmax()]


# -- consumer utilization against step time ---------------------------------------------------------------


def utilization(run: RunData) -> Figure:
    """Median consumer utilization (IQR whiskers) against the simulated step time, one line per strategy.

    Each strategy at the run's largest worker count (a strategy without workers: its own
    cell), the full workload (:func:`.utilization.utilization_cells`); a dashed line at
    the ideal, a loop that never waits. A step axis spanning a factor of 10 or more is
    logarithmic.
    """
    cells = utilization_cells(run.summary)
    steps = sorted({float(s) for s in cells["step_ms"]})
    workers = largest_workers(cells)
    figure, axes = style.new_figure(1, height_in=4.4)
    ax = axes[0, 0]
    at = "" if workers is None else f", {workers} worker" + ("" if workers == 1 else "s")
    figure.suptitle(f"Consumer utilization vs training-step time{at}")
    handles, labels = [], []
    for strategy in style.order_strategies(cells["strategy"]):
        rows = cells[cells["strategy"] == strategy].sort_values("step_ms")
        x = rows["step_ms"].to_numpy(float)
        median = rows[f"{METRIC}_median"].to_numpy(float)
        spread = rows["n"].to_numpy(int) >= MIN_SPREAD
        q25 = rows.get(f"{METRIC}_q25", pd.Series(np.nan, index=rows.index)).to_numpy(float)
        q75 = rows.get(f"{METRIC}_q75", pd.Series(np.nan, index=rows.index)).to_numpy(float)
        low = np.where(spread, median - q25, np.nan)
        high = np.where(spread, q75 - median, np.nan)
        line = ax.errorbar(
            x,
            median,
            yerr=[low, high],  # NaN: no whisker for a cell of a single value
            color=style.colour(strategy),
            marker=style.marker(strategy),
            linestyle=style.linestyle(strategy),
        )
        handles.append(line)
        labels.append(strategy_label(strategy))
    ideal = ax.axhline(IDEAL, color="black", linestyle="--", linewidth=1.2, zorder=1)
    handles.append(ideal)
    labels.append("ideal: the loop never waits")
    if steps and steps[-1] / steps[0] >= 10:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_locator(FixedLocator(steps))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("simulated training step per batch (ms" + (", log scale)" if ax.get_xscale() == "log" else ")"))
    ax.set_ylabel("consumer utilization (step time / wall time)")
    ax.set_title("Share of the loop's time spent in its step; whiskers: IQR")
    style.legend_below(figure, handles, labels)
    return figure
