"""Reading and validating a dataset folder (docs/design.md section 4).

::

    DATASET/images/<stem>.tif    uint16, (H, W) or (C, H, W)
    DATASET/labels/<stem>.tif    integer label image (H, W), 0 = background
    DATASET/classes.csv          optional: image,label,class  (class 1..255)

:func:`open_dataset` reads only TIFF headers (a few ms per file), checks everything
that can be checked without decoding pixels, and returns a small frozen
:class:`Dataset` that is cheap to pickle to worker processes. Problems found later,
while decoding (a corrupt compressed strip, say), are raised by the per-image work
with the file name in the message.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from .errors import DatasetError

TIFF_SUFFIXES = (".tif", ".tiff")
# One decoded image may not exceed this many bytes: a header that declares a
# gigantic image (a corrupt or hostile file) must fail here, not as an OOM kill.
MAX_IMAGE_BYTES = 4 * 2**30
MAX_CLASS = 255


@dataclass(frozen=True, slots=True)
class ImageEntry:
    """One image of a dataset and everything needed to process it."""

    stem: str
    image_path: str
    label_path: str
    channels: int
    height: int
    width: int
    # (label, class) pairs from classes.csv; None = every labelled pixel is class 1.
    classes: tuple[tuple[int, int], ...] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


@dataclass(frozen=True, slots=True)
class Dataset:
    """A validated dataset folder: its images in a stable (sorted) order."""

    root: str
    entries: tuple[ImageEntry, ...]

    @property
    def channels(self) -> int:
        return self.entries[0].channels

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """(H, W) of every image, in dataset order: all the plan needs to know."""
        return tuple((e.height, e.width) for e in self.entries)


def _tiff_summary(path: Path, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the first series of a TIFF, after checking it is complete."""
    if not path.is_file():
        raise DatasetError(f"{what} {path} is missing")
    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, dtype = tuple(int(n) for n in series.shape), np.dtype(series.dtype)
            # A file cut inside a later page's IFD still opens: tifffile lists only the
            # pages it could read, and may take the shape from the first page's metadata
            # or fall back to a one-page series. So check that the values the file
            # declares (tifffile's own metadata, when it wrote the file) are all there.
            declared = series.size
            if series.kind == "shaped" and tif.shaped_metadata:
                declared = int(np.prod(tif.shaped_metadata[0].get("shape", shape), dtype=np.int64))
            offset = series.dataoffset  # not None: uncompressed, one contiguous byte range
            if offset is not None:
                if offset + declared * dtype.itemsize > size:
                    raise DatasetError(
                        f"{what} {path} is truncated: its pixel data ends at byte "
                        f"{offset + declared * dtype.itemsize} but the file has {size} bytes"
                    )
            else:
                held = sum(page.size for page in series.pages if page is not None)
                if held != declared:
                    raise DatasetError(f"{what} {path} is truncated: its pages hold {held} of its {declared} values")
            for page in series.pages:
                if page is None:
                    continue
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]
                if not ends or any(n == 0 for n in page.databytecounts) or max(ends) > size:
                    raise DatasetError(
                        f"{what} {path} is truncated: its pixel data ends at byte "
                        f"{max(ends, default=0)} but the file has {size} bytes"
                    )
    except DatasetError:
        raise
    except Exception as exc:  # tifffile raises many types for a bad file
        raise DatasetError(f"{what} {path} is not a readable TIFF: {type(exc).__name__}: {exc}") from exc
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > MAX_IMAGE_BYTES:
        raise DatasetError(f"{what} {path} declares shape {shape} {dtype}, larger than {MAX_IMAGE_BYTES} bytes")
    return shape, dtype


def _read_classes(path: Path, stems: set[str]) -> dict[str, tuple[tuple[int, int], ...]]:
    table: dict[str, dict[int, int]] = {}
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"image", "label", "class"} <= set(reader.fieldnames):
                raise DatasetError(f"{path} must have the header 'image,label,class', got {reader.fieldnames}")
            for row in reader:
                lineno = reader.line_num
                if any(row[key] is None for key in ("image", "label", "class")):  # a short row
                    raise DatasetError(f"{path} line {lineno}: expected image,label,class, got {row}")
                stem = Path(row["image"].strip()).stem
                try:
                    label, cls = int(row["label"]), int(row["class"])
                except (TypeError, ValueError) as exc:
                    raise DatasetError(f"{path} line {lineno}: label and class must be integers: {row}") from exc
                if stem not in stems:
                    raise DatasetError(f"{path} line {lineno}: image {row['image']!r} is not in images/")
                if label < 1:
                    raise DatasetError(f"{path} line {lineno}: label {label} must be >= 1 (0 is background)")
                if not 1 <= cls <= MAX_CLASS:
                    raise DatasetError(f"{path} line {lineno}: class {cls} must be in 1..{MAX_CLASS}")
                previous = table.setdefault(stem, {}).setdefault(label, cls)
                if previous != cls:
                    raise DatasetError(
                        f"{path} line {lineno}: label {label} of {stem} is given class {cls} "
                        f"here but class {previous} on an earlier line"
                    )
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not a text CSV file: {exc}") from exc
    return {stem: tuple(sorted(pairs.items())) for stem, pairs in table.items()}


def open_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Validate the dataset folder at ``path`` and index it.

    Raises :class:`DatasetError` naming the file for: a missing folder, no images,
    an image without a label file, an unreadable or truncated TIFF, an image that
    is not uint16, a label image that is not integer or whose shape differs from its
    image, images with different channel counts, a malformed ``classes.csv``, and a
    folder or file this process may not read (permissions).
    """
    root = Path(path)
    try:
        return _open_dataset(root)
    except OSError as exc:  # a folder or file we may not list or read
        where = exc.filename if exc.filename is not None else root
        raise DatasetError(f"dataset {root}: cannot read {where}: {exc.strerror or exc}") from exc


def _open_dataset(root: Path) -> Dataset:
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist (or is not a directory)")
    images_dir, labels_dir = root / "images", root / "labels"
    if not images_dir.is_dir():
        raise DatasetError(f"dataset {root} has no images/ folder")
    image_paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in TIFF_SUFFIXES)
    if not image_paths:
        raise DatasetError(f"dataset {root} has no .tif files in {images_dir}")

    stems = {p.stem for p in image_paths}
    classes_path = root / "classes.csv"
    classes = _read_classes(classes_path, stems) if classes_path.exists() else None

    entries = []
    for image_path in image_paths:
        # The image's own suffix first: images/a.TIF pairs with labels/a.TIF.
        candidates = [labels_dir / (image_path.stem + s) for s in (image_path.suffix, *TIFF_SUFFIXES)]
        label_path = next((p for p in candidates if p.exists()), candidates[0])
        shape, dtype = _tiff_summary(image_path, "image")
        if dtype != np.uint16:
            raise DatasetError(f"image {image_path} has dtype {dtype}; ipcbench expects 16-bit images (uint16)")
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            raise DatasetError(f"image {image_path} has shape {shape}; expected (H, W) or (C, H, W)")
        channels, height, width = shape
        if min(shape) < 1:
            raise DatasetError(f"image {image_path} is empty: shape {shape}")
        label_shape, label_dtype = _tiff_summary(label_path, "label image")
        if label_dtype.kind not in "iu":
            raise DatasetError(f"label image {label_path} has dtype {label_dtype}; labels must be integers")
        if label_shape != (height, width):
            raise DatasetError(
                f"label image {label_path} has shape {label_shape} but its image {image_path} is "
                f"{height} x {width}; they must match"
            )
        entry_classes = None if classes is None else classes.get(image_path.stem, ())
        entries.append(
            ImageEntry(image_path.stem, str(image_path), str(label_path), channels, height, width, entry_classes)
        )

    channel_counts = {e.channels for e in entries}
    if len(channel_counts) > 1:
        by_count = {c: next(e.image_path for e in entries if e.channels == c) for c in sorted(channel_counts)}
        raise DatasetError(f"dataset {root} mixes channel counts: {by_count}")
    return Dataset(str(root), tuple(entries))
