"""Request/response over one Pipe per worker: the machinery ``pipe`` and ``shm`` share.

::

    main process (RequestGenerator)                worker i (RequestWorker.run)
    -------------------------------                ----------------------------
    _dispatch: Job(generation, image, slot) ---->  read everything waiting on the pipe
       to the worker with the most capacity        Stop -> return; Reset(g) -> skip older jobs
    _receive: wait(busy pipes + sentinels)  <----  deliver(job): ImageDone(...) [+ payload]
       read ImageDone / Skipped                      or Skipped(...) for a stale job
    _abandon (early break): Reset(next gen) ---->

Worker side, the blog's child loop: *check the pipe for requests / reset / stop,
process the requested image, deliver it, wait for the next request*. Reading every
message already waiting before each image is what makes an early ``break`` cheap:
stale requests behind the image in hand are answered ``Skipped``, not computed.
The worker blocks on its pipe only when it has nothing to do; if the main process
dies meanwhile, the parent watch of ``workers.worker_main`` ends it.

Main side: a worker takes at most ``prefetch`` requests (``capacity``); ``shm``
narrows that to its free slots. How a result's pixels travel is the subclass's
``deliver`` (worker) and ``_collect`` (main).
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import ExitStack
from multiprocessing.connection import Connection
from typing import Any, ClassVar

from .config import LoaderConfig
from .dataset import Dataset
from .messages import ImageDone, Job, Reset, Skipped, Stop
from .multiprocess import ProcessGenerator
from .plan import ImageJob, max_tiles_per_image
from .stages import stage_clock, worker_role
from .work import ProcessedImage, make_processor
from .workers import WorkerPool


class RequestWorker:
    """Serves :class:`Job` requests from its pipe; subclasses implement :meth:`deliver`."""

    def __init__(self, worker_id: int, conn: Connection, dataset: Dataset, config: LoaderConfig) -> None:
        self.worker_id = worker_id
        self.conn = conn
        self.processor = make_processor(dataset, config)
        self.max_tiles = max_tiles_per_image(dataset.shapes, config.tile)
        self.oldest_wanted = 0  # requests of earlier generations are stale
        self.clock = stage_clock(config.trace_dir, worker_role(worker_id))

    def deliver(self, job: Job) -> None:
        """Process ``job`` and hand the result to the main process."""
        raise NotImplementedError

    def done(self, job: Job, slot: int = 0) -> ImageDone:
        """The note announcing ``job``'s result, with this worker's stage totals so far."""
        image = job.image
        return ImageDone(job.generation, image.position, image.image_index, image.n_tiles, slot, self.clock.totals())

    def run(self) -> None:
        backlog: deque[Job] = deque()
        while True:
            if not backlog or self.conn.poll():
                messages = [self.conn.recv()]  # blocks only when there is nothing to do
                while self.conn.poll():
                    messages.append(self.conn.recv())
                for message in messages:
                    if isinstance(message, Stop):
                        return
                    if isinstance(message, Reset):
                        self.oldest_wanted = max(self.oldest_wanted, message.generation)
                    else:
                        backlog.append(message)
            if not backlog:
                continue  # only a Reset came
            job = backlog.popleft()
            if job.generation < self.oldest_wanted:
                self.conn.send(Skipped(job.generation, job.image.position, job.slot))
            else:
                self.deliver(job)


class RequestGenerator(ProcessGenerator):
    """Main side of a request/response strategy."""

    worker_cls: ClassVar[type[RequestWorker]]

    def _worker_args(self) -> tuple[Any, ...]:
        return (self.dataset, self.config)

    def _prepare(self, resources: ExitStack) -> None:
        self.outstanding = [0] * self.config.workers  # requests sent and not yet answered, per worker

    def _start(self, resources: ExitStack) -> WorkerPool:
        c = self.config
        pool = WorkerPool(
            name=self.name,
            worker_cls=self.worker_cls,
            args=self._worker_args(),
            workers=c.workers,
            start_method=c.start_method,
            timeout=c.wait_timeout,
            close_signal=self.close_signal,
        )
        resources.callback(pool.close)
        self._worker_of = {conn: i for i, conn in enumerate(pool.conns)}
        return pool

    def capacity(self, worker_id: int) -> int:
        """How many more requests worker ``worker_id`` may take now."""
        return self.prefetch - self.outstanding[worker_id]

    def _take_slot(self, worker_id: int, generation: int) -> int:
        """The slot a new request of this worker for epoch ``generation`` writes into (``shm``); 0 when unused."""
        return 0

    def _dispatch(self, job: ImageJob, generation: int) -> bool:
        worker_id = max(range(len(self.outstanding)), key=self.capacity)
        if self.capacity(worker_id) <= 0:
            return False
        self.pool.send(worker_id, Job(generation, job, self._take_slot(worker_id, generation)))
        self.outstanding[worker_id] += 1
        return True

    def _collect(self, worker_id: int, done: ImageDone) -> ProcessedImage:
        """The processed image that ``done`` announces (read its payload, or map its slot)."""
        raise NotImplementedError

    def _skipped(self, worker_id: int, skipped: Skipped) -> None:
        """A request came back unprocessed; release what it held."""

    def _receive(self) -> list[tuple[int, ProcessedImage | None]]:
        busy = [self.pool.conns[i] for i, n in enumerate(self.outstanding) if n]
        if not busy:
            raise RuntimeError(f"{self.name}: waiting for image {self._wanted} but no request is outstanding")
        results: list[tuple[int, ProcessedImage | None]] = []
        start = time.perf_counter()
        ready = self.pool.wait(busy, waiting_for=f"image {self._wanted} of epoch {self.epoch}")
        start = self.clock.since("wait", start)
        for conn in ready:
            worker_id = self._worker_of[conn]
            message = self.pool.read(worker_id)
            self.outstanding[worker_id] -= 1
            if isinstance(message, Skipped):
                self._skipped(worker_id, message)
                results.append((message.generation, None))
            elif isinstance(message, ImageDone):
                self._worker_stages[worker_id] = message.stages
                results.append((message.generation, self._collect(worker_id, message)))
            else:
                raise RuntimeError(f"{self.name}: unexpected message {message!r} from worker {worker_id}")
        self.clock.since("transfer", start)
        return results

    def _abandon(self) -> None:
        for worker_id, n in enumerate(self.outstanding):
            if n:
                self.pool.send(worker_id, Reset(self.generation + 1))
