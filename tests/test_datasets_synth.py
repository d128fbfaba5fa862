"""The synth generator: camera model, cells and classes, determinism, TIFF compression and layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from harness.datasets import ensure_dataset, synth
from harness.datasets.store import COMPRESSIONS, LAYOUTS
from harness.datasets.synth import (
    DEAD_CLASS,
    LIVE_CLASS,
    MAX_ADU,
    OFFSET_ADU,
    RAW_NORMAL_VAR_INV,
    SynthParams,
    _raw_normal,
    render,
)
from harness.errors import IpcbenchError
from strategies import open_dataset

SMALL = {"height": 300, "width": 400}


def test_shapes_and_dtypes_follow_channels():
    two = render(SynthParams(**SMALL), 0)
    assert two.image.shape == (2, 300, 400) and two.image.dtype == np.uint16
    assert two.labels.shape == (300, 400) and two.labels.dtype == np.uint16
    one = render(SynthParams(channels=1, **SMALL), 0)
    assert one.image.shape == (300, 400)
    assert render(SynthParams(channels=5, **SMALL), 0).image.shape == (5, 300, 400)


def test_twelve_bit_range_and_camera_offset():
    result = render(SynthParams(height=600, width=800), 0)
    image, background = result.image, result.labels == 0
    assert image.max() <= MAX_ADU
    for channel in image:
        # Dark background: the offset plus a little glow, never near 0 (the camera bias).
        median = float(np.median(channel[background]))
        assert OFFSET_ADU < median < OFFSET_ADU + 60
        assert channel.min() > OFFSET_ADU - 40
    # Some cell pixels are far above the background: real signal within 12 bits.
    assert image[0].max() > 1000 and image[1].max() > 1000


def test_saturation_is_clipped_at_4095_not_wrapped(monkeypatch: pytest.MonkeyPatch):
    # Push the camera offset near the top: bright cells must saturate at 4095, not wrap to small values.
    monkeypatch.setattr(synth, "OFFSET_ADU", 3500.0)
    image = render(SynthParams(height=300, width=400), 0).image
    assert image.max() == MAX_ADU
    assert image.min() > 3400


def test_live_cells_in_channel_0_dead_nuclei_in_channel_1_counterstain_in_2():
    result = render(SynthParams(channels=4, height=600, width=800), 0)
    classes = dict(result.classes)
    live = np.isin(result.labels, [label for label, cls in classes.items() if cls == LIVE_CLASS])
    dead = np.isin(result.labels, [label for label, cls in classes.items() if cls == DEAD_CLASS])
    background = result.labels == 0
    ch = result.image.astype(np.float64)
    assert live.any() and dead.any()
    assert ch[0][live].mean() > ch[0][background].mean() + 300
    assert abs(ch[0][dead].mean() - ch[0][background].mean()) < 20  # no calcein in dead cells
    assert ch[1][dead].mean() > ch[1][background].mean() + 300
    assert abs(ch[1][live].mean() - ch[1][background].mean()) < 20  # no nucleus stain in live cells
    assert ch[2][live].mean() > ch[2][background].mean() + 20 and ch[2][dead].mean() > ch[2][background].mean() + 300
    # Channel 3 is an empty channel: the same statistics inside and outside cells.
    assert abs(ch[3][live | dead].mean() - ch[3][background].mean()) < 5


def test_noise_scales_with_signal():
    result = render(SynthParams(channels=1, height=600, width=800), 0)
    # Background pixels: shot noise of ~30 ADU plus read noise: a few ADU of spread, not 0, not 100.
    background = result.image[result.labels == 0].astype(np.float64)
    assert 3 < background.std() < 15


def test_labels_and_classes_agree():
    result = render(SynthParams(height=600, width=800), 1)
    in_image = set(np.unique(result.labels).tolist()) - {0}
    listed = {label for label, _ in result.classes}
    assert in_image == listed
    assert {cls for _, cls in result.classes} == {LIVE_CLASS, DEAD_CLASS}
    live_share = sum(cls == LIVE_CLASS for _, cls in result.classes) / len(result.classes)
    assert 0.5 < live_share < 0.9


def test_seeded_determinism():
    a = render(SynthParams(seed=3, **SMALL), 1)
    b = render(SynthParams(seed=3, **SMALL), 1)
    c = render(SynthParams(seed=4, **SMALL), 1)
    assert a.image.tobytes() == b.image.tobytes() and a.labels.tobytes() == b.labels.tobytes()
    assert a.image.tobytes() != c.image.tobytes()
    assert a.image.tobytes() != render(SynthParams(seed=3, **SMALL), 2).image.tobytes()
    # An image depends on its index, not on how many images the dataset has.
    assert render(SynthParams(seed=3, images=2, **SMALL), 1).image.tobytes() == a.image.tobytes()


def test_raw_normal_has_unit_variance_after_scaling():
    out, spare = np.empty(200_000, np.float32), np.empty(200_000, np.float32)
    z = _raw_normal(np.random.default_rng(0), out, spare) * np.sqrt(RAW_NORMAL_VAR_INV)
    assert abs(float(z.mean())) < 0.01
    assert abs(float(z.std()) - 1) < 0.01
    # Irwin-Hall(4): 4.25% beyond 2 sigma (a Gaussian: 4.55%), nothing beyond sqrt(12).
    assert abs(float(np.mean(np.abs(z) > 2)) - 0.0425) < 0.003
    assert float(np.abs(z).max()) <= np.sqrt(12) + 1e-4


def test_built_dataset_opens_with_classes(tmp_path: Path):
    path = ensure_dataset("synth", tmp_path / "s", images=2, **SMALL)
    dataset = open_dataset(path)
    assert len(dataset) == 2 and dataset.channels == 2 and dataset.shapes == ((300, 400), (300, 400))
    assert all(e.classes for e in dataset.entries)
    assert {cls for e in dataset.entries for _, cls in e.classes} == {LIVE_CLASS, DEAD_CLASS}
    # The written pixels are what render() computed.
    first = render(SynthParams(images=2, **SMALL), 0)
    assert np.array_equal(tifffile.imread(path / "images" / "synth_000.tif"), first.image)
    assert np.array_equal(tifffile.imread(path / "labels" / "synth_000.tif"), first.labels)


@pytest.mark.parametrize("compression, code", [("none", 1), ("zlib", 8), ("zstd", 50000), ("lzw", 5)])
@pytest.mark.parametrize("layout", ["strips", "tiles"])
def test_compression_and_layout_are_in_the_file(tmp_path: Path, compression: str, code: int, layout: str):
    path = ensure_dataset("synth", tmp_path / "s", images=1, compression=compression, layout=layout, **SMALL)
    for name in ("images/synth_000.tif", "labels/synth_000.tif"):
        with tifffile.TiffFile(path / name) as tif:
            for page in tif.pages:
                assert int(page.compression) == code
                assert page.is_tiled == (layout == "tiles")
                if layout == "tiles":
                    assert (page.tilelength, page.tilewidth) == (256, 256)
    assert open_dataset(path).shapes == ((300, 400),)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_every_compression_reads_back_what_was_written(tmp_path: Path, compression: str):
    # Images and labels, 2 channels, both layouts: bit for bit what render() computed.
    params = SynthParams(images=1, compression=compression, **SMALL)
    expected = render(params, 0)
    for layout in LAYOUTS:
        path = ensure_dataset("synth", tmp_path / layout, images=1, compression=compression, layout=layout, **SMALL)
        image = tifffile.imread(path / "images" / "synth_000.tif")
        labels = tifffile.imread(path / "labels" / "synth_000.tif")
        assert image.dtype == np.uint16 and labels.dtype == np.uint16
        assert np.array_equal(image, expected.image) and np.array_equal(labels, expected.labels)


@pytest.mark.parametrize(
    "params, word",
    [
        ({"compression": "jpeg"}, "compression"),
        ({"layout": "planes"}, "layout"),
        ({"images": 0}, "images"),
        ({"height": 8}, "height"),
        ({"channels": True}, "channels"),
        ({"colour": 3}, "colour"),
    ],
)
def test_bad_parameters_are_clear_errors(tmp_path: Path, params: dict, word: str):
    with pytest.raises(IpcbenchError, match=word):
        ensure_dataset("synth", tmp_path / "s", **params)
    assert not (tmp_path / "s").exists()
