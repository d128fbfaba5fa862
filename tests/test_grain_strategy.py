"""The ``grain`` strategy: Grain's ``mp_prefetch`` behind the BatchGenerator contract.

What the shared suites do not check: bit-identical batches for several worker counts
and prefetch depths (and both payloads), across epochs, an early break (a jump with
``set_state``) and a conversion; the default payload is grain's own transport (the
images arrive as grain's ``SharedMemoryArray``, in segments named after a worker);
the same worker processes throughout; no segment (``ipcbench_*_grain``, ``psm_*``)
left after close(), after a worker is killed, after the main process is killed; a
quiet stderr (no "leaked shared_memory", no ``__del__`` noise, no absl profiler
warning); the grain attributes the strategy reaches into still exist; and ``import
strategies`` does not import grain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_batches, epochs_with_a_break, write_corrupt_dataset, write_dataset
from faults_helpers import read_report, run_scenario, start_scenario, wait_until_gone

from strategies import (
    LoaderConfig,
    RemoteTraceback,
    WorkerDiedError,
    WorkerError,
    WorkerTimeoutError,
    internals,
    make_generator,
)
from strategies.grain_loader import GrainGenerator

pytest.importorskip("grain")
pytestmark = pytest.mark.timeout(120)

# 5 images of 2 x 70 x 90, tile 16: 20 tiles an image, 15 batches of 7 an epoch.
CFG = LoaderConfig(batch_size=7, tile=16, workers=2, prefetch=2, timeout=30.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("grain") / "ds", images=5, classes=True)


@pytest.fixture(scope="module")
def expected(dataset: Path) -> list:
    return epochs_with_a_break("baseline", dataset, CFG)


def ours() -> set[str]:
    """Segments grain or this strategy could leave: ``psm_*`` (grain's own), ``ipcbench_*_grain``."""
    return {n for n in os.listdir("/dev/shm") if n.startswith("psm_") or n.endswith("_grain")}


def test_import_strategies_does_not_import_grain() -> None:
    code = "import sys, strategies; print('grain' in sys.modules, 'strategies.grain_loader' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.parametrize(("workers", "prefetch"), [(1, 1), (2, 2), (3, 1)])
def test_matches_baseline(dataset: Path, expected: list, workers: int, prefetch: int) -> None:
    before = ours()
    assert_same_batches(
        epochs_with_a_break("grain", dataset, CFG.replace(workers=workers, prefetch=prefetch)), expected
    )
    assert ours() - before == set()


def test_segment_payload_matches_baseline(dataset: Path, expected: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GrainGenerator, "payload", "segment")
    before = ours()
    assert_same_batches(epochs_with_a_break("grain", dataset, CFG), expected)
    assert ours() - before == set()


def test_images_travel_in_grains_shared_memory_named_after_a_worker(dataset: Path) -> None:
    from grain._src.python.ipc.shared_memory_array import SharedMemoryArray

    with make_generator("grain", dataset, CFG) as gen:
        assert gen.payload == "arrays"
        next(gen)
        # The assembler gets plain ndarray views (their slices run no grain __del__ on the
        # main thread, where it would swallow a Ctrl-C); their bases are grain's arrays.
        data, masks = gen._current.data.base, gen._current.masks.base
        assert type(gen._current.data) is np.ndarray and type(gen._current.masks) is np.ndarray
        assert isinstance(data, SharedMemoryArray) and isinstance(masks, SharedMemoryArray)
        name = data.shm.name  # the main process's own mapping, made by grain's open_from_shm
        pid = int(name.split("_")[1])
        assert name.startswith("ipcbench_") and name.endswith("_grain") and pid in gen.worker_pids()
        assert not [n for n in ours() if n.startswith("psm_")]
        del data, masks


def test_conversion_matches_numpy(dataset: Path, expected: list) -> None:
    scale = 1 / 65535
    got = epochs_with_a_break("grain", dataset, CFG.replace(dtype="float32", scale=scale))
    want = [[(d.astype(np.float32) * np.float32(scale), m) for d, m in epoch] for epoch in expected]
    assert_same_batches(got, want)


def test_same_workers_across_epochs_and_jumps(dataset: Path) -> None:
    with make_generator("grain", dataset, CFG) as gen:
        pids = gen.worker_pids()
        for stop in (None, 2, 0, None, 14):
            it = iter(gen)
            for i, _ in enumerate(it):
                if stop is not None and i + 1 >= stop:
                    break
            assert gen.worker_pids() == pids
        assert sum(1 for _ in gen) == len(gen) == 15
        # The stride: an epoch's elements, whatever the epoch's own job count.
        assert gen._stride == 5 and gen.epoch == 5
        # The whole-epoch ones needed no jump; the broken ones did, without new workers.
        assert gen.stage_times()["compute"] > 0
    assert wait_until_gone(pids) == []


def test_the_grain_attributes_the_strategy_uses_exist(dataset: Path) -> None:
    from grain._src.python.ipc import shared_memory_array

    with make_generator("grain", dataset, CFG) as gen:
        next(gen)
        iterator = gen._state.iterator
        slot = internals.grain_slots(iterator)[0]
        objects = {
            "grain interleave iterator": iterator,
            "grain slot iterator": slot,
            "grain worker iterator": internals.grain_worker_iterator(slot),
            "queue.Queue()": internals.grain_thread_buffer(slot),
            "grain shared_memory_array module": shared_memory_array,
            "grain SharedMemoryArray": shared_memory_array.SharedMemoryArray,
        }
        assert set(objects) == {where for where, _ in internals.GRAIN_REQUIRED}
        assert internals.missing(objects, internals.GRAIN_REQUIRED) == []


def test_worker_error_carries_its_traceback(tmp_path: Path) -> None:
    bad = write_corrupt_dataset(tmp_path)
    before = ours()
    with make_generator("grain", tmp_path, CFG, batch_size=4, shuffle=False) as gen:
        pids = gen.worker_pids()
        with pytest.raises(WorkerError) as info:
            for _ in gen:
                pass
        assert gen.closed
    assert str(bad) in str(info.value) and "DatasetError" in str(info.value)
    assert info.value.pid in pids and not isinstance(info.value, WorkerDiedError)
    assert isinstance(info.value.__cause__, RemoteTraceback) and "work.py" in info.value.__cause__.tb
    assert wait_until_gone(pids) == [] and ours() - before == set()


def test_killed_worker_is_reported_and_leaves_no_segment(dataset: Path) -> None:
    before = ours()
    gen = make_generator("grain", dataset, CFG)
    next(gen)
    pids = gen.worker_pids()
    os.kill(pids[1], signal.SIGKILL)
    assert wait_until_gone(pids[1:]) == []
    start = time.monotonic()
    with pytest.raises(WorkerDiedError, match=f"grain worker 1 \\(pid {pids[1]}\\) was killed by signal 9") as info:
        # Whole epochs: the killed worker may have read ahead every image of its share of this one,
        # so this epoch can end cleanly; the next one needs it.
        for _ in range(3):
            for _ in gen:
                pass
    assert time.monotonic() - start < 5.0  # its sentinel, not the 30 s timeout
    assert info.value.exitcode == -signal.SIGKILL and gen.closed
    assert wait_until_gone(pids) == [] and ours() - before == set()


def test_stopped_worker_times_out(dataset: Path) -> None:
    gen = make_generator("grain", dataset, CFG, workers=1, prefetch=1, timeout=1.0)
    pids = gen.worker_pids()
    os.kill(pids[0], signal.SIGSTOP)
    try:
        with pytest.raises(WorkerTimeoutError, match="within timeout=1s"):
            list(gen)
        assert gen.closed and wait_until_gone(pids) == []
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def test_normal_run_leaves_stderr_clean(dataset: Path) -> None:
    result = run_scenario(
        "clean", strategy="grain", dataset=str(dataset), config={"batch_size": 7, "tile": 16}, timeout_s=60.0
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"stderr is not empty:\n{result.stderr}"


def test_main_process_killed_leaves_nothing(tmp_path: Path) -> None:
    big = write_dataset(tmp_path / "big", images=6, height=256, width=320)
    before = ours()
    proc = start_scenario("iterate", strategy="grain", dataset=str(big), config={"batch_size": 16, "tile": 16})
    ready: dict = {}
    try:
        ready = read_report(proc, 60.0)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        survivors = wait_until_gone(ready["pids"] + ready["infrastructure"], timeout_s=5.0)
        deadline = time.monotonic() + 5.0
        while (left := ours() - before) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert survivors == [], "processes outlived their main process"
    assert left == set(), "segments outlived their main process"
