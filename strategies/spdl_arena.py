"""spdl_arena: SPDL's ``iterate_in_subprocess`` with a shared-memory arena (``SharedMemorySegmentPool``).

Message flow::

    main process                                        the one subprocess (persistent)
    ------------                                        -------------------------------
    iterate_in_subprocess(ArenaSource, arena=pool)      start_worker (initializer): ignore SIGINT,
      waits for "initialised"                             watch the parent, arm faults
    _begin_epoch: epoch -> control segment;
      iter(iterable); first next() - START -->      iter(ArenaSource): that epoch's plan
                                                          (make_plan is a pure function of the
                                                          dataset, the config and the epoch index),
                                                          ``workers`` threads compute its images,
                                                          in plan order, into fresh arrays
                                                        SPDL: pickle the ImageResult, its arrays
                                                          copied into the next free segment
    _next_image: next() restores the item       <----   data queue (bounded: workers * prefetch):
      as zero-copy views of the segment                   the small pickle with markers
    BatchGenerator._assemble copies the tiles into batches; _release_image drops the image,
      and SPDL returns the segment to the pool once no view of it is left

What SPDL is asked for, and why:

- ``iterate_in_subprocess(..., buffer_size=workers * prefetch)``: the bounded data
  queue is the window every strategy honours. The re-iterable source is created once
  in the subprocess; each ``iter()`` of the returned iterable is an epoch. SPDL's START
  carries no argument and is sent at the first ``next()`` only (an epoch abandoned
  unread sends none), so the main process writes the epoch's index into the pool's
  control segment and the source reads it at START; every item carries its epoch
  and position, which the main process checks.
- ``arena=ProjectSegmentPool(segment_size, count)``: SPDL's segment pool on this
  project's segments (``strategies.spdl_segments`` says why: the stock pool's
  resource-tracker ``KeyError`` noise, its failure under spawn/forkserver, its
  names). One segment per image, sized for the largest image, ``buffer_size + 3`` of
  them: the queue's units, the one being written, the one being assembled, one spare.
- ``mp_context=start_method``: all three work with the pool's context-bound Condition.

Knobs it cannot honour as the others do: ``workers``. SPDL runs the iterable in ONE
subprocess (``iterate_in_subprocess`` has no pool); ``workers`` is honoured as
threads inside it, each with its own processor (one worker: SPDL's own loop, the
subprocess's main thread, does the work). They run at once only where the
work releases the GIL (tifffile's reads, NumPy's copies); the per-tile Python loop
does not, so more workers add far less here than processes would (as ``threads``).

Who owns each buffer: the threads' arrays are fresh per image; SPDL copies them into a
segment (one copy), the main process reads them as zero-copy views and the assembler
copies the tiles out (a second copy). The zero-copy lifetime rule is SPDL's: a
segment goes back to the pool when the last view into it is garbage; the base class
drops the image after copying its tiles (``_release_image``), so at most one segment
is held by the main process. Batches are fresh arrays: ``zero_copy`` is False.

Errors: the per-image work and the set-up return failures as data
(``spdl_common``): a ``WorkerError`` with the worker's traceback. A set-up failure is
raised by the constructor (it travels in the "Failed to create the iterable" message,
the only channel SPDL has then).

Waiting: SPDL's main-side loop polls its data queue every 0.1 s and asks a
``should_stop`` callable (its ``closed`` event) between polls. We hand it one that is
also true once the close signal fired, the subprocess is gone, or ``timeout`` has
passed since the wait began; SPDL's iterator then ends and ``_next_image`` says
which (``LoaderClosedError``, ``WorkerDiedError``, ``WorkerTimeoutError``). SPDL's own
inactivity timeout is set to none once the subprocess is up: on a timeout SPDL would
shut the subprocess down itself first (join 3 s, SIGTERM, join 10 s, SIGKILL, join
10 s), past any bound on ``close()`` for a stopped process.

Faults, SPDL's raw behaviour (measured, fork, buffer 2, stock segment pool):

- the iterable raises: ``RuntimeError("The worker subprocess quit. Failed to fetch
  the next item: boom")`` after the items before it, the traceback gone; the
  subprocess exits and the iterable is shut down ("Cannot iterate again");
- the subprocess SIGKILLed mid-epoch: ``RuntimeError("The worker subprocess exited
  unexpectedly.")`` 1.1 s later (a 1 s grace for a last message), then shut down;
- the subprocess SIGSTOPped (hung), ``timeout=2``: ``RuntimeError("The worker
  subprocess did not produce any data for 2.00 seconds.")`` only 15.0 s later: SPDL
  first tears the subprocess down itself (join 3 s, SIGTERM, join 10 s, SIGKILL),
  logging "Terminating the worker process." and "Killing the worker process.";
- the stock pool under forkserver or spawn: the constructor raises "A SemLock
  created in a fork context is being shared with a process in a spawn context";
- at exit, with the stock pool: one resource-tracker ``KeyError`` traceback per
  segment on stderr, plus SPDL's warning "segments still had live zero-copy views
  at close()" when an item is still referenced.

Here a death is found within the 0.1 s poll, a hang is ``WorkerTimeoutError`` at
``timeout`` and ``close()`` then takes about ``TERMINATE_GRACE_S``; stderr stays clean.

Early ``break``: the next ``iter()`` makes SPDL send STOP/START to the subprocess and
discard the abandoned epoch's queued items (their segments reclaimed at once); the
subprocess's threads finish the images in hand first.

Shutdown (``close()``, or garbage collection through a ``weakref.finalize``): after a
failure, SIGTERM -> SIGKILL the subprocess first (``workers.stop_processes``), then
SPDL's own teardown (ABORT, join 3 s, drain, close the queues, close and unlink the
pool), then our bounded escalation again, the queues' pipes closed and their
semaphores and the Condition's unlinked (spawn/forkserver). The subprocess exits by
itself within ``PARENT_POLL_S`` if the main process dies, and the resource tracker
unlinks the segments.

SPDL is imported inside methods only, so ``import strategies`` works without it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import os
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from .base import BatchGenerator, config_plan, owner_only
from .close_signal import CloseSignal
from .config import LoaderConfig
from .constants import KILL_GRACE_S, STOP_GRACE_S
from .dataset import Dataset
from .errors import RemoteTraceback, WorkerDiedError, WorkerError, WorkerTimeoutError
from .internals import subprocess_interface, tracker_pid
from .messages import WorkerFailure
from .plan import EpochPlan
from .shm_segments import check_free_space, close_queue, release_semaphores
from .spdl_common import (
    SPDL_REQUIRES,
    ImageResult,
    failure_of,
    process_image,
    setup_failure,
    start_worker,
    worker_error,
)
from .stages import STAGES, StageClock
from .work import ProcessedImage, data_dtype, make_processor, tile_nbytes
from .workers import FORKSERVER_PRELOAD, how_it_ended, start_fork_server, stop_processes

# What the fork server imports once: the subprocess runs SPDL's worker loop.
SPDL_PRELOAD = ["spdl.pipeline"]
# SPDL aligns each array in a segment to 64 bytes; the pickled rest stays in the queue.
SEGMENT_SLACK = 4096
# Segments beyond the queue's units: the one being written, the one being assembled, a spare.
EXTRA_SEGMENTS = 3
# How long the producer waits for a free segment: a training loop may pause for long
# (validation, checkpointing) without breaking the loader; close() wakes it at once.
ACQUIRE_TIMEOUT_S = 86400.0
# Marks a set-up failure inside SPDL's "Failed to create the iterable: ..." message.
SETUP_FAILED = "ipcbench-spdl-setup-failed:"
STARTING = "the subprocess to start"


class ArenaSource:
    """The re-iterable source, made in the subprocess: each ``iter()`` is the next epoch, in plan order."""

    def __init__(self, dataset: Dataset, config: LoaderConfig, pool: Any) -> None:
        failure = setup_failure()
        if failure is not None:  # the only way out now: SPDL's "Failed to create the iterable" message
            raise RuntimeError(
                SETUP_FAILED + json.dumps([failure.pid, failure.exc_type, failure.message, failure.traceback])
            )
        self.dataset = dataset
        self.config = config
        self.pool = pool  # the arena: its control segment says which epoch to make
        self._local = threading.local()
        self._clocks: list[StageClock] = []
        self._threads: ThreadPoolExecutor | None = None

    def _work(self, tagged: Any) -> ImageResult | WorkerFailure:
        local = self._local
        if not hasattr(local, "processor"):
            local.clock = StageClock()
            self._clocks.append(local.clock)
            try:
                local.processor = make_processor(self.dataset, self.config)
            except Exception as exc:
                local.processor = None
                return failure_of(exc)
        if local.processor is None:
            return failure_of(RuntimeError("this thread's processor could not be made"))
        result = process_image(tagged, local.processor, local.clock)
        if isinstance(result, ImageResult):  # every thread's compute, summed: the subprocess's totals
            totals = [sum(clock.seconds[s] for clock in self._clocks) for s in STAGES]
            result = dataclasses.replace(result, stages=tuple(totals))
        return result

    def __iter__(self) -> Any:
        c = self.config
        epoch = self.pool.epoch()
        plan = config_plan(self.dataset, c, epoch)
        if c.workers == 1:  # in SPDL's loop, the subprocess's main thread: no thread hop
            for job in plan.jobs:
                result = self._work((epoch, job))
                yield result
                if isinstance(result, WorkerFailure):
                    return
            return
        if self._threads is None:
            self._threads = ThreadPoolExecutor(c.workers, thread_name_prefix="ipcbench-spdl-arena")
        jobs = iter(plan.jobs)
        window: deque[Future] = deque()
        try:
            while True:
                while len(window) < c.workers and (job := next(jobs, None)) is not None:
                    window.append(self._threads.submit(self._work, (epoch, job)))
                if not window:
                    return
                result = window.popleft().result()
                yield result
                if isinstance(result, WorkerFailure):
                    return
        finally:  # an abandoned epoch (STOP from the main process): what has not started never will
            for future in window:
                future.cancel()


class _StopWhen:
    """Stands in for SPDL's ``closed`` event: true also once closed, gone or past the deadline.

    SPDL's main-side loops call ``is_set()`` between 0.1 s polls of the data queue.
    """

    def __init__(self, event: threading.Event, close_signal: CloseSignal, process: Any) -> None:
        self.event = event
        self.close_signal = close_signal
        self.process = process
        self.deadline = math.inf

    def is_set(self) -> bool:
        return (
            self.event.is_set()
            or self.close_signal.fired
            or time.monotonic() >= self.deadline
            or not self.process.is_alive()
        )

    def set(self) -> None:
        self.event.set()


class _ArenaState:
    """What the finalizer needs, without a reference to the generator."""

    def __init__(self) -> None:
        self.iterable: Any = None
        self.interface: Any = None
        self.closed_event: threading.Event | None = None
        self.process: Any = None
        self.pool: Any = None
        self.condition: Any = None
        self.broken = False
        self.tracker: int | None = None


def _close_arena(state: _ArenaState) -> None:
    """Subprocess, queues, segments, semaphores: all released, bounded in time. Idempotent."""
    interface, state.interface, state.iterable = state.interface, None, None
    process, pool = state.process, state.pool
    if interface is None:
        if pool is not None:  # made, but the subprocess never started (or failed to; SPDL closed the rest)
            state.pool = None
            pool.close()
            pool.unlink()
            release_semaphores(state.tracker, state.condition)
            state.condition = None
        return
    if state.broken and process is not None:
        stop_processes([process])  # SPDL's own teardown would give a stopped process 3 + 10 + 10 s
    queues = [q for q in (interface.cmd_q, interface.data_q) if q is not None]
    if state.closed_event is not None:
        interface.closed = state.closed_event  # SPDL's terminate() does nothing once it looks closed
    try:
        interface.terminate()  # ABORT, join 3 s, drain, close the queues, close and unlink the pool
    finally:
        if process is not None:
            stop_processes([process], STOP_GRACE_S)
            if process.exitcode is not None:
                process.close()
        if pool is not None:
            state.pool = None
            pool.close()  # idempotent: SPDL closed it; a failed teardown did not
            pool.unlink()
        for channel in queues:
            close_queue(channel, KILL_GRACE_S)
        release_semaphores(state.tracker, *queues, state.condition)
        state.condition = None


class SpdlArenaGenerator(BatchGenerator):
    """One SPDL subprocess produces processed images into a shared-memory segment pool; the base class assembles."""

    name = "spdl_arena"
    worker_processes = True
    shared_memory = True
    requires = SPDL_REQUIRES

    def __init__(self, dataset: Dataset | str | os.PathLike[str], config: LoaderConfig) -> None:
        super().__init__(dataset, config)
        from spdl.pipeline import iterate_in_subprocess

        from .spdl_segments import ProjectSegmentPool

        c = config
        segment_size = self.max_tiles * sum(tile_nbytes(self.dataset.channels, c.tile, data_dtype(c))) + SEGMENT_SLACK
        buffer_size = c.workers * self.prefetch
        count = buffer_size + EXTRA_SEGMENTS
        check_free_space(count * segment_size)
        if c.start_method == "forkserver":
            start_fork_server(FORKSERVER_PRELOAD + SPDL_PRELOAD)
        self._state = state = _ArenaState()
        self._wanted = 0
        self._iter: Any = None
        self._finalizer = weakref.finalize(self, owner_only(_close_arena, state))
        try:
            ctx = mp.get_context(c.start_method)
            state.pool = ProjectSegmentPool(segment_size, count, context=ctx, acquire_timeout=ACQUIRE_TIMEOUT_S)
            state.condition = state.pool._space_cv
            state.tracker = tracker_pid()
            self.segments = list(state.pool.owned)
            try:
                iterable = iterate_in_subprocess(
                    partial(ArenaSource, self.dataset, c, state.pool),
                    buffer_size=buffer_size,
                    initializer=partial(start_worker, self.dataset, c),
                    mp_context=c.start_method,
                    timeout=c.wait_timeout,
                    arena=state.pool,
                )
            except RuntimeError as exc:
                raise self._start_error(exc) from exc
            state.iterable = iterable
            interface = state.interface = subprocess_interface(iterable)
            state.process = interface.process
            state.closed_event = interface.closed
            self._stop_when = _StopWhen(interface.closed, self.close_signal, interface.process)
            interface.closed = self._stop_when
            interface.timeout = math.inf  # ours, per wait: see the module docstring
        except BaseException:
            state.broken = True
            self._finalizer()
            raise

    def _start_error(self, exc: RuntimeError) -> WorkerError:
        text = str(exc)
        if SETUP_FAILED in text:
            pid, exc_type, message, tb = json.loads(text.split(SETUP_FAILED, 1)[1])
            error = WorkerError(f"spdl_arena worker 0 (pid {pid}) raised {exc_type}: {message}", worker_id=0, pid=pid)
            error.__cause__ = RemoteTraceback(tb)
            return error
        if "did not initialize" in text:
            return WorkerTimeoutError(f"spdl_arena: {STARTING} took over timeout={self.config.timeout:g}s: {text}")
        return WorkerDiedError(f"spdl_arena: {STARTING} failed: {text}")

    # -- producer hooks -------------------------------------------------------
    def _begin_epoch(self, plan: EpochPlan) -> None:
        self._wanted = 0
        # SPDL's START carries nothing, and is sent at the first next() only (an epoch
        # abandoned unread never sends one): the epoch to make travels in the pool's
        # control segment, read by the subprocess when START comes.
        self._state.pool.set_epoch(plan.epoch)
        self._iter = iter(self._state.iterable)

    def _next_image(self) -> ProcessedImage:
        waiting_for = f"image {self._wanted} of epoch {self.epoch}"
        self._stop_when.deadline = time.monotonic() + self.config.wait_timeout
        try:
            with self.clock.timing("wait"):
                item = next(self._iter)
        except StopIteration:
            raise self._why_it_ended(waiting_for) from None
        except RuntimeError as exc:  # SPDL: the subprocess quit, or an unexpected state
            raise self._why_it_ended(waiting_for, exc) from exc
        finally:
            self._stop_when.deadline = math.inf
        self.close_signal.check(waiting_for)  # closed while the image came: the close is the news
        if isinstance(item, WorkerFailure):
            self._state.broken = True
            raise worker_error("spdl_arena", item, 0)
        if not isinstance(item, ImageResult) or item.position != self._wanted or item.epoch != self.epoch:
            raise RuntimeError(
                f"spdl_arena: got {type(item).__name__} {getattr(item, 'position', '?')} "
                f"of epoch {getattr(item, 'epoch', '?')} for {waiting_for}"
            )
        self._wanted += 1
        self._worker_stages[0] = item.stages
        return ProcessedImage(item.position, item.image_index, item.data, item.masks)

    def _end_epoch(self) -> None:
        self._iter = None  # SPDL's generator closes; the next iter() discards what is queued

    def _shutdown(self) -> None:
        self._iter = None
        self._finalizer()

    # -- the subprocess and its errors -------------------------------------
    def _why_it_ended(self, waiting_for: str, exc: BaseException | None = None) -> BaseException:
        """SPDL's iterator ended or raised before ``waiting_for``: closed, dead, silent, or failed."""
        self.close_signal.check(waiting_for)
        self._state.broken = True
        process = self._state.process
        if process is not None:
            process.join(KILL_GRACE_S if not process.is_alive() else 0)
            if process.exitcode is not None:
                return WorkerDiedError(
                    f"spdl_arena worker 0 (pid {process.pid}) {how_it_ended(process.exitcode)}; "
                    f"was waiting for {waiting_for}",
                    worker_id=0,
                    pid=process.pid,
                    exitcode=process.exitcode,
                )
        if exc is None and time.monotonic() >= self._stop_when.deadline:
            return WorkerTimeoutError(
                f"spdl_arena: {waiting_for} did not come within timeout={self.config.timeout:g}s; "
                f"worker 0 (pid {process.pid if process is not None else None}) alive",
                worker_id=0,
                pid=process.pid if process is not None else None,
            )
        if exc is not None:
            return WorkerError(f"spdl_arena: the subprocess failed while waiting for {waiting_for}: {exc}")
        return RuntimeError(f"spdl_arena: the subprocess ended the epoch before {waiting_for}")

    def worker_pids(self) -> list[int]:
        process = self._state.process
        return [process.pid] if process is not None and process.pid is not None else []
