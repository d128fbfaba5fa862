"""threads: a pool of threads in the main process doing the per-image work.

Message flow::

    main thread                                          worker thread i (one per LoaderConfig.workers)
    -----------                                          ----------------------------------------------
    _fill: Task(future, job, buffers) ----> tasks ---->  take the next task (any idle thread)
      at most workers * prefetch in flight               skip it if its future was cancelled
    _next_image: wait (bounded) for the oldest   <----   ImageProcessor.process(job, *buffers)
      future: plan order needs no reordering             future.set_result(image), or
                                                         future.set_exception(WorkerError from exc)
    BatchGenerator._assemble copies the tiles into batches, as every strategy does

Why threads can work at all: tifffile's file reads and NumPy's copies release the
GIL, so two threads decode and copy at once; the per-tile Python loop does not,
and that is what this strategy measures against the processes.

Who owns each buffer: the main thread owns a stock of output buffers (tile data
and masks, sized for the largest image), at most one per image in flight, made
on first need. A task carries its buffers to a thread, the thread writes the
tiles into them, and they return to the stock when the assembler releases the
image (``_release_image``), or, for an abandoned epoch's image, once its thread is
done with it. No copy crosses a boundary: the tiles are in the main process's
memory from the start. Each thread has its own ``ImageProcessor`` (its decode
buffers are reused between images, so they cannot be shared).

Errors: a thread's exception reaches ``next()`` as a ``WorkerError`` that names the
worker and the cause ("threads worker 1 (pid 42) raised DatasetError: cannot decode
image ..."), as the process strategies' do, so callers catch one error family. Its
``__cause__`` is the exception object itself, not a ``RemoteTraceback``: it never
left the process, and its traceback runs through the worker thread's frames. No
result within ``LoaderConfig.timeout`` is a ``WorkerTimeoutError``. A thread cannot
die without raising, so there is no ``WorkerDiedError`` here.

Early ``break``: the epoch's futures not yet started are cancelled (a thread that
takes one skips it); those running are set aside as *stale*, still counted in the
window, and their buffers go back to the stock when they finish. Their results,
errors included, belong to the abandoned epoch and are dropped.

The next epoch, early (``LoaderConfig.prefetch_next_epoch``): once every image of the
epoch is dispatched, the window's free room goes to the first images of the epoch the
next ``iter()`` runs; their tasks wait in ``_ahead_window`` and become that epoch's
window. An early ``break`` keeps them; ``close()`` cancels them with the rest.

Shutdown (``close()``, or garbage collection through a ``weakref.finalize``): take
every queued task back out of the queue and cancel it, put one ``None`` per
thread, join them all within ``STOP_GRACE_S`` (a thread finishes the image in hand
first). A thread cannot be killed: one that is still busy after the grace (a hung
read) is a daemon and is left to finish; ``close()`` returns regardless.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import weakref
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass

import numpy as np

from .base import BatchGenerator, owner_only
from .config import LoaderConfig
from .constants import STOP_GRACE_S
from .dataset import Dataset
from .errors import WorkerError, WorkerTimeoutError
from .plan import EpochPlan, ImageJob
from .stages import StageClock, stage_clock, worker_role
from .work import ProcessedImage, image_buffers, make_processor

THREAD_PREFIX = "ipcbench-threads"


@dataclass(frozen=True, slots=True)
class Task:
    """One image to process into ``data``/``masks``; its result or error goes to ``future``."""

    future: Future
    job: ImageJob
    data: np.ndarray
    masks: np.ndarray


def _serve(worker_id: int, tasks: queue.SimpleQueue, dataset: Dataset, config: LoaderConfig, clock: StageClock) -> None:
    """Worker thread ``worker_id``: process tasks until a ``None`` arrives."""
    processor = make_processor(dataset, config)
    while True:
        # Blocks while there is no work, on purpose: close() (or the finalizer) puts
        # one None per thread, and daemon threads end with the process.
        task = tasks.get()
        if task is None:
            return
        if not task.future.set_running_or_notify_cancel():
            continue  # cancelled: an abandoned epoch's image not yet started
        try:
            with clock.timing("compute"):
                image = processor.process(task.job, task.data, task.masks)
        except BaseException as exc:  # every failure reaches the waiting main thread
            pid = os.getpid()
            error = WorkerError(
                f"threads worker {worker_id} (pid {pid}) raised {type(exc).__name__}: {exc}",
                worker_id=worker_id,
                pid=pid,
            )
            error.__cause__ = exc
            task.future.set_exception(error)
            del exc, error  # no cycle through this frame while the thread waits for the next task
        else:
            task.future.set_result(image)


def _stop_threads(tasks: queue.SimpleQueue, threads: list[threading.Thread]) -> None:
    """Cancel queued work, ask every thread to stop, join within ``STOP_GRACE_S``. Idempotent."""
    while True:
        try:
            task = tasks.get_nowait()
        except queue.Empty:
            break
        if task is not None:
            task.future.cancel()
    for _ in threads:
        tasks.put(None)
    deadline = time.monotonic() + STOP_GRACE_S
    for thread in threads:
        if thread is not threading.current_thread():  # a GC pass may run us in a worker thread
            thread.join(max(0.0, deadline - time.monotonic()))


class ThreadGenerator(BatchGenerator):
    """``workers`` threads of the main process produce the images; at most ``workers * prefetch`` in flight."""

    name = "threads"
    traces = True
    prefetches_next_epoch = True

    def __init__(self, dataset: Dataset | str | os.PathLike[str], config: LoaderConfig) -> None:
        super().__init__(dataset, config)
        self.window = config.workers * self.prefetch
        self.in_flight = 0  # dispatched and not yet back in the stock (stale ones included)
        self._pending: deque[ImageJob] = deque()  # this epoch's images not yet dispatched
        self._window: deque[Task] = deque()  # this epoch's dispatched images, in plan order
        self._stale: list[Task] = []  # an abandoned epoch's images, until their threads are done
        self._ahead_window: deque[Task] = deque()  # the next epoch's dispatched images, in plan order
        self._stock: list[tuple[np.ndarray, np.ndarray]] = []  # free output buffers
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._clocks = [stage_clock(config.trace_dir, worker_role(i)) for i in range(config.workers)]  # one per thread
        self._threads = [
            threading.Thread(
                target=_serve,
                args=(i, self._tasks, self.dataset, config, self._clocks[i]),
                name=f"{THREAD_PREFIX}-{i}",
                daemon=True,
            )
            for i in range(config.workers)
        ]
        # The finalizer and the threads hold the queue and the dataset, never the generator.
        self._finalizer = weakref.finalize(self, owner_only(_stop_threads, self._tasks, self._threads))
        for thread in self._threads:
            thread.start()

    def _worker_totals(self) -> list[tuple[float, ...]]:
        return [clock.totals() for clock in self._clocks]

    def worker_threads(self) -> list[threading.Thread]:
        """The worker threads (``worker_pids()`` is empty: they live in this process)."""
        return list(self._threads)

    # -- the window -----------------------------------------------------------
    def _buffers(self) -> tuple[np.ndarray, np.ndarray]:
        if self._stock:
            return self._stock.pop()
        return image_buffers(self.max_tiles, self.dataset, self.config)

    def _fill(self) -> None:
        self._reap()
        self._dispatch(self._pending, self._window)
        if self.in_flight < self.window and (ahead := self._ahead_to_dispatch(self._pending)) is not None:
            self._dispatch(ahead, self._ahead_window)

    def _dispatch(self, pending: deque[ImageJob], window: deque[Task]) -> None:
        """Hand ``pending``'s images to the threads, in order, while the window has room; track them in ``window``."""
        while pending and self.in_flight < self.window:
            task = Task(Future(), pending.popleft(), *self._buffers())
            self._tasks.put(task)
            window.append(task)
            self.in_flight += 1

    def _reap(self) -> None:
        """Stale tasks whose threads are done (or that were cancelled) give their buffers back."""
        busy = []
        for task in self._stale:
            if task.future.done():  # its result or error belongs to the abandoned epoch: dropped
                self._stock.append((task.data, task.masks))
                self.in_flight -= 1
            else:
                busy.append(task)
        self._stale = busy

    def _await(self, futures: list[Future], waiting_for: str) -> None:
        """Wait until one of ``futures`` is done, or ``close()`` from another thread fires its signal."""
        with self.clock.timing("wait"):
            done, _ = wait(
                [*futures, self.close_signal.future], timeout=self.config.wait_timeout, return_when=FIRST_COMPLETED
            )
        self.close_signal.check(waiting_for)
        if not done:
            alive = [t.name for t in self._threads if t.is_alive()]
            raise WorkerTimeoutError(
                f"{self.name}: no {waiting_for} within timeout={self.config.timeout:g}s; threads alive: {alive}"
            )

    # -- producer hooks -------------------------------------------------------
    def _begin_epoch(self, plan: EpochPlan) -> None:
        ahead = self._claim_ahead(plan)
        if ahead is not None:  # begun early: its tasks are this epoch's first
            self._pending, self._window, self._ahead_window = ahead, self._ahead_window, deque()
        else:
            self._pending = deque(plan.jobs)
        self._fill()

    def _next_image(self) -> ProcessedImage:
        waiting_for = f"image of epoch {self.epoch}"
        self._fill()
        while not self._window:  # the window is full of an abandoned epoch's images
            if not self._stale:
                raise RuntimeError(f"{self.name}: waiting for an {waiting_for} but none is dispatched")
            self._await([t.future for t in self._stale], f"stale image to finish before {waiting_for}")
            self._fill()
        task = self._window.popleft()
        self._await([task.future], f"image {task.job.position} of epoch {self.epoch}")
        image = task.future.result()  # raises the thread's WorkerError, caused by its exception
        image.handle = (task.data, task.masks)
        return image

    def _release_image(self, image: ProcessedImage) -> None:
        self._stock.append(image.handle)
        self.in_flight -= 1
        self._fill()

    def _end_epoch(self) -> None:
        self._pending.clear()
        for task in self._window:
            task.future.cancel()  # fails (harmlessly) for a running or finished one
            self._stale.append(task)
        self._window.clear()
        self._reap()

    def _shutdown(self) -> None:
        self._finalizer()
        for clock in self._clocks:
            clock.close()
        self._pending.clear()
        self._window.clear()
        self._stale.clear()
        self._stock.clear()
        self._ahead, self._ahead_pending, self._ahead_window = None, deque(), deque()
