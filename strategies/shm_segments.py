"""Named POSIX shared-memory segments with exactly one owner.

``multiprocessing.shared_memory.SharedMemory`` registers every segment it opens
with the resource tracker, attached ones included (before Python 3.13 there is no
``track=False``), which makes "who unlinks" ambiguous and produces the familiar
"leaked shared_memory objects" warnings. Here the roles are explicit:

- the **owner** (the main process) creates the segment, registers it with the
  resource tracker (so that if the main process is SIGKILLed the tracker unlinks
  it), and unlinks it exactly once (:meth:`Segment.unlink`), after its workers are
  gone, also when a worker was killed;
- **users** (workers) :meth:`Segment.attach` by name and never unlink or register.

Space is reserved up front with ``posix_fallocate``: on a full tmpfs that fails
with ENOSPC at creation, instead of a SIGBUS at the first write into a page the
kernel cannot back. Before that, :func:`check_free_space` compares the need with
``statvfs`` so the error says how much is needed, how much is free, and the fix.

Names are ``ipcbench_<owner pid>_<random>_<tag>`` (``SHM_PREFIX``), so stale
segments can be found and attributed: :func:`stale_segments`.
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets
from collections.abc import Iterable
from multiprocessing import resource_tracker
from typing import Any

from .constants import SHM_HEADROOM_BYTES, SHM_PREFIX
from .errors import SharedMemorySpaceError
from .internals import (
    cancel_semaphore_finalizers,
    queue_feeder,
    queue_reader,
    queue_writer,
    sem_unlink,
    semaphore_names,
    shm_open,
    shm_unlink,
    tracker_holds,
    tracker_pid,
)

SHM_DIR = "/dev/shm"


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def check_free_space(needed: int, *, directory: str = SHM_DIR) -> None:
    """Raise :class:`SharedMemorySpaceError` if ``directory`` cannot hold ``needed`` more bytes."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return  # no /dev/shm to inspect (not Linux); posix_fallocate still guards
    free = stats.f_bavail * stats.f_frsize
    if needed + SHM_HEADROOM_BYTES > free:
        raise SharedMemorySpaceError(
            errno.ENOSPC,
            f"shared memory needs {_mb(needed)} (+{_mb(SHM_HEADROOM_BYTES)} headroom) but {directory} has only "
            f"{_mb(free)} free. Lower prefetch, workers, batch_size or tile, or enlarge {directory} "
            f"(Docker: --shm-size=2g; Kubernetes: an emptyDir with medium: Memory)",
        )


def segment_name(tag: str) -> str:
    """A fresh name for a segment this process makes: ``ipcbench_<pid>_<random>_<tag>``."""
    return f"{SHM_PREFIX}{os.getpid()}_{secrets.token_hex(4)}_{tag}"


class Segment:
    """One mapped shared-memory segment; ``buf`` is its mmap."""

    def __init__(self, name: str, size: int, buf: mmap.mmap, *, owner: bool, tracker_pid: int | None = None) -> None:
        self.name = name
        self.size = size
        self.buf = buf
        self.owner = owner
        self._tracker_pid = tracker_pid  # the resource tracker that holds our registration
        self._unlinked = False
        self._tracked = owner  # registered with the resource tracker (Segment.create without track=False)

    @classmethod
    def create(cls, size: int, tag: str, *, track: bool = True) -> Segment:
        """A new segment of ``size`` bytes, named after this process; ``track=False``: no resource tracker.

        Untracked segments are for a worker that hands its segment's name to the main
        process, which unlinks it (the ``grain`` strategy): whoever unlinks it must
        be the only one to know it, or the tracker warns of a leak at exit.
        """
        name = segment_name(tag)
        fd = shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR)
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise SharedMemorySpaceError(
                        exc.errno, f"cannot reserve {_mb(size)} in {SHM_DIR} for {name}: {exc.strerror}"
                    ) from exc
                os.ftruncate(fd, size)  # file system without fallocate: size it at least
            buf = mmap.mmap(fd, size)
        except BaseException:
            shm_unlink(name)
            raise
        finally:
            os.close(fd)
        if not track:
            segment = cls(name, size, buf, owner=True)
            segment._tracked = False
            return segment
        resource_tracker.register("/" + name, "shared_memory")
        return cls(name, size, buf, owner=True, tracker_pid=tracker_pid())

    @classmethod
    def attach(cls, name: str, size: int) -> Segment:
        fd = shm_open(name, os.O_RDWR)
        try:
            buf = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(name, size, buf, owner=False)

    def release(self) -> None:
        """Unlink the name (owner only) and unmap this process's mapping, closing its descriptor.

        The mapping stays while arrays still view it (``mmap.close`` refuses; the
        zero-copy batches a caller kept): it goes with the last of them.
        """
        self.unlink()
        try:
            self.buf.close()
        except BufferError:
            pass  # views of it live on (a kept zero-copy batch): the mapping ends with them

    def unlink(self) -> None:
        """Remove the name (owner only, once). The memory goes when the last mapping does."""
        if not self.owner or self._unlinked:
            return
        self._unlinked = True
        try:
            shm_unlink(self.name)
        except FileNotFoundError:
            pass  # already removed (by the resource tracker after a crash, or by hand)
        if self._tracked and tracker_holds(self._tracker_pid):
            resource_tracker.unregister("/" + self.name, "shared_memory")


def release_semaphores(registered_with: int | None, *objects: object) -> None:
    """Unlink the named semaphores of ``objects`` now, not whenever the objects are collected.

    Under spawn and forkserver each multiprocessing Lock, Semaphore, Queue (three) or
    Event (five) holds named POSIX semaphores (``/dev/shm/sem.mp-*``), unlinked by a
    ``multiprocessing.util.Finalize`` when the object dies. Call this once every
    process that used them is gone: a closed generator that is still referenced (a
    traceback, a test's variable) would keep them in /dev/shm. The finalizers are
    cancelled. They would also unregister the names from the resource tracker; if
    that tracker was killed, doing so relaunches one that prints a ``KeyError`` per
    name it never held, so names are unregistered only while the tracker they were
    registered with (``registered_with``, :func:`tracker_pid` at creation) runs.
    """
    names: set[str] = set()
    for obj in objects:
        names |= semaphore_names(obj)
    cancel_semaphore_finalizers(names)
    tracked = tracker_holds(registered_with)
    for name in names:
        try:
            sem_unlink(name)
        except FileNotFoundError:
            pass  # already gone
        if tracked:
            resource_tracker.unregister(name, "semaphore")


def close_queue(channel: Any, grace_s: float) -> None:
    """Close a ``multiprocessing.Queue`` in this process now, descriptors included.

    ``Queue.close()`` only asks the queue's feeder thread (if a ``put`` started one)
    to flush and then close the pipe's two ends, some time later; a queue that never
    fed (one this process only reads) keeps both ends until it is collected. Here the
    feeder gets up to ``grace_s`` to finish, then both ends are closed, unless the
    feeder is still writing (a pipe nobody reads): then they are left to it.
    """
    channel.close()
    feeder = queue_feeder(channel)
    if feeder is not None:
        feeder.join(grace_s)
        if feeder.is_alive():
            return
    queue_reader(channel).close()
    queue_writer(channel).close()


def remove_segments(prefix: str, pids: Iterable[int], directory: str = SHM_DIR) -> list[str]:
    """Unlink the entries named ``<prefix><pid>_...`` of processes ``pids`` (gone); return their names.

    For segments that another library's workers name after themselves and unlink at
    once (torch's ``torch_<pid>_...``), which a worker that failed in between leaves.
    """
    wanted = tuple(f"{prefix}{pid}_" for pid in pids)
    if not wanted:
        return []
    try:
        names = [name for name in os.listdir(directory) if name.startswith(wanted)]
    except OSError:
        return []
    for name in names:
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass  # gone meanwhile
    return names


def stale_segments(directory: str = SHM_DIR) -> list[str]:
    """Names of ``SHM_PREFIX`` segments whose owner process no longer exists."""
    stale = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        if not name.startswith(SHM_PREFIX):
            continue
        pid_text = name[len(SHM_PREFIX) :].split("_", 1)[0]
        try:
            os.kill(int(pid_text), 0)
        except ValueError:
            continue
        except ProcessLookupError:
            stale.append(name)
        except PermissionError:
            pass  # alive, owned by someone else
    return sorted(stale)
