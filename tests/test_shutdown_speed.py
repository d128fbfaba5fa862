"""close() takes the polite path when it can, and skips waits that cannot help.

The lifecycle and fault suites bound close() by the sum of all its graces (the
contract's worst case). These tests tell the paths apart; the figures are 3 runs on
this 2-core machine with two other test suites running beside them:

- an orderly close with results still in flight (workers blocked writing images
  larger than a pipe holds) drains the pipes so the workers can exit on ``Stop``:
  0.009-0.023 s; without the drain the queue's workers cannot exit and close() waits
  ``STOP_GRACE_S`` (3 s) before terminating them;
- a pool broken by a dead worker skips the ``STOP_GRACE_S`` wait (a survivor would
  not answer a ``Stop`` in time anyway): the error and the close 0.007-0.026 s, against
  3 s when the wait is not skipped.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import write_dataset

from harness.faults.matrix import CLOSE_BOUND_S, judge_error
from strategies import STRATEGIES, LoaderConfig, WorkerDiedError, make_generator
from strategies.constants import STOP_GRACE_S

OURS = tuple(name for name, cls in STRATEGIES.items() if cls.worker_processes and name != "torch")
# Half the grace: far above what the polite path takes, far below what waiting the grace takes.
POLITE_BOUND_S = STOP_GRACE_S / 2


@pytest.fixture(scope="module")
def big_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 320 tiles of 16 px an image: 400 KiB, more than a pipe (64 KiB) or a socket pair holds.
    return write_dataset(tmp_path_factory.mktemp("big"), images=6, height=256, width=320)


@pytest.mark.parametrize("strategy", OURS)
def test_a_close_with_results_in_flight_drains_and_is_quick(strategy: str, big_images: Path) -> None:
    config = LoaderConfig(batch_size=7, tile=16, workers=2, prefetch=3, start_method="fork", timeout=30.0)
    gen = make_generator(strategy, big_images, config)
    try:
        next(iter(gen))
        time.sleep(0.3)  # the workers finish their images and block writing them
    finally:
        start = time.monotonic()
        gen.close()
        took = time.monotonic() - start
    assert took < POLITE_BOUND_S, f"{strategy}: close() took {took:.2f} s with results in flight"


@pytest.mark.parametrize("strategy", OURS)
def test_a_broken_pool_closes_without_waiting_the_stop_grace(strategy: str, big_images: Path) -> None:
    config = LoaderConfig(batch_size=7, tile=16, workers=2, prefetch=2, start_method="fork", timeout=30.0)
    gen = make_generator(strategy, big_images, config)
    try:
        it = iter(gen)
        next(it)
        os.kill(gen.worker_pids()[0], signal.SIGKILL)
        start = time.monotonic()
        # The error closes the generator (a failure closes it): time the error and the close together.
        with pytest.raises(WorkerDiedError):
            for _ in range(10):  # the next epochs ask the dead worker for sure
                for _ in it:
                    pass
                it = iter(gen)
    finally:
        gen.close()
        took = time.monotonic() - start
    assert took < POLITE_BOUND_S, f"{strategy}: the error and close() of a broken pool took {took:.2f} s"


def test_the_fault_matrix_flags_an_error_that_came_after_timeout_and_close() -> None:
    result = {
        "error_type": "WorkerTimeoutError",
        "error_bases": ["WorkerTimeoutError", "WorkerError"],
        "error_message": "shm worker 0 (pid 123) ...",
        "pids": [123],
        "traceback": None,
    }
    timeout_s = 2.0  # hang_ignoring_sigterm's configured timeout
    late = judge_error("hang_ignoring_sigterm", "shm", {**result, "time_to_error_s": timeout_s + CLOSE_BOUND_S + 0.5})
    assert late == [f"the error took {timeout_s + CLOSE_BOUND_S + 0.5:.1f} s (timeout 2 s + close {CLOSE_BOUND_S:g} s)"]
    in_time = judge_error("hang_ignoring_sigterm", "shm", {**result, "time_to_error_s": timeout_s + 1.0})
    assert in_time == []
