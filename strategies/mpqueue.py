"""queue: a task queue and a result queue (``multiprocessing.Queue``, both bounded).

Message flow::

    main --Job(generation, image)--> tasks (Queue) --> any idle worker
    main <--ImageResult(generation, position, data, masks)-- results (Queue) <-- worker
    main --(failure reports, Ready)-- each worker's own Pipe (the shared lifecycle)

Any worker takes any job, so results come back out of order; the main process
puts them back in plan order (``multiprocess.ProcessGenerator``).

How the pixels travel, and why this is the slow design for big images: ``put``
hands the result to a feeder thread in the worker, which pickles it (the arrays
are copied into a pickle string) and writes it into the one pipe every worker
shares, under a lock; the main process reads the whole message and unpickles it
(another copy). Two extra copies of every byte, plus the lock, plus the thread.

Who owns each buffer: nobody reuses anything. ``put`` returns before the result is
pickled, so a worker must hand over fresh arrays each time: reusing a buffer would
let the next image overwrite the previous one before the feeder thread pickled it.

Reading the results, and why not ``results.get()``: a worker SIGKILLed in the
middle of writing its 40 MB message leaves a partial message in the shared pipe,
and the other workers keep its write end open, so ``get()`` would wait for the
rest forever (and they would wait forever for the lock it held). The main process
reads the queue's pipe through ``framing.MessageReader`` instead, watching the
workers' sentinels while it waits; it then releases the queue's slot semaphore
itself, as ``Queue.get`` would. (CPython's ``concurrent.futures`` also reads its
result queue's ``_reader`` directly, to wait on it with the sentinels.)

Early ``break``: the main process raises ``oldest_wanted``, a shared integer; a
worker that takes a job of an older generation answers it Skipped at once.

Shutdown: ``oldest_wanted`` goes to infinity (every queued job is skipped), one
``Stop`` per worker goes on the task queue, and the pool drains the result pipe
while the workers exit (a worker exits only once its feeder thread has flushed).
Then the main process empties and closes both queues, so no feeder thread of its
own is left blocked on a full pipe (``cancel_join_thread``).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import queue
import time
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

import numpy as np

from . import injection
from .config import LoaderConfig
from .constants import KILL_GRACE_S
from .dataset import Dataset
from .framing import MessageReader, widen
from .internals import queue_reader, queue_took_one, tracker_pid
from .messages import Job, Skipped, Stop
from .multiprocess import ProcessGenerator
from .plan import ImageJob
from .shm_segments import close_queue, release_semaphores
from .stages import stage_clock, time_queue_pickling, worker_role
from .work import ProcessedImage, make_processor
from .workers import WorkerPool

NEVER = 2**62  # a generation no job will have: every job is older


@dataclass(frozen=True, slots=True)
class ImageResult:
    generation: int
    position: int
    image_index: int
    data: np.ndarray
    masks: np.ndarray
    worker_id: int = 0
    stages: tuple[float, ...] = ()  # the worker's cumulative stage totals (strategies.stages)


class QueueWorker:
    def __init__(
        self,
        worker_id: int,
        conn: Connection,
        dataset: Dataset,
        config: LoaderConfig,
        tasks: mp.Queue,
        results: mp.Queue,
        oldest_wanted: Any,
        timeout: float,
    ) -> None:
        self.worker_id = worker_id
        self.conn = conn
        self.processor = make_processor(dataset, config)
        self.clock = stage_clock(config.trace_dir, worker_role(worker_id))
        # Protocol 5 (PEP 574): an ndarray goes into the pickle as one buffer copy; the
        # default, protocol 4, copies it twice (tobytes(), then into the pickle). The
        # feeder thread's pickling is timed as serialize.
        time_queue_pickling(self.clock, protocol=5)
        self.tasks, self.results = tasks, results
        self.oldest_wanted = oldest_wanted
        self.timeout = timeout

    def run(self) -> None:
        while True:
            # Blocks while there is no work; the parent watch ends us if the main process dies.
            job = self.tasks.get()
            if isinstance(job, Stop):
                return
            if job.generation < self.oldest_wanted.value:
                result: Any = Skipped(job.generation, job.image.position)
            else:
                with self.clock.timing("compute"):
                    image = self.processor.process(job.image)  # fresh arrays: see the module docstring
                result = ImageResult(
                    job.generation,
                    image.position,
                    image.image_index,
                    image.data,
                    image.masks,
                    self.worker_id,
                    self.clock.totals(),
                )
            # The window keeps the queue below maxsize; a full queue means the main process is stuck.
            injection.hit("queue.result", results=self.results, result=result)
            with self.clock.timing("transfer"):
                self.results.put(result, timeout=self.timeout)


class QueueGenerator(ProcessGenerator):
    """Workers share a task queue and a result queue."""

    name = "queue"

    def _prepare(self, resources: ExitStack) -> None:
        c = self.config
        ctx = mp.get_context(c.start_method)
        # + workers: room for one Stop per worker behind a full window.
        self.tasks = ctx.Queue(maxsize=self.window + c.workers)
        self.results = ctx.Queue(maxsize=self.window)
        self.oldest_wanted = ctx.Value("q", 0, lock=False)  # one aligned int64: reads and writes are atomic
        # Under spawn/forkserver the queues' semaphores are registered with this tracker.
        resources.callback(_close_queues, self.tasks, self.results, tracker_pid())
        self.result_pipe = queue_reader(self.results)
        widen(self.result_pipe)  # one pipe: its size holds for every worker's end too
        self.result_reader = MessageReader(self.result_pipe, self._wait_for_result)

    def _start(self, resources: ExitStack) -> WorkerPool:
        c = self.config
        pool = WorkerPool(
            name=self.name,
            worker_cls=QueueWorker,
            args=(self.dataset, c, self.tasks, self.results, self.oldest_wanted, c.wait_timeout),
            workers=c.workers,
            start_method=c.start_method,
            timeout=c.wait_timeout,
            stop=functools.partial(_stop_workers, self.tasks, self.oldest_wanted, c.workers),
            drain=[MessageReader(self.result_pipe, _no_wait)],
            close_signal=self.close_signal,
        )
        resources.callback(pool.close)
        return pool

    def _wait_for_result(self) -> None:
        """Wait until the result pipe has bytes; a worker's failure report or death raises."""
        for ready in self.pool.wait([self.result_pipe, *self.pool.conns], waiting_for=self._waiting_for()):
            if ready is not self.result_pipe:
                message = self.pool.read(self.pool.conns.index(ready))  # raises a reported failure
                raise RuntimeError(f"queue: unexpected message {message!r} on a worker's pipe")

    def _waiting_for(self) -> str:
        return f"image {self._wanted} of epoch {self.epoch}"

    def _dispatch(self, job: ImageJob, generation: int) -> bool:
        self.tasks.put(Job(generation, job), timeout=self.config.wait_timeout)
        return True

    def _receive(self) -> list[tuple[int, ProcessedImage | None]]:
        start = time.perf_counter()
        self._wait_for_result()
        start = self.clock.since("wait", start)
        payload = self.result_reader.recv()
        start = self.clock.since("transfer", start)
        message = ForkingPickler.loads(payload)
        self.clock.since("serialize", start)
        queue_took_one(self.results)  # what Queue.get() does after reading a message
        if isinstance(message, Skipped):
            return [(message.generation, None)]
        self._worker_stages[message.worker_id] = message.stages
        return [
            (message.generation, ProcessedImage(message.position, message.image_index, message.data, message.masks))
        ]

    def _abandon(self) -> None:
        self.oldest_wanted.value = self.generation + 1

    def _shutdown(self) -> None:
        super()._shutdown()
        # The queues' semaphores stay mapped while their objects live: let them go now.
        del self.tasks, self.results, self.oldest_wanted, self.result_reader, self.result_pipe


def _close_queues(tasks: mp.Queue, results: mp.Queue, registered_with: int | None) -> None:
    """After the workers are gone: empty the task queue so our feeder thread can finish, close both."""
    try:
        while True:
            tasks.get_nowait()
    except (queue.Empty, OSError, EOFError):
        pass  # empty (or already broken by a killed worker): nothing more to take out
    tasks.cancel_join_thread()
    for channel in (tasks, results):
        close_queue(channel, KILL_GRACE_S)  # descriptors closed now, not when the queue is collected
    release_semaphores(registered_with, tasks, results)


def _stop_workers(tasks: mp.Queue, oldest_wanted: Any, workers: int) -> None:
    """Skip every queued job, then one Stop per worker (not a method: the pool must not hold the generator)."""
    oldest_wanted.value = NEVER
    for _ in range(workers):
        tasks.put(Stop(), timeout=KILL_GRACE_S)


def _no_wait() -> None:
    raise AssertionError("the drain reader only drains")
