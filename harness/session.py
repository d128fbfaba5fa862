"""A run's session: from a typed request to a prepared results folder, for ``ipcbench run`` and ``--distributed``.

::

    RunRequest (the CLI's options, typed; nothing below the CLI sees argparse)
       -> resolve_dataset     a folder, or a built-in source built once and cached under data/
       -> build_options       RunOptions (harness.plan): strategies, workloads, batch sizes, defaults;
                              the tile checked against every image (one error naming each it misses)
       -> run_env             env.json's content: provenance, the config, memcpy's R, the sampler
       -> canonical_command   the command that repeats the run, every option spelled out
       ... the runner measures (harness.runner) ...
       -> build_report        report.md and plots, or the reason it could not be built

Nothing here prints: progress goes through a ``say`` callable the caller passes, and
errors are :class:`~harness.errors.IpcbenchError` for the CLI to show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from strategies import LoaderConfig, StrategyUnavailableError, resolve_strategies
from strategies.config import DTYPES, WORKLOADS
from strategies.dataset import Dataset, check_tile, open_dataset

from .errors import IpcbenchError
from .plan import (
    AUTO,
    DEFAULT_MIN_WINDOW_S,
    DEFAULT_SAMPLER_INTERVAL_S,
    DEFAULT_WATCHDOG_S,
    DatasetChoice,
    RunOptions,
    Workload,
    batch_size_for_mib,
)

RESULTS_DIR = Path("results")
DEFAULT_WORKERS = (1, 2)
# 10 measured windows per cell, in 5 fresh processes (docs/design.md section 7: >= 6)
DEFAULT_REPEATS, DEFAULT_WINDOWS = 5, 2
QUICK_REPEATS, QUICK_WINDOWS = 1, 1
DEFAULT_WORKLOADS = ("full",)
DEFAULT_TRANSFER_MIB = (4.0, 16.0)  # the transfer workload's batch sizes: one image-sized batch, and four


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRequest:
    """What a run was asked for: every option of ``ipcbench run``, None where the default applies."""

    dataset: str = "real"  # "real", "synth", or a dataset folder
    strategies: tuple[str, ...] | None = None  # None: every registered strategy
    workers: tuple[int, ...] = DEFAULT_WORKERS
    repeats: int | None = None
    windows: int | None = None  # measured windows per process, after one warm-up window
    min_window_s: float = DEFAULT_MIN_WINDOW_S
    step_ms: tuple[float, ...] = (0.0,)  # each its own cell: a sweep of training-step times
    decode_threads: tuple[int | None, ...] = (None,)  # None: automatic (LoaderConfig.decode_threads)
    background_load: tuple[int, ...] = (0,)  # busy processes beside each measurement
    caches: tuple[str, ...] = ("warm",)  # "warm" and/or "cold" (evicted before every epoch)
    next_epoch: tuple[str, ...] = ("off",)  # "off" and/or "on": LoaderConfig.prefetch_next_epoch
    background_start: tuple[str, ...] = ("off",)  # "off" and/or "on": LoaderConfig.background_start
    quick: bool = False
    out: Path | None = None  # None: results/<run id>
    prefetch: tuple[int, ...] | None = None  # None: the loader's; several: each its own cell
    workloads: tuple[str, ...] = DEFAULT_WORKLOADS
    batch_mib: tuple[float, ...] | None = None
    batch_size: tuple[int, ...] | int | None = None  # the full workload's tiles per batch; several: a sweep
    dtypes: tuple[str, ...] | None = None  # None: the loader's (uint16)
    scale: float | None = None  # float32 cells only
    tile: int | None = None
    start_method: str | None = None
    sampler_interval_s: float | None = None
    watchdog_s: float | None = None
    report: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, int):
            object.__setattr__(self, "batch_size", (self.batch_size,))
        twice = sorted({b for b in self.batch_size or () if self.batch_size.count(b) > 1})
        if twice:
            raise IpcbenchError(f"--batch-size lists {', '.join(map(str, twice))} more than once")
        unknown = [name for name in self.workloads if name not in WORKLOADS]
        if unknown:
            raise IpcbenchError(f"unknown workload {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
        if self.batch_size is not None and "full" not in self.workloads:
            raise IpcbenchError("--batch-size sets the full workload's batch; the transfer workload's is --batch-mib")
        if not self.min_window_s >= 0:
            raise IpcbenchError(f"--min-window-s {self.min_window_s} must be >= 0")
        unknown = [name for name in self.dtypes or () if name not in DTYPES]
        if unknown:
            raise IpcbenchError(f"unknown dtype {', '.join(unknown)}; choose from {', '.join(DTYPES)}")
        if self.scale is not None and "float32" not in (self.dtypes or ()):
            raise IpcbenchError("--scale multiplies float32 batches; add float32 to --dtype")
        if self.batch_mib is not None and "transfer" not in self.workloads:
            raise IpcbenchError("--batch-mib sets the transfer workload's batch sizes; add transfer to --workload")

    def run_dir(self, run_id: str) -> Path:
        """The results folder of the run with id ``run_id``: ``out``, or results/<run id>."""
        return self.out if self.out is not None else RESULTS_DIR / run_id


def resolve_dataset(spec: str, progress: Callable[[str], None]) -> tuple[Path, str]:
    """(folder, source) for a dataset spec: a built-in source is built once and cached."""
    if spec in ("real", "synth"):
        from .datasets import ensure_dataset

        return Path(ensure_dataset(spec, progress=progress)), spec
    path = Path(spec)
    if not path.is_dir():
        raise IpcbenchError(f"--dataset {spec!r} is neither 'real', 'synth' nor an existing dataset folder")
    return path, "dir"


def dataset_specs(spec: str) -> list[str]:
    """The datasets of ``--dataset``: one, or several separated by commas, each measured as its own cells.

    A folder whose own name holds a comma is one dataset.
    """
    if "," not in spec or Path(spec).is_dir():
        return [spec]
    specs = [part.strip() for part in spec.split(",")]
    if any(not part for part in specs) or len(set(specs)) != len(specs):
        raise IpcbenchError(f"--dataset {spec!r} must list distinct datasets separated by commas")
    return specs


def check_same_channels(datasets: list[tuple[Path, Dataset]]) -> int:
    """The channel count every dataset of a run shares (a transfer batch's tiles are counted from it)."""
    counts = {path: opened.channels for path, opened in datasets}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{path} {count}" for path, count in counts.items())
        raise IpcbenchError(
            f"the datasets of one run must have the same number of channels; they have {listed} "
            "(build them alike, e.g. ipcbench data synth --channels N --height H --width W)"
        )
    return next(iter(counts.values()))


def build_workloads(request: RunRequest, batch_size: int, channels: int, tile: int) -> tuple[Workload, ...]:
    """The (workload, batch size) variants of every cell: full at each ``request.batch_size`` (default
    ``batch_size``), transfer at each ``batch_mib``."""
    workloads = []
    for name in request.workloads:
        if name == "full":
            workloads += [Workload("full", size) for size in request.batch_size or (batch_size,)]
        else:
            for mib in request.batch_mib or DEFAULT_TRANSFER_MIB:
                workloads.append(Workload("transfer", batch_size_for_mib(mib, channels, tile), mib))
    return tuple(workloads)


def build_options(
    request: RunRequest,
    dataset: Path,
    source: str,
    channels: int,
    *,
    opened: Dataset | None = None,
    more: tuple[tuple[Path, str, Dataset], ...] = (),
) -> RunOptions:
    """RunOptions from a request; ``channels`` (of the dataset's images) turns ``batch_mib`` into tiles.

    The tile is checked against every image of the dataset (``opened``, or the folder
    opened again) here, before any measurement: one error names each image it does not fit.
    ``more``: further datasets (folder, source, opened), each measured as its own cells.
    """
    try:
        strategies = resolve_strategies(request.strategies or None)
    except (ValueError, StrategyUnavailableError) as exc:
        raise IpcbenchError(str(exc)) from exc
    overrides = {
        name: value
        for name, value in (
            ("prefetch", request.prefetch[0] if request.prefetch else None),
            ("batch_size", request.batch_size[0] if request.batch_size else None),
            ("tile", request.tile),
            ("start_method", request.start_method),
        )
        if value is not None
    }
    try:
        loader = LoaderConfig().replace(workers=request.workers[0], **overrides)
    except ValueError as exc:
        raise IpcbenchError(str(exc)) from exc
    for images in (opened if opened is not None else open_dataset(dataset), *(o for _, _, o in more)):
        check_tile_fits(images, loader.tile, given=request.tile is not None)
    try:
        workloads = build_workloads(request, loader.batch_size, channels, loader.tile)
        # The loader env.json records is the first cell's; every cell's is in config.workloads.
        loader = loader.replace(workload=workloads[0].name, batch_size=workloads[0].batch_size)
        quick = request.quick
        return RunOptions(
            dataset=str(dataset),
            dataset_name=dataset.name,
            dataset_source=source,
            more_datasets=tuple(DatasetChoice(str(path), path.name, kind) for path, kind, _ in more),
            strategies=tuple(strategies),
            workers=tuple(request.workers),
            loader=loader,
            repeats=request.repeats if request.repeats is not None else (QUICK_REPEATS if quick else DEFAULT_REPEATS),
            windows=request.windows if request.windows is not None else (QUICK_WINDOWS if quick else DEFAULT_WINDOWS),
            min_window_s=request.min_window_s,
            step_ms=tuple(request.step_ms),
            decode_threads=tuple(request.decode_threads),
            background_load=tuple(request.background_load),
            caches=tuple(request.caches),
            next_epoch=tuple(request.next_epoch),
            background_start=tuple(request.background_start),
            workloads=workloads,
            dtypes=tuple(request.dtypes or ()),
            prefetch=tuple(request.prefetch) if request.prefetch and len(request.prefetch) > 1 else (),
            scale=request.scale,
            quick=quick,
            sampler_interval_s=(
                request.sampler_interval_s if request.sampler_interval_s is not None else DEFAULT_SAMPLER_INTERVAL_S
            ),
            watchdog_s=request.watchdog_s if request.watchdog_s is not None else DEFAULT_WATCHDOG_S,
        )
    except ValueError as exc:
        raise IpcbenchError(str(exc)) from exc


def check_tile_fits(dataset: Dataset, tile: int, *, given: bool) -> None:
    """The tile must fit every image: one IpcbenchError naming each image it does not, and how to choose one."""
    try:
        check_tile(dataset, tile)
    except ValueError as exc:
        default = "" if given else f"{tile} is the default of --tile; "
        raise IpcbenchError(f"{exc} ({default}pass --tile {dataset.largest_tile} or less)") from exc


def canonical_command(options: RunOptions, dataset: str) -> list[str]:
    """The command that repeats this run, every option spelled out (argv may be a test's or make's)."""
    loader = options.loader
    workloads = options.cell_workloads
    full = [w.batch_size for w in workloads if w.name == "full"]
    mibs = [f"{w.batch_mib:g}" for w in workloads if w.name == "transfer" and w.batch_mib is not None]
    command = [
        "ipcbench",
        "run",
        "--dataset",
        dataset,
        "--strategies",
        ",".join(options.strategies),
        "--workers",
        ",".join(map(str, options.workers)),
        "--repeats",
        str(options.repeats),
        "--windows",
        str(options.windows),
        "--min-window-s",
        f"{options.min_window_s:g}",
        "--step-ms",
        ",".join(f"{step:g}" for step in options.step_ms),
        "--prefetch",
        ",".join(map(str, options.cell_prefetches)),
        "--workload",
        ",".join(dict.fromkeys(w.name for w in workloads)),
        *(["--batch-size", ",".join(map(str, full))] if full else []),
        *(["--batch-mib", ",".join(mibs)] if mibs else []),
        "--tile",
        str(loader.tile),
        "--start-method",
        loader.start_method,
        "--sampler-interval-s",
        f"{options.sampler_interval_s:g}",
        *(["--dtype", ",".join(options.dtypes)] if options.dtypes else []),
        *(["--scale", f"{options.scale:g}"] if options.scale is not None else []),
        "--decode-threads",
        ",".join(AUTO if n is None else str(n) for n in options.decode_threads),
        *(
            ["--background-load", ",".join(map(str, options.background_load))]
            if options.background_load != (0,)
            else []
        ),
        "--cache",
        ",".join(options.caches),
        *(["--prefetch-next-epoch", ",".join(options.next_epoch)] if options.next_epoch != ("off",) else []),
        *(["--background-start", ",".join(options.background_start)] if options.background_start != ("off",) else []),
    ]
    return [*command, "--quick"] if options.quick else command


def sampler_env(options: RunOptions) -> dict[str, Any]:
    """env.json ``sampler``: how memory and CPU were sampled (its overhead is filled in at the end)."""
    from .child import WARMUP_SAMPLER_INTERVAL_S, WARMUP_SAMPLER_MAX_CPU_FRACTION
    from .measure import MAX_CPU_FRACTION

    return {
        "interval_s": options.sampler_interval_s,
        "max_cpu_fraction": MAX_CPU_FRACTION,
        "warmup_interval_s": WARMUP_SAMPLER_INTERVAL_S,
        "warmup_max_cpu_fraction": WARMUP_SAMPLER_MAX_CPU_FRACTION,
        "source": "/proc/PID/smaps_rollup (PSS, USS), /proc/PID/stat (CPU), statvfs(/dev/shm)",
        "overhead_fraction": None,
        "method": "sampler thread CPU time / wall time of the measured windows (a fraction of one core)",
    }


def run_env(
    options: RunOptions,
    *,
    run_id: str,
    created: datetime,
    command: list[str],
    dataset: dict[str, Any],
    memcpy: dict[str, Any] | None,
) -> dict[str, Any]:
    """env.json of a run, as written at its start (the runner completes it at the end)."""
    from .envinfo import collect_env

    return collect_env(
        run_id=run_id,
        created=created,
        command=command,
        start_method=options.loader.start_method,
        dataset=dataset,
        config=options.config_dict(),
        memcpy=memcpy,
        sampler=sampler_env(options),
    )


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores' worth of CPU the machine spends over ``seconds`` while this process sleeps."""
    import time

    from .measure import machine_busy_s

    before, started = machine_busy_s(), time.monotonic()
    time.sleep(seconds)
    return max(0.0, machine_busy_s() - before) / (time.monotonic() - started)


def busy_warning(cores_in_use: float, loadavg: list[float] | None, cores: int) -> str | None:
    """The warning to give before measuring on a machine busy with other work (over half its cores), or None.

    Busy is what other processes use now (``cores_in_use``, measured over a second); the
    load average is named beside it, never alone: it still counts a run that just ended.
    """
    limit = cores / 2
    if cores_in_use <= limit:
        return None  # a high load average alone is the past minute (a run that just ended), not now
    said = [f"{cores_in_use:.1f} of its {cores} cores are in use by other processes"]
    if loadavg and loadavg[0] > limit:
        said.append(f"its 1-minute load average is {loadavg[0]:.2f}")
    return (
        f"ipcbench: warning: the machine is busy ({' and '.join(said)}); timing is only valid on a quiet machine, "
        "and this run's report will say it was measured under load"
    )


def build_report(run_dir: Path) -> str:
    """Build report.md and the plots of a results folder; the line to tell the user.

    A failure is told, not raised: the measurements are on disk, and a report bug must
    not lose the run (the line says how to retry).
    """
    from .report import build_report as build

    try:
        return f"report: {build(run_dir)}"
    except Exception as exc:
        return f"ipcbench: report not built ({type(exc).__name__}: {exc}); retry with: ipcbench report {run_dir}"
