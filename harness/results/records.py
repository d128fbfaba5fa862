"""The records a results folder is made of: frozen dataclasses, one per line or element.

- :class:`WindowSample`: one measured window of one measurement process (a line of
  samples.jsonl): as many whole epochs as reach the run's minimum window time;
- :class:`FaultRecord`: one cell of the shutdown-cleanliness matrix (a line of faults.jsonl);
- :class:`SoakRecord`: one strategy's soak (an element of soak.json).

Fields of :class:`WindowSample` beyond docs/design.md section 6 (kept in every line,
ignored by readers that do not know them): ``checksum_full`` (hash of every byte,
warm-up epochs only, else null), ``sampler_cpu_s`` (the sampler thread's CPU time
during the epoch, already subtracted from ``cpu_s_per_batch``), ``orphans_after_exit``
and ``leaked_shm_after_exit`` (processes of the measurement's process group, and new
ipcbench_*/psm_* segments, found after the measurement process exited), ``images``
(the dataset indices of the epoch's images, in plan order: what a rank's shard was),
``stage_ms_per_batch`` (where the time went, per batch: the change of the generator's
``stage_times()`` over the epoch divided by its batches, in ms, by stage; null for a
strategy without stage timers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .schema import ALL_RANKS, SCHEMA_VERSION


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowSample:
    """One measured window of one measurement process: a line of samples.jsonl.

    A window is ``epochs`` whole epochs in a row, as many as its time reaches the run's
    ``min_window_s`` (docs/design.md section 7); ``epoch`` is the first of them, ``window``
    its place in the process (0: the warm-up, flagged ``warmup``). Counts and times are
    the window's; ``checksums`` has one checksum per epoch, ``checksum`` is the first's.
    """

    schema_version: int = SCHEMA_VERSION
    run_id: str
    strategy: str
    workers: int
    prefetch: int
    start_method: str
    batch_size: int
    tile: int
    dataset: str
    workload: str
    step_ms: float
    rank: str = ALL_RANKS
    dtype: str = "uint16"  # what the batches' data held (LoaderConfig.dtype)
    decode_threads: str = "1"  # LoaderConfig.decode_threads: "auto" or the count asked for
    background_load: int = 0  # busy processes spinning beside the measurement (harness.background)
    cache: str = "warm"  # "cold": the dataset evicted from the page cache before every epoch
    prefetch_next_epoch: str = "off"  # "on": LoaderConfig.prefetch_next_epoch (the next epoch begun early)
    background_start: str = "off"  # "on": LoaderConfig.background_start (the workers start in the background)
    repeat: int
    epoch: int
    warmup: bool
    window: int = 0
    epochs: int = 1
    batches: int
    tiles: int
    bytes: int
    seconds: float
    batches_per_s: float
    mb_per_s: float
    time_to_first_batch_s: float
    startup_s: float
    shutdown_s: float | None  # None: the generator closed itself on Ctrl-C, no orderly close() to time
    wait_ms_p50: float
    wait_ms_p95: float
    wait_ms_p99: float
    wait_ms_max: float
    wait_ms: tuple[float, ...]
    consumer_utilization: float
    pss_peak_mb: float
    uss_peak_mb: float
    shm_peak_mb: float
    cpu_s_per_batch: float
    memory_trace: tuple[tuple[float, float, float, float], ...]
    leaked_shm: int
    leftover_processes: int
    checksum: str
    # -- beyond the schema (see the module docstring) --
    checksum_full: str | None = None
    sampler_cpu_s: float = 0.0
    orphans_after_exit: int = 0
    leaked_shm_after_exit: int = 0
    stage_ms_per_batch: dict[str, float] | None = None
    # The main process's own share of stage_ms_per_batch (wall time in the loop's process); the rest is the workers'.
    stage_main_ms_per_batch: dict[str, float] | None = None
    images: tuple[int, ...] = ()
    checksums: tuple[str, ...] = ()
    # Cores' worth of CPU that other processes of the machine used during the measurement
    # (/proc/stat, minus this measurement's own process tree and the runner): a loaded machine.
    other_cores: float | None = None
    # One core's copy bandwidth measured in the same process just before its windows (R's GB/s, paired).
    memcpy_gb_per_s: float | None = None
    # tifffile's decode threads per decoding process or thread, as the generator resolved them.
    decode_threads_used: int | None = None
    # cache "cold": the largest share of the dataset's pages still cached just after an eviction.
    cache_resident_before: float | None = None
    # The warm-up window only: seconds from the make_generator call to the first batch, whatever the
    # generator did in between (a pool started in the background, LoaderConfig.background_start).
    first_batch_since_start_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One cell of ``ipcbench faults``: a scenario played against a strategy, judged from outside."""

    schema_version: int
    scenario: str
    strategy: str
    start_method: str
    clean: bool
    reason: str
    time_to_error_s: float | None
    shutdown_s: float | None
    error_type: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class SoakRecord:
    """One strategy's soak: create / a few batches / break / close, many times, and what stayed."""

    schema_version: int
    strategy: str
    start_method: str
    cycles: int
    warmup: int
    batches_per_cycle: int
    seconds: float
    start: dict[str, float]
    warm: dict[str, float]
    end: dict[str, float]
    growth: dict[str, float]  # end - warm (fds, /dev/shm: the worst cycle - warm), judged against bounds
    passed: bool
    failures: list[str]
