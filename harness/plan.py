"""The plan of a run: which measurements, in which order, with which loader settings.

::

    RunOptions         everything one run measures, validated (strategies, worker counts,
                       workloads and batch sizes, repeats, windows, the LoaderConfig)
    plan_measurements  for repeat in range(R): for cell in cells: one Measurement
                       (A B C D, A B C D, ...: a slow drift of the machine spreads over
                       every cell instead of biasing the ones that ran last); a cell is
                       (dataset, strategy, workers, workload, batch size, dtype, step,
                       decode threads, background load, cache)

Pure data and functions: the runner (``harness.runner``) executes a plan, the session
(``harness.session``) builds one from a request.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from strategies import STRATEGIES, LoaderConfig
from strategies.config import DTYPES, WORKLOADS
from strategies.work import tile_nbytes

DEFAULT_SAMPLER_INTERVAL_S = 0.2  # the shortest wait; measure.MAX_CPU_FRACTION stretches it (see env.json sampler)
# The shortest measured window: long against the epoch boundaries, the timers and the
# memory sampler's period, as pyperf makes each value last 100 ms or more.
DEFAULT_MIN_WINDOW_S = 0.5
# How a measured epoch finds the dataset's pages (RunOptions.caches): left in the page
# cache by the epochs before it, or evicted just before it (harness.pagecache).
CACHES = ("warm", "cold")
NEXT_EPOCH = ("off", "on")  # LoaderConfig.prefetch_next_epoch, as a cell key
BACKGROUND_START = ("off", "on")  # LoaderConfig.background_start, as a cell key
AUTO = "auto"  # the decode_threads cell key of LoaderConfig.decode_threads=None

# No event for this long means a hung child: the slowest step is one epoch of the
# slowest strategy on the real dataset (a few seconds) or a start-up importing torch.
DEFAULT_WATCHDOG_S = 120.0


@dataclass(frozen=True, slots=True)
class Workload:
    """The per-image work and the batch size of some cells (``LoaderConfig.workload``, ``batch_size``).

    ``full`` is the real work; ``transfer`` hands over tiles computed once per worker,
    so only the IPC path is measured, at batch sizes given in MiB of image data
    (``batch_mib``; :func:`batch_size_for_mib` turns them into tiles).
    """

    name: str
    batch_size: int
    batch_mib: float | None = None  # the size asked for, when it was given in MiB

    def __post_init__(self) -> None:
        if self.name not in WORKLOADS:
            raise ValueError(f"Workload.name={self.name!r} must be one of {WORKLOADS}")
        if self.batch_size < 1:
            raise ValueError(f"Workload.batch_size={self.batch_size} must be >= 1")


def batch_size_for_mib(mib: float, channels: int, tile: int) -> int:
    """Tiles in a batch holding ``mib`` MiB of image data (uint16, masks not counted), rounded.

    The real dataset (1 channel, tile 256): 4 MiB -> 32 tiles, 16 MiB -> 128.
    """
    data, _ = tile_nbytes(channels, tile)
    size = round(mib * 2**20 / data)
    if size < 1:
        raise ValueError(
            f"a batch of {mib:g} MiB holds no whole tile of {channels} x {tile} x {tile} uint16 ({data} bytes)"
        )
    return size


@dataclass(frozen=True, slots=True)
class DatasetChoice:
    """One dataset a run measures: its folder, the name its cells carry, and where it came from."""

    path: str
    name: str  # the folder's name: samples.jsonl's ``dataset``
    source: str  # "real", "synth" or "dir"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """Everything one ``ipcbench run`` measures, validated."""

    dataset: str  # path of the dataset folder
    dataset_name: str  # what samples.jsonl calls it
    dataset_source: str  # "real", "synth" or "dir"
    # Further datasets, each its own cell beside the first (e.g. one per image size). The
    # first is the run's: env.json describes it, and the work bound is measured on it.
    more_datasets: tuple[DatasetChoice, ...] = ()
    strategies: tuple[str, ...]
    workers: tuple[int, ...]
    loader: LoaderConfig  # its ``workers`` is replaced per cell
    repeats: int = 3
    windows: int = 2  # measured windows per process, after one warm-up window
    # Each window is as many whole epochs as its time reaches this (docs/design.md section 7).
    min_window_s: float = DEFAULT_MIN_WINDOW_S
    # The simulated training step after each batch, in ms: each value its own cell (a sweep).
    step_ms: tuple[float, ...] = (0.0,)
    # Every (workload, batch size) each strategy runs at; empty: the loader's own, one cell per strategy x workers.
    workloads: tuple[Workload, ...] = ()
    # Every prefetch (LoaderConfig.prefetch), each its own cell; empty: the loader's.
    prefetch: tuple[int, ...] = ()
    # Every dtype the batches are converted to (LoaderConfig.dtype), each its own cell; empty: the loader's.
    dtypes: tuple[str, ...] = ()
    scale: float | None = None  # LoaderConfig.scale of the float32 cells
    # LoaderConfig.decode_threads of each cell (None: automatic); each value its own cell.
    decode_threads: tuple[int | None, ...] = (None,)
    # Busy processes spinning beside each measurement (CPU contention); each count its own cell.
    background_load: tuple[int, ...] = (0,)
    # "warm" and/or "cold" (CACHES): the page cache a measured epoch starts with; each its own cell.
    caches: tuple[str, ...] = ("warm",)
    # "off" and/or "on": LoaderConfig.prefetch_next_epoch; each its own cell.
    next_epoch: tuple[str, ...] = ("off",)
    # "off" and/or "on": LoaderConfig.background_start; each its own cell.
    background_start: tuple[str, ...] = ("off",)
    sampler_interval_s: float = DEFAULT_SAMPLER_INTERVAL_S
    watchdog_s: float = DEFAULT_WATCHDOG_S
    quick: bool = False

    def __post_init__(self) -> None:
        if not self.strategies:
            raise ValueError("RunOptions.strategies must name at least one strategy")
        names = [d.name for d in self.cell_datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"RunOptions datasets {names} must have distinct folder names (samples.jsonl keys them)")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"RunOptions.strategies={self.strategies} has duplicates")
        if not self.workers or any(w < 1 for w in self.workers):
            raise ValueError(f"RunOptions.workers={self.workers} must be one or more counts >= 1")
        if self.repeats < 1:
            raise ValueError(f"RunOptions.repeats={self.repeats} must be >= 1")
        if self.windows < 1:
            raise ValueError(f"RunOptions.windows={self.windows} must be >= 1")
        if not self.min_window_s >= 0:
            raise ValueError(f"RunOptions.min_window_s={self.min_window_s} must be >= 0")
        for name, values in (
            ("step_ms", self.step_ms),
            ("decode_threads", self.decode_threads),
            ("background_load", self.background_load),
            ("caches", self.caches),
            ("next_epoch", self.next_epoch),
            ("background_start", self.background_start),
        ):
            if not values or len(set(values)) != len(values):
                raise ValueError(f"RunOptions.{name}={values} must be one or more distinct values")
        if any(not step >= 0 for step in self.step_ms):
            raise ValueError(f"RunOptions.step_ms={self.step_ms} must be >= 0")
        if any(n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1) for n in self.decode_threads):
            raise ValueError(f"RunOptions.decode_threads={self.decode_threads} must each be None (automatic) or >= 1")
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in self.background_load):
            raise ValueError(f"RunOptions.background_load={self.background_load} must be counts >= 0")
        if not set(self.caches) <= set(CACHES):
            raise ValueError(f"RunOptions.caches={self.caches} must each be one of {CACHES}")
        if not set(self.next_epoch) <= set(NEXT_EPOCH):
            raise ValueError(f"RunOptions.next_epoch={self.next_epoch} must each be one of {NEXT_EPOCH}")
        if not set(self.background_start) <= set(BACKGROUND_START):
            raise ValueError(
                f"RunOptions.background_start={self.background_start} must each be one of {BACKGROUND_START}"
            )
        if "on" in self.background_start:
            self.loader.replace(background_start=True)  # validates it with the run's start method
        if self.sampler_interval_s < 0:
            raise ValueError(f"RunOptions.sampler_interval_s={self.sampler_interval_s} must be >= 0")
        if self.watchdog_s <= 0:
            raise ValueError(f"RunOptions.watchdog_s={self.watchdog_s} must be > 0")
        keys = [(w.name, w.batch_size) for w in self.workloads]
        if len(set(keys)) != len(keys):
            raise ValueError(f"RunOptions.workloads={keys} has duplicates")
        if len(set(self.prefetch)) != len(self.prefetch) or any(
            isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in self.prefetch
        ):
            raise ValueError(f"RunOptions.prefetch={self.prefetch} must be distinct counts >= 1")
        if len(set(self.dtypes)) != len(self.dtypes) or not set(self.dtypes) <= set(DTYPES):
            raise ValueError(f"RunOptions.dtypes={self.dtypes} must be distinct, each one of {DTYPES}")
        if self.scale is not None:
            if "float32" not in self.cell_dtypes:
                raise ValueError(f"RunOptions.scale={self.scale} needs float32 among the dtypes {self.cell_dtypes}")
            self.loader.replace(dtype="float32", scale=self.scale)  # validates the value

    @property
    def cell_datasets(self) -> tuple[DatasetChoice, ...]:
        """Every dataset the cells are measured on, the run's own first."""
        return (DatasetChoice(self.dataset, self.dataset_name, self.dataset_source), *self.more_datasets)

    def dataset_of(self, measurement: Measurement) -> DatasetChoice:
        """The dataset one measurement reads (the run's own where it names none)."""
        for choice in self.cell_datasets:
            if measurement.dataset in (None, choice.name):
                return choice
        names = [choice.name for choice in self.cell_datasets]
        raise ValueError(f"measurement {measurement.index} names dataset {measurement.dataset!r}, not one of {names}")

    @property
    def cell_prefetches(self) -> tuple[int, ...]:
        """The prefetch every strategy x workers cell is measured at."""
        return self.prefetch or (self.loader.prefetch,)

    @property
    def cell_dtypes(self) -> tuple[str, ...]:
        """The dtypes every strategy x workers x workload cell is measured in."""
        return self.dtypes or (self.loader.dtype,)

    @property
    def cell_workloads(self) -> tuple[Workload, ...]:
        """The (workload, batch size) variants of every strategy x workers cell."""
        return self.workloads or (Workload(self.loader.workload, self.loader.batch_size),)

    def config_dict(self) -> dict[str, Any]:
        """env.json ``config``: the LoaderConfig fields, then the run options (``workers`` is the list)."""
        return {
            **self.loader.as_dict(),
            **({"datasets": [d.name for d in self.cell_datasets]} if self.more_datasets else {}),
            "strategies": list(self.strategies),
            "workers": list(self.workers),
            **({"prefetch": list(self.prefetch)} if len(self.prefetch) > 1 else {}),
            "repeats": self.repeats,
            "windows": self.windows,
            "warmup_windows": 1,
            "min_window_s": self.min_window_s,
            "step_ms": list(self.step_ms),
            "decode_threads": [AUTO if n is None else n for n in self.decode_threads],
            "background_load": list(self.background_load),
            "cache": list(self.caches),
            "prefetch_next_epoch": list(self.next_epoch),
            "background_start": list(self.background_start),
            "workloads": [dataclasses.asdict(w) for w in self.cell_workloads],
            "dtypes": list(self.cell_dtypes),
            "float32_scale": self.scale,
            "quick": self.quick,
            "sampler_interval_s": self.sampler_interval_s,
            "watchdog_s": self.watchdog_s,
        }

    def batch_bytes(self, channels: int, batch_size: int | None = None) -> int:
        """Bytes of one whole batch, data and masks: what the timed loop receives per ``next()``."""
        data, mask = tile_nbytes(channels, self.loader.tile)
        return (batch_size or self.loader.batch_size) * (data + mask)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One fresh process: one cell, one repeat."""

    index: int
    repeat: int
    strategy: str
    workers: int
    workload: str | None = None  # None: the loader's
    batch_size: int | None = None  # None: the loader's
    dtype: str | None = None  # None: the loader's
    step_ms: float = 0.0
    decode_threads: int | None = None  # LoaderConfig.decode_threads: None is automatic
    background_load: int = 0
    cache: str = "warm"
    prefetch: int | None = None  # None: the loader's
    prefetch_next_epoch: str = "off"  # "on": LoaderConfig.prefetch_next_epoch
    background_start: str = "off"  # "on": LoaderConfig.background_start
    dataset: str | None = None  # RunOptions.dataset_of: a name; None, the run's own

    @property
    def decode_threads_key(self) -> str:
        """The cell key: ``"auto"`` or the count, as text."""
        return AUTO if self.decode_threads is None else str(self.decode_threads)


def plan_measurements(options: RunOptions) -> tuple[Measurement, ...]:
    """Interleaved: every cell once per repeat, cells in the same order each time."""
    several = len(options.cell_datasets) > 1
    cells = [
        {
            **({"dataset": data.name} if several else {}),
            "strategy": s,
            "workers": w,
            "workload": load.name,
            "batch_size": load.batch_size,
            "dtype": dtype,
            "step_ms": step,
            "decode_threads": threads,
            "background_load": busy,
            "cache": cache,
            "prefetch": prefetch,
            "prefetch_next_epoch": ahead,
            "background_start": early,
        }
        for data in options.cell_datasets
        for s in options.strategies
        for w in options.workers
        for prefetch in options.prefetch or (None,)  # None: the loader's
        for load in options.cell_workloads
        for dtype in options.cell_dtypes
        for step in options.step_ms
        for threads in options.decode_threads
        for busy in options.background_load
        for cache in options.caches
        for ahead in options.next_epoch
        for early in options.background_start
        # "on" only where the strategy offers it (LoaderConfig.prefetch_next_epoch, background_start);
        # the others run "off" alone
        if (ahead == "off" or STRATEGIES[s].prefetches_next_epoch)
        and (early == "off" or STRATEGIES[s].starts_in_background)
    ]
    plan = []
    for repeat in range(options.repeats):
        for cell in cells:
            plan.append(Measurement(len(plan), repeat, **cell))
    return tuple(plan)


def measurement_loader(options: RunOptions, measurement: Measurement) -> LoaderConfig:
    """The LoaderConfig one measurement runs with: the run's, with the cell's workers, workload, batch size, dtype.

    The run's ``scale`` applies to its float32 cells only (it means nothing to the others).
    """
    dtype = measurement.dtype or options.loader.dtype
    scale = options.scale if options.scale is not None else options.loader.scale
    return options.loader.replace(
        workers=measurement.workers,
        workload=measurement.workload or options.loader.workload,
        batch_size=measurement.batch_size or options.loader.batch_size,
        dtype=dtype,
        scale=scale if dtype == "float32" else None,
        decode_threads=measurement.decode_threads,
        prefetch=measurement.prefetch or options.loader.prefetch,
        prefetch_next_epoch=measurement.prefetch_next_epoch == "on",
        background_start=measurement.background_start == "on",
    )
