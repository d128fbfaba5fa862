"""Fault tests: break a multi-process generator on purpose, check the error and the clean-up.

docs/design.md section 8: the error (if any) surfaces within the timeout as the right
:class:`~strategies.WorkerError`, no process of the run is left, /dev/shm is as
before, stderr shows no worker traceback and no resource_tracker leak warning.

Scenarios, per strategy: an exception in a worker mid-epoch (a corrupt or truncated
TIFF); a worker SIGKILLed or SIGTERMed at several moments (idle, mid-epoch, blocked in
the middle of writing a result, between epochs); a worker SIGSTOPped (hung);
KeyboardInterrupt in the loop body and SIGINT to the process group; a generator
dropped without ``close()``; the main process SIGKILLed; a worker failing at
start-up; a /dev/shm too small. Scenarios that judge stderr or kill the main process
run in a subprocess (``faults_helpers.py``).
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
from conftest import write_dataset
from faults_helpers import (
    FAIL_AT_START_ENV,
    FAIL_INIT_MESSAGE,
    children,
    compress_images,
    existing_segments,
    garble_strips,
    kill_survivors,
    leftover_children,
    read_report,
    reports,
    run_scenario,
    segment_names,
    start_scenario,
    tiny_dev_shm,
    truncate_pixels,
    wait_segments_gone,
    wait_until_gone,
)

from strategies import (
    STRATEGIES,
    LoaderClosedError,
    LoaderConfig,
    RemoteTraceback,
    SharedMemorySpaceError,
    WorkerDiedError,
    WorkerError,
    WorkerTimeoutError,
    make_generator,
)
from strategies.constants import KILL_GRACE_S, STOP_GRACE_S, TERMINATE_GRACE_S

pytestmark = pytest.mark.timeout(90)

MULTI = ("pipe", "queue", "shm", "shm_zerocopy")  # our own worker processes (torch runs torch's loop)
WITH_WORKERS = tuple(name for name, cls in STRATEGIES.items() if cls.has_workers)
START_METHODS = ("fork", "spawn", "forkserver")
# batch 16 of 320-tile images: 120 batches an epoch, 20 an image.
CFG = LoaderConfig(batch_size=16, tile=16, seed=0, workers=2, prefetch=2, start_method="fork", timeout=10.0)
CLOSE_BOUND_S = STOP_GRACE_S + TERMINATE_GRACE_S + KILL_GRACE_S + 2.0  # contract + scheduling noise
# A pool broken by a dead or hung worker skips the Stop and its grace: its error and close
# take 0.003-0.041 s after a kill (24 runs on this 2-core machine, a mutation run beside
# them), so half the grace tells that path from one that waits the grace (3 s more).
BROKEN_CLOSE_S = STOP_GRACE_S / 2
SUBPROCESS_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def big_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 400 KiB of tiles an image, more than a pipe or socket pair buffers: a worker with a
    # result ready blocks in the middle of writing it, where a kill hurts most.
    return write_dataset(tmp_path_factory.mktemp("big"), images=6, height=256, width=320, classes=True)


@pytest.fixture(scope="module")
def small_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("small"), images=5, classes=True)


def finish(gen: Any, epochs: int = 2) -> int:
    """Consume the rest of the current epoch, then ``epochs`` more; return the batches seen."""
    seen = 0
    try:
        while True:
            next(gen)
            seen += 1
    except StopIteration:
        pass
    for _ in range(epochs):
        seen += sum(1 for _ in gen)
    return seen


def assert_released(gen: Any, pids: list[int], segments: list[str], before: set[int]) -> None:
    assert gen.closed, "a failed generator closes itself"
    with pytest.raises(LoaderClosedError):
        next(gen)
    assert wait_until_gone(pids) == [], "workers outlived the failure"
    assert existing_segments(segments) == [], "segments outlived the failure"
    assert leftover_children(before) == [], "child processes outlived the failure"


def assert_clean_stderr(stderr: str) -> None:
    for marker in ("resource_tracker", "leaked", "Warning", "Process ipcbench"):
        assert marker not in stderr, f"{marker!r} in stderr:\n{stderr}"


# -- an exception in a worker ---------------------------------------------------------
@pytest.mark.parametrize(
    ("strategy", "start_method", "damage"),
    [(s, "fork", d) for s in MULTI for d in ("garbled", "truncated")] + [(s, "forkserver", "garbled") for s in MULTI],
)
def test_worker_exception_surfaces_with_its_traceback(
    strategy: str, start_method: str, damage: str, tmp_path: Path
) -> None:
    root = write_dataset(tmp_path / "ds", images=6, height=128, width=160)  # 80 tiles an image
    if damage == "garbled":
        compress_images(root)  # uncompressed garbage would decode fine, as other pixels
    config = CFG.replace(start_method=start_method)
    before = children()
    gen = make_generator(strategy, root, config)
    pids, segments = gen.worker_pids(), segment_names(gen)
    # The last image of epoch 0: not dispatched while the first image (5 batches) is
    # being consumed, so it is damaged after open_dataset validated it and before any
    # worker reads it: the failure comes in the middle of the epoch.
    victim = gen.dataset.entries[gen.plan_for(0).jobs[-1].image_index].image_path
    next(gen)
    (garble_strips if damage == "garbled" else truncate_pixels)(victim)
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        finish(gen, epochs=0)
    elapsed = time.monotonic() - start
    error = info.value
    assert not isinstance(error, WorkerDiedError), "the worker reported its error: not a silent death"
    assert victim in str(error) and "DatasetError" in str(error)
    assert error.pid in pids and f"worker {error.worker_id} (pid {error.pid})" in str(error)
    assert isinstance(error.__cause__, RemoteTraceback)
    remote = error.__cause__.tb
    assert "Traceback (most recent call last)" in remote and "work.py" in remote and victim in remote
    assert elapsed < config.timeout
    assert_released(gen, pids, segments, before)


# -- a worker killed ----------------------------------------------------------------
MOMENTS = ("idle", "mid_epoch", "mid_transfer", "between_epochs")


def bring_to(gen: Any, moment: str) -> None:
    """Run ``gen`` to ``moment`` of its life."""
    if moment == "idle":
        return  # workers ready, no request yet
    next(gen)
    if moment == "mid_transfer":
        time.sleep(0.3)  # the window fills: workers block writing 400 KiB into a full pipe
    elif moment == "between_epochs":
        finish(gen, epochs=0)


@pytest.mark.parametrize(
    ("sig", "moment"),
    [(signal.SIGKILL, m) for m in MOMENTS] + [(signal.SIGTERM, m) for m in ("idle", "mid_transfer")],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else v,
)
@pytest.mark.parametrize("strategy", MULTI)
def test_killed_worker_is_reported(strategy: str, sig: signal.Signals, moment: str, big_images: Path) -> None:
    before = children()
    gen = make_generator(strategy, big_images, CFG)
    pids, segments = gen.worker_pids(), segment_names(gen)
    try:
        bring_to(gen, moment)
        os.kill(pids[0], sig)
        start = time.monotonic()
        with pytest.raises(WorkerDiedError) as info:
            finish(gen)
        # The error is raised after close(): the death is seen at once (no timeout), and
        # close() sends a survivor SIGTERM without waiting STOP_GRACE_S for it.
        took = time.monotonic() - start
        assert took < BROKEN_CLOSE_S, f"the error and close took {took:.2f} s"
        error = info.value
        assert (error.worker_id, error.pid, error.exitcode) == (0, pids[0], -sig)
        assert str(error).startswith(f"{strategy} worker 0 (pid {pids[0]}) was killed by signal {int(sig)}")
        assert_released(gen, pids, segments, before)
    finally:
        gen.close()
        kill_survivors(pids)


@pytest.mark.parametrize("strategy", MULTI)
def test_killed_worker_forkserver(strategy: str, big_images: Path) -> None:
    # The exit status of a forkserver child travels through the fork server: still a signal.
    before = children()
    gen = make_generator(strategy, big_images, CFG, start_method="forkserver")
    pids, segments = gen.worker_pids(), segment_names(gen)
    try:
        bring_to(gen, "mid_transfer")
        os.kill(pids[1], signal.SIGKILL)
        with pytest.raises(WorkerDiedError, match=f"worker 1 \\(pid {pids[1]}\\) was killed by signal 9"):
            finish(gen)
        assert_released(gen, pids, segments, before)
    finally:
        gen.close()
        kill_survivors(pids)


# -- a hung worker ------------------------------------------------------------------
@pytest.mark.parametrize("strategy", MULTI)
def test_stopped_worker_times_out_and_is_killed(strategy: str, big_images: Path) -> None:
    # queue: one worker, since any idle worker would take over the stopped one's jobs
    # (and rightly so); pipe and shm assign jobs to workers, so worker 0 of 2 is missed.
    config = CFG.replace(timeout=2.0, workers=1 if strategy == "queue" else 2)
    before = children()
    gen = make_generator(strategy, big_images, config)
    pids, segments = gen.worker_pids(), segment_names(gen)
    try:
        bring_to(gen, "mid_epoch")
        os.kill(pids[0], signal.SIGSTOP)  # SIGTERM stays pending on it: only SIGKILL ends it
        start = time.monotonic()
        with pytest.raises(WorkerTimeoutError, match=rf"^{strategy}: no image \d+ of epoch \d+ within timeout=2s"):
            finish(gen)
        # After the timeout close() goes straight to SIGTERM, which a stopped worker cannot
        # act on: TERMINATE_GRACE_S later, SIGKILL. 3.01-3.08 s measured (4 runs), no Stop grace.
        took = time.monotonic() - start
        assert config.timeout + TERMINATE_GRACE_S <= took < config.timeout + TERMINATE_GRACE_S + BROKEN_CLOSE_S, took
        assert_released(gen, pids, segments, before)
    finally:
        gen.close()
        kill_survivors(pids)


# -- KeyboardInterrupt ----------------------------------------------------------------
@pytest.mark.parametrize("strategy", MULTI)
def test_keyboard_interrupt_in_loop_body(strategy: str, big_images: Path) -> None:
    before = children()
    with pytest.raises(KeyboardInterrupt), make_generator(strategy, big_images, CFG) as gen:
        pids, segments = gen.worker_pids(), segment_names(gen)
        for i, _ in enumerate(gen):
            if i == 2:
                raise KeyboardInterrupt
    assert gen.closed
    assert wait_until_gone(pids) == [] and existing_segments(segments) == []
    assert leftover_children(before) == []


def assert_one_keyboard_interrupt(result: subprocess.CompletedProcess[str] | Any, stderr: str) -> None:
    assert result.returncode == -signal.SIGINT, f"exit status {result.returncode}; stderr:\n{stderr}"
    assert stderr.count("Traceback (most recent call last)") == 1, f"one traceback expected:\n{stderr}"
    raised = [line for line in stderr.splitlines() if line.startswith("KeyboardInterrupt")]  # not source lines
    assert raised == ["KeyboardInterrupt"] and stderr.rstrip().endswith("KeyboardInterrupt"), stderr
    assert "During handling of the above exception" not in stderr, stderr
    assert_clean_stderr(stderr)


@pytest.mark.parametrize("strategy", MULTI)
def test_keyboard_interrupt_in_loop_body_subprocess(strategy: str, small_images: Path) -> None:
    result = run_scenario(
        "interrupt_body",
        strategy=strategy,
        dataset=str(small_images),
        config={"batch_size": 7, "tile": 16},
        timeout_s=SUBPROCESS_TIMEOUT_S,
    )
    assert_one_keyboard_interrupt(result, result.stderr)
    (report,) = reports(result.stdout)
    assert len(report["pids"]) == 2
    assert report["survivors"] == [] and report["segments_left"] == []


@pytest.mark.parametrize("strategy", [*MULTI, "spdl", "spdl_arena"])
def test_sigint_to_process_group(strategy: str, big_images: Path) -> None:
    # Ctrl-C in a terminal: SIGINT to every process of the group. Workers, the fork
    # server and the resource tracker ignore it; the main process raises once.
    proc = start_scenario("iterate", strategy=strategy, dataset=str(big_images), config={"batch_size": 16, "tile": 16})
    ready: dict[str, Any] = {}
    try:
        ready = read_report(proc, SUBPROCESS_TIMEOUT_S)
        time.sleep(0.2)  # well into iteration: most likely waiting in next()
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    finally:
        proc.kill()
        kill_survivors(ready.get("pids", []))
    assert_one_keyboard_interrupt(proc, stderr)
    (report,) = reports(stdout)
    assert report["interrupted"] and report["survivors"] == [] and report["segments_left"] == []
    assert wait_until_gone(ready["pids"] + ready["infrastructure"]) == []


# -- dropped without close ------------------------------------------------------------
@pytest.mark.parametrize("strategy", WITH_WORKERS)
def test_garbage_collected_without_close(strategy: str, big_images: Path) -> None:
    before = children()
    gen = make_generator(strategy, big_images, CFG)
    pids, segments = gen.worker_pids(), segment_names(gen)
    threads = list(getattr(gen, "worker_threads", list)())
    next(gen)
    time.sleep(0.2)  # results in flight
    ref = weakref.ref(gen)
    del gen
    gc.collect()
    try:
        holders = [type(r).__name__ + ": " + repr(r)[:120] for r in gc.get_referrers(ref())] if ref() else []
        for thread in threads:
            thread.join(CLOSE_BOUND_S)
        assert not any(t.is_alive() for t in threads), "threads outlived the dropped generator"
        assert wait_until_gone(pids) == [], f"workers outlived the dropped generator; it is held by {holders}"
        assert existing_segments(segments) == []
        assert leftover_children(before) == []
        assert ref() is None
    finally:
        if ref() is not None:
            ref().close()
        kill_survivors(pids)


# -- clean ends: nothing on stderr ----------------------------------------------------
@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
@pytest.mark.parametrize("strategy", MULTI)
def test_normal_end_and_early_break_are_silent(strategy: str, start_method: str, small_images: Path) -> None:
    result = run_scenario(
        "clean",
        strategy=strategy,
        dataset=str(small_images),
        config={"batch_size": 7, "tile": 16, "start_method": start_method},
        timeout_s=SUBPROCESS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"stderr is not empty:\n{result.stderr}"
    modes = reports(result.stdout)
    assert [r["mode"] for r in modes] == ["end", "break"]
    for report in modes:
        assert len(report["pids"]) == 2 and report["survivors"] == [] and report["segments_left"] == []


# -- the main process killed ----------------------------------------------------------
@pytest.mark.parametrize(
    ("strategy", "start_method"),
    [("shm", m) for m in START_METHODS] + [(s, m) for s in ("pipe", "queue") for m in ("fork", "forkserver")],
)
def test_main_process_killed(strategy: str, start_method: str, big_images: Path) -> None:
    proc = start_scenario(
        "iterate",
        strategy=strategy,
        dataset=str(big_images),
        config={"batch_size": 16, "tile": 16, "start_method": start_method},
    )
    ready: dict[str, Any] = {}
    try:
        ready = read_report(proc, SUBPROCESS_TIMEOUT_S)
        if strategy == "shm":
            assert len(ready["segments"]) == 2 and existing_segments(ready["segments"]) == ready["segments"]
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=SUBPROCESS_TIMEOUT_S)
        # Workers notice within PARENT_POLL_S; the fork server and the resource tracker
        # see their pipes close; the tracker then unlinks the segments it was told of.
        survivors = wait_until_gone(ready["pids"] + ready["infrastructure"], timeout_s=5.0)
        left = wait_segments_gone(ready["segments"], timeout_s=5.0)
    finally:
        proc.kill()
        kill_survivors(ready.get("pids", []) + ready.get("infrastructure", []))
        stderr = proc.communicate(timeout=SUBPROCESS_TIMEOUT_S)[1]  # survivors would hold its pipes open
        for name in existing_segments(ready.get("segments", [])):
            os.unlink(os.path.join("/dev/shm", name))  # never leave one behind, even when failing
    assert survivors == [], f"processes outlived their main process: {survivors}; stderr:\n{stderr}"
    assert left == [], f"segments outlived their main process: {left}; stderr:\n{stderr}"


# -- a worker failing at start-up -----------------------------------------------------
@pytest.mark.parametrize("start_method", START_METHODS)
def test_worker_failing_at_startup(start_method: str, small_images: Path) -> None:
    result = run_scenario(
        "startup_failure",
        strategies=list(MULTI),
        dataset=str(small_images),
        config={"batch_size": 7, "tile": 16, "start_method": start_method},
        env={**os.environ, **FAIL_AT_START_ENV},
        timeout_s=SUBPROCESS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    outcomes = reports(result.stdout)
    assert [o["strategy"] for o in outcomes] == list(MULTI), result.stderr
    for outcome in outcomes:
        where = f"{outcome['strategy']}: {outcome}"
        assert outcome["raised"] == "WorkerError" and outcome["is_worker_error"], where
        assert FAIL_INIT_MESSAGE in outcome["message"] and "RuntimeError" in outcome["message"], where
        assert outcome["cause"] == "RemoteTraceback", where
        assert "Traceback (most recent call last)" in outcome["remote_tb"], where
        assert "failing_init" in outcome["remote_tb"] and FAIL_INIT_MESSAGE in outcome["remote_tb"], where
        assert outcome["leftovers"] == [] and outcome["segments"] == [], where
    assert "Traceback" not in result.stderr, f"workers printed their failure:\n{result.stderr}"
    assert_clean_stderr(result.stderr)


# -- /dev/shm too small ---------------------------------------------------------------
def test_shm_generator_refuses_a_small_dev_shm(monkeypatch: pytest.MonkeyPatch, big_images: Path) -> None:
    before = children()
    tiny_dev_shm(monkeypatch)
    shm_before = set(os.listdir("/dev/shm"))
    with pytest.raises(SharedMemorySpaceError, match=r"but /dev/shm has only 4\.0 MiB free"):
        make_generator("shm", big_images, CFG)
    assert set(os.listdir("/dev/shm")) - shm_before == set()
    assert leftover_children(before) == []
