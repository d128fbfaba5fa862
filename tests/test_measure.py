"""harness.measure and the child's timed loop, on known inputs (no timing assertions)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from multiprocessing import shared_memory

import numpy as np
import pytest

from harness.child import time_epoch
from harness.measure import (
    FullChecksum,
    ProcessTree,
    SampleChecksum,
    Sampler,
    TreeSample,
    descendants_of,
    is_alive,
    leaked_segments,
    memory_stats,
    next_wait_s,
    segment_pid,
    shm_segments,
    shm_used_bytes,
    stage_ms_per_batch,
    stage_timer,
    wait_stats,
)

MB = 1e6
ALLOC_MB = 200


def _start_child(code: str) -> subprocess.Popen:
    """A Python child that runs ``code``, prints 'ready' and waits for stdin to close."""
    script = f"{code}\nimport sys\nprint('ready', flush=True)\nsys.stdin.read()\n"
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _stop_child(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def test_child_allocation_shows_in_tree_pss_and_uss():
    tree = ProcessTree()
    before = tree.sample()
    # np.ones touches every page: 200 MB of private, resident memory in the child.
    proc = _start_child(f"import numpy as np\na = np.ones({ALLOC_MB} * 10**6 // 8)")
    try:
        assert proc.pid in tree.pids()
        during = tree.sample()
    finally:
        _stop_child(proc)
    grown_pss = (during.pss_bytes - before.pss_bytes) / MB
    grown_uss = (during.uss_bytes - before.uss_bytes) / MB
    # 200 MB plus the child's own interpreter and numpy (~20-40 MB of mostly private pages).
    assert ALLOC_MB * 0.95 <= grown_pss <= ALLOC_MB + 80, grown_pss
    assert ALLOC_MB * 0.95 <= grown_uss <= ALLOC_MB + 80, grown_uss
    assert during.processes >= before.processes + 1


def test_cpu_of_an_exited_child_stays_counted():
    tree = ProcessTree()
    proc = _start_child("import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass")
    try:
        seen = tree.sample()
        assert proc.pid in tree.seen_pids()
    finally:
        _stop_child(proc)
    after = tree.sample()
    assert proc.pid not in tree.pids()
    # The child burnt >= 0.3 s of CPU; its last reading stays in the sum after it exits.
    assert seen.cpu_s >= 0.25
    assert after.cpu_s >= seen.cpu_s


def test_descendants_include_grandchildren():
    proc = _start_child(
        "import subprocess, sys\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'], stdin=subprocess.PIPE)"
    )
    try:
        found = descendants_of(os.getpid())
        assert proc.pid in found
        grandchildren = descendants_of(proc.pid)
        assert len(grandchildren) == 1 and grandchildren[0] in found
        assert is_alive(grandchildren[0])
    finally:
        _stop_child(proc)  # the grandchild's stdin closes with its parent: it exits too


def test_planted_shm_segment_is_seen_as_leaked():
    before = shm_segments()
    used_before = shm_used_bytes()
    name = f"ipcbench_test_{os.getpid()}"
    segment = shared_memory.SharedMemory(name=name, create=True, size=4 * 2**20)
    try:
        segment.buf[:] = b"\x01" * len(segment.buf)  # touch: tmpfs pages are allocated on write
        assert name in leaked_segments(before)
        assert shm_used_bytes() - used_before >= 3 * 2**20
    finally:
        segment.close()
        segment.unlink()
    assert name not in leaked_segments(before)


def test_wait_stats_percentiles():
    waits = [float(v) for v in range(1, 101)]  # 1..100 ms
    stats = wait_stats(waits)
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p95_ms == pytest.approx(95.05)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.max_ms == 100.0
    assert wait_stats([]).max_ms == 0.0
    assert wait_stats([7.0]).p99_ms == 7.0


def test_memory_stats_peaks_trace_and_shm_base():
    samples = [
        TreeSample(10.0, 100 * 10**6, 80 * 10**6, 5 * 10**6, 0.0, 2),
        TreeSample(10.5, 300 * 10**6, 90 * 10**6, 9 * 10**6, 0.1, 3),
        TreeSample(11.0, 200 * 10**6, 95 * 10**6, 7 * 10**6, 0.2, 3),
    ]
    stats = memory_stats(samples, t0=10.0, shm_base_bytes=5 * 10**6)
    assert (stats.pss_peak_mb, stats.uss_peak_mb, stats.shm_peak_mb) == (300.0, 95.0, 4.0)
    assert stats.trace[1] == (0.5, 300.0, 90.0, 4.0)
    assert memory_stats([], 0.0, 0).pss_peak_mb == 0.0


def _batch(seed: int, size: int = 4, tile: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 4096, (size, 2, tile, tile), dtype=np.uint16),
        rng.integers(0, 3, (size, tile, tile), dtype=np.uint8),
    )


def _digest(kind, batches) -> str:
    h = kind()
    for data, masks in batches:
        h.update(data, masks)
    return h.hexdigest()


def test_sample_checksum_sees_order_and_edges_full_checksum_sees_every_byte():
    batches = [_batch(0), _batch(1)]
    same = [(d.copy(), m.copy()) for d, m in batches]
    for kind in (SampleChecksum, FullChecksum):
        assert _digest(kind, batches) == _digest(kind, same)
        assert _digest(kind, batches) != _digest(kind, batches[::-1])
    edge = [(d.copy(), m.copy()) for d, m in batches]
    edge[0][0][0, 0, 0, 0] ^= 1  # first row of the first tile: in the sample
    assert _digest(SampleChecksum, edge) != _digest(SampleChecksum, batches)
    middle = [(d.copy(), m.copy()) for d, m in batches]
    middle[0][0][1, 0, 4, 4] ^= 1  # inside a middle tile: only the full checksum sees it
    assert _digest(SampleChecksum, middle) == _digest(SampleChecksum, batches)
    assert _digest(FullChecksum, middle) != _digest(FullChecksum, batches)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class SlowBatches:
    """An iterable whose next() costs ``costs[i]`` seconds of fake time; iter() costs 0.5 s."""

    def __init__(self, clock: FakeClock, costs: list[float]) -> None:
        self.clock, self.costs = clock, costs

    def __iter__(self):
        self.clock.now += 0.5
        for i, cost in enumerate(self.costs):
            self.clock.now += cost
            yield _batch(i)


def test_time_epoch_with_a_fake_clock():
    clock = FakeClock()
    timing = time_epoch(
        SlowBatches(clock, [0.25, 0.125, 0.0625]), step_ms=100.0, full_checksum=True, clock=clock, sleep=clock.sleep
    )
    assert timing.batches == 3 and timing.tiles == 12
    data, masks = _batch(0)
    assert timing.bytes == 3 * (data.nbytes + masks.nbytes)
    # iter() is lazy for a generator: its 0.5 s lands in the first next(), and in TTFB.
    assert timing.waits_ms == pytest.approx((750.0, 125.0, 62.5))
    assert timing.time_to_first_batch_s == pytest.approx(0.75)
    assert timing.seconds == pytest.approx(0.5 + 0.4375 + 3 * 0.1)
    assert timing.checksum_full is not None
    assert timing.checksum == _digest(SampleChecksum, [_batch(i) for i in range(3)])


def test_time_epoch_of_an_empty_epoch():
    clock = FakeClock()
    timing = time_epoch(SlowBatches(clock, []), clock=clock, sleep=clock.sleep)
    assert timing.batches == 0 and timing.waits_ms == ()
    assert timing.time_to_first_batch_s == pytest.approx(0.5)


def test_sampler_thread_samples_and_measures_itself():
    sampler = Sampler(ProcessTree(), interval_s=0.01, max_cpu_fraction=1.0)
    with sampler:
        deadline = time.monotonic() + 10
        while len(sampler.samples) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    count = len(sampler.samples)
    assert count >= 3
    assert sampler.cpu_s > 0
    assert all(s.pss_bytes > 0 and s.uss_bytes > 0 for s in sampler.samples)
    assert sampler.between(sampler.samples[0].t_s, sampler.samples[1].t_s) == sampler.samples[:2]
    time.sleep(0.05)
    assert len(sampler.samples) == count  # stopped


def test_short_lived_shared_memory_between_samples_reaches_the_next_sample(monkeypatch):
    """/dev/shm is polled between the (costly, rare) tree samples: a segment that came and went counts."""
    import harness.measure as measure

    in_use = {"bytes": 1_000}
    monkeypatch.setattr(measure, "shm_used_bytes", lambda path=measure.SHM_DIR: in_use["bytes"])
    sampler = Sampler(ProcessTree(), interval_s=60.0).start()  # no tree sample for a minute: only polls
    try:
        in_use["bytes"] = 64 << 20  # a segment appears ...
        time.sleep(10 * measure.SHM_POLL_S)
        in_use["bytes"] = 1_000  # ... and is gone before the next sample
        first = sampler.sample_now()
        second = sampler.sample_now()  # nothing came and went since the first
    finally:
        sampler.stop()
    assert first.shm_bytes == 64 << 20 and second.shm_bytes == 1_000


def test_sampler_interval_zero_samples_only_on_demand():
    sampler = Sampler(ProcessTree(), interval_s=0).start()
    sampler.sample_now()
    sampler.stop()
    assert len(sampler.samples) == 1 and sampler.cpu_s == 0.0
    with pytest.raises(ValueError, match="interval_s"):
        Sampler(ProcessTree(), interval_s=-1)


def test_segments_named_after_another_pid_belong_to_another_run():
    before = shm_segments()
    name = f"ipcbench_{os.getpid()}_feed_w0"
    segment = shared_memory.SharedMemory(name=name, create=True, size=4096)
    try:
        assert segment_pid(name) == os.getpid() and segment_pid("psm_1234") is None
        assert name in leaked_segments(before, pids={os.getpid()})
        assert name not in leaked_segments(before, pids={1})
    finally:
        segment.close()
        segment.unlink()


def test_sampler_waits_longer_after_expensive_samples():
    assert next_wait_s(0.2, 0.001, max_cpu_fraction=0.015) == 0.2  # cheap: the interval rules
    wait = next_wait_s(0.2, 0.010, max_cpu_fraction=0.015)  # 10 ms: stretch to stay in budget
    assert 0.010 / (0.010 + wait) == pytest.approx(0.015)


def test_sampler_pace_can_change_while_it_runs():
    sampler = Sampler(ProcessTree(), interval_s=60.0).start()  # would not sample for a minute
    try:
        sampler.configure(interval_s=0.01, max_cpu_fraction=1.0)  # wakes it at once
        deadline = time.monotonic() + 10
        while len(sampler.samples) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(sampler.samples) >= 3
        with pytest.raises(ValueError):
            sampler.configure(interval_s=0, max_cpu_fraction=0.5)
    finally:
        sampler.stop()


def test_stage_ms_per_batch_is_the_change_over_the_epoch_per_batch():
    before = {"compute": 1.0, "wait": 0.5}
    after = {"compute": 1.4, "wait": 0.5, "assemble": 0.02}  # assemble first reported now: it started at zero
    assert stage_ms_per_batch(before, after, batches=4) == pytest.approx(
        {"compute": 100.0, "wait": 0.0, "assemble": 5.0}
    )
    assert stage_ms_per_batch(before, after, batches=0) is None


def test_stage_timer_is_the_generators_method_or_none():
    class Timed:
        def stage_times(self) -> dict[str, float]:
            return {"compute": 2.0}

    assert stage_timer(Timed())() == {"compute": 2.0}
    assert stage_timer(object()) is None


def test_copying_together_adds_the_processes_and_leaves_none_behind() -> None:
    import psutil

    from harness.memcpy import measure_memcpy_together

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    one, two = measure_memcpy_together(1, repeats=3), measure_memcpy_together(2, repeats=3)
    assert one > 0 and two > 0
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before
    with pytest.raises(ValueError, match="processes=0"):
        measure_memcpy_together(0)


def test_the_work_side_by_side_times_each_process_and_leaves_none_behind(tmp_path) -> None:
    import statistics

    import psutil
    from conftest import write_dataset

    from harness.workbound import measure_work_side_by_side, work_dict

    dataset = write_dataset(tmp_path / "ds", images=2)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    together = measure_work_side_by_side(str(dataset), 16, 5, 2, min_s=0.05)
    alone = measure_work_side_by_side(str(dataset), 16, 5, 1, min_s=0.05)
    assert len(together) == 2 and len(alone) == 1 and all(ms > 0 for ms in together + alone)
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before
    bound = work_dict([alone], [together], 2)
    assert bound["together_ms_per_batch"] == statistics.median(together)
    assert bound["bound_batches_per_s"] == pytest.approx(2000.0 / statistics.median(together))
    with pytest.raises(ValueError, match="processes=0"):
        measure_work_side_by_side(str(dataset), 16, 5, 0)
