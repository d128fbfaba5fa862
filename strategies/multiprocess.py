"""ProcessGenerator: the main-process side shared by ``pipe``, ``queue`` and ``shm``.

The three strategies differ only in how a processed image travels from a worker to
the main process. Everything else is here, once:

- **the window**: images of the plan are dispatched in plan order; at most
  ``workers * prefetch`` images are in flight (dispatched and not yet consumed by
  the assembler), the backpressure knob every strategy honours; a strategy may
  limit each worker further (``pipe`` and ``shm``: ``prefetch`` each);
- **plan order**: results arrive in any order and wait in ``_ready`` until they are
  next; the assembler (``BatchGenerator``) always consumes the earliest image, and
  the earliest unconsumed image is always dispatched, so the window cannot deadlock;
- **epochs**: every epoch has a new ``generation``; results of an abandoned epoch
  (an early ``break``) are discarded as they arrive, their buffers recycled;
- **the next epoch, early** (``LoaderConfig.prefetch_next_epoch``): once every image of
  the epoch is dispatched, the window's free room goes to the next epoch's first images
  (the plan the next ``iter()`` will run, under the next ``generation``); their results
  wait in ``_early`` and become that epoch's first ``_ready`` images. An early ``break``
  keeps them (``_abandon`` skips only older generations); ``close()`` drops them;
- **the start, in the background** (``LoaderConfig.background_start``): the pool starts in
  a thread; until it is ready nothing is dispatched and ``_next_image`` makes the wanted
  image in this process (``_made_here``), the way ``baseline`` does. Those images never
  enter the window. Once the pool is ready, the rest of the plan goes to the workers; a
  start that failed raises its error there, in the loop's thread, and ``close()`` waits
  for the starting thread before it releases anything;
- **resources**: a strategy registers the cleanup of what it creates (pool, queues,
  shared memory) on ``self.resources``, an ``ExitStack`` run by ``close()`` or, if
  the generator is garbage-collected unclosed, by a ``weakref.finalize``.

A strategy implements: ``_prepare(resources)`` (what the workers will be given: queues,
shared memory; made before ``make_generator`` returns, so its errors are raised there),
``_start(resources) -> WorkerPool``, ``_dispatch(job,
generation) -> bool`` (False: no capacity now), ``_receive() -> list[(generation, image or None)]``
(``None``: a request skipped after a reset), ``_free(image)`` and, optionally,
``_abandon()`` (tell the workers to skip jobs of the abandoned epoch they have not
started; those come back as skipped and leave the window then).

After a worker error (:class:`WorkerError`: raised, died, hung) the generator closes
without the polite Stop: the pool goes straight to SIGTERM, so the error is not
delayed by a worker that will never answer.
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from abc import abstractmethod
from collections import deque
from contextlib import ExitStack

from .background_start import BackgroundStart
from .base import BatchGenerator, owner_only
from .config import LoaderConfig
from .dataset import Dataset
from .errors import WorkerError
from .plan import EpochPlan, ImageJob
from .work import ProcessedImage, Processor
from .workers import FORKSERVER_PRELOAD, WorkerPool, start_fork_server

# ProcessedImage.handle of an image this process made itself while the workers started.
MADE_HERE = "made in the main process"


class ProcessGenerator(BatchGenerator):
    worker_processes = True
    prefetches_next_epoch = True
    starts_in_background = True
    traces = True  # the main clock here, each worker's in its RequestWorker or QueueWorker

    def __init__(self, dataset: Dataset | str | os.PathLike[str], config: LoaderConfig) -> None:
        super().__init__(dataset, config)
        self.generation = 0
        self._pending: deque[ImageJob] = deque()
        self._ready: dict[int, ProcessedImage] = {}
        self._wanted = 0
        self.in_flight = 0
        self.window = config.workers * self.prefetch
        self._early: dict[int, ProcessedImage] = {}  # the next epoch's results, by position, until it begins
        self.pool: WorkerPool | None = None
        # LoaderConfig.background_start: the pool's start, until the workers take over (strategies.background_start).
        self._starting: BackgroundStart | None = None
        self.resources = ExitStack()
        self._finalizer = weakref.finalize(self, owner_only(self.resources.close))
        try:
            if config.start_method == "forkserver":
                # From this thread, not the one that starts the pool in the background: the
                # server's start sets this process's environment for a moment (workers.start_fork_server).
                start_fork_server(FORKSERVER_PRELOAD)
            self._prepare(self.resources)
            if config.background_start:
                self._starting = BackgroundStart(self.name, self._start_pool, self.dataset, config)
            else:
                self.pool = self._start(self.resources)
        except BaseException:
            self._finalizer()
            raise

    # -- what a strategy provides -------------------------------------------
    def _prepare(self, resources: ExitStack) -> None:
        """Create what the workers will be given (queues, shared memory); register its cleanup on ``resources``."""

    @abstractmethod
    def _start(self, resources: ExitStack) -> WorkerPool:
        """Start the pool (in the background thread under ``background_start``); register its cleanup."""

    @abstractmethod
    def _dispatch(self, job: ImageJob, generation: int) -> bool:
        """Send ``job`` of epoch ``generation`` to a worker if one has capacity; False if none has."""

    @abstractmethod
    def _receive(self) -> list[tuple[int, ProcessedImage | None]]:
        """Wait (bounded) for results; return (generation, image) pairs, image None if skipped."""

    def _free(self, image: ProcessedImage) -> None:
        """The image's buffer or slot may be reused."""

    def _abandon(self) -> None:
        """The epoch was abandoned: drop dispatched work that has not started, if possible."""

    def _made_here(self, job: ImageJob, here: Processor) -> ProcessedImage:
        """``job``'s image made by ``here`` in this process while the workers start (fresh arrays)."""
        return dataclasses.replace(here.process(job), handle=MADE_HERE)

    # -- the start, in the background ----------------------------------------
    def _start_pool(self) -> None:
        """What the starting thread runs (``LoaderConfig.background_start``)."""
        self.pool = self._start(self.resources)

    def _workers_ready(self) -> bool:
        """Whether the pool is up; a background start that failed raises its error here."""
        if self.pool is not None:
            return True
        return self._starting is not None and self._starting.ready() and self.pool is not None

    # -- the shared machinery --------------------------------------------------
    def worker_pids(self) -> list[int]:
        """The workers' process ids; none until they are ready (``background_start``)."""
        return list(self.pool.pids) if self.pool is not None else []

    def _fill(self) -> None:
        if not self._workers_ready():
            return  # nothing can be dispatched yet: _next_image makes the images here meanwhile
        self._send(self._pending, self.generation)
        if self.in_flight < self.window and (ahead := self._ahead_to_dispatch(self._pending)) is not None:
            self._send(ahead, self.generation + 1)

    def _send(self, pending: deque[ImageJob], generation: int) -> None:
        """Dispatch ``pending``'s images in order, as ``generation``'s, while the window and a worker have room."""
        while pending and self.in_flight < self.window and self._dispatch(pending[0], generation):
            pending.popleft()
            self.in_flight += 1

    def _retire(self, image: ProcessedImage | None) -> None:
        """An image left the window: consumed, stale, or skipped (None)."""
        if image is not None and image.handle is MADE_HERE:
            return  # made here while the workers started: it was never in the window
        if image is not None:
            self._free(image)
        self.in_flight -= 1

    def _begin_epoch(self, plan: EpochPlan) -> None:
        self.generation += 1
        ahead = self._claim_ahead(plan)
        if ahead is not None:  # begun early: its dispatched images are this generation's
            self._pending, self._ready, self._early = ahead, self._early, {}
        else:
            self._pending = deque(plan.jobs)
        self._wanted = 0
        self._fill()

    def _next_image(self) -> ProcessedImage:
        while self._wanted not in self._ready:
            if self._starting is not None:  # started in the background
                if not self._workers_ready():
                    image = self._starting.make_next(self._pending, self._wanted, self.clock, self._made_here)
                    self._wanted += 1
                    return image
                self._starting = None  # the workers take over from here
                self._fill()
                continue
            for generation, image in self._receive():
                if image is not None and generation == self.generation:
                    self._ready[image.position] = image
                elif image is not None and self._ahead is not None and generation == self.generation + 1:
                    self._early[image.position] = image
                else:
                    self._retire(image)
            self._fill()
        image = self._ready.pop(self._wanted)
        self._wanted += 1
        return image

    def _release_image(self, image: ProcessedImage) -> None:
        self._retire(image)
        self._fill()

    def _end_epoch(self) -> None:
        for image in self._ready.values():
            self._retire(image)
        self._ready.clear()
        self._pending.clear()
        self._abandon()

    def _close_after(self, error: BaseException) -> None:
        if isinstance(error, WorkerError) and self.pool is not None:
            # A worker died, hung or failed: asking the others to stop politely can
            # only cost STOP_GRACE_S (a hung worker never answers; under queue a dead
            # one may hold a lock the others wait on) and delay the error.
            self.pool.broken = True
        self.close()

    def _shutdown(self) -> None:
        if self._starting is not None:
            # close() fired the close signal, which the pool's waits for Ready watch: the
            # thread returns as soon as the process starts in progress have returned.
            self._starting.join(self.config.wait_timeout)
            self._starting = None
        self._ready.clear()
        self._pending.clear()
        self._early.clear()
        self._ahead, self._ahead_pending = None, deque()
        self._finalizer()
