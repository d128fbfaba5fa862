"""Consumer utilization against the training step's time: from which step on the loader no longer matters.

``consumer_utilization`` is the share of a window's wall time the loop spent in its
simulated step (``--step-ms``, a sleep like waiting on a GPU): what DLIO and MLPerf
Storage call accelerator utilization. Without a step it is 0 by definition, so only
cells with a positive step count here. A run measured at several step times shows
how a slower consumer hides the loader: once the step is long enough, every strategy
keeps the loop about as busy as the best one.

The figure (:func:`.linecharts.utilization`) and the report's section
(:mod:`.document`) read the same cells from here: the full workload, every rank
together, the images' own dtype, each strategy at the run's largest worker count (a
strategy without workers: its cell at the largest count it was measured at; its
worker count means nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.results import ALL_RANKS, KEY_FILL, SWEPT_DEFAULTS, RunData

from . import style
from .cells import has_workers, hold_at_defaults

METRIC = "consumer_utilization"
# "The loader no longer matters" from the step on which every strategy's median utilization is within
# this fraction of the best strategy's at that step (and at every longer step measured).
WITHIN_BEST = 0.05
IDEAL = 1.0  # the loop never waits for a batch


def utilization_cells(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary rows the figure and table show (see the module docstring), positive steps only.

    Other cell keys that vary (prefetch, batch size, ...) keep their smallest value, so
    each strategy has one row per step time.
    """
    if f"{METRIC}_median" not in summary or summary.empty:
        return summary.iloc[0:0]
    rows = summary[summary[f"{METRIC}_median"].notna()]
    rows = rows[(rows["workload"] == "full") & (rows["rank"].astype(str) == ALL_RANKS)]
    if rows["dtype"].nunique() > 1:
        own = rows["dtype"] == KEY_FILL["dtype"]
        rows = rows[own] if own.any() else rows[rows["dtype"] == sorted(rows["dtype"].astype(str))[0]]
    rows = rows[rows["step_ms"].astype(float) > 0]
    if rows.empty:
        return rows
    with_workers = rows["strategy"].map(has_workers).astype(bool)
    at_most = rows[with_workers & (rows["workers"] == largest_workers(rows))]
    inline = rows[~with_workers]
    inline = inline[inline["workers"] == inline.groupby("strategy")["workers"].transform("max")]
    rows = pd.concat([at_most, inline])
    # Swept settings other than the step: a run that varies them too is shown at their defaults.
    rows = hold_at_defaults(rows, ("prefetch", "start_method", "batch_size", "tile", *SWEPT_DEFAULTS))
    return rows.sort_values(["strategy", "step_ms"])


def step_values(run: RunData) -> list[float]:
    """The distinct positive step times (ms) of the run's full-workload cells, ascending."""
    return sorted({float(s) for s in utilization_cells(run.summary)["step_ms"]})


def has_utilization_curve(run: RunData) -> bool:
    """Whether the run has the utilization figure: consumer utilization measured at two or more step times."""
    return len(step_values(run)) >= 2


def largest_workers(cells: pd.DataFrame) -> int | None:
    """The worker count of the strategies with workers in ``cells`` (None: only strategies without)."""
    counted = cells[cells["strategy"].map(has_workers).astype(bool)]
    return None if counted.empty else int(counted["workers"].max())


def utilization_table(run: RunData) -> pd.DataFrame:
    """Median utilization: one row per strategy (canonical order), one column per step time (ms)."""
    cells = utilization_cells(run.summary)
    if cells.empty:
        return pd.DataFrame()
    table = cells.pivot_table(index="strategy", columns="step_ms", values=f"{METRIC}_median", aggfunc="first")
    table.columns = [float(c) for c in table.columns]
    return table.reindex(style.order_strategies(table.index))


@dataclass(frozen=True, slots=True)
class LoaderStopsMattering:
    """From which step time on every strategy is within :data:`WITHIN_BEST` of the best (None: at no step measured)."""

    step_ms: float | None
    lowest: float | None  # the lowest strategy's median utilization at that step
    # At the longest step measured: the best strategy and the lowest one, with their medians.
    last_step_ms: float
    best: tuple[str, float]
    worst: tuple[str, float]


def loader_stops_mattering(table: pd.DataFrame, within: float = WITHIN_BEST) -> LoaderStopsMattering | None:
    """The first step from which on (that step and every longer one) every strategy is within ``within`` of the best.

    Strategies not measured at a step are left out of that step's comparison. None for
    an empty table.
    """
    steps = [s for s in sorted(table.columns) if table[s].notna().any()]
    if not steps:
        return None

    def close_enough(step: float) -> bool:
        values = table[step].dropna()
        return bool(values.max() > 0 and values.min() >= (1 - within) * values.max())

    start = None
    for step in reversed(steps):
        if not close_enough(step):
            break
        start = step
    last = table[steps[-1]].dropna()
    best = (str(last.idxmax()), float(last.max()))
    worst = (str(last.idxmin()), float(last.min()))
    lowest = None if start is None else float(table[start].dropna().min())
    return LoaderStopsMattering(start, lowest, steps[-1], best, worst)


def stops_mattering_sentence(found: LoaderStopsMattering, within: float = WITHIN_BEST) -> str:
    """The section's sentence: from which step on the loader no longer matters, or that it matters throughout."""
    if found.step_ms is not None:
        return (
            f"From a {found.step_ms:g} ms step on, every strategy keeps the loop within {within:.0%} of the best "
            f"strategy's utilization, and at least {found.lowest:.0%} busy: the loader no longer matters there."
        )
    return (
        f"At no step time measured (up to {found.last_step_ms:g} ms) is every strategy within {within:.0%} of the "
        f"best: at {found.last_step_ms:g} ms {found.worst[0]} keeps the loop {found.worst[1]:.0%} busy against "
        f"{found.best[0]}'s {found.best[1]:.0%}, so the loader still matters."
    )
