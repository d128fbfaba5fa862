"""shm, zero-copy: workers assemble whole batches in shared memory; the main process copies nothing.

``make_generator("shm", ds, cfg, zero_copy=True)`` (or the strategy name
``shm_zerocopy``). Message flow::

    main --Job(generation, image)--> worker i   writes each tile straight into its row of a batch slot
    main <--ImageDone(...)---------- worker i   (the handshake: its rows are written)
    main yields batch k as views of slot k % n_slots, once every image with tiles in batch k is done

Where each tile goes: the epoch's tiles, image after image in plan order, are cut
into batches of ``batch_size`` (docs/design.md section 3). Tile ``j`` of the epoch goes to
batch ``j // B``, row ``j % B``. The slots of one shared segment are a ring over every
batch the generator makes: an epoch whose first batch is the generator's ``f``-th puts
its batch ``k`` in slot ``(f + k) % n_slots``, and the next epoch begins at ``f`` plus
the batches this one's tiles span. An image's tiles are consecutive
(``ImageJob.first_tile`` onwards) and its job carries the slot of its epoch's first
batch, so a worker works out every destination itself. Two workers may write the same
slot (a batch spanning two images), never the same row.

**Lifetime of a batch** (the rule users must know): the arrays yielded for batch
``k`` are views of its slot. They are valid until the next ``next()``: from then on
the slot may be rewritten for a batch ``n_slots`` later at any moment. Keep a batch
longer with ``np.array(data)`` (or ``tensor.clone()``). After ``close()`` views stay
readable (the mapping lives as long as any view does) but are no longer written.

Who may write where (no locks, as in ``shm``: pipe messages order every access):

- an image is dispatched only when every batch it touches lies less than
  ``n_slots`` batches past the one the loop holds (or is asking for), so the slot
  under the loop's current batch is never written;
- a new epoch dispatches nothing until the images of an abandoned epoch that were
  already being processed are back (at most one per worker: ``Reset`` makes the
  workers skip the rest); otherwise they could write into the new epoch's slots.
  The next epoch's images begun early (``LoaderConfig.prefetch_next_epoch``) are not
  among them: they passed the first rule against the batch the loop held, so they
  share no slot with the abandoned epoch's.

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
from .multiprocess import MADE_HERE
from .plan import EpochPlan, ImageJob
from .request_response import RequestGenerator, RequestWorker
from .shm import SlotLayout
from .shm_segments import Segment, check_free_space
from .work import ProcessedImage, Processor


def n_batch_slots(workers: int, prefetch: int, max_tiles: int, batch_size: int) -> int:
    """Slots enough for every batch a full window of images can touch, plus the loop's batch."""
    window_tiles = workers * prefetch * max_tiles
    # + 1: a window's images can straddle one more batch boundary; + 1: the batch the loop holds.
    return -(-window_tiles // batch_size) + 2


def batch_runs(job: ImageJob, batch_size: int, n_slots: int, first_slot: int = 0) -> list[tuple[int, int, int]]:
    """(slot, first row, rows) of each run of ``job``'s tiles that lands in one batch, in tile order.

    ``first_slot``: the slot of the first batch of ``job``'s epoch.
    """
    runs = []
    j = job.first_tile
    while j < job.end_tile:
        row = j % batch_size
        n = min(batch_size - row, job.end_tile - j)
        runs.append(((first_slot + j // batch_size) % n_slots, row, n))
        j += n
    return runs


def batches_spanned(plan: EpochPlan) -> int:
    """The batches an epoch's tiles land in, a short last one included (also when ``drop_last`` drops it)."""
    return -(-plan.n_tiles // plan.batch_size)


def in_window(job: ImageJob, held: int, n_slots: int, batch_size: int, first_batch: int = 0) -> bool:
    """May ``job`` be written now? Only if its last batch is less than ``n_slots`` batches past ``held``.

    ``held`` and ``first_batch`` (the first batch of ``job``'s epoch) count the
    generator's batches; batch ``held + n_slots`` would share the slot of the batch
    the loop holds (or asks for).
    """
    last_batch = first_batch + (job.end_tile - 1) // batch_size
    return last_batch < held + n_slots


def write_into_slots(
    processor: Processor, job: ImageJob, slots: list[tuple[np.ndarray, np.ndarray]], batch_size: int, first_slot: int
) -> None:
    """Do ``job``'s work, each tile straight into its row of its batch slot (:func:`batch_runs`)."""
    runs = batch_runs(job, batch_size, len(slots), first_slot)
    data_runs = [slots[slot][0][row : row + n] for slot, row, n in runs]
    mask_runs = [slots[slot][1][row : row + n] for slot, row, n in runs]
    processor.write_tiles(job, data_runs, mask_runs)


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
        # Writing the tiles into the batch slots is the hand-over: it is counted in compute.
        with self.clock.timing("compute"):
            write_into_slots(self.processor, job.image, self.slots, self.batch_size, job.slot)
        self.conn.send(self.done(job))


# What a finished image hands the assembler: nothing, its pixels are already in the batch slots.
_IN_SLOTS = np.empty((0,), np.uint8)


class ShmZeroCopyGenerator(RequestGenerator):
    """Workers write tiles straight into batch slots; batches are views, valid until the next ``next()``."""

    name = "shm_zerocopy"
    shared_memory = True
    worker_cls = ZeroCopyWorker
    zero_copy = True

    def __init__(self, dataset: Dataset | str | os.PathLike[str], config: LoaderConfig) -> None:
        super().__init__(dataset, config.replace(zero_copy=True))

    def _prepare(self, resources: ExitStack) -> None:
        c = self.config
        layout = SlotLayout.of(c.batch_size, self.dataset, c)
        self.n_slots = n_batch_slots(c.workers, self.prefetch, self.max_tiles, c.batch_size)
        check_free_space(self.n_slots * layout.slot_bytes)
        self.segment = Segment.create(self.n_slots * layout.slot_bytes, "batches")
        resources.callback(self.segment.release)  # LIFO: runs after the pool is closed
        self.segments = [self.segment]
        self.slots = layout.views(self.segment.buf, self.n_slots)
        # Batches counted over the generator's life (the ring of slots):
        self._first_batch = 0  # the current epoch's batch 0
        self._span = 0  # the batches the current epoch's tiles land in: the next epoch begins after them
        self._held = 0  # the batch the loop holds or is asking for: its slot is never written
        self._stale = 0  # requests of an abandoned epoch not yet answered
        self._ahead_out = 0  # requests of the next epoch (begun early) not yet answered
        self._tiles_ready = 0  # the epoch's tiles [0, _tiles_ready) are written
        super()._prepare(resources)

    def _worker_args(self) -> tuple[Any, ...]:
        return (self.dataset, self.config, self.segment.name, self.n_slots)

    def _epoch_start(self, generation: int) -> int:
        """The first batch of epoch ``generation``: the current one's, or the next one's (begun early)."""
        return self._first_batch + (self._span if generation > self.generation else 0)

    def _take_slot(self, worker_id: int, generation: int) -> int:
        return self._epoch_start(generation) % self.n_slots

    def _dispatch(self, job: ImageJob, generation: int) -> bool:
        first_batch = self._epoch_start(generation)
        if self._stale or not in_window(job, self._held, self.n_slots, self.config.batch_size, first_batch):
            return False
        sent = super()._dispatch(job, generation)
        if sent and generation > self.generation:
            self._ahead_out += 1
        return sent

    def _begin_epoch(self, plan: EpochPlan) -> None:
        # Every request still out belongs to the abandoned epoch, except the next one's begun early.
        self._stale = sum(self.outstanding) - self._ahead_out
        self._ahead_out = 0
        self._first_batch += self._span
        self._span = batches_spanned(plan)
        self._held = self._first_batch
        self._tiles_ready = 0
        super()._begin_epoch(plan)

    def _receive(self) -> list[tuple[int, ProcessedImage | None]]:
        results = super()._receive()
        self._stale -= sum(1 for generation, _ in results if generation < self.generation)
        self._ahead_out -= sum(1 for generation, _ in results if generation > self.generation)
        return results

    def _collect(self, worker_id: int, done: ImageDone) -> ProcessedImage:
        return ProcessedImage(done.position, done.image_index, _IN_SLOTS, _IN_SLOTS)

    def _made_here(self, job: ImageJob, here: Processor) -> ProcessedImage:
        # The wanted image holds tiles of the batch being assembled: its batches are in the window.
        first_slot = self._epoch_start(self.generation) % self.n_slots  # as a dispatched job of this epoch gets
        write_into_slots(here, job, self.slots, self.config.batch_size, first_slot)
        return ProcessedImage(job.position, job.image_index, _IN_SLOTS, _IN_SLOTS, handle=MADE_HERE)

    def _assemble(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Wait until every tile of the next batch is written; yield views of its slot."""
        assert self._plan is not None
        k = self._batch_index
        self._held = self._first_batch + k  # the previous batch's views are released: its slot may be reused
        self._fill()
        end = k * self.config.batch_size + size
        while self._tiles_ready < end:
            image = self._next_image()  # in plan order: all tiles before this image's are written
            self._tiles_ready = self._plan.jobs[image.position].end_tile
            self._release_image(image)  # leaves the window; _fill may dispatch more
        data, masks = self.slots[self._held % self.n_slots]
        return data[:size], masks[:size]

    def _shutdown(self) -> None:
        self.slots = []  # our views go first; views the caller still holds keep the mapping alive
        super()._shutdown()
