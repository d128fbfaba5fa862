"""spdl: Meta's SPDL (0.8.0) pipeline doing the per-image work in a process pool.

Message flow::

    main process                                            worker i (ProcessPoolExecutor, persistent)
    ------------                                            -------------------------------------------
    _begin_epoch: a new Pipeline per epoch                  start_worker (once, the pool's initializer):
      source: the plan's (epoch, job)s                        ignore SIGINT, watch the parent, make the
      pipe(process_image, concurrency=workers*prefetch,       processor
        executor=<the one pool>, output_order="input",
        max_failures=0) -> sink(1)
    SPDL's event-loop thread submits jobs       ---->       call queue (pickled (epoch, job): a TileDraw)
                                                            process_image: the per-image work in fresh
                                                              arrays; ImageResult (or WorkerFailure)
    the executor's manager thread unpickles     <----       result queue (the arrays pickled whole
      the result; SPDL reorders to input order                through the pool's pipe)
    _next_image: Pipeline.get_item, polled
    BatchGenerator._assemble copies the tiles into batches, as every strategy does

What SPDL is asked for, and why:

- One ``ProcessPoolExecutor`` for the generator's life (the contract's workers live
  until ``close()``), made by us and handed to each epoch's pipeline as its
  ``executor``; a pipeline does not shut down an executor it was given. Its workers
  are started at once (under spawn/forkserver the executor would start one per
  submit) and each answers a ready call, so start-up failures surface in the
  constructor and ``worker_pids()`` is known.
- ``concurrency=workers * prefetch``: SPDL keeps that many jobs submitted, the window
  every strategy honours; ``add_sink(1)``: one finished image waits for the loop.
  (In flight beyond that: the stage queues' single slots and the image being assembled.)
- ``output_order="input"``: plan order.
- ``max_failures=0``. SPDL's default logs a failed item and *drops* it: a worker that
  raised gave an epoch one image short, and a killed worker (``BrokenProcessPool``)
  an epoch cut short and then empty epochs, all without an error (measured below). A
  loader that loses data must not be measured as fast: here any failed task fails
  the pipeline. Exceptions of the per-image work never reach SPDL anyway: they come
  back as data (``spdl_common``), because SPDL's process-pool wrapper drops the
  worker's traceback.
- ``start_method``: the executor's ``mp_context``; all three work.
- ``stage_times()``: ``compute`` is measured in the workers (their totals come with
  every image, keyed by pid); ``wait`` is the main thread in ``get_item``. Unpickling
  happens in the executor's manager thread and SPDL's event loop: not timed apart,
  it shows as ``wait``; ``serialize``/``transfer`` stay 0.

Who owns each buffer: a worker's arrays are fresh per image; pickling copies them into
the result pipe and the main process unpickles fresh arrays, which the assembler
copies out of and drops (two copies of every pixel, plus the pipe).

Waiting: SPDL's output is an asyncio queue behind ``get_item(timeout)``, nothing a
``connection.wait`` can watch, so ``_next_image`` polls it in ``POLL_S`` slices and
between slices checks the close signal and the workers' exit status. ``timeout`` is
honoured as the longest wait for one image (``WorkerTimeoutError``).

Faults, SPDL's raw behaviour (measured, fork, 2 workers, ``get_item(timeout=3)``):

- a worker raises: with the default ``max_failures`` the item is logged (a traceback
  on stderr per failure) and dropped, the epoch yields one image fewer and goes on;
  with ``max_failures=0``, ``PipelineFailure`` ("pipeline stages failed") after the
  items before it, the worker's exception reduced to ``RuntimeError("Function failed
  in subprocess: ValueError: boom (file:line:fn)")``, its traceback gone;
- a worker SIGKILLed mid-epoch: the executor breaks (``BrokenProcessPool``, and it
  SIGTERMs the other workers); by default the epoch ends early *without an error*
  (4 of 40 items) and every later epoch is empty, with ~1200 lines of tracebacks on
  stderr; with ``max_failures=0``, ``PipelineFailure`` within 0.11 s, still with
  SPDL's task-failure tracebacks on stderr;
- a worker SIGSTOPped (hung): ``get_item(timeout=2)`` raises ``TimeoutError`` after
  2.05 s and ``Pipeline.stop`` returns in 0.06 s, but the executor's
  ``shutdown(wait=True)`` waits for the stopped worker for ever (still waiting after
  5 s): hence our own escalation.

Here: a worker's exception is ``WorkerError`` with its traceback; a dead worker is
``WorkerDiedError`` (naming every worker found dead: the executor terminates the
others), found within ``POLL_S`` by our own check or from SPDL's failure; a silent
worker is ``WorkerTimeoutError`` after ``timeout``. SPDL's "Task ... failed" records
of our stage are filtered out of its logger (``spdl_common.TaskLogFilter``), so stderr
stays clean; nothing else of SPDL's logging is touched.

Early ``break``: ``_end_epoch`` stops the pipeline (tasks cancelled; jobs already in
the executor's call queue, at most ``workers + 1``, still run and are discarded). The
next epoch is a new pipeline on the same workers.

Shutdown (``close()``, or garbage collection through a ``weakref.finalize``): stop
the pipeline, ``executor.shutdown(wait=False, cancel_futures=True)`` (each worker gets
its exit message), then wait ``STOP_GRACE_S`` for the workers (none after a failure)
-> SIGTERM -> SIGKILL (``workers.stop_processes``), join the executor's manager
thread, close its queues' pipes and unlink their semaphores (spawn/forkserver). The
workers exit by themselves within ``PARENT_POLL_S`` if the main process dies.

SPDL is imported inside methods only, so ``import strategies`` works without it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import weakref
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from multiprocessing.connection import wait
from typing import Any

from .base import BatchGenerator, owner_only
from .config import LoaderConfig
from .constants import KILL_GRACE_S, STOP_GRACE_S
from .dataset import Dataset
from .errors import WorkerDiedError, WorkerError, WorkerTimeoutError
from .internals import executor_channels, executor_processes, queue_writer, start_executor_processes, tracker_pid
from .main_guard import unguarded_main_hint
from .messages import WorkerFailure
from .plan import EpochPlan
from .shm_segments import close_queue, release_semaphores
from .spdl_common import SPDL_REQUIRES, ImageResult, process_image, quiet_task_logs, start_worker, worker_error
from .spdl_common import worker_ready as ready_call
from .work import ProcessedImage
from .workers import FORKSERVER_PRELOAD, how_it_ended, start_fork_server, stop_processes

# How often the wait for an image looks at the close signal and the workers' exit status.
POLL_S = 0.05
# The name of our pipe stage (SPDL's task names carry it: TaskLogFilter matches it).
STAGE = "ipcbench_spdl_images"
# What the fork server imports once: the worker unpickles SPDL's process-pool wrapper.
SPDL_PRELOAD = ["spdl.pipeline"]
STARTING = "the ready answer of every worker"


class _PoolState:
    """What the finalizer needs, without a reference to the generator."""

    def __init__(self) -> None:
        self.executor: Any = None
        self.pipeline: Any = None
        self.processes: list[mp.process.BaseProcess] = []
        self.broken = False  # a worker died, hung or failed: no polite wait at close
        self.tracker: int | None = None


def _stop_pipeline(state: _PoolState) -> BaseException | None:
    """Stop the epoch's pipeline (bounded); return the failure it reports, if any."""
    pipeline, state.pipeline = state.pipeline, None
    if pipeline is None:
        return None
    try:
        pipeline.stop(timeout=STOP_GRACE_S)
    except Exception as exc:  # a task failure nobody read: the caller decides
        return exc
    return None


def _close_pool(state: _PoolState) -> None:
    """Pipeline, executor, workers, queues: all released, bounded in time. Idempotent."""
    _stop_pipeline(state)
    executor, state.executor = state.executor, None
    if executor is None:
        return
    processes, state.processes = state.processes or executor_processes(executor), []
    call_queue, result_queue, manager = executor_channels(executor)
    try:
        executor.shutdown(wait=False, cancel_futures=True)  # an exit message for every worker
    finally:
        stop_processes(processes, 0.0 if state.broken else STOP_GRACE_S)
        if manager is not None:
            manager.join(KILL_GRACE_S)  # it joins the workers and closes the call queue; they are gone
            if manager.is_alive():
                # It is reading a result that a killed worker left half-written. With every worker
                # gone, only this process's own write end keeps that pipe open: closing it ends
                # the read (EOF), and the thread handles a broken pool and exits. Left alone, it
                # would block interpreter exit for ever (concurrent.futures joins it at exit).
                queue_writer(result_queue).close()
                manager.join(KILL_GRACE_S)
        for process in processes:
            if process.exitcode is not None:
                process.close()  # its sentinel, now
        if manager is None or not manager.is_alive():
            close_queue(call_queue, KILL_GRACE_S)
            result_queue.close()
            release_semaphores(state.tracker, call_queue, result_queue)


class SpdlGenerator(BatchGenerator):
    """An SPDL ``Pipeline`` per epoch over one persistent ``ProcessPoolExecutor``; the base class assembles batches."""

    name = "spdl"
    worker_processes = True
    requires = SPDL_REQUIRES

    def __init__(self, dataset: Dataset | str | os.PathLike[str], config: LoaderConfig) -> None:
        super().__init__(dataset, config)
        from concurrent.futures import ProcessPoolExecutor

        c = config
        if c.start_method == "forkserver":
            start_fork_server(FORKSERVER_PRELOAD + SPDL_PRELOAD)
        quiet_task_logs(STAGE)
        self._state = _PoolState()
        self._wanted = 0
        self._jobs: list[tuple[int, Any]] = []
        self._kept_failure: BaseException | None = None  # a task failure found at the end of an epoch
        self._finalizer = weakref.finalize(self, owner_only(_close_pool, self._state))
        try:
            ctx = mp.get_context(c.start_method)
            executor = self._state.executor = ProcessPoolExecutor(
                c.workers, mp_context=ctx, initializer=start_worker, initargs=(self.dataset, c)
            )
            self._state.tracker = tracker_pid()
            if c.start_method != "fork":
                start_executor_processes(executor)  # under fork its first submit starts them all
            ready = [executor.submit(ready_call) for _ in range(c.workers)]
            self._state.processes = executor_processes(executor)
            self._await_ready(ready)
        except BaseException:
            self._state.broken = True
            self._finalizer()
            raise

    def _await_ready(self, ready: list[Future]) -> None:
        deadline = time.monotonic() + self.config.wait_timeout
        pending = set(ready)
        while pending:
            self._check_workers(STARTING)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerTimeoutError(
                    f"spdl: no {STARTING} within timeout={self.config.timeout:g}s; workers alive: {self._alive()}"
                )
            done, pending = wait_futures(
                [*pending, self.close_signal.future], min(POLL_S, remaining), return_when=FIRST_COMPLETED
            )
            self.close_signal.check(STARTING)
            for future in done:
                if future is self.close_signal.future:
                    continue
                try:
                    _, failure = future.result()
                except Exception as exc:  # BrokenProcessPool: a worker died while starting
                    raise self._died(STARTING, exc) from exc
                if failure is not None:
                    raise self._failed(failure)
            pending.discard(self.close_signal.future)

    # -- producer hooks -------------------------------------------------------
    def _begin_epoch(self, plan: EpochPlan) -> None:
        self._check_workers(f"the start of epoch {plan.epoch}")
        if (kept := self._kept_failure) is not None:
            # A killed worker shows as a pipeline failure first and as an exit code a moment
            # later: _died waits for the death to show and names it, else reports the failure.
            raise self._died(f"the end of epoch {plan.epoch - 1}", kept) from kept
        self._wanted = 0
        self._jobs = [(plan.epoch, job) for job in plan.jobs]  # the pipeline starts with the first image wanted

    def _start_pipeline(self) -> Any:
        """Build and start this epoch's pipeline.

        Lazily, at the first image: an epoch started and abandoned unread (``iter(gen)``
        then another ``iter(gen)``) never starts one, because SPDL 0.8.0 stopping a
        pipeline whose task has not begun leaves its stage coroutines unawaited (a
        "coroutine ... was never awaited" RuntimeWarning per stage on stderr).
        """
        from spdl.pipeline import PipelineBuilder

        c = self.config
        pipeline = (
            PipelineBuilder()
            .add_source(self._jobs)
            .pipe(
                process_image,
                concurrency=c.workers * self.prefetch,
                executor=self._state.executor,
                name=STAGE,
                output_order="input",
                max_failures=0,
            )
            .add_sink(1)
            .build(num_threads=c.workers)
        )
        self._state.pipeline = pipeline
        pipeline.start(timeout=c.wait_timeout)
        return pipeline

    def _next_image(self) -> ProcessedImage:
        waiting_for = f"image {self._wanted} of epoch {self.epoch}"
        pipeline = self._state.pipeline or self._start_pipeline()
        deadline = time.monotonic() + self.config.wait_timeout
        with self.clock.timing("wait"):
            while True:
                self._check_workers(waiting_for)
                self.close_signal.check(waiting_for)
                try:
                    item = pipeline.get_item(timeout=max(0.0, min(POLL_S, deadline - time.monotonic())))
                    break
                except TimeoutError:
                    if time.monotonic() >= deadline:
                        self._state.broken = True
                        raise WorkerTimeoutError(
                            f"spdl: {waiting_for} did not come within timeout={self.config.timeout:g}s; "
                            f"workers alive: {self._alive()}"
                        ) from None
                except EOFError:
                    raise RuntimeError(f"spdl: the pipeline ended before {waiting_for}") from None
                except Exception as exc:  # PipelineFailure: a task failed (BrokenProcessPool, ...)
                    raise self._died(waiting_for, exc) from exc
        self.close_signal.check(waiting_for)  # closed while the image came: the close is the news
        if isinstance(item, WorkerFailure):
            raise self._failed(item)
        if not isinstance(item, ImageResult) or item.position != self._wanted or item.epoch != self.epoch:
            raise RuntimeError(f"spdl: got {type(item).__name__} {getattr(item, 'position', '?')} for {waiting_for}")
        self._wanted += 1
        self._worker_stages[item.pid] = item.stages
        return ProcessedImage(item.position, item.image_index, item.data, item.masks)

    def _end_epoch(self) -> None:
        failure = _stop_pipeline(self._state)
        if failure is not None and self._kept_failure is None:
            self._kept_failure = failure  # raised at the next epoch, unless a dead worker explains it first

    def _shutdown(self) -> None:
        self._finalizer()

    # -- workers and errors -------------------------------------------------
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._state.processes]

    def _alive(self) -> list[int]:
        return [p.pid for p in self._state.processes if p.exitcode is None]

    def _death(self, waiting_for: str) -> WorkerDiedError | None:
        """The error naming every worker that is gone, if one is."""
        dead = [(i, p) for i, p in enumerate(self._state.processes) if p.exitcode is not None]
        if not dead:
            return None
        self._state.broken = True
        worker_id, first = dead[0]
        hint = unguarded_main_hint(self.config.start_method, first.exitcode) if waiting_for == STARTING else ""
        gone = "; ".join(f"spdl worker {i} (pid {p.pid}) {how_it_ended(p.exitcode)}" for i, p in dead)
        return WorkerDiedError(
            f"{gone}; was waiting for {waiting_for}{hint}", worker_id=worker_id, pid=first.pid, exitcode=first.exitcode
        )

    def _check_workers(self, waiting_for: str) -> None:
        if (error := self._death(waiting_for)) is not None:
            raise error

    def _died(self, waiting_for: str, exc: BaseException) -> WorkerError:
        """The error for a failure SPDL or the executor reported: a dead worker if one shows, else the failure."""
        self._state.broken = True
        sentinels = [p.sentinel for p in self._state.processes if p.exitcode is None]
        if sentinels and wait(sentinels, KILL_GRACE_S):  # a death the executor saw first shows here at once
            for p in self._state.processes:
                p.join(0.05)
        death = self._death(waiting_for)
        if death is not None:
            return death
        return WorkerError(f"spdl: the pipeline failed while waiting for {waiting_for}: {type(exc).__name__}: {exc}")

    def _failed(self, failure: WorkerFailure) -> WorkerError:
        self._state.broken = True
        pids = [p.pid for p in self._state.processes]
        return worker_error("spdl", failure, pids.index(failure.pid) if failure.pid in pids else -1)
