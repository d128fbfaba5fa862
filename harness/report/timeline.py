"""The timeline figure: what each process did, stage by stage, around one batch that waits for a new image.

One panel per traced strategy (harness.timeline), one row per process: the training
loop's process (``main``) on top, its workers (processes, or threads for ``threads``)
below. Each interval a process spent in a stage is a bar in the stage's colour and
hatch (:mod:`.style`, as in the "where the time goes" figure); intervals of one
process that overlap (``queue``'s feeder thread pickles while the worker computes the
next image) are stacked in thinner lanes of its row. A triangle above the main row
marks each moment ``next()`` returned a batch, and the simulated training step, if the
loop had one, is drawn on the main row too.

The window: most batches are cut from an image already in the main process and come
back at once; every few batches one needs the next image and waits for it. Of each
strategy's traced batches, the one that waited longest (with batches on both sides)
is shown with the batches before and after it, from the moment the worker began
computing the image it waited for. Every panel spans the same number of milliseconds,
so their lengths compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.timeline import STEP_STAGE, Timeline
from strategies.stages import BATCH_EVENT, MAIN_ROLE, STAGES

from . import style

BATCHES_BEFORE, BATCHES_AFTER = 3, 2  # batches shown on each side of the one that waits
ROW_HEIGHT = 0.8  # of a row's unit height: the rest is the gap between rows
IDLE_HEIGHT = 0.4  # of a lane's height: the main process waiting is drawn thin
MARGIN = 0.04
# What the main process does only for a new image (waits for it, reads it, unpickles it, or makes it).
IMAGE_STAGES = ("wait", "transfer", "serialize", "compute")  # of the window's length, on each side


@dataclass(frozen=True, slots=True)
class Window:
    """The stretch a panel shows (ms of the trace) and the batch in it that waited for the next image."""

    start: float
    end: float
    waiting: float | None = None  # when the waiting batch was returned (None: no batch in the trace)
    called: float | None = None  # when the loop called next() for it (the previous batch's return and step)
    needs_image: bool = False  # whether that next() waited for, received or computed an image


def draw(timeline: Timeline) -> Figure:
    """One panel per strategy, a row per process, a bar per stage interval, the window chosen by :func:`window`."""
    strategies = timeline.strategies
    windows = {s: window(_records(timeline.records, s)) for s in strategies}
    span = max((w.end - w.start for w in windows.values()), default=1.0) or 1.0
    rows_of = {s: _roles(_records(timeline.records, s)) for s in strategies}
    heights = [len(rows_of[s]) + 1.3 for s in strategies]
    figure, axes = style.new_figure(
        1, len(strategies), height_in=0.42 * sum(heights) + 1.6, gridspec_kw={"height_ratios": heights}
    )
    config = timeline.meta.get("config", {})
    step = float(timeline.meta.get("step_ms") or 0.0)
    setting = (
        f"{config.get('workers', '?')} workers, prefetch {config.get('prefetch', '?')}, "
        f"{config.get('batch_size', '?')} tiles of {config.get('tile', '?')} px a batch, "
        + (f"a {step:g} ms step" if step else "no training step")
    )
    figure.suptitle(f"A batch that waits for the next image, process by process\n{setting}")
    stages_seen: set[str] = set()
    for ax, strategy in zip(axes[:, 0], strategies, strict=True):
        records = _records(timeline.records, strategy)
        shown = windows[strategy]
        roles = rows_of[strategy]
        for row, role in enumerate(roles):
            y = len(roles) - 1 - row  # main on top
            intervals = [
                r
                for r in records
                if r["role"] == role and "stage" in r and r["end_ms"] >= shown.start and r["start_ms"] <= shown.end
            ]
            for lane, count, r in _lanes(intervals):
                height = ROW_HEIGHT / count
                bottom = y - ROW_HEIGHT / 2 + lane * height
                left = max(r["start_ms"], shown.start) - shown.start
                width = max(min(r["end_ms"], shown.end) - shown.start - left, span * 0.001)  # a blip still shows
                if r["stage"] == "wait":  # idle: a thin bar, which reads apart from compute in greyscale too
                    bottom, height = bottom + height * (1 - IDLE_HEIGHT) / 2, height * IDLE_HEIGHT
                ax.broken_barh([(left, width)], (bottom, height), **style.stage_patch(r["stage"]))
                stages_seen.add(r["stage"])
        returns = [
            r["at_ms"] - shown.start
            for r in records
            if r.get("event") == BATCH_EVENT and shown.start <= r["at_ms"] <= shown.end
        ]
        marks = len(roles) - 1 + ROW_HEIGHT / 2 + 0.2
        ax.plot(returns, [marks] * len(returns), linestyle="none", marker="v", color="black", markersize=5)
        for x in returns:
            ax.axvline(x, color="black", linewidth=0.5, alpha=0.3, zorder=0)
        if shown.waiting is not None and shown.called is not None:
            _label_wait(ax, shown.called - shown.start, shown.waiting - shown.start, shown.needs_image, marks)
        ax.set_yticks(range(len(roles)), [_role_label(role) for role in reversed(roles)])
        ax.set_ylim(-0.6, marks + 0.75)
        ax.set_xlim(-MARGIN * span, span * (1 + MARGIN))
        ax.grid(axis="y", visible=False)
        ax.set_title(strategy, loc="left")
    axes[-1, 0].set_xlabel("ms from the start of the window (blank: time outside the timed stages)")
    handles, labels = style.stage_handles(s for s in (*STAGES, STEP_STAGE) if s in stages_seen)
    handles.append(Line2D([], [], linestyle="none", marker="v", color="black", markersize=5))
    labels.append("next() returns a batch")
    style.legend_below(figure, handles, labels)
    return figure


def _label_wait(ax, called: float, returned: float, needs_image: bool, y: float) -> None:
    """A double arrow above the main row over the longest ``next()``, how long it took and why."""
    ax.annotate(
        "",
        (called, y + 0.3),
        xytext=(returned, y + 0.3),
        arrowprops={"arrowstyle": "<->", "color": "black", "linewidth": 0.8, "shrinkA": 0, "shrinkB": 0},
    )
    ax.annotate(
        f"next() takes {returned - called:.0f} ms" + (": this batch needs the next image" if needs_image else ""),
        ((called + returned) / 2, y + 0.3),
        xytext=(0, 2),
        textcoords="offset points",
        ha="center",
        va="bottom",
        fontsize=8,
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 0.5},
    )


def window(records: Sequence[dict[str, Any]]) -> Window:
    """The batch that waited longest and those around it, from the start of the work it waited for.

    The waiting batch is the one whose ``next()`` took longest, from the loop's call
    (the previous batch's return, or the end of the training step after it) to the
    return: most batches are cut from an image already in the main process and come at
    once; one that needs the next image waits for it, reads it, unpickles it. It is
    chosen among those with ``BATCHES_BEFORE`` batches before and ``BATCHES_AFTER``
    after it (all of them when there are too few). The window runs from the earlier of
    the return ``BATCHES_BEFORE`` batches back and the start of the worker's compute
    that ended during that call (the image waited for), to the return
    ``BATCHES_AFTER`` batches on. Without batches: the whole trace.
    """
    returns = sorted(r["at_ms"] for r in records if r.get("event") == BATCH_EVENT)
    if not returns:
        ends = [r.get("end_ms", r.get("at_ms", 0.0)) for r in records] or [1.0]
        return Window(0.0, max(ends))

    main = [r for r in records if r["role"] == MAIN_ROLE and "stage" in r]
    steps = [r for r in main if r["stage"] == STEP_STAGE]

    def since(k: int) -> float:
        """When the loop called next() for batch ``k``."""
        previous = returns[k - 1] if k else 0.0
        return max([previous, *(r["end_ms"] for r in steps if previous <= r["start_ms"] < returns[k])])

    candidates = range(BATCHES_BEFORE, len(returns) - BATCHES_AFTER)
    chosen = max(candidates or range(len(returns)), key=lambda k: returns[k] - since(k))
    needs_image = any(
        r["stage"] in IMAGE_STAGES and r["end_ms"] > since(chosen) and r["start_ms"] < returns[chosen] for r in main
    )
    start = returns[chosen - BATCHES_BEFORE] if chosen >= BATCHES_BEFORE else 0.0
    end = returns[min(chosen + BATCHES_AFTER, len(returns) - 1)]
    awaited = [
        r["start_ms"]
        for r in records
        if r["role"] != MAIN_ROLE and r.get("stage") == "compute" and since(chosen) <= r["end_ms"] <= returns[chosen]
    ]
    return Window(min([start, *awaited]), end, returns[chosen], since(chosen), needs_image)


def _records(records: Sequence[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
    return [r for r in records if r["strategy"] == strategy]


def _roles(records: Sequence[dict[str, Any]]) -> list[str]:
    """``main`` first, then the workers by number."""
    roles = {r["role"] for r in records}
    workers = sorted(roles - {MAIN_ROLE}, key=lambda role: (len(role), role))
    return ([MAIN_ROLE] if MAIN_ROLE in roles else []) + workers


def _role_label(role: str) -> str:
    """``main`` -> "main", ``worker0`` -> "worker 0"."""
    stem = role.rstrip("0123456789")
    return f"{stem} {role[len(stem) :]}" if stem != role else role


def _lanes(intervals: Sequence[dict[str, Any]]) -> list[tuple[int, int, dict[str, Any]]]:
    """(lane, lanes in the row, interval): overlapping intervals of one process in lanes of their own."""
    ordered = sorted(intervals, key=lambda r: (r["start_ms"], r["end_ms"]))
    lane_ends: list[float] = []
    placed = []
    for r in ordered:
        lane = next((i for i, end in enumerate(lane_ends) if end <= r["start_ms"]), len(lane_ends))
        if lane == len(lane_ends):
            lane_ends.append(r["end_ms"])
        else:
            lane_ends[lane] = r["end_ms"]
        placed.append((lane, r))
    count = max(len(lane_ends), 1)
    return [(count - 1 - lane, count, r) for lane, r in placed]  # the first lane on top
