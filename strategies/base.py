"""BatchGenerator: the one interface every strategy implements (docs/design.md, "Python API").

The blog's DataGenerator, made into a contract::

    with make_generator("shm", "data/real", cfg) as gen:
        for epoch in range(3):
            for data, masks in gen:        # iter() starts the next epoch
                ...

The base class owns everything that is the same for every strategy: the epoch plan,
``len()``, the iterator protocol, and batch assembly (tiles of processed images,
taken in plan order, copied into batch arrays of the loop's own, so a batch may span images).
A strategy supplies only a *producer* of processed images, through four hooks:

- ``_begin_epoch(plan)``: start producing the images of ``plan.jobs``;
- ``_next_image()``: the next processed image, in plan order (blocking);
- ``_release_image(image)``: the assembler has copied every tile it needs from it;
- ``_end_epoch()``: the epoch is over (finished or abandoned): drop work in flight;

plus ``_shutdown()``, called once by ``close()``. The baseline implements the hooks
by doing the work inline, which is why it is the same interface and not a special
case (as torchdata's ``Mapper`` is ``ParallelMapper`` with no workers).

Iteration, as torch's DataLoader does it: ``iter(gen)`` starts the next epoch and
returns that epoch's :class:`EpochIterator`, whose own ``iter()`` is itself. So::

    it = iter(gen)
    first = next(it)          # peek at one batch
    for batch in it:          # ... then finish *the same* epoch
        ...

and every ``for batch in gen`` is the next epoch. An epoch's iterator is exhausted
once the generator has moved on to another epoch. ``next(gen)`` continues the
current epoch (and starts the first one if none has begun).

Threads: ``next()`` may be called from several threads; a lock makes each call
take the next batch of the plan whole, so the batches the threads get are the
plan's, in plan order, each exactly once (which thread gets which is theirs to
race for). ``close()`` may come from any thread: a ``next()`` blocked in another
thread wakes at once and raises :class:`LoaderClosedError`
(:mod:`strategies.close_signal`), and the channels are shut only after it left.

Processes: a generator belongs to the process that made it. A forked child that
inherited one cannot use it (its workers answer the parent) and gets a clear
error; it makes its own. A daemonic process (a ``multiprocessing.Pool`` worker)
may not start processes, so a strategy with worker processes refuses to start
there and says what to use instead.

Release of resources: ``close()`` is idempotent and bounded, and releases
everything (processes, descriptors, mappings, segments, semaphores) before it
returns, whoever still holds a reference to the generator. A generator that is
garbage-collected without ``close()`` is released by a ``weakref.finalize`` that
subclasses register for their resources (never ``__del__``, which would keep the
generator alive through reference cycles); the finalizer does nothing in any
process but the generator's own.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np

from .batch_memory import BatchMemory
from .close_signal import CloseSignal
from .config import LoaderConfig
from .constants import STOP_GRACE_S
from .dataset import Dataset, check_tile, open_dataset
from .errors import LoaderClosedError, ProcessContextError, StrategyUnavailableError
from .main_guard import refuse_while_importing_main
from .plan import EpochPlan, ImageJob, make_plan, max_tiles_per_image
from .stages import BATCH_EVENT, MAIN_ROLE, stage_clock, summed
from .work import ProcessedImage, data_dtype, decode_threads_for
from .workers import check_descriptor_room


def check_torch_device(config: LoaderConfig) -> None:
    """Refuse ``pin_memory``/``device`` settings this machine cannot honour, before any worker starts."""
    import torch

    try:
        device = torch.device(config.device) if config.device is not None else None
    except RuntimeError as exc:
        raise ValueError(f"LoaderConfig.device={config.device!r} is not a torch device: {exc}") from exc
    needs_cuda = config.pin_memory or (device is not None and device.type == "cuda")
    if needs_cuda and not torch.cuda.is_available():
        raise ValueError(
            f"pin_memory={config.pin_memory} / device={config.device!r} need a CUDA device, and "
            f"torch {torch.__version__} sees none (torch.cuda.is_available() is False); "
            f"leave them unset on this machine"
        )


# LoaderConfig options only some strategies offer: (the option, the class flag that offers it, what it does).
OPTIONS_OFFERED = (
    ("prefetch_next_epoch", "prefetches_next_epoch", "start the next epoch early"),
    ("background_start", "starts_in_background", "start their workers in the background"),
)


def offering(option: str) -> list[str]:
    """The registered strategies whose class flag ``option`` is True (``prefetches_next_epoch``, ...)."""
    from . import STRATEGIES  # at call time: the registry imports this module

    return [name for name, cls in STRATEGIES.items() if getattr(cls, option)]


def check_trace_dir(name: str, traces: bool, trace_dir: str) -> None:
    """Refuse ``trace_dir`` for a strategy that cannot trace, or where a file is in the folder's place.

    The folder itself is made by the first process that writes a line to it
    (:class:`strategies.stages.TraceFile`): a generator that fails to start leaves none.
    """
    if not traces:
        raise ValueError(
            f"trace_dir={trace_dir!r}: the {name} strategy does not trace its stages (a peer: its workers run "
            f"inside another library's loop); use a strategy whose `traces` is True (strategies.stages, Tracing)"
        )
    if os.path.exists(trace_dir) and not os.path.isdir(trace_dir):
        raise ValueError(f"trace_dir={trace_dir!r} is not a folder: the trace files cannot go there")


def owner_only(func: Callable[..., Any], *args: Any) -> Callable[[], None]:
    """``func(*args)``, run only in the process that called this: a finalizer a forked child must not run.

    A child made with ``os.fork()`` inherits the parent's generators and their
    ``weakref.finalize`` objects; at its exit it would stop the parent's workers and
    unlink the parent's shared memory. The resources are the parent's, so it may not.
    """
    owner = os.getpid()

    def call() -> None:
        if os.getpid() == owner:
            func(*args)

    return call


def config_plan(dataset: Dataset, config: LoaderConfig, epoch: int) -> EpochPlan:
    """The plan of ``epoch`` for ``dataset`` cut as ``config`` says: what every producer executes, anywhere."""
    c = config
    return make_plan(
        dataset.shapes,
        seed=c.seed,
        epoch=epoch,
        tile=c.tile,
        batch_size=c.batch_size,
        shuffle=c.shuffle,
        augment=c.augment,
        drop_last=c.drop_last,
        rank=c.rank,
        world_size=c.world_size,
    )


class EpochIterator:
    """One epoch of a generator: what ``iter(gen)`` returns; its own ``iter()`` is itself."""

    __slots__ = ("_generator", "_n_batches", "_serial", "epoch")

    def __init__(self, generator: BatchGenerator, serial: int, plan: EpochPlan) -> None:
        self._generator = generator
        self._serial = serial  # which start of an epoch this is (the generator counts them)
        self._n_batches = plan.n_batches
        self.epoch = plan.epoch

    def __iter__(self) -> EpochIterator:
        return self

    def __next__(self) -> tuple[Any, Any]:
        return self._generator._next_batch(self._serial)

    def __len__(self) -> int:
        """Batches in this iterator's epoch."""
        return self._n_batches

    def __repr__(self) -> str:
        return f"<EpochIterator epoch={self.epoch} of {self._generator!r}>"


class BatchGenerator(ABC):
    """Yields ``(data, masks)`` batches: uint16 (B, C, T, T) and uint8 (B, T, T)."""

    name: ClassVar[str]
    # What a strategy is, declared once and read by the harness, its reports and the tests:
    # False where ``workers`` and ``prefetch`` are ignored (the work is done inline);
    has_workers: ClassVar[bool] = True
    # True where the per-image work runs in worker processes (False: in this process);
    worker_processes: ClassVar[bool] = False
    # True where workers hand images over through shared memory (/dev/shm);
    shared_memory: ClassVar[bool] = False
    # True where batches are views into the producer's memory (zero-copy ``shm``);
    zero_copy: ClassVar[bool] = False
    # (module, pip requirement) of the library a peer strategy wraps, which may be absent.
    requires: ClassVar[tuple[str, str] | None] = None
    # True where every process (or thread) of the strategy writes its stage intervals to
    # ``LoaderConfig.trace_dir`` (strategies.stages, "Tracing"); the peers do not.
    traces: ClassVar[bool] = False
    # True where ``LoaderConfig.prefetch_next_epoch`` is honoured: the workers start the next
    # epoch's first images while the loop finishes the current one.
    prefetches_next_epoch: ClassVar[bool] = False
    # True where ``LoaderConfig.background_start`` is honoured: the workers start in a background
    # thread while this process makes the first images itself.
    starts_in_background: ClassVar[bool] = False

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this strategy cannot run here (the library it wraps is not installed, with the pip line), or None."""
        if cls.requires is None:
            return None
        module, requirement = cls.requires
        if importlib.util.find_spec(module) is not None:
            return None
        return (
            f"the {cls.name} strategy needs {requirement}, which is not installed here: "
            f"pip install '{requirement}' (make setup installs it with the project's [peers] extra)"
        )

    def __init__(self, dataset: Dataset | str | os.PathLike[str], config: LoaderConfig) -> None:
        refuse_while_importing_main(self.name)
        missing = self.unavailable()
        if missing is not None:
            raise StrategyUnavailableError(missing)
        if config.zero_copy and not self.zero_copy:
            raise ValueError(
                f"zero_copy=True is an option of the shm strategy (batches as views into shared memory); "
                f"the {self.name} strategy copies every batch"
            )
        if config.trace_dir is not None:
            check_trace_dir(self.name, self.traces, config.trace_dir)
        for option, flag, what in OPTIONS_OFFERED:
            if getattr(config, option) and not getattr(self, flag):
                raise ValueError(
                    f"{option}=True is not offered by the {self.name} strategy; the strategies that {what}: "
                    f"{', '.join(offering(flag))}"
                )
        if self.worker_processes and mp.current_process().daemon:
            raise ProcessContextError(
                f"the {self.name} strategy starts worker processes, and this process "
                f"({mp.current_process().name}, pid {os.getpid()}) is daemonic: a multiprocessing.Pool "
                f"worker or a Process(daemon=True), which Python does not allow to have children. "
                f"Use the 'baseline' or 'threads' strategy here, or make the loader in a non-daemonic process"
            )
        if self.worker_processes:
            check_descriptor_room(config.workers, self.name)
        if config.pin_memory or config.device is not None:
            check_torch_device(config)
        self.dataset = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
        self.config = config
        check_tile(self.dataset, config.tile)  # every image too small for the tile, in one error
        if len(self.dataset) < config.world_size:
            raise ValueError(
                f"dataset {self.dataset.root} has {len(self.dataset)} images, fewer than "
                f"world_size={config.world_size}: some ranks would get none"
            )
        self.max_tiles = max_tiles_per_image(self.dataset.shapes, config.tile)
        t = config.tile  # the memory of the batches the assembler fills (strategies.batch_memory)
        self._data_memory = BatchMemory((config.batch_size, self.dataset.channels, t, t), data_dtype(config))
        self._mask_memory = BatchMemory((config.batch_size, t, t), np.uint8)
        # Images in flight per worker: no more than an epoch can ever have for one worker,
        # so a huge ``prefetch`` costs no slots, semaphores or loop iterations it cannot use.
        self.prefetch = min(config.prefetch, -(-len(self.dataset) // config.workers))
        self._owner_pid = os.getpid()
        self._next_epoch = config.epoch
        self._upcoming: EpochPlan | None = None
        # The next epoch, begun early (LoaderConfig.prefetch_next_epoch), and its images not yet dispatched.
        self._ahead: EpochPlan | None = None
        self._ahead_pending: deque[ImageJob] = deque()
        self._plan: EpochPlan | None = None
        self._serial = 0  # epochs started so far: an EpochIterator knows which one is its own
        self._active = False
        self._batch_index = 0
        self._current: ProcessedImage | None = None
        self._offset = 0
        self._closed = False
        self._shut = False
        # One next() or iter() at a time; close() takes it too, once a waiting next() has left.
        self._lock = threading.RLock()
        self._close_lock = threading.Lock()
        self.close_signal = CloseSignal()
        self._signal_finalizer = weakref.finalize(self, self.close_signal.close)
        self.clock = stage_clock(config.trace_dir, MAIN_ROLE)  # main-process stages (strategies.stages)
        self._worker_stages: dict[int, tuple[float, ...]] = {}  # latest totals each worker sent

    # -- the producer hooks ---------------------------------------------------
    def _begin_epoch(self, plan: EpochPlan) -> None:  # noqa: B027 - optional hook
        """Start producing the images of ``plan``."""

    @abstractmethod
    def _next_image(self) -> ProcessedImage:
        """The next processed image of the epoch, in plan order."""

    def _release_image(self, image: ProcessedImage) -> None:  # noqa: B027 - optional hook
        """The assembler is done with ``image``; its buffers may be reused."""

    def _end_epoch(self) -> None:  # noqa: B027 - optional hook
        """The epoch ended (all batches out, or abandoned early); drop work in flight."""

    def _shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release processes, threads and memory. Called once, by ``close()``."""

    def _close_after(self, error: BaseException) -> None:
        """``close()`` because ``error`` interrupted an epoch (a strategy may skip the polite part)."""
        self.close()

    # -- plan -----------------------------------------------------------------
    def plan_for(self, epoch: int) -> EpochPlan:
        """The plan of ``epoch``; that of the epoch the next ``iter()`` starts is made once and kept for it."""
        upcoming = self._upcoming
        if upcoming is not None and upcoming.epoch == epoch:
            return upcoming
        plan = config_plan(self.dataset, self.config, epoch)
        if epoch == self._next_epoch:
            self._upcoming = plan  # the very object that epoch runs: asking first costs nothing more
        return plan

    @property
    def epoch(self) -> int | None:
        """Index of the epoch being (or last) iterated, None before the first."""
        return None if self._plan is None else self._plan.epoch

    def _upcoming_plan(self) -> EpochPlan:
        """The plan of the epoch the next ``iter()`` starts: made once, and the very object that epoch runs."""
        return self.plan_for(self._next_epoch)

    def _ahead_to_dispatch(self, pending: deque[ImageJob]) -> deque[ImageJob] | None:
        """The next epoch's images not yet dispatched, once this epoch's (``pending``) are all out.

        None while ``LoaderConfig.prefetch_next_epoch`` is off or ``pending`` has images. The
        first call begins the next epoch: its plan is the very one the next ``iter()`` runs.
        """
        if not self.config.prefetch_next_epoch or pending:
            return None
        if self._ahead is None:
            self._ahead = self._upcoming_plan()
            self._ahead_pending = deque(self._ahead.jobs)
        return self._ahead_pending

    def _claim_ahead(self, plan: EpochPlan) -> deque[ImageJob] | None:
        """``plan`` begins: its images not yet dispatched if it was begun early, else None."""
        if self._ahead is None:
            return None
        if plan is not self._ahead:
            raise RuntimeError(f"{self.name}: epoch {plan.epoch} began, not epoch {self._ahead.epoch} begun early")
        pending, self._ahead, self._ahead_pending = self._ahead_pending, None, deque()
        return pending

    def __len__(self) -> int:
        """Batches in the current epoch, or in the next one when none is running."""
        plan = self._plan
        if self._active and plan is not None:
            return plan.n_batches
        return self._upcoming_plan().n_batches

    # -- iterator protocol ----------------------------------------------------
    def __iter__(self) -> EpochIterator:
        """Start the next epoch (abandoning the current one if it is unfinished); return its iterator."""
        with self._lock:
            self._start_epoch()
            assert self._plan is not None
            return EpochIterator(self, self._serial, self._plan)

    def __next__(self) -> tuple[Any, Any]:
        """The next batch of the current epoch; before any epoch, starts the first."""
        with self._lock:
            if self._plan is None:
                self._start_epoch()
            return self._next_batch(self._serial)

    def _start_epoch(self) -> None:
        self._check_open()
        if self._active:
            self._finish_epoch()
        self._plan = self._upcoming_plan()
        self._upcoming = None
        self._next_epoch += 1
        self._serial += 1
        self._batch_index = 0
        self._active = True
        try:
            self._begin_epoch(self._plan)
        except BaseException as exc:
            self._fail(exc, "the start of an epoch")

    def _next_batch(self, serial: int) -> tuple[Any, Any]:
        """The next batch of the epoch started as ``serial``; StopIteration once it is over or superseded."""
        with self._lock:
            self._check_open()
            plan = self._plan
            if serial != self._serial or not self._active or plan is None:
                raise StopIteration
            if self._batch_index >= plan.n_batches:
                self._finish_epoch()
                raise StopIteration
            try:
                batch = self._assemble(plan.batch_size_at(self._batch_index))
            except BaseException as exc:
                self._fail(exc, f"batch {self._batch_index} of epoch {plan.epoch}")
            self._batch_index += 1
            delivered = self._deliver(*batch)
            self.clock.mark(BATCH_EVENT)  # the moment next() returns it (a traced generator writes it down)
            return delivered

    def _fail(self, exc: BaseException, waiting_for: str) -> None:
        """An epoch was interrupted by ``exc``: nothing half-done stays behind; re-raise it."""
        if self._closed and not isinstance(exc, LoaderClosedError):
            # close() from another thread broke our wait: that, not the broken wait, is the news.
            raise LoaderClosedError(
                f"{self.name} generator was closed (by another thread) while waiting for {waiting_for}"
            ) from exc
        if not self._closed:
            # A worker error, a timeout or a KeyboardInterrupt: release everything,
            # whether or not the caller closes us.
            self._close_after(exc)
        raise exc

    def _assemble(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Copy the next ``size`` tiles, across image boundaries, into arrays of the loop's own (``BatchMemory``)."""
        data, masks = self._data_memory.take(size), self._mask_memory.take(size)
        filled = 0
        while filled < size:
            if self._current is None or self._offset == self._current.n_tiles:
                self._advance_image()
            image = self._current
            assert image is not None
            take = min(size - filled, image.n_tiles - self._offset)
            start = time.perf_counter()
            data[filled : filled + take] = image.data[self._offset : self._offset + take]
            masks[filled : filled + take] = image.masks[self._offset : self._offset + take]
            self.clock.since("assemble", start)
            filled += take
            self._offset += take
        return data, masks

    def _advance_image(self) -> None:
        self._drop_current()
        self.close_signal.check("the next image")
        self._current = self._next_image()
        self._offset = 0

    def _drop_current(self) -> None:
        if self._current is not None:
            image, self._current = self._current, None
            self._release_image(image)

    def _finish_epoch(self) -> None:
        """The epoch ended (its last batch out, or abandoned by ``iter()``): release its images.

        Releasing may dispatch more work (the next epoch, begun early) and so meet a worker
        error, or a background start that failed: that closes the generator as any other would.
        """
        self._active = False
        assert self._plan is not None
        try:
            self._drop_current()
            self._end_epoch()
        except BaseException as exc:
            self._fail(exc, f"the end of epoch {self._plan.epoch}")

    def _deliver(self, data: np.ndarray, masks: np.ndarray) -> tuple[Any, Any]:
        c = self.config
        if c.output == "numpy":
            return data, masks
        import torch  # only here: workers and numpy users never pay torch's import

        batch = torch.from_numpy(data), torch.from_numpy(masks)
        if c.pin_memory:
            # Page-locked copies: the DMA engine reads them directly, so the copy to the
            # device below can overlap with compute (non_blocking).
            batch = tuple(t.pin_memory() for t in batch)
        if c.device is not None:
            batch = tuple(t.to(c.device, non_blocking=c.pin_memory) for t in batch)
        return batch

    @property
    def decode_threads(self) -> int:
        """tifffile's decode threads per decoding process or thread of this loader (``LoaderConfig.decode_threads``)."""
        return decode_threads_for(self.config, self.config.workers if self.has_workers else 1)

    def worker_pids(self) -> list[int]:
        """Process ids of this generator's workers (none for a single-process strategy)."""
        return []

    def stage_times(self) -> dict[str, float]:
        """Cumulative seconds per stage since creation, main process plus workers (``strategies.stages``)."""
        return summed(self.clock, self._worker_totals())

    def main_stage_times(self) -> dict[str, float]:
        """The main process's own share of :meth:`stage_times` (wall time in the loop's process), per stage."""
        return dict(self.clock.seconds)

    def _worker_totals(self) -> Iterable[tuple[float, ...]]:
        return self._worker_stages.values()

    # -- lifetime -------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise LoaderClosedError(f"{self.name} generator is closed")
        if os.getpid() != self._owner_pid:
            raise ProcessContextError(
                f"this {self.name} generator belongs to process {self._owner_pid}; process {os.getpid()} "
                f"inherited it through fork and cannot use it (its workers answer their parent). "
                f"Make a generator in this process instead"
            )

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop every process and thread and free every buffer. Idempotent, bounded in time, any thread.

        A ``next()`` blocked in another thread raises :class:`LoaderClosedError`; the
        shutdown starts once it has left (it leaves at once: every wait watches
        :attr:`close_signal`), or after ``STOP_GRACE_S`` if it is busy computing.
        """
        self._closed = True  # from now on next() and iter() raise LoaderClosedError
        if os.getpid() != self._owner_pid:
            return  # an inherited copy: the processes and memory are the parent's
        self.close_signal.fire()
        with self._close_lock:  # a second close() returns only once the first has released everything
            if self._shut:
                return
            inside = self._lock.acquire(timeout=STOP_GRACE_S)
            try:
                self._active = False
                self._current = None
                self._data_memory.close()
                self._mask_memory.close()
                self._shutdown()
            finally:
                self.clock.close()
                self._shut = True
                if inside:
                    self._lock.release()
                    self._signal_finalizer()  # no thread waits on the signal any more
                # else: a thread still works in next() (an image being computed in this
                # process); the signal's descriptors go when the generator does.

    def __enter__(self) -> BatchGenerator:
        self._check_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"epoch={self.epoch}"
        return f"<{type(self).__name__} {self.dataset.root!r} workers={self.config.workers} {state}>"
