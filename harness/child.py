"""The measurement process: one strategy, one config, one fresh Python.

``python -m harness.child SPEC_JSON`` (started by :mod:`harness.runner`, never by
hand) does, in order::

    sampler thread on          (memory of this process and all its descendants)
    make_generator(...)        timed: startup_s                   -> event "ready"
    window 0 (warm-up)         whole epochs until the window lasts min_window_s (and,
                               under background_start, until the workers are up: the
                               measured windows are theirs, never the main process's);
                               the first epoch fully checksummed; memory sampled
                               densely (every 50 ms)              -> event "window"
    windows 1..W (measured)    whole epochs until each lasts min_window_s (a calibrated
                               window, as pyperf calibrates its loops: never a stretched
                               timer); memory sampled at least SAMPLES_PER_WINDOW times
                               a window, and just before and after it  -> event "window" each
    close()                    timed until every worker is gone: shutdown_s;
                               then leftover workers and new /dev/shm segments
                                                                  -> event "closed"

A window's figures are its own: batches/s over all its batches and its wall time
(the epoch boundaries inside it included, as a training loop pays them), waits over
all its ``next()`` calls, memory over its samples, one checksum per epoch. Events are
JSON lines written to the file descriptor ``spec.event_fd`` (a pipe to the runner;
stdout stays free for whatever libraries print). Each window event also lists the
dataset indices of its epochs' images (``images``, from the generator's own plan).

With ``spec.gate_fd`` (``ipcbench run --distributed``: harness.distributed) the
process stops before each window: it sends a "gate" event and waits for one byte on
that descriptor, ``GATE_GO`` to measure the window, anything else (or the end of the
pipe) to stop with an error. The rank that started it answers after a collective
with the other ranks, so every rank measures the same window (a fixed number of
epochs there, ``epochs_per_window``, so that the ranks' windows match). An exception
becomes an "error" event with its traceback and exit status 1. SIGINT (the runner
forwards Ctrl-C) stops the window in progress; the generator is still closed and
measured, "closed" and then "interrupted" are sent, and the exit status is 130.

With ``spec.cache == "cold"`` the dataset's files are evicted from the page cache
before every epoch (:mod:`harness.pagecache`), and how much of them was still cached
just after is recorded (``cache_resident_before``, the window's largest share); an
eviction between two epochs of a window is taken out of the window's time.

The timed loop (:func:`time_epoch`) does what a training loop does and nothing
else: ``next()``, then an optional ``sleep(step_ms)`` standing in for the GPU step.
Per batch it also adds a few microseconds of bookkeeping (lengths, a sampled
checksum: see :class:`harness.measure.SampleChecksum`); the warm-up window hashes
every byte of its first epoch as well, which is why it is flagged and never aggregated.
A generator with ``stage_times()`` (cumulative seconds by stage) is read just before
the window's first ``iter()`` and just after its last batch; the difference over the
window's batches is its ``stage_ms_per_batch``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .measure import (
    MAX_CPU_FRACTION,
    MB,
    FullChecksum,
    ProcessTree,
    SampleChecksum,
    Sampler,
    TreeSample,
    children_of,
    descendants_of,
    is_alive,
    is_infrastructure,
    leaked_segments,
    machine_busy_s,
    main_stage_timer,
    memory_stats,
    shm_segments,
    shm_used_bytes,
    stage_ms_per_batch,
    stage_timer,
    wait_stats,
)
from .memcpy import measure_memcpy
from .pagecache import dataset_files, evict, resident_fraction

# How long after close() returns the workers may take to disappear before they
# count as left over. close() joins them, so this only bounds a strategy that does not.
LEFTOVER_GRACE_S = 2.0
# The warm-up epoch is not timed: the sampler runs dense there (a detailed memory
# trace of one epoch per process), and at its CPU-capped pace everywhere else.
WARMUP_SAMPLER_INTERVAL_S = 0.05
WARMUP_SAMPLER_MAX_CPU_FRACTION = 0.25
# The process's own memcpy measurement, before its first window (64 MiB each: ~0.1 s in all).
PROCESS_MEMCPY_REPEATS = 9
# In measured windows the sampler takes at least this many samples of the shortest window.
SAMPLES_PER_WINDOW = 5
WINDOW_SAMPLER_MAX_CPU_FRACTION = 0.04
GONE_POLL_S = 0.002  # shutdown_s resolution while waiting for workers to vanish
GATE_GO = b"g"  # on spec.gate_fd: measure the next epoch


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSpec:
    """What one measurement process measures. Crosses the process boundary as JSON."""

    strategy: str
    dataset: str
    loader: dict[str, Any] = field(default_factory=dict)  # LoaderConfig fields
    windows: int = 2  # measured windows, after one warm-up window
    min_window_s: float = 0.0  # each window: whole epochs until it lasts this long (0: one epoch)
    epochs_per_window: int = 0  # > 0: exactly this many epochs a window instead (the ranks of --distributed)
    step_ms: float = 0.0
    cache: str = "warm"  # "cold": evict the dataset's files from the page cache before every epoch
    sampler_interval_s: float = 0.2
    event_fd: int = -1  # filled in by the launcher
    gate_fd: int = -1  # >= 0: wait for GATE_GO on it before each window (see the module docstring)

    def __post_init__(self) -> None:
        if self.windows < 1:
            raise ValueError(f"ChildSpec.windows={self.windows} must be >= 1")
        if not self.min_window_s >= 0 or self.epochs_per_window < 0:
            raise ValueError(f"ChildSpec: {self.min_window_s=} and {self.epochs_per_window=} must be >= 0")
        if self.step_ms < 0:
            raise ValueError(f"ChildSpec.step_ms={self.step_ms} must be >= 0")
        if self.cache not in ("warm", "cold"):
            raise ValueError(f"ChildSpec.cache={self.cache!r} must be 'warm' or 'cold'")
        if self.sampler_interval_s < 0:
            raise ValueError(f"ChildSpec.sampler_interval_s={self.sampler_interval_s} must be >= 0")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ChildSpec:
        return cls(**json.loads(text))


@dataclass(frozen=True, slots=True)
class EpochTiming:
    """What the timed loop saw in one epoch (times on the loop's clock, in seconds)."""

    batches: int
    tiles: int
    bytes: int
    t_start: float  # just before iter()
    t_end: float  # just after the StopIteration
    time_to_first_batch_s: float
    waits_ms: tuple[float, ...]
    checksum: str
    checksum_full: str | None

    @property
    def seconds(self) -> float:
        return self.t_end - self.t_start


@dataclass(frozen=True, slots=True)
class WindowEdge:
    """Where a window ended: the next window of a generator that works between windows starts here."""

    t_end: float  # the last epoch's end (perf_counter)
    sample: TreeSample  # the tree sample taken just after it
    busy_s: float  # machine_busy_s() then
    sampler_cpu_s: float  # the sampler thread's CPU then
    stages: dict[str, float] | None  # the generator's stage totals then
    main_stages: dict[str, float] | None


def time_epoch(
    gen: Iterable[Any],
    *,
    step_ms: float = 0.0,
    full_checksum: bool = False,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> EpochTiming:
    """Run one epoch of ``gen`` as a training loop would, timing every ``next()``."""
    step_s = step_ms / 1000.0
    sample = SampleChecksum()
    full = FullChecksum() if full_checksum else None
    waits_ms: list[float] = []
    batches = tiles = nbytes = 0
    first: float | None = None
    t_start = clock()
    iterator = iter(gen)
    while True:
        t0 = clock()
        try:
            data, masks = next(iterator)
        except StopIteration:
            break
        t1 = clock()
        waits_ms.append((t1 - t0) * 1000.0)
        if first is None:
            first = t1 - t_start
        if not hasattr(data, "nbytes"):  # output="torch": tensors; views, no copy
            data, masks = data.numpy(), masks.numpy()
        batches += 1
        tiles += len(data)
        nbytes += data.nbytes + masks.nbytes
        sample.update(data, masks)
        if full is not None:
            full.update(data, masks)
        if step_s:
            sleep(step_s)
    t_end = clock()
    return EpochTiming(
        batches,
        tiles,
        nbytes,
        t_start,
        t_end,
        t_end - t_start if first is None else first,
        tuple(waits_ms),
        sample.hexdigest(),
        None if full is None else full.hexdigest(),
    )


def window_record(
    window: int,
    first_epoch: int,
    timings: Sequence[EpochTiming],
    *,
    step_ms: float,
    samples: Sequence[TreeSample],
    shm_base: int,
    cpu_s: float,
    stages: dict[str, float] | None = None,
    paused_s: float = 0.0,
    lead_in_s: float = 0.0,
) -> dict[str, Any]:
    """The measured fields of one window's samples.jsonl line (the runner adds identity and shutdown).

    ``timings``: the window's epochs, back to back (the gaps between them, where a new
    epoch starts, are inside the window: a training loop pays them too). ``samples``:
    the tree samples of the window, from the one taken just before the first ``iter()``
    to the one taken just after the last batch. ``stages``: ms per batch by stage
    (:func:`harness.measure.stage_ms_per_batch`), None for a strategy without stage timers.
    ``paused_s``: time between the window's epochs that belongs to the instrument (evicting
    the page cache before a cold epoch), taken out of the window's time. ``lead_in_s``:
    time before the first epoch that belongs to the window (the gap since the previous
    window, for a generator that begins the next epoch early: its workers worked in it).
    """
    first, last = timings[0], timings[-1]
    seconds = max(last.t_end - first.t_start - paused_s + lead_in_s, 1e-12)
    batches = sum(t.batches for t in timings)
    nbytes = sum(t.bytes for t in timings)
    waits_ms = [w for t in timings for w in t.waits_ms]
    memory = memory_stats(samples, first.t_start, shm_base)
    waits = wait_stats(waits_ms)
    return {
        "epoch": first_epoch,
        "window": window,
        "epochs": len(timings),
        "warmup": window == 0,
        "batches": batches,
        "tiles": sum(t.tiles for t in timings),
        "bytes": nbytes,
        "seconds": seconds,
        "batches_per_s": batches / seconds,
        "mb_per_s": nbytes / MB / seconds,
        "time_to_first_batch_s": first.time_to_first_batch_s,
        "wait_ms_p50": waits.p50_ms,
        "wait_ms_p95": waits.p95_ms,
        "wait_ms_p99": waits.p99_ms,
        "wait_ms_max": waits.max_ms,
        "wait_ms": [round(w, 4) for w in waits_ms],
        "consumer_utilization": batches * step_ms / 1000.0 / seconds,
        "pss_peak_mb": memory.pss_peak_mb,
        "uss_peak_mb": memory.uss_peak_mb,
        "shm_peak_mb": memory.shm_peak_mb,
        "cpu_s_per_batch": cpu_s / batches if batches else 0.0,
        "memory_trace": [list(row) for row in memory.trace],
        "stage_ms_per_batch": stages,
        "checksum": first.checksum,
        "checksums": [t.checksum for t in timings],
        "checksum_full": first.checksum_full,
    }


def window_done(timings: Sequence[EpochTiming], spec: ChildSpec) -> bool:
    """Whether the epochs so far make a whole window: a fixed count, or enough time."""
    if spec.epochs_per_window:
        return len(timings) >= spec.epochs_per_window
    return timings[-1].t_end - timings[0].t_start >= spec.min_window_s


class Events:
    """Writes one JSON object per line to the runner's pipe.

    SIGINT is blocked during a write: a KeyboardInterrupt between two partial writes
    of a long line would leave half a line for the next event to be glued to.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def emit(self, event: str, **fields: Any) -> None:
        if self._fd < 0:
            return
        view = memoryview((json.dumps({"event": event, **fields}) + "\n").encode())
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker_pids(gen: Any) -> list[int]:
    """The generator's worker processes, as far as it knows them now (none for a single-process strategy)."""
    return list(getattr(gen, "worker_pids", lambda: [])())


def starting(gen: Any, config: Any) -> bool:
    """Whether the generator's workers are still starting in the background (``LoaderConfig.background_start``)."""
    return bool(config.background_start) and not _worker_pids(gen)


def _alive(pids: Iterable[int]) -> list[int]:
    return [p for p in pids if is_alive(p)]


def close_and_check(
    gen: Any,
    worker_pids: Iterable[int],
    shm_before: set[str],
    tree_pids: Iterable[int] = (),
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """close() timed until every worker is gone; then what was left behind.

    ``tree_pids``: every process this measurement has had (segments named after
    another pid belong to another run on the machine). ``shutdown_s`` is None when
    the generator had already closed itself (an exception or Ctrl-C inside
    ``next()``): that shutdown was not the one being measured.
    """
    me = os.getpid()
    already_closed = bool(getattr(gen, "closed", False))
    infrastructure = {p for p in children_of(me) if is_infrastructure(p)}
    watched = set(worker_pids) | {p for p in descendants_of(me) if p not in infrastructure}
    t0 = clock()
    gen.close()
    deadline = t0 + LEFTOVER_GRACE_S
    while _alive(watched) and clock() < deadline:
        time.sleep(GONE_POLL_S)
    shutdown_s = clock() - t0
    # Also anything started since (a respawned worker), outside multiprocessing's helpers.
    later = {p for p in descendants_of(me) if p not in infrastructure}
    leftover = _alive(watched | later)
    leaked = sorted(leaked_segments(shm_before, pids={me, *worker_pids, *tree_pids}))
    return {
        "shutdown_s": None if already_closed else shutdown_s,
        "leftover_processes": len(leftover),
        "leftover_pids": leftover,
        "leaked_shm": len(leaked),
        "leaked_names": leaked,
    }


_WARMUP_PACE = {"interval_s": WARMUP_SAMPLER_INTERVAL_S, "max_cpu_fraction": WARMUP_SAMPLER_MAX_CPU_FRACTION}


def sampler_pace(spec: ChildSpec) -> dict[str, float]:
    """The memory sampler's pace in measured windows: at least ``SAMPLES_PER_WINDOW`` samples in the shortest.

    A sample of a process tree costs ~3 ms of CPU here (smaps_rollup of every process),
    so that many samples in a 0.5 s window take up to ``WINDOW_SAMPLER_MAX_CPU_FRACTION``
    of one core; it is measured (env.json ``sampler.overhead_fraction``) and its CPU is
    taken out of ``cpu_s_per_batch``.
    """
    if spec.sampler_interval_s == 0:
        return {"interval_s": 0.0, "max_cpu_fraction": MAX_CPU_FRACTION}
    if spec.min_window_s > 0:
        interval = min(spec.sampler_interval_s, spec.min_window_s / SAMPLES_PER_WINDOW)
        return {"interval_s": interval, "max_cpu_fraction": WINDOW_SAMPLER_MAX_CPU_FRACTION}
    return {"interval_s": spec.sampler_interval_s, "max_cpu_fraction": MAX_CPU_FRACTION}


def measure(spec: ChildSpec, events: Events) -> None:
    """The whole measurement; raises on failure (the caller turns it into an event)."""
    from strategies import LoaderConfig, make_generator

    config = LoaderConfig(**spec.loader)
    shm_before = shm_segments()
    shm_base = shm_used_bytes()
    measured_pace = sampler_pace(spec)
    sampler = Sampler(ProcessTree(), measured_pace["interval_s"], max_cpu_fraction=measured_pace["max_cpu_fraction"])
    sampler.start()
    try:
        # This machine's copy bandwidth now, in this process: R for its windows, paired with them, so that
        # a window's "of R" does not carry the minutes of drift between it and the run's own memcpy rounds.
        # Measured before the generator exists: a pool starting in the background would share the cores.
        memcpy_gb_per_s = measure_memcpy(repeats=PROCESS_MEMCPY_REPEATS).gb_per_s
        t0 = time.perf_counter()
        gen = make_generator(spec.strategy, spec.dataset, config)
        startup_s = time.perf_counter() - t0
        worker_pids = _worker_pids(gen)  # none yet under background_start
        decode_threads = getattr(gen, "decode_threads", None)
        cold_files = dataset_files(spec.dataset) if spec.cache == "cold" else []
        stage_times = stage_timer(gen)  # read just outside each timed epoch: its cost is never timed
        main_times = main_stage_timer(gen)
        events.emit("ready", startup_s=startup_s, batches_per_epoch=len(gen), worker_pids=worker_pids, pid=os.getpid())
        try:
            next_epoch = 0
            # A generator that begins the next epoch early works between two windows too: its
            # windows are contiguous, each from where the previous one ended (time, CPU, stages).
            carried: WindowEdge | None = None
            for window in range(1 + spec.windows):
                if spec.gate_fd >= 0:
                    events.emit("gate", window=window)
                    wait_at_gate(spec.gate_fd, window)
                contiguous = config.prefetch_next_epoch and carried is not None
                dense = window == 0 and spec.sampler_interval_s > 0
                if dense:
                    sampler.configure(**_WARMUP_PACE)
                if contiguous:
                    assert carried is not None
                    before, busy_before, sampler_cpu_before = carried.sample, carried.busy_s, carried.sampler_cpu_s
                    stages_before, main_before, boundary_cpu_s = carried.stages, carried.main_stages, 0.0
                else:
                    main_cpu = time.thread_time()
                    busy_before = machine_busy_s()
                    before = sampler.sample_now()
                    # Reading the tree starts with this process's CPU counter, so nearly all
                    # of this boundary sample's own cost lands inside the window: take it out.
                    boundary_cpu_s = time.thread_time() - main_cpu
                    sampler_cpu_before = sampler.cpu_s
                    stages_before = stage_times() if stage_times is not None else None
                    main_before = main_times() if main_times is not None else None
                first_epoch, images, timings = next_epoch, [], []
                paused_s, resident = 0.0, []
                while not timings or not window_done(timings, spec) or (window == 0 and starting(gen, config)):
                    images += [job.image_index for job in gen.plan_for(config.epoch + next_epoch).jobs]
                    if cold_files:
                        t_evict = time.perf_counter()
                        evict(cold_files)
                        resident.append(resident_fraction(cold_files))
                        if timings:  # between two epochs of the window: not the strategy's time
                            paused_s += time.perf_counter() - t_evict
                    timings.append(time_epoch(gen, step_ms=spec.step_ms, full_checksum=next_epoch == 0))
                    next_epoch += 1
                stages_after = stage_times() if stage_times is not None else None
                main_after = main_times() if main_times is not None else None
                if dense:  # back to the measured pace before anything is timed; its wake-up sample is taken now
                    sampler.configure(**measured_pace)
                after = sampler.sample_now()
                busy_after = machine_busy_s()
                busy = busy_after - busy_before
                sampler_cpu_after = sampler.cpu_s
                sampler_cpu_s = sampler_cpu_after - sampler_cpu_before
                # The sampler thread's CPU is the instrument's, not the strategy's.
                cpu_s = max(0.0, after.cpu_s - before.cpu_s - sampler_cpu_s - boundary_cpu_s)
                stages = None
                main_stages = None
                if stages_before is not None and stages_after is not None:
                    stages = stage_ms_per_batch(stages_before, stages_after, sum(t.batches for t in timings))
                if main_before is not None and main_after is not None:
                    main_stages = stage_ms_per_batch(main_before, main_after, sum(t.batches for t in timings))
                record = window_record(
                    window,
                    first_epoch,
                    timings,
                    step_ms=spec.step_ms,
                    samples=sampler.between(before.t_s, after.t_s),
                    shm_base=shm_base,
                    cpu_s=cpu_s,
                    stages=stages,
                    # Contiguous: the time since the previous window counts, evictions included
                    # (the workers may work meanwhile), as do the previous window's last samples.
                    paused_s=0.0 if contiguous else paused_s,
                    lead_in_s=timings[0].t_start - carried.t_end if contiguous and carried is not None else 0.0,
                )
                if window == 0:
                    # What a user waits from make_generator to the first batch, whatever the generator
                    # does in between (a pool starting in the background works on).
                    record["first_batch_since_start_s"] = timings[0].t_start + timings[0].time_to_first_batch_s - t0
                    worker_pids = worker_pids or _worker_pids(gen)
                carried = WindowEdge(timings[-1].t_end, after, busy_after, sampler_cpu_after, stages_after, main_after)
                # What the rest of the machine used meanwhile, in cores: a loaded machine's figures are suspect.
                other_cores = max(0.0, busy - (after.cpu_s - before.cpu_s)) / record["seconds"]
                events.emit(
                    "window",
                    sampler_cpu_s=sampler_cpu_s,
                    other_cores=other_cores,
                    memcpy_gb_per_s=memcpy_gb_per_s,
                    stage_main_ms_per_batch=main_stages,
                    decode_threads_used=decode_threads,
                    cache_resident_before=max(resident) if resident else None,
                    images=images,
                    **record,
                )
        finally:
            closed = close_and_check(gen, worker_pids, shm_before, sampler.tree.seen_pids())
            events.emit("closed", worker_pids=worker_pids, **closed)
    finally:
        sampler.stop()


def wait_at_gate(fd: int, index: int) -> None:
    """Block until the launcher lets epoch ``index`` start; raise if it says stop or is gone.

    No timeout of its own: the launcher's watchdog bounds this wait like any other
    silence, and a launcher that dies closes the pipe (its end is not inherited).
    """
    answer = os.read(fd, 1)
    if answer != GATE_GO:
        reason = "its launcher is gone" if not answer else "the launcher said stop (another rank failed)"
        raise RuntimeError(f"stopped before epoch {index}: {reason}")


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the runner dies (PR_SET_PDEATHSIG).

    The child runs in its own session, so nothing else would stop a measurement whose
    runner was killed; its workers exit by themselves when it dies (docs/design.md section 8).
    """
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the runner's watchdog is all there is
        return
    if os.getppid() != parent:  # the runner died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m harness.child SPEC_JSON (started by ipcbench run)", file=sys.stderr)
        return 2
    die_with_parent()
    spec = ChildSpec.from_json(argv[0])
    events = Events(spec.event_fd)
    try:
        measure(spec, events)
    except KeyboardInterrupt:
        events.emit("interrupted")
        return 130
    except BaseException as exc:
        events.emit("error", error_type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
