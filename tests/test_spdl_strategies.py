"""The SPDL strategies (``spdl``: a process-pool pipeline; ``spdl_arena``: one subprocess and a segment pool).

What SPDL does by itself, which these strategies must not let through (measured,
recorded in the modules' docstrings): a failed item is logged and dropped, a killed
worker ends the epoch early without an error, the stock segment pool's resource
tracker prints a ``KeyError`` per segment at exit, ``iterate_in_subprocess`` fails
under forkserver. Here: a failure is an error, never a missing batch; nothing (process,
segment, semaphore) outlives ``close()``, a killed worker or a killed main process;
workers persist across epochs; stderr stays clean. The common contract suites
(equivalence, lifecycle, programs, the fault matrix) run both strategies as well.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_corrupt_dataset, write_dataset
from faults_helpers import (
    alive,
    children,
    existing_segments,
    kill_survivors,
    leftover_children,
    read_report,
    segment_names,
    start_scenario,
    wait_segments_gone,
    wait_until_gone,
)

from strategies import (
    LoaderClosedError,
    LoaderConfig,
    RemoteTraceback,
    WorkerDiedError,
    WorkerError,
    WorkerTimeoutError,
    internals,
    make_generator,
)
from strategies.constants import KILL_GRACE_S, STOP_GRACE_S, TERMINATE_GRACE_S

pytestmark = pytest.mark.timeout(90)

SPDL = ("spdl", "spdl_arena")
CFG = LoaderConfig(batch_size=7, tile=16, seed=0, workers=2, prefetch=2, start_method="fork", timeout=10.0)
CLOSE_BOUND_S = STOP_GRACE_S + TERMINATE_GRACE_S + KILL_GRACE_S + 2.0
STDERR_NOISE = ("Traceback", "KeyError", "resource_tracker", "leaked", "Warning", "never awaited", "Task [")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("spdl"), images=5, classes=True)


@pytest.fixture(scope="module")
def big_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("spdl-big"), images=6, height=256, width=320, classes=True)


def epochs(gen: Any, n: int = 2) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    return [[(np.array(d), np.array(m)) for d, m in gen] for _ in range(n)]


def assert_equal(a: list, b: list) -> None:
    assert [len(e) for e in a] == [len(e) for e in b]
    for ea, eb in zip(a, b, strict=True):
        for (da, ma), (db, mb) in zip(ea, eb, strict=True):
            assert da.dtype == db.dtype and np.array_equal(da, db) and np.array_equal(ma, mb)


def test_import_strategies_does_not_import_spdl() -> None:
    code = "import sys, strategies; assert strategies.STRATEGIES['spdl'].requires; print('spdl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_every_private_spdl_attribute_the_strategies_use_exists() -> None:
    """``internals.SPDL_REQUIRED`` against live objects of the installed SPDL (stock pool, real subprocess)."""
    from functools import partial
    from multiprocessing import resource_tracker

    from spdl.pipeline import SharedMemorySegmentPool, iterate_in_subprocess

    pool = SharedMemorySegmentPool(4096, 1)
    iterable = iterate_in_subprocess(partial(range, 3), mp_context="fork")
    try:
        interface = internals.subprocess_interface(iterable)
        assert list(iterable) == [0, 1, 2]
        objects = {
            "iterate_in_subprocess()": iterable,
            "iterate_in_subprocess()._interface": interface,
            "SharedMemorySegmentPool()": pool,
        }
        assert {where for where, _ in internals.SPDL_REQUIRED} == set(objects)
        assert internals.missing(objects, internals.SPDL_REQUIRED) == []
    finally:
        interface.terminate()
        names = [pool._ctrl_name, *pool._seg_names]
        pool.close()
        for name in names:  # not pool.unlink(): the stock pool unregisters twice (the KeyError noise)
            internals.shm_unlink(name)
            resource_tracker.unregister("/" + name, "shared_memory")


@pytest.mark.parametrize(
    ("strategy", "start_method", "workers", "prefetch"),
    [(s, m, w, p) for s in SPDL for m, w, p in (("fork", 1, 1), ("spawn", 2, 1), ("forkserver", 2, 2))],
)
def test_bit_identical_to_baseline_with_early_break(
    strategy: str, start_method: str, workers: int, prefetch: int, dataset: Path
) -> None:
    config = CFG.replace(start_method=start_method, workers=workers, prefetch=prefetch)
    with make_generator("baseline", dataset, config) as gen:
        expected = epochs(gen)
        next(iter(gen))  # an epoch abandoned after one batch,
        iter(gen)  # one abandoned unread,
        expected += epochs(gen, 1)  # then a whole one
    with make_generator(strategy, dataset, config) as gen:
        pids = gen.worker_pids()
        got = epochs(gen)
        next(iter(gen))
        iter(gen)
        got += epochs(gen, 1)
        assert gen.worker_pids() == pids and all(alive(p) for p in pids)
        assert gen.stage_times()["compute"] > 0, "the workers' compute time reaches the main process"
    assert_equal(expected, got)
    assert wait_until_gone(pids) == []


@pytest.mark.parametrize("strategy", SPDL)
def test_a_failed_item_is_an_error_never_a_dropped_batch(strategy: str, tmp_path: Path) -> None:
    bad = write_corrupt_dataset(tmp_path / "ds")
    config = CFG.replace(batch_size=4, shuffle=False, workers=1, prefetch=1)
    with make_generator("baseline", tmp_path / "ds", config) as gen:
        total = len(gen)
    gen = make_generator(strategy, tmp_path / "ds", config)
    pids, segments = gen.worker_pids(), segment_names(gen)
    seen = 0
    with pytest.raises(WorkerError) as info:
        for _ in gen:
            seen += 1
    assert seen < total, "the epoch went on past the failed image"
    assert str(bad) in str(info.value) and f"(pid {pids[0]})" in str(info.value)
    assert isinstance(info.value.__cause__, RemoteTraceback) and "DatasetError" in info.value.__cause__.tb
    assert gen.closed
    with pytest.raises(LoaderClosedError):
        next(gen)
    assert wait_until_gone(pids) == [] and existing_segments(segments) == []


@pytest.mark.parametrize("strategy", SPDL)
def test_killed_worker_mid_epoch_is_an_error_and_nothing_is_left(strategy: str, big_images: Path) -> None:
    before = children()
    gen = make_generator(strategy, big_images, CFG.replace(batch_size=16))
    pids, segments = gen.worker_pids(), segment_names(gen)
    assert (len(segments) > 0) == (strategy == "spdl_arena")
    next(gen)
    os.kill(pids[0], signal.SIGKILL)
    killed_at = time.monotonic()
    with pytest.raises(WorkerDiedError, match=rf"\(pid {pids[0]}\) was killed by signal 9"):
        while True:
            next(gen)
    assert time.monotonic() - killed_at < CLOSE_BOUND_S, "a dead worker must be found at once, not at the timeout"
    assert gen.closed
    assert wait_until_gone(pids) == [] and existing_segments(segments) == []
    assert leftover_children(before) == []


@pytest.mark.parametrize("strategy", SPDL)
def test_stopped_worker_times_out_and_close_is_bounded(strategy: str, big_images: Path) -> None:
    gen = make_generator(strategy, big_images, CFG.replace(batch_size=16, workers=1, timeout=1.5))
    pids, segments = gen.worker_pids(), segment_names(gen)
    try:
        next(gen)
        time.sleep(0.3)  # the window fills
        os.kill(pids[0], signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(WorkerTimeoutError):
            for _ in range(10):  # what was done before the stop comes first, then the wait
                for _ in gen:
                    pass
        assert time.monotonic() - started < 1.5 + CLOSE_BOUND_S
    finally:
        kill_survivors(pids)
    assert wait_until_gone(pids) == [] and existing_segments(segments) == []


@pytest.mark.parametrize("strategy", SPDL)
def test_main_process_killed_leaves_nothing(strategy: str, big_images: Path) -> None:
    proc = start_scenario("iterate", strategy=strategy, dataset=str(big_images), config={"batch_size": 16, "tile": 16})
    ready: dict[str, Any] = {}
    try:
        ready = read_report(proc, 60)
        assert (len(ready["segments"]) > 0) == (strategy == "spdl_arena")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        survivors = wait_until_gone(ready["pids"] + ready["infrastructure"], timeout_s=5.0)
        left = wait_segments_gone(ready["segments"], timeout_s=5.0)
    finally:
        proc.kill()
        kill_survivors(ready.get("pids", []) + ready.get("infrastructure", []))
        stderr = proc.communicate(timeout=60)[1]
        for name in existing_segments(ready.get("segments", [])):
            os.unlink(os.path.join("/dev/shm", name))
    assert survivors == [], f"processes outlived their main process: {survivors}; stderr:\n{stderr}"
    assert left == [], f"segments outlived their main process: {left}; stderr:\n{stderr}"


STDERR_PROGRAM = """
import os, signal, sys
from strategies import make_generator, WorkerDiedError

def main(root, start_method):
    for name in ("spdl", "spdl_arena"):
        with make_generator(name, root, batch_size=7, tile=16, start_method=start_method) as gen:
            for _ in range(2):
                for _ in gen:
                    pass
            for _ in gen:
                break
            iter(gen)
            batch = next(gen)  # kept past close(): its memory is a copy
        gen = make_generator(name, root, batch_size=7, tile=16, start_method=start_method)
        next(gen)
        os.kill(gen.worker_pids()[0], signal.SIGKILL)
        try:
            for _ in range(20):  # found mid-epoch, or at the next epoch's start
                for _ in gen:
                    pass
        except WorkerDiedError:
            pass
    print("done", batch[0].shape)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
"""


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_stderr_stays_clean(start_method: str, dataset: Path, tmp_path: Path) -> None:
    """No resource-tracker KeyError, no SPDL task tracebacks, no warnings: through epochs, breaks and a dead worker."""
    script = tmp_path / "program.py"
    script.write_text(STDERR_PROGRAM)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, str(script), str(dataset), start_method],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert out.returncode == 0 and out.stdout.startswith("done"), out.stderr
    noise = [marker for marker in STDERR_NOISE if marker in out.stderr]
    assert not noise, f"stderr shows {noise}:\n{out.stderr}"


def test_a_result_left_half_written_by_a_killed_worker_does_not_block_close_or_exit(dataset: Path) -> None:
    """A worker SIGKILLed while writing its result leaves the executor's manager thread
    reading the rest for ever (the pipe stays open through this process's own write end),
    and concurrent.futures joins that thread at interpreter exit. close() must end it.

    Made deterministic: a length header promising more bytes than follow is written
    into the result pipe, as a worker killed mid-write leaves it; then every worker dies.
    """
    import struct

    from strategies.internals import executor_channels, queue_writer

    gen = make_generator("spdl", dataset, CFG)
    next(gen)
    state = gen._state
    _, result_queue, manager = executor_channels(state.executor)
    writer = queue_writer(result_queue)
    writer._send(struct.pack("!i", 1 << 20) + b"half")  # a header for 1 MiB, then 4 bytes
    pids = gen.worker_pids()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(WorkerDiedError):
        for _ in range(20):
            for _ in gen:
                pass
    gen.close()
    assert time.monotonic() - start < CLOSE_BOUND_S
    assert manager is None or not manager.is_alive(), "the executor's manager thread would block interpreter exit"
    assert wait_until_gone(pids) == []


def test_a_pipeline_failure_from_a_worker_killed_at_the_end_of_an_epoch_names_the_dead_worker(dataset: Path) -> None:
    """A killed worker fails the epoch's pipeline before its exit code shows. The failure
    found when the epoch ends is raised at the next one, and it must name the dead worker
    (WorkerDiedError), not only the pipeline: the death shows a moment after the failure."""
    with make_generator("spdl", dataset, CFG) as gen:
        next(iter(gen))
        pid = gen.worker_pids()[0]
        gen._kept_failure = RuntimeError("pipeline stages failed (1 sub-exception)")  # as its stop reported
        killer = threading.Timer(KILL_GRACE_S / 4, os.kill, (pid, signal.SIGKILL))  # the death shows after
        killer.start()
        try:
            with pytest.raises(WorkerDiedError) as info:
                next(iter(gen))
        finally:
            killer.join()
        assert info.value.pid == pid, info.value
        assert "was waiting for the end of epoch 0" in str(info.value)
