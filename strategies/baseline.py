"""baseline: the per-image work done inline, in the main process.

Message flow: none. ``next()`` asks for the next image of the plan, the main process
reads and tiles it, and the assembler copies its tiles into batches. This is the
reference every other strategy must match bit for bit, and the throughput every
other strategy must beat to be worth its complexity.

Buffers: one tile buffer sized for the largest image, reused for every image; the
assembler has always copied the previous image's tiles out before it asks for the
next one (it releases an image before requesting the next).

Shutdown: nothing to stop; ``close()`` drops the buffer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from .base import BatchGenerator
from .config import LoaderConfig
from .dataset import Dataset
from .plan import EpochPlan, ImageJob
from .work import ProcessedImage, image_buffers, make_processor


class BaselineGenerator(BatchGenerator):
    """Single process: ``workers`` and ``prefetch`` are ignored."""

    name = "baseline"
    has_workers = False
    traces = True

    def __init__(self, dataset: Dataset | str | os.PathLike[str], config: LoaderConfig) -> None:
        super().__init__(dataset, config)
        self._processor = make_processor(self.dataset, config, decoders=1)
        self._data_buffer, self._masks_buffer = image_buffers(self.max_tiles, self.dataset, config)
        self._jobs: Iterator[ImageJob] = iter(())

    def _begin_epoch(self, plan: EpochPlan) -> None:
        self._jobs = iter(plan.jobs)

    def _next_image(self) -> ProcessedImage:
        job = next(self._jobs)
        with self.clock.timing("compute"):
            return self._processor.process(job, self._data_buffer, self._masks_buffer)

    def _end_epoch(self) -> None:
        self._jobs = iter(())

    def _shutdown(self) -> None:
        self._jobs = iter(())
        del self._data_buffer, self._masks_buffer
