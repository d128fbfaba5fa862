"""torch: ``torch.utils.data.DataLoader`` doing the per-image work, as readers would.

Message flow::

    main process                                        DataLoader worker i (torch's _worker_loop)
    ------------                                        ------------------------------------------
    JobSampler yields TaggedJob(generation, job) ---->  index queue i (torch deals them round robin,
                                                          at most prefetch_factor per worker)
                                                        ImageDataset[tagged]: ImageProcessor.process
                                                          into fresh tensors in shared memory
    next(iterator): in plan order              <-----   data queue (one mp.Queue): ImageTensors with
      ImageTensors -> ProcessedImage                      the tensors' file descriptors, not pixels
    BatchGenerator._assemble copies the tiles into batches, as every strategy does

A processed image is an *item*: ``batch_size=None`` turns collation off, so torch
hands the main process one image at a time and the base class assembles batches
(across image boundaries) exactly as the baseline does: bit-identical batches.

The sampler trick: a persistent worker keeps the copy of the dataset it got at
start-up, so the epoch's jobs cannot live in the dataset. They travel as the
*indices*: the sampler (main process only) yields the epoch's ``ImageJob`` s, tagged
with the epoch's ``generation``, and ``ImageDataset.__getitem__`` takes that object
and processes it. The plan changes every epoch; the workers do not.

DataLoader settings, and why:

- ``batch_size=None``: one item = one processed image; batches are cut in the main
  process, so they may span images as the contract requires.
- ``num_workers=workers``, ``prefetch_factor=prefetch``: torch keeps ``prefetch``
  indices outstanding per worker, the window every strategy honours.
- ``persistent_workers=True``: workers live until ``close()`` (the contract); each
  ``iter(loader)`` resets the same iterator for the next epoch.
- ``multiprocessing_context=start_method``. Torch's worker loop needs torch, so
  for ``forkserver`` the generator starts the fork server *before* the main process
  imports torch, preloading torch as well as the other strategies' modules
  (``workers.start_fork_server``): the two imports run side by side and every worker
  forks with torch loaded. First batch 3.8-4.2 s -> 2.5-2.9 s after the program
  starts (baseline 0.3-0.45 s; ``data/real``, 2 workers). If another strategy
  started the server first, it lacks torch and each worker imports it (~2 s).
  Under ``spawn`` each worker always imports torch.
- ``timeout=config.timeout``: torch's longest wait for one item; it raises
  ``RuntimeError("DataLoader timed out ...")``, mapped to ``WorkerTimeoutError``.
- ``pin_memory=False``: ``LoaderConfig.pin_memory`` pins the assembled batch, as for every
  strategy (``BatchGenerator._deliver``); torch's would pin each image's tiles before assembly.
- ``collate_fn=as_is``: no ``default_convert`` walk over the item.
- ``generator=torch.Generator()``: torch draws a seed from it at every ``iter()``;
  with the default it would advance the user's global torch RNG each epoch.
- ``shuffle`` off (a sampler is given): the plan already orders the images.
- Torch's sharing strategy is its own (``file_descriptor`` on Linux); we leave it.

How the pixels travel (``payload``): the worker writes the tiles straight into two
fresh tensors allocated in shared memory (``UntypedStorage._new_shared``), so pickling
them onto the data queue sends only their file descriptors (torch's
``file_descriptor`` strategy; the segments are unlinked at creation, so /dev/shm
never keeps a name). The main process maps them and the assembler copies the tiles
out: one copy per byte, like ``shm``. The alternatives, measured on ``data/real``
(batch 32, tile 256, 2 workers, prefetch 2, forkserver; 2 cores shared with other
jobs, load average 5-6, so CPU time per batch is the figure to trust)::

    payload   batches/s   main CPU ms/batch   workers CPU ms/batch
    shm            26.9                 5.0                   21.7
    tensor         29.1                 5.2                   24.1   from_numpy; torch copies into shm
    numpy          22.4                13.0                   21.7   pickled whole through the pipe
    (the shm strategy: 54.1 batches/s, 1.6 and 14.1 ms; baseline 50.2, 15.0 ms)

``tensor`` is what a user returning arrays gets (``default_convert`` makes tensors
of them); ``shm`` saves the workers that copy. What is left over ``shm`` is torch's
design: fresh shared memory for every image (allocated and page-faulted in the
worker, mapped and faulted again in the main process), not recycled slots.

Who owns each buffer: each image's tensors are fresh (the data queue's feeder
thread pickles them after ``__getitem__`` returned, so a reused buffer could be
overwritten first); their memory is freed once the assembler has dropped the image
and the worker's data-queue feeder has sent it.

Errors: a worker's exception travels as data (``messages.WorkerFailure``, with its
traceback) and is raised as ``WorkerError`` with a ``RemoteTraceback`` cause, as in
``pipe``/``queue``/``shm``. Torch's own errors are mapped: a dead worker (its
``"DataLoader worker (pid(s) X) exited unexpectedly"``) to ``WorkerDiedError``, its
``"DataLoader timed out"`` to ``WorkerTimeoutError``.

Watching the workers: torch detects a dead worker with a process-wide SIGCHLD
handler that raises in the main thread *wherever it is* (inside the training step,
say), and that never fires for ``forkserver`` workers (the fork server's children,
not ours; torch then notices at its timeout). We take our workers out of torch's
SIGCHLD registry and wrap the iterator's data queue in :class:`WatchedQueue`, which
waits on the queue's pipe *and* the workers' sentinels, as every strategy here
does: a death raises at once, inside ``next()``, for every start method. A worker
that died between two ``next()`` calls is found by ``_check_workers`` at the next.

The start, in the background (``LoaderConfig.background_start``; ``strategies.background_start``):
a thread makes the DataLoader and starts its workers (the empty epoch's handshake
included) while the main process makes the images the loop asks for itself. Once the
thread has ended, the epoch's images not yet made become the DataLoader's epoch (the
sampler's jobs, then ``iter(loader)``), so its stream begins at the image the loop
wants next. If this process has not imported torch yet, the thread first waits for the
fork server to have imported it (``workers.wait_for_fork_server``): importing torch
holds this process's GIL for most of ~1.5 s, and while the fork server imports it on
the other core the loop's images are made at full speed. A worker whose set-up fails
(``worker.start``) answers its first image with the error, as torch's own loop would.

Early ``break``: nothing to do at once. The next ``iter(loader)`` makes torch wait
for every index still outstanding (up to ``workers * prefetch`` images, computed
for nothing) and discard them before the new epoch starts; the generation tag is
checked on every item anyway, so a stale image could not slip into an epoch.

Shutdown (``close()`` or garbage collection, through a ``weakref.finalize``): torch's
``_shutdown_workers`` (done event, ``None`` on every index queue, join of up to
``MP_STATUS_CHECK_INTERVAL`` = 5 s per worker, SIGTERM), then our escalation:
SIGTERM -> join ``TERMINATE_GRACE_S`` -> SIGKILL -> join ``KILL_GRACE_S``. After a
worker died or timed out, torch's graceful part is skipped (a dead worker may hold
the done event's lock; a stopped one would cost 5 s): straight to the escalation.
Torch workers watch their parent and exit within ~5 s when the main process dies.

Only this module (and ``output="torch"``) imports torch, and only inside functions:
``strategies/__init__`` imports every strategy module, and the other strategies'
workers must not pay torch's import.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, ClassVar

import numpy as np

from . import injection
from .background_start import BackgroundStart
from .base import BatchGenerator, owner_only
from .close_signal import CloseSignal
from .config import LoaderConfig
from .constants import KILL_GRACE_S
from .dataset import Dataset
from .errors import RemoteTraceback, WorkerDiedError, WorkerError, WorkerTimeoutError
from .internals import (
    loader_queues,
    loader_workers,
    new_shared_storage,
    queue_reader,
    shut_down_loader,
    tracker_pid,
    untrack_loader_workers,
    wrap_loader_data_queue,
)
from .main_guard import unguarded_main_hint
from .messages import WorkerFailure
from .plan import EpochPlan, ImageJob
from .shm_segments import check_free_space, close_queue, release_semaphores, remove_segments
from .stages import StageClock, time_queue_pickling
from .work import ProcessedImage, Processor, data_dtype, image_buffers, make_processor, tile_nbytes
from .workers import (
    FORKSERVER_PRELOAD,
    how_it_ended,
    start_fork_server,
    stop_processes,
    wait_for_fork_server,
    watch_parent,
)

# What torch's worker loop imports, for the fork server to import once (torch.utils.data
# is not imported by ``import torch`` alone).
TORCH_PRELOAD = ["torch", "torch.utils.data"]

# How the tiles cross from a worker to the main process (``TorchGenerator.payload``;
# measured in the module docstring):
# "shm": written into fresh shared-memory tensors, only their descriptors are pickled;
# "tensor": fresh NumPy arrays wrapped by torch.from_numpy, which torch copies into
#           shared memory when it pickles them;
# "numpy": fresh NumPy arrays, pickled whole through the data queue's pipe.
PAYLOADS = ("shm", "tensor", "numpy")
# What the generator waits for while its DataLoader's workers start.
STARTING = "the first answer of every worker"
# Torch's shared tensors are named torch_<pid of the process that made them>_<random>.
TORCH_SEGMENT_PREFIX = "torch_"


@dataclass(frozen=True, slots=True)
class TaggedJob:
    """The "index" the sampler yields: one image's job, tagged with its epoch's generation."""

    generation: int
    job: ImageJob


@dataclass(frozen=True, slots=True)
class ImageTensors:
    """One processed image as the worker returns it: (N, C, T, T) data in the config's dtype, (N, T, T) uint8 masks."""

    generation: int
    position: int
    image_index: int
    data: Any  # torch.Tensor (or np.ndarray for the "numpy" payload)
    masks: Any
    worker_id: int = 0
    stages: tuple[float, ...] = ()  # the worker's cumulative stage totals (strategies.stages)


class JobSampler:
    """Yields the current epoch's tagged jobs; lives in the main process only."""

    def __init__(self) -> None:
        self.jobs: tuple[TaggedJob, ...] = ()

    def __iter__(self) -> Iterator[TaggedJob]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)


def as_is(item: Any) -> Any:
    """The collate function: the item is already what the main process wants."""
    return item


def _shared_tensor(torch: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised tensor whose storage is in shared memory from the start (no copy when pickled)."""
    nbytes = int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
    return torch.empty(0, dtype=dtype).set_(new_shared_storage(torch, nbytes), 0, shape)


class ImageDataset:
    """Map-style dataset whose index is a :class:`TaggedJob`; each worker holds its own copy."""

    def __init__(self, dataset: Dataset, config: LoaderConfig, payload: str) -> None:
        self.dataset = dataset
        self.config = config
        self.tile = config.tile
        self.payload = payload
        self._processor: Processor | None = None  # made in the worker, on first use
        self.clock = StageClock()

    def __getitem__(self, tagged: TaggedJob) -> ImageTensors | WorkerFailure:
        import torch

        if _start_failure is not None:
            return _start_failure  # this worker's set-up failed: every image it is asked for fails so
        try:
            if self._processor is None:
                self._processor = make_processor(self.dataset, self.config)
                time_queue_pickling(self.clock)  # torch's data queue is a multiprocessing Queue
            job, t = tagged.job, self.tile
            n, channels = job.n_tiles, self.dataset.entries[job.image_index].channels
            with self.clock.timing("compute"):
                if self.payload == "shm":
                    data = _shared_tensor(torch, (n, channels, t, t), getattr(torch, self.config.dtype))
                    masks = _shared_tensor(torch, (n, t, t), torch.uint8)
                    self._processor.process(job, data.numpy(), masks.numpy())
                else:
                    data, masks = image_buffers(n, self.dataset, self.config)
                    self._processor.process(job, data, masks)
                    if self.payload == "tensor":
                        data, masks = torch.from_numpy(data), torch.from_numpy(masks)
            info = torch.utils.data.get_worker_info()
            worker_id = 0 if info is None else info.id
            return ImageTensors(
                tagged.generation, job.position, job.image_index, data, masks, worker_id, self.clock.totals()
            )
        except Exception as exc:  # travels as data, raised as WorkerError in the main process
            info = torch.utils.data.get_worker_info()
            return _failure(-1 if info is None else info.id, exc)


def _failure(worker_id: int, exc: Exception) -> WorkerFailure:
    """``exc``, raised in this worker, as the data the main process raises as :class:`WorkerError`."""
    return WorkerFailure(worker_id, os.getpid(), type(exc).__name__, str(exc), traceback.format_exc())


# In a DataLoader worker whose set-up failed (``_init_worker``): what it answers for every image.
# (Torch's own answer to a failing ``worker_init_fn`` is a bare "Caught ... in DataLoader worker".)
_start_failure: WorkerFailure | None = None


# How long a worker's excepthook waits to see whether a reset connection means the main process died.
ORPHAN_CHECK_S = 0.5
# How often a stuck fetch of an image's tensors looks whether close() was called from another thread.
FETCH_POLL_S = 0.05


def _init_worker(worker_id: int) -> None:
    """Each DataLoader worker exits within PARENT_POLL_S of the main process's death, quietly.

    Torch's own check (``ManagerWatchdog``) runs every 5 s, between items only. A set-up
    that fails (the ``worker.start`` injection point) answers every image with its error.
    """
    global _start_failure
    _quiet_when_orphaned(watch_parent())
    injection.arm_from_environment()  # nothing, unless a fault test armed a point (strategies.injection)
    try:
        injection.hit("worker.start", worker_id=worker_id)
    except Exception as exc:
        _start_failure = _failure(worker_id, exc)


def _quiet_when_orphaned(main_gone: Callable[[float], bool]) -> None:
    """Do not print a traceback for a connection the dead main process reset.

    A tensor's file descriptor crosses to the main process through
    ``multiprocessing.resource_sharer``: a thread of the worker hands it over when the
    main process connects. If the main process dies during that handshake, the thread
    reports the reset connection through ``sys.excepthook``: a traceback on stderr
    next to the real news (the main process died), from a worker that is about to
    exit anyway. Any other error, or a reset while the main process lives, is
    printed as before.
    """
    report = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        if issubclass(exc_type, ConnectionError) and main_gone(ORPHAN_CHECK_S):
            return
        report(exc_type, exc, tb)

    sys.excepthook = hook


class WatchedQueue:
    """The iterator's data queue, read as every strategy here reads: ``wait(reader + sentinels, timeout)``.

    Torch calls ``get(timeout)`` on it; a worker that is gone raises
    :class:`WorkerGone` at once (torch turns it into "DataLoader worker (pid(s) X)
    exited unexpectedly", which ``_torch_errors`` maps), whatever the start method.
    Torch's own detection, a SIGCHLD handler, misses ``forkserver`` workers (they are
    the fork server's children, not ours) and raises wherever the main thread is.
    """

    def __init__(self, inner: Any, workers: list[mp.process.BaseProcess], close_signal: CloseSignal) -> None:
        self.inner = inner
        self.workers = workers
        self.close_signal = close_signal  # close() from another thread: LoaderClosedError, through torch

    def get(self, timeout: float | None = None) -> Any:
        reader = queue_reader(self.inner)
        sentinels = {w.sentinel: w for w in self.workers}
        ready = wait([reader, *sentinels, self.close_signal], timeout)
        self.close_signal.check("an image from the DataLoader")
        self._raise_if_gone([sentinels[r] for r in ready if r in sentinels])
        if reader not in ready:
            raise queue.Empty
        try:
            # Readable now, and a small message (the tensors' descriptors) arrives whole.
            # (Not so the "numpy" payload's: a worker killed in the middle of writing
            # one would leave this read waiting for the rest. It is for measurements.)
            return self._get_bounded(timeout)
        except (OSError, EOFError) as exc:
            # The message of a worker killed just after it sent it: its tensors'
            # descriptors can no longer be fetched from it. Its death shows at once.
            ready = wait(list(sentinels), KILL_GRACE_S)
            self._raise_if_gone([sentinels[r] for r in ready], exc)
            raise

    def _get_bounded(self, timeout: float | None) -> Any:
        """``inner.get``, given up after ``timeout`` s.

        Unpickling a message fetches each tensor's file descriptor from the sending
        worker (torch's ``file_descriptor`` sharing, through multiprocessing's
        ``resource_sharer``), with no timeout: a worker stopped after sending never
        answers. So the get runs in a helper thread; if it is still stuck when the
        time is up, the queue is abandoned (the generator is closed after the error,
        the worker killed, and the thread's connection breaks).
        """
        outcome: list[tuple[bool, Any]] = []

        def fetch() -> None:
            try:
                outcome.append((True, self.inner.get(timeout=timeout)))
            except BaseException as exc:  # handed to the main thread below
                outcome.append((False, exc))

        fetcher = threading.Thread(target=fetch, name="ipcbench-torch-fetch", daemon=True)
        fetcher.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while fetcher.is_alive() and (deadline is None or time.monotonic() < deadline):
            fetcher.join(FETCH_POLL_S)
            self.close_signal.check("an image's tensors from the DataLoader")
        if not outcome:
            raise queue.Empty  # torch reports "DataLoader timed out", mapped to WorkerTimeoutError
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    @staticmethod
    def _raise_if_gone(gone: list[mp.process.BaseProcess], cause: BaseException | None = None) -> None:
        if gone:
            for w in gone:
                w.join(KILL_GRACE_S)  # its descriptors are closed, it is exiting: learn how it ended
            raise WorkerGone(", ".join(f"pid {w.pid} {how_it_ended(w.exitcode)}" for w in gone)) from cause

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class WorkerGone(RuntimeError):
    """Raised inside torch's ``_try_get_data``, which reports it as a worker that exited unexpectedly."""


class _LoaderState:
    """What the finalizer needs, without a reference to the generator."""

    def __init__(self) -> None:
        self.loader: Any = None
        self.iterator: Any = None
        self.broken = False  # a worker died or timed out: no graceful shutdown
        self.tracker: int | None = None  # the resource tracker the iterator's semaphores went to


def _close_loader(state: _LoaderState) -> None:
    """Torch's shutdown of the workers, then ours: SIGTERM -> bounded join -> SIGKILL -> join. Idempotent."""
    iterator, state.iterator, state.loader = state.iterator, None, None
    if iterator is None:
        return
    workers = loader_workers(iterator)
    index_queues, result_queue, done_event = loader_queues(iterator)
    try:
        if state.broken or any(w.exitcode is not None for w in workers):
            # A dead worker may hold the lock of the done event that torch's shutdown
            # sets (torch counts on SIGCHLD to break that hang), a stopped one would
            # be joined for 5 s: skip torch's part, the escalation below does it.
            shut_down_loader(iterator, politely=False)
            for q in index_queues:
                q.cancel_join_thread()  # our feeder threads must not wait for dead readers
                q.close()
        else:
            shut_down_loader(iterator, politely=True)  # a no-op at interpreter exit: then the escalation does it
    finally:
        stop_processes(workers)
        # The iterator's queues hold pipes, closed by feeder threads (or the collector)
        # some time later, and with its done event 14 named semaphores (2 workers) under
        # spawn/forkserver; the workers are gone, so all of it goes now (as queue's do).
        for channel in (*index_queues, result_queue):
            channel.cancel_join_thread()
            close_queue(channel, KILL_GRACE_S)
        release_semaphores(state.tracker, *index_queues, result_queue, done_event)
        # Torch names each shared tensor torch_<worker pid>_... and unlinks the name at once;
        # a worker that failed in between (no space left, killed) leaves it behind.
        remove_segments(TORCH_SEGMENT_PREFIX, [w.pid for w in workers])


def image_tile_bytes(dataset: Dataset, config: LoaderConfig) -> int:
    """Bytes of one tile's data and mask: a processed image takes ``n_tiles`` times this."""
    return sum(tile_nbytes(dataset.channels, config.tile, data_dtype(config)))


class TorchGenerator(BatchGenerator):
    """A persistent ``DataLoader`` produces processed images; the base class assembles batches."""

    name = "torch"
    worker_processes = True
    shared_memory = True
    starts_in_background = True
    payload: ClassVar[str] = "shm"  # one of PAYLOADS

    def __init__(self, dataset: Dataset | str | os.PathLike[str], config: LoaderConfig) -> None:
        super().__init__(dataset, config)
        if self.payload != "numpy":
            # A full window of images in shared tensors, plus the one being assembled: a
            # small /dev/shm (Docker's 64 MB) is a clear error now, not torch's ENOSPC later.
            images = config.workers * self.prefetch + 1
            check_free_space(images * self.max_tiles * image_tile_bytes(self.dataset, config))
        if config.start_method == "forkserver":
            # Workers forked from a server that has imported torch start in ~20 ms,
            # instead of each importing it (~2 s); the server imports it while we do.
            start_fork_server(FORKSERVER_PRELOAD + TORCH_PRELOAD)
        if self.payload not in PAYLOADS:
            raise ValueError(f"{type(self).__name__}.payload={self.payload!r} must be one of {PAYLOADS}")
        self.generation = 0
        self._wanted = 0
        self._sampler = JobSampler()
        self._state = _LoaderState()
        self._finalizer = weakref.finalize(self, owner_only(_close_loader, self._state))
        # LoaderConfig.background_start: the DataLoader's start, until its workers take over
        # (strategies.background_start), and the epoch's images not yet made meanwhile.
        self._starting: BackgroundStart | None = None
        self._pending: deque[ImageJob] = deque()
        if config.background_start:
            self._starting = BackgroundStart(self.name, self._start_loader, self.dataset, config)
            return
        try:
            self._start_loader()
        except BaseException:
            self._finalizer()
            raise

    def _start_loader(self) -> None:
        """The DataLoader, its workers started and ready for an epoch (in a thread under ``background_start``)."""
        if self.config.background_start and self.config.start_method == "forkserver" and "torch" not in sys.modules:
            # Importing torch holds this process's GIL for most of its ~1.5 s, which would slow the
            # images the loop's thread makes meanwhile several times over (the first batch 0.06 ->
            # 0.6 s): the fork server imports it on the other core first.
            wait_for_fork_server()
        import torch  # here, never at module import: see the module docstring
        from torch.utils.data import DataLoader

        c = self.config
        self._state.loader = DataLoader(
            ImageDataset(self.dataset, c, self.payload),
            batch_size=None,
            sampler=self._sampler,
            collate_fn=as_is,
            num_workers=c.workers,
            prefetch_factor=self.prefetch,
            persistent_workers=True,
            multiprocessing_context=c.start_method,
            timeout=c.wait_timeout,
            pin_memory=False,
            generator=torch.Generator(),
            worker_init_fn=_init_worker,
        )
        with self._torch_errors(STARTING):
            iterator = self._state.iterator = iter(self._state.loader)  # starts the workers
            self._state.tracker = tracker_pid()
            # Death is watched where we wait (WatchedQueue), not by torch's SIGCHLD
            # handler, which would raise anywhere in the main thread (and which torch
            # does not install from another thread, as under background_start).
            untrack_loader_workers(iterator)
            workers = loader_workers(iterator)
            wrap_loader_data_queue(iterator, lambda inner: WatchedQueue(inner, workers, self.close_signal))
            # An empty epoch: torch sends every worker a resume message and
            # waits for its answer, so the generator is ready when we return.
            iter(self._state.loader)

    def _workers_ready(self) -> bool:
        """Whether the DataLoader is ready; a background start that failed raises its error here."""
        return self._starting is None or self._starting.ready()

    def _give_to_loader(self, jobs: Iterable[ImageJob], waiting_for: str) -> None:
        """``jobs``, the current epoch's from the first not yet made, become the DataLoader's epoch."""
        self._sampler.jobs = tuple(TaggedJob(self.generation, job) for job in jobs)
        self._check_workers(waiting_for)
        with self._torch_errors(waiting_for):
            iter(self._state.loader)  # drains the abandoned epoch's images, then primes the window

    # -- producer hooks -------------------------------------------------------
    def _begin_epoch(self, plan: EpochPlan) -> None:
        self.generation += 1
        self._wanted = 0
        if not self._workers_ready():
            self._pending = deque(plan.jobs)  # made here, until the DataLoader is ready
            return
        self._starting = None
        self._give_to_loader(plan.jobs, f"the answer of every worker to the reset for epoch {plan.epoch}")

    def _next_image(self) -> ProcessedImage:
        if self._starting is not None:  # started in the background
            if not self._workers_ready():
                image = self._starting.make_next(self._pending, self._wanted, self.clock)
                self._wanted += 1
                return image
            self._starting = None  # the DataLoader's workers take over from here
            pending, self._pending = self._pending, deque()
            self._give_to_loader(pending, f"the answer of every worker to the hand-over of epoch {self.epoch}")
        waiting_for = f"image {self._wanted} of epoch {self.epoch}"
        self._check_workers(waiting_for)
        # torch reads and unpickles inside next(): main-side transfer and serialize count as wait here.
        with self._torch_errors(waiting_for), self.clock.timing("wait"):
            try:
                item = next(self._state.iterator)
            except StopIteration:
                raise RuntimeError(f"torch: the DataLoader ended before {waiting_for}") from None
        if isinstance(item, WorkerFailure):
            error = WorkerError(
                f"torch worker {item.worker_id} (pid {item.pid}) raised {item.exc_type}: {item.message}",
                worker_id=item.worker_id,
                pid=item.pid,
            )
            raise error from RemoteTraceback(item.traceback)
        if item.generation != self.generation or item.position != self._wanted:
            raise RuntimeError(
                f"torch: got image {item.position} of generation {item.generation} while "
                f"waiting for {waiting_for} (generation {self.generation})"
            )
        self._wanted += 1
        self._worker_stages[item.worker_id] = item.stages
        data, masks = item.data, item.masks
        if not isinstance(data, np.ndarray):
            data, masks = data.numpy(), masks.numpy()  # views; they keep the shared tensors alive
        return ProcessedImage(item.position, item.image_index, data, masks)

    def _shutdown(self) -> None:
        if self._starting is not None:
            # close() fired the close signal, which the start's wait for the workers' answers
            # watches: the thread returns once the worker processes in progress have started.
            # Workers that have not answered the start are not asked to stop politely (torch
            # would join each for 5 s): straight to SIGTERM.
            if not self._starting.join(self.config.wait_timeout):
                self._state.broken = True
            self._starting = None
        self._sampler.jobs = ()
        self._pending.clear()
        self._finalizer()

    # -- workers and errors -------------------------------------------------
    def _workers(self) -> list[mp.process.BaseProcess]:
        iterator = self._state.iterator
        return [] if iterator is None else loader_workers(iterator)

    def worker_pids(self) -> list[int]:
        """The workers' process ids; none until they are ready (``background_start``)."""
        if self._starting is not None and self._starting.running:
            return []
        return [w.pid for w in self._workers()]

    def _death(self, waiting_for: str) -> WorkerDiedError | None:
        """The error for the first worker that is gone, if one is."""
        for worker_id, w in enumerate(self._workers()):
            if w.exitcode is not None:
                hint = unguarded_main_hint(self.config.start_method, w.exitcode) if waiting_for == STARTING else ""
                return WorkerDiedError(
                    f"torch: DataLoader worker {worker_id} (pid {w.pid}) "
                    f"{how_it_ended(w.exitcode)}; was waiting for {waiting_for}{hint}",
                    worker_id=worker_id,
                    pid=w.pid,
                    exitcode=w.exitcode,
                )
        return None

    def _check_workers(self, waiting_for: str) -> None:
        """Every worker must be alive: one that died between two waits is reported at the next one."""
        if (error := self._death(waiting_for)) is not None:
            raise error

    @contextmanager
    def _torch_errors(self, waiting_for: str) -> Iterator[None]:
        """Torch's RuntimeErrors for a dead worker or a timeout, as this package's error family."""
        try:
            yield
        except RuntimeError as exc:
            text = str(exc)
            if isinstance(exc, WorkerGone) or text.startswith("DataLoader worker"):
                self._state.broken = True
                error = self._death(waiting_for) or WorkerDiedError(f"torch: {text}; was waiting for {waiting_for}")
                raise error from exc
            if text.startswith("DataLoader timed out"):
                self._state.broken = True
                alive = [w.pid for w in self._workers() if w.exitcode is None]
                raise WorkerTimeoutError(
                    f"torch: {waiting_for} did not come within timeout={self.config.timeout:g}s; workers alive: {alive}"
                ) from exc
            raise
