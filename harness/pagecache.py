"""The page cache a measured epoch starts with, and the disk behind it.

``ipcbench run --cache cold`` evicts every file of the dataset from the page cache
just before each epoch (:func:`evict`: ``posix_fadvise(POSIX_FADV_DONTNEED)``, which
drops a file's clean cached pages and needs no root), so every image is read from
the disk again, as in a dataset larger than memory. :func:`resident_fraction` says
how much of the files is cached (``mincore`` on a read-only mapping, the way
``fincore`` does): the child records it just before each cold epoch, so a report
can show that the eviction worked. :func:`read_bandwidth` measures the disk once per
run (env.json ``disk``): the files are evicted, then read in chunks by one thread per
core side by side, three times over (the median pass is the I/O bound of a cold epoch).

Pages another process has mapped stay; a dataset's TIFFs are read with ``read()``,
so nothing stays here (dirty pages of a freshly written file are flushed first). A file system
without page cache control (some network or FUSE mounts) ignores the advice, which
:func:`resident_fraction` then shows.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAGE = mmap.PAGESIZE
READ_CHUNK = 8 * 2**20
# read_bandwidth stops after this many bytes: enough for a steady figure, bounded on a big dataset.
BANDWIDTH_MAX_BYTES = 512 * 2**20
BANDWIDTH_PASSES = 3


def dataset_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every image and label file of a dataset folder (what an epoch reads), sorted."""
    base = Path(root)
    return sorted(
        p
        for folder in ("images", "labels")
        if (base / folder).is_dir()
        for p in (base / folder).iterdir()
        if p.is_file()
    )


def evict(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Drop the cached pages of every file in ``paths`` (``POSIX_FADV_DONTNEED``).

    Each file is flushed first (``fdatasync``; nothing to do for a file written long
    ago): the kernel drops only clean pages, and a freshly built dataset's are dirty.
    """
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


_libc = None


def _mincore() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte))
        _libc.mincore.restype = ctypes.c_int
    return _libc.mincore


def resident_pages(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(pages of ``path`` in the page cache, pages in all), by ``mincore`` on a read-only mapping."""
    import numpy as np

    size = os.path.getsize(path)
    if size == 0:
        return 0, 0
    pages = -(-size // PAGE)
    vector = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), size, prot=mmap.PROT_READ) as mapped:
        view = np.frombuffer(mapped, dtype=np.uint8)  # its address; mapping pages does not read them
        try:
            status = _mincore()(view.ctypes.data, size, vector)
        finally:
            del view  # the buffer export, before the mapping closes
    if status != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mincore failed on {path}: {os.strerror(err)}")
    return sum(byte & 1 for byte in bytes(vector)), pages


def resident_fraction(paths: Sequence[str | os.PathLike[str]]) -> float:
    """The share of the files' pages in the page cache (0: all evicted, 1: all cached)."""
    cached = total = 0
    for path in paths:
        c, t = resident_pages(path)
        cached += c
        total += t
    return cached / total if total else 0.0


@dataclass(frozen=True, slots=True)
class DiskBandwidth:
    """Reads of evicted files by ``readers`` threads at once, several passes: the disk as cold epochs meet it."""

    passes_mb_per_s: tuple[float, ...]  # one per pass, in order
    bytes: int  # read per pass
    files: int
    readers: int  # threads reading files side by side, as a loader's workers do
    resident_before: float  # the files' largest cached share just after an eviction (should be ~0)

    @property
    def mb_per_s(self) -> float:
        """The median pass: a first pass slower than the rest (a host's cache warming) does not set it."""
        ordered = sorted(self.passes_mb_per_s)
        return ordered[len(ordered) // 2]

    def as_dict(self) -> dict[str, Any]:
        return {
            "read_mb_per_s": self.mb_per_s,
            "passes_mb_per_s": list(self.passes_mb_per_s),
            "bytes": self.bytes,
            "files": self.files,
            "readers": self.readers,
            "resident_after_evict": self.resident_before,
            "method": "posix_fadvise(DONTNEED) on the dataset's files, then read() in 8 MiB chunks by `readers` "
            "threads side by side, a file each at a time; the median of the passes",
        }


def _read_all(paths: Sequence[str | os.PathLike[str]]) -> int:
    buffer = bytearray(READ_CHUNK)
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buffer):
                total += n
    return total


def read_bandwidth(
    paths: Sequence[str | os.PathLike[str]],
    max_bytes: int = BANDWIDTH_MAX_BYTES,
    passes: int = BANDWIDTH_PASSES,
    readers: int | None = None,
) -> DiskBandwidth:
    """Evict ``paths``, then time reading them (up to ``max_bytes``), ``passes`` times: MB/s (10**6 bytes) each.

    ``readers`` threads (default: the cores this process may use) read different files
    side by side, as a loader's workers do: a device often delivers more to several
    streams than to one. Several passes because a virtual machine's disk is often backed
    by the host's page cache: the first read of a file comes from the device, the next
    ones from the host's memory, as every epoch after the first will. The median pass is
    the figure.
    """
    from concurrent.futures import ThreadPoolExecutor

    from strategies.work import usable_cores

    chosen: list[str | os.PathLike[str]] = []
    planned = 0
    for path in paths:
        if planned >= max_bytes:
            break
        chosen.append(path)
        planned += os.path.getsize(path)
    readers = max(1, min(readers or usable_cores(), len(chosen) or 1))
    shares = [chosen[i::readers] for i in range(readers)]
    rates, resident, total = [], 0.0, 0
    with ThreadPoolExecutor(readers) as pool:
        for _ in range(passes):
            evict(chosen)
            resident = max(resident, resident_fraction(chosen))
            t0 = time.perf_counter()
            total = sum(pool.map(_read_all, shares))  # readinto releases the GIL: the threads read at once
            rates.append(total / 1e6 / max(time.perf_counter() - t0, 1e-9))
    return DiskBandwidth(tuple(rates), total, len(chosen), readers, resident)
