"""The worker lifecycle shared by every multi-process strategy.

::

    main process                                   worker i (one per LoaderConfig.workers)
    ------------                                   ----------------------------------------
    WorkerPool.__init__
      Process(target=worker_main).start()  ---->   worker_main: ignore SIGINT, watch parent,
                                                   worker = worker_cls(...)   (set-up)
      wait for every Ready (timeout,       <----   conn.send(Ready)
        sentinels)                                 worker.run()  (the strategy's loop)
    WorkerPool.wait / read                 <----   results on conn (pipe, shm) or a queue
      (timeout + sentinels: a death or a   <----   WorkerFailure(traceback) on any exception
       silence is an error, never a hang)
    WorkerPool.close                        ---->   Stop: finish the image in hand, return

Who owns what: the pool owns the processes and the main-side ends of the per-worker
duplex Pipes; strategies own their queues and shared memory and register their
cleanup with the generator.

Shutdown logic (docs/design.md section 8), in :meth:`WorkerPool.close`:

1. ask politely: the strategy's ``stop`` callable (default: ``Stop`` on every pipe);
2. wait up to ``STOP_GRACE_S`` for the workers to exit, *draining* their pipes (and
   any extra readers) meanwhile, because a worker blocked writing a 40 MB result
   into a full pipe cannot see the Stop behind it;
3. SIGTERM the survivors, wait ``TERMINATE_GRACE_S``;
4. SIGKILL what is left, wait ``KILL_GRACE_S``; close every descriptor.

After a worker died, hung or failed (``broken``), steps 1 and 2 are skipped: a
hung worker never answers, and the error should not wait ``STOP_GRACE_S`` for it.
``close`` is idempotent and bounded by the sum of the three graces.

Why the workers ignore SIGINT: Ctrl-C in a terminal signals the whole process
group. The main process turns it into one KeyboardInterrupt and closes the pool;
workers that also raised would print one traceback each and die mid-write.

Why the workers watch their parent: if the main process is SIGKILLed nobody sends
Stop. A watch thread in each worker ends it within ``PARENT_POLL_S`` when either
(a) the parent-process sentinel fires (``multiprocessing.parent_process()``: under
spawn and forkserver a pipe whose write end only the main process holds), or
(b) ``os.getppid()`` changes (under fork the worker is re-parented when the main
process dies). Neither alone is enough: under forkserver the parent is the fork
server, which lives on while any worker holds its "alive" pipe (CPython gives
every forked child a copy), so (b) never fires; under fork, later workers inherit
the main-side pipe ends of earlier ones, so (a) and any pipe EOF never come while
a sibling lives.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import resource
import select
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import Any, Protocol

from . import injection
from .close_signal import CloseSignal
from .constants import KILL_GRACE_S, PARENT_POLL_S, STOP_GRACE_S, TERMINATE_GRACE_S
from .errors import DescriptorLimitError, RemoteTraceback, WorkerDiedError, WorkerError, WorkerTimeoutError
from .framing import MessageReader, send_message, widen
from .internals import forget_inherited_fork_server, fork_server_pid
from .main_guard import unguarded_main_hint
from .messages import Ready, Stop, WorkerFailure

# Modules the fork server imports before it forks any worker ("__main__" is
# multiprocessing's own default).
FORKSERVER_PRELOAD = ["__main__", "strategies"]


# The workers' copies of this many bytes or more stream past the cache (non-temporal
# stores): glibc's memcpy keeps a copy's destination in the cache up to about three
# quarters of the L3 (190 MiB on the reference machine), which suits a process that
# reads what it has just written; a worker writes what another process reads later.
# Set in the fork server's environment, so every worker forked from it inherits it.
STREAMING_COPY_BYTES = 1 << 20
_NON_TEMPORAL_TUNABLE = "glibc.cpu.x86_non_temporal_threshold"
_fork_server_lock = threading.Lock()  # one start at a time: it sets this process's environment for a moment


def worker_glibc_tunables(inherited: str | None) -> str:
    """``GLIBC_TUNABLES`` for a new interpreter that will fork workers: ``inherited`` and streaming copies.

    A threshold the program already sets is kept (the way to measure without, or to
    choose another); other tunables are kept as they are. Other C libraries and other
    machines than x86-64 ignore the setting.
    """
    if inherited and _NON_TEMPORAL_TUNABLE in inherited:
        return inherited
    streaming = f"{_NON_TEMPORAL_TUNABLE}={STREAMING_COPY_BYTES:#x}"
    return f"{inherited}:{streaming}" if inherited else streaming


def start_fork_server(preload: list[str]) -> None:
    """Start this program's fork server now, importing ``preload``, unless it already runs.

    The server is one per program and keeps the preload it started with: a later
    call changes nothing. Started early, it imports while the caller goes on (the
    ``torch`` strategy's main process imports torch meanwhile). It starts with
    :func:`worker_glibc_tunables` in its environment (read once, when an interpreter
    starts); the calling process's environment is as it was when this returns.
    """
    from multiprocessing import forkserver

    forget_inherited_fork_server()
    mp.get_context("forkserver").set_forkserver_preload(preload)
    with _fork_server_lock:
        if fork_server_pid() is not None:
            return
        inherited = os.environ.get("GLIBC_TUNABLES")
        os.environ["GLIBC_TUNABLES"] = worker_glibc_tunables(inherited)
        try:
            forkserver.ensure_running()
        finally:
            if inherited is None:
                del os.environ["GLIBC_TUNABLES"]
            else:
                os.environ["GLIBC_TUNABLES"] = inherited


def _nothing() -> None:
    """The target of :func:`wait_for_fork_server`'s process."""


def wait_for_fork_server() -> None:
    """Return once this program's fork server has imported its preload (it starts no process before).

    Asks it for one process that does nothing (a fork and an exit, ~20 ms once it is ready).
    """
    probe = mp.get_context("forkserver").Process(target=_nothing, name="ipcbench-fork-server-probe", daemon=True)
    probe.start()
    probe.join()


# Exit status of a worker that noticed its parent had died.
EXIT_PARENT_DIED = 3

# Descriptors the main process needs free to start a pool: per worker its pipe, its
# sentinel and the transient ones of a start (a fork server's connection, the pipe
# and descriptors passed to it); plus the fork server, the resource tracker and a
# strategy's queues. Measured: 4 x workers + 10 to 18, by start-up with `ulimit -n`.
DESCRIPTORS_PER_WORKER = 4
DESCRIPTORS_PER_POOL = 24


def check_descriptor_room(workers: int, name: str) -> None:
    """Raise :class:`DescriptorLimitError` if this process cannot open what ``workers`` workers need.

    Checked before anything starts: running out half-way makes the fork server die
    with a traceback of its own and the pool fail with a bare ``EMFILE``.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    try:
        in_use = len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor
    except OSError:
        return  # no /proc: the EMFILE translation in WorkerPool is what is left
    needed = DESCRIPTORS_PER_WORKER * workers + DESCRIPTORS_PER_POOL
    if in_use + needed > soft:
        raise DescriptorLimitError(
            errno.EMFILE,
            f"the {name} strategy with {workers} workers needs about {needed} more file descriptors, and this "
            f"process has {in_use} open of its limit of {soft} (ulimit -n). Raise the limit (ulimit -n 4096, or "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ...)), or use fewer workers",
        )


def descriptor_limit_error(exc: OSError, name: str, workers: int) -> DescriptorLimitError:
    """The error for an ``EMFILE``/``ENFILE`` met while starting workers, naming the limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    which = "this system's" if exc.errno == errno.ENFILE else f"this process's limit of {soft} (ulimit -n)"
    return DescriptorLimitError(
        exc.errno,
        f"the {name} strategy ran out of file descriptors starting {workers} workers: {which} is reached. "
        f"Raise the limit or use fewer workers",
    )


class Worker(Protocol):
    """What a strategy's worker class provides: set-up in ``__init__``, the loop in ``run``."""

    def __init__(self, worker_id: int, conn: Connection, *args: Any) -> None: ...

    def run(self) -> None: ...


def main_process_watch() -> Callable[[float], bool]:
    """``gone(timeout)``: whether the main process has exited, waiting up to ``timeout`` seconds to see."""
    parent = os.getppid()
    # spawn and forkserver: a pipe whose write end only the main process holds. The
    # fork server is no proof of life: every worker it forks holds its "alive" pipe.
    parent_process = mp.parent_process()
    sentinel = parent_process.sentinel if parent_process is not None else None

    def gone(timeout: float) -> bool:
        if sentinel is not None:
            if wait([sentinel], timeout):
                return True
        else:
            time.sleep(timeout)
        return os.getppid() != parent  # fork: re-parented once the main process died

    return gone


def watch_parent(before_exit: Callable[[], object] | None = None) -> Callable[[float], bool]:
    """Exit this worker process within ``PARENT_POLL_S`` once the main process is gone; return its ``gone``.

    ``before_exit`` runs first (the ``grain`` strategy's workers remove the shared
    memory they made and nobody took): whatever it raises, the worker exits.
    """
    gone = main_process_watch()

    def watch() -> None:
        while not gone(PARENT_POLL_S):
            pass
        try:
            if before_exit is not None:
                before_exit()
        finally:
            os._exit(EXIT_PARENT_DIED)

    threading.Thread(target=watch, name="ipcbench-parent-watch", daemon=True).start()
    return gone


def how_it_ended(exitcode: int | None) -> str:
    """What a worker's exit status says, in words: "was killed by signal 9 (SIGKILL)", "exited with code 1"."""
    if exitcode is None:  # its exit status was collected by someone else (a waitpid(-1) elsewhere)
        return "exited"
    if exitcode < 0:
        return f"was killed by signal {-exitcode} ({signal.Signals(-exitcode).name})"
    return f"exited with code {exitcode}"


def stop_processes(processes: Sequence[mp.process.BaseProcess], grace_s: float = 0.0) -> None:
    """Wait up to ``grace_s`` for ``processes`` to exit by themselves, then SIGTERM -> join -> SIGKILL -> join.

    The escalation of docs/design.md section 8 for processes a library started (the
    workers of torch's DataLoader, of a ``ProcessPoolExecutor``, an SPDL subprocess):
    bounded by ``grace_s + TERMINATE_GRACE_S + KILL_GRACE_S``.
    """
    for stage, grace in ((None, grace_s), ("terminate", TERMINATE_GRACE_S), ("kill", KILL_GRACE_S)):
        if stage is not None:
            for process in processes:
                if process.exitcode is None:
                    getattr(process, stage)()
        deadline = time.monotonic() + grace
        for process in processes:
            if process.exitcode is None:
                process.join(max(0.0, deadline - time.monotonic()))


def worker_main(worker_cls: type[Worker], worker_id: int, conn: Connection, args: tuple[Any, ...]) -> None:
    """Entry point of every worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch_parent()
    try:
        injection.arm_from_environment()  # nothing, unless a fault test armed a point (strategies.injection)
        injection.hit("worker.start", worker_id=worker_id)
        worker = worker_cls(worker_id, conn, *args)
        conn.send(Ready(worker_id, os.getpid()))
        worker.run()
    except (BrokenPipeError, ConnectionResetError, EOFError):
        return  # the main process closed our pipe: it is gone or has given up on us
    except BaseException as exc:  # report everything, SystemExit included
        failure = WorkerFailure(worker_id, os.getpid(), type(exc).__name__, str(exc), traceback.format_exc())
        try:
            conn.send(failure)
        except OSError:
            pass  # main already gone; our exit status still tells it we failed
        raise SystemExit(1) from None


def _pipe_full() -> None:
    """``close`` does not wait for room in a pipe: a worker that is not reading gets SIGTERM instead."""
    raise BlockingIOError


class WorkerPool:
    """``n`` worker processes of ``worker_cls``, each with a duplex Pipe to the main process.

    The constructor returns once every worker has sent ``Ready``, or raises (and
    leaves nothing running) if one fails, dies or stays silent for ``timeout`` s.
    """

    def __init__(
        self,
        *,
        name: str,
        worker_cls: type[Worker],
        args: tuple[Any, ...],
        workers: int,
        start_method: str,
        timeout: float,
        stop: Callable[[], None] | None = None,
        drain: Sequence[MessageReader] = (),
        close_signal: CloseSignal | None = None,
    ) -> None:
        self.name = name
        self.start_method = start_method
        self.timeout = timeout
        self._stop = stop
        self._drain = list(drain)
        # Watched by every wait: close() from another thread fires it (strategies.close_signal).
        self.close_signal = close_signal
        self._closed = False
        # Set when a worker is known dead, hung or failed: close() then skips Stop
        # and the grace period and goes straight to SIGTERM.
        self.broken = False
        self.processes: list[mp.process.BaseProcess] = []
        self.conns: list[Connection] = []
        self.readers: list[MessageReader] = []
        self.pids: list[int] = []
        ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # The fork server imports these once; each worker forked from it then
            # starts in ~20 ms instead of importing numpy and tifffile (~0.3 s).
            # Takes effect when the server starts, i.e. for the first pool.
            start_fork_server(FORKSERVER_PRELOAD)
        try:
            for worker_id in range(workers):
                main_end, worker_end = ctx.Pipe(duplex=True)
                for end in (main_end, worker_end):  # pixels flow in ~1 MiB steps, not 200 KiB (framing.widen)
                    widen(end)
                process = ctx.Process(
                    target=worker_main,
                    args=(worker_cls, worker_id, worker_end, args),
                    name=f"ipcbench-{name}-{worker_id}",
                    daemon=True,
                )
                self.conns.append(main_end)
                process.start()
                # Our copy of the worker's end must go, or its death would not read as EOF here.
                worker_end.close()
                self.processes.append(process)
                self.readers.append(MessageReader(main_end, self._waiter(worker_id)))
            for worker_id in range(workers):
                ready = self.read(worker_id)
                if not isinstance(ready, Ready):
                    raise WorkerError(f"{name} worker {worker_id} sent {ready!r} before Ready", worker_id=worker_id)
                self.pids.append(ready.pid)
        except OSError as exc:
            self.close()
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise descriptor_limit_error(exc, name, workers) from exc
            raise
        except BaseException:
            self.close()
            raise

    # -- waiting, in one place ------------------------------------------------
    def wait(self, readers: Sequence[Any], timeout: float | None = None, waiting_for: str = "a result") -> list:
        """Block until one of ``readers`` is readable and return those that are.

        Every worker's sentinel is watched too: a worker that exits raises its
        reported failure (:class:`WorkerError`) or :class:`WorkerDiedError`; nothing
        for ``timeout`` seconds (default ``LoaderConfig.timeout``) raises
        :class:`WorkerTimeoutError`.
        """
        timeout = self.timeout if timeout is None else timeout
        sentinels = {p.sentinel: i for i, p in enumerate(self.processes)}
        signal = [self.close_signal] if self.close_signal is not None else []
        ready = wait([*readers, *sentinels, *signal], timeout)
        if self.close_signal is not None:
            self.close_signal.check(waiting_for)
        readable = [r for r in ready if r not in sentinels]
        if readable:
            return readable
        if ready:
            raise self._death(sentinels[ready[0]])
        raise WorkerTimeoutError(
            f"{self.name}: no {waiting_for} within timeout={timeout:g}s; workers alive: "
            f"{[p.pid for p in self.processes if p.exitcode is None]}"
        )

    def _waiter(self, worker_id: int) -> Callable[[], None]:
        """The ``wait`` of worker ``worker_id``'s reader: its pipe, or any worker's death."""
        conn = self.conns[worker_id]

        def wait_for_pipe() -> None:
            self.wait([conn], waiting_for=f"data from worker {worker_id}")

        return wait_for_pipe

    def read(self, worker_id: int) -> Any:
        """The next message from worker ``worker_id``; a reported failure is raised here."""
        try:
            message = ForkingPickler.loads(self.readers[worker_id].recv())
        except EOFError:
            raise self._died(worker_id) from None
        if isinstance(message, WorkerFailure):
            raise self._failed(message)
        return message

    def read_into(self, worker_id: int, buffer: memoryview) -> None:
        """Read worker ``worker_id``'s next raw message into ``buffer``."""
        try:
            self.readers[worker_id].recv_into(buffer)
        except EOFError:
            raise self._died(worker_id) from None

    def send(self, worker_id: int, message: Any) -> None:
        """Send ``message`` to worker ``worker_id``, waiting (bounded) while its pipe is full."""
        try:
            send_message(self.conns[worker_id], bytes(ForkingPickler.dumps(message)), self._writable(worker_id))
        except WorkerError:
            raise  # a timeout (an OSError too, as TimeoutError) or a death, already said precisely
        except OSError:
            raise self._died(worker_id) from None

    def _writable(self, worker_id: int) -> Callable[[], None]:
        """The ``wait_writable`` of worker ``worker_id``'s pipe: room in it, or any worker's death."""
        conn = self.conns[worker_id]

        def wait_writable() -> None:
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLOUT)
            sentinels = {p.sentinel: i for i, p in enumerate(self.processes)}
            for sentinel in sentinels:
                poller.register(sentinel, select.POLLIN)
            if self.close_signal is not None:
                poller.register(self.close_signal.fileno(), select.POLLIN)
            events = dict(poller.poll(self.timeout * 1000))
            if self.close_signal is not None:
                self.close_signal.check(f"room in the pipe of worker {worker_id}")
            if events.get(conn.fileno(), 0) & select.POLLOUT:
                return
            for fd in events:
                if fd in sentinels:
                    raise self._death(sentinels[fd])
            if events:  # the pipe itself reported an error or hang-up
                raise self._died(worker_id)
            raise WorkerTimeoutError(
                f"{self.name}: worker {worker_id} has not read its pipe for timeout={self.timeout:g}s",
                worker_id=worker_id,
                pid=self.processes[worker_id].pid,
            )

        return wait_writable

    # -- errors -------------------------------------------------------------
    def _death(self, worker_id: int) -> WorkerError:
        """The error for a worker that exited: the failure it reported, if it sent one."""
        conn = self.conns[worker_id]
        try:
            while conn.poll(0):
                message = ForkingPickler.loads(self.readers[worker_id].recv())
                if isinstance(message, WorkerFailure):
                    return self._failed(message)
        except Exception:
            pass  # either way the worker died without a report; say so below
        return self._died(worker_id)

    def _died(self, worker_id: int) -> WorkerDiedError:
        process = self.processes[worker_id] if worker_id < len(self.processes) else None
        exitcode = None
        if process is not None:
            process.join(KILL_GRACE_S)
            exitcode = process.exitcode
        how = f"was killed by signal {-exitcode}" if exitcode and exitcode < 0 else f"exited with code {exitcode}"
        pid = process.pid if process is not None else None
        starting = worker_id >= len(self.pids)  # it never said Ready
        hint = unguarded_main_hint(self.start_method, exitcode) if starting else ""
        return WorkerDiedError(
            f"{self.name} worker {worker_id} (pid {pid}) {how} without reporting an error"
            f"{' while starting' if starting else ''}{hint}",
            worker_id=worker_id,
            pid=pid,
            exitcode=exitcode,
        )

    def _failed(self, failure: WorkerFailure) -> WorkerError:
        error = WorkerError(
            f"{self.name} worker {failure.worker_id} (pid {failure.pid}) raised {failure.exc_type}: {failure.message}",
            worker_id=failure.worker_id,
            pid=failure.pid,
        )
        error.__cause__ = RemoteTraceback(failure.traceback)
        return error

    # -- shutdown -----------------------------------------------------------
    def alive(self) -> list[mp.process.BaseProcess]:
        return [p for p in self.processes if p.exitcode is None]

    def close(self) -> None:
        """Stop -> bounded join (draining) -> terminate -> join -> kill -> join. Idempotent.

        With ``broken`` set, the first two steps are skipped.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self.broken:
                pass  # straight to the escalation below
            elif self._stop is not None:
                self._stop()
            else:
                stop = bytes(ForkingPickler.dumps(Stop()))
                for conn in self.conns:
                    try:
                        send_message(conn, stop, _pipe_full)
                    except OSError:
                        pass  # gone, or its pipe is full (not reading): the escalation below deals with it
        finally:
            self._join_draining(time.monotonic() + (0.0 if self.broken else STOP_GRACE_S))
            for process in self.alive():
                process.terminate()
            self._join(time.monotonic() + TERMINATE_GRACE_S)
            for process in self.alive():
                process.kill()
            self._join(time.monotonic() + KILL_GRACE_S)
            for conn in self.conns:
                conn.close()
            survivors = []
            for process in self.processes:
                if process.exitcode is None:
                    survivors.append(process)  # still dying (uninterruptible I/O): its sentinel stays
                else:
                    process.close()
            # What the stop and drain callables and the processes' arguments hold (a
            # strategy's queues, whose semaphores stay mapped while they live) goes now.
            self._stop, self._drain = None, []
            self.processes = survivors

    def _join_draining(self, deadline: float) -> None:
        readers = {r.fd: r for r in [*self.readers, *self._drain]}
        while (alive := {p.sentinel: p for p in self.alive()}) and (remaining := deadline - time.monotonic()) > 0:
            for ready in wait([*readers, *alive], remaining):
                if ready in alive:
                    # Its descriptors are closed: it is exiting. Reap it rather than
                    # spin until waitpid sees it gone.
                    alive[ready].join(remaining)
                elif not readers[ready].drain():
                    del readers[ready]

    def _join(self, deadline: float) -> None:
        for process in self.alive():
            process.join(max(0.0, deadline - time.monotonic()))
