"""LoaderConfig.prefetch_next_epoch: the workers start the next epoch while the loop finishes this one.

What it must keep: the same batches as the baseline, epoch after epoch, across an early
``break`` (the images begun early belong to the next epoch by the plan, whatever the loop
does in between), and a ``close()`` that releases everything with next-epoch work in
flight. What it must do: start that work before the next ``iter()``, counted in images
the workers start (the ``tiles.start`` injection point), not in time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest
from conftest import assert_same_batches, epochs_with_a_break, write_dataset

from strategies import STRATEGIES, LoaderConfig, injection, make_generator
from strategies.base import offering

pytestmark = pytest.mark.timeout(120)

PREFETCHING = ("pipe", "queue", "shm", "shm_zerocopy", "threads")
STARTED_DIR_ENV = "IPCBENCH_TEST_STARTED_IMAGES"
IMAGES = 6


def config(**overrides) -> LoaderConfig:
    base = {"batch_size": 5, "tile": 16, "workers": 2, "prefetch": 2, "start_method": "fork", "timeout": 20.0}
    return LoaderConfig(**{**base, **overrides})


def record_start(job) -> None:
    """Injection action (in a worker process or thread): one file per image started."""
    (Path(os.environ[STARTED_DIR_ENV]) / f"{os.getpid()}-{time.monotonic_ns()}-{job.position}").touch()


def started(folder: Path) -> int:
    return len(os.listdir(folder))


def test_the_strategies_that_offer_it_are_the_documented_ones() -> None:
    assert tuple(offering("prefetches_next_epoch")) == PREFETCHING
    for name, cls in STRATEGIES.items():
        assert cls.prefetches_next_epoch == (name in PREFETCHING), name


@pytest.mark.parametrize("name", PREFETCHING)
def test_same_batches_as_the_baseline_across_epochs_and_an_early_break(name: str, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    reference = epochs_with_a_break("baseline", dataset, config())
    assert_same_batches(reference, epochs_with_a_break(name, dataset, config(prefetch_next_epoch=True)))


@pytest.mark.parametrize("name", PREFETCHING)
def test_the_next_epochs_images_are_started_before_the_next_iter(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    folder = tmp_path / "started"
    folder.mkdir()
    monkeypatch.setenv(STARTED_DIR_ENV, str(folder))
    # Worker processes arm it from the environment (fork: they inherit this test module, which the spec
    # names); threads run in this process, which arms nothing from the environment: armed here, then disarmed.
    monkeypatch.setenv(injection.ENV, injection.spec({"tiles.start": f"{__name__}:record_start"}))
    in_process = name == "threads"
    if in_process:
        injection.arm("tiles.start", record_start)
    try:
        counts = count_starts(name, dataset, folder)
    finally:
        if in_process:
            injection.disarm()
    assert counts[False] == IMAGES, "without the option, the next epoch starts only at iter()"
    assert IMAGES < counts[True] <= IMAGES + config().workers * config().prefetch, counts


def count_starts(name: str, dataset: Path, folder: Path) -> dict[bool, int]:
    """Images started by the end of epoch 0 (and a moment after), without and with the option."""
    counts = {}
    for ahead in (False, True):
        for stale in folder.iterdir():
            stale.unlink()
        with make_generator(name, dataset, config(prefetch_next_epoch=ahead)) as gen:
            batches = sum(1 for _ in gen)  # epoch 0, whole
            assert batches == len(gen)
            deadline = time.monotonic() + 10.0
            while ahead and started(folder) <= IMAGES and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)  # without the option, nothing more may start: give a stray start the time to show
            counts[ahead] = started(folder)
            assert sum(1 for _ in gen) == batches  # epoch 1 is whole either way
    return counts


@pytest.mark.parametrize("name", ("pipe", "queue", "shm", "shm_zerocopy"))
def test_close_with_next_epoch_work_in_flight_releases_every_worker(name: str, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    gen = make_generator(name, dataset, config(prefetch_next_epoch=True))
    for _ in gen:
        pass
    assert gen.in_flight > 0, "the next epoch's first images should be in flight"
    pids = gen.worker_pids()
    gen.close()
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive
    # /dev/shm is checked by the autouse fixture (conftest.dev_shm_unchanged)


@pytest.mark.parametrize("name", ("baseline", "torch"))
def test_a_strategy_that_cannot_is_refused_by_name(name: str, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    offered = "pipe, queue, shm, shm_zerocopy, threads"
    with pytest.raises(ValueError, match=rf"not offered by the {name} strategy.*{offered}"):
        make_generator(name, dataset, config(prefetch_next_epoch=True))


def test_the_option_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="prefetch_next_epoch=1 must be a bool"):
        config(prefetch_next_epoch=1)
