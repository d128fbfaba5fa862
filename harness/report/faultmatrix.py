"""The shutdown-cleanliness matrix from faults.jsonl: scenario x strategy, clean or why not.

Green cells are clean (the error surfaced within the timeout, nothing was left
behind), red cells say "NOT clean" with the reason, wrapped to the cell; grey cells
are scenarios not run for that strategy (the baseline has no worker to kill).
"""

from __future__ import annotations

import textwrap

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from harness.results import RunData

from . import style

ROW_IN_WITH_REASONS = 0.72  # inches per scenario when some cell carries a reason
ROW_IN_CLEAN = 0.3  # inches per scenario when every cell is clean or not run


def faults(run: RunData) -> Figure:
    """The shutdown-cleanliness matrix: scenario x strategy, clean or not clean with the reason."""
    frame = run.faults.copy()
    if "start_method" in frame and frame["start_method"].nunique() > 1:
        frame["scenario"] = frame["scenario"] + " (" + frame["start_method"].astype(str) + ")"
    scenarios = list(dict.fromkeys(frame["scenario"]))
    strategies = style.order_strategies(frame["strategy"])
    # Rows tall enough for a wrapped reason where some cell is not clean; a compact table where all are.
    row_in = ROW_IN_WITH_REASONS if not frame["clean"].all() else ROW_IN_CLEAN
    figure = Figure(figsize=(style.FIGURE_WIDTH_IN, row_in * len(scenarios) + 1.2), layout="constrained")
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


def _cell_patch(column: int, row: int, fill: str) -> Rectangle:
    return Rectangle((column, row), 1, 1, facecolor=fill, edgecolor="white", linewidth=2)
