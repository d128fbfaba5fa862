"""Generators used the way training programs use them, for every strategy.

Not one fault at a time in a program that does nothing else, but what real programs
do: peek at a batch before the loop, read one iterator from two threads, close from
a watchdog thread while ``next()`` waits, keep a train and a validation loader side
by side beside their own multiprocessing, hold on to a closed generator, fork, run
inside a ``multiprocessing.Pool`` worker, get SIGTERM, hit a descriptor limit.
"""

from __future__ import annotations

import gc
import itertools
import math
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_dataset
from faults_helpers import children, leftover_children, tiny_dev_shm, wait_until_gone

import strategies.workers as workers_module
from strategies import (
    STRATEGIES,
    DatasetError,
    DescriptorLimitError,
    LoaderClosedError,
    LoaderConfig,
    SharedMemorySpaceError,
    WorkerTimeoutError,
    make_generator,
    make_plan,
    open_dataset,
)
from strategies.messages import Ready
from strategies.workers import WorkerPool

pytestmark = pytest.mark.timeout(120)

ALL = tuple(STRATEGIES)
WITH_PROCESSES = tuple(name for name, cls in STRATEGIES.items() if cls.worker_processes)
CFG = LoaderConfig(batch_size=7, tile=16, seed=0, workers=2, prefetch=2, start_method="fork", timeout=20.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("programs"), images=5, classes=True)


@pytest.fixture(scope="module")
def expected(dataset: Path) -> list[bytes]:
    """The baseline's batches of epoch 0, as bytes (data then masks)."""
    with make_generator("baseline", dataset, CFG) as gen:
        return [_key(batch) for batch in gen]


def _key(batch: tuple[Any, Any]) -> bytes:
    data, masks = batch
    return np.asarray(data).tobytes() + np.asarray(masks).tobytes()


# -- iteration: peek, islice, then loop ---------------------------------------------------
@pytest.mark.parametrize("strategy", ALL)
def test_peek_then_loop_finishes_the_same_epoch(strategy: str, dataset: Path, expected: list[bytes]) -> None:
    with make_generator(strategy, dataset, CFG) as gen:
        it = iter(gen)
        assert iter(it) is it
        first = _key(next(it))
        rest = [_key(b) for b in it]
        assert [first, *rest] == expected  # 1 + (len - 1), not 1 + len
        assert len(gen) == len(expected)

        it = iter(gen)  # epoch 1
        head = [_key(b) for b in itertools.islice(it, 3)]
        tail = [_key(b) for b in it]
        assert len(head) + len(tail) == len(gen)
        assert gen.epoch == 1

        assert sum(1 for _ in gen) == len(gen)  # each `for` over gen is the next epoch
        assert gen.epoch == 2


@pytest.mark.parametrize("strategy", ["baseline", "shm"])
def test_an_epochs_iterator_ends_when_another_epoch_starts(strategy: str, dataset: Path) -> None:
    with make_generator(strategy, dataset, CFG) as gen:
        old = iter(gen)
        next(old)
        new = iter(gen)
        with pytest.raises(StopIteration):
            next(old)
        assert len(new) == len(gen)
        assert sum(1 for _ in new) == len(gen)
    with pytest.raises(LoaderClosedError):
        next(new)


@pytest.mark.parametrize("strategy", ALL)
def test_with_on_a_closed_generator_raises(strategy: str, dataset: Path) -> None:
    gen = make_generator(strategy, dataset, CFG)
    gen.close()
    with pytest.raises(LoaderClosedError), gen:
        pass


# -- threads -----------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ALL)
def test_two_threads_share_one_iterator(strategy: str, dataset: Path, expected: list[bytes]) -> None:
    """Every batch of the plan exactly once, whole, whichever thread got it (next() holds a lock)."""
    got: list[bytes] = []
    errors: list[BaseException] = []
    with make_generator(strategy, dataset, CFG) as gen:
        it = iter(gen)

        def consume() -> None:
            try:
                for batch in it:
                    got.append(_key(batch))  # a zero-copy view: copied before the next next()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=consume) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not errors
    assert sorted(got) == sorted(expected)
    assert len(got) == len(expected)


def _block_workers(gen: Any) -> Any:
    """Make the next image never come (returns what undoes it)."""
    if gen.worker_processes:
        for pid in gen.worker_pids():
            os.kill(pid, signal.SIGSTOP)

        def undo() -> None:
            for pid in gen.worker_pids():
                os.kill(pid, signal.SIGCONT)

        return undo
    raise AssertionError("only worker processes can be stopped")


@pytest.mark.parametrize("strategy", WITH_PROCESSES)
def test_close_from_another_thread_wakes_a_blocked_next(strategy: str, dataset: Path) -> None:
    big = write_dataset(dataset.parent / f"blocked-{strategy}", images=4, height=128, width=160)
    gen = make_generator(strategy, big, CFG.replace(workers=1, prefetch=1))
    pids = gen.worker_pids()
    it = iter(gen)
    next(it)
    undo = _block_workers(gen)
    closed_at: list[float] = []

    def watchdog() -> None:
        time.sleep(0.3)
        closed_at.append(time.monotonic())
        undo()  # let the workers answer the polite stop: close() is then quick
        gen.close()

    thread = threading.Thread(target=watchdog)
    thread.start()
    try:
        with pytest.raises(LoaderClosedError, match=r"closed .*by another thread"):
            for _ in it:
                pass
        woke_at = time.monotonic()
    finally:
        undo()
        thread.join(30)
    assert woke_at - closed_at[0] < 2.0, "next() waited for the shutdown instead of leaving at once"
    assert wait_until_gone(pids) == []
    with pytest.raises(LoaderClosedError):
        next(gen)


def test_close_from_another_thread_wakes_the_threads_strategy(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from strategies.work import ImageProcessor

    release = threading.Event()
    process = ImageProcessor.process

    def slow(self: Any, job: Any, *out: Any) -> Any:
        if job.position > 0:
            release.wait(30)
        return process(self, job, *out)

    monkeypatch.setattr(ImageProcessor, "process", slow)
    gen = make_generator("threads", dataset, CFG.replace(workers=1, prefetch=1))
    it = iter(gen)
    next(it)
    threading.Timer(0.3, gen.close).start()
    started = time.monotonic()
    try:
        with pytest.raises(LoaderClosedError):
            for _ in it:
                pass
        assert time.monotonic() - started < 5.0
    finally:
        release.set()
        gen.close()


# -- several generators and the program's own multiprocessing ----------------------------
@pytest.mark.parametrize("order", ["train_first", "val_first"])
@pytest.mark.parametrize("strategy", ALL)
def test_train_and_validation_side_by_side(strategy: str, order: str, dataset: Path, expected: list[bytes]) -> None:
    config = CFG.replace(start_method="forkserver")
    before = children()
    own_queue = mp.get_context("forkserver").Queue()  # the program's own multiprocessing, in use
    own_queue.put("mine")
    train = make_generator(strategy, dataset, config)
    val = make_generator(strategy, dataset, config.replace(shuffle=False, augment=False))
    try:
        assert [_key(b) for b in train] == expected
        assert sum(1 for _ in val) == len(val)
        assert own_queue.get(timeout=10) == "mine"
    finally:
        first, second = (train, val) if order == "train_first" else (val, train)
        first.close()
        assert sum(1 for _ in second) == len(second), "closing one generator broke the other"
        second.close()
        own_queue.close()
        own_queue.join_thread()
    assert leftover_children(before) == []


@pytest.mark.parametrize("strategy", ["queue", "torch"])
def test_unclosed_generators_collected_quietly(strategy: str, dataset: Path) -> None:
    """Generators dropped without close(), beside the program's own Queue: released by the GC, silently."""
    script = textwrap.dedent(
        f"""
        import gc, multiprocessing as mp
        from strategies import make_generator, LoaderConfig
        if __name__ == "__main__":
            own = mp.get_context("forkserver").Queue(); own.put(1); own.get()
            config = LoaderConfig(batch_size=7, tile=16, workers=1, prefetch=1, timeout=20)
            for _ in range(8):
                gen = make_generator({strategy!r}, {str(dataset)!r}, config)
                next(iter(gen))
                del gen
            gc.collect()
            print("done")
        """
    )
    shm_before = set(os.listdir("/dev/shm"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout
    for marker in ("Exception ignored", "Traceback", "leaked", "resource_tracker"):
        assert marker not in result.stderr, result.stderr
    assert {n for n in set(os.listdir("/dev/shm")) - shm_before if n.startswith(("sem.mp-", "ipcbench_"))} == set()


# -- close() releases, whoever holds a reference -----------------------------------------
def _descriptors() -> dict[str, str]:
    """This process's open descriptors and what each is (a pipe, a socket, a file)."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, closed meanwhile
    return out


def _shm_mappings() -> int:
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if "/dev/shm/" in line)


@pytest.mark.parametrize("strategy", ALL)
def test_closed_but_referenced_generators_hold_nothing(strategy: str, dataset: Path) -> None:
    config = CFG.replace(start_method="forkserver")
    warm = make_generator(strategy, dataset, config)  # what a process pays once (fork server, tracker)
    next(iter(warm))
    warm.close()
    del warm
    gc.collect()
    gc.disable()  # release must come from close(), not from the cycle collector
    try:
        fds, maps, shm = _descriptors(), _shm_mappings(), set(os.listdir("/dev/shm"))
        kept = []
        for _ in range(4):
            gen = make_generator(strategy, dataset, config)
            next(iter(gen))
            gen.close()
            kept.append(gen)
        assert _descriptors() == fds
        assert _shm_mappings() == maps
        assert {
            n for n in set(os.listdir("/dev/shm")) - shm if n.startswith(("ipcbench_", "sem.mp-", "torch_"))
        } == set()
    finally:
        gc.enable()


def test_closed_generators_free_dev_shm_space(dataset: Path) -> None:
    """/dev/shm space comes back at close(): a segment still mapped would keep its pages."""
    config = CFG.replace(start_method="forkserver")
    kept = []
    gc.disable()
    try:
        free_before = _dev_shm_free()
        for _ in range(3):
            gen = make_generator("shm", dataset, config)
            next(iter(gen))
            gen.close()
            kept.append(gen)
        assert _dev_shm_free() >= free_before - 2**20
    finally:
        gc.enable()


def _dev_shm_free() -> int:
    stats = os.statvfs("/dev/shm")
    return stats.f_bavail * stats.f_frsize


def test_zero_copy_views_kept_past_close_stay_readable(dataset: Path, expected: list[bytes]) -> None:
    """The mapping outlives close() while a kept batch views it (unmapping it would crash the reader)."""
    gen = make_generator("shm_zerocopy", dataset, CFG)
    data, masks = next(iter(gen))
    gen.close()
    assert np.asarray(data).tobytes() + np.asarray(masks).tobytes() == expected[0]


# -- other processes ---------------------------------------------------------------------
def _in_fork_child(strategy: str, dataset: str, results: Any) -> None:
    try:
        with make_generator(strategy, dataset, CFG.replace(start_method="forkserver")) as gen:
            results.put(("ok", sum(1 for _ in gen)))
    except Exception as exc:
        results.put((type(exc).__name__, str(exc)))


def _use_inherited(gen: Any, results: Any) -> None:
    try:
        next(iter(gen))
        results.put(("no error", ""))
    except Exception as exc:
        results.put((type(exc).__name__, str(exc)))
    gen.close()  # the parent's workers and memory are not this process's to release


@pytest.mark.parametrize("strategy", WITH_PROCESSES)
def test_fork_child_makes_its_own_generator(strategy: str, dataset: Path) -> None:
    """After the parent used a process strategy (and its fork server), a fork child can make one too."""
    fork = mp.get_context("fork")
    with make_generator(strategy, dataset, CFG.replace(start_method="forkserver")) as gen:
        n = sum(1 for _ in gen)
        results = fork.Queue()
        child = fork.Process(target=_in_fork_child, args=(strategy, str(dataset), results))
        child.start()
        assert results.get(timeout=90) == ("ok", n)
        child.join(30)
        assert child.exitcode == 0

        child = fork.Process(target=_use_inherited, args=(gen, results))
        child.start()
        kind, message = results.get(timeout=60)
        child.join(30)
        assert kind == "ProcessContextError" and "make a generator in this process" in message.lower()
        assert sum(1 for _ in gen) == n, "the child's close() must not touch the parent's generator"
        results.close()
        results.join_thread()


def _in_pool_worker(strategy: str, dataset: str) -> tuple[str, str]:
    try:
        with make_generator(strategy, dataset, CFG) as gen:
            return ("ok", str(sum(1 for _ in gen)))
    except Exception as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize("strategy", ["pipe", "torch", "threads"])
def test_inside_a_pool_worker(strategy: str, dataset: Path) -> None:
    with mp.get_context("fork").Pool(1) as pool:
        kind, message = pool.apply(_in_pool_worker, (strategy, str(dataset)))
    if STRATEGIES[strategy].worker_processes:
        assert kind == "ProcessContextError"
        assert "daemonic" in message and "'baseline' or 'threads'" in message
    else:
        assert kind == "ok"


# -- large jobs, timeouts, limits --------------------------------------------------------
def test_job_messages_are_small_whatever_the_tile_count() -> None:
    """A job crosses as its tile draw: 16-px tiles of a 2700 x 3600 image are 37,800 tiles, ~100 bytes."""
    plan = make_plan([(2700, 3600)] * 2, seed=3, epoch=2, tile=16, batch_size=4096)
    job = plan.jobs[1]
    payload = pickle.dumps(job, protocol=5)
    assert job.n_tiles == 37_800
    assert len(payload) < 300
    again = pickle.loads(payload)
    np.testing.assert_array_equal(again.tiles, job.tiles)
    np.testing.assert_array_equal(again.augmentations, job.augmentations)
    assert (again.position, again.image_index, again.first_tile) == (job.position, job.image_index, job.first_tile)


@pytest.mark.parametrize("strategy", ["pipe", "shm"])
def test_many_tiles_per_image_with_narrow_socket_buffers(
    strategy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tile 1 on 256 x 320 images (81,920 tiles an image) through the kernel's default socket buffers.

    Jobs as arrays were 0.7 MB each: the main process blocked sending one while its
    worker blocked sending a result (a deadlock reported as a dead worker, "code None").
    """
    monkeypatch.setattr(workers_module, "widen", lambda *args, **kwargs: None)
    root = write_dataset(tmp_path / "many", images=3, height=256, width=320)
    config = CFG.replace(batch_size=4096, tile=1, workers=1, prefetch=2, timeout=20.0)
    with make_generator(strategy, root, config) as gen:
        assert sum(1 for _ in gen) == len(gen) == 60


class _Deaf:
    """A worker that says Ready and never reads its pipe."""

    def __init__(self, worker_id: int, conn: Any) -> None:
        self.conn = conn

    def run(self) -> None:
        time.sleep(60)


def test_a_send_that_times_out_is_a_timeout_not_a_death() -> None:
    pool = WorkerPool(name="deaf", worker_cls=_Deaf, args=(), workers=1, start_method="fork", timeout=0.5)
    try:
        with pytest.raises(WorkerTimeoutError, match="has not read its pipe"):
            pool.send(0, Ready(0, bytes(8 * 2**20)))  # more than any socket buffer holds
    finally:
        pool.broken = True
        pool.close()


@pytest.mark.parametrize("timeout", [math.inf, 1e12])
def test_timeouts_beyond_the_systems_longest_wait(timeout: float, dataset: Path, expected: list[bytes]) -> None:
    for strategy in ("pipe", "threads"):
        with make_generator(strategy, dataset, CFG, timeout=timeout) as gen:
            assert [_key(b) for b in gen] == expected


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), True, "10"])
def test_invalid_timeouts_are_refused(timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        LoaderConfig(timeout=timeout)


def test_torch_with_a_huge_prefetch_starts_at_once(dataset: Path, expected: list[bytes]) -> None:
    started = time.monotonic()
    with make_generator("torch", dataset, CFG, prefetch=10**9) as gen:
        assert time.monotonic() - started < 30
        assert [_key(b) for b in gen] == expected


def test_torch_refuses_a_small_dev_shm_up_front(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "big", images=3, height=256, width=320)
    before = children()
    tiny_dev_shm(monkeypatch)
    with pytest.raises(SharedMemorySpaceError, match=r"but /dev/shm has only 4\.0 MiB free"):
        make_generator("torch", root, CFG)
    assert leftover_children(before) == []


def test_descriptor_limit_is_a_clear_error(dataset: Path) -> None:
    script = textwrap.dedent(
        f"""
        import resource
        from strategies import make_generator, DescriptorLimitError
        if __name__ == "__main__":
            resource.setrlimit(resource.RLIMIT_NOFILE, (16, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            try:
                make_generator("pipe", {str(dataset)!r}, workers=2)
            except DescriptorLimitError as exc:
                print("refused:", exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "ulimit -n" in result.stdout
    assert "Traceback" not in result.stderr


def test_descriptor_limit_check_counts_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    in_use = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(resource, "getrlimit", lambda which: (in_use + 30, resource.RLIM_INFINITY))
    workers_module.check_descriptor_room(1, "pipe")  # 4 + 24 fit
    with pytest.raises(DescriptorLimitError, match="8 workers needs about 56 more"):
        workers_module.check_descriptor_room(8, "pipe")


def test_unreadable_dataset_parts_are_dataset_errors(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root nothing is unreadable, so the refusal is the operating system's, simulated."""
    real_iterdir = Path.iterdir

    def denied_iterdir(self: Path) -> Any:
        if self.name == "images":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", denied_iterdir)
    with pytest.raises(DatasetError, match=r"cannot read .*images: Permission denied"):
        open_dataset(dataset)
    monkeypatch.setattr(Path, "iterdir", real_iterdir)

    real_open = Path.open

    def denied_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "classes.csv":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied_open)
    with pytest.raises(DatasetError, match=r"cannot read .*classes\.csv: Permission denied"):
        open_dataset(dataset)


# -- SIGTERM -----------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["shm", "queue", "torch"])
def test_sigterm_closes_with_the_opt_in_handler(strategy: str, dataset: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, sys
        from strategies import exit_on_sigterm, make_generator
        if __name__ == "__main__":
            exit_on_sigterm()
            with make_generator({strategy!r}, {str(dataset)!r}, batch_size=7, tile=16, timeout=20) as gen:
                print("pids", *gen.worker_pids(), flush=True)
                while True:
                    for _ in gen:
                        pass
        """
    )
    shm_before = set(os.listdir("/dev/shm"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("pids"), proc.communicate(timeout=30)
    pids = [int(p) for p in line.split()[1:]]
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert stderr.strip() == "", stderr  # no traceback, no resource_tracker "leaked" warning
    assert wait_until_gone(pids) == []
    left = set(os.listdir("/dev/shm")) - shm_before
    assert {n for n in left if n.startswith(("ipcbench_", "sem.mp-", "torch_"))} == set()
