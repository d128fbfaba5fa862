"""pipe: the blog's request/response loop, one Pipe per worker.

Message flow (see ``request_response`` for the loop itself)::

    main --Job(generation, image)--> worker i --ImageDone header (pickled, ~100 B)--> main
                                              --data  (raw bytes, N*C*T*T*2 B)-----> main
                                              --masks (raw bytes, N*T*T B)-------->  main

How the pixels cross the pipe: as raw bytes, not as pickled arrays. The header is
a small pickled dataclass that says how many tiles follow; then the worker calls
``send_bytes`` on its tile buffers (no pickling, no copy into a pickle string) and
the main process reads them straight into a preallocated array, like
``recv_bytes_into``, so each byte is copied only by the kernel (worker buffer ->
pipe -> main buffer). Pickling a 40 MB array instead would add a copy on each side.

Who owns each buffer: the worker owns one tile buffer sized for the largest
image, reused for every image (it is free again as soon as ``send_bytes``
returns). The main process owns a small stock of receive buffers, at most one per
image in the window; a buffer returns to the stock when the assembler has copied
its tiles into batches.

Shutdown: ``Stop`` on every pipe; the pool drains the pipes while the workers exit,
since a worker blocked on a full pipe cannot read its Stop (``workers.WorkerPool``).
"""

from __future__ import annotations

from contextlib import ExitStack
from multiprocessing.connection import Connection

import numpy as np

from . import injection
from .config import LoaderConfig
from .dataset import Dataset
from .messages import ImageDone, Job
from .request_response import RequestGenerator, RequestWorker
from .work import ProcessedImage, image_buffers


class PipeWorker(RequestWorker):
    def __init__(self, worker_id: int, conn: Connection, dataset: Dataset, config: LoaderConfig) -> None:
        super().__init__(worker_id, conn, dataset, config)
        self.buffers = image_buffers(self.max_tiles, dataset, config)

    def deliver(self, job: Job) -> None:
        with self.clock.timing("compute"):
            image = self.processor.process(job.image, *self.buffers)
        with self.clock.timing("transfer"):
            self.conn.send(self.done(job))
            injection.hit("pipe.pixels", conn=self.conn, data=image.data)
            # As flat bytes: send_bytes frames a multi-dimensional uint8 view by its
            # first dimension (len(), not nbytes), which would truncate the masks.
            self.conn.send_bytes(memoryview(image.data).cast("B"))
            self.conn.send_bytes(memoryview(image.masks).cast("B"))


class PipeGenerator(RequestGenerator):
    """Each worker answers image requests on its own Pipe, pixels as raw bytes."""

    name = "pipe"
    worker_cls = PipeWorker

    def _prepare(self, resources: ExitStack) -> None:
        self._stock: list[tuple[np.ndarray, np.ndarray]] = []  # free receive buffers
        super()._prepare(resources)

    def _collect(self, worker_id: int, done: ImageDone) -> ProcessedImage:
        data, masks = self._stock.pop() if self._stock else image_buffers(self.max_tiles, self.dataset, self.config)
        n = done.n_tiles
        self.pool.read_into(worker_id, memoryview(data[:n]))
        self.pool.read_into(worker_id, memoryview(masks[:n]))
        return ProcessedImage(done.position, done.image_index, data[:n], masks[:n], handle=(data, masks))

    def _free(self, image: ProcessedImage) -> None:
        self._stock.append(image.handle)
