"""What crosses a process boundary, as data (frozen, slotted dataclasses).

Main -> worker:  :class:`Job` (do this image, for this epoch generation, into this
slot), :class:`Reset` (drop requests older than this generation), :class:`Stop`.
Worker -> main:  :class:`Ready` (set-up done), :class:`ImageDone` (an image is
processed; for ``pipe`` its bytes follow, for ``shm`` it is in the slot),
:class:`Skipped` (a request dropped after a Reset), :class:`WorkerFailure` (an
exception, with its traceback text).

``generation`` counts epochs started by this generator: a result whose generation
is not the current one belongs to an abandoned epoch and is discarded.
"""

from __future__ import annotations

from dataclasses import dataclass

from .plan import ImageJob


@dataclass(frozen=True, slots=True)
class Ready:
    worker_id: int
    pid: int


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Reset:
    generation: int


@dataclass(frozen=True, slots=True)
class Job:
    generation: int
    image: ImageJob
    slot: int = 0  # shm: the image's slot; zero-copy shm: the slot of its epoch's first batch


@dataclass(frozen=True, slots=True)
class ImageDone:
    generation: int
    position: int
    image_index: int
    n_tiles: int
    slot: int = 0
    stages: tuple[float, ...] = ()  # the worker's cumulative stage totals (strategies.stages)


@dataclass(frozen=True, slots=True)
class Skipped:
    generation: int
    position: int
    slot: int = 0


@dataclass(frozen=True, slots=True)
class WorkerFailure:
    worker_id: int
    pid: int
    exc_type: str
    message: str
    traceback: str
