"""The memory behind a batch's arrays, taken again once nothing references the batch any more.

Every copying strategy hands the loop new arrays, and the loop may keep a batch as long
as it likes. Allocated fresh for every batch, a 6 MB batch is at the mercy of the C
allocator: glibc maps a block that large with ``mmap`` until a larger one has been
freed (its threshold then rises), and gives the top of its heap back to the system
when enough of it is free. Either way the next batch lands on fresh pages, which the
kernel faults in and zeroes one by one: 43 page faults a batch in the main process of
``shm`` on the transfer workload, and none after any 27 MB block had been freed once.
Which of the two a process gets depends on what it did before, so the same loader
measured 12-16% apart in two processes that differed only in their start-up.

So a batch's memory is recycled, and only once nothing references the batch: the
array the loop gets is a plain ``ndarray`` viewing a block of this module, and a
``weakref.finalize`` on that array gives the block back when the array dies. NumPy
points a view at the array it was taken from unless that array's own base is of
another type (``PyArray_SetBaseObject`` stops collapsing the chain of bases there):
the blocks are a private ``ndarray`` subclass, so every view the loop takes of a
batch (a slice, a reshape, ``torch.from_numpy``) keeps the batch's array alive, and
with it the block. A batch that is kept is never written again; a dropped one is.

At most ``keep`` free blocks wait for the next batch; more are freed. ``close()``
drops them and frees every block given back afterwards: batches still held stay valid.
"""

from __future__ import annotations

import weakref
from collections import deque

import numpy as np


class _Block(np.ndarray):
    """The memory of one batch array (a subclass, so that views of a batch stop at the batch)."""


def on_batch_memory(array: np.ndarray) -> bool:
    """Whether ``array`` is a batch on memory of this module (the loop's own), not a view of a producer's."""
    return isinstance(array.base, _Block)


class BatchMemory:
    """Arrays of ``shape[0]`` rows or fewer, each on a block recycled when the array is gone."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type, keep: int = 2) -> None:
        self.shape = shape
        self.dtype = np.dtype(dtype)
        # Given back by finalizers, which run in whichever thread drops a batch: a deque's
        # append and pop are atomic, and a lock here could be re-entered by the collector.
        self._free: deque[_Block] = deque(maxlen=keep)
        self._closed = False

    @property
    def waiting(self) -> int:
        """Free blocks waiting for the next batch."""
        return len(self._free)

    def take(self, rows: int) -> np.ndarray:
        """An uninitialised ``(rows, *shape[1:])`` array: a free block's, else a new one."""
        try:
            block = self._free.pop()
        except IndexError:
            block = _Block(self.shape, self.dtype)
        array = block[:rows].view(np.ndarray)
        weakref.finalize(array, self._give_back, block).atexit = False
        return array

    def _give_back(self, block: _Block) -> None:
        if not self._closed:
            self._free.append(block)  # beyond ``keep``, the oldest free block is freed

    def close(self) -> None:
        """Free the waiting blocks, and from now on every block given back."""
        self._closed = True
        self._free.clear()
