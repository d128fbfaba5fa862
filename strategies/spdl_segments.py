"""SPDL's ``SharedMemorySegmentPool`` on this project's segments (imports spdl: import it lazily).

The ``spdl_arena`` strategy uses SPDL's segment pool as SPDL ships it (its writer,
reader, unit accounting and zero-copy views), with its storage replaced, for three
faults of the stock pool (spdl 0.8.0, CPython 3.11), each measured:

- **KeyError noise at exit.** The stock pool creates ``psm_*`` segments with
  ``SharedMemory`` (registered with the resource tracker); the worker attaches with
  ``_attach``, which registers and unregisters the name, and the parent's
  ``unlink()`` does the same and then unregisters once more. The worker shares the
  parent's resource tracker (all start methods pass it on), whose registry is a set,
  so the last unregister removes a name that is no longer there: one ``KeyError``
  traceback per segment on stderr from the tracker. Here segments are
  :class:`strategies.shm_segments.Segment` s: the owner (the main process) creates
  and registers each once and unregisters it once when it unlinks; the worker
  attaches with ``shm_open`` + ``mmap``, never touching the tracker.
- **forkserver/spawn fail** ("SemLock created in a fork context"): the pool's
  backpressure ``Condition`` comes from the default context; here from the
  generator's ``start_method`` context.
- **Names**: ``ipcbench_<pid>_<random>_spdl...`` like every segment of this project,
  so ``ipcbench clean`` finds stale ones and the fault checks see them; reserved with
  ``posix_fallocate`` (a full /dev/shm is an error at creation, not a SIGBUS).

The fields set here are ``SharedMemorySegmentPool``'s own (``internals.SPDL_REQUIRED``
lists them; a test checks them against a live pool of the pinned SPDL).
"""

from __future__ import annotations

import os
import struct
from typing import Any

from spdl.pipeline import SharedMemorySegmentPool

from .shm_segments import Segment

# The control segment holds SPDL's counters (published, reclaimed, shutdown: 17 bytes); one page.
CTRL_SIZE = 4096
# Where in it the main process writes the index of the epoch to produce next (ours, past SPDL's).
EPOCH = struct.Struct("<q")
EPOCH_OFFSET = 64


class ProjectSegmentPool(SharedMemorySegmentPool):
    """``count`` segments of ``segment_size`` bytes, owned by the process that makes the pool."""

    def __init__(self, segment_size: int, count: int, *, context: Any, acquire_timeout: float) -> None:
        # Not super().__init__: it would create psm_* segments and a default-context Condition.
        if segment_size <= 0 or count <= 0 or acquire_timeout < 0:
            raise ValueError(f"bad segment pool: {segment_size=} {count=} {acquire_timeout=}")
        self._segment_size = segment_size
        self._count = count
        self._acquire_timeout = acquire_timeout
        self._owner = os.getpid()
        self._closed = False
        owned: list[Segment] = []
        try:
            owned.append(Segment.create(CTRL_SIZE, "spdl_ctrl"))  # zero-filled: all counters 0
            owned.extend(Segment.create(segment_size, f"spdl_{i}") for i in range(count))
        except BaseException:
            for segment in owned:
                segment.release()
            raise
        self.owned = owned
        self._ctrl_name = owned[0].name
        self._seg_names = [s.name for s in owned[1:]]
        self._ctrl = owned[0]
        self._segs = owned[1:]
        self._ctrl_buf = memoryview(owned[0].buf)
        self._seg_bufs = [memoryview(s.buf) for s in owned[1:]]
        self._space_cv = context.Condition()

    def __setstate__(self, state: Any) -> None:  # in the worker (spawn/forkserver): attach on first use
        super().__setstate__(state)
        self._owner = -1
        self._closed = False
        self.owned = []

    def _ctrl_view(self) -> memoryview:
        if self._ctrl_buf is None:
            if self._closed:
                # A zero-copy view released after close() reclaims its unit: counters nobody reads now.
                return memoryview(bytearray(CTRL_SIZE))
            self._ctrl = Segment.attach(self._ctrl_name, CTRL_SIZE)
            self._ctrl_buf = memoryview(self._ctrl.buf)
        return self._ctrl_buf

    def _segment(self, index: int) -> memoryview:
        if self._seg_bufs is None:
            if self._closed:
                raise ValueError("segment pool closed")
            self._segs = [Segment.attach(name, self._segment_size) for name in self._seg_names]
            self._seg_bufs = [memoryview(s.buf) for s in self._segs]
        return self._seg_bufs[index % self._count]

    def set_epoch(self, epoch: int) -> None:
        """Main process: the epoch the producer's next ``iter()`` makes."""
        EPOCH.pack_into(self._ctrl_view(), EPOCH_OFFSET, epoch)

    def epoch(self) -> int:
        """Producer: the epoch its ``iter()`` makes now (SPDL's START carries no argument)."""
        return EPOCH.unpack_from(self._ctrl_view(), EPOCH_OFFSET)[0]

    def close(self) -> None:
        """Wake a waiting producer, then unmap this process's mappings (those with live views go with the views)."""
        if self._closed:
            return
        self.shutdown_arena()
        self._closed = True
        views = [self._ctrl_buf, *(self._seg_bufs or [])]
        self._ctrl_buf = self._seg_bufs = None
        for view in views:
            if view is not None:
                try:
                    view.release()
                except BufferError:
                    pass  # a zero-copy view of it lives on; the mapping ends with it
        segments = [self._ctrl, *(self._segs or [])]
        self._ctrl = self._segs = None
        for segment in segments:
            if segment is not None:
                try:
                    segment.buf.close()
                except BufferError:
                    pass  # as above

    def unlink(self) -> None:
        """Remove the names (the owner, once; unregistered from the resource tracker it registered them with)."""
        if os.getpid() == self._owner:
            for segment in self.owned:
                segment.unlink()
