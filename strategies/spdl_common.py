"""What the two SPDL strategies (``spdl``, ``spdl_arena``) share; imports no SPDL itself.

Worker side: :func:`start_worker` is the set-up every SPDL worker process runs first
(the initializer of ``spdl``'s ``ProcessPoolExecutor`` workers and of ``spdl_arena``'s
one subprocess): it ignores SIGINT (Ctrl-C is the main process's to handle), starts
the parent watch (``workers.watch_parent``: the worker exits within ``PARENT_POLL_S``
of the main process's death, whatever the start method), arms the fault injection
points and makes the per-image processor. :func:`process_image` is the per-image work
(``strategies.work``) with its compute time measured.

Errors travel as data. SPDL loses a worker's traceback: its process-pool wrapper
re-raises ``RuntimeError("Function failed in subprocess: ValueError: ... (file:line:fn)")``
``from None``, and ``iterate_in_subprocess`` reports ``"Failed to fetch the next item:
<message>"``. So neither the per-image work nor the set-up raises into SPDL: each
returns a :class:`~strategies.messages.WorkerFailure` (type, message, formatted
traceback), and the main process raises :func:`worker_error`, a ``WorkerError`` whose
cause is the worker's ``RemoteTraceback``, as every strategy does. A set-up failure is
kept and returned by the worker's first call.
"""

from __future__ import annotations

import logging
import os
import signal
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import injection
from .config import LoaderConfig
from .dataset import Dataset
from .errors import RemoteTraceback, WorkerError
from .messages import WorkerFailure
from .plan import ImageJob
from .stages import StageClock
from .work import Processor, make_processor
from .workers import watch_parent

# (module, pip requirement) of both strategies: the pinned SPDL whose behaviour their docstrings describe.
SPDL_REQUIRES = ("spdl", "spdl==0.8.0")


@dataclass(frozen=True, slots=True)
class ImageResult:
    """One processed image as a worker hands it over: (N, C, T, T) data in the config's dtype, (N, T, T) masks."""

    epoch: int
    position: int
    image_index: int
    data: np.ndarray
    masks: np.ndarray
    pid: int
    stages: tuple[float, ...] = ()  # the worker's cumulative stage totals (strategies.stages)


@dataclass(slots=True)
class WorkerState:
    """What one worker process keeps between images."""

    processor: Processor | None = None
    failure: WorkerFailure | None = None  # its set-up failed: every call answers this
    clock: StageClock = field(default_factory=StageClock)


_state = WorkerState(failure=WorkerFailure(-1, 0, "RuntimeError", "start_worker() never ran here", ""))


def failure_of(exc: BaseException, worker_id: int = -1) -> WorkerFailure:
    """``exc`` (being handled) as data: its type, message and formatted traceback."""
    return WorkerFailure(worker_id, os.getpid(), type(exc).__name__, str(exc), traceback.format_exc())


def start_worker(dataset: Dataset, config: LoaderConfig) -> None:
    """The set-up of an SPDL worker process: ignore SIGINT, watch the parent, arm faults, make the processor."""
    global _state
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch_parent()
    state = WorkerState()
    try:
        injection.arm_from_environment()  # nothing, unless a fault test armed a point (strategies.injection)
        injection.hit("worker.start", worker_id=0)
        state.processor = make_processor(dataset, config)
    except Exception as exc:  # answered by the first call, with its traceback
        state.failure = failure_of(exc)
    _state = state


def worker_ready(_: object = None) -> tuple[int, WorkerFailure | None]:
    """(pid, set-up failure or None): what a worker answers once it is set up."""
    return os.getpid(), _state.failure


def process_image(
    tagged: tuple[int, ImageJob], processor: Processor | None = None, clock: StageClock | None = None
) -> ImageResult | WorkerFailure:
    """The per-image work of ``(epoch, job)`` in fresh arrays, or the failure that stopped it (as data).

    ``processor`` and ``clock`` default to the worker's own; a thread of the worker
    passes its own (a processor's decode buffers serve one thread at a time).
    """
    state = _state
    if state.failure is not None:
        return state.failure
    processor = processor or state.processor
    assert processor is not None
    epoch, job = tagged
    clock = clock or state.clock
    try:
        with clock.timing("compute"):
            image = processor.process(job)
        return ImageResult(epoch, job.position, job.image_index, image.data, image.masks, os.getpid(), clock.totals())
    except Exception as exc:  # travels as data, raised as WorkerError in the main process
        return failure_of(exc)


def setup_failure() -> WorkerFailure | None:
    """Why this worker's set-up failed (None if it did not)."""
    return _state.failure


def worker_error(name: str, failure: WorkerFailure, worker_id: int) -> WorkerError:
    """The ``WorkerError`` for a failure a worker sent, its traceback as the cause."""
    error = WorkerError(
        f"{name} worker {worker_id} (pid {failure.pid}) raised {failure.exc_type}: {failure.message}",
        worker_id=worker_id,
        pid=failure.pid,
    )
    error.__cause__ = RemoteTraceback(failure.traceback)
    return error


class TaskLogFilter(logging.Filter):
    """Drops SPDL's "Task [<stage>...] failed." log records of our own stages, and nothing else.

    SPDL logs every failed task with its traceback (``spdl.pipeline._common._misc``),
    and a killed worker fails every task in flight (``BrokenProcessPool``): dozens of
    tracebacks on the user's stderr for one error that the generator raises anyway,
    as a ``WorkerDiedError``. Only records naming a stage of ours (``stage`` in the
    task name) are dropped; other pipelines in the program log as before.
    """

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def filter(self, record: logging.LogRecord) -> bool:
        args: Any = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and self.stage in a for a in args):
            return False  # "Task [<n>:<n>:<stage>[...]] failed."
        # "Task [Pipeline::main] failed.": the pipeline's failure, whose sub-exceptions name the stage.
        return not (record.exc_info and _mentions(record.exc_info[1], self.stage))


def _mentions(exc: BaseException | None, stage: str, depth: int = 0) -> bool:
    """Whether ``exc``, its sub-exceptions (an exception group) or its causes name ``stage``."""
    if exc is None or depth > 8:
        return False
    if stage in str(exc):
        return True
    inner = [*getattr(exc, "exceptions", ()), exc.__cause__]
    return any(_mentions(e, stage, depth + 1) for e in inner)


SPDL_TASK_LOGGER = "spdl.pipeline._common._misc"


def quiet_task_logs(stage: str) -> None:
    """Install :class:`TaskLogFilter` for ``stage`` on SPDL's task logger, once per process."""
    logger = logging.getLogger(SPDL_TASK_LOGGER)
    if not any(isinstance(f, TaskLogFilter) and f.stage == stage for f in logger.filters):
        logger.addFilter(TaskLogFilter(stage))
