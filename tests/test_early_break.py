"""An early break skips the abandoned epoch's queued work: counted in images processed, not in time.

The ``queue`` strategy puts a window of jobs on its task queue; after a ``break`` the
main process raises ``oldest_wanted`` so that a worker answers the abandoned jobs
still queued with ``Skipped`` instead of processing them. The workers record every
image they start (the ``tiles.start`` injection point), slowly, so that the whole
window is still queued when the loop breaks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import write_dataset

from strategies import LoaderConfig, injection, make_generator

STARTED_DIR_ENV = "IPCBENCH_TEST_STARTED_IMAGES"
IMAGES = 10


def record_slowly(job) -> None:
    """Injection action (in the workers): one file per image started, then a pause."""
    (Path(os.environ[STARTED_DIR_ENV]) / f"{os.getpid()}-{time.monotonic_ns()}-{job.position}").touch()
    time.sleep(0.05)


def test_an_early_break_skips_the_jobs_still_queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    started = tmp_path / "started"
    started.mkdir()
    monkeypatch.setenv(STARTED_DIR_ENV, str(started))
    # fork: the workers inherit this test module, which the spec names
    monkeypatch.setenv(injection.ENV, injection.spec({"tiles.start": f"{__name__}:record_slowly"}))
    # One worker with every image of the epoch in its window: after the break, all but the
    # one or two it is working on are still on the task queue.
    config = LoaderConfig(batch_size=4, tile=16, workers=1, prefetch=IMAGES, start_method="fork", timeout=20.0)
    with make_generator("queue", dataset, config) as gen:
        for _ in gen:
            break  # abandon the first epoch after one batch
        assert sum(1 for _ in gen) == len(gen)  # the next epoch, whole
    processed = len(os.listdir(started))
    # The second epoch processed every image; the first only those begun before the break.
    assert IMAGES < processed <= IMAGES + 3, f"{processed} images processed for 1 batch + 1 epoch of {IMAGES}"
