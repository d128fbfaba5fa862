"""BatchGenerator: the one interface every strategy implements (DESIGN.md section 2).

The blog's DataGenerator, made into a contract::

    with make_generator("shm", "data/real", cfg) as gen:
        for epoch in range(3):
            for data, masks in gen:        # iter() starts the next epoch
                ...

The base class owns everything that is the same for every strategy: the epoch plan,
``len()``, the iterator protocol, and batch assembly (tiles of processed images,
taken in plan order, copied into fresh batch arrays, so a batch may span images).
A strategy supplies only a *producer* of processed images, through four hooks:

- ``_begin_epoch(plan)``: start producing the images of ``plan.jobs``;
- ``_next_image()``: the next processed image, in plan order (blocking);
- ``_release_image(image)``: the assembler has copied every tile it needs from it;
- ``_end_epoch()``: the epoch is over (finished or abandoned): drop work in flight;

plus ``_shutdown()``, called once by ``close()``. The baseline implements the hooks
by doing the work inline, which is why it is the same interface and not a special
case (as torchdata's ``Mapper`` is ``ParallelMapper`` with no workers).

Release of resources: ``close()`` is idempotent and bounded; a generator that is
garbage-collected without ``close()`` is released by a ``weakref.finalize`` that
subclasses register for their resources (never ``__del__``, which would keep the
generator alive through reference cycles).
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from .config import LoaderConfig
from .dataset import Dataset, open_dataset
from .errors import LoaderClosedError
from .plan import EpochPlan, make_plan, max_tiles_per_image
from .stages import StageClock, summed
from .work import ProcessedImage


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


class BatchGenerator(ABC):
    """Yields ``(data, masks)`` batches: uint16 (B, C, T, T) and uint8 (B, T, T)."""

    name: ClassVar[str]
    # True where batches are views into the producer's memory (zero-copy ``shm``).
    zero_copy: ClassVar[bool] = False

    def __init__(self, dataset: Dataset | str | os.PathLike[str], config: LoaderConfig) -> None:
        if config.zero_copy and not self.zero_copy:
            raise ValueError(
                f"zero_copy=True is an option of the shm strategy (batches as views into shared memory); "
                f"the {self.name} strategy copies every batch"
            )
        if config.pin_memory or config.device is not None:
            check_torch_device(config)
        self.dataset = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
        self.config = config
        for entry in self.dataset.entries:
            if config.tile > min(entry.height, entry.width):
                raise ValueError(
                    f"tile={config.tile} is larger than image {entry.image_path} "
                    f"({entry.height} x {entry.width}); choose a smaller tile"
                )
        if len(self.dataset) < config.world_size:
            raise ValueError(
                f"dataset {self.dataset.root} has {len(self.dataset)} images, fewer than "
                f"world_size={config.world_size}: some ranks would get none"
            )
        self.max_tiles = max_tiles_per_image(self.dataset.shapes, config.tile)
        self._next_epoch = config.epoch
        self._upcoming: EpochPlan | None = None
        self._plan: EpochPlan | None = None
        self._active = False
        self._batch_index = 0
        self._current: ProcessedImage | None = None
        self._offset = 0
        self._closed = False
        self.clock = StageClock()  # main-process stages (strategies.stages)
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
        c = self.config
        return make_plan(
            self.dataset.shapes,
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

    @property
    def epoch(self) -> int | None:
        """Index of the epoch being (or last) iterated, None before the first."""
        return None if self._plan is None else self._plan.epoch

    def __len__(self) -> int:
        """Batches in the current epoch, or in the next one when none is running."""
        if self._active and self._plan is not None:
            return self._plan.n_batches
        if self._upcoming is None or self._upcoming.epoch != self._next_epoch:
            self._upcoming = self.plan_for(self._next_epoch)
        return self._upcoming.n_batches

    # -- iterator protocol ----------------------------------------------------
    def __iter__(self) -> BatchGenerator:
        """Start the next epoch (abandoning the current one if it is unfinished)."""
        self._check_open()
        if self._active:
            self._finish_epoch()
        plan = self._upcoming if self._upcoming and self._upcoming.epoch == self._next_epoch else None
        self._plan = plan or self.plan_for(self._next_epoch)
        self._upcoming = None
        self._next_epoch += 1
        self._batch_index = 0
        self._active = True
        try:
            self._begin_epoch(self._plan)
        except BaseException as exc:
            self._close_after(exc)
            raise
        return self

    def __next__(self) -> tuple[Any, Any]:
        self._check_open()
        if self._plan is None:
            iter(self)
        assert self._plan is not None
        if not self._active or self._batch_index >= self._plan.n_batches:
            if self._active:
                self._finish_epoch()
            raise StopIteration
        try:
            batch = self._assemble(self._plan.batch_size_at(self._batch_index))
        except BaseException as exc:
            # A worker error, a timeout or a KeyboardInterrupt: nothing half-done
            # stays behind, whether or not the caller closes us.
            self._close_after(exc)
            raise
        self._batch_index += 1
        return self._deliver(*batch)

    def _assemble(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Copy the next ``size`` tiles, across image boundaries, into fresh arrays."""
        t = self.config.tile
        data = np.empty((size, self.dataset.channels, t, t), np.uint16)
        masks = np.empty((size, t, t), np.uint8)
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
        self._current = self._next_image()
        self._offset = 0

    def _drop_current(self) -> None:
        if self._current is not None:
            image, self._current = self._current, None
            self._release_image(image)

    def _finish_epoch(self) -> None:
        self._active = False
        self._drop_current()
        self._end_epoch()

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

    def worker_pids(self) -> list[int]:
        """Process ids of this generator's workers (none for a single-process strategy)."""
        return []

    def stage_times(self) -> dict[str, float]:
        """Cumulative seconds per stage since creation, main process plus workers (``strategies.stages``)."""
        return summed(self.clock, self._worker_totals())

    def _worker_totals(self) -> Iterable[tuple[float, ...]]:
        return self._worker_stages.values()

    # -- lifetime -------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise LoaderClosedError(f"{self.name} generator is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop every process and thread and free every buffer. Idempotent, bounded in time."""
        if self._closed:
            return
        self._closed = True
        self._active = False
        self._current = None
        self._shutdown()

    def __enter__(self) -> BatchGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"epoch={self.epoch}"
        return f"<{type(self).__name__} {self.dataset.root!r} workers={self.config.workers} {state}>"
