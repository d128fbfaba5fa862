"""The report's figures, in report order, and which runs have the data for each.

Every figure is 8 inches wide (shown ~800 px on a blog), titled, with units on its
axes, one colour and marker per strategy (:mod:`.style`), medians with IQR error
bars (none for a cell of a single value, which says n=1 instead: :mod:`.cells`). The
drawing lives in :mod:`.linecharts`, :mod:`.barcharts` and :mod:`.faultmatrix`; each
function takes a RunData and returns a matplotlib Figure, and nothing here writes a
file (:mod:`harness.report` saves them).

``FIGURES`` names each figure's file, title, caption text and the columns it needs,
so a run (or a pytest-benchmark file) lacking a column simply gets no such figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from matplotlib.figure import Figure

from harness.results import RunData, measured

from .barcharts import cpu_per_batch, lifecycle, memory, stages
from .faultmatrix import faults
from .linecharts import memory_trace, throughput, utilization, wait_ecdf
from .scaling import has_scaling, scaling
from .utilization import WITHIN_BEST, has_utilization_curve


@dataclass(frozen=True, slots=True)
class FigureSpec:
    name: str  # file stem under plots/
    title: str
    draw: Callable[[RunData], Figure]
    needs: tuple[str, ...]  # summary columns (``M_median``) or sample columns that must hold data
    describe: str  # what the figure shows, for the caption
    spread: tuple[str, ...] = ()  # metrics drawn with IQR error bars (none for a cell of a single value)
    when: Callable[[RunData], bool] | None = None  # a further condition on the run (None: the columns suffice)


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "throughput",
        "Throughput",
        throughput,
        ("batches_per_s",),
        "Median batches/s per strategy against the number of workers (MB/s is batches/s times the batch's "
        "bytes: the summary table has it); error bars span the inter-quartile range (points dodged sideways a "
        "little so they do not hide each other). A strategy without workers (the baseline, whose work runs in "
        "the training loop's own process) is drawn at no worker count but as a horizontal line across the axis "
        "at the median of all its measured windows, the IQR shaded. Each line is named at its right end, with its "
        "marker (a run that also varies other settings, told apart by line style, has a legend instead).",
        ("batches_per_s",),
    ),
    FigureSpec(
        "wait_ecdf",
        "Wait per batch",
        wait_ecdf,
        ("wait_ms",),
        "Empirical CDF of the time the training loop waited in next() for each batch, all measured windows "
        "pooled; markers sit at each strategy's p50, p95 and p99 (dashed guides). Waits under 1 µs are "
        "drawn at 1 µs.",
    ),
    FigureSpec(
        "utilization",
        "Consumer utilization against step time",
        utilization,
        ("consumer_utilization",),
        "Share of wall time the training loop spends in its simulated step (a sleep standing for the accelerator's "
        "work; DLIO and MLPerf Storage call it accelerator utilization) against the step's length, one line per "
        "strategy at the run's largest worker count (a strategy without workers: its own cell), full workload; "
        "medians over measured windows, whiskers the IQR (none for a cell of a single value). Dashed: the ideal, "
        f"a loop that never waits for a batch. Once every strategy is within {WITHIN_BEST:.0%} of the best, the "
        "loader no longer matters (the report's utilization section names that step).",
        when=has_utilization_curve,
    ),
    FigureSpec(
        "scaling",
        "How cost grows",
        scaling,
        ("batches_per_s",),
        "Median batches/s, peak PSS (main process and workers) and time to the first batch against each setting "
        "the run measured at three or more values (batch size: MB of data and masks per batch, log scale; worker "
        "count: a dotted line at the machine's cores, past which workers share cores; image size: megapixels per "
        "image, one dataset each, log scale), the other settings held at their defaults; one line per strategy.",
        when=has_scaling,
    ),
    FigureSpec(
        "memory",
        "Memory",
        memory,
        ("pss_peak_mb",),
        "Peak PSS and USS summed over the main process and every worker, and peak /dev/shm use above the "
        "level before the generator started; bars are medians over epochs, whiskers the IQR; a stub on the axis "
        "marks a value too small to see. A strategy that hands nothing over through /dev/shm and measured no use of "
        "it is left out of the /dev/shm panel, which names it.",
        ("pss_peak_mb", "uss_peak_mb", "shm_peak_mb"),
    ),
    FigureSpec(
        "memory_trace",
        "Memory over time",
        memory_trace,
        ("memory_trace",),
        "Memory during one epoch per strategy, the most-workers cell's most densely sampled epoch (usually "
        "the untimed warm-up, sampled every 50 ms; its first samples show buffers being touched for the first "
        "time): PSS solid, USS dashed, /dev/shm dotted.",
    ),
    FigureSpec(
        "lifecycle",
        "Start-up and shutdown",
        lifecycle,
        ("startup_s",),
        "Median generator start-up (pool start to ready), time from iter() to the first batch, and "
        "shutdown (close() to every worker gone); whiskers are the IQR, a stub on the axis marks a value too "
        "small to see. Start-up and shutdown count once per process.",
        ("startup_s", "time_to_first_batch_s", "shutdown_s"),
    ),
    FigureSpec(
        "cpu_per_batch",
        "CPU per batch",
        cpu_per_batch,
        ("cpu_s_per_batch",),
        "User + system CPU time of the main process and all workers during an epoch, divided by its "
        "batches; bars are medians, whiskers the IQR; a stub on the axis marks a value too small to see.",
        ("cpu_s_per_batch",),
    ),
    FigureSpec(
        "stages",
        "Where the time goes per batch",
        stages,
        ("stage_ms_per_batch",),
        "Milliseconds per batch in each stage, from the strategies' own timers (the change of "
        "stage_times() over an epoch divided by its batches; medians per stage, stacked). Worker stages "
        "(compute, serialize, the workers' share of transfer) are summed over workers, which run in parallel "
        "with the main process, so a bar can be longer than the wall time per batch (the black tick); "
        "main-side stages (the main's share of transfer, assemble, wait) are wall time in the main process.",
    ),
)
FAULTS_FIGURE = FigureSpec(
    "faults",
    "Shutdown cleanliness",
    faults,
    (),
    "Each fault scenario (rows) run against each strategy (columns): clean means the error surfaced within the "
    "timeout, no process was left and /dev/shm was as before; otherwise the reason is given.",
)


def available(run: RunData) -> list[FigureSpec]:
    """The figures this run has data for, in report order (the faults matrix only with faults.jsonl)."""
    specs = [
        spec
        for spec in FIGURES
        if all(_has(run, need) for need in spec.needs) and (spec.when is None or spec.when(run))
    ]
    if run.faults is not None and not run.faults.empty:
        specs.append(FAULTS_FIGURE)
    return specs


def _has(run: RunData, column: str) -> bool:
    if f"{column}_median" in run.summary:
        return bool(run.summary[f"{column}_median"].notna().any())
    if column in run.samples:  # a raw list (waits, a memory trace) or dict (stage times) per epoch
        return bool(measured(run.samples)[column].map(lambda v: isinstance(v, list | dict) and len(v) > 0).any())
    return False
