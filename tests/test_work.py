"""The per-image work, checked by hand: tile data, the 8 augmentations, and the mask rules.

A 4 x 4 image holding 0..15 is cut into 2 x 2 tiles, so every expected tile can be
written out literally; larger cases are checked against np.rot90 / np.fliplr.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from strategies import DatasetError, open_dataset
from strategies.plan import ImageJob, make_plan
from strategies.work import ImageProcessor, augmented, class_lookup, tile_nbytes

IMAGE = np.arange(16, dtype=np.uint16).reshape(4, 4)
LABELS = np.array(
    [
        [0, 1, 1, 2],
        [0, 1, 3, 2],
        [4, 4, 0, 0],
        [5, 0, 7, 7],
    ],
    np.uint16,
)
# label -> class; labels 3 and 5 are not listed, so they are class 1.
TABLE = "image,label,class\na,1,3\na,2,255\na,4,2\na,7,1\n"
MASK_WITH_TABLE = np.array(
    [
        [0, 3, 3, 255],
        [0, 3, 1, 255],
        [2, 2, 0, 0],
        [1, 0, 1, 1],
    ],
    np.uint8,
)
MASK_NO_TABLE = (LABELS != 0).astype(np.uint8)
CORNERS = np.array([[0, 0], [0, 2], [2, 0], [2, 2]], np.int32)


def write_pair(root: Path, stem: str, image: np.ndarray, labels: np.ndarray) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(root / "images" / f"{stem}.tif", image, photometric="minisblack")
    tifffile.imwrite(root / "labels" / f"{stem}.tif", labels)


def job(tiles: np.ndarray, codes, image_index: int = 0, position: int = 0) -> ImageJob:
    codes = np.broadcast_to(np.asarray(codes, np.uint8), (len(tiles),)).copy()
    return ImageJob(position, image_index, np.asarray(tiles, np.int32), codes)


def by_hand(tile: np.ndarray, code: int) -> np.ndarray:
    """The augmentation spelled out: code % 4 quarter turns (counter-clockwise), then a left-right flip."""
    out = np.rot90(tile, code % 4)
    return np.fliplr(out) if code >= 4 else out


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    write_pair(tmp_path, "a", IMAGE, LABELS)
    return tmp_path


# -- tile data and augmentations ------------------------------------------------

# The top-left tile [[0, 1], [4, 5]] under each code, written out by hand.
TOP_LEFT = {
    0: [[0, 1], [4, 5]],
    1: [[1, 5], [0, 4]],  # a quarter turn counter-clockwise
    2: [[5, 4], [1, 0]],
    3: [[4, 0], [5, 1]],
    4: [[1, 0], [5, 4]],  # flipped left-right
    5: [[5, 1], [4, 0]],
    6: [[4, 5], [0, 1]],
    7: [[0, 4], [1, 5]],  # the transpose
}


@pytest.mark.parametrize("code", range(8))
def test_tiles_by_hand(tiny: Path, code: int) -> None:
    out = ImageProcessor(open_dataset(tiny), 2).process(job(CORNERS, code))
    assert out.data.shape == (4, 1, 2, 2) and out.data.dtype == np.uint16
    assert out.masks.shape == (4, 2, 2) and out.masks.dtype == np.uint8
    assert out.data[0, 0].tolist() == TOP_LEFT[code]
    for i, (y, x) in enumerate(CORNERS):
        np.testing.assert_array_equal(out.data[i, 0], by_hand(IMAGE[y : y + 2, x : x + 2], code))
        np.testing.assert_array_equal(out.masks[i], by_hand(MASK_NO_TABLE[y : y + 2, x : x + 2], code))


def test_tiles_follow_job_order_and_mixed_codes(tiny: Path) -> None:
    tiles = CORNERS[[3, 0, 2, 1, 3]]
    codes = [1, 0, 7, 4, 6]
    out = ImageProcessor(open_dataset(tiny), 2).process(job(tiles, codes, image_index=0, position=5))
    assert (out.position, out.image_index, out.n_tiles) == (5, 0, 5)
    assert out.data[:, 0].tolist() == [
        [[11, 15], [10, 14]],  # (2, 2) turned once
        [[0, 1], [4, 5]],  # (0, 0) as is
        [[8, 12], [9, 13]],  # (2, 0) transposed
        [[3, 2], [7, 6]],  # (0, 2) flipped
        [[14, 15], [10, 11]],  # (2, 2) turned twice and flipped: upside down
    ]


@pytest.mark.parametrize("code", range(8))
def test_multichannel_tiles_against_numpy(tmp_path: Path, code: int) -> None:
    rng = np.random.default_rng(code)
    image = rng.integers(0, 65536, (3, 13, 11), dtype=np.uint16)
    labels = rng.integers(0, 5, (13, 11), dtype=np.uint16)
    write_pair(tmp_path, "a", image, labels)
    corners = np.array([[0, 0], [5, 6], [8, 1], [3, 2]], np.int32)  # any corner, not only a grid
    out = ImageProcessor(open_dataset(tmp_path), 5).process(job(corners, code))
    for i, (y, x) in enumerate(corners):
        for c in range(3):
            np.testing.assert_array_equal(out.data[i, c], by_hand(image[c, y : y + 5, x : x + 5], code))
        np.testing.assert_array_equal(out.masks[i], by_hand((labels[y : y + 5, x : x + 5] != 0).astype(np.uint8), code))
        assert out.data[i].flags.c_contiguous


def test_augmented_is_a_view() -> None:
    a = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    for code in range(8):
        view = augmented(a, code)
        assert np.shares_memory(view, a)
        np.testing.assert_array_equal(view[1], by_hand(a[1], code))


# -- masks ----------------------------------------------------------------------


def test_mask_without_table_is_labelled_or_not(tiny: Path) -> None:
    full = np.array([[0, 0]], np.int32)
    out = ImageProcessor(open_dataset(tiny), 4).process(job(full, 0))
    np.testing.assert_array_equal(out.masks[0], MASK_NO_TABLE)


def test_mask_with_table(tiny: Path) -> None:
    (tiny / "classes.csv").write_text(TABLE)
    out = ImageProcessor(open_dataset(tiny), 4).process(job(np.array([[0, 0]]), 0))
    np.testing.assert_array_equal(out.masks[0], MASK_WITH_TABLE)


def test_image_missing_from_table_is_all_class_one(tiny: Path) -> None:
    write_pair(tiny, "b", IMAGE, LABELS)
    (tiny / "classes.csv").write_text(TABLE)
    ds = open_dataset(tiny)
    assert ds.entries[1].classes == ()
    out = ImageProcessor(ds, 4).process(job(np.array([[0, 0]]), 0, image_index=1))
    np.testing.assert_array_equal(out.masks[0], MASK_NO_TABLE)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"])
@pytest.mark.parametrize("table", [False, True])
def test_label_dtypes_give_the_same_masks(tmp_path: Path, dtype: str, table: bool) -> None:
    write_pair(tmp_path, "a", IMAGE, LABELS.astype(dtype))
    if table:
        (tmp_path / "classes.csv").write_text(TABLE)
    out = ImageProcessor(open_dataset(tmp_path), 2).process(job(CORNERS, [0, 5, 2, 7]))
    for i, ((y, x), code) in enumerate(zip(CORNERS, [0, 5, 2, 7], strict=True)):
        expected = (MASK_WITH_TABLE if table else MASK_NO_TABLE)[y : y + 2, x : x + 2]
        np.testing.assert_array_equal(out.masks[i], by_hand(expected, code))


@pytest.mark.parametrize("dtype", ["uint32", "int32", "int64"])
def test_wide_labels_beyond_16_bits(tmp_path: Path, dtype: str) -> None:
    labels = np.array([[0, 70000], [100000, 1]], dtype)
    write_pair(tmp_path, "a", np.zeros((2, 2), np.uint16), labels)
    (tmp_path / "classes.csv").write_text("image,label,class\na,70000,9\na,1,4\n")
    out = ImageProcessor(open_dataset(tmp_path), 2).process(job(np.array([[0, 0]]), 0))
    assert out.masks[0].tolist() == [[0, 9], [1, 4]]


def test_class_lookup() -> None:
    lut = class_lookup(((1, 3), (7, 200)), np.dtype(np.uint16))
    assert lut is not None and lut.shape == (65536,) and lut.dtype == np.uint8
    assert (lut[0], lut[1], lut[2], lut[7], lut[65535]) == (0, 3, 1, 200, 1)
    lut8 = class_lookup(((1, 3), (300, 9)), np.dtype(np.uint8))  # 300 cannot occur in uint8 labels
    assert lut8 is not None and lut8.shape == (256,) and lut8[1] == 3
    # Every labelled pixel class 1 (no table, or a table of 1s): labels != 0 does it, no table.
    assert class_lookup(None, np.dtype(np.uint8)) is None
    assert class_lookup(((4, 1), (9, 1)), np.dtype(np.uint16)) is None
    for wide in (np.int16, np.int32, np.uint32, np.int64):
        assert class_lookup(((1, 3),), np.dtype(wide)) is None


def test_tile_nbytes() -> None:
    assert tile_nbytes(2, 256) == (2 * 256 * 256 * 2, 256 * 256)
    assert tile_nbytes(1, 3) == (18, 9)


# -- buffers --------------------------------------------------------------------


def test_one_channel_image_with_uint16_labels(tmp_path: Path) -> None:
    # The image and its labels have the same shape and dtype here: their decode
    # buffers must stay separate, or the tiles would hold the labels.
    image = np.arange(64, dtype=np.uint16).reshape(8, 8) + 1000
    labels = np.arange(64, dtype=np.uint16).reshape(8, 8) % 3
    write_pair(tmp_path, "a", image, labels)
    out = ImageProcessor(open_dataset(tmp_path), 8).process(job(np.array([[0, 0]]), 0))
    np.testing.assert_array_equal(out.data[0, 0], image)
    np.testing.assert_array_equal(out.masks[0], labels != 0)


def test_buffers_reused_across_images_of_different_sizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_pair(tmp_path, "a", rng.integers(0, 65536, (2, 40, 50), np.uint16), rng.integers(0, 4, (40, 50), np.uint16))
    write_pair(tmp_path, "b", rng.integers(0, 65536, (2, 24, 20), np.uint16), rng.integers(0, 4, (24, 20), np.int32))
    write_pair(tmp_path, "c", rng.integers(0, 65536, (2, 40, 50), np.uint16), rng.integers(0, 4, (40, 50), np.uint16))
    (tmp_path / "classes.csv").write_text("image,label,class\na,1,5\nb,2,6\nc,3,7\n")
    ds = open_dataset(tmp_path)
    jobs = make_plan(ds.shapes, seed=0, epoch=0, tile=8, batch_size=4).jobs
    fresh = {j.image_index: ImageProcessor(ds, 8).process(j) for j in jobs}

    shared = ImageProcessor(ds, 8)
    data_buffer = np.empty((31, 2, 8, 8), np.uint16)  # bigger than any image needs
    masks_buffer = np.empty((31, 8, 8), np.uint8)
    for j in [*jobs, *jobs[::-1], *jobs]:  # alternate sizes and label dtypes
        out = shared.process(j, data_buffer, masks_buffer)
        assert np.shares_memory(out.data, data_buffer) and np.shares_memory(out.masks, masks_buffer)
        assert out.n_tiles == j.n_tiles
        np.testing.assert_array_equal(out.data, fresh[j.image_index].data)
        np.testing.assert_array_equal(out.masks, fresh[j.image_index].masks)

    # Without output buffers, every result owns its arrays: a later image does not change an earlier one.
    first = shared.process(jobs[0])
    before = first.data.copy(), first.masks.copy()
    for j in jobs[1:]:
        shared.process(j)
    np.testing.assert_array_equal(first.data, before[0])
    np.testing.assert_array_equal(first.masks, before[1])


def test_file_changed_after_open(tiny: Path) -> None:
    ds = open_dataset(tiny)
    tifffile.imwrite(tiny / "images" / "a.tif", np.zeros((5, 5), np.uint16))
    with pytest.raises(DatasetError, match=str(tiny / "images" / "a.tif")):
        ImageProcessor(ds, 2).process(job(CORNERS, 0))


def test_transfer_processor_fills_a_kept_array_once_and_every_new_one(tmp_path: Path) -> None:
    from conftest import write_dataset

    from strategies.work import TransferProcessor, tile_buffers

    dataset = open_dataset(write_dataset(tmp_path / "ds", images=2))
    processor = TransferProcessor(dataset, 16)
    plan = make_plan(dataset.shapes, seed=0, epoch=0, tile=16, batch_size=7)
    job = plan.jobs[0]
    bank = processor.process(job)  # no output arrays: views of the processor's own tiles
    assert not bank.data.flags.writeable
    kept = tile_buffers(plan.jobs[0].n_tiles + 3, dataset.channels, 16)
    first = processor.process(job, *kept)
    assert np.array_equal(first.data, bank.data) and np.array_equal(first.masks, bank.masks)
    kept[0][...] = 7  # nobody else writes a strategy's output array; if someone did, it shows:
    again = processor.process(job, *kept)
    assert (again.data == 7).all(), "a kept array is filled once, not on every job"
    for _ in range(3):  # a fresh array each time (torch's tensors): always filled
        fresh = processor.process(job, *tile_buffers(job.n_tiles, dataset.channels, 16))
        assert np.array_equal(fresh.data, bank.data)
