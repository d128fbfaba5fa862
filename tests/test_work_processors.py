"""The per-image work's edges: injection points, decode errors, output dtypes, decode threads, the class table.

``test_work`` and ``test_reference_model`` check the tiles themselves; these tests
check what surrounds them, each on the smallest input that shows it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import write_corrupt_dataset, write_dataset

from strategies import DatasetError, LoaderConfig, injection, open_dataset
from strategies import work as work_module
from strategies.base import config_plan
from strategies.work import (
    Conversion,
    ImageProcessor,
    TransferProcessor,
    class_lookup,
    decode_threads_for,
    image_buffers,
    make_processor,
    usable_cores,
)

CFG = LoaderConfig(batch_size=7, tile=16, workers=2, seed=0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    return open_dataset(write_dataset(tmp_path_factory.mktemp("work"), images=2, classes=True))


@pytest.fixture
def armed():
    """Every tiles.* injection point armed with a recorder of its context."""
    seen: list[tuple[str, dict]] = []
    for point in ("tiles.start", "tiles.row", "tiles.done"):
        injection.arm(point, lambda point=point, **context: seen.append((point, context)))
    yield seen
    injection.disarm()


def test_the_work_passes_each_tile_to_its_injection_points(dataset, armed: list) -> None:
    job = config_plan(dataset, CFG, epoch=0).jobs[1]
    ImageProcessor(dataset, CFG.tile).process(job)
    assert [point for point, _ in armed] == ["tiles.start", *["tiles.row"] * job.n_tiles, "tiles.done"]
    assert all(context["job"] is job for _, context in armed)
    assert [context["index"] for point, context in armed if point == "tiles.row"] == list(range(job.n_tiles))
    assert [sorted(context) for _, context in armed[:2]] == [["job"], ["index", "job"]]


def test_an_undecodable_image_names_the_file_and_the_error(tmp_path: Path) -> None:
    bad = write_corrupt_dataset(tmp_path / "ds")
    dataset = open_dataset(tmp_path / "ds")
    index = next(i for i, e in enumerate(dataset.entries) if e.image_path == str(bad))
    job = next(j for j in config_plan(dataset, CFG, epoch=0).jobs if j.image_index == index)
    with pytest.raises(DatasetError, match=rf"^cannot decode image {re.escape(str(bad))}: \w+Error: "):
        ImageProcessor(dataset, CFG.tile).process(job)


def test_a_label_image_changed_after_opening_is_named_as_the_label_image(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", images=1)
    dataset = open_dataset(root)
    label = root / "labels" / "img00.tif"
    tifffile.imwrite(label, np.zeros((10, 12), np.uint16))
    job = config_plan(dataset, CFG, epoch=0).jobs[0]
    expected = f"label image {label} has shape (10, 12) (axes 'YX'), expected (70, 90) (file changed?)"
    with pytest.raises(DatasetError) as info:
        ImageProcessor(dataset, CFG.tile).process(job)
    assert str(info.value) == expected
    label.write_bytes(b"not a TIFF file")
    with pytest.raises(DatasetError, match=rf"^cannot decode label image {re.escape(str(label))}: "):
        ImageProcessor(dataset, CFG.tile).process(job)


def test_outputs_are_in_the_configs_dtype_with_or_without_arrays_given(dataset) -> None:
    config = CFG.replace(dtype="float32", scale=0.5)
    assert Conversion.of(config).dtype == np.float32 and Conversion.of(config).scale == np.float32(0.5)
    data, masks = image_buffers(5, dataset, config)
    assert (data.dtype, masks.dtype, data.shape) == (np.float32, np.uint8, (5, dataset.channels, 16, 16))
    job = config_plan(dataset, config, epoch=0).jobs[0]
    processor = make_processor(dataset, config)
    fresh = processor.process(job)
    assert fresh.data.dtype == np.float32
    reference = ImageProcessor(dataset, 16).process(job)
    np.testing.assert_array_equal(fresh.data, reference.data.astype(np.float32) * np.float32(0.5))
    data_out = np.zeros((job.n_tiles, dataset.channels, 16, 16), np.float32)
    half = processor.process(job, data_out=data_out)  # one array alone is not used: both are allocated
    assert not np.shares_memory(half.data, data_out) and not data_out.any()
    np.testing.assert_array_equal(half.data, fresh.data)


def test_the_workload_chooses_the_processor_and_the_decoders_share_the_cores(dataset, monkeypatch) -> None:
    monkeypatch.setattr(work_module, "usable_cores", lambda: 8)
    transfer = make_processor(dataset, CFG.replace(workload="transfer", dtype="float32"))
    assert isinstance(transfer, TransferProcessor) and transfer.conversion.dtype == np.float32
    full = make_processor(dataset, CFG.replace(workers=4, dtype="float32"))
    assert isinstance(full, ImageProcessor) and full.conversion.dtype == np.float32
    assert full.decode_threads == 2  # 8 cores over 4 workers
    assert make_processor(dataset, CFG.replace(workers=4), decoders=1).decode_threads == 8
    assert make_processor(dataset, CFG.replace(decode_threads=3)).decode_threads == 3
    assert ImageProcessor(dataset, 16).decode_threads == 1


@pytest.mark.parametrize(
    ("cores", "decoders", "threads"), [(8, 3, 2), (8, 8, 1), (2, 5, 1), (1, 1, 1), (6, 0, 6), (6, 1, 6)]
)
def test_automatic_decode_threads_divide_the_cores_among_the_decoders(
    monkeypatch: pytest.MonkeyPatch, cores: int, decoders: int, threads: int
) -> None:
    monkeypatch.setattr(work_module, "usable_cores", lambda: cores)
    assert decode_threads_for(CFG, decoders) == threads
    assert decode_threads_for(CFG.replace(decode_threads=5), decoders) == 5


def test_usable_cores_are_the_affinity_or_else_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 3, 5})
    assert usable_cores() == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set())
    assert usable_cores() == 1

    def unsupported(pid: int) -> set:
        raise OSError("no affinity here")

    monkeypatch.setattr("os.sched_getaffinity", unsupported)
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert usable_cores() == 6
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert usable_cores() == 1


def test_the_class_table_skips_labels_its_dtype_cannot_hold() -> None:
    lut = class_lookup(((3, 2), (255, 3), (256, 2), (300, 3)), np.uint8)
    assert len(lut) == 256 and (lut[0], lut[1], lut[3], lut[255]) == (0, 1, 2, 3)


def test_an_image_rewritten_with_other_axes_after_opening_is_named_with_its_axes(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", images=1)
    dataset = open_dataset(root)
    image = root / "images" / "img00.tif"
    tifffile.imwrite(image, np.zeros((2, 3, 70, 90), np.uint16), photometric="minisblack", metadata={"axes": "TCYX"})
    job = config_plan(dataset, CFG, epoch=0).jobs[0]
    with pytest.raises(
        DatasetError, match=rf"^image {re.escape(str(image))} has axes 'TCYX' and shape \(2, 3, 70, 90\)"
    ):
        ImageProcessor(dataset, CFG.tile).process(job)
