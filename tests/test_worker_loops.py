"""The worker side of ``queue`` and ``shm_zerocopy``, run in the test process.

In a benchmark these loops run in worker processes, where a wrong result shows only
as a batch that differs from the baseline's (``test_equivalence``). Here each loop is
fed its messages directly (the queue worker through in-process queues, the zero-copy
worker through a pipe of this process) so that what it answers can be read message by
message: which jobs it skips, what it sends back, where it writes every tile.
"""

from __future__ import annotations

import queue
import threading
import time
from multiprocessing import Pipe
from multiprocessing import queues as mp_queues
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import write_dataset

from strategies import LoaderConfig, injection, make_generator, open_dataset
from strategies.base import config_plan
from strategies.messages import ImageDone, Job, Reset, Skipped, Stop
from strategies.mpqueue import NEVER, ImageResult, QueueWorker, _stop_workers
from strategies.shm import SlotLayout
from strategies.shm_segments import Segment
from strategies.shm_zerocopy import ZeroCopyWorker
from strategies.stages import STAGES
from strategies.work import make_processor

pytestmark = pytest.mark.timeout(60)

# 4 images of 20 tiles (tile 16), batch 7: 12 batches an epoch, most spanning two images.
CFG = LoaderConfig(batch_size=7, tile=16, workers=1, prefetch=1, seed=0, start_method="fork", timeout=30.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("loops"), images=4, classes=True)


@pytest.fixture(scope="module")
def expected(dataset: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    with make_generator("baseline", dataset, CFG) as gen:
        return [(d.copy(), m.copy()) for d, m in gen]


@pytest.fixture
def queue_pickler_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A QueueWorker times its queue pickling by rebinding the process's pickler: put it back afterwards."""
    monkeypatch.setattr(mp_queues, "_ForkingPickler", mp_queues._ForkingPickler)


def test_the_queue_worker_skips_jobs_older_than_wanted_and_sends_the_others_processed(
    dataset: Path, queue_pickler_kept: None
) -> None:
    data = open_dataset(dataset)
    jobs = config_plan(data, CFG, epoch=0).jobs
    tasks: queue.Queue = queue.Queue()
    results: queue.Queue = queue.Queue()
    oldest_wanted = SimpleNamespace(value=1)  # generation 0 was abandoned
    for message in (Job(0, jobs[0]), Job(1, jobs[1]), Job(0, jobs[2]), Job(2, jobs[3]), Stop(), Job(2, jobs[0])):
        tasks.put(message)
    worker = QueueWorker(3, None, data, CFG, tasks, results, oldest_wanted, timeout=5.0)
    worker.run()  # returns at Stop, with what follows it still queued
    assert tasks.qsize() == 1
    answers = [results.get_nowait() for _ in range(results.qsize())]
    assert [type(a) for a in answers] == [Skipped, ImageResult, Skipped, ImageResult]
    assert (answers[0].generation, answers[0].position) == (0, jobs[0].position)
    assert (answers[2].generation, answers[2].position) == (0, jobs[2].position)
    processor = make_processor(data, CFG)
    for answer, generation, job in ((answers[1], 1, jobs[1]), (answers[3], 2, jobs[3])):
        reference = processor.process(job)
        assert (answer.generation, answer.position, answer.image_index) == (generation, job.position, job.image_index)
        assert answer.worker_id == 3
        np.testing.assert_array_equal(answer.data, reference.data)
        np.testing.assert_array_equal(answer.masks, reference.masks)
        assert len(answer.stages) == len(STAGES)
    compute = STAGES.index("compute")
    # Cumulative totals: the second image's compute time includes the first's.
    assert 0 < answers[1].stages[compute] < answers[3].stages[compute]


def test_the_queue_worker_pickles_with_protocol_5_timed_as_serialize(dataset: Path, queue_pickler_kept: None) -> None:
    worker = QueueWorker(
        0, None, open_dataset(dataset), CFG, queue.Queue(), queue.Queue(), SimpleNamespace(value=0), 1.0
    )
    pickled = bytes(mp_queues._ForkingPickler.dumps(np.arange(1000)))  # what the result queue's feeder thread calls
    assert pickled[:2] == b"\x80\x05"  # protocol 5: the array goes in as one buffer copy
    assert worker.clock.totals()[STAGES.index("serialize")] > 0


def test_the_queue_worker_passes_each_result_to_its_injection_point_and_gives_up_on_a_full_queue(
    dataset: Path, queue_pickler_kept: None
) -> None:
    data = open_dataset(dataset)
    jobs = config_plan(data, CFG, epoch=0).jobs
    tasks: queue.Queue = queue.Queue()
    results: queue.Queue = queue.Queue(maxsize=1)  # room for one result: the second finds it full
    for message in (Job(0, jobs[0]), Job(0, jobs[1]), Stop()):
        tasks.put(message)
    worker = QueueWorker(0, None, data, CFG, tasks, results, SimpleNamespace(value=0), timeout=0.2)
    seen: list = []
    injection.arm("queue.result", lambda **context: seen.append(context))
    outcome: list = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    try:
        start = time.monotonic()
        thread.start()
        thread.join(10.0)
        took = time.monotonic() - start
    finally:
        injection.disarm()
    assert not thread.is_alive(), "the worker must give up on a full queue after its timeout"
    assert [type(e) for e in outcome] == [queue.Full] and took >= 0.2
    assert [sorted(c) for c in seen] == [["result", "results"]] * 2
    assert all(c["results"] is results for c in seen)
    assert [c["result"].position for c in seen] == [jobs[0].position, jobs[1].position]
    assert results.get_nowait() is seen[0]["result"]


def test_stopping_the_queue_workers_skips_every_queued_job_then_stops_each_worker() -> None:
    tasks: queue.Queue = queue.Queue()
    oldest_wanted = SimpleNamespace(value=0)
    _stop_workers(tasks, oldest_wanted, 3)
    assert oldest_wanted.value == NEVER  # every job still queued is older: answered Skipped
    assert [tasks.get_nowait() for _ in range(tasks.qsize())] == [Stop(), Stop(), Stop()]


def _zero_copy_worker(dataset: Path, n_slots: int, config: LoaderConfig = CFG):
    data = open_dataset(dataset)
    layout = SlotLayout.of(config.batch_size, data, config)
    segment = Segment.create(n_slots * layout.slot_bytes, "test")
    main_end, worker_end = Pipe()
    worker = ZeroCopyWorker(0, worker_end, data, config, segment.name, n_slots)
    return data, segment, layout.views(segment.buf, n_slots), main_end, worker


def _close(segment: Segment, worker: ZeroCopyWorker, *connections) -> None:
    worker.slots = []
    worker.segment.release()
    segment.release()
    for conn in connections:
        conn.close()


def test_the_zero_copy_worker_writes_every_tile_into_its_batch_slot_and_row(dataset: Path, expected: list) -> None:
    """A ring as long as the epoch: slot k must then hold batch k exactly as the baseline cuts it."""
    n_slots = len(expected)
    data, segment, slots, main_end, worker = _zero_copy_worker(dataset, n_slots)
    try:
        for job in config_plan(data, CFG, epoch=0).jobs:
            worker.deliver(Job(5, job))
            done = main_end.recv()
            assert isinstance(done, ImageDone)
            assert (done.generation, done.position, done.image_index, done.n_tiles, done.slot) == (
                5,
                job.position,
                job.image_index,
                job.n_tiles,
                0,
            )
            assert len(done.stages) == len(STAGES) and done.stages[STAGES.index("compute")] > 0
        for k, (want_data, want_masks) in enumerate(expected):
            size = len(want_data)
            np.testing.assert_array_equal(slots[k][0][:size], want_data, err_msg=f"batch {k}")
            np.testing.assert_array_equal(slots[k][1][:size], want_masks, err_msg=f"batch {k}")
    finally:
        slots.clear()
        _close(segment, worker, main_end)


def test_the_zero_copy_worker_writes_the_transfer_workloads_tiles_into_every_job(dataset: Path) -> None:
    """The transfer workload hands over the same tiles for every job: each job's rows get them afresh."""
    config = CFG.replace(workload="transfer")
    with make_generator("baseline", dataset, config) as gen:
        want = [(d.copy(), m.copy()) for d, m in gen]
    data, segment, slots, main_end, worker = _zero_copy_worker(dataset, len(want), config)
    try:
        for job in config_plan(data, config, epoch=0).jobs:
            worker.deliver(Job(0, job))
            main_end.recv()
        for k, (want_data, want_masks) in enumerate(want):
            np.testing.assert_array_equal(slots[k][0][: len(want_data)], want_data, err_msg=f"batch {k}")
            np.testing.assert_array_equal(slots[k][1][: len(want_masks)], want_masks, err_msg=f"batch {k}")
    finally:
        slots.clear()
        _close(segment, worker, main_end)


def test_the_zero_copy_worker_wraps_batches_around_the_ring(dataset: Path, expected: list) -> None:
    """With 3 slots, batch k lands in slot k % 3: after each image, the slots of its batches hold them."""
    n_slots = 3
    data, segment, slots, main_end, worker = _zero_copy_worker(dataset, n_slots)
    try:
        for job in config_plan(data, CFG, epoch=0).jobs:
            worker.deliver(Job(0, job))
            main_end.recv()
            for k in range(job.first_tile // CFG.batch_size, (job.end_tile - 1) // CFG.batch_size + 1):
                rows = range(
                    max(job.first_tile - k * CFG.batch_size, 0), min(job.end_tile - k * CFG.batch_size, CFG.batch_size)
                )
                for row in rows:
                    np.testing.assert_array_equal(slots[k % n_slots][0][row], expected[k][0][row], f"{k}, {row}")
                    np.testing.assert_array_equal(slots[k % n_slots][1][row], expected[k][1][row], f"{k}, {row}")
    finally:
        slots.clear()
        _close(segment, worker, main_end)


def test_the_request_loop_answers_stale_requests_skipped_and_stops_on_stop(dataset: Path) -> None:
    """The loop of every request/response worker, driven one message at a time through its pipe."""
    data, segment, slots, main_end, worker = _zero_copy_worker(dataset, 4)
    jobs = config_plan(data, CFG, epoch=0).jobs
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        main_end.send(Job(0, jobs[0]))
        assert main_end.poll(10) and isinstance(done := main_end.recv(), ImageDone) and done.position == 0
        main_end.send(Reset(1))
        main_end.send(Job(0, jobs[1]))
        assert main_end.poll(10) and main_end.recv() == Skipped(0, jobs[1].position, 0)
        main_end.send(Job(1, jobs[1]))
        assert main_end.poll(10) and isinstance(done := main_end.recv(), ImageDone) and done.generation == 1
        main_end.send(Stop())
        thread.join(10)
        assert not thread.is_alive()
        assert not main_end.poll(0.1)  # nothing after Stop
    finally:
        slots.clear()
        _close(segment, worker, main_end)
