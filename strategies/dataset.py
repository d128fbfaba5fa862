"""Reading and validating a dataset folder (docs/design.md section 4).

::

    DATASET/images/<name>.tif    uint16, (H, W) or (C, H, W)
    DATASET/labels/<name>.tif    integer label image (H, W), 0 = background
    DATASET/classes.csv          optional: image,label,class  (class 1..255)

Axes: the first series of a TIFF is read with the axes tifffile gives it
(``series.axes``: from OME-XML, ImageJ or tifffile's own metadata, else guessed).
Axes of length 1 are dropped first (OME and ImageJ files come so from tifffile; its
own shaped files keep them, e.g. ZCYX of shape (1, 2, H, W)). What remains must be
``YX`` (one channel) or a 3-D series whose first axis is a channel axis:

* ``C``: channels;
* ``S``: samples stored planar (``SYX``: one plane per sample), each a channel;
* ``I`` or ``Q``: tifffile's names for a plain stack of pages and for an axis it
  cannot name (a multi-page TIFF without metadata): each page is a channel, as it
  always was.

Anything else is a :class:`DatasetError` naming the file, its axes and shape, and what
to do: a Z (depth) or T (time) axis longer than 1 (an OME-TIFF z-stack, an ImageJ
hyperstack: project or split the planes into separate images, write channels as C),
interleaved samples (``YXS``, RGB-like: write them planar, C first), more than 3
dimensions, or another first axis. A label image, its length-1 axes dropped, must be
``YX`` of its image's height and width. :func:`read_shape` is the rule, shared with the
per-image work that decodes the pixels.

An image's *name* is its file name without the final ``.tif`` or ``.tiff`` (any case);
every other dot stays: ``well_A01_field01.ome.tif`` is named ``well_A01_field01.ome``,
``plate1.A01.tiff`` is ``plate1.A01``. Names are unique in images/. The label image of
``images/<name>.tif`` is ``labels/<name>.tif`` or ``labels/<name>.tiff`` (either
extension, any case, whatever the image's is). The ``image`` column of classes.csv
takes either the file name (``well_A01_field01.ome.tif``) or the name
(``well_A01_field01.ome``).

:func:`open_dataset` reads only TIFF headers (a few ms per file), checks everything
that can be checked without decoding pixels, and returns a small frozen
:class:`Dataset` that is cheap to pickle to worker processes. Problems found later,
while decoding (a corrupt compressed strip, say), are raised by the per-image work
with the file name in the message.
"""

from __future__ import annotations

import csv
import difflib
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


def tiff_stem(filename: str) -> str:
    """``filename`` without its final ``.tif`` / ``.tiff`` (any case); any other dot stays.

    ``"a.ome.tif"`` -> ``"a.ome"``, ``"plate1.A01.TIFF"`` -> ``"plate1.A01"``,
    ``"plate1.A01"`` -> ``"plate1.A01"`` (not a TIFF extension: kept).
    """
    suffix = Path(filename).suffix
    return filename[: -len(suffix)] if suffix.lower() in TIFF_SUFFIXES else filename


def shape_text(shape: tuple[int, ...]) -> str:
    """``"1 x 2700 x 3600"``."""
    return " x ".join(str(n) for n in shape)


@dataclass(frozen=True, slots=True)
class ImageEntry:
    """One image of a dataset and everything needed to process it."""

    stem: str  # the image's name: its file name without the final .tif/.tiff
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

    @property
    def sizes(self) -> tuple[tuple[tuple[int, int, int], int], ...]:
        """Each distinct (C, H, W) with its number of images, smallest (fewest pixels) first."""
        counts: dict[tuple[int, int, int], int] = {}
        for entry in self.entries:
            counts[entry.shape] = counts.get(entry.shape, 0) + 1
        return tuple(sorted(counts.items(), key=lambda item: (item[0][1] * item[0][2], item[0])))

    @property
    def largest_tile(self) -> int:
        """The largest tile (in pixels) that fits in every image: the smallest height or width."""
        return min(min(e.height, e.width) for e in self.entries)

    def describe(self) -> str:
        """``"8 images, 1 x 2700 x 3600"``, or ``"12 images, 3 sizes from 1 x 512 x 512 to 1 x 2700 x 3600"``."""
        count = f"{len(self)} image{'' if len(self) == 1 else 's'}"
        sizes = [shape for shape, _ in self.sizes]
        if len(sizes) == 1:
            return f"{count}, {shape_text(sizes[0])}"
        return f"{count}, {len(sizes)} sizes from {shape_text(sizes[0])} to {shape_text(sizes[-1])}"


def check_tile(dataset: Dataset, tile: int) -> None:
    """Raise ValueError naming every image of ``dataset`` that a ``tile`` x ``tile`` tile does not fit.

    One error for all of them, each with its size, and the largest tile that fits every
    image: checked before anything starts, so a run does not fail image by image.
    """
    small = [e for e in dataset.entries if tile > min(e.height, e.width)]
    if not small:
        return
    listed = ", ".join(f"{Path(e.image_path).name} ({e.height} x {e.width})" for e in small)
    raise ValueError(
        f"tile={tile} is larger than {len(small)} of the {len(dataset)} images in {Path(dataset.root) / 'images'} "
        f"(height x width; a tile needs at least {tile} x {tile}): {listed}; "
        f"the largest tile that fits every image is {dataset.largest_tile}"
    )


# Axes (tifffile's codes) that may come first in a 3-D image and are read as its channels:
# C channel, S planar samples, I pages of a plain stack, Q an axis tifffile cannot name.
# An S last is samples interleaved pixel by pixel (YXS, RGB-like): not accepted.
CHANNEL_AXES = "CSIQ"
# Axes that are not channels, what they are and what to do about one.
NOT_CHANNELS = {
    "Z": (
        "a Z (depth) axis",
        "project the Z planes (a maximum projection, say) or split them into separate images, and write "
        "channels as C (tifffile: metadata={'axes': 'CYX'})",
    ),
    "T": (
        "a T (time) axis",
        "split the time points into separate images (one image per time point), and write channels as C",
    ),
}


def _squeezed(axes: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """``axes`` and ``shape`` without their axes of length 1 (the plane's Y and X, the last of each, are kept).

    tifffile names the axes of a 1 x 1 x 1 array ``XYX``: only the last Y and X are the plane's.
    """
    if len(axes) != len(shape):  # not expected from tifffile; read it as unnamed axes
        axes = "Q" * (len(shape) - 2) + "YX" if len(shape) >= 2 else "Q" * len(shape)
    plane = {axes.rfind("Y"), axes.rfind("X")}
    kept = [(a, n) for i, (a, n) in enumerate(zip(axes, shape, strict=True)) if n != 1 or i in plane]
    return "".join(a for a, _ in kept), tuple(n for _, n in kept)


def read_shape(path: str | os.PathLike[str], what: str, axes: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape ipcbench reads a TIFF series of ``axes`` and ``shape`` as (see the module docstring).

    ``what="image"``: (C, H, W), or a DatasetError naming the file, its axes and shape,
    and what to do. ``what="label image"``: the shape without its length-1 axes, which
    the caller compares with (H, W) of the image.
    """
    short_axes, short = _squeezed(axes, shape)
    if what != "image":
        return short
    if short_axes == "YX":
        return (1, *short)
    if len(short) == 3 and short_axes[1:] == "YX" and short_axes[0] in CHANNEL_AXES:
        return short
    problems, fixes = [], []
    for axis, (name, fix) in NOT_CHANNELS.items():
        if axis in short_axes:
            problems.append(f"{name} of length {short[short_axes.index(axis)]}")
            fixes.append(fix)
    if short_axes.endswith("S"):
        problems.append(f"{short[-1]} samples interleaved pixel by pixel (an S axis after Y and X, as in RGB)")
        fixes.append("store the samples planar, one plane per channel (CYX; tifffile: planarconfig='separate')")
    if len(short) > 3:
        problems.append(f"{len(short)} dimensions of length > 1")
    elif not problems:
        problems.append(
            f"axes {short_axes!r}, where a 3-D image needs YX last and a channel axis first ({', '.join(CHANNEL_AXES)})"
        )
    if not fixes:
        fixes.append("write it as YX, or CYX with the channels first (tifffile: metadata={'axes': 'CYX'})")
    raise DatasetError(
        f"image {path} has axes {axes!r} and shape {shape}: {', '.join(problems)}, but ipcbench reads an "
        f"image as 2-D planes, one per channel (YX, or CYX with the channels first); {'; '.join(fixes)}"
    )


def _tiff_summary(path: Path, what: str) -> tuple[tuple[int, ...], np.dtype, str]:
    """Shape, dtype and axes of the first series of a TIFF, after checking it is complete."""
    if not path.is_file():
        raise DatasetError(f"{what} {path} is missing")
    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, dtype = tuple(int(n) for n in series.shape), np.dtype(series.dtype)
            axes = str(series.axes)
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
    return shape, dtype, axes


# How many of images/' names an error about an unknown name lists.
LISTED_NAMES = 5


def _image_name(raw: str, images: dict[str, Path], where: str) -> str:
    """The image that classes.csv's ``raw`` names: a file name in images/, or one without its .tif/.tiff."""
    given = raw.strip()
    # A leading folder (images/a.tif) is ignored, as it always was; "a.tif.tif" is named "a.tif" or "a.tif.tif".
    base = Path(given).name if given else given
    matches = list(dict.fromkeys(name for name in (base, tiff_stem(base)) if name in images))
    if len(matches) > 1:
        files = " and ".join(images[name].name for name in matches)
        raise DatasetError(f"{where}: image {raw!r} could be {files}; give the whole file name")
    if matches:
        return matches[0]
    names = sorted(images)
    spellings = {spelling: name for name in names for spelling in (images[name].name, name)}
    close = difflib.get_close_matches(base, list(spellings), n=1)
    # The example is the likely one, else a name with a dot of its own (the case this spelling rule is for).
    example = spellings[close[0]] if close else next((n for n in names if "." in n), names[0])
    known = ", ".join(images[n].name for n in names[:LISTED_NAMES])
    if len(names) > LISTED_NAMES:
        known += f", ... ({len(names)} in all)"
    hint = f"; did you mean {close[0]!r}?" if close else "."
    raise DatasetError(
        f"{where}: image {raw!r} is not in images/{hint} An image is named by its file name "
        f"({images[example].name!r}) or by that name without its .tif/.tiff extension ({example!r}); "
        f"images/ has {known}"
    )


def _read_classes(path: Path, images: dict[str, Path]) -> dict[str, tuple[tuple[int, int], ...]]:
    table: dict[str, dict[int, int]] = {}
    named: dict[str, str] = {}  # each spelling resolved once: a table has a row per object, thousands an image
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"image", "label", "class"} <= set(reader.fieldnames):
                raise DatasetError(f"{path} must have the header 'image,label,class', got {reader.fieldnames}")
            for row in reader:
                lineno = reader.line_num
                if any(row[key] is None for key in ("image", "label", "class")):  # a short row
                    raise DatasetError(f"{path} line {lineno}: expected image,label,class, got {row}")
                try:
                    label, cls = int(row["label"]), int(row["class"])
                except (TypeError, ValueError) as exc:
                    raise DatasetError(f"{path} line {lineno}: label and class must be integers: {row}") from exc
                stem = named.get(row["image"]) or named.setdefault(
                    row["image"], _image_name(row["image"], images, f"{path} line {lineno}")
                )
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
    two images of the same name (``a.tif`` and ``a.tiff``), an image without a label
    file or with two, an unreadable or truncated TIFF, an image that is not uint16 or
    whose axes are not channels of 2-D planes (a Z stack, a time series, interleaved
    RGB: see the module docstring), a label image that is not integer or whose shape
    differs from its image, images
    with different channel counts, a malformed ``classes.csv`` (or one naming an
    image that is not there), and a folder or file this process may not read
    (permissions).
    """
    root = Path(path)
    try:
        return _open_dataset(root)
    except OSError as exc:  # a folder or file we may not list or read
        where = exc.filename if exc.filename is not None else root
        raise DatasetError(f"dataset {root}: cannot read {where}: {exc.strerror or exc}") from exc


def _tiff_files(folder: Path) -> dict[str, list[Path]]:
    """The TIFF files of ``folder`` by name (file name without .tif/.tiff), each name's files sorted."""
    by_name: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in TIFF_SUFFIXES:
            by_name.setdefault(tiff_stem(path.name), []).append(path)
    return by_name


def _label_of(image_path: Path, labels_dir: Path, labels: dict[str, list[Path]]) -> Path:
    """labels/<name>.tif or .tiff (any case) for images/<name>.<ext>; the same file name first."""
    name = tiff_stem(image_path.name)
    found = labels.get(name, [])
    same = labels_dir / image_path.name
    if same in found:
        return same
    if len(found) > 1:
        raise DatasetError(
            f"image {image_path} has {len(found)} label images: {', '.join(str(p) for p in found)}; keep one"
        )
    if not found:
        where = "" if labels_dir.is_dir() else f"; there is no folder {labels_dir}"
        raise DatasetError(
            f"label image {same} is missing: the labels of {image_path} go in labels/{name}.tif (or .tiff){where}"
        )
    return found[0]


def _open_dataset(root: Path) -> Dataset:
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist (or is not a directory)")
    images_dir, labels_dir = root / "images", root / "labels"
    if not images_dir.is_dir():
        raise DatasetError(f"dataset {root} has no images/ folder")
    by_name = _tiff_files(images_dir)
    if not by_name:
        raise DatasetError(f"dataset {root} has no .tif or .tiff files in {images_dir}")
    twice = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    if twice:
        listed = "; ".join(" and ".join(p.name for p in paths) for paths in twice.values())
        raise DatasetError(
            f"dataset {root}: images/ has several files of one name ({listed}); an image is named by its "
            f"file name without .tif/.tiff, so keep one of each"
        )
    # Dataset order is the files' sorted paths, as it always was (the plan draws from it).
    images = {name: paths[0] for name, paths in sorted(by_name.items(), key=lambda item: item[1][0])}
    labels = _tiff_files(labels_dir) if labels_dir.is_dir() else {}

    classes_path = root / "classes.csv"
    classes = _read_classes(classes_path, images) if classes_path.exists() else None

    entries = []
    for name, image_path in images.items():
        label_path = _label_of(image_path, labels_dir, labels)
        shape, dtype, axes = _tiff_summary(image_path, "image")
        if dtype != np.uint16:
            raise DatasetError(f"image {image_path} has dtype {dtype}; ipcbench expects 16-bit images (uint16)")
        if min(shape) < 1:
            raise DatasetError(f"image {image_path} is empty: shape {shape}")
        channels, height, width = read_shape(image_path, "image", axes, shape)
        label_shape, label_dtype, label_axes = _tiff_summary(label_path, "label image")
        if label_dtype.kind not in "iu":
            raise DatasetError(f"label image {label_path} has dtype {label_dtype}; labels must be integers")
        if read_shape(label_path, "label image", label_axes, label_shape) != (height, width):
            raise DatasetError(
                f"label image {label_path} has shape {label_shape} (axes {label_axes!r}) but its image "
                f"{image_path} is {height} x {width}; they must match (a label image is 2-D, YX)"
            )
        entry_classes = None if classes is None else classes.get(name, ())
        entries.append(ImageEntry(name, str(image_path), str(label_path), channels, height, width, entry_classes))

    channel_counts = {e.channels for e in entries}
    if len(channel_counts) > 1:
        by_count = {c: next(e.image_path for e in entries if e.channels == c) for c in sorted(channel_counts)}
        raise DatasetError(f"dataset {root} mixes channel counts: {by_count}")
    return Dataset(str(root), tuple(entries))
