"""Where the time goes: cumulative seconds per stage, kept in every process of a generator.

The stages of getting one processed image into a batch:

- ``compute``: the per-image work (decode, mask, tiles), wherever it runs;
- ``serialize``: turning a result into bytes and back (pickling: ``queue``, ``torch``);
- ``transfer``: moving the pixels: a worker writing them into its channel (for
  ``pipe`` that includes waiting for room in a full pipe), the main process
  reading them out;
- ``assemble``: the main process copying tiles into batches;
- ``wait``: the main process blocked until a result is there.

Main-side stages are wall time in the loop's process. Worker-side stages are summed
over workers: workers run in parallel with each other and with the main process,
so their sum can exceed the wall time. A worker sends its cumulative totals with
each result (five floats), so the main process knows them up to that worker's
latest message. ``BatchGenerator.stage_times()`` returns both, summed per stage;
the harness turns epoch deltas into milliseconds per batch.

Where a stage runs out of reach of the timers (``torch`` unpickles inside its own
iterator, so the main side's ``serialize`` and ``transfer`` land in ``wait``),
the strategy's docstring says so.

Tracing (``LoaderConfig.trace_dir``): besides the totals, every timed interval can be
written down, to draw what each process did and when (``ipcbench timeline``). A clock
made by :func:`stage_clock` with a ``trace_dir`` is a :class:`TracingStageClock`; without
one it is a plain :class:`StageClock`, so a loader that does not trace pays nothing.
Each traced process (or thread) appends to its own file, ``<trace_dir>/<role>-<pid>.jsonl``,
opened on its first line, one JSON object a line, each line one ``os.write`` on a file
opened with ``O_APPEND`` (nothing is buffered: a killed worker loses at most the line it
was writing)::

    {"stage": "compute", "start": 8123.004211, "end": 8123.061532}   an interval
    {"event": "batch", "at": 8123.062001}                             a moment

Times are ``time.perf_counter()`` readings in seconds: ``CLOCK_MONOTONIC`` on Linux, one
clock for every process of the machine, so the files of a generator's processes line up.
Roles: ``main`` (the loop's process: its ``wait``, ``transfer``, ``serialize`` and
``assemble``, and a ``batch`` event each time ``next()`` returns a batch) and
``worker<i>`` (worker process or thread ``i``). The strategies that trace say so with
``BatchGenerator.traces``; the peers (``torch``, ``grain``, ``spdl``, ``spdl_arena``) do
not: their workers run inside another library's loop.
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STAGES = ("compute", "serialize", "transfer", "assemble", "wait")
# The moment the loop receives a batch: ``next()`` returns it (a traced main process's event).
BATCH_EVENT = "batch"
MAIN_ROLE = "main"


class StageClock:
    """Cumulative seconds per stage in one process (or thread); a few hundred ns per reading."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def since(self, stage: str, start: float) -> float:
        """Add the time from ``start`` (a ``perf_counter`` reading) to now to ``stage``; return now."""
        now = time.perf_counter()
        self.seconds[stage] += now - start
        return now

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.since(stage, start)

    def totals(self) -> tuple[float, ...]:
        """The totals in ``STAGES`` order: what a worker sends with its results."""
        return tuple(self.seconds.values())

    def mark(self, event: str) -> None:
        """Note that ``event`` happens now: a tracing clock writes it down; this one keeps no times."""

    def close(self) -> None:
        """Release the trace file, if any (a plain clock holds none)."""


class TraceFile:
    """One process's (or thread's) trace: JSON lines appended to ``<folder>/<role>-<pid>.jsonl``.

    Opened (the folder made if need be) on the first line, by the process that writes it (a forked child writing
    an inherited clock's lines gets a file of its own); one ``os.write`` per line on an
    ``O_APPEND`` descriptor, so lines from two threads never mix and nothing waits in
    a buffer. :meth:`close` (or the process's exit, or the object's collection) closes
    it; lines written after :meth:`close` are dropped.
    """

    def __init__(self, folder: str | os.PathLike[str], role: str) -> None:
        self.folder = Path(folder)
        self.role = role
        self._fd: int | None = None
        self._pid = 0
        self._closed = False
        self._open_lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    @property
    def path(self) -> Path:
        """The file of this process (the one it writes, or would write)."""
        return self.folder / f"{self.role}-{os.getpid()}.jsonl"

    def write(self, line: str) -> None:
        fd = self._fd
        if fd is None or self._pid != os.getpid():
            fd = self._open()
            if fd is None:
                return
        os.write(fd, line.encode())

    def _open(self) -> int | None:
        with self._open_lock:
            if self._closed:
                return None
            if self._fd is None or self._pid != os.getpid():
                self.folder.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                self._pid = os.getpid()
                self._finalizer = weakref.finalize(self, _close_fd, self._fd, self._pid)
            return self._fd

    def close(self) -> None:
        with self._open_lock:
            self._closed = True
            self._fd = None
            if self._finalizer is not None:
                self._finalizer()


def _close_fd(fd: int, pid: int) -> None:
    if os.getpid() == pid:  # a forked child's copy is its own to drop at exit
        os.close(fd)


class TracingStageClock(StageClock):
    """A :class:`StageClock` that also writes every interval it times, and every :meth:`mark`, to a trace file."""

    __slots__ = ("trace",)

    def __init__(self, trace: TraceFile) -> None:
        super().__init__()
        self.trace = trace

    def since(self, stage: str, start: float) -> float:
        now = super().since(stage, start)
        self.trace.write(f'{{"stage":"{stage}","start":{start!r},"end":{now!r}}}\n')
        return now

    def mark(self, event: str) -> None:
        self.trace.write(f'{{"event":"{event}","at":{time.perf_counter()!r}}}\n')

    def close(self) -> None:
        self.trace.close()


def stage_clock(trace_dir: str | None, role: str) -> StageClock:
    """The clock of one process or thread: a :class:`TracingStageClock` writing to ``trace_dir``, if set.

    ``role`` names the file: ``main``, or ``worker<i>`` for worker ``i`` (:func:`worker_role`).
    """
    return StageClock() if trace_dir is None else TracingStageClock(TraceFile(trace_dir, role))


def worker_role(worker_id: int) -> str:
    """The trace role of worker process or thread ``worker_id``."""
    return f"worker{worker_id}"


def read_trace(trace_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every line of every trace file in ``trace_dir``, each with its file's ``role`` and ``pid`` added.

    A line that is not whole (the last one of a process killed while writing it) is
    dropped; files are read in name order, lines in the order they were written.
    """
    records = []
    for path in sorted(Path(trace_dir).glob("*-*.jsonl")):
        role, _, pid = path.stem.rpartition("-")
        if not pid.isdigit():
            continue  # not a trace file
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append({"role": role, "pid": int(pid), **record})
    return records


def summed(main: StageClock, workers: Iterable[tuple[float, ...]]) -> dict[str, float]:
    """The main process's totals plus every worker's, per stage."""
    out = dict(main.seconds)
    for totals in workers:
        for stage, seconds in zip(STAGES, totals, strict=False):
            out[stage] += seconds
    return out


def time_queue_pickling(clock: StageClock, protocol: int | None = None) -> None:
    """Count this process's ``multiprocessing.Queue`` pickling as ``serialize`` in ``clock``.

    ``Queue.put`` only appends to a buffer; a feeder thread pickles the object later
    with ``multiprocessing.queues._ForkingPickler.dumps``. Rebinding that name, in a
    worker process only, is the one way to time it without pickling twice, and the
    one place to choose the pickle ``protocol`` (None: multiprocessing's default).
    """
    from multiprocessing.reduction import ForkingPickler

    from .internals import set_queue_pickler

    chosen = protocol

    class _TimedPickler(ForkingPickler):
        @classmethod
        def dumps(cls, obj: Any, protocol: int | None = None) -> memoryview:
            with clock.timing("serialize"):
                return ForkingPickler.dumps(obj, protocol if chosen is None else chosen)

    set_queue_pickler(_TimedPickler)
