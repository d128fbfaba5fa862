"""shm, zero-copy: workers assemble whole batches in shared memory; the main process copies nothing.

``make_generator("shm", ds, cfg, zero_copy=True)`` (or the strategy name
``shm_zerocopy``). Message flow::

    main --Job(generation, image)--> worker i   writes each tile straight into its row of a batch slot
    main <--ImageDone(...)---------- worker i   (the handshake: its rows are written)
    main yields batch k as views of slot k % n_slots, once every image with tiles in batch k is done

Where each tile goes: the epoch's tiles, image after image in plan order, are cut
into batches of ``batch_size`` (docs/design.md section 3). Tile ``j`` of the epoch goes to
batch ``j // B``, row ``j % B``; batch ``k`` lives in slot ``k % n_slots`` of one
shared segment. An image's tiles are consecutive (``ImageJob.first_tile`` onwards),
so a worker works out every destination itself. Two workers may write the same slot
(a batch spanning two images), never the same row.

**Lifetime of a batch** (the rule users must know): the arrays yielded for batch
``k`` are views of its slot. They are valid until the next ``next()``: from then on
the slot may be rewritten for batch ``k + n_slots`` at any moment. Keep a batch
longer with ``np.array(data)`` (or ``tensor.clone()``). After ``close()`` views stay
readable (the mapping lives as long as any view does) but are no longer written.

Who may write where (no locks, as in ``shm``: pipe messages order every access):

- an image is dispatched only when every batch it touches lies less than
  ``n_slots`` batches past the one the loop holds (or is asking for), so the slot
  under the loop's current batch is never written;
- a new epoch dispatches nothing until the images of an abandoned epoch that were
  already being processed are back (at most one per worker: ``Reset`` makes the
  workers skip the rest); otherwise they would write into the new epoch's slots.

``n_slots`` is chosen so that slots never narrow the window of ``workers *
prefetch`` images: the batches those images can span, plus the loop's own batch.
The price of zero copies is that memory: about ``(workers * prefetch * max tiles
per image / batch_size + 2)`` batches of shared memory.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from .config import LoaderConfig
from .dataset import Dataset
from .messages import ImageDone, Job
from .plan import EpochPlan, ImageJob
from .request_response import RequestGenerator, RequestWorker
from .shm import SlotLayout
from .shm_segments import Segment, check_free_space
from .work import ProcessedImage
from .workers import WorkerPool


def n_batch_slots(workers: int, prefetch: int, max_tiles: int, batch_size: int) -> int:
    """Slots enough for every batch a full window of images can touch, plus the loop's batch."""
    window_tiles = workers * prefetch * max_tiles
    # + 1: a window's images can straddle one more batch boundary; + 1: the batch the loop holds.
    return -(-window_tiles // batch_size) + 2


def batch_runs(job: ImageJob, batch_size: int, n_slots: int) -> list[tuple[int, int, int]]:
    """(slot, first row, rows) of each run of ``job``'s tiles that lands in one batch, in tile order."""
    runs = []
    j = job.first_tile
    while j < job.end_tile:
        row = j % batch_size
        n = min(batch_size - row, job.end_tile - j)
        runs.append(((j // batch_size) % n_slots, row, n))
        j += n
    return runs


def in_window(job: ImageJob, held: int, n_slots: int, batch_size: int) -> bool:
    """May ``job`` be written now? Only if its last batch is less than ``n_slots`` batches past ``held``.

    Batch ``held + n_slots`` would share the slot of the batch the loop holds (or asks for).
    """
    last_batch = (job.end_tile - 1) // batch_size
    return last_batch < held + n_slots


class ZeroCopyWorker(RequestWorker):
    def __init__(
        self,
        worker_id: int,
        conn: Connection,
        dataset: Dataset,
        config: LoaderConfig,
        name: str,
        n_slots: int,
    ) -> None:
        super().__init__(worker_id, conn, dataset, config)
        layout = SlotLayout.of(config.batch_size, dataset, config)
        self.segment = Segment.attach(name, n_slots * layout.slot_bytes)
        self.slots = layout.views(self.segment.buf, n_slots)
        self.batch_size = config.batch_size
        self.n_slots = n_slots

    def deliver(self, job: Job) -> None:
        runs = batch_runs(job.image, self.batch_size, self.n_slots)
        data_runs = [self.slots[slot][0][row : row + n] for slot, row, n in runs]
        mask_runs = [self.slots[slot][1][row : row + n] for slot, row, n in runs]
        # Writing the tiles into the batch slots is the hand-over: it is counted in compute.
        with self.clock.timing("compute"):
            self.processor.write_tiles(job.image, data_runs, mask_runs)
        self.conn.send(self.done(job))


# What a finished image hands the assembler: nothing, its pixels are already in the batch slots.
_IN_SLOTS = np.empty((0,), np.uint8)


class ShmZeroCopyGenerator(RequestGenerator):
    """Workers write tiles straight into batch slots; batches are views, valid until the next ``next()``."""

    name = "shm_zerocopy"
    shared_memory = True
    worker_cls = ZeroCopyWorker
    zero_copy = True
    # Its slots are the current epoch's batches (batch k in slot k % n_slots): the next epoch's
    # first batches would need slots the loop still reads.
    prefetches_next_epoch = False

    def __init__(self, dataset: Dataset | str | os.PathLike[str], config: LoaderConfig) -> None:
        super().__init__(dataset, config.replace(zero_copy=True))

    def _start(self, resources: ExitStack) -> WorkerPool:
        c = self.config
        layout = SlotLayout.of(c.batch_size, self.dataset, c)
        self.n_slots = n_batch_slots(c.workers, self.prefetch, self.max_tiles, c.batch_size)
        check_free_space(self.n_slots * layout.slot_bytes)
        self.segment = Segment.create(self.n_slots * layout.slot_bytes, "batches")
        resources.callback(self.segment.release)  # LIFO: runs after the pool is closed
        self.segments = [self.segment]
        self.slots = layout.views(self.segment.buf, self.n_slots)
        self._held = 0  # the batch the loop holds or is asking for: its slot is never written
        self._stale = 0  # requests of an abandoned epoch not yet answered
        self._tiles_ready = 0  # the epoch's tiles [0, _tiles_ready) are written
        return super()._start(resources)

    def _worker_args(self) -> tuple[Any, ...]:
        return (self.dataset, self.config, self.segment.name, self.n_slots)

    def _dispatch(self, job: ImageJob, generation: int) -> bool:
        if self._stale or not in_window(job, self._held, self.n_slots, self.config.batch_size):
            return False
        return super()._dispatch(job, generation)

    def _begin_epoch(self, plan: EpochPlan) -> None:
        self._stale = sum(self.outstanding)  # all of them belong to the abandoned epoch
        self._held = 0
        self._tiles_ready = 0
        super()._begin_epoch(plan)

    def _receive(self) -> list[tuple[int, ProcessedImage | None]]:
        results = super()._receive()
        self._stale -= sum(1 for generation, _ in results if generation != self.generation)
        return results

    def _collect(self, worker_id: int, done: ImageDone) -> ProcessedImage:
        return ProcessedImage(done.position, done.image_index, _IN_SLOTS, _IN_SLOTS)

    def _assemble(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Wait until every tile of the next batch is written; yield views of its slot."""
        assert self._plan is not None
        k = self._batch_index
        self._held = k  # the previous batch's views are released: its slot may be reused
        self._fill()
        end = k * self.config.batch_size + size
        while self._tiles_ready < end:
            image = self._next_image()  # in plan order: all tiles before this image's are written
            self._tiles_ready = self._plan.jobs[image.position].end_tile
            self._release_image(image)  # leaves the window; _fill may dispatch more
        data, masks = self.slots[k % self.n_slots]
        return data[:size], masks[:size]

    def _shutdown(self) -> None:
        self.slots = []  # our views go first; views the caller still holds keep the mapping alive
        super()._shutdown()
