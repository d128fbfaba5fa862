"""The workers started in the background (``LoaderConfig.background_start``), for every strategy offering it.

``make_generator`` returns at once: a thread runs the strategy's start (its pool, or
torch's DataLoader and its workers) while the main process makes the images the loop
asks for itself, the way ``baseline`` does, in plan order. Once the start has ended
the strategy hands the rest of the plan to its workers; a start that failed raises
its error in the loop's thread, at the next ``next()`` or ``iter()``, with a note
saying where it came from.

What a strategy keeps: the epoch's jobs not yet made (``pending``) and the position of
the image the loop wants next; :meth:`BackgroundStart.make_next` takes the one from
the other. ``close()`` waits for the thread (:meth:`BackgroundStart.join`): whatever
the start was waiting for watches the generator's close signal, so it returns soon.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from .config import LoaderConfig
from .dataset import Dataset
from .plan import ImageJob
from .stages import StageClock
from .work import ProcessedImage, Processor, make_processor

# How a strategy makes a job's image in this process: ``(job, processor) -> ProcessedImage``.
MakeHere = Callable[[ImageJob, Processor], ProcessedImage]


def process_here(job: ImageJob, processor: Processor) -> ProcessedImage:
    """A job's image, made by ``processor`` into fresh arrays."""
    return processor.process(job)


class BackgroundStart:
    """A thread running a strategy's ``start``; this process's own processor for the images meanwhile."""

    def __init__(self, name: str, start: Callable[[], object], dataset: Dataset, config: LoaderConfig) -> None:
        self.name = name
        self.processor = make_processor(dataset, config)
        self._error: BaseException | None = None
        self.failed = False  # the start raised (its error goes to the loop once, through ready())
        self._thread = threading.Thread(target=self._run, args=(start,), name=f"ipcbench-{name}-start", daemon=True)
        self._thread.start()

    def _run(self, start: Callable[[], object]) -> None:
        try:
            start()
        except BaseException as exc:  # raised in the loop's thread by ready()
            self._error, self.failed = exc, True

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def ready(self) -> bool:
        """Whether the start has ended; one that failed raises its error here, once."""
        if self._thread.is_alive():
            return False
        self._thread.join()
        error, self._error = self._error, None
        if error is not None:
            error.add_note(f"{self.name}: raised while its workers started in the background (background_start=True)")
            raise error
        return True

    def make_next(
        self, pending: deque[ImageJob], wanted: int, clock: StageClock, make: MakeHere = process_here
    ) -> ProcessedImage:
        """Image ``wanted``, the first of ``pending``, made in this process while the workers start."""
        job = pending.popleft()
        if job.position != wanted:
            raise RuntimeError(f"{self.name}: image {wanted} is wanted, and image {job.position} is next")
        with clock.timing("compute"):
            return make(job, self.processor)

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the start to end; whether it ended and did not fail."""
        self._thread.join(timeout)
        return not (self._thread.is_alive() or self.failed)
