"""The lifetime contract of a generator (docs/design.md sections 2 and 8): one suite, every strategy.

Every registered strategy (``STRATEGIES``) goes through it, its workers whatever they
are (processes or threads, ``workers_of``), under each start method where that matters.

Workers start once and persist across epochs; ``len()`` holds before, during and after
an epoch; epochs can be abandoned at any point (even before their first batch) and the
next one is still the baseline's; ``close()`` is idempotent, bounded, final, and leaves
no worker process, no child process and no shared-memory segment, also when it
interrupts results in flight (images larger than a pipe's buffer, workers blocked
writing them).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_dataset
from faults_helpers import alive, children, existing_segments, leftover_children, segment_names, wait_until_gone

from strategies import STRATEGIES, LoaderClosedError, LoaderConfig, make_generator
from strategies.batch_memory import on_batch_memory
from strategies.constants import KILL_GRACE_S, STOP_GRACE_S, TERMINATE_GRACE_S

pytestmark = pytest.mark.timeout(60)

ALL = tuple(STRATEGIES)
WITH_WORKERS = tuple(name for name, cls in STRATEGIES.items() if cls.has_workers)
CFG = LoaderConfig(batch_size=7, tile=16, seed=0, workers=2, prefetch=2, start_method="fork", timeout=30.0)
# What close() may take by its contract: the three graces of its escalation, plus
# scheduling noise on a loaded 2-core machine. An orderly close takes far less.
CLOSE_BOUND_S = STOP_GRACE_S + TERMINATE_GRACE_S + KILL_GRACE_S + 2.0
# Our own pools close politely: Stop, drained pipes, workers that exit by themselves,
# in well under a second; half the Stop grace tells that from a close that waits the
# grace and escalates (tests/test_shutdown_speed.py has the measured figures).
POLITE = tuple(name for name, cls in STRATEGIES.items() if cls.worker_processes and name != "torch")
POLITE_CLOSE_S = STOP_GRACE_S / 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("lifecycle"), images=5, classes=True)


@pytest.fixture(scope="module")
def big_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 320 tiles of 16 px an image: 400 KiB, more than a pipe (64 KiB) or a socket pair
    # (~200 KiB) holds, so a worker with a result ready blocks in the middle of writing it.
    return write_dataset(tmp_path_factory.mktemp("big"), images=6, height=256, width=320)


def copies(gen: Any, limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for data, masks in gen:
        out.append((data.copy(), masks.copy()))
        if len(out) == limit:
            break
    return out


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(da, db) and np.array_equal(ma, mb) for (da, ma), (db, mb) in zip(a, b, strict=True)
    )


def workers_of(gen: Any) -> list[Any]:
    """A generator's workers: process ids, or threads for the threads strategy (none for the baseline)."""
    return list(gen.worker_threads()) if hasattr(gen, "worker_threads") else gen.worker_pids()


def running(worker: Any) -> bool:
    return worker.is_alive() if hasattr(worker, "is_alive") else alive(worker)


def assert_released(workers: list[Any], segments: list[str], before: set[int]) -> None:
    pids = [w for w in workers if isinstance(w, int)]
    threads = [w for w in workers if not isinstance(w, int)]
    for thread in threads:
        thread.join(CLOSE_BOUND_S)
    assert wait_until_gone(pids) == [] and not any(t.is_alive() for t in threads), "workers outlived close()"
    assert existing_segments(segments) == [], "segments outlived close()"
    assert leftover_children(before) == [], "child processes outlived close()"


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
@pytest.mark.parametrize("strategy", WITH_WORKERS)
def test_workers_persist_across_epochs(strategy: str, start_method: str, dataset: Path) -> None:
    with make_generator(strategy, dataset, CFG, start_method=start_method) as gen:
        workers = workers_of(gen)
        # spdl_arena: SPDL runs the iterable in ONE subprocess; its ``workers`` are threads in it.
        processes = 1 if strategy == "spdl_arena" else CFG.workers
        assert len(workers) == len(set(workers)) == processes
        assert all(running(w) for w in workers)
        for epoch in range(3):
            assert len(list(gen)) == len(gen) == 15
            assert gen.epoch == epoch
            assert workers_of(gen) == workers
            assert all(running(w) for w in workers)


@pytest.mark.parametrize("strategy", ALL)
def test_traits_match_what_the_generator_does(strategy: str, dataset: Path) -> None:
    """What a strategy declares (read by the harness and the reports) is what it does."""
    cls = STRATEGIES[strategy]
    with make_generator(strategy, dataset, CFG) as gen:
        assert bool(gen.worker_pids()) == cls.worker_processes
        assert bool(workers_of(gen)) == cls.has_workers
        # torch and grain: a fresh segment per image, no segments the generator holds
        assert bool(segment_names(gen)) == (cls.shared_memory and strategy not in ("torch", "grain"))
        data, _ = next(iter(gen))
        # Zero-copy: a view of the producer's batch slot; the others: the loop's own memory.
        assert on_batch_memory(data) != cls.zero_copy


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("strategy", ALL)
def test_len_before_during_and_after_an_epoch(strategy: str, drop_last: bool, dataset: Path) -> None:
    expected = 14 if drop_last else 15  # 100 tiles in batches of 7
    with make_generator(strategy, dataset, CFG, drop_last=drop_last) as gen:
        assert len(gen) == expected
        seen = [next(iter(gen))]
        assert len(gen) == expected
        while True:  # next(), not for: iter() would start another epoch
            try:
                seen.append(next(gen))
            except StopIteration:
                break
        assert len(seen) == len(gen) == expected
        assert len(seen[-1][0]) == (7 if drop_last else 2)


@pytest.mark.parametrize("strategy", WITH_WORKERS)
def test_abandoned_epochs_at_any_point(strategy: str, dataset: Path) -> None:
    # Abandon epochs before their first batch, after one, at an image boundary, one
    # batch before the end and at the very end (before StopIteration); every whole
    # epoch after that must still be the baseline's.
    stops = [0, 1, 0, 6, 14, 15, 2]

    def play(gen: Any) -> list:
        out = []
        for stop in stops:
            if stop == 0:
                iter(gen)  # started, never consumed
                out.append([])
            else:
                out.append(copies(gen, stop))
            out.append(copies(gen))
        return out

    with make_generator("baseline", dataset, CFG) as gen:
        expected = play(gen)
    with make_generator(strategy, dataset, CFG) as gen:
        pids = workers_of(gen)
        got = play(gen)
        assert workers_of(gen) == pids
    for epoch, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert same(want, have), f"epoch {epoch} differs from baseline"


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("strategy", WITH_WORKERS)
def test_close_mid_epoch_is_idempotent_bounded_and_final(strategy: str, start_method: str, big_images: Path) -> None:
    before = children()
    gen = make_generator(strategy, big_images, CFG, batch_size=16, start_method=start_method)
    pids, segments = workers_of(gen), segment_names(gen)
    assert all(running(p) for p in pids)
    next(iter(gen))
    time.sleep(0.3)  # let the workers fill the window: results in flight, writers blocked
    start = time.monotonic()
    gen.close()
    first_close_s = time.monotonic() - start
    start = time.monotonic()
    gen.close()
    assert time.monotonic() - start < 1.0, "a second close() is a no-op"
    assert first_close_s < (POLITE_CLOSE_S if strategy in POLITE else CLOSE_BOUND_S), first_close_s
    assert gen.closed and "closed" in repr(gen)
    with pytest.raises(LoaderClosedError):
        next(gen)
    with pytest.raises(LoaderClosedError):
        iter(gen)
    assert_released(pids, segments, before)


@pytest.mark.parametrize("strategy", WITH_WORKERS)
def test_close_before_any_epoch(strategy: str, dataset: Path) -> None:
    before = children()
    gen = make_generator(strategy, dataset, CFG)
    pids, segments = workers_of(gen), segment_names(gen)
    gen.close()
    assert_released(pids, segments, before)


@pytest.mark.parametrize("strategy", WITH_WORKERS)
def test_close_after_epochs_end(strategy: str, dataset: Path) -> None:
    before = children()
    gen = make_generator(strategy, dataset, CFG)
    pids, segments = workers_of(gen), segment_names(gen)
    for _ in range(2):
        list(gen)
    gen.close()
    assert_released(pids, segments, before)


@pytest.mark.parametrize("strategy", ALL)
def test_context_manager_closes(strategy: str, dataset: Path) -> None:
    before = children()
    with make_generator(strategy, dataset, CFG) as gen:
        pids, segments = workers_of(gen), segment_names(gen)
        assert not gen.closed
        next(iter(gen))
    assert gen.closed
    assert_released(pids, segments, before)
    with pytest.raises(RuntimeError, match="boom"), make_generator(strategy, dataset, CFG) as failing:
        pids, segments = workers_of(failing), segment_names(failing)
        next(failing)
        raise RuntimeError("boom")
    assert failing.closed
    assert_released(pids, segments, before)


@pytest.mark.parametrize("strategy", ["queue", "shm"])
def test_segments_and_queues_exist_only_while_open(strategy: str, dataset: Path) -> None:
    gen = make_generator(strategy, dataset, CFG)
    try:
        if strategy == "shm":
            segments = segment_names(gen)
            assert len(segments) == CFG.workers
            assert existing_segments(segments) == segments
        next(iter(gen))
    finally:
        gen.close()
    assert existing_segments(segment_names(gen)) == []
