"""shm: shared memory with a pipe handshake (the blog's "implicit lock").

Message flow::

    main --Job(generation, image, slot s)--> worker i   writes tiles into its slot s
    main <--ImageDone(slot s, n_tiles)------ worker i   (the handshake: s is ready)
    main copies tiles from slot s into batches, then s is free for a new Job

Who owns each buffer: the main process creates one segment per worker, holding
``prefetch`` slots, each sized for the largest image's tiles (data then masks).
Between the Job that names a slot and the ImageDone that returns it, only that
worker writes the slot; after ImageDone, only the main process reads it, until it
names the slot in a new Job. No lock is needed: the pipe messages order every
access (each is a system call, hence a memory barrier). ``prefetch`` slots per
worker let a worker run ahead while the main process still reads an older slot.

Only the pixels' tiles cross through shared memory; the pipe carries a ~100-byte
note per image. The main process then copies each tile once, into the batch.

Shutdown: the pool stops and reaps the workers first; then the main process, the
segments' only owner, unlinks them (also after a worker was killed mid-write) and
unmaps them, so their memory and descriptors are free when ``close()`` returns, not
when the generator object is collected. If the main process itself is killed, the
resource tracker unlinks them. Before
creating anything, the free space of /dev/shm is checked against what the slots
need, and the space is reserved, so a small /dev/shm (Docker's 64 MB default) is
a clear error, never a SIGBUS (``shm_segments``).
"""

from __future__ import annotations

from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from .config import LoaderConfig
from .dataset import Dataset
from .messages import ImageDone, Job, Skipped
from .request_response import RequestGenerator, RequestWorker
from .shm_segments import Segment, check_free_space
from .work import PIXELS, ProcessedImage, data_dtype, tile_nbytes

_ALIGN = 64  # slots start on a cache line


@dataclass(frozen=True, slots=True)
class SlotLayout:
    """Where the tiles of slot ``s`` live inside a worker's segment."""

    max_tiles: int
    channels: int
    tile: int
    dtype: np.dtype = PIXELS

    @classmethod
    def of(cls, max_tiles: int, dataset: Dataset, config: LoaderConfig) -> SlotLayout:
        return cls(max_tiles, dataset.channels, config.tile, data_dtype(config))

    @property
    def data_bytes(self) -> int:
        return self.max_tiles * tile_nbytes(self.channels, self.tile, self.dtype)[0]

    @property
    def slot_bytes(self) -> int:
        raw = self.data_bytes + self.max_tiles * tile_nbytes(self.channels, self.tile)[1]
        return -(-raw // _ALIGN) * _ALIGN

    def views(self, buf: Any, n_slots: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Data and mask arrays of each slot of ``buf`` (a segment's mmap).

        Made with ``np.frombuffer``, whose arrays hold a buffer export of the mmap as
        long as they live: ``mmap.close()`` then refuses (``BufferError``) instead of
        unmapping memory under them. (``np.ndarray(buffer=...)`` holds none: a view kept
        past ``close()`` would then crash the process when read.)
        """
        t = self.tile
        data_count, mask_count = self.max_tiles * self.channels * t * t, self.max_tiles * t * t
        return [
            (
                np.frombuffer(buf, self.dtype, data_count, s * self.slot_bytes).reshape(
                    self.max_tiles, self.channels, t, t
                ),
                np.frombuffer(buf, np.uint8, mask_count, s * self.slot_bytes + self.data_bytes).reshape(
                    self.max_tiles, t, t
                ),
            )
            for s in range(n_slots)
        ]


class ShmWorker(RequestWorker):
    def __init__(
        self,
        worker_id: int,
        conn: Connection,
        dataset: Dataset,
        config: LoaderConfig,
        names: list[str],
        n_slots: int,
    ) -> None:
        super().__init__(worker_id, conn, dataset, config)
        layout = SlotLayout.of(self.max_tiles, dataset, config)
        self.segment = Segment.attach(names[worker_id], n_slots * layout.slot_bytes)
        self.slots = layout.views(self.segment.buf, n_slots)

    def deliver(self, job: Job) -> None:
        # Writing the tiles into the slot is the hand-over: it is counted in compute.
        with self.clock.timing("compute"):
            self.processor.process(job.image, *self.slots[job.slot])
        self.conn.send(self.done(job, job.slot))


class ShmGenerator(RequestGenerator):
    """Workers write tiles into their own shared-memory slots and announce them on their pipe."""

    name = "shm"
    shared_memory = True
    worker_cls = ShmWorker

    def _prepare(self, resources: ExitStack) -> None:
        c = self.config
        layout = SlotLayout.of(self.max_tiles, self.dataset, c)
        check_free_space(c.workers * self.prefetch * layout.slot_bytes)
        self.segments: list[Segment] = []
        for worker_id in range(c.workers):
            segment = Segment.create(self.prefetch * layout.slot_bytes, f"w{worker_id}")
            resources.callback(segment.release)  # LIFO: runs after the pool is closed
            self.segments.append(segment)
        self.slots = [layout.views(s.buf, self.prefetch) for s in self.segments]
        self.free_slots = [deque(range(self.prefetch)) for _ in range(c.workers)]
        super()._prepare(resources)

    def _worker_args(self) -> tuple[Any, ...]:
        return (self.dataset, self.config, [s.name for s in self.segments], self.prefetch)

    def capacity(self, worker_id: int) -> int:
        return len(self.free_slots[worker_id])

    def _take_slot(self, worker_id: int, generation: int) -> int:
        return self.free_slots[worker_id].popleft()

    def _collect(self, worker_id: int, done: ImageDone) -> ProcessedImage:
        data, masks = self.slots[worker_id][done.slot]
        n = done.n_tiles
        return ProcessedImage(done.position, done.image_index, data[:n], masks[:n], handle=(worker_id, done.slot))

    def _free(self, image: ProcessedImage) -> None:
        worker_id, slot = image.handle
        self.free_slots[worker_id].append(slot)

    def _skipped(self, worker_id: int, skipped: Skipped) -> None:
        self.free_slots[worker_id].append(skipped.slot)

    def _shutdown(self) -> None:
        self.slots = []  # our views go first, so that closing the pool can unmap the segments
        super()._shutdown()
