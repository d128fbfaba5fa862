"""The dataset cache: atomic builds, dataset.json, reuse, --force, damage and foreign folders."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

from harness.datasets import (
    DEFAULT_DATA_DIR,
    dataset_fingerprint,
    default_dataset_dir,
    ensure_dataset,
    store,
    synth,
)
from harness.errors import IpcbenchError
from strategies import open_dataset

SMALL = {"images": 2, "height": 120, "width": 160}


class Log(list):
    """A progress callback that keeps the messages."""

    def __call__(self, message: str) -> None:
        self.append(message)

    def count(self, word: str) -> int:  # type: ignore[override]
        return sum(word in message for message in self)


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def test_manifest_records_source_params_versions_checksums_and_fingerprint(tmp_path: Path):
    path = ensure_dataset("synth", tmp_path / "s", **SMALL)
    manifest = json.loads((path / "dataset.json").read_text())
    assert manifest["schema_version"] == store.SCHEMA_VERSION
    assert manifest["source"] == "synth"
    assert manifest["params"] == {**synth.SynthParams(**SMALL).as_dict()}
    assert {"numpy", "tifffile", "python"} <= set(manifest["versions"])
    assert sorted(manifest["files"]) == [
        "classes.csv",
        "images/synth_000.tif",
        "images/synth_001.tif",
        "labels/synth_000.tif",
        "labels/synth_001.tif",
    ]
    for name, record in manifest["files"].items():
        assert record["size"] == (path / name).stat().st_size
        assert record["sha256"] == store.file_sha256(path / name)
    assert manifest["shape"] == [2, 120, 160] and manifest["images"] == 2
    assert dataset_fingerprint(path) == manifest["fingerprint"]
    assert len(manifest["fingerprint"]) == 64


def test_reuse_does_not_rewrite(tmp_path: Path):
    first = ensure_dataset("synth", tmp_path / "s", **SMALL)
    before = mtimes(first)
    log = Log()
    again = ensure_dataset("synth", tmp_path / "s", progress=log, **SMALL)
    assert again == first
    assert mtimes(again) == before
    assert log.count("reusing") == 1 and log.count("building") == 0


def test_force_rebuilds(tmp_path: Path):
    path = ensure_dataset("synth", tmp_path / "s", **SMALL)
    inode = (path / "dataset.json").stat().st_ino
    log = Log()
    ensure_dataset("synth", tmp_path / "s", force=True, progress=log, **SMALL)
    assert (path / "dataset.json").stat().st_ino != inode
    assert log.count("building") == 1 and log.count("forced rebuild") == 1
    assert leftovers(tmp_path) == []


def test_different_parameters_need_force(tmp_path: Path):
    path = ensure_dataset("synth", tmp_path / "s", **SMALL)
    fingerprint = dataset_fingerprint(path)
    with pytest.raises(IpcbenchError, match=r"seed=0.*seed=5.*--force"):
        ensure_dataset("synth", tmp_path / "s", seed=5, **SMALL)
    assert dataset_fingerprint(path) == fingerprint  # untouched
    with pytest.raises(IpcbenchError, match=r"source='synth'.*source='real'"):
        ensure_dataset("real", tmp_path / "s", images=1)
    ensure_dataset("synth", tmp_path / "s", seed=5, force=True, **SMALL)
    assert json.loads((path / "dataset.json").read_text())["params"]["seed"] == 5
    assert dataset_fingerprint(path) != fingerprint


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_build_leaves_nothing_that_looks_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
):
    real_render = synth.render

    def failing_render(params, index):
        if index == 1:
            raise error("interrupted on purpose")
        return real_render(params, index)

    monkeypatch.setattr(synth, "render", failing_render)
    with pytest.raises(error, match="on purpose"):
        ensure_dataset("synth", tmp_path / "s", **SMALL)
    assert not (tmp_path / "s").exists()
    assert leftovers(tmp_path) == []


def test_interrupted_forced_rebuild_keeps_the_old_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = ensure_dataset("synth", tmp_path / "s", **SMALL)
    fingerprint = dataset_fingerprint(path)

    def failing_render(params, index):
        raise RuntimeError("interrupted on purpose")

    monkeypatch.setattr(synth, "render", failing_render)
    with pytest.raises(RuntimeError):
        ensure_dataset("synth", tmp_path / "s", force=True, seed=9, **SMALL)
    assert dataset_fingerprint(path) == fingerprint
    assert len(open_dataset(path)) == 2


def test_leftovers_of_a_killed_build_are_removed(tmp_path: Path):
    # What a SIGKILLed build leaves: a hidden partial folder with some files and no dataset.json.
    partial = tmp_path / ".s.partial-999999-deadbeef"
    (partial / "images").mkdir(parents=True)
    (partial / "images" / "synth_000.tif").write_bytes(b"half")
    ensure_dataset("synth", tmp_path / "s", **SMALL)
    assert leftovers(tmp_path) == []
    assert not partial.exists()


def test_damaged_dataset_is_rebuilt(tmp_path: Path):
    path = ensure_dataset("synth", tmp_path / "s", **SMALL)
    fingerprint = dataset_fingerprint(path)
    (path / "labels" / "synth_001.tif").unlink()
    log = Log()
    ensure_dataset("synth", tmp_path / "s", progress=log, **SMALL)
    assert log.count("it is damaged") == 1
    assert (path / "labels" / "synth_001.tif").is_file() and dataset_fingerprint(path) == fingerprint

    with (path / "images" / "synth_000.tif").open("ab") as fh:
        fh.write(b"\0" * 10)
    log.clear()
    ensure_dataset("synth", tmp_path / "s", progress=log, **SMALL)
    assert log.count("it is damaged") == 1 and dataset_fingerprint(path) == fingerprint


def test_unexpected_file_counts_as_damage(tmp_path: Path):
    path = ensure_dataset("synth", tmp_path / "s", **SMALL)
    (path / "images" / "extra.tif").write_bytes(b"x")
    log = Log()
    ensure_dataset("synth", tmp_path / "s", progress=log, **SMALL)
    assert log.count("it is damaged") == 1 and not (path / "images" / "extra.tif").exists()


def test_moved_mtime_is_verified_by_checksum(tmp_path: Path):
    path = ensure_dataset("synth", tmp_path / "s", **SMALL)
    image = path / "images" / "synth_000.tif"
    # Touched (e.g. copied without -p): same bytes, new mtime -> re-hashed once, reused.
    os.utime(image, ns=(1_000_000_000, 1_000_000_000))
    log = Log()
    ensure_dataset("synth", tmp_path / "s", progress=log, **SMALL)
    assert log.count("reusing") == 1
    assert json.loads((path / "dataset.json").read_text())["files"]["images/synth_000.tif"]["mtime_ns"] == 1_000_000_000
    # Same size, different bytes -> rebuilt.
    data = bytearray(image.read_bytes())
    data[-1] ^= 0xFF
    image.write_bytes(bytes(data))
    log.clear()
    ensure_dataset("synth", tmp_path / "s", progress=log, **SMALL)
    assert log.count("checksum differs") == 1 and log.count("building") == 1


def test_foreign_folder_is_never_overwritten(tmp_path: Path, tiny_dataset: Path):
    before = mtimes(tiny_dataset)
    for force in (False, True):
        with pytest.raises(IpcbenchError, match="not a dataset ipcbench built"):
            ensure_dataset("synth", tiny_dataset, force=force, **SMALL)
    assert mtimes(tiny_dataset) == before


def test_empty_folder_is_filled(tmp_path: Path):
    (tmp_path / "s").mkdir()
    path = ensure_dataset("synth", tmp_path / "s", **SMALL)
    assert len(open_dataset(path)) == 2


def test_fingerprint_of_a_users_folder_uses_names_and_sizes(tiny_dataset: Path):
    first = dataset_fingerprint(tiny_dataset)
    assert len(first) == 64 and first == dataset_fingerprint(tiny_dataset)
    with (tiny_dataset / "labels" / "img00.tif").open("ab") as fh:
        fh.write(b"\0")
    assert dataset_fingerprint(tiny_dataset) != first
    with pytest.raises(IpcbenchError, match="does not exist"):
        dataset_fingerprint(tiny_dataset / "nope")


def test_default_folder_names_carry_the_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert default_dataset_dir("real") == DEFAULT_DATA_DIR / "real" == Path("data/real")
    assert default_dataset_dir("synth") == Path("data/synth")
    assert default_dataset_dir("synth", compression="zlib", images=4) == Path("data/synth-n4-zlib")
    assert default_dataset_dir("real", sample="ecoli") == Path("data/real-ecoli")
    monkeypatch.chdir(tmp_path)
    path = ensure_dataset("synth", **SMALL)
    assert path == tmp_path / "data" / "synth-n2-120x160"
    with pytest.raises(IpcbenchError, match="unknown dataset source"):
        ensure_dataset("fake")


def test_concurrent_builders_build_once(tmp_path: Path):
    log = Log()
    paths: list[Path] = []
    threads = [
        threading.Thread(target=lambda: paths.append(ensure_dataset("synth", tmp_path / "s", progress=log, **SMALL)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert paths == [tmp_path / "s"] * 2
    assert log.count("synth: building") == 1 and log.count("reusing") == 1


def test_unreadable_manifest_needs_force(tmp_path: Path):
    path = ensure_dataset("synth", tmp_path / "s", **SMALL)
    (path / "dataset.json").write_text("{not json")
    with pytest.raises(IpcbenchError, match="not readable JSON"):
        ensure_dataset("synth", tmp_path / "s", **SMALL)
    log = Log()
    ensure_dataset("synth", tmp_path / "s", force=True, progress=log, **SMALL)
    assert log.count("dataset.json is unreadable") == 1
    assert json.loads((path / "dataset.json").read_text())["source"] == "synth"


def test_older_schema_is_rebuilt(tmp_path: Path):
    path = ensure_dataset("synth", tmp_path / "s", **SMALL)
    manifest = json.loads((path / "dataset.json").read_text())
    (path / "dataset.json").write_text(json.dumps({**manifest, "schema_version": 0}))
    log = Log()
    ensure_dataset("synth", tmp_path / "s", progress=log, **SMALL)
    assert log.count("schema version 0") == 1
    assert json.loads((path / "dataset.json").read_text())["schema_version"] == store.SCHEMA_VERSION


TIFF_CODES = {"none": 1, "zlib": 8, "zstd": 50000, "lzw": 5}  # the TIFF Compression tag of each


@pytest.mark.parametrize("compression", store.COMPRESSIONS)
@pytest.mark.parametrize("layout", store.LAYOUTS)
def test_write_tiff_reads_back_bit_for_bit(tmp_path: Path, compression: str, layout: str):
    # Every value of 16 bits (noise compresses worst; LZW's code table fills and resets),
    # a size that is not a multiple of the TIFF tile, one channel and three.
    rng = np.random.default_rng(0)
    arrays = {
        "one": rng.integers(0, 2**16, (300, 290), dtype=np.uint16),
        "three": rng.integers(0, 2**16, (3, 300, 290), dtype=np.uint16),
        "labels": np.repeat(np.arange(300, dtype=np.uint16), 290).reshape(300, 290),
    }
    for name, array in arrays.items():
        path = tmp_path / f"{name}.tif"
        store.write_tiff(path, array, compression, layout)
        back = tifffile.imread(path)
        assert back.dtype == array.dtype and np.array_equal(back, array), name
        with tifffile.TiffFile(path) as tif:
            assert len(tif.pages) == (1 if array.ndim == 2 else len(array))
            assert int(tif.pages[0].compression) == TIFF_CODES[compression]
