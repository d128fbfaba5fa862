"""The shared plan, per-image work and batching against a slow, obviously correct model of them.

Every strategy shares the plan (strategies/plan.py), the per-image work
(strategies/work.py) and batch assembly (strategies/base.py), so comparing
strategies with each other cannot see a bug in them. This module checks them against
an independent model written for clarity, not speed: pixels indexed one by one for
the rotations and flips, classes looked up label by label from classes.csv, tiles
concatenated in plan order and cut into batches with plain slicing. Only the random
draws (which tiles, which augmentation codes) are taken from the plan, after their
own properties are checked.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import write_dataset

from strategies import LoaderConfig, make_generator, make_plan, open_dataset


def rotate_quarter_turn(tile: np.ndarray) -> np.ndarray:
    """One 90-degree turn counterclockwise of the last two axes: out[i, j] = in[j, T - 1 - i]."""
    size = tile.shape[-1]
    out = np.empty_like(tile)
    for i in range(size):
        for j in range(size):
            out[..., i, j] = tile[..., j, size - 1 - i]
    return out


def flip_left_right(tile: np.ndarray) -> np.ndarray:
    """out[i, j] = in[i, T - 1 - j]."""
    size = tile.shape[-1]
    out = np.empty_like(tile)
    for j in range(size):
        out[..., :, j] = tile[..., :, size - 1 - j]
    return out


def augment(tile: np.ndarray, code: int) -> np.ndarray:
    """``code % 4`` quarter turns, then a left-right flip when ``code >= 4`` (the plan's codes)."""
    for _ in range(code % 4):
        tile = rotate_quarter_turn(tile)
    return flip_left_right(tile) if code >= 4 else tile


def class_table(root: Path) -> dict[tuple[str, int], int]:
    path = root / "classes.csv"
    if not path.exists():
        return {}
    with path.open() as f:
        return {(row["image"], int(row["label"])): int(row["class"]) for row in csv.DictReader(f)}


def mask_of(labels: np.ndarray, image: str, table: dict[tuple[str, int], int]) -> np.ndarray:
    """Background 0; a listed label its class; any other label class 1."""
    mask = np.zeros(labels.shape, np.uint8)
    for label in np.unique(labels):
        if label != 0:
            mask[labels == label] = table.get((image, int(label)), 1)
    return mask


def model_epoch(root: Path, config: LoaderConfig, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The batches of one epoch, by the model."""
    dataset = open_dataset(root)
    plan = make_plan(dataset.shapes, seed=config.seed, epoch=epoch, tile=config.tile, batch_size=config.batch_size)
    table = class_table(root)
    t = config.tile
    data_tiles, mask_tiles = [], []
    for job in plan.jobs:
        entry = dataset.entries[job.image_index]
        name = Path(entry.image_path).stem
        pixels = tifffile.imread(entry.image_path).reshape(entry.shape)
        masks = mask_of(tifffile.imread(entry.label_path), name, table)
        for (y, x), code in zip(job.tiles.tolist(), job.augmentations.tolist(), strict=True):
            tile = augment(pixels[:, y : y + t, x : x + t], code)
            if config.dtype == "float32":
                tile = tile.astype(np.float32) * np.float32(config.scale if config.scale is not None else 1.0)
            data_tiles.append(tile.astype(config.dtype))
            mask_tiles.append(augment(masks[y : y + t, x : x + t], code))
    n = config.batch_size
    return [(np.stack(data_tiles[i : i + n]), np.stack(mask_tiles[i : i + n])) for i in range(0, len(data_tiles), n)]


def test_the_model_rotates_like_a_picture() -> None:
    tile = np.array([[1, 2], [3, 4]])
    assert rotate_quarter_turn(tile).tolist() == [[2, 4], [1, 3]]  # counterclockwise: the top row goes left
    assert flip_left_right(tile).tolist() == [[2, 1], [4, 3]]
    assert augment(tile, 6).tolist() == [[3, 4], [1, 2]]  # half a turn, then the flip


@pytest.mark.parametrize(
    "config",
    [
        LoaderConfig(batch_size=5, tile=16, workers=1),
        LoaderConfig(batch_size=7, tile=8, workers=1, dtype="float32", scale=1 / 4096),
    ],
    ids=["uint16", "float32_scaled"],
)
def test_batches_equal_the_model_bit_for_bit(tmp_path: Path, config: LoaderConfig) -> None:
    root = write_dataset(tmp_path / "ds", images=3, classes=True)
    with make_generator("baseline", root, config) as gen:
        for epoch in range(2):
            got = list(gen)
            want = model_epoch(root, config, config.epoch + epoch)
            assert len(got) == len(want) == len(gen)
            for (data, masks), (model_data, model_masks) in zip(got, want, strict=True):
                assert data.dtype == model_data.dtype and masks.dtype == np.uint8
                np.testing.assert_array_equal(data, model_data)
                np.testing.assert_array_equal(masks, model_masks)


def test_the_plan_draws_each_image_once_on_its_grid_and_anew_every_epoch() -> None:
    shapes = [(70, 90), (64, 64), (90, 70)]
    tile = 16
    plans = [make_plan(shapes, seed=0, epoch=epoch, tile=tile, batch_size=5) for epoch in range(4)]
    for plan in plans:
        assert sorted(job.image_index for job in plan.jobs) == [0, 1, 2]  # each image once
        for job in plan.jobs:
            height, width = shapes[job.image_index]
            cells = {(int(y), int(x)) for y, x in job.tiles}
            assert len(cells) == len(job.tiles) == (height // tile) * (width // tile)  # every grid cell once
            # one grid, shifted as a whole by an offset inside the margin it leaves
            offsets = {(y % tile, x % tile) for y, x in cells}
            assert len(offsets) == 1, offsets
            assert all(0 <= y <= height - tile and 0 <= x <= width - tile for y, x in cells)
            assert set(job.augmentations.tolist()) <= set(range(8))
        assert plan.n_tiles == sum(len(job.tiles) for job in plan.jobs)
        assert plan.n_batches == -(-plan.n_tiles // 5)
    # The epoch changes the order of the images, of each image's tiles, and the codes.
    orders = {tuple(job.image_index for job in plan.jobs) for plan in plans}
    tile_orders = {tuple(map(tuple, plan.jobs[0].tiles.tolist())) for plan in plans}
    codes = {tuple(np.concatenate([job.augmentations for job in plan.jobs]).tolist()) for plan in plans}
    assert len(orders) > 1 and len(tile_orders) > 1 and len(codes) == len(plans)
    # ... and the same arguments give the same plan.
    again = make_plan(shapes, seed=0, epoch=2, tile=tile, batch_size=5)
    assert [j.image_index for j in again.jobs] == [j.image_index for j in plans[2].jobs]
    for a, b in zip(again.jobs, plans[2].jobs, strict=True):
        np.testing.assert_array_equal(a.tiles, b.tiles)
        np.testing.assert_array_equal(a.augmentations, b.augmentations)
