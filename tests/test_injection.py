"""The fault injection points (strategies.injection): armed by name, reached where they say.

The fault matrix breaks workers at these points; if a refactoring moved the code
around one without keeping its ``hit``, the matrix's fault would silently stop
striking. So each point is armed here with a recorder and must be reached.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import write_dataset

from strategies import LoaderConfig, injection, make_generator

RECORD_DIR_ENV = "IPCBENCH_TEST_INJECTION_RECORDS"


def _record(point: str) -> None:
    folder = Path(os.environ[RECORD_DIR_ENV])
    (folder / f"{point}-{os.getpid()}").touch()


# The recorders, one per point (an action gets the point's context, not its name).
def at_worker_start(worker_id: int) -> None:
    _record("worker.start")


def at_pipe_pixels(conn: Any, data: Any) -> None:
    _record("pipe.pixels")


def at_queue_result(results: Any, result: Any) -> None:
    _record("queue.result")


def at_tiles_start(job: Any) -> None:
    _record("tiles.start")


def at_tiles_row(job: Any, index: int) -> None:
    assert 0 <= index < job.n_tiles
    _record("tiles.row")


def at_tiles_done(job: Any) -> None:
    _record("tiles.done")


RECORDERS = {
    "worker.start": "at_worker_start",
    "pipe.pixels": "at_pipe_pixels",
    "queue.result": "at_queue_result",
    "tiles.start": "at_tiles_start",
    "tiles.row": "at_tiles_row",
    "tiles.done": "at_tiles_done",
}


def test_every_point_has_a_recorder() -> None:
    assert set(RECORDERS) == set(injection.POINTS)


def test_an_unknown_point_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown injection point 'tiles\.middle'"):
        injection.arm("tiles.middle", print)
    with pytest.raises(ValueError, match="unknown injection point"):
        injection.spec({"nowhere": "module:function"})


@pytest.mark.parametrize(
    ("strategy", "points"),
    [
        ("pipe", {"worker.start", "pipe.pixels", "tiles.start", "tiles.row", "tiles.done"}),
        ("queue", {"worker.start", "queue.result", "tiles.start", "tiles.row", "tiles.done"}),
        ("shm", {"worker.start", "tiles.start", "tiles.row", "tiles.done"}),
        ("shm_zerocopy", {"worker.start", "tiles.start", "tiles.row", "tiles.done"}),
    ],
)
def test_workers_arm_from_the_environment_and_reach_every_point(
    strategy: str, points: set[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = write_dataset(tmp_path / "ds", images=3)
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setenv(RECORD_DIR_ENV, str(records))
    # fork: the workers inherit this test module, which the spec names
    monkeypatch.setenv(injection.ENV, injection.spec({p: f"{__name__}:{f}" for p, f in RECORDERS.items()}))
    config = LoaderConfig(batch_size=7, tile=16, workers=2, prefetch=2, start_method="fork", timeout=20.0)
    with make_generator(strategy, dataset, config) as gen:
        assert sum(1 for _ in gen) == len(gen)
    reached = {name.rsplit("-", 1)[0] for name in os.listdir(records)}
    assert reached == points
    assert all(int(name.rsplit("-", 1)[1]) != os.getpid() for name in os.listdir(records)), "the main process armed"


def test_nothing_is_armed_in_the_main_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline works in the main process: an armed environment must not break it."""
    dataset = write_dataset(tmp_path / "ds", images=2)
    monkeypatch.setenv(injection.ENV, injection.spec({"tiles.start": "harness.faults.injected:failing_init"}))
    with make_generator("baseline", dataset, batch_size=7, tile=16) as gen:
        assert sum(1 for _ in gen) == len(gen)
