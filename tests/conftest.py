"""Shared fixtures: small datasets written to a temp folder, and /dev/shm hygiene."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """A plain ``pytest`` runs the benchmarks once, untimed, as smoke tests.

    ``--benchmark-disable`` cannot sit in ``addopts``: pytest-benchmark refuses it
    together with ``--benchmark-only``, which docs/design.md section 7 promises works.
    """
    option = config.option
    if hasattr(option, "benchmark_disable") and not (option.benchmark_only or option.benchmark_enable):
        option.benchmark_disable = True


def write_dataset(
    root: Path,
    *,
    images: int = 3,
    height: int = 70,
    width: int = 90,
    channels: int = 2,
    seed: int = 0,
    classes: bool = False,
) -> Path:
    """A tiny dataset in the docs/design.md section 4 format: random uint16 pixels, blocky labels."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(images):
        stem = f"img{i:02d}"
        shape = (height, width) if channels == 1 else (channels, height, width)
        tifffile.imwrite(root / "images" / f"{stem}.tif", rng.integers(0, 4096, shape, dtype=np.uint16))
        labels = np.zeros((height, width), np.uint16)
        for label in range(1, 6):
            y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
            labels[y : y + 8, x : x + 8] = label
            rows.append(f"{stem},{label},{1 + label % 3}")
        tifffile.imwrite(root / "labels" / f"{stem}.tif", labels)
    if classes:
        (root / "classes.csv").write_text("image,label,class\n" + "\n".join(rows) + "\n")
    return root


def write_corrupt_dataset(root: Path) -> Path:
    """Two good images, then one whose third compressed strip is zeros: only decoding finds it.

    ``open_dataset`` accepts the folder (the header and byte counts are intact); the
    per-image work fails on the third image. Returns the bad image's path.
    """
    rng = np.random.default_rng(0)
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for stem in ("a", "b", "c"):
        image = rng.integers(0, 4096, (2, 48, 48), dtype=np.uint16)
        tifffile.imwrite(
            root / "images" / f"{stem}.tif", image, photometric="minisblack", compression="zlib", rowsperstrip=8
        )
        tifffile.imwrite(root / "labels" / f"{stem}.tif", np.zeros((48, 48), np.uint16))
    bad = root / "images" / "c.tif"
    with tifffile.TiffFile(bad) as tif:
        offset, count = tif.pages[0].dataoffsets[2], tif.pages[0].databytecounts[2]
    raw = bytearray(bad.read_bytes())
    raw[offset : offset + count] = bytes(count)
    bad.write_bytes(bytes(raw))
    return bad


def epochs_with_a_break(name: str, root: Path, config: object) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Batches of epochs 0 and 1 in full, epoch 2 broken off after 3 batches, epoch 3 in full."""
    from strategies import make_generator

    out = []
    with make_generator(name, root, config) as gen:
        for _ in range(2):
            out.append([(np.array(d), np.array(m)) for d, m in gen])
        for i, _ in enumerate(gen):
            if i == 3:
                break
        out.append([(np.array(d), np.array(m)) for d, m in gen])
        assert gen.epoch == 3
    return out


def assert_same_batches(a: list, b: list) -> None:
    """Two runs of :func:`epochs_with_a_break` yielded the same batches, bit for bit."""
    assert [len(e) for e in a] == [len(e) for e in b]
    for epoch_a, epoch_b in zip(a, b, strict=True):
        for (da, ma), (db, mb) in zip(epoch_a, epoch_b, strict=True):
            np.testing.assert_array_equal(da, db)
            np.testing.assert_array_equal(ma, mb)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "tiny")


def shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _family() -> set[int]:
    """This process and its descendants."""
    import psutil

    return {os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))}


def _mapped_by_a_stranger(name: str) -> bool:
    """Whether a live process outside this one's family has /dev/shm/``name`` mapped (it is theirs)."""
    family, path = _family(), f"/dev/shm/{name}"
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in family:
            try:
                with open(f"/proc/{entry}/maps") as f:
                    if path in f.read():
                        return True
            except OSError:
                continue  # gone, or not ours to read
    return False


def _ours_or_orphaned(name: str) -> bool:
    """A segment this test process created, or one whose creator is gone (``ipcbench_<pid>_...``).

    Segments of other live processes (another pytest running beside this one, a
    mutation-testing worker) are not this test's doing. Python's own ``psm_*``
    (SharedMemory) and ``sem.mp-*`` (multiprocessing locks and queues under
    spawn/forkserver) names carry no pid: one counts unless a live process outside
    this one's family has it mapped.
    """
    if name.startswith(("psm_", "sem.mp-")):  # SharedMemory and multiprocessing semaphores
        return not _mapped_by_a_stranger(name)
    if not name.startswith("ipcbench_"):
        return False
    pid = name.removeprefix("ipcbench_").split("_", 1)[0]
    return not pid.isdigit() or int(pid) == os.getpid() or not os.path.exists(f"/proc/{pid}")


@pytest.fixture(autouse=True)
def dev_shm_unchanged():
    """Every test must leave /dev/shm as it found it.

    Objects a test dropped may still await the cycle collector (multiprocessing
    unlinks a queue's semaphores when the Queue object dies), so collect and give
    stragglers a moment before judging; what is still there then is a leak.
    """
    before = shm_entries()
    yield
    deadline = time.monotonic() + 3.0
    leaked = {name for name in shm_entries() - before if _ours_or_orphaned(name)}
    while leaked and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
        leaked = {name for name in shm_entries() - before if _ours_or_orphaned(name)}
    assert not leaked, f"test leaked shared-memory segments: {sorted(leaked)}"
