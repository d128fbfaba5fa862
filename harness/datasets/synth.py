"""``synth``: a seeded generator of live/dead assay images (docs/design.md section 4).

What one image shows, per channel::

    channel 0   calcein-like cytoplasm stain: live cells, whole cell body, bright
    channel 1   nucleus stain of dead cells (propidium-iodide-like): dead cells only
    channel 2   nuclear counterstain (Hoechst-like): the nucleus of every cell
    channel 3+  empty channels: background, illumination and camera noise only
                (an unused filter position; they cost bytes and decode time, like the real thing)

One channel gives channel 0 only, written as an (H, W) image; two or more give (C, H, W).

The camera model, applied to every channel: signal = illumination x (background +
cells); shot noise (a near-Gaussian approximation of Poisson noise, variance = gain x
signal) and read noise, a camera offset of :data:`OFFSET_ADU`, then 12-bit quantisation:
values are rounded and clipped to 0..4095 in 16-bit words. Illumination is a smooth
vignetting field (a shifted Gaussian falloff times a low-frequency random ripple),
separable so that it costs two small vectors and one broadcast multiply.

Cells: the image is cut into square slots of :data:`SLOT_PX`; a slot holds at most one
cell (an ellipse with random axes, angle and position that stays inside its slot), so
cells never overlap and every label is a whole cell. Live cells are large ellipses
with an ellipsoid thickness profile; dead cells are small, round, condensed nuclei.
Labels are instance ids, numbered row-major over slots (a cell that the image edge
cuts off entirely leaves its id unused); ``classes.csv`` maps each id in the image to
class 1 (live) or 2 (dead).

Speed (a 2 x 2700 x 3600 image in ~0.25 s of CPU here): no Python loop over cells.
The image is viewed as ``(rows, SLOT_PX, cols, SLOT_PX)`` and every slot's ellipse is
computed by broadcasting per-slot parameters, a band of :data:`CHUNK_SLOT_ROWS` slot
rows at a time, so the float32 temporaries stay in cache.

Everything is float32 and drawn from ``numpy.random.default_rng([seed, index])``: an
image depends only on the parameters and its index, so image 3 is the same whether
the dataset has 4 images or 400.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IpcbenchError
from .store import COMPRESSIONS, LAYOUTS, check_int, write_tiff

SOURCE = "synth"
OFFSET_ADU = 100.0  # camera bias: a dark pixel reads about this, never 0
MAX_ADU = 4095  # 12-bit camera: the top of the range
READ_NOISE_ADU = 3.0
GAIN_ADU_PER_E = 0.8  # shot-noise variance in ADU^2 = gain x signal in ADU
BACKGROUND_ADU = (40.0, 25.0, 30.0)  # out-of-focus glow / autofluorescence per stain; extra channels: the last
SLOT_PX = 48  # one cell at most per slot of this many pixels square
OCCUPANCY = 0.6  # fraction of slots holding a cell
LIVE_FRACTION = 0.7  # fraction of cells that are alive
VIGNETTE = 0.25  # illumination falls to exp(-VIGNETTE) at the middle of an edge
RIPPLE = 0.06  # amplitude of the low-frequency illumination ripple
LIVE_CLASS, DEAD_CLASS = 1, 2
MAX_CELLS = 65535  # labels are uint16
CHUNK_SLOT_ROWS = 2  # rows of slots rendered at a time (a band of 96 x 3600 pixels: cache-sized temporaries)
RAW_NORMAL_VAR_INV = 12.0 / (4 * (65536**2 - 1))  # 1 / variance of _raw_normal's output


@dataclass(frozen=True, slots=True, kw_only=True)
class SynthParams:
    """Everything a synth dataset is a pure function of."""

    images: int = 8
    height: int = 2700
    width: int = 3600
    channels: int = 2
    compression: str = "none"
    layout: str = "strips"
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("images", self.images, 1, 100_000)
        check_int("height", self.height, 16, 65_535)
        check_int("width", self.width, 16, 65_535)
        check_int("channels", self.channels, 1, 64)
        check_int("seed", self.seed, 0, 2**63 - 1)
        if self.compression not in COMPRESSIONS:
            raise IpcbenchError(f"synth compression={self.compression!r} must be one of {COMPRESSIONS}")
        if self.layout not in LAYOUTS:
            raise IpcbenchError(f"synth layout={self.layout!r} must be one of {LAYOUTS}")
        if self.channels * self.height * self.width * 2 > 4 * 2**30:
            raise IpcbenchError(f"synth images of {self.channels} x {self.height} x {self.width} exceed 4 GiB each")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def slug(self) -> str:
        """A folder-name suffix naming the parameters that differ from the defaults ('' if none)."""
        d = SynthParams()
        parts = []
        if self.images != d.images:
            parts.append(f"n{self.images}")
        if (self.height, self.width) != (d.height, d.width):
            parts.append(f"{self.height}x{self.width}")
        if self.channels != d.channels:
            parts.append(f"c{self.channels}")
        if self.compression != d.compression:
            parts.append(self.compression)
        if self.layout != d.layout:
            parts.append(self.layout)
        if self.seed != d.seed:
            parts.append(f"seed{self.seed}")
        return "-".join(parts)


@dataclass(frozen=True, slots=True)
class SynthImage:
    """One rendered image: pixels, instance labels, and each label's class."""

    image: np.ndarray  # uint16 (H, W) or (C, H, W)
    labels: np.ndarray  # uint16 (H, W)
    classes: tuple[tuple[int, int], ...]  # (label, class) of every label present


def _illumination(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth, separable illumination field near 1 at its brightest: its row and column profiles."""

    def profile(n: int) -> np.ndarray:
        pos = np.linspace(-1.0, 1.0, n)
        centre = rng.uniform(-0.2, 0.2)
        vignette = np.exp(-VIGNETTE * (pos - centre) ** 2)
        # Two slow cosines with random phases: the ripple of an imperfect light path.
        ripple = sum(rng.uniform(0, RIPPLE / 2) * np.cos(k * np.pi * pos + rng.uniform(0, 2 * np.pi)) for k in (1, 2))
        return (vignette * (1.0 + ripple)).astype(np.float32)

    return profile(height), profile(width)


def _band_view(height: int, width: int) -> Callable[[np.ndarray], np.ndarray]:
    """A function viewing a (k, s, cols, s) band of slots as its top-left (height, width) pixels."""

    def view(band: np.ndarray) -> np.ndarray:
        k, s, cols, _ = band.shape
        return band.reshape(k * s, cols * s)[:height, :width]

    return view


def _raw_normal(rng: np.random.Generator, out: np.ndarray, spare: np.ndarray) -> np.ndarray:
    """Fill ``out`` with zero-mean, near-Gaussian noise of variance 1 / RAW_NORMAL_VAR_INV.

    The Irwin-Hall sum of four uniform 16-bit integers (cut from 64-bit raw PCG64
    words): close to a Gaussian within 2 sigma (4.3% of draws beyond it, 4.6% for a
    Gaussian), with thinner tails (none beyond 3.46 sigma) and an entropy, which is what
    compression sees, 0.004 bit below the Gaussian's. It costs about 60% of
    ``rng.standard_normal(dtype=np.float32)``, the largest single cost of a render.
    """
    quarters = rng.bit_generator.random_raw(out.size).view(np.uint16).reshape(4, *out.shape)
    np.add(quarters[0], quarters[1], out=out, dtype=np.float32)
    np.add(quarters[2], quarters[3], out=spare, dtype=np.float32)
    out += spare
    out -= np.float32(2 * 65535)  # the mean, 4 x 65535 / 2
    return out


def render(params: SynthParams, index: int) -> SynthImage:
    """Render image ``index`` of a synth dataset (a pure function of ``params.seed`` and ``index``)."""
    rng = np.random.default_rng([params.seed, index])
    h, w, s = params.height, params.width, SLOT_PX
    rows, cols = -(-h // s), -(-w // s)

    # Per-slot cell parameters, shaped (rows, 1, cols, 1) to broadcast over the
    # (rows, s, cols, s) view of the image.
    def draw(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, (rows, 1, cols, 1)).astype(np.float32)

    occupied = rng.random((rows, 1, cols, 1)) < OCCUPANCY
    live = occupied & (rng.random((rows, 1, cols, 1)) < LIVE_FRACTION)
    dead = occupied & ~live
    major = np.where(live, draw(0.26 * s, 0.46 * s), draw(0.12 * s, 0.2 * s))
    minor = major * np.where(live, draw(0.55, 1.0), draw(0.75, 1.0))
    angle = draw(0, np.pi)
    # Keep the whole ellipse inside its slot (its extent is at most `major`).
    cy = rng.uniform(0, 1, major.shape).astype(np.float32) * (s - 2 * major - 2) + major + 1
    cx = rng.uniform(0, 1, major.shape).astype(np.float32) * (s - 2 * major - 2) + major + 1
    nucleus = np.where(live, draw(0.35, 0.55), np.float32(1.0))  # nucleus radius as a fraction of the cell
    brightness = [
        np.where(live, draw(700, 2200), 0).astype(np.float32),  # calcein: live cells only
        np.where(dead, draw(1200, 3000), 0).astype(np.float32),  # dead-cell nucleus stain
        np.where(occupied, draw(500, 1500), 0).astype(np.float32),  # counterstain: every nucleus
    ]

    ids = np.zeros(occupied.shape, np.uint16)
    n_cells = int(occupied.sum())
    if n_cells > MAX_CELLS:
        raise IpcbenchError(
            f"synth image {params.height} x {params.width} would hold {n_cells} cells; "
            f"labels are uint16 (at most {MAX_CELLS})"
        )
    ids[occupied] = np.arange(1, n_cells + 1, dtype=np.uint16)
    # The ellipse's axes, folded into per-slot coefficients: d2 = u^2 + v^2 with
    # u = dy * uy + dx * ux (along the major axis) and v = dy * vy - dx * vx.
    sin, cos = np.sin(angle), np.cos(angle)
    coefficients = (sin / major, cos / major, cos / minor, sin / minor)
    profile_y, profile_x = _illumination(rng, rows * s, cols * s)
    pos = np.arange(s, dtype=np.float32)

    image = np.empty((params.channels, h, w), np.uint16)
    labels = np.empty((h, w), np.uint16)
    # Work a band of CHUNK_SLOT_ROWS slot rows at a time: its ~10 float32 temporaries
    # stay in cache, where whole-image temporaries would stream through memory ~30 times.
    band = (min(CHUNK_SLOT_ROWS, rows), s, cols, s)
    d2, u, body, signal, noise, normal, spare = (np.empty(band, np.float32) for _ in range(7))
    for r0 in range(0, rows, CHUNK_SLOT_ROWS):
        r1 = min(rows, r0 + CHUNK_SLOT_ROWS)
        k, y0, y1 = r1 - r0, r0 * s, min(h, r1 * s)
        uy, ux, vy, vx = (x[r0:r1] for x in coefficients)
        dy = pos[None, :, None, None] - cy[r0:r1]
        dx = pos[None, None, None, :] - cx[r0:r1]
        # Squared elliptical radius d2 (1 on the cell's edge) of every pixel in its slot.
        np.add(dy * uy, dx * ux, out=u[:k])
        np.subtract(dy * vy, dx * vx, out=d2[:k])
        np.multiply(d2[:k], d2[:k], out=d2[:k])
        np.multiply(u[:k], u[:k], out=u[:k])
        np.add(d2[:k], u[:k], out=d2[:k])
        rows_of = _band_view(y1 - y0, w)
        labels[y0:y1] = rows_of(np.where(d2[:k] < 1.0, ids[r0:r1], np.uint16(0)))
        # Ellipsoid thickness profile: the fluorescence of a uniformly stained body.
        np.subtract(np.float32(1.0), d2[:k], out=body[:k])
        np.maximum(body[:k], 0, out=body[:k])
        np.sqrt(body[:k], out=body[:k])
        illumination = (profile_y[y0 : y0 + k * s, None] * profile_x[None, :]).reshape(k, s, cols, s)
        for c in range(params.channels):
            out = signal[:k]
            if c <= 1:
                np.multiply(body[:k], brightness[c][r0:r1], out=out)
            elif c == 2:
                # The nucleus: a smaller concentric ellipsoid (the whole object of a dead cell).
                np.subtract(nucleus[r0:r1] ** 2, d2[:k], out=out)
                np.maximum(out, 0, out=out)
                np.sqrt(out, out=out)
                out *= brightness[2][r0:r1] / nucleus[r0:r1]
            else:
                out.fill(0)
            out += np.float32(BACKGROUND_ADU[min(c, len(BACKGROUND_ADU) - 1)])
            out *= illumination
            # Shot + read noise: a Gaussian of variance gain x signal + read^2 (the Poisson
            # distribution at these counts, at a fraction of rng.poisson's cost). The unit
            # normal comes in raw units (see _raw_normal): its scale is folded in here.
            sd = noise[:k]
            np.multiply(out, np.float32(GAIN_ADU_PER_E * RAW_NORMAL_VAR_INV), out=sd)
            sd += np.float32(READ_NOISE_ADU**2 * RAW_NORMAL_VAR_INV)
            np.sqrt(sd, out=sd)
            sd *= _raw_normal(rng, normal[:k], spare[:k])
            out += sd
            out += np.float32(OFFSET_ADU + 0.5)  # + 0.5: the cast below truncates; this rounds
            np.clip(out, 0, MAX_ADU, out=out)
            image[c, y0:y1] = rows_of(out)
    if params.channels == 1:
        image = image[0]

    # Every cell of an inner slot is wholly in the image; only the last slot row and
    # column can be cut by the image edge, so only their labels need counting.
    edge = np.zeros(n_cells + 1, bool)
    edge[labels[(rows - 1) * s :, :]] = True
    edge[labels[:, (cols - 1) * s :]] = True
    inner = ids[:-1, :, :-1, :]
    present = np.union1d(inner[inner > 0], np.flatnonzero(edge[1:]) + 1)
    class_of = np.zeros(n_cells + 1, np.uint8)
    class_of[ids[occupied]] = np.where(live[occupied], LIVE_CLASS, DEAD_CLASS)
    return SynthImage(image, labels, tuple((int(label), int(class_of[label])) for label in present))


def build(folder: Path, params: SynthParams, progress: Callable[[str], None]) -> dict[str, Any]:
    """Render and write every image of ``params`` into ``folder``; return metadata for dataset.json."""
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    width = max(3, len(str(params.images - 1)))
    rows = ["image,label,class"]
    counts = {"live": 0, "dead": 0}
    for index in range(params.images):
        stem = f"synth_{index:0{width}d}"
        started = time.perf_counter()
        result = render(params, index)
        write_tiff(folder / "images" / f"{stem}.tif", result.image, params.compression, params.layout)
        write_tiff(folder / "labels" / f"{stem}.tif", result.labels, params.compression, params.layout)
        rows.extend(f"{stem},{label},{cls}" for label, cls in result.classes)
        counts["live"] += sum(1 for _, cls in result.classes if cls == LIVE_CLASS)
        counts["dead"] += sum(1 for _, cls in result.classes if cls == DEAD_CLASS)
        progress(
            f"synth: wrote image {index + 1}/{params.images} images/{stem}.tif ({time.perf_counter() - started:.2f} s)"
        )
    (folder / "classes.csv").write_text("\n".join(rows) + "\n")
    return {
        "description": "synthetic live/dead assay: ch0 calcein (live), ch1 dead-cell nucleus stain, "
        "ch2 nuclear counterstain, ch3+ empty; classes 1 = live, 2 = dead",
        "camera": {
            "offset_adu": OFFSET_ADU,
            "max_adu": MAX_ADU,
            "read_noise_adu": READ_NOISE_ADU,
            "gain_adu_per_e": GAIN_ADU_PER_E,
        },
        "cells": counts,
    }
