"""grain: Google's Grain (0.2.18) ``mp_prefetch`` doing the per-image work, behind the BatchGenerator contract.

Message flow (the default ``payload``, "arrays")::

    main process                                         grain worker k (spawned; grain's loop)
    ------------                                         --------------------------------------
    one persistent pipeline, built once:                 _worker_main: ignore SIGINT, watch the
      MapDataset.range(stride * EPOCHS_AHEAD)              parent, quiet grain's import, name
        .map(JobAt)  (element i = job i % stride of        grain's segments after this worker,
         epoch first + i // stride; stride = the most      then grain's _put_dataset_elements_in_buffer
         jobs an epoch can have)                         JobAt(i) for i = k, k + W, k + 2W, ...:
        .to_iter_dataset(no threads, no buffer)            the epoch plan (a pure function), the
        .mp_prefetch(W workers, prefetch per worker)       per-image work into fresh ndarrays;
                                                           returns {"image": GrainImage (~200 bytes),
                                                           "data": ndarray, "masks": ndarray}
                                                         grain's copy_to_shm: each ndarray copied
                                                           into a fresh segment
                                                           ipcbench_<pid>_<hex>_grain; its name,
                                                           shape and dtype go on
    slot thread k (grain's ThreadPrefetch): grain's <--  output queue k (multiprocessing, maxsize
      open_from_shm maps the segments                      prefetch)
      (SharedMemoryArray) into its queue.Queue
      (prefetch deep), through WatchedBuffer
    _next_image: element i from slot i % W (grain's
      interleave: round robin, so plan order): the
      two SharedMemoryArrays, as ProcessedImage
    BatchGenerator._assemble copies the tiles into batches, as every strategy does; the
      image is dropped, and grain's SharedMemoryArray.__del__ unlinks its segments (on
      grain's deletion thread)

Epochs: one iterator over a range spanning many epochs keeps the workers alive
(rebuilding it spawns new ones: ~20 batches/s instead of ~260 on the transfer
workload). An epoch with fewer jobs than ``stride`` (``drop_last``, uneven shards)
leaves elements that are padding (a worker returns an element without arrays for
them); an abandoned epoch (early ``break``) leaves real jobs. Either way the next
epoch starts with a jump: grain's own checkpoint API, ``set_state`` on the interleave
iterator with each worker's next index set to the next epoch's first element of its
slice. The workers stay; grain discards what they had buffered (up to ``2 * prefetch
+ 1`` images a worker: the queue, the slot thread's queue, the one in hand) and
unlinks the discarded images' segments itself (``unlink_shm`` in the worker for the
queue's, ``SharedMemoryArray.__del__`` here for the slot queue's). An epoch that ends
where the next one starts needs no jump: the workers prefetch across the boundary.

Settings, and why: ``ReadOptions(num_threads=0, prefetch_buffer_size=0)`` (defaults:
16 threads and a 500-element buffer in each worker, gigabytes of images here): the
work runs in the worker's main thread, one image at a time, as every strategy here
does it. ``MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch)``:
grain applies that depth twice, to the worker's output queue and to the slot thread's
queue in this process, so up to ``2 * prefetch + 1`` images per worker are in flight.

Start method: grain always spawns its workers (``mp.get_context("spawn")``), whatever
``LoaderConfig.start_method`` says; it is ignored. Each generator pays a spawn and an
import of grain per worker (~1-2 s on 2 cores).

How the pixels travel (``payload``). "arrays" (the default) is what grain does for
its users: the worker's function returns the image's ndarrays, and grain moves them.
Copies per byte: the per-image work writes the tiles into the worker's fresh ndarrays
(private memory); grain's ``copy_to_shm`` copies each into a fresh shared-memory
segment (``np.copyto``, page-faulting it in); the main process maps it (grain's
``open_from_shm``: no copy, the pages are faulted again on first read); the assembler
copies the tiles out into the batch. Two copies, like torch's ``tensor`` payload.
All of that is grain's code; this module changes only what ``SharedMemory`` grain's
``shared_memory_array`` module calls (:class:`AttributedSharedMemory`, installed in
every worker and in this process): a segment a worker makes is named
``ipcbench_<worker pid>_<hex>_grain`` instead of ``psm_<random>`` (so a killed
worker's segments can be found and attributed: ``stale_segments``, ``ipcbench
clean``, the fault harness), and those segments are never registered with the
resource tracker (Python 3.11 registers every segment made or mapped, in each
process; a killed tracker is relaunched by the next registration, and the new one
prints a ``KeyError`` and "leaked shared_memory objects" at exit). "segment" (the
alternative, ``GrainGenerator.payload = "segment"``): the worker writes the tiles
straight into a segment of ours of the same name (``Segment.create(..., track=False)``)
and returns only its name; the main process maps it and unlinks the name at once
(:meth:`GrainImage.take`): one copy per byte, like ``shm``; grain then moves only a
small object. Measured on ``data/real`` (batch 32, tile 256, 2 workers, prefetch 2;
5 epochs after a warm-up one, two runs each, alternating; 2 cores shared with other
jobs, load average 4.6-5.3, so the CPU times are the figures to trust)::

    payload   batches/s   main CPU ms/batch   workers CPU ms/batch
    arrays    51.3, 45.8          3.7, 4.0             14.9, 14.0
    segment   43.6, 44.0          3.5, 3.4             13.7, 13.6

The two are within the noise of this machine (two 3-epoch runs before these: arrays
10.7 and 13.5 workers ms/batch, segment 13.6 and 14.4). The copy grain adds seems to
cost little; a likely reason (not measured): the ndarrays the work fills are reused
heap memory, without page faults, while the "segment" payload faults in a fresh
segment for every image, as grain's copy does.

Who owns each buffer: the ndarrays a worker's function returns are the worker's
(grain drops them after its copy). A segment belongs to the worker that made it
until grain puts its name on the output queue; from then on to grain: the slot
thread maps it, and grain's ``SharedMemoryArray.__del__`` unlinks it when the last
view here is dropped (the assembler's current image; a slot queue a jump or close()
clears), on grain's deletion thread; a name still on the queue when the worker stops
is unlinked by the worker (grain's ``_clear_queue_and_maybe_unlink_shm``). After
close() (grain's deletion thread drained first) whatever names a worker pid is
removed (``remove_segments``): a killed worker's, an unread queue's. A worker whose
main process died removes its own names before it exits (and makes none after).

Errors: the per-image work's exception travels as data (``messages.WorkerFailure`` in
the GrainImage) and is raised as ``WorkerError`` with a ``RemoteTraceback`` cause; any
other exception grain raises (its own, re-raised with the worker's traceback) becomes
``WorkerError`` with it as the cause.

Grain's raw behaviour under faults (grain 0.2.18, without this module's watch, 2
workers, default per-element ndarrays; from a feasibility probe and grain's source,
``process_prefetch.py``; not yet re-measured case by case): a worker that raises: grain carries
the exception with its reconstructed traceback to ``next()`` (good), but keeps the
failed worker idle and alive. A worker SIGKILLed mid-epoch: the slot thread's
``get(timeout=1)`` loop notices the non-zero exit code after up to 1 s and ``next()``
raises ``RuntimeError("Worker process was terminated unexpectedly with exit code
-9")``, but only once the interleave reaches that worker's turn; the other workers
go on; a ``psm_*`` segment it made and had not sent stays in /dev/shm until the
resource tracker exits. A worker SIGSTOPped (hung) or one that exits with status 0:
``next()`` waits for ever (no timeout exists; the slot thread polls every second).
The main process SIGKILLed: the workers never notice (they do not watch their
parent): 2 workers, the resource tracker, ~165 MB of ``psm_*`` segments and 50
semaphores stayed. ``close()``: joins each worker for up to 25 s, and each slot
thread with no timeout at all (a hung worker hangs it). Every exit printed
"leaked shared_memory objects" and ``__del__`` noise; ``import grain`` logs
"WARNING:absl:Failed to load jax profiler" (and installs a root logging handler).
(Not, as an earlier version of this docstring said, because every segment is
registered twice, by maker and reader: the 3.11 tracker keeps a set, so one
unregister forgets a name registered twice. From the source, not measured: the
warnings name what the tracker still holds when it exits, a killed worker's unsent
segments, and those whose unlink was still queued on grain's deletion thread.)

What this module adds: a watch where the main process waits (:meth:`_wait_for`: the
slot's queue, every worker's exit status, ``close_signal``, ``timeout``, in 50 ms
steps), so a dead worker is ``WorkerDiedError`` at once, a silent one
``WorkerTimeoutError`` after ``timeout``; :class:`WatchedBuffer` under each slot
thread (a dead worker raises there at once, and a stop request ends the thread's wait
within 50 ms); :func:`_worker_main` before grain's loop in each worker (SIGINT
ignored, ``workers.watch_parent`` with a sweep of the worker's own segments, fault
injection armed, grain's import quiet, :class:`AttributedSharedMemory` installed); a
filter on the ``absl`` logger for the profiler message only (scoped: the root handler absl's first warning installs is
removed again, so a real warning later is still printed).

Shutdown (``close()`` or garbage collection, through a ``weakref.finalize``): never
grain's ``close()`` (unbounded joins; and after a worker died it may hold a lock its
stop event needs). Instead: stop every slot thread's wait, ask the workers to stop
(grain's stop event; skipped after a failure), join for ``STOP_GRACE_S``, SIGTERM ->
``TERMINATE_GRACE_S`` -> SIGKILL -> ``KILL_GRACE_S``; join the slot threads, draining
their queues; close grain's make-iterator pool; close the queues' descriptors and
unlink their semaphores now (``release_semaphores``); wait for grain's deletion thread
to unlink what it was given; remove the workers' segments; and disarm the iterators'
``__del__``.

grain is imported lazily (inside functions), never at module import:
``strategies/__init__`` imports every strategy module, and grain may be absent.
"""

from __future__ import annotations

import importlib
import logging
import mmap
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import traceback
import types
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import shared_memory
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from . import injection
from .base import BatchGenerator, config_plan, owner_only
from .config import LoaderConfig
from .constants import KILL_GRACE_S, SHM_PREFIX, STOP_GRACE_S
from .dataset import Dataset
from .errors import LoaderClosedError, RemoteTraceback, WorkerDiedError, WorkerError, WorkerTimeoutError
from .internals import (
    disarm_grain_iterator,
    flush_grain_shm_deletes,
    grain_make_iter_pool,
    grain_process,
    grain_slots,
    grain_stop_events,
    grain_thread,
    grain_thread_buffer,
    grain_worker_channels,
    grain_worker_iterator,
    queue_reader,
    set_grain_process_context,
    set_grain_shared_memory,
    shm_open,
    shm_unlink,
    tracker_pid,
    wait_not_empty,
    wrap_grain_buffer,
)
from .messages import WorkerFailure
from .plan import EpochPlan
from .shm_segments import Segment, check_free_space, close_queue, release_semaphores, remove_segments, segment_name
from .stages import StageClock
from .torch_loader import image_tile_bytes
from .work import ProcessedImage, Processor, data_dtype, make_processor
from .workers import how_it_ended, stop_processes, watch_parent

# The pipeline's range spans this many epochs (it is lazy: only its length is stored).
EPOCHS_AHEAD = 10**9
# How often the waits (main process and slot threads) look at the workers and the close signal.
WATCH_SLICE_S = 0.05
# Segments a grain worker makes (grain's own, or ours with the "segment" payload):
# ipcbench_<worker pid>_<hex>_grain.
SEGMENT_TAG = "grain"
# How the tiles cross from a worker to the main process (``GrainGenerator.payload``;
# measured in the module docstring):
# "arrays": the worker returns fresh ndarrays; grain copies each into a fresh shared-memory
#           segment, the main process maps it (grain's own transport);
# "segment": the worker writes the tiles into a segment of ours and returns its name.
PAYLOADS = ("arrays", "segment")
# The one message of grain's import that is noise here (no jax: no profiler, nothing lost).
GRAIN_NOISE = ("Failed to load jax profiler",)

_worker_id = -1  # set in each worker process by _worker_main
# Held while a worker makes a segment; taken for good by the sweep before the worker exits.
_making = threading.Lock()


# -- quiet grain ---------------------------------------------------------------------------
class _GrainNoise(logging.Filter):
    """Drops grain's profiler message from the ``absl`` logger; everything else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(GRAIN_NOISE)


@contextmanager
def quiet_grain() -> Iterator[None]:
    """Import grain (or what imports it) without its noise, and without changing the root logger.

    absl's first warning calls ``logging.basicConfig()`` when the root logger has no
    handler; the handler it installs is removed again, so the program's logging is
    as it was (and a real absl warning later installs it then, and is printed).
    """
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _GrainNoise) for f in absl.filters):
        absl.addFilter(_GrainNoise())
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        yield
    finally:
        if not before:
            for handler in [h for h in root.handlers if h not in before]:
                root.removeHandler(handler)


def import_grain() -> Any:
    with quiet_grain():
        import grain

    return grain


# -- what a worker returns -------------------------------------------------------------------
class GrainImage:
    """An element's small part: which image (or padding, or a failure), and its stage times.

    With the "segment" payload it also names the image's segment, and is unpickled (in
    the main process, or in a worker clearing its queue) with a finalizer that unlinks
    that name unless :meth:`take` claimed it: an image grain discards (a jump, a
    close) leaves nothing behind. With "arrays" grain carries the arrays beside it.
    """

    __slots__ = (
        "__weakref__",
        "_finalizer",
        "channels",
        "failure",
        "image_index",
        "index",
        "n_tiles",
        "segment",
        "stages",
        "worker_id",
    )

    def __init__(
        self,
        index: int,
        image_index: int = -1,
        segment: str | None = None,
        n_tiles: int = 0,
        channels: int = 0,
        stages: tuple[float, ...] = (),
        failure: WorkerFailure | None = None,
        worker_id: int = -1,
    ) -> None:
        self.index = index
        self.image_index = image_index
        self.segment = segment
        self.n_tiles = n_tiles
        self.channels = channels
        self.stages = stages
        self.failure = failure
        self.worker_id = worker_id
        self._finalizer: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.index, self.image_index, self.segment, self.n_tiles, self.channels, self.stages, self.failure)
        return (_arrived, (*fields, self.worker_id))

    def take(self, tile: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """Map the segment, unlink its name, return (data, masks) views of it (valid while referenced)."""
        assert self.segment is not None
        data_bytes, mask_bytes = segment_layout(self.n_tiles, self.channels, tile, dtype)
        segment = Segment.attach(self.segment, data_bytes + mask_bytes)
        shm_unlink(self.segment)
        if self._finalizer is not None:
            self._finalizer.detach()
        data = np.ndarray((self.n_tiles, self.channels, tile, tile), dtype, buffer=segment.buf)
        masks = np.ndarray((self.n_tiles, tile, tile), np.uint8, buffer=segment.buf, offset=data_bytes)
        return data, masks


def _arrived(*fields: Any) -> GrainImage:
    image = GrainImage(*fields)
    if image.segment is not None:
        image._finalizer = weakref.finalize(image, _unlink_quietly, image.segment)
    return image


def _unlink_quietly(name: str) -> None:
    try:
        shm_unlink(name)
    except FileNotFoundError:
        pass  # taken, or removed with its worker's segments


def segment_layout(n_tiles: int, channels: int, tile: int, dtype: np.dtype) -> tuple[int, int]:
    """Bytes of an image's data (first) and masks (after it) in its segment."""
    return n_tiles * channels * tile * tile * np.dtype(dtype).itemsize, n_tiles * tile * tile


# -- the worker side -------------------------------------------------------------------------
class JobAt:
    """The mapped function: element ``index`` of the pipeline -> that job, processed (``payload``).

    Made in the main process, cloudpickled by grain into every worker; the plan and
    the processor are made in the worker, on first use.
    """

    def __init__(self, dataset: Dataset, config: LoaderConfig, stride: int, payload: str) -> None:
        self.dataset = dataset
        self.config = config
        self.stride = stride
        self.payload = payload
        self._plan: EpochPlan | None = None
        self._processor: Processor | None = None
        self._clock: StageClock | None = None

    def __call__(self, index: int) -> dict[str, Any]:
        """``{"image": GrainImage, "data": ndarray, "masks": ndarray}`` (no arrays: padding, a failure, a segment)."""
        try:
            epoch, position = self.config.epoch + index // self.stride, index % self.stride
            if self._plan is None or self._plan.epoch != epoch:
                self._plan = config_plan(self.dataset, self.config, epoch)
            if position >= len(self._plan.jobs):
                return {"image": GrainImage(index, worker_id=_worker_id)}  # padding: the epoch has fewer jobs
            job = self._plan.jobs[position]
            if self._processor is None:
                self._processor = make_processor(self.dataset, self.config)
                self._clock = StageClock()
            assert self._clock is not None
            element: dict[str, Any] = {}
            with self._clock.timing("compute"):
                if self.payload == "arrays":
                    element["data"], element["masks"] = self._arrays(job)
                    name = None
                else:
                    name = self._process(job)
            element["image"] = GrainImage(
                index,
                job.image_index,
                name,
                job.n_tiles,
                self.dataset.entries[job.image_index].channels,
                self._clock.totals(),
                worker_id=_worker_id,
            )
            return element
        except Exception as exc:  # travels as data, raised as WorkerError in the main process
            failure = WorkerFailure(_worker_id, os.getpid(), type(exc).__name__, str(exc), traceback.format_exc())
            return {"image": GrainImage(index, failure=failure, worker_id=_worker_id)}

    def _arrays(self, job: Any) -> tuple[np.ndarray, np.ndarray]:
        """The image's tiles in fresh ndarrays (grain copies them into shared memory after we return)."""
        assert self._processor is not None
        t = self.config.tile
        channels = self.dataset.entries[job.image_index].channels
        data = np.empty((job.n_tiles, channels, t, t), data_dtype(self.config))
        masks = np.empty((job.n_tiles, t, t), np.uint8)
        self._processor.process(job, data, masks)
        return data, masks

    def _process(self, job: Any) -> str:
        assert self._processor is not None
        t, dtype = self.config.tile, data_dtype(self.config)
        channels = self.dataset.entries[job.image_index].channels
        data_bytes, mask_bytes = segment_layout(job.n_tiles, channels, t, dtype)
        with _making:
            segment = Segment.create(data_bytes + mask_bytes, SEGMENT_TAG, track=False)
        try:
            data = np.ndarray((job.n_tiles, channels, t, t), dtype, buffer=segment.buf)
            masks = np.ndarray((job.n_tiles, t, t), np.uint8, buffer=segment.buf, offset=data_bytes)
            self._processor.process(job, data, masks)
            del data, masks
        except BaseException:
            segment.release()
            raise
        segment.buf.close()
        return segment.name


def _attributed(name: str) -> bool:
    """Whether ``name`` is a segment a grain worker of ours made: ``ipcbench_<pid>_<hex>_grain``."""
    return name.startswith(SHM_PREFIX) and name.endswith(f"_{SEGMENT_TAG}")


class AttributedSharedMemory(shared_memory.SharedMemory):
    """What grain's ``SharedMemoryArray`` uses as ``SharedMemory`` here: new segments named after the worker.

    Grain calls ``SharedMemory(create=True, size=size)`` for every array a worker
    returns (Python picks a random ``psm_*`` name), ``SharedMemory(name)`` to map one
    (the main process's ``open_from_shm``; a worker's ``unlink_shm`` of one it drops)
    and ``unlink()`` once. This class changes two things only. A new segment is named
    ``ipcbench_<worker pid>_<hex>_grain`` (``segment_name``). And segments so named
    are not registered with the resource tracker (Python 3.11 registers every segment
    made *or mapped*, in every process, and unregisters at ``unlink()``; a killed
    tracker is relaunched by the next registration, with a warning, and the new one
    prints a ``KeyError`` for a name it never held and "leaked shared_memory
    objects" for the names only the killed one was told were unlinked): what cleans
    up after a death is this module's sweep by worker pid instead. Creating,
    sizing (``ftruncate``), mapping, closing and unlinking are what
    ``SharedMemory.__init__``/``close``/``unlink`` do. Any other name (grain used
    elsewhere in the program) gets Python's ``SharedMemory`` unchanged.
    """

    _tracked = False

    def __init__(self, name: str | None = None, create: bool = False, size: int = 0) -> None:
        if create and name is None:
            if size <= 0:
                raise ValueError("'size' must be a positive number different from zero")
            with _making:  # the sweep before a worker exits waits for a segment being made, and stops new ones
                self._open(segment_name(SEGMENT_TAG), os.O_CREAT | os.O_EXCL | os.O_RDWR, size)
        elif name is not None and not create and _attributed(name):
            self._open(name, os.O_RDWR, 0)
        else:
            super().__init__(name, create, size)
            self._tracked = True

    def _open(self, name: str, flags: int, size: int) -> None:
        self._flags = flags
        self._fd = shm_open(name, flags)
        self._name = "/" + name
        try:
            if size:
                os.ftruncate(self._fd, size)
            size = os.fstat(self._fd).st_size
            self._mmap = mmap.mmap(self._fd, size)
        except OSError:
            if flags & os.O_CREAT:
                self.unlink()
            raise
        self._size = size
        self._buf = memoryview(self._mmap)

    def unlink(self) -> None:
        if self._tracked:
            super().unlink()
        else:
            shm_unlink(self.name)


GRAIN_SHARED_MEMORY = types.SimpleNamespace(SharedMemory=AttributedSharedMemory)


def _remove_own_segments() -> None:
    """The main process is gone: remove this worker's segments before it exits."""
    _making.acquire(timeout=KILL_GRACE_S)  # never released: no segment is made after the sweep
    remove_segments(SHM_PREFIX, [os.getpid()])


def _worker_main(worker_id: int, target: str, kwargs: dict[str, Any]) -> None:
    """Each grain worker process runs this, then grain's own loop (``target``)."""
    global _worker_id
    _worker_id = worker_id
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    watch_parent(before_exit=_remove_own_segments)  # grain's workers do not watch their parent
    injection.arm_from_environment()  # nothing, unless a fault test armed a point (strategies.injection)
    module, _, name = target.partition(":")
    with quiet_grain():
        loop = getattr(importlib.import_module(module), name)
    set_grain_shared_memory(GRAIN_SHARED_MEMORY)  # grain's segments, named after this worker
    loop(**kwargs)


class _WorkerContext:
    """What a grain worker iterator starts its process with: spawn, through :func:`_worker_main`."""

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        self._spawn = mp.get_context("spawn")

    def Process(self, *, target: Any, kwargs: dict[str, Any], daemon: bool = True, name: str = "") -> Any:
        return self._spawn.Process(
            target=_worker_main,
            args=(self.worker_id, f"{target.__module__}:{target.__qualname__}", kwargs),
            daemon=daemon,
            name=f"ipcbench-grain-{self.worker_id}",
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spawn, name)


# -- the main side ---------------------------------------------------------------------------
class WorkerGone(RuntimeError):
    """Raised in a slot thread's wait when its worker process has exited."""


class _Stopped(RuntimeError):
    """Raised in a slot thread's wait when it was asked to stop (a jump, or close())."""


class WatchedBuffer:
    """A worker's output queue as its slot thread reads it: the queue, the worker's sentinel, stop requests.

    Grain's thread calls ``get(timeout=1)`` in a loop and learns of a dead worker from
    its exit code only when one of those times out (and never of one that exited
    with 0); here a dead worker raises :class:`WorkerGone` at once, and a stop request
    (grain's own stop event for the thread, or close()) :class:`_Stopped` within
    ``WATCH_SLICE_S``.
    """

    def __init__(self, inner: Any, process: Any, thread_stop: threading.Event, closing: threading.Event) -> None:
        self.inner = inner
        self.process = process
        self.thread_stop = thread_stop
        self.closing = closing

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block:
            return self.inner.get_nowait()
        deadline = None if timeout is None else time.monotonic() + timeout
        reader = queue_reader(self.inner)
        while True:
            if self.closing.is_set() or self.thread_stop.is_set():
                raise _Stopped("the slot thread was asked to stop")
            step = WATCH_SLICE_S if deadline is None else max(0.0, min(WATCH_SLICE_S, deadline - time.monotonic()))
            ready = wait([reader, self.process.sentinel], step)
            if reader in ready:
                return self.inner.get(timeout=KILL_GRACE_S)  # a small message, written whole
            if ready:
                self.process.join(KILL_GRACE_S)
                raise WorkerGone(f"pid {self.process.pid} {how_it_ended(self.process.exitcode)}")
            if deadline is not None and time.monotonic() >= deadline:
                raise queue.Empty

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Reaper:
    """Lets grain's ``SharedMemoryArray`` s die on a thread of their own, never on the main thread.

    Their ``__del__`` (which queues the unlink) runs Python code wherever the last
    reference goes; on the main thread a Ctrl-C that arrives meanwhile is raised inside
    ``__del__``, printed as "Exception ignored" and lost: the loop never sees it
    (measured: 1 run of 9 with SIGINT to the process group). So the main process keeps
    a reference to every array it takes from grain here, and this thread drops each
    once that is the only one left (the assembler has dropped the image and its views,
    which are plain ndarrays: a slice of a ``SharedMemoryArray`` would be one, with the
    same ``__del__``).
    """

    PERIOD_S = 0.05
    OURS = 3  # references while only the list holds an array: the list, the loop variable, getrefcount's

    def __init__(self) -> None:
        self._held: list[Any] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grain-array-reaper", daemon=True)
        self._thread.start()

    def hold(self, *arrays: Any) -> None:
        with self._lock:
            self._held.extend(arrays)

    def _run(self) -> None:
        while not self._stop.wait(self.PERIOD_S):
            self._reap()
        self._reap()

    def _reap(self) -> None:
        with self._lock:
            kept, dropped = [], []
            for array in self._held:
                (dropped if sys.getrefcount(array) <= self.OURS else kept).append(array)
            self._held = kept
        dropped.clear()  # grain's __del__ runs here, on this thread

    def stop(self, timeout: float) -> None:
        """Stop after a last pass; whatever is still referenced elsewhere dies with its holder."""
        self._stop.set()
        self._thread.join(timeout)
        with self._lock:
            self._held = []


class _GrainState:
    """What the finalizer needs, without a reference to the generator."""

    def __init__(self) -> None:
        self.reaper: _Reaper | None = None
        self.iterator: Any = None
        self.slots: list[Any] = []
        self.workers: list[Any] = []  # grain's per-worker iterators
        self.processes: list[Any] = []
        self.pids: list[int] = []
        self.closing = threading.Event()
        self.broken = False  # a worker died, failed or timed out: no polite stop
        self.tracker: int | None = None


def _close_grain(state: _GrainState) -> None:
    """Stop the slot threads and the workers (polite, SIGTERM, SIGKILL), release everything. Idempotent."""
    iterator, state.iterator = state.iterator, None
    if iterator is None:
        if state.reaper is not None:
            state.reaper.stop(KILL_GRACE_S)
        return
    state.closing.set()
    processes = [p for p in state.processes if p is not None]
    thread_stops = []
    for slot in state.slots:
        thread_stop, worker_stop = grain_stop_events(slot)
        thread_stops.append(thread_stop)
        thread_stop.set()
        if not state.broken and all(p.exitcode is None for p in processes):
            worker_stop.set()  # grain's stop: the worker leaves its loop after the image in hand
    try:
        stop_processes(processes, 0.0 if state.broken else STOP_GRACE_S)
    finally:
        for p in processes:
            if p.exitcode is not None:
                p.close()  # its sentinel and its spawn pipe: two descriptors each
        _release(state, iterator)


def _release(state: _GrainState, iterator: Any) -> None:
    """After the workers: the slot threads, grain's pool, descriptors, semaphores, segments."""
    deadline = time.monotonic() + KILL_GRACE_S
    for slot in state.slots:
        thread, buffer = grain_thread(slot), grain_thread_buffer(slot)
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            try:
                while True:
                    buffer.get_nowait()  # room for the thread's last put; dropped images unlink their names
            except queue.Empty:
                pass
            thread.join(WATCH_SLICE_S)
        try:
            while True:
                buffer.get_nowait()
        except queue.Empty:
            pass
    try:
        grain_make_iter_pool(iterator).close()
    except Exception:  # a pool that failed to start has nothing to stop
        pass
    channels: list[Any] = []
    for worker in state.workers:
        queues, others = grain_worker_channels(worker)
        for channel in queues:
            channel.cancel_join_thread()
            close_queue(channel, KILL_GRACE_S)
        channels += queues + others
    release_semaphores(state.tracker, *channels)
    # Every array the main process mapped is dropped now (the images in the slot queues
    # above, the generator's current one); grain unlinks them on its deletion thread.
    if state.reaper is not None:
        state.reaper.stop(KILL_GRACE_S)
    flush_grain_shm_deletes(KILL_GRACE_S)
    # Left: segments a worker made and nobody mapped (a killed worker's, a queue's).
    remove_segments(SHM_PREFIX, state.pids)
    for it in (iterator, *state.slots, *state.workers):
        disarm_grain_iterator(it)
    state.slots, state.workers = [], []


class GrainGenerator(BatchGenerator):
    """A persistent grain ``mp_prefetch`` pipeline produces processed images; the base class assembles batches."""

    name = "grain"
    payload = "arrays"  # how the tiles cross (PAYLOADS); a class attribute, for measuring the alternative
    worker_processes = True
    shared_memory = True
    requires = ("grain", "grain==0.2.18")

    def __init__(self, dataset: Dataset | str | os.PathLike[str], config: LoaderConfig) -> None:
        super().__init__(dataset, config)
        c = config
        # Images in flight: per worker its queue, its slot thread's queue and the one in hand.
        check_free_space((c.workers * (2 * self.prefetch + 1) + 1) * self.max_tiles * image_tile_bytes(self.dataset, c))
        if self.payload not in PAYLOADS:
            raise ValueError(f"grain payload must be one of {PAYLOADS}, not {self.payload!r}")
        grain = import_grain()
        set_grain_shared_memory(GRAIN_SHARED_MEMORY)  # how grain maps and unlinks our workers' segments here
        self._stride = len(self.dataset) // c.world_size  # the most jobs an epoch can have
        self._next_index = 0  # the element grain delivers next
        self._epoch_start = 0
        self._state = _GrainState()
        self._finalizer = weakref.finalize(self, owner_only(_close_grain, self._state))
        self._state.reaper = _Reaper()
        pipeline = (
            grain.MapDataset.range(self._stride * EPOCHS_AHEAD)
            .map(JobAt(self.dataset, c, self._stride, self.payload))
            .to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
            .mp_prefetch(grain.MultiprocessingOptions(num_workers=c.workers, per_worker_buffer_size=self.prefetch))
        )
        try:
            self._start(pipeline)
        except BaseException:
            self._finalizer()
            raise

    def _start(self, pipeline: Any) -> None:
        state = self._state
        iterator = state.iterator = iter(pipeline)
        iterator.get_state()  # makes the per-worker iterators, not started
        state.slots = grain_slots(iterator)
        state.workers = [grain_worker_iterator(slot) for slot in state.slots]
        for worker_id, (slot, worker) in enumerate(zip(state.slots, state.workers, strict=True)):
            set_grain_process_context(worker, _WorkerContext(worker_id))
            worker.start_prefetch()  # spawns the worker process
            process = grain_process(worker)
            state.processes.append(process)
            state.pids.append(process.pid)
            thread_stop, _ = grain_stop_events(slot)
            wrap_grain_buffer(worker, lambda inner, p=process, s=thread_stop: WatchedBuffer(inner, p, s, state.closing))
            slot.start_prefetch()  # the slot thread
        state.tracker = tracker_pid()

    # -- producer hooks -------------------------------------------------------
    def _begin_epoch(self, plan: EpochPlan) -> None:
        start = (plan.epoch - self.config.epoch) * self._stride
        self._epoch_start = start
        if self._next_index != start:
            self._jump(start, f"the jump to epoch {plan.epoch}")

    def _jump(self, index: int, waiting_for: str) -> None:
        """Make grain deliver element ``index`` next: each worker skips to its first element at or after it."""
        iterator, workers = self._state.iterator, self.config.workers
        self._check_workers(waiting_for)
        with self._grain_errors(waiting_for):
            state = iterator.get_state()
            state["next_index_in_cycle"] = index % workers
            state["iterators_in_use_states"] = [
                {**slot_state, "next_index": -(-(index - k) // workers)}
                for k, slot_state in enumerate(state["iterators_in_use_states"])
            ]
            iterator.set_state(state)  # stops each slot thread (our WatchedBuffer lets it go at once)
            for slot in self._state.slots:
                slot.start_prefetch()
        self._next_index = index

    def _next_image(self) -> ProcessedImage:
        index = self._next_index
        waiting_for = f"image {index - self._epoch_start} of epoch {self.epoch}"
        self._check_workers(waiting_for)  # a death is news at once, even with images still buffered
        with self.clock.timing("wait"):
            self._wait_for(index % self.config.workers, waiting_for)
            with self._grain_errors(waiting_for):
                element = next(self._state.iterator)
        self._next_index += 1
        item = element["image"]
        if item.failure is not None:
            f = item.failure
            self._state.broken = True
            error = WorkerError(
                f"grain worker {f.worker_id} (pid {f.pid}) raised {f.exc_type}: {f.message}",
                worker_id=f.worker_id,
                pid=f.pid,
            )
            raise error from RemoteTraceback(f.traceback)
        if item.index != index or (item.segment is None and "data" not in element):
            raise RuntimeError(
                f"grain: got element {item.index} (image {item.image_index}) while waiting for {waiting_for}"
            )
        self._worker_stages[item.worker_id] = item.stages
        if item.segment is None:
            data, masks = element["data"], element["masks"]  # grain's SharedMemoryArrays, mapped by grain
            self._state.reaper.hold(data, masks)  # they die on the reaper's thread, not this one
            # Plain ndarray views: slices of a SharedMemoryArray are SharedMemoryArrays too, and
            # each one's __del__ would run on this thread when the assembler drops it.
            data, masks = data.view(np.ndarray), masks.view(np.ndarray)
        else:
            data, masks = item.take(self.config.tile, data_dtype(self.config))
        return ProcessedImage(index - self._epoch_start, item.image_index, data, masks)

    def _shutdown(self) -> None:
        self._finalizer()

    # -- workers and errors -------------------------------------------------
    def _wait_for(self, slot: int, waiting_for: str) -> None:
        """Until slot ``slot`` holds an element: a dead worker, a silent one, or close() raise meanwhile."""
        buffer = grain_thread_buffer(self._state.slots[slot])
        deadline = time.monotonic() + self.config.wait_timeout
        while not wait_not_empty(buffer, 0.0):
            self.close_signal.check(waiting_for)
            self._check_workers(waiting_for)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._state.broken = True
                alive = [p.pid for p in self._state.processes if p.exitcode is None]
                raise WorkerTimeoutError(
                    f"grain: {waiting_for} did not come within timeout={self.config.timeout:g}s; workers alive: {alive}"
                )
            wait_not_empty(buffer, min(WATCH_SLICE_S, remaining))
        self.close_signal.check(waiting_for)  # an image that came with close() from another thread: close() wins

    def worker_pids(self) -> list[int]:
        if self._state.iterator is None:
            return []  # closed: the processes are gone (and their pids may be someone else's)
        return [p.pid for p in self._state.processes if p is not None]

    def _death(self, waiting_for: str) -> WorkerDiedError | None:
        if self._state.iterator is None:
            return None  # closed: its processes are closed too
        for worker_id, p in enumerate(self._state.processes):
            if p is not None and p.exitcode is not None:
                return WorkerDiedError(
                    f"grain worker {worker_id} (pid {p.pid}) {how_it_ended(p.exitcode)}; was waiting for {waiting_for}",
                    worker_id=worker_id,
                    pid=p.pid,
                    exitcode=p.exitcode,
                )
        return None

    def _check_workers(self, waiting_for: str) -> None:
        if (error := self._death(waiting_for)) is not None:
            self._state.broken = True
            raise error

    @contextmanager
    def _grain_errors(self, waiting_for: str) -> Iterator[None]:
        """What grain raises, as this package's error family."""
        try:
            yield
        except (WorkerError, LoaderClosedError):
            raise
        except WorkerGone as exc:
            self._state.broken = True
            raise self._death(waiting_for) or WorkerDiedError(
                f"grain: a worker {exc}; was waiting for {waiting_for}"
            ) from exc
        except _Stopped as exc:
            self.close_signal.check(waiting_for)
            raise LoaderClosedError(f"grain generator was closed while waiting for {waiting_for}") from exc
        except Exception as exc:
            self._state.broken = True
            if (death := self._death(waiting_for)) is not None:
                raise death from exc
            raise WorkerError(f"grain raised {type(exc).__name__}: {exc}; was waiting for {waiting_for}") from exc
