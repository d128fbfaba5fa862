"""The per-image work every strategy runs: read, assemble the mask, cut and augment tiles.

This is the only place pixels are computed. Strategies differ only in *where* it
runs (main process, worker process, thread) and *how* its output travels back; the
output itself is always the same for the same :class:`~strategies.plan.ImageJob`.

Mask assembly (docs/design.md section 4): a pixel's class is looked up from its label in
the image's class table; labelled pixels whose label is not in the table (or every
labelled pixel, when the dataset has no ``classes.csv``) are class 1; label 0 is
background (class 0).

:class:`ImageProcessor` keeps its decode buffers between images, so a worker that
processes image after image does not page-fault ~40 MB of fresh memory each time.

Conversion (``LoaderConfig.dtype``, ``scale``): the tiles are written in the batch's
dtype where they are cut, so a worker hands over what training wants and the main
process converts nothing (:class:`Conversion`).

Workloads (``LoaderConfig.workload``, :func:`make_processor`): ``full`` is the real
work above; ``transfer`` (:class:`TransferProcessor`) hands over tiles computed once,
so that a benchmark measures how the pixels travel and nothing else.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

from . import injection
from .dataset import Dataset, ImageEntry, read_shape
from .errors import DatasetError
from .plan import ImageJob, image_tiles, tiles_per_image

if TYPE_CHECKING:
    from .config import LoaderConfig

# Where an image's tiles go: runs of consecutive rows (arrays (n, ...)), in tile order,
# their lengths adding up to the image's tiles. One array (N, ...) is a single run.
TileRuns = Sequence[np.ndarray]


def rows_of(runs: TileRuns) -> Iterator[np.ndarray]:
    """Each tile's row of ``runs``, in tile order."""
    return itertools.chain.from_iterable(runs)


@dataclass(slots=True)
class ProcessedImage:
    """One image's tiles, ready for batching: ``data`` (N, C, T, T) in the config's dtype, ``masks`` (N, T, T) uint8."""

    position: int
    image_index: int
    data: np.ndarray
    masks: np.ndarray
    # What the producer needs to recycle the memory behind data/masks (a buffer
    # index, a shared-memory slot); None when the arrays are simply garbage.
    handle: Any = None

    @property
    def n_tiles(self) -> int:
        return len(self.data)


PIXELS = np.dtype(np.uint16)  # what the images hold, and the batches unless converted


def data_dtype(config: LoaderConfig) -> np.dtype:
    """The dtype of a batch's ``data`` (``LoaderConfig.dtype``)."""
    return np.dtype(config.dtype)


def tile_nbytes(channels: int, tile: int, dtype: np.dtype = PIXELS) -> tuple[int, int]:
    """Bytes of one tile's data (``dtype``) and of its mask (uint8)."""
    return channels * tile * tile * np.dtype(dtype).itemsize, tile * tile


def tile_buffers(n_tiles: int, channels: int, tile: int, dtype: np.dtype = PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """Empty output arrays for ``n_tiles`` tiles: data (N, C, T, T) in ``dtype``, masks (N, T, T) uint8."""
    return np.empty((n_tiles, channels, tile, tile), dtype), np.empty((n_tiles, tile, tile), np.uint8)


def image_buffers(n_tiles: int, dataset: Dataset, config: LoaderConfig) -> tuple[np.ndarray, np.ndarray]:
    """:func:`tile_buffers` for ``n_tiles`` tiles of ``dataset`` as ``config`` cuts and converts them."""
    return tile_buffers(n_tiles, dataset.channels, config.tile, data_dtype(config))


class Conversion:
    """Writes uint16 pixels into a tile row of the batch's dtype: NumPy's cast, then ``scale`` if given.

    Bit for bit ``pixels.astype(dtype)`` (``* np.float32(scale)`` for float32 with a
    scale): the cast happens in the assignment, the scale in place, so a tile is
    never held twice.
    """

    def __init__(self, dtype: np.dtype = PIXELS, scale: float | None = None) -> None:
        self.dtype = np.dtype(dtype)
        self.scale = None if scale is None else self.dtype.type(scale)

    @classmethod
    def of(cls, config: LoaderConfig) -> Conversion:
        return cls(data_dtype(config), config.scale)

    def write(self, row: np.ndarray, pixels: np.ndarray) -> None:
        row[...] = pixels
        if self.scale is not None:
            np.multiply(row, self.scale, out=row)


def augmented(array: np.ndarray, code: int) -> np.ndarray:
    """A view of ``array`` (..., T, T) rotated ``code % 4`` quarter turns, then flipped if ``code >= 4``."""
    view = np.rot90(array, k=code % 4, axes=(-2, -1))
    return view[..., ::-1] if code >= 4 else view


def class_lookup(classes: tuple[tuple[int, int], ...] | None, label_dtype: np.dtype) -> np.ndarray | None:
    """A label -> class table for unsigned 8/16-bit labels, or None where :func:`classes_of` is the way.

    None for other label types, and when every labelled pixel is class 1: then the
    mask is ``labels != 0``, about twice as fast as a table lookup.
    """
    dtype = np.dtype(label_dtype)
    if dtype.kind != "u" or dtype.itemsize > 2 or all(cls == 1 for _, cls in classes or ()):
        return None
    size = 1 << (8 * dtype.itemsize)
    lut = np.ones(size, dtype=np.uint8)
    lut[0] = 0
    for label, cls in classes or ():
        if label < size:
            lut[label] = cls
    return lut


def classes_of(labels: np.ndarray, classes: tuple[tuple[int, int], ...] | None, out: np.ndarray) -> None:
    """Write the class of every label in ``labels`` into ``out`` (uint8), for any integer dtype."""
    np.not_equal(labels, 0, out=out.view(bool))
    for label, cls in classes or ():
        if cls != 1:
            out[labels == label] = cls


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def decode_threads_for(config: LoaderConfig, decoders: int) -> int:
    """tifffile's decode threads per decoder: ``config.decode_threads``, or the cores shared among ``decoders``.

    ``decoders``: how many processes or threads of the loader decode images at once
    (1 for ``baseline``, ``workers`` for the others). Automatic: ``max(1, cores //
    decoders)``, so that ``decoders x threads`` never exceeds the cores (docs/design.md
    section 7 gives the measurement behind the default).
    """
    if config.decode_threads is not None:
        return config.decode_threads
    return max(1, usable_cores() // max(1, decoders))


class ImageProcessor:
    """Runs :meth:`process` for jobs of one dataset, reusing its decode buffers."""

    def __init__(
        self, dataset: Dataset, tile: int, conversion: Conversion | None = None, decode_threads: int = 1
    ) -> None:
        self.dataset = dataset
        self.tile = tile
        self.conversion = conversion or Conversion()
        self.decode_threads = decode_threads
        self._buffers: dict[tuple[str, tuple[int, ...], str], np.ndarray] = {}
        self._luts: dict[tuple[int, str], np.ndarray | None] = {}

    def _read(self, path: str, what: str, expected: tuple[int, ...]) -> np.ndarray:
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, dtype = tuple(series.shape), np.dtype(series.dtype)
                # The axes rule of open_dataset (docs/design.md section 4): (C, H, W) of an
                # image, (H, W) of a label image, length-1 axes dropped.
                if read_shape(path, what, str(series.axes), shape) != expected:
                    raise DatasetError(
                        f"{what} {path} has shape {shape} (axes {series.axes!r}), expected {expected} (file changed?)"
                    )
                # Keyed by ``what`` too: a 1-channel image and its uint16 labels have the
                # same shape and dtype, and must not share (overwrite) one buffer.
                key = (what, shape, dtype.str)
                buffer = self._buffers.get(key)
                if buffer is None:
                    buffer = self._buffers[key] = np.empty(shape, dtype)
                # Threads decode a compressed image's strips or tiles side by side (LoaderConfig.decode_threads).
                series.asarray(out=buffer, maxworkers=self.decode_threads)
        except DatasetError:
            raise
        except Exception as exc:
            raise DatasetError(f"cannot decode {what} {path}: {type(exc).__name__}: {exc}") from exc
        return buffer.reshape(expected)  # the same values: only axes of length 1 differ

    def process(
        self, job: ImageJob, data_out: np.ndarray | None = None, masks_out: np.ndarray | None = None
    ) -> ProcessedImage:
        """Do the work of ``job``; write into ``data_out``/``masks_out`` when given (e.g. shared memory)."""
        n = job.n_tiles
        if data_out is None or masks_out is None:
            channels = self.dataset.entries[job.image_index].channels
            data_out, masks_out = tile_buffers(n, channels, self.tile, self.conversion.dtype)
        self.write_tiles(job, [data_out[:n]], [masks_out[:n]])
        return ProcessedImage(job.position, job.image_index, data_out[:n], masks_out[:n])

    def write_tiles(self, job: ImageJob, data_runs: TileRuns, mask_runs: TileRuns) -> None:
        """Write ``job``'s tiles, in order, into the rows of ``data_runs`` and their masks into ``mask_runs``.

        Zero-copy ``shm`` passes runs scattered over its batch slots (one per batch
        the image touches); ``process`` passes one run.
        """
        entry: ImageEntry = self.dataset.entries[job.image_index]
        t = self.tile
        image = self._read(entry.image_path, "image", entry.shape)
        labels = self._read(entry.label_path, "label image", (entry.height, entry.width))
        lut_key = (job.image_index, labels.dtype.str)
        if lut_key not in self._luts:
            self._luts[lut_key] = class_lookup(entry.classes, labels.dtype)
        lut = self._luts[lut_key]
        write = self.conversion.write

        injection.hit("tiles.start", job=job)
        tiles = zip(job.tiles.tolist(), job.augmentations.tolist(), rows_of(data_runs), rows_of(mask_runs), strict=True)
        for i, ((y, x), code, data_row, mask_row) in enumerate(tiles):
            injection.hit("tiles.row", job=job, index=i)
            write(data_row, augmented(image[:, y : y + t, x : x + t], code))
            label_tile = augmented(labels[y : y + t, x : x + t], code)
            if lut is not None:
                np.take(lut, label_tile, out=mask_row, mode="clip")
            else:
                classes_of(label_tile, entry.classes, mask_row)
        injection.hit("tiles.done", job=job)


class TransferProcessor:
    """The ``transfer`` workload: the same tiles handed over for every job, computed once.

    It measures the IPC path alone: the first job runs the real per-image work on
    the dataset's largest image once (per worker); every job then gets the first
    ``n_tiles`` of those tiles, with no decode and no mask work. The batches are
    still the same for every strategy, so checksums still compare.

    Where the tiles are handed over is the strategy's design, as in the full
    workload: without output arrays, they are read-only views of the processor's own
    tiles (``queue`` pickles them from there). An output array a strategy keeps and
    passes again (a ``pipe`` worker's send buffer, an ``shm`` slot) is filled once:
    the image is already processed *there*, and handing it over is the strategy's
    own path (``send_bytes``, the copy out of the slot). Fresh arrays (``torch``'s
    shared tensors) and per-tile rows (zero-copy ``shm``'s batch slots, which change
    with every job) are written every time: that writing is their hand-over. An
    array counts as filled only while it is the very same object (a weak
    reference), so memory recycled into a new array is never taken for filled.
    Output arrays must be written by this processor only (true of every strategy).
    """

    def __init__(self, dataset: Dataset, tile: int, conversion: Conversion | None = None) -> None:
        self.dataset = dataset
        self.tile = tile
        self.conversion = conversion or Conversion()
        self._bank: tuple[np.ndarray, np.ndarray] | None = None
        self._filled: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()

    def _tiles(self) -> tuple[np.ndarray, np.ndarray]:
        if self._bank is None:
            t = self.tile
            biggest = max(range(len(self.dataset)), key=lambda i: tiles_per_image(*self.dataset.shapes[i], t))
            height, width = self.dataset.shapes[biggest]
            tiles = image_tiles(height, width, t, None)
            job = ImageJob(0, biggest, tiles, np.zeros(len(tiles), np.uint8))
            image = ImageProcessor(self.dataset, t, self.conversion).process(job)
            image.data.flags.writeable = image.masks.flags.writeable = False
            self._bank = image.data, image.masks
        return self._bank

    def process(
        self, job: ImageJob, data_out: np.ndarray | None = None, masks_out: np.ndarray | None = None
    ) -> ProcessedImage:
        n = job.n_tiles
        data, masks = self._tiles()
        if data_out is None or masks_out is None:
            return ProcessedImage(job.position, job.image_index, data[:n], masks[:n])
        for out, tiles in ((data_out, data), (masks_out, masks)):
            if self._filled.get(id(out)) is not out:
                size = min(len(out), len(tiles))
                out[:size] = tiles[:size]
                self._filled[id(out)] = out
        return ProcessedImage(job.position, job.image_index, data_out[:n], masks_out[:n])

    def write_tiles(self, job: ImageJob, data_runs: TileRuns, mask_runs: TileRuns) -> None:
        """Copy the first tiles into ``data_runs``/``mask_runs``, one copy per run.

        A run is up to a batch of consecutive rows (4 MiB at 32 tiles of 256 x 256):
        one large copy streams past the cache, where a copy per 128 KiB tile costs
        ~35% more (docs/performance-notes.md).
        """
        data, masks = self._tiles()
        start = 0
        for data_run, mask_run in zip(data_runs, mask_runs, strict=True):
            end = start + len(data_run)
            data_run[...] = data[start:end]
            mask_run[...] = masks[start:end]
            start = end
        if start != job.n_tiles:
            raise ValueError(f"runs of {start} rows for an image of {job.n_tiles} tiles")


Processor = ImageProcessor | TransferProcessor


def make_processor(dataset: Dataset, config: LoaderConfig, decoders: int | None = None) -> Processor:
    """The per-image work of ``config.workload`` (``full`` or ``transfer``).

    ``decoders``: how many of the loader's processes or threads run this work at once
    (default ``config.workers``; the single-process baseline passes 1), which sets the
    automatic decode threads (:func:`decode_threads_for`).
    """
    conversion = Conversion.of(config)
    if config.workload == "transfer":
        return TransferProcessor(dataset, config.tile, conversion)
    threads = decode_threads_for(config, config.workers if decoders is None else decoders)
    return ImageProcessor(dataset, config.tile, conversion, threads)
