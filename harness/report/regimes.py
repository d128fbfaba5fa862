"""The regime map: which loader wins as the per-image work grows, from several results folders.

Each results folder is one *regime*: one dataset (say the real images uncompressed,
then zlib-, lzw- or zstd-compressed), measured by its own interleaved ``ipcbench run``
with the same strategies and worker counts. The map puts each regime at its measured
per-image cost (x) and shows every strategy's batches/s there (y), at one worker
count, so that a reader sees where the cheap-to-move strategies stop mattering and
where decoding dominates::

    RUN_DIR ...  --load_run-->  RunData each  --regime()-->  Regime (cost, batches/s per strategy, winner)
                                                                 |
                      regime_map_figure (PNG)  <-----------------+----------->  regimes_document (Markdown)
                                                  write_regimes: both rendered, then each written atomically

The per-image cost is measured, not assumed: the baseline strategy's ``compute``
stage per batch (summary column ``stage_compute_ms_per_batch``: decode, mask and
tile cutting, all in one process), divided by the images a batch covers (from the
samples' ``images`` lists and ``batches``) where every run records them. A run
without them gets the compute per batch for every regime, and one without stage
timers the baseline's CPU time per batch; the axis and the table say which.

Only cells of the full workload, every rank together, the images' own dtype, the
shortest step time and the default of every other swept setting
(:data:`harness.results.SWEPT_DEFAULTS`) count; a run whose cells vary in another key
(prefetch, batch size, tile, start method) is refused, since one regime must be one
cell per strategy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from harness.errors import IpcbenchError
from harness.results import (
    ALL_RANKS,
    ENV_FILE,
    HEADLINE,
    KEY_FILL,
    SAMPLES_FILE,
    SWEPT_DEFAULTS,
    RunData,
    load_run,
    measured,
    stage_column,
    write_atomic,
)

from . import style
from .cells import MIN_SPREAD, has_workers, pooled_units, strategy_label
from .document import Document, Image, Paragraph, Table, fmt_number
from .markdown import render_markdown
from .provenance import cpu_name, lookup

FIGURE_FILE = "regime-map.png"
TABLE_FILE = "regimes.md"
BASELINE = "baseline"
COST_STAGE = "compute"
LOG_COST_SPAN = 5.0  # a cost axis spanning this factor or more is logarithmic
SINGLE_KEYS = ("prefetch", "start_method", "batch_size", "tile")  # a regime's cells must agree on these


@dataclass(frozen=True, slots=True)
class CostMeasure:
    """What x is: the same measure for every regime of a map."""

    kind: str  # "image": compute per image; "batch": compute per batch; "cpu": CPU per batch
    axis: str  # the axis label, unit included
    header: str  # the table's column


@dataclass(frozen=True, slots=True)
class Regime:
    name: str
    run: RunData
    cost: float  # median (ms), in the map's CostMeasure
    cost_q25: float
    cost_q75: float
    rates: pd.DataFrame  # index strategy (canonical order): median, q25, q75, n of batches/s

    @property
    def winner(self) -> str:
        return str(self.rates["median"].idxmax())

    @property
    def best_over_baseline(self) -> float | None:
        if BASELINE not in self.rates.index:
            return None
        base = float(self.rates.loc[BASELINE, "median"])
        return float(self.rates["median"].max()) / base if base > 0 else None


@dataclass(frozen=True, slots=True)
class RegimeMap:
    regimes: tuple[Regime, ...]  # by cost, cheapest first
    workers: int
    measure: CostMeasure

    @property
    def strategies(self) -> list[str]:
        return style.order_strategies({s for r in self.regimes for s in r.rates.index})


# -- loading ----------------------------------------------------------------------------------------------


def load_regime_runs(run_dirs: list[Path]) -> list[RunData]:
    """Each folder as a RunData; a folder that is not a results folder of ``ipcbench run`` is refused by name."""
    if len(run_dirs) < 2:
        raise IpcbenchError(f"a regime map needs at least two results folders, one per regime (got {len(run_dirs)})")
    runs = []
    for path in map(Path, run_dirs):
        missing = [name for name in (ENV_FILE, SAMPLES_FILE) if not (path / name).is_file()]
        if not path.is_dir() or missing:
            what = "not a directory" if not path.is_dir() else f"no {' or '.join(missing)}"
            raise IpcbenchError(f"{path} is not a results folder of `ipcbench run` ({what})")
        runs.append(load_run(path))
    return runs


def regime_cells(run: RunData) -> dict[str, Any]:
    """The cell-key values of the cells a regime is read from (see the module docstring); errors name the run."""
    summary = run.summary
    rows = summary[(summary["workload"] == "full") & (summary["rank"].astype(str) == ALL_RANKS)]
    if rows.empty:
        raise IpcbenchError(f"{run.root}: no full-workload cells to place on a regime map")
    dtypes = sorted(rows["dtype"].astype(str).unique())
    chosen: dict[str, Any] = {
        "workload": "full",
        "rank": ALL_RANKS,
        "dtype": KEY_FILL["dtype"] if KEY_FILL["dtype"] in dtypes else dtypes[0],
    }
    rows = rows[rows["dtype"] == chosen["dtype"]]
    chosen["step_ms"] = float(rows["step_ms"].astype(float).min())
    rows = rows[rows["step_ms"].astype(float) == chosen["step_ms"]]
    for key, usual in SWEPT_DEFAULTS.items():  # swept settings: the default where measured, else the first
        if key in rows:
            values = sorted(rows[key].astype(str).unique())
            chosen[key] = str(usual) if str(usual) in values else values[0]
            rows = rows[rows[key].astype(str) == chosen[key]]
    for key in SINGLE_KEYS:
        values = sorted(rows[key].unique(), key=str)
        if len(values) > 1:
            raise IpcbenchError(
                f"{run.root}: its cells vary in {key} ({', '.join(map(str, values))}); a regime is one cell per "
                "strategy and worker count"
            )
    return chosen


def _select(frame: pd.DataFrame, chosen: dict[str, Any]) -> pd.DataFrame:
    for key, value in chosen.items():
        column = frame[key].astype(float) if key == "step_ms" else frame[key].astype(str)
        frame = frame[column == (float(value) if key == "step_ms" else str(value))]
    return frame


def worker_counts(run: RunData, chosen: dict[str, Any]) -> set[int]:
    """The worker counts at which the run measured a strategy with workers."""
    rows = _select(run.summary, chosen)
    rows = rows[rows["strategy"].map(has_workers).astype(bool)]
    return {int(w) for w in rows["workers"]}


def regime_name(run: RunData) -> str:
    """The dataset's name (its folder: ``real``, ``real-zlib``), and its compression where env.json records it."""
    name = lookup(run.env, "dataset.name")
    if not name:
        names = sorted({str(v) for v in run.summary["dataset"].unique()} - {"n/a"})
        name = ", ".join(names) or run.root.name
    compression = lookup(run.env, "dataset.params.compression", "dataset.compression")
    if compression and str(compression) not in str(name):
        name = f"{name}, {'uncompressed' if compression == 'none' else compression}"
    return str(name)


def _baseline_cell(run: RunData, chosen: dict[str, Any], workers: int) -> pd.Series:
    """The baseline's summary row: at ``workers`` if measured there, else the one with the most windows."""
    rows = _select(run.summary, chosen)
    rows = rows[rows["strategy"] == BASELINE]
    if rows.empty:
        raise IpcbenchError(
            f"{run.root}: no {BASELINE} cell (full workload); the regime's per-image cost is measured on the "
            f"{BASELINE}: run it with --strategies {BASELINE},..."
        )
    at = rows[rows["workers"] == workers]
    if not at.empty:
        return at.iloc[0]
    return rows.sort_values(["n", "workers"], ascending=[False, True]).iloc[0]


def _images_per_batch(run: RunData, cell: pd.Series) -> float | None:
    """Images a batch of the baseline's cell covers: its measured windows' images over their batches."""
    samples = measured(run.samples)
    if "images" not in samples or "batches" not in samples:
        return None
    rows = samples[(samples["strategy"] == BASELINE) & (samples["workers"] == cell["workers"])]
    counts = rows["images"].map(lambda v: len(v) if isinstance(v, list) else np.nan)
    batches = pd.to_numeric(rows["batches"], errors="coerce")
    if rows.empty or counts.isna().any() or batches.isna().any() or not batches.sum() or not counts.sum():
        return None
    return float(counts.sum() / batches.sum())


def _cost_measure(runs: list[RunData], cells: list[pd.Series], per_batch: list[float | None]) -> CostMeasure:
    compute = f"{stage_column(COST_STAGE)}_median"
    if all(compute in cell and pd.notna(cell.get(compute)) for cell in cells):
        if all(value is not None for value in per_batch):
            return CostMeasure(
                "image",
                "per-image cost: the baseline's compute stage per image (ms, one process, decode to tiles)",
                "per-image cost (ms)",
            )
        sizes = {int(cell["batch_size"]) for cell in cells}
        of = f" of {sizes.pop()} tiles" if len(sizes) == 1 else ""
        return CostMeasure(
            "batch",
            f"the baseline's compute stage per batch{of} (ms, one process)",
            f"baseline compute per batch{of} (ms)",
        )
    if all(pd.notna(cell.get("cpu_s_per_batch_median")) for cell in cells):
        return CostMeasure("cpu", "the baseline's CPU time per batch (ms)", "baseline CPU per batch (ms)")
    lacking = [str(run.root) for run, cell in zip(runs, cells, strict=True) if pd.isna(cell.get(compute))]
    raise IpcbenchError(f"no per-image cost: the baseline of {', '.join(lacking)} has neither stage times nor CPU time")


def build_regime_map(runs: list[RunData], workers: int | None = None) -> RegimeMap:
    """The map of ``runs`` at ``workers`` (default: the largest worker count every run measured)."""
    if len(runs) < 2:
        raise IpcbenchError(f"a regime map needs at least two results folders, one per regime (got {len(runs)})")
    chosen = [regime_cells(run) for run in runs]
    counts = [worker_counts(run, c) for run, c in zip(runs, chosen, strict=True)]
    common = set.intersection(*counts)
    listed = "; ".join(
        f"{run.root}: {', '.join(map(str, sorted(c))) or 'none'}" for run, c in zip(runs, counts, strict=True)
    )
    if not common:
        raise IpcbenchError(f"the runs have no worker count in common (workers measured: {listed})")
    if workers is None:
        workers = max(common)
    elif workers not in common:
        raise IpcbenchError(f"--workers {workers} was not measured by every run (workers measured: {listed})")
    cells = [_baseline_cell(run, c, workers) for run, c in zip(runs, chosen, strict=True)]
    per_batch = [_images_per_batch(run, cell) for run, cell in zip(runs, cells, strict=True)]
    measure = _cost_measure(runs, cells, per_batch)
    names = [regime_name(run) for run in runs]
    regimes = []
    for run, c, cell, images, name in zip(runs, chosen, cells, per_batch, names, strict=True):
        if names.count(name) > 1:
            name = f"{name} [{run.root.name}]"
        column = stage_column(COST_STAGE) if measure.kind != "cpu" else "cpu_s_per_batch"
        scale = 1000.0 if measure.kind == "cpu" else 1.0
        if measure.kind == "image":
            scale /= images  # type: ignore[operator]  # every run has it for this measure
        stats = [float(cell.get(f"{column}_{s}", np.nan)) * scale for s in ("median", "q25", "q75")]
        regimes.append(Regime(name, run, *stats, _rates(run, c, workers)))
    regimes.sort(key=lambda r: r.cost)
    return RegimeMap(tuple(regimes), workers, measure)


def _rates(run: RunData, chosen: dict[str, Any], workers: int) -> pd.DataFrame:
    """batches/s per strategy at ``workers``; a strategy without workers pooled over its cells (as in throughput)."""
    units = _select(pooled_units(run, HEADLINE), chosen)
    units = units[units["median"].notna()]
    inline = ~units["strategy"].map(has_workers).astype(bool)
    units = units[inline | (units["workers"] == workers)]
    rates = units.set_index("strategy")[["median", "q25", "q75", "n"]]
    return rates.reindex(style.order_strategies(rates.index))


# -- the figure -------------------------------------------------------------------------------------------


def regime_map_figure(regime_map: RegimeMap) -> Figure:
    """batches/s of every strategy against each regime's per-image cost; each regime named, its winner ringed."""
    figure, axes = style.new_figure(1, height_in=5.0)
    ax = axes[0, 0]
    workers = f"{regime_map.workers} worker" + ("" if regime_map.workers == 1 else "s")
    figure.suptitle(f"Which loader wins as the per-image work grows ({workers})")
    costs = np.array([r.cost for r in regime_map.regimes], float)
    handles, labels = [], []
    for strategy in regime_map.strategies:
        points = [(r.cost, r.rates.loc[strategy]) for r in regime_map.regimes if strategy in r.rates.index]
        x = np.array([cost for cost, _ in points], float)
        median = np.array([float(p["median"]) for _, p in points])
        spread = np.array([int(p["n"]) >= MIN_SPREAD for _, p in points])
        low = np.where(spread, median - np.array([float(p["q25"]) for _, p in points]), np.nan)
        high = np.where(spread, np.array([float(p["q75"]) for _, p in points]) - median, np.nan)
        line = ax.errorbar(
            x,
            median,
            yerr=[low, high],
            color=style.colour(strategy),
            marker=style.marker(strategy),
            linestyle=style.linestyle(strategy),
        )
        handles.append(line)
        labels.append(strategy_label(strategy))
    for regime in regime_map.regimes:
        ax.axvline(regime.cost, color="grey", linewidth=0.7, linestyle=":", zorder=0)
        if regime.cost_q75 > regime.cost_q25:
            ax.axvspan(regime.cost_q25, regime.cost_q75, color="grey", alpha=0.12, linewidth=0, zorder=0)
        best = regime.rates.loc[regime.winner]
        ax.plot(
            [regime.cost],
            [float(best["median"])],
            marker="o",
            markersize=16,
            markerfacecolor="none",
            markeredgecolor="black",
            markeredgewidth=1.4,
            linestyle="none",
            zorder=4,
        )
    handles.append(
        Line2D([], [], marker="o", markersize=12, markerfacecolor="none", markeredgecolor="black", linestyle="none")
    )
    labels.append("winner of the regime")
    if len(costs) and costs.min() > 0 and costs.max() / costs.min() >= LOG_COST_SPAN:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(costs.min() / 1.4, costs.max() * 1.4)
    else:
        pad = 0.12 * (costs.max() - costs.min()) if len(costs) > 1 and costs.max() > costs.min() else 1.0
        ax.set_xlim(max(costs.min() - pad, 0), costs.max() + pad)
    ax.set_ylim(bottom=0)
    _name_regimes(ax, regime_map)
    scale = ", log scale" if ax.get_xscale() == "log" else ""
    ax.set_xlabel(regime_map.measure.axis + scale)
    ax.set_ylabel("batches/s (median, IQR whiskers)")
    style.legend_below(figure, handles, labels)
    return figure


LABEL_GAP = 0.16  # axes fraction: regime labels closer than this alternate between two heights


def _name_regimes(ax, regime_map: RegimeMap) -> None:
    """Each regime's name and winner above the axes, at its cost; close neighbours' labels staggered."""
    to_axes = ax.transScale + ax.transLimits  # data -> axes fraction, once the scale and limits are set
    previous, level = -1.0, 0
    for regime in regime_map.regimes:
        where = float(to_axes.transform((regime.cost, 1.0))[0])
        level = 1 - level if where - previous < LABEL_GAP else 0
        previous = where
        ax.annotate(
            f"{regime.name}\nwinner: {regime.winner}",
            (regime.cost, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 4 + 24 * level),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8.5,
        )


# -- the table --------------------------------------------------------------------------------------------


def regimes_document(regime_map: RegimeMap) -> Document:
    """regimes.md: what the map shows, the figure, one row per regime, and where each regime's numbers came from."""
    strategies = regime_map.strategies
    rows = []
    for regime in regime_map.regimes:
        ratio = regime.best_over_baseline
        rows.append(
            (
                regime.name,
                _spread(regime.cost, regime.cost_q25, regime.cost_q75),
                *(
                    _spread(*(float(regime.rates.loc[s, k]) for k in ("median", "q25", "q75")))
                    if s in regime.rates.index
                    else "–"
                    for s in strategies
                ),
                f"**{regime.winner}**",
                "–" if ratio is None else f"{ratio:.2f}",
            )
        )
    header = (
        "regime",
        regime_map.measure.header,
        *(strategy_label(s) for s in strategies),
        "winner",
        "best / baseline",
    )
    workers = regime_map.workers
    what = {
        "image": "the baseline's compute stage per batch (decode, masks and tile cutting in one process, from its "
        "own stage timer; summary column `stage_compute_ms_per_batch`) divided by the images a batch covers",
        "batch": "the baseline's compute stage per batch (decode, masks and tile cutting in one process, from its "
        "own stage timer; summary column `stage_compute_ms_per_batch`); not every run records the images a batch "
        "covers, so it is not divided per image",
        "cpu": "the baseline's CPU time per batch (no run records stage times for every regime)",
    }[regime_map.measure.kind]
    lede = (
        f"Each regime is one results folder: one dataset measured by its own interleaved `ipcbench run`. Its cost "
        f"is {what}. Each strategy's column is its batches/s, the median over measured windows with the IQR in "
        f"brackets, at {workers} worker{'' if workers == 1 else 's'} (a strategy without workers: all its cells), "
        "full workload. The winner has "
        "the highest median; best / baseline is its batches/s over the baseline's."
    )
    machines = {cpu_name(r.run.env) for r in regime_map.regimes}
    if len(machines) > 1:
        lede += (
            f" **The runs were measured on different machines ({', '.join(sorted(machines))}):** ratios across "
            "regimes mix the loaders with the machines."
        )
    sources = "Sources: " + "; ".join(
        f"{r.name}: `{r.run.root}` (run {lookup(r.run.env, 'run_id', default='unknown')}, "
        f"{lookup(r.run.env, 'created', default='date unknown')}, {cpu_name(r.run.env)})"
        for r in regime_map.regimes
    )
    caption = (
        f"**Regime map.** batches/s of each strategy (median, IQR whiskers) against {regime_map.measure.axis}; a "
        f"dotted guide at each regime (shaded: its cost's IQR), {workers} worker{'' if workers == 1 else 's'}; a "
        "black ring marks each regime's winner."
    )
    created = sorted(str(lookup(r.run.env, "created", default="")) for r in regime_map.regimes)
    front = {
        "title": "ipcbench: which loader wins in which regime",
        "date": created[-1] if created and created[-1] else "",
        "description": "Batches/s of every loader across data regimes of growing per-image cost.",
        "series": ["Live-Dead Assay"],
        "tags": ["ipcbench", "regimes", *strategies],
    }
    if not front["date"]:
        del front["date"]
    table = Table(header, tuple(rows), (False, True, *[True] * len(strategies), False, True))
    blocks = (Paragraph(lede), Image(FIGURE_FILE, "Regime map", caption), table, Paragraph(sources))
    return Document(front, blocks)


def _spread(median: float, q25: float, q75: float) -> str:
    if pd.isna(median):
        return "–"
    iqr = q75 - q25
    return fmt_number(median) + ("" if pd.isna(iqr) else f" [{fmt_number(iqr)}]")


# -- writing ----------------------------------------------------------------------------------------------


def write_regimes(run_dirs: list[Path], out_dir: Path, *, workers: int | None = None) -> tuple[Path, Path]:
    """Load the runs, draw the map and spell its table in memory, then write both into ``out_dir`` atomically."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise IpcbenchError(f"--out {out_dir} exists and is not a folder")
    regime_map = build_regime_map(load_regime_runs(list(run_dirs)), workers)
    style.apply()
    png = style.png_bytes(regime_map_figure(regime_map))
    text = "\n".join(render_markdown(regimes_document(regime_map)))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        figure = write_atomic(out_dir / FIGURE_FILE, png)
        table = write_atomic(out_dir / TABLE_FILE, text.encode())
    except OSError as exc:
        raise IpcbenchError(f"cannot write the regime map into {out_dir}: {exc}") from exc
    return figure, table
