"""The ``torch`` strategy: a persistent DataLoader behind the BatchGenerator contract.

Bit-identical batches to the baseline for every start method, worker count and
prefetch depth, across epochs and after an early break; persistent workers;
torch output; errors mapped into the package's family (a worker's exception with
the file name, a SIGKILLed worker, a stopped one); close and garbage collection
that leave no process; and ``import strategies`` that does not import torch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import assert_same_batches, epochs_with_a_break, write_corrupt_dataset, write_dataset

from strategies import (
    LoaderConfig,
    RemoteTraceback,
    WorkerDiedError,
    WorkerError,
    WorkerTimeoutError,
    make_generator,
)
from strategies.torch_loader import TorchGenerator

# write_dataset(images=5): 5 images of 2 x 70 x 90; tile 16: 20 tiles an image,
# 100 an epoch, 15 batches of 7 (the last of 2), so batches span images.
CFG = LoaderConfig(batch_size=7, tile=16, workers=2, prefetch=2, start_method="fork", timeout=60.0)
# A bound on close() that only a hang would exceed (never a timing assertion).
CLOSE_BOUND_S = 20.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("torch") / "ds", images=5)


@pytest.fixture(scope="module")
def expected(dataset: Path) -> list:
    return epochs_with_a_break("baseline", dataset, CFG)


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone(pids: list[int], timeout: float = 5.0) -> bool:
    """Every one of ``pids`` has exited, within ``timeout``.

    Polled, never waited for: ``psutil.wait_procs`` would reap our children and
    steal their exit status from ``multiprocessing``.
    """
    deadline = time.monotonic() + timeout
    while any(running(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_import_strategies_does_not_import_torch() -> None:
    code = "import sys, strategies; print('torch' in sys.modules, 'strategies.torch_loader' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "True"]


# A fresh program creates ``first``'s generator (it starts the fork server), then
# asks the fork server for a process that says whether torch came with the fork.
FORK_SERVER_PROBE = """
import multiprocessing as mp, sys
from strategies import LoaderConfig, make_generator
if __name__ == "__main__":
    cfg = LoaderConfig(batch_size=7, tile=16, workers=1, start_method="forkserver", timeout=60.0)
    gen = make_generator(sys.argv[1], sys.argv[2], cfg)
    probe = mp.get_context("forkserver").Process(target=exec, args=("import sys; print('torch' in sys.modules)",))
    probe.start()
    probe.join()
    gen.close()
"""


@pytest.mark.parametrize(("first", "torch_preloaded"), [("torch", "True"), ("shm", "False")])
def test_fork_server_preloads_torch_when_torch_starts_it(dataset: Path, first: str, torch_preloaded: str) -> None:
    """torch starts the fork server with torch imported (its workers fork ready); others never load torch."""
    out = subprocess.run(
        [sys.executable, "-c", FORK_SERVER_PROBE, first, str(dataset)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.split() == [torch_preloaded], out.stderr


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_matches_baseline_for_every_start_method(dataset: Path, expected: list, start_method: str) -> None:
    assert_same_batches(epochs_with_a_break("torch", dataset, CFG.replace(start_method=start_method)), expected)


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # 8 workers on a small machine
@pytest.mark.parametrize(("workers", "prefetch"), [(1, 1), (1, 2), (2, 1), (8, 2)])
def test_matches_baseline_for_workers_and_prefetch(dataset: Path, expected: list, workers: int, prefetch: int) -> None:
    assert_same_batches(
        epochs_with_a_break("torch", dataset, CFG.replace(workers=workers, prefetch=prefetch)), expected
    )


@pytest.mark.parametrize("payload", ["tensor", "numpy"])
def test_other_payloads_match_baseline(
    dataset: Path, expected: list, payload: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The alternatives the module docstring measures: same batches, other transport.
    monkeypatch.setattr(TorchGenerator, "payload", payload)
    assert_same_batches(epochs_with_a_break("torch", dataset, CFG), expected)


def test_workers_persist_len_and_no_stale_images(dataset: Path, expected: list) -> None:
    with make_generator("torch", dataset, CFG, prefetch=3) as gen:
        pids = gen.worker_pids()
        assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
        assert len(gen) == 15
        next(iter(gen))  # break after one batch: the window is full of epoch 0's images
        iter(gen)  # ... and epoch 1 right away, before a single batch
        epoch2 = [(np.array(d), np.array(m)) for d, m in gen]  # for calls iter(): epoch 2
        assert len(epoch2) == len(gen) == 15 and gen.epoch == 2
        assert gen.worker_pids() == pids  # the same processes, epoch after epoch
    with make_generator("baseline", dataset, CFG, epoch=2) as base:
        assert_same_batches([epoch2], [[(d, m) for d, m in base]])
    assert gone(pids)


def test_torch_output_and_global_rng_untouched(dataset: Path, expected: list) -> None:
    import torch

    state = torch.get_rng_state()
    with make_generator("torch", dataset, CFG, output="torch") as gen:
        out = [(d.numpy().copy(), m.numpy().copy()) for d, m in gen]
        data, masks = next(iter(gen))
        assert isinstance(data, torch.Tensor) and data.dtype == torch.uint16 and masks.dtype == torch.uint8
    assert_same_batches([out], expected[:1])
    # The loader has its own torch.Generator: iterating it does not advance the user's RNG.
    assert torch.equal(torch.get_rng_state(), state)


def test_corrupt_image_mid_epoch_names_the_file(tmp_path: Path) -> None:
    bad = write_corrupt_dataset(tmp_path)
    with make_generator("torch", tmp_path, CFG, tile=16, batch_size=4, shuffle=False) as gen:
        pids = gen.worker_pids()
        seen = 0
        with pytest.raises(WorkerError) as info:
            for _ in gen:
                seen += 1
        assert gen.closed
    assert seen == 4  # 16 of the good images' 18 tiles (3 x 3 of 16 px each); the fifth batch needs c.tif
    assert str(bad) in str(info.value) and "DatasetError" in str(info.value)
    assert isinstance(info.value.__cause__, RemoteTraceback) and "process" in info.value.__cause__.tb
    assert gone(pids)


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_killed_worker_raises_worker_died(dataset: Path, start_method: str) -> None:
    gen = make_generator("torch", dataset, CFG, start_method=start_method, timeout=30.0)
    next(gen)
    pids = gen.worker_pids()
    os.kill(pids[1], signal.SIGKILL)
    # Wait until it is dead: nothing may be raised here, outside next() (torch's
    # SIGCHLD handler would raise its RuntimeError in whatever the main thread does).
    assert gone(pids[1:])
    time.sleep(0.2)
    start = time.monotonic()
    with pytest.raises(WorkerDiedError, match=f"pid {pids[1]}") as info:
        # Whole epochs: the rest of this one may already have been read ahead; the next one needs the worker.
        for _ in range(3):
            for _ in gen:
                pass
    assert time.monotonic() - start < 30.0  # within the timeout: found by the sentinel, not by the timeout
    assert info.value.exitcode == -signal.SIGKILL and "SIGKILL" in str(info.value)
    assert gen.closed and gone(pids)


def test_stopped_worker_raises_timeout(dataset: Path) -> None:
    gen = make_generator("torch", dataset, CFG, workers=1, prefetch=1, timeout=1.0)
    pids = gen.worker_pids()
    os.kill(pids[0], signal.SIGSTOP)
    try:
        with pytest.raises(WorkerTimeoutError, match="within timeout=1s"):
            list(gen)
        assert gen.closed and gone(pids)
    finally:
        if psutil.pid_exists(pids[0]):
            os.kill(pids[0], signal.SIGCONT)


@pytest.mark.parametrize(
    ("error", "main_gone", "printed"),
    [
        (ConnectionResetError("reset by peer"), True, False),  # the dead main process reset it: noise
        (ConnectionResetError("reset by peer"), False, True),  # the main process lives: a real error
        (ValueError("a bug"), True, True),  # anything else is always reported
    ],
)
def test_worker_stays_quiet_about_connections_its_dead_main_process_reset(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    main_gone: bool,
    printed: bool,
) -> None:
    from strategies import torch_loader

    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)  # restored after the test
    asked = []
    torch_loader._quiet_when_orphaned(lambda timeout: asked.append(timeout) or main_gone)
    sys.excepthook(type(error), error, None)  # what multiprocessing.resource_sharer's thread calls
    assert ("Error" in capsys.readouterr().err) is printed
    assert asked == ([torch_loader.ORPHAN_CHECK_S] if isinstance(error, ConnectionError) else [])
