"""The transfer workload's tiles: the largest image's grid, in order, unaugmented, converted, read-only.

``test_work`` checks when a kept output array is filled; this file checks what the
tiles are, on a dataset whose largest image is neither the first nor the last.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import write_dataset

from strategies import open_dataset
from strategies.plan import ImageJob, image_tiles
from strategies.work import Conversion, ImageProcessor, TransferProcessor

TILE = 16


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_dataset(tmp_path_factory.mktemp("sizes"), images=3)  # img00..img02, 70 x 90: 20 tiles
    rng = np.random.default_rng(1)
    # img01b sorts between img01 and img02: the largest image (96 x 128, 48 tiles) in the middle.
    tifffile.imwrite(root / "images" / "img01b.tif", rng.integers(0, 4096, (2, 96, 128), dtype=np.uint16))
    labels = np.zeros((96, 128), np.uint16)
    labels[10:40, 20:60] = 1
    tifffile.imwrite(root / "labels" / "img01b.tif", labels)
    return root


def _largest_images_tiles(dataset, conversion: Conversion | None = None):
    index = next(i for i, entry in enumerate(dataset.entries) if entry.image_path.endswith("img01b.tif"))
    assert 0 < index < len(dataset.entries) - 1  # neither first nor last: only a size comparison finds it
    tiles = image_tiles(96, 128, TILE, None)
    grid = ImageJob(0, index, tiles, np.zeros(len(tiles), np.uint8))
    return ImageProcessor(dataset, TILE, conversion).process(grid)


def test_every_job_gets_the_first_tiles_of_the_largest_image_in_grid_order(dataset: Path) -> None:
    data = open_dataset(dataset)
    reference = _largest_images_tiles(data)
    assert len(reference.data) == 48
    processor = TransferProcessor(data, TILE)
    for position, image_index, n_tiles in ((0, 0, 20), (5, 3, 7)):
        job = ImageJob(position, image_index, np.zeros((n_tiles, 2), np.int32), np.full(n_tiles, 5, np.uint8))
        image = processor.process(job)
        assert (image.position, image.image_index) == (position, image_index)
        np.testing.assert_array_equal(image.data, reference.data[:n_tiles])
        np.testing.assert_array_equal(image.masks, reference.masks[:n_tiles])
        assert image.data.dtype == np.uint16
        assert not image.data.flags.writeable and not image.masks.flags.writeable  # the shared bank


def test_the_tiles_are_converted_as_the_config_says(dataset: Path) -> None:
    data = open_dataset(dataset)
    conversion = Conversion(np.float32, 1 / 4096)
    reference = _largest_images_tiles(data, conversion)
    image = TransferProcessor(data, TILE, conversion).process(ImageJob(0, 0, np.zeros((3, 2), np.int32), np.zeros(3)))
    assert image.data.dtype == np.float32
    np.testing.assert_array_equal(image.data, reference.data[:3])
    assert float(image.data.max()) < 1.0


def test_output_arrays_are_used_only_when_both_are_given(dataset: Path) -> None:
    data = open_dataset(dataset)
    processor = TransferProcessor(data, TILE)
    job = ImageJob(2, 1, np.zeros((4, 2), np.int32), np.zeros(4, np.uint8))
    data_out = np.zeros((10, 2, TILE, TILE), np.uint16)
    alone = processor.process(job, data_out=data_out)  # no masks_out: the bank's own views
    assert not alone.data.flags.writeable and not data_out.any()
    masks_out = np.zeros((10, TILE, TILE), np.uint8)
    both = processor.process(job, data_out, masks_out)
    assert (both.position, both.image_index) == (2, 1)
    assert np.shares_memory(both.data, data_out) and np.shares_memory(both.masks, masks_out)
    np.testing.assert_array_equal(both.data, alone.data)
    np.testing.assert_array_equal(both.masks, alone.masks)
