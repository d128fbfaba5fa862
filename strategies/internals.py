"""Every use of a private CPython, torch or grain attribute, in one place.

The strategies need a few things the public APIs do not give: the pipe under a
``multiprocessing.Queue`` (to wait on it beside the workers' sentinels), the names of
its POSIX semaphores (to unlink them at ``close()``), the record of the fork server a
forked child inherited, the resource tracker's pid, torch's DataLoader iterator's
workers and queues, grain's per-worker iterators. Each is reached through a function
here, and only here.

:data:`REQUIRED` lists every private attribute these functions touch, with where it
lives; :func:`missing` looks each up on live objects, and ``tests/test_internals.py``
asserts that none is missing. A Python or torch upgrade that renames one fails that
test (grain's, :data:`GRAIN_REQUIRED`, in ``tests/test_grain_strategy.py``: grain is an
optional peer), here, with the attribute's name, instead of as a strange error somewhere in a
strategy.
"""

from __future__ import annotations

import _multiprocessing
import _posixshmem
import os
import threading
from collections.abc import Iterable
from multiprocessing import forkserver, resource_tracker
from multiprocessing import process as mp_process
from multiprocessing import util as mp_util
from multiprocessing.synchronize import SemLock
from typing import Any

# -- POSIX shared memory and semaphores (CPython's C helpers) --------------------------


def shm_open(name: str, flags: int, mode: int = 0o600) -> int:
    """``shm_open(3)``: a descriptor of the POSIX shared-memory object ``/name``."""
    return _posixshmem.shm_open("/" + name, flags, mode=mode)


def shm_unlink(name: str) -> None:
    """``shm_unlink(3)`` of ``/name`` (FileNotFoundError if it is gone)."""
    _posixshmem.shm_unlink("/" + name)


def sem_unlink(name: str) -> None:
    """``sem_unlink(3)`` of a named semaphore (FileNotFoundError if it is gone)."""
    _multiprocessing.sem_unlink(name)


# Where multiprocessing's objects keep their SemLocks: Queue (_rlock, _wlock, _sem),
# Event (_cond, _flag), Condition (_lock, _sleeping_count, _woken_count, _wait_semaphore).
SEMLOCK_HOLDERS = (
    "_rlock",
    "_wlock",
    "_sem",
    "_cond",
    "_flag",
    "_lock",
    "_sleeping_count",
    "_woken_count",
    "_wait_semaphore",
)


def semaphore_names(obj: object) -> set[str]:
    """Names of the POSIX semaphores behind a multiprocessing Lock, Semaphore, Queue, Event or Condition."""
    name = getattr(getattr(obj, "_semlock", None), "name", None)
    names = {name} if name is not None else set()  # None under fork: unlinked at creation
    for attribute in SEMLOCK_HOLDERS:
        inner = getattr(obj, attribute, None)
        if inner is not None and inner is not obj:
            names |= semaphore_names(inner)
    return names


def cancel_semaphore_finalizers(names: Iterable[str]) -> None:
    """Cancel the ``multiprocessing.util.Finalize`` that would unlink each named semaphore when it dies.

    Only the semaphores' own finalizers: other objects' (a Queue's feeder, whose
    arguments are a deque and a Condition) are not ours to touch, nor hashable.
    """
    wanted = set(names)
    for finalizer in list(mp_util._finalizer_registry.values()):
        if getattr(finalizer, "_callback", None) is SemLock._cleanup and finalizer._args[0] in wanted:
            finalizer.cancel()


# -- multiprocessing.Queue ---------------------------------------------------------------


def queue_reader(channel: Any) -> Any:
    """The read end (a ``Connection``) of a Queue's pipe: waitable beside sentinels."""
    return channel._reader


def queue_writer(channel: Any) -> Any:
    """The write end (a ``Connection``) of a Queue's pipe."""
    return channel._writer


def queue_feeder(channel: Any) -> threading.Thread | None:
    """The Queue's feeder thread in this process (None if no ``put`` started one)."""
    return channel._thread


def queue_took_one(channel: Any) -> None:
    """What ``Queue.get`` does after reading a message itself: free one slot of a bounded queue."""
    channel._sem.release()


def queue_locks(channel: Any) -> tuple[Any, Any]:
    """The Queue's (slots semaphore, write lock): what ``put``'s feeder holds while it writes."""
    return channel._sem, channel._wlock


def set_queue_pickler(pickler: type) -> None:
    """Make every ``multiprocessing.Queue`` of this process pickle through ``pickler`` (its feeder's ``dumps``)."""
    from multiprocessing import queues

    queues._ForkingPickler = pickler  # type: ignore[attr-defined]


# -- the fork server and the resource tracker --------------------------------------------


def fork_server_pid() -> int | None:
    """The pid of this program's fork server (None if none was started, or it was forgotten)."""
    return forkserver._forkserver._forkserver_pid


def forget_inherited_fork_server() -> None:
    """In a child forked from a program that ran a fork server, let the child start its own.

    The child inherits the parent's record of its fork server (pid, address, the
    "alive" pipe). CPython's ``forkserver.ensure_running`` then checks on that server
    with ``os.waitpid``, which fails in the child (``ChildProcessError: No child
    processes``: it is not the child's child), so no process could start there. A
    server that is not this process's child (or has exited) is forgotten here, as
    ``ensure_running`` forgets a dead one, and the next start launches a server of
    the child's own.
    """
    server = forkserver._forkserver
    with server._lock:
        pid = server._forkserver_pid
        if pid is None:
            return
        try:
            exited, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            exited = pid  # the parent's server: not ours to use or to wait for
        if not exited:
            return  # our own, alive
        if server._forkserver_alive_fd is not None:
            try:
                os.close(server._forkserver_alive_fd)
            except OSError:
                pass  # already closed
        server._forkserver_address = None
        server._forkserver_alive_fd = None
        server._forkserver_pid = None


def importing_main_for_a_child() -> bool:
    """Whether this process is a spawn/forkserver child still importing the main script.

    ``multiprocessing.spawn._main`` sets ``_inheriting`` on the child's process object
    while it unpickles its preparation data and imports the main script, and deletes
    it before the process's target runs (it is what CPython's own
    ``_check_not_importing_main`` reads). The attribute only exists in that window, so
    :data:`REQUIRED` cannot list it; tests/test_main_guard.py runs an unguarded script
    to prove it is still read.
    """
    return bool(getattr(mp_process.current_process(), "_inheriting", False))


def tracker_pid() -> int | None:
    """The pid of this process's resource tracker (None if it inherited one or has none yet)."""
    return resource_tracker._resource_tracker._pid


def tracker_holds(registered_with: int | None) -> bool:
    """Whether the resource tracker a name was registered with still runs.

    If it was killed, ``unregister`` would launch a new one (warning "resource_tracker:
    process died unexpectedly, relaunching") only for it to print a ``KeyError``
    traceback for a name it never held (CPython 3.11-3.13 ``resource_tracker.main``
    removes unknown names unguarded). Nobody is left to tell, so we tell nobody.
    ``_pid`` is None in a process that inherited its tracker; then liveness alone decides.
    """
    tracker = resource_tracker._resource_tracker
    return tracker._fd is not None and tracker._pid == registered_with and tracker._check_alive()


# -- torch's DataLoader --------------------------------------------------------------------


def new_shared_storage(torch: Any, nbytes: int) -> Any:
    """An uninitialised ``UntypedStorage`` of ``nbytes`` in shared memory from the start."""
    return torch.UntypedStorage._new_shared(nbytes)


def loader_workers(iterator: Any) -> list[Any]:
    """The worker processes of a multi-process DataLoader iterator."""
    return list(iterator._workers)


def loader_queues(iterator: Any) -> tuple[list[Any], Any, Any]:
    """(index queues, worker result queue, workers-done event) of a DataLoader iterator."""
    return list(iterator._index_queues), iterator._worker_result_queue, iterator._workers_done_event


def loader_data_queue(iterator: Any) -> Any:
    """The queue the iterator reads items from (the result queue, or the pin-memory thread's)."""
    return iterator._data_queue


def wrap_loader_data_queue(iterator: Any, wrap: Any) -> None:
    """Replace the iterator's data queue by ``wrap(data queue)``: torch then reads through the wrapper."""
    iterator._data_queue = wrap(iterator._data_queue)


def untrack_loader_workers(iterator: Any) -> None:
    """Take the iterator's workers out of torch's SIGCHLD registry (its handler raises anywhere in the main thread)."""
    from torch.utils.data._utils import signal_handling

    if iterator._worker_pids_set:
        signal_handling._remove_worker_pids(id(iterator))
        iterator._worker_pids_set = False


def shut_down_loader(iterator: Any, *, politely: bool) -> None:
    """Torch's own shutdown of the iterator's workers; without ``politely``, only mark it done.

    Torch's ``_shutdown_workers`` sets the done event and joins every worker for up to
    5 s; after a worker died (which may hold the event's lock) that would hang or
    wait: then the iterator is only marked shut down, and the caller escalates.
    """
    if politely:
        iterator._shutdown_workers()
    else:
        iterator._shutdown = True


# -- grain's mp_prefetch iterator (grain 0.2.18) ------------------------------------------
#
# ``mp_prefetch`` makes an InterleaveDatasetIterator over one ThreadPrefetchDatasetIterator
# per worker (a thread in this process that fills a ``queue.Queue``), each reading a
# ProcessPrefetchDatasetIterator (the worker process and its ``multiprocessing`` queues).


def grain_slots(iterator: Any) -> list[Any]:
    """The per-worker iterators (ThreadPrefetchDatasetIterator) of an interleave iterator, in worker order."""
    return list(iterator._iterators_in_use)


def grain_worker_iterator(slot: Any) -> Any:
    """The ProcessPrefetchDatasetIterator a slot's thread reads."""
    return slot._maybe_nonnative_parent


def grain_process(worker_iterator: Any) -> Any:
    """The worker process of a ProcessPrefetchDatasetIterator (None before ``start_prefetch``)."""
    return worker_iterator._prefetch_process


def set_grain_process_context(worker_iterator: Any, context: Any) -> None:
    """What ``start_prefetch`` calls ``.Process(...)`` on (grain's own: ``mp.get_context("spawn")``)."""
    worker_iterator._process_ctx = context


def wrap_grain_buffer(worker_iterator: Any, wrap: Any) -> None:
    """Replace the worker's output queue, as this process reads it, by ``wrap(queue)``."""
    worker_iterator._buffer = wrap(worker_iterator._buffer)


def grain_worker_channels(worker_iterator: Any) -> tuple[list[Any], list[Any]]:
    """([output queue, set-state queue, stats queue], [stop event, set-state counter, two profiling events])."""
    w = worker_iterator
    buffer = getattr(w._buffer, "inner", w._buffer)
    return (
        [buffer, w._set_state_queue, w._stats_in_queue],
        [w._prefetch_should_stop, w._set_state_request_count, w._start_profiling_event, w._stop_profiling_event],
    )


def grain_stop_events(slot: Any) -> tuple[threading.Event, Any]:
    """(the slot thread's stop Event, the worker process's stop Event (multiprocessing))."""
    return slot._prefetch_should_stop, slot._maybe_nonnative_parent._prefetch_should_stop


def grain_thread(slot: Any) -> threading.Thread | None:
    """The slot's prefetch thread (None when stopped)."""
    return slot._prefetch_thread


def grain_thread_buffer(slot: Any) -> Any:
    """The ``queue.Queue`` the slot's thread fills and ``next()`` takes from."""
    return slot._buffer


def wait_not_empty(buffer: Any, timeout: float) -> bool:
    """Wait up to ``timeout`` s until the ``queue.Queue`` holds an item; whether it does (no item is taken)."""
    with buffer.not_empty:
        if not buffer._qsize():
            buffer.not_empty.wait(timeout)
        return bool(buffer._qsize())


def grain_make_iter_pool(iterator: Any) -> Any:
    """The interleave iterator's own prefetch iterator (threads that make the per-worker iterators)."""
    return iterator._prefetch_ds_iter


def disarm_grain_iterator(iterator: Any) -> None:
    """Make a closed grain iterator's ``close()`` (called by its ``__del__``) do nothing.

    Grain's ``DatasetIterator.__del__`` calls ``close()``, which reads module globals:
    at interpreter exit they may be gone, and it prints "Exception ignored in ... __del__".
    """
    iterator._closed = True
    iterator.close = _nothing


def _nothing() -> None:
    return None


def set_grain_shared_memory(module: Any) -> None:
    """Make grain's ``SharedMemoryArray`` (``copy_to_shm``, ``from_metadata``, ``unlink_shm``) use
    ``module.SharedMemory`` in this process instead of ``multiprocessing.shared_memory``'s."""
    from grain._src.python.ipc import shared_memory_array

    shared_memory_array.shared_memory = module


def flush_grain_shm_deletes(timeout: float) -> None:
    """Wait up to ``timeout`` s for the unlinks grain's ``SharedMemoryArray.__del__`` queued (one thread, FIFO)."""
    from grain._src.python.ipc import shared_memory_array

    pool = shared_memory_array.SharedMemoryArray._del_thread_pool
    if pool is None:
        return
    try:
        pool.apply_async(_nothing).wait(timeout)
    except ValueError:
        pass  # the pool was terminated (interpreter exit): nothing runs on it any more


GRAIN_REQUIRED: tuple[tuple[str, str], ...] = (
    ("grain interleave iterator", "_iterators_in_use"),
    ("grain interleave iterator", "_prefetch_ds_iter"),
    ("grain interleave iterator", "_closed"),
    ("grain slot iterator", "_maybe_nonnative_parent"),
    ("grain slot iterator", "_prefetch_should_stop"),
    ("grain slot iterator", "_prefetch_thread"),
    ("grain slot iterator", "_buffer"),
    ("grain worker iterator", "_prefetch_process"),
    ("grain worker iterator", "_process_ctx"),
    ("grain worker iterator", "_buffer"),
    ("grain worker iterator", "_set_state_queue"),
    ("grain worker iterator", "_stats_in_queue"),
    ("grain worker iterator", "_prefetch_should_stop"),
    ("grain worker iterator", "_set_state_request_count"),
    ("grain worker iterator", "_start_profiling_event"),
    ("grain worker iterator", "_stop_profiling_event"),
    ("queue.Queue()", "_qsize"),
    ("grain shared_memory_array module", "shared_memory"),
    ("grain SharedMemoryArray", "_del_thread_pool"),
)
# -- concurrent.futures.ProcessPoolExecutor (the spdl strategy's worker pool) --------------


def executor_processes(executor: Any) -> list[Any]:
    """The worker processes of a ``ProcessPoolExecutor``, in the order they were started."""
    return list(executor._processes.values())


def start_executor_processes(executor: Any) -> None:
    """Start every worker of a spawn/forkserver ``ProcessPoolExecutor`` now (it starts them one per submit).

    Under ``fork`` the executor starts them all at its first submit (before its
    manager thread, which a fork must not copy); call this only for the other methods.
    """
    for _ in range(len(executor._processes), executor._max_workers):
        executor._spawn_process()


def executor_channels(executor: Any) -> tuple[Any, Any, Any]:
    """(call queue, result queue, manager thread) of a ``ProcessPoolExecutor`` (the thread None before any submit)."""
    return executor._call_queue, executor._result_queue, executor._executor_manager_thread


# -- spdl (0.8.0): the spdl_arena strategy's subprocess -------------------------------------


def subprocess_interface(iterable: Any) -> Any:
    """The ``_ipc`` record (process, queues, ``closed`` event) behind ``iterate_in_subprocess``'s iterable."""
    return iterable._interface


# -- what a Python or torch upgrade could take away ----------------------------------------

# (where, attribute): every private attribute the functions above use.
REQUIRED: tuple[tuple[str, str], ...] = (
    ("_posixshmem", "shm_open"),
    ("_posixshmem", "shm_unlink"),
    ("_multiprocessing", "sem_unlink"),
    ("multiprocessing.util", "_finalizer_registry"),
    ("multiprocessing.synchronize.SemLock", "_cleanup"),
    ("multiprocessing.synchronize.SemLock()", "_semlock"),
    ("multiprocessing.Queue()", "_reader"),
    ("multiprocessing.Queue()", "_writer"),
    ("multiprocessing.Queue()", "_thread"),
    ("multiprocessing.Queue()", "_sem"),
    ("multiprocessing.Queue()", "_wlock"),
    ("multiprocessing.Queue()", "_rlock"),
    ("multiprocessing.Event()", "_cond"),
    ("multiprocessing.Event()", "_flag"),
    ("multiprocessing.queues", "_ForkingPickler"),
    ("multiprocessing.forkserver._forkserver", "_lock"),
    ("multiprocessing.forkserver._forkserver", "_forkserver_pid"),
    ("multiprocessing.forkserver._forkserver", "_forkserver_address"),
    ("multiprocessing.forkserver._forkserver", "_forkserver_alive_fd"),
    ("multiprocessing.resource_tracker._resource_tracker", "_pid"),
    ("multiprocessing.resource_tracker._resource_tracker", "_fd"),
    ("multiprocessing.resource_tracker._resource_tracker", "_check_alive"),
    ("concurrent.futures.ProcessPoolExecutor()", "_processes"),
    ("concurrent.futures.ProcessPoolExecutor()", "_max_workers"),
    ("concurrent.futures.ProcessPoolExecutor()", "_spawn_process"),
    ("concurrent.futures.ProcessPoolExecutor()", "_call_queue"),
    ("concurrent.futures.ProcessPoolExecutor()", "_result_queue"),
    ("concurrent.futures.ProcessPoolExecutor()", "_executor_manager_thread"),
    ("torch.UntypedStorage", "_new_shared"),
    ("torch.utils.data._utils.signal_handling", "_remove_worker_pids"),
    ("DataLoader iterator", "_workers"),
    ("DataLoader iterator", "_index_queues"),
    ("DataLoader iterator", "_worker_result_queue"),
    ("DataLoader iterator", "_workers_done_event"),
    ("DataLoader iterator", "_data_queue"),
    ("DataLoader iterator", "_worker_pids_set"),
    ("DataLoader iterator", "_shutdown"),
    ("DataLoader iterator", "_shutdown_workers"),
)

# The same for the peer library spdl (pinned, 0.8.0), checked by tests/test_spdl_strategies.py
# on live objects: what ``subprocess_interface`` reaches, and the fields of
# ``SharedMemorySegmentPool`` that ``strategies.spdl_segments.ProjectSegmentPool`` sets
# and overrides (it keeps SPDL's writer, reader and accounting, and replaces the storage).
SPDL_REQUIRED: tuple[tuple[str, str], ...] = (
    ("iterate_in_subprocess()", "_interface"),
    ("iterate_in_subprocess()._interface", "closed"),
    ("iterate_in_subprocess()._interface", "process"),
    ("SharedMemorySegmentPool()", "_ctrl_name"),
    ("SharedMemorySegmentPool()", "_seg_names"),
    ("SharedMemorySegmentPool()", "_segment_size"),
    ("SharedMemorySegmentPool()", "_count"),
    ("SharedMemorySegmentPool()", "_acquire_timeout"),
    ("SharedMemorySegmentPool()", "_space_cv"),
    ("SharedMemorySegmentPool()", "_ctrl"),
    ("SharedMemorySegmentPool()", "_segs"),
    ("SharedMemorySegmentPool()", "_ctrl_buf"),
    ("SharedMemorySegmentPool()", "_seg_bufs"),
    ("SharedMemorySegmentPool()", "_ctrl_view"),
    ("SharedMemorySegmentPool()", "_segment"),
)


def missing(objects: dict[str, Any], required: tuple[tuple[str, str], ...] = REQUIRED) -> list[str]:
    """``where.attribute`` for every :data:`REQUIRED` attribute that ``objects[where]`` lacks.

    ``objects`` maps each ``where`` of :data:`REQUIRED` to a live object (a module, a
    class, an instance); a ``where`` it does not map is reported as missing too, so a
    check cannot pass by leaving things out.
    """
    absent = []
    for where, attribute in required:
        if where not in objects or not hasattr(objects[where], attribute):
            absent.append(f"{where}.{attribute}")
    return absent
