"""One look for every figure: a colour and a marker per strategy, fixed everywhere.

A reader who learns "shared memory is green" in the throughput figure must find it
green in the latency, memory and lifecycle figures too, and in the next post of the
series. Colours come from Paul Tol's muted palette (safe for colour-blind readers,
helped in greyscale print by a distinct marker per strategy); the stages of a batch
have a palette of their own (Okabe-Ito) and a hatch each. Strategies the
palette does not name yet get fallback colours in a stable order.

:func:`apply` sets matplotlib defaults sized for a figure shown ~800 px wide on a
blog: 8 inches at 100 px per inch, saved at 150 dpi for sharp high-density screens.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Paul Tol's "muted" palette (safe for colour-blind readers; no two strategies share a hue
# family, so pipe and zero-copy shm are not both "blue"); the baseline is neutral grey because
# it is the reference, not a contender. Each strategy also has its own marker.
STRATEGY_COLOURS: dict[str, str] = {
    "baseline": "#555555",
    "pipe": "#332288",  # indigo
    "queue": "#DDCC77",  # sand
    "shm": "#117733",  # green
    "shm_zerocopy": "#88CCEE",  # cyan
    "torch": "#CC6677",  # rose
    "threads": "#AA4499",  # purple
    "grain": "#999933",  # olive
    "spdl": "#882255",  # wine
    "spdl_arena": "#44AA99",  # teal
}
STRATEGY_MARKERS: dict[str, str] = {
    "baseline": "o",
    "pipe": "s",
    "queue": "^",
    "shm": "D",
    "shm_zerocopy": "d",
    "torch": "v",
    "threads": "P",
    "grain": "X",
    "spdl": "*",
    "spdl_arena": "h",
}
STRATEGY_ORDER: tuple[str, ...] = tuple(STRATEGY_COLOURS)
FALLBACK_COLOURS: tuple[str, ...] = ("#F0E442", "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF")
# The stages of a batch's journey ("where the time goes"): a palette of their own (Okabe-Ito,
# which no strategy uses), a hatch each for greyscale print, and waiting in grey because it is
# idle time, not work.
STAGE_COLOURS: dict[str, str] = {
    "compute": "#E69F00",
    "serialize": "#0072B2",
    "transfer": "#009E73",
    "assemble": "#F0E442",
    "wait": "#BBBBBB",
}
STAGE_HATCHES: dict[str, str] = {"compute": "", "serialize": "//", "transfer": "xx", "assemble": "..", "wait": ""}
# The training loop's simulated step (a sleep standing for the accelerator's work), where a figure
# draws it beside the stages (the timeline): white, so that it reads as time the loader does not spend.
STAGE_COLOURS["step"] = "#FFFFFF"
STAGE_HATCHES["step"] = "--"
STAGE_EDGE_COLOUR = "#333333"
FALLBACK_MARKERS: tuple[str, ...] = ("X", "*", "h", "<", ">")
# Line styles for figures whose lines are one per strategy (utilization, the regime map): with the
# marker, they tell the strategies apart without colour (greyscale print, colour-blind readers).
STRATEGY_LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")

CLEAN_COLOUR = "#B7E4C7"  # pale green: readable black text on top
DIRTY_COLOUR = "#F4A9A0"  # pale vermillion
MISSING_COLOUR = "#EEEEEE"

# Text in a strategy's colour is darkened where the colour is lighter than this (CIE L*), e.g. sand.
TEXT_MAX_LIGHTNESS, TEXT_DARKEN = 70.0, 0.6

FIGURE_WIDTH_IN = 8.0
# A legend column: its handle and gap, then about this much per character of a label at 9 pt.
LEGEND_HANDLE_IN, LEGEND_CHAR_IN, LEGEND_ROW_IN = 0.6, 0.07, 0.22
SAVE_DPI = 150


def order_strategies(names: Iterable[str]) -> list[str]:
    """Known strategies in their canonical order, then the others alphabetically."""
    unique = set(names)
    known = [name for name in STRATEGY_ORDER if name in unique]
    return known + sorted(unique - set(known))


def _fallback_index(name: str) -> int:
    # Stable across runs and processes (unlike hash()), so an unknown strategy keeps its colour.
    return sum(name.encode()) % len(FALLBACK_COLOURS)


def colour(strategy: str) -> str:
    """The strategy's colour; unknown strategies get a stable fallback."""
    return STRATEGY_COLOURS.get(strategy) or FALLBACK_COLOURS[_fallback_index(strategy)]


def stage_hatch(stage: str) -> str:
    """The hatch of a stage (none for an unknown one)."""
    return STAGE_HATCHES.get(stage, "")


def stage_colour(stage: str) -> str:
    """The stage's colour; a stage this module does not name gets a stable fallback."""
    return STAGE_COLOURS.get(stage) or FALLBACK_COLOURS[_fallback_index(stage)]


def luminance(hex_colour: str) -> float:
    """Relative luminance (WCAG 2, sRGB): 0 for black, 1 for white; what a colour becomes in greyscale."""
    channels = [int(hex_colour.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def lightness(hex_colour: str) -> float:
    """CIE L* (0 black .. 100 white) of the colour: greyscale's perceived brightness, even steps."""
    y = luminance(hex_colour)
    return 116 * y ** (1 / 3) - 16 if y > 216 / 24389 else y * 24389 / 27


def text_colour(strategy: str) -> str:
    """The strategy's colour for text on white: as it is, or darkened where it is too light to read."""
    hex_colour = colour(strategy)
    if lightness(hex_colour) <= TEXT_MAX_LIGHTNESS:
        return hex_colour
    r, g, b = (int(hex_colour.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4))
    return "#{:02X}{:02X}{:02X}".format(*(round(c * TEXT_DARKEN) for c in (r, g, b)))


def marker(strategy: str) -> str:
    """The strategy's marker; unknown strategies get a stable fallback."""
    return STRATEGY_MARKERS.get(strategy) or FALLBACK_MARKERS[_fallback_index(strategy)]


def linestyle(strategy: str) -> str:
    """The strategy's line style where each line is one strategy: by its canonical place, a stable fallback else."""
    index = STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else _fallback_index(strategy)
    return STRATEGY_LINESTYLES[index % len(STRATEGY_LINESTYLES)]


def apply() -> None:
    """Set matplotlib defaults (Agg backend, font sizes for ~800 px width, light grid)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": SAVE_DPI,
            "savefig.facecolor": "white",
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.titleweight": "bold",
            "axes.labelsize": 10,
            "figure.titlesize": 13,
            "figure.titleweight": "bold",
            "legend.fontsize": 9,
            "legend.frameon": False,
            "xtick.labelsize": 9,
            "ytick.labelsize": 9,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "grid.linewidth": 0.6,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "lines.linewidth": 1.8,
            "lines.markersize": 6,
            "errorbar.capsize": 3,
        }
    )


def new_figure(ncols: int, nrows: int = 1, *, height_in: float, **kwargs: Any) -> tuple[Figure, Any]:
    """A blog-width Figure (not pyplot's: no global state) and its 2-D array of axes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(FIGURE_WIDTH_IN, height_in), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False, **kwargs)
    return figure, axes


def legend_below(figure: Figure, handles: list, labels: list[str]) -> None:
    """One legend for the whole figure, under the axes, in up to 6 columns that fit the figure's width.

    Long labels (a strategy with its variant) get fewer columns; past two rows the figure
    grows by the extra rows, so that the legend does not squeeze the axes.
    """
    fits = (n for n in range(min(len(labels), 6), 1, -1) if _legend_width_in(labels, n) <= FIGURE_WIDTH_IN)
    ncol = next(fits, 1)
    rows = -(-len(labels) // ncol)
    if rows > 2:
        width, height = figure.get_size_inches()
        figure.set_size_inches(width, height + (rows - 2) * LEGEND_ROW_IN)
    figure.legend(handles, labels, loc="outside lower center", ncol=ncol)


def _legend_width_in(labels: list[str], ncol: int) -> float:
    """About how wide a legend of ``ncol`` columns is (matplotlib's layout: the first columns one entry longer)."""
    rows, long_columns = divmod(len(labels), ncol)
    sizes = [rows + 1] * long_columns + [rows] * (ncol - long_columns)
    starts = [sum(sizes[:i]) for i in range(ncol)]
    columns = [labels[start : start + size] for start, size in zip(starts, sizes, strict=True) if size]
    return sum(LEGEND_HANDLE_IN + LEGEND_CHAR_IN * max(len(label) for label in column) for column in columns)


def line_handles(strategies: Iterable[str]) -> tuple[list, list[str]]:
    """Legend entries (line with marker) for ``strategies`` in canonical order, labelled by ``strategy_label``."""
    from matplotlib.lines import Line2D

    from .cells import strategy_label

    names = order_strategies(strategies)
    handles = [Line2D([], [], color=colour(s), marker=marker(s), linestyle="-") for s in names]
    return handles, [strategy_label(s) for s in names]


def stage_patch(stage: str, **kwargs: Any) -> dict[str, Any]:
    """The look of a stage's bar or legend patch: its colour, hatch and a thin dark edge (``kwargs`` on top)."""
    return {
        "facecolor": stage_colour(stage),
        "hatch": stage_hatch(stage),
        "edgecolor": STAGE_EDGE_COLOUR,
        "linewidth": 0.4,
        **kwargs,
    }


def stage_handles(stages: Iterable[str]) -> tuple[list, list[str]]:
    """Legend entries (patch in the stage's colour and hatch) for ``stages``, labelled by name."""
    from matplotlib.patches import Patch

    names = list(stages)
    return [Patch(**stage_patch(stage)) for stage in names], names


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG, at ``SAVE_DPI`` (what every figure file holds)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def patch_handles(strategies: Iterable[str]) -> tuple[list, list[str]]:
    """Legend entries (filled patch) for ``strategies`` in canonical order, for bar charts (``strategy_label``)."""
    from matplotlib.patches import Patch

    from .cells import strategy_label

    names = order_strategies(strategies)
    return [Patch(color=colour(s)) for s in names], [strategy_label(s) for s in names]
