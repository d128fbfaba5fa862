"""The ``threads`` strategy: a thread pool behind the BatchGenerator contract.

Bit-identical batches to the baseline for every worker count and prefetch depth,
across epochs and after early breaks; the window (at most ``workers * prefetch``
images in flight, buffers recycled); torch output; a worker's exception with its
file name and traceback; a stuck thread as a timeout; close and garbage
collection that leave no thread behind.
"""

from __future__ import annotations

import os
import threading
import traceback
from pathlib import Path

import pytest
from conftest import assert_same_batches, epochs_with_a_break, write_corrupt_dataset, write_dataset

from strategies import DatasetError, LoaderConfig, WorkerError, WorkerTimeoutError, make_generator
from strategies.threads import THREAD_PREFIX
from strategies.work import ImageProcessor

# write_dataset(images=5): 5 images of 2 x 70 x 90; tile 16: 20 tiles an image,
# 100 an epoch, 15 batches of 7 (the last of 2), so batches span images.
CFG = LoaderConfig(batch_size=7, tile=16, workers=2, prefetch=2, timeout=30.0)
# A bound on close() that only a hang would exceed (never a timing assertion).
CLOSE_BOUND_S = 10.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("threads") / "ds", images=5)


@pytest.fixture(scope="module")
def expected(dataset: Path) -> list:
    return epochs_with_a_break("baseline", dataset, CFG)


def our_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


@pytest.fixture(autouse=True)
def no_thread_left():
    assert our_threads() == []
    yield
    assert our_threads() == [], "a test left worker threads running"


@pytest.mark.parametrize("workers", [1, 2, 8])
@pytest.mark.parametrize("prefetch", [1, 2])
def test_matches_baseline(dataset: Path, expected: list, workers: int, prefetch: int) -> None:
    assert_same_batches(
        epochs_with_a_break("threads", dataset, CFG.replace(workers=workers, prefetch=prefetch)), expected
    )


def test_start_method_does_not_matter(dataset: Path, expected: list) -> None:
    assert_same_batches(epochs_with_a_break("threads", dataset, CFG.replace(start_method="spawn")), expected)


@pytest.mark.parametrize(("workers", "prefetch"), [(1, 1), (2, 3), (3, 1)])
def test_window_bounds_images_in_flight(dataset: Path, workers: int, prefetch: int) -> None:
    window = workers * prefetch
    with make_generator("threads", dataset, CFG, workers=workers, prefetch=prefetch) as gen:
        assert gen.window == window and len(gen.worker_threads()) == workers
        seen = []
        fill = gen._fill

        def spy() -> None:
            fill()
            seen.append(gen.in_flight)

        gen._fill = spy
        for epoch in range(3):
            for i, _ in enumerate(gen):
                if epoch == 1 and i == 1:
                    break  # abandon an epoch with the window full
        assert min(window, 5) <= max(seen) <= window and min(seen) >= 0  # 5 images an epoch
        assert gen.in_flight == 0  # every buffer came back, the abandoned epoch's too
        assert len(gen._stock) <= window  # at most one buffer per image in flight, recycled


def test_breaks_in_a_row_and_len(dataset: Path) -> None:
    with make_generator("threads", dataset, CFG, workers=2, prefetch=3) as gen:
        assert len(gen) == 15
        next(iter(gen))
        iter(gen)  # epoch 1, abandoned before its first batch
        out = [(d.copy(), m.copy()) for d, m in gen]  # for calls iter(): epoch 2
        assert len(out) == len(gen) == 15 and gen.epoch == 2
        assert gen.worker_pids() == []  # threads: no other process
    with make_generator("baseline", dataset, CFG, epoch=2) as base:
        assert_same_batches([out], [list(base)])


def test_torch_output(dataset: Path, expected: list) -> None:
    import torch

    with make_generator("threads", dataset, CFG, output="torch") as gen:
        out = list(gen)
    assert all(isinstance(d, torch.Tensor) and d.dtype == torch.uint16 for d, _ in out)
    assert_same_batches([[(d.numpy(), m.numpy()) for d, m in out]], expected[:1])


def test_corrupt_image_mid_epoch_names_the_file(tmp_path: Path) -> None:
    bad = write_corrupt_dataset(tmp_path)
    with make_generator("threads", tmp_path, CFG, batch_size=4, shuffle=False) as gen:
        seen = 0
        with pytest.raises(WorkerError) as info:
            for _ in gen:
                seen += 1
        assert gen.closed
    assert seen == 4  # 16 of the good images' 18 tiles (3 x 3 of 16 px each); the fifth batch needs c.tif
    error = info.value
    assert str(bad) in str(error) and f"worker {error.worker_id} (pid {os.getpid()}) raised DatasetError" in str(error)
    # The cause is the exception itself; its traceback runs through the worker thread.
    assert isinstance(error.__cause__, DatasetError) and str(bad) in str(error.__cause__)
    frames = [frame.name for frame in traceback.extract_tb(error.__cause__.__traceback__)]
    assert "_serve" in frames and "process" in frames


def test_stuck_thread_raises_timeout(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    process = ImageProcessor.process

    def stuck(self, job, *args):
        if job.position == 1:
            release.wait(CLOSE_BOUND_S)  # a hung read, until the test lets it go
        return process(self, job, *args)

    monkeypatch.setattr(ImageProcessor, "process", stuck)
    gen = make_generator("threads", dataset, CFG, timeout=0.5)
    try:
        with pytest.raises(WorkerTimeoutError, match="image 1 of epoch 0"):
            list(gen)
        assert gen.closed
    finally:
        release.set()
    for thread in gen.worker_threads():
        thread.join(CLOSE_BOUND_S)
