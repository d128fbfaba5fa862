"""Measuring a process tree while it works: memory, CPU, /dev/shm, waits, checksums.

What the measurement process (:mod:`harness.child`) reads, and where from::

    PSS, USS    /proc/PID/smaps_rollup of the root and every descendant, summed
    CPU         /proc/PID/stat utime + stime, last value seen per process, summed
    tree        /proc/PID/task/TID/children, walked from the root
    /dev/shm    statvfs (bytes in use) and a listing (segments named ipcbench_* / psm_*)

Why these sources: ``smaps_rollup`` is the kernel's one-line-per-field sum of
``smaps`` (what psutil's ``memory_full_info()`` reads too, falling back to the full
``smaps`` only where the rollup is missing); reading it costs ~0.7 ms for a process
with numpy loaded, versus several ms for ``smaps``. The ``children`` files list a
process's children directly (~0.2 ms for a whole tree), where psutil's
``children(recursive=True)`` reads the ``stat`` of every process on the machine
(~2.3 ms here). Without ``smaps_rollup`` the tree falls back to psutil.

RSS counts a shared page once per process that maps it; PSS divides it among them,
so the PSS of a tree sums to the memory the tree really holds (docs/design.md section 7).
Shared-memory pages that a process maps count in its PSS too; ``/dev/shm`` usage is
reported separately because a segment nobody maps still holds memory.

CPU of processes that exit: the last value seen of every process (keyed by pid and
start time, so a recycled pid is a new process) stays in the sum, so a worker that
exits between two samples still counts up to its last sample.

:class:`Sampler` is a daemon thread that samples the tree every ``interval_s`` and
measures its own CPU time, so its cost can be subtracted and reported
(``env.json`` ``sampler.overhead_fraction``).

Checksums (see :class:`SampleChecksum`): a measured epoch hashes a small fixed
sample of each batch (shapes, dtypes, the first two rows of the first tile and the
last two rows of the last tile: ~2 KB, a few microseconds), because hashing every
byte (~1 ms per 4 MiB batch) would distort the throughput it sits next to. The
warm-up epoch, which is not used for timing, also hashes every byte
(:class:`FullChecksum`).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

SHM_DIR = "/dev/shm"
# Segments of this project (strategies.constants.SHM_PREFIX) and of
# multiprocessing.shared_memory's default names.
SHM_PREFIXES = ("ipcbench_", "psm_")
MB = 1e6  # results use decimal megabytes

_HAS_ROLLUP = os.path.exists(f"/proc/{os.getpid()}/smaps_rollup")
_HAS_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class TreeSample:
    """One reading of a process tree. ``t_s`` is on the clock the sampler was given."""

    t_s: float
    pss_bytes: int
    uss_bytes: int
    shm_bytes: int  # /dev/shm in use, machine-wide, absolute
    cpu_s: float  # cumulative user+sys of every process of the tree seen so far
    processes: int


@dataclass(frozen=True, slots=True)
class WaitStats:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


# -- /proc readers -------------------------------------------------------------
def _read_rollup(pid: int) -> tuple[int, int]:
    """(PSS, USS) bytes of one process from smaps_rollup (USS = Private_* lines)."""
    pss = uss = 0
    with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
        for line in fh:
            if line.startswith(b"Pss:"):
                pss = int(line.split()[1]) * 1024
            elif line.startswith(b"Private_"):
                uss += int(line.split()[1]) * 1024
    return pss, uss


def read_stat(pid: int) -> tuple[str, int, float, int]:
    """(state, pgrp, user+sys CPU seconds, start time in ticks) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        raw = fh.read()
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    state, pgrp = fields[0].decode(), int(fields[2])
    cpu_s = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return state, pgrp, cpu_s, int(fields[19])


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot, every core together (/proc/stat).

    Busy is user, nice, system, irq, softirq and steal (a VM's neighbours taking the
    host's cores count as busy: they are time this machine did not get); idle and
    iowait are not. With the CPU of a measurement's own process tree taken out, the
    rest is what other processes used: ``other_cores``.
    """
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's children file); [] if it is gone."""
    if not _HAS_CHILDREN:
        import psutil

        try:
            return [p.pid for p in psutil.Process(pid).children()]
        except psutil.Error:
            return []
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                found.extend(int(x) for x in fh.read().split())
        except OSError:  # the thread exited meanwhile
            continue
    return found


def descendants_of(pid: int) -> list[int]:
    """Every descendant of ``pid``, parents before their children."""
    found: list[int] = []
    queue = [pid]
    while queue:
        children = children_of(queue.pop(0))
        found.extend(children)
        queue.extend(children)
    return found


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has freed everything)."""
    try:
        state, *_ = read_stat(pid)
    except (OSError, ValueError, IndexError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


# multiprocessing's helper processes: started on first use, alive until the main
# process exits, shared by every pool. Not workers, so never "left over" by close().
_INFRASTRUCTURE = (
    "multiprocessing.forkserver",
    "multiprocessing.resource_tracker",
    "multiprocessing.semaphore_tracker",
)


def is_infrastructure(pid: int) -> bool:
    text = cmdline(pid)
    return any(marker in text for marker in _INFRASTRUCTURE)


# -- the tree ------------------------------------------------------------------
class ProcessTree:
    """Sums memory and CPU over a root process and all its descendants."""

    def __init__(self, root_pid: int | None = None) -> None:
        self.root_pid = os.getpid() if root_pid is None else root_pid
        # (pid, start ticks) -> last CPU seconds seen: exited processes stay counted.
        self._last_cpu: dict[tuple[int, int], float] = {}
        self._lock = threading.Lock()

    def pids(self) -> list[int]:
        return [self.root_pid, *descendants_of(self.root_pid)]

    def sample(self, clock: Callable[[], float] = time.perf_counter) -> TreeSample:
        """Read every process of the tree now. Thread-safe."""
        with self._lock:
            pss = uss = processes = 0
            for pid in self.pids():
                try:
                    state, _, cpu_s, start = read_stat(pid)
                    self._last_cpu[(pid, start)] = cpu_s  # a zombie's stat holds its final CPU times
                    if state in ("Z", "X"):
                        continue
                    p, u = _read_rollup(pid) if _HAS_ROLLUP else _psutil_memory(pid)
                except (OSError, ValueError, IndexError):  # exited between listing and reading
                    continue
                pss, uss, processes = pss + p, uss + u, processes + 1
            return TreeSample(clock(), pss, uss, shm_used_bytes(), sum(self._last_cpu.values()), processes)

    def seen_pids(self) -> set[int]:
        with self._lock:
            return {pid for pid, _ in self._last_cpu}


def _psutil_memory(pid: int) -> tuple[int, int]:
    import psutil

    try:
        info = psutil.Process(pid).memory_full_info()
    except psutil.NoSuchProcess as exc:
        raise ProcessLookupError(pid) from exc
    return int(info.pss), int(info.uss)


# -- the sampler thread --------------------------------------------------------
# The sampler's CPU time may not exceed this fraction of one core while epochs are
# timed. Reading smaps_rollup walks a process's page tables under its mmap lock:
# ~1 ms for the main process of baseline, ~3-4 ms for a process mapping ~100 MB of
# shared-memory slots, ~10 ms for main + 2 workers of shm; every 0.2 s that would be
# 5% of a core. It costs more than its CPU: the walk holds off the walked process's
# mmap/munmap (every fresh batch array). Measured here (paired epochs, sampler on vs
# off, baseline): 1.3% of a core cost about 2% of batches/s; hence 0.5%, under 1%.
# The sampler waits longer after an expensive sample instead.
MAX_CPU_FRACTION = 0.005
SAMPLER_JOIN_S = 5.0  # stop() waits at most this for a sample in progress (a daemon thread)
# Between samples the thread reads /dev/shm alone this often (one statvfs, ~20 us with
# the wake-up: 0.1% of a core, inside the budget above), so that short-lived segments
# (torch's per-image tensors, freed within an epoch) reach the next sample's shm_bytes.
SHM_POLL_S = 0.02


def next_wait_s(interval_s: float, sample_cpu_s: float, max_cpu_fraction: float = MAX_CPU_FRACTION) -> float:
    """How long to wait after a sample that cost ``sample_cpu_s`` to keep within the CPU budget."""
    return max(interval_s, sample_cpu_s / max_cpu_fraction - sample_cpu_s)


class Sampler:
    """Samples a :class:`ProcessTree` on a daemon thread, every ``interval_s`` or less often.

    The wait after each sample is :func:`next_wait_s`: at least ``interval_s``, and
    long enough that the thread's CPU time stays under ``max_cpu_fraction`` of one
    core. ``interval_s = 0`` disables the thread: only :meth:`sample_now` samples.
    ``cpu_s`` is the thread's own CPU time (what sampling costs this process).

    While it waits, the thread reads /dev/shm every ``SHM_POLL_S``; a sample's
    ``shm_bytes`` is the most seen since the previous sample (or now, if more).
    """

    def __init__(
        self,
        tree: ProcessTree,
        interval_s: float,
        clock: Callable[[], float] = time.perf_counter,
        max_cpu_fraction: float = MAX_CPU_FRACTION,
    ) -> None:
        if interval_s < 0:
            raise ValueError(f"{interval_s=} must be >= 0")
        if not 0 < max_cpu_fraction <= 1:
            raise ValueError(f"{max_cpu_fraction=} must be in (0, 1]")
        self.tree = tree
        self.interval_s = interval_s
        self.max_cpu_fraction = max_cpu_fraction
        self.clock = clock
        self.samples: list[TreeSample] = []
        self._cpu_s = 0.0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._shm_lock = threading.Lock()
        self._shm_max = 0  # the most /dev/shm in use seen by polls since the last sample

    @property
    def cpu_s(self) -> float:
        return self._cpu_s

    def sample_now(self) -> TreeSample:
        sample = self.tree.sample(self.clock)
        with self._shm_lock:
            polled, self._shm_max = self._shm_max, 0
        if polled > sample.shm_bytes:
            sample = replace(sample, shm_bytes=polled)
        self.samples.append(sample)  # list.append is atomic under the GIL
        return sample

    def _poll_shm(self) -> None:
        used = shm_used_bytes()
        with self._shm_lock:
            self._shm_max = max(self._shm_max, used)

    def _wait(self, seconds: float) -> None:
        """Wait ``seconds`` (or until woken), reading /dev/shm every ``SHM_POLL_S``."""
        deadline = time.monotonic() + seconds
        while not self._wake.is_set() and (left := deadline - time.monotonic()) > 0:
            if self._wake.wait(min(left, SHM_POLL_S)):
                break
            self._poll_shm()

    def configure(self, *, interval_s: float, max_cpu_fraction: float) -> None:
        """Change the pace; the thread (if running) wakes, samples, and goes on at the new pace."""
        if interval_s <= 0 or not 0 < max_cpu_fraction <= 1:
            raise ValueError(f"{interval_s=} must be > 0 and {max_cpu_fraction=} in (0, 1]")
        self.interval_s, self.max_cpu_fraction = interval_s, max_cpu_fraction
        self._wake.set()

    def _run(self) -> None:
        wait_s = self.interval_s
        while True:
            self._wait(wait_s)
            self._wake.clear()
            if self._stopping:
                return
            self.sample_now()
            cpu_s = time.thread_time()
            wait_s = next_wait_s(self.interval_s, cpu_s - self._cpu_s, self.max_cpu_fraction)
            self._cpu_s = cpu_s

    def start(self) -> Sampler:
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ipcbench-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=SAMPLER_JOIN_S)
            self._thread = None

    def between(self, t0: float, t1: float) -> list[TreeSample]:
        return [s for s in list(self.samples) if t0 <= s.t_s <= t1]

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class MemoryStats:
    pss_peak_mb: float
    uss_peak_mb: float
    shm_peak_mb: float
    trace: tuple[tuple[float, float, float, float], ...]  # (t_s, pss_mb, uss_mb, shm_mb)


def memory_stats(samples: Sequence[TreeSample], t0: float, shm_base_bytes: int) -> MemoryStats:
    """Peaks and trace of ``samples`` (times made relative to ``t0``; shm relative to its base)."""
    if not samples:
        return MemoryStats(0.0, 0.0, 0.0, ())
    trace = tuple(
        (
            round(s.t_s - t0, 4),
            round(s.pss_bytes / MB, 3),
            round(s.uss_bytes / MB, 3),
            round(max(0, s.shm_bytes - shm_base_bytes) / MB, 3),
        )
        for s in samples
    )
    return MemoryStats(
        pss_peak_mb=max(s.pss_bytes for s in samples) / MB,
        uss_peak_mb=max(s.uss_bytes for s in samples) / MB,
        shm_peak_mb=max(0, max(s.shm_bytes for s in samples) - shm_base_bytes) / MB,
        trace=trace,
    )


# -- /dev/shm -------------------------------------------------------------------
def shm_used_bytes(path: str = SHM_DIR) -> int:
    """Bytes in use on the /dev/shm tmpfs (0 where there is none)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def shm_segments(prefixes: Sequence[str] = SHM_PREFIXES, path: str = SHM_DIR) -> set[str]:
    """Names in /dev/shm that look like segments of this project or of multiprocessing."""
    try:
        names = os.listdir(path)
    except OSError:
        return set()
    return {name for name in names if name.startswith(tuple(prefixes))}


def segment_pid(name: str) -> int | None:
    """The creator's pid in an ``ipcbench_<pid>_...`` name; None for names without one (``psm_*``)."""
    if not name.startswith("ipcbench_"):
        return None
    head = name[len("ipcbench_") :].split("_", 1)[0]
    return int(head) if head.isdigit() else None


def leaked_segments(
    before: Iterable[str],
    prefixes: Sequence[str] = SHM_PREFIXES,
    path: str = SHM_DIR,
    pids: Iterable[int] | None = None,
) -> set[str]:
    """Segments present now that were not in ``before``.

    With ``pids``, a segment whose name carries its creator's pid counts only if that
    pid is one of ``pids``: on a shared machine, other runs create segments too.
    Names without a pid (``psm_*``) always count.
    """
    new = shm_segments(prefixes, path) - set(before)
    if pids is None:
        return new
    owners = set(pids)
    return {name for name in new if (pid := segment_pid(name)) is None or pid in owners}


# -- waits -----------------------------------------------------------------------
def wait_stats(waits_ms: Sequence[float]) -> WaitStats:
    """p50/p95/p99/max of the per-batch waits (linear interpolation, numpy's default)."""
    if len(waits_ms) == 0:
        return WaitStats(0.0, 0.0, 0.0, 0.0)
    p50, p95, p99 = np.percentile(np.asarray(waits_ms, dtype=float), [50, 95, 99])
    return WaitStats(float(p50), float(p95), float(p99), float(max(waits_ms)))


# -- stages ------------------------------------------------------------------------
StageTimes = Callable[[], dict[str, float]]


def stage_timer(gen: object) -> StageTimes | None:
    """The generator's ``stage_times()`` (cumulative seconds by stage), or None for a strategy without one."""
    stage_times = getattr(gen, "stage_times", None)
    return stage_times if callable(stage_times) else None


def main_stage_timer(gen: object) -> StageTimes | None:
    """The generator's ``main_stage_times()`` (the main process's own share), or None where it has none."""
    main_stage_times = getattr(gen, "main_stage_times", None)
    return main_stage_times if callable(main_stage_times) else None


def stage_ms_per_batch(before: dict[str, float], after: dict[str, float], batches: int) -> dict[str, float] | None:
    """Milliseconds per batch each stage took between two ``stage_times()`` readings (None without batches).

    The readings are cumulative, so an epoch's share is their difference; a stage
    first reported in ``after`` started from zero.
    """
    if batches <= 0:
        return None
    return {stage: (seconds - before.get(stage, 0.0)) * 1000.0 / batches for stage, seconds in after.items()}


# -- checksums ---------------------------------------------------------------------
SAMPLE_ROWS = 2  # rows of the first and last tile that the per-batch sample hashes


class SampleChecksum:
    """Hash of a batch sequence from a small fixed sample of each batch (microseconds).

    Per batch: the shapes and dtypes of data and masks, rows ``[:2]`` of the first
    tile and rows ``[-2:]`` of the last tile, of both data (every channel) and masks.
    It catches a wrong order, a missing or extra batch, a wrong tile count and most
    wrong tiles; it cannot see a change in the middle of a tile. The warm-up epoch's
    :class:`FullChecksum` covers every byte.
    """

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)

    def update(self, data: np.ndarray, masks: np.ndarray) -> None:
        h = self._hash
        h.update(f"{data.shape}{data.dtype.str}{masks.shape}{masks.dtype.str}".encode())
        if len(data):
            h.update(data[0, :, :SAMPLE_ROWS].tobytes())
            h.update(data[-1, :, -SAMPLE_ROWS:].tobytes())
            h.update(masks[0, :SAMPLE_ROWS].tobytes())
            h.update(masks[-1, -SAMPLE_ROWS:].tobytes())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class FullChecksum:
    """Hash of every byte of every batch, in order (about 1 ms per 4 MiB)."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)

    def update(self, data: np.ndarray, masks: np.ndarray) -> None:
        for array in (data, masks):
            self._hash.update(f"{array.shape}{array.dtype.str}".encode())
            self._hash.update(memoryview(np.ascontiguousarray(array)).cast("B"))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
