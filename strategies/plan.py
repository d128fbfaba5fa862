"""The epoch plan: which images, which tiles, which augmentations, in which order.

The plan is a pure function of ``(image shapes, seed, epoch, rank, world_size, tile,
batch_size, shuffle, augment, drop_last)``. Every strategy executes the same plan,
which is what makes their batch sequences bit-identical (docs/design.md section 3).

An epoch is a sequence of :class:`ImageJob` s, one per image. Each job lists the
top-left corners of its tiles (a regular grid, shifted by a seeded per-epoch offset
inside the margin the grid leaves, visited in a seeded order) and one augmentation
code per tile. The epoch's tiles, concatenated job after job, are cut into batches of
``batch_size``, so a batch may span two or more images, as in the blog.

Sharding: every rank draws the same image permutation, drops the remainder so the
image count divides by ``world_size``, and takes every ``world_size``-th image from
``rank``: the shards are disjoint. Ranks then keep the same number of tiles (the
smallest shard's), so every rank yields the same number of batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Augmentation codes are the 8 elements of the square's symmetry group:
# code % 4 = number of 90-degree rotations, code >= 4 = then flip left-right.
N_AUGMENTATIONS = 8


@dataclass(frozen=True, slots=True)
class TileDraw:
    """Everything that decides an image's tiles and augmentation codes in one epoch.

    :func:`draw_tiles` turns it into the arrays, always the same ones: a job crosses
    to a worker as this (a few dozen bytes), not as its arrays (9 bytes a tile: 340 KB
    for 16-px tiles of a 2700 x 3600 image, more than a socket's default buffer).
    """

    height: int
    width: int
    tile: int
    seed: int
    epoch: int
    image_index: int
    shuffle: bool
    augment: bool
    n_tiles: int  # the first n of the image's grid (an epoch may keep fewer than all)


def draw_tiles(draw: TileDraw) -> tuple[np.ndarray, np.ndarray]:
    """The tiles (N, 2) int32 and augmentation codes (N,) uint8 that ``draw`` describes."""
    # One generator per (seed, epoch, image): an image's tiles do not depend on
    # which rank draws it or on what came before it.
    rng = np.random.default_rng([draw.seed, draw.epoch, draw.image_index, 1])
    tiles = image_tiles(draw.height, draw.width, draw.tile, rng if draw.shuffle else None)[: draw.n_tiles]
    if draw.augment:
        augmentations = rng.integers(0, N_AUGMENTATIONS, size=len(tiles), dtype=np.uint8)
    else:
        augmentations = np.zeros(len(tiles), dtype=np.uint8)
    return tiles, augmentations


@dataclass(frozen=True, slots=True)
class ImageJob:
    """The work for one image: cut ``tiles`` (N x 2 top-left y, x) and augment each.

    A job of a plan pickles as its :class:`TileDraw` and is drawn again where it is
    unpickled (a worker), so a job message is small whatever the tile count.
    """

    position: int  # place of this image in the epoch's sequence
    image_index: int  # index into Dataset.entries
    tiles: np.ndarray  # (N, 2) int32
    augmentations: np.ndarray  # (N,) uint8 codes, see N_AUGMENTATIONS
    first_tile: int = 0  # index of this image's first tile in the epoch's tile sequence
    draw: TileDraw | None = field(default=None, compare=False)  # how tiles and codes were drawn

    @property
    def end_tile(self) -> int:
        """Index just past this image's last tile in the epoch's tile sequence."""
        return self.first_tile + len(self.tiles)

    @property
    def n_tiles(self) -> int:
        return len(self.tiles)

    def __reduce__(self) -> tuple[Any, ...]:
        if self.draw is None:
            return (ImageJob, (self.position, self.image_index, self.tiles, self.augmentations, self.first_tile))
        return (_drawn_job, (self.position, self.image_index, self.first_tile, self.draw))


def _drawn_job(position: int, image_index: int, first_tile: int, draw: TileDraw) -> ImageJob:
    """Unpickle a job from its draw."""
    return ImageJob(position, image_index, *draw_tiles(draw), first_tile, draw)


@dataclass(frozen=True, slots=True)
class EpochPlan:
    epoch: int
    batch_size: int
    tile: int
    jobs: tuple[ImageJob, ...]
    n_tiles: int
    n_batches: int

    def batch_size_at(self, index: int) -> int:
        """Number of tiles in batch ``index`` (only the last one can be short)."""
        return min(self.batch_size, self.n_tiles - index * self.batch_size)


def grid_shape(height: int, width: int, tile: int) -> tuple[int, int]:
    """Rows and columns of whole tiles that fit in an image."""
    return height // tile, width // tile


def tiles_per_image(height: int, width: int, tile: int) -> int:
    rows, cols = grid_shape(height, width, tile)
    return rows * cols


def max_tiles_per_image(shapes: Sequence[tuple[int, int]], tile: int) -> int:
    """The most tiles any one image yields: the size of a buffer that fits every image."""
    return max(tiles_per_image(h, w, tile) for h, w in shapes)


def image_tiles(height: int, width: int, tile: int, rng: np.random.Generator | None) -> np.ndarray:
    """Top-left corners of an image's tile grid, (N, 2) int32.

    With ``rng`` the grid is shifted by a random offset inside the margin it leaves
    and visited in a random order; without, it starts at (0, 0) in row-major order.
    """
    rows, cols = grid_shape(height, width, tile)
    oy = ox = 0
    if rng is not None:
        oy = int(rng.integers(0, height - rows * tile + 1))
        ox = int(rng.integers(0, width - cols * tile + 1))
    ys, xs = np.meshgrid(oy + tile * np.arange(rows), ox + tile * np.arange(cols), indexing="ij")
    corners = np.stack([ys.ravel(), xs.ravel()], axis=1).astype(np.int32)
    if rng is not None:
        corners = corners[rng.permutation(len(corners))]
    return corners


def shard_order(n_images: int, *, seed: int, epoch: int, shuffle: bool, rank: int, world_size: int) -> np.ndarray:
    """This rank's image indices for an epoch; ranks get disjoint shards of equal size."""
    order = np.random.default_rng([seed, epoch]).permutation(n_images) if shuffle else np.arange(n_images)
    usable = n_images - n_images % world_size
    return order[:usable][rank::world_size]


def make_plan(
    shapes: Sequence[tuple[int, int]],
    *,
    seed: int,
    epoch: int,
    tile: int,
    batch_size: int,
    shuffle: bool = True,
    augment: bool = True,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> EpochPlan:
    """The plan of one epoch for images of the given (H, W) ``shapes``."""
    if tile < 1 or batch_size < 1:
        raise ValueError(f"{tile=} and {batch_size=} must be >= 1")
    if not 0 <= rank < world_size:
        raise ValueError(f"{rank=} must be in [0, {world_size=})")
    if len(shapes) < world_size:
        raise ValueError(f"{len(shapes)} images cannot be sharded over {world_size=} ranks (each needs one)")

    # Ranks keep the same number of tiles: the smallest shard's.
    per_image = [tiles_per_image(h, w, tile) for h, w in shapes]
    kept = min(
        sum(
            per_image[i]
            for i in shard_order(len(shapes), seed=seed, epoch=epoch, shuffle=shuffle, rank=r, world_size=world_size)
        )
        for r in range(world_size)
    )
    if drop_last:
        kept -= kept % batch_size

    jobs: list[ImageJob] = []
    remaining = kept
    for image_index in shard_order(
        len(shapes), seed=seed, epoch=epoch, shuffle=shuffle, rank=rank, world_size=world_size
    ):
        if remaining <= 0:
            break
        height, width = shapes[image_index]
        n_tiles = min(tiles_per_image(height, width, tile), remaining)
        draw = TileDraw(height, width, tile, seed, epoch, int(image_index), shuffle, augment, n_tiles)
        if n_tiles:
            jobs.append(ImageJob(len(jobs), int(image_index), *draw_tiles(draw), kept - remaining, draw))
            remaining -= n_tiles

    n_batches = -(-kept // batch_size)
    return EpochPlan(epoch, batch_size, tile, tuple(jobs), kept, n_batches)
