"""pytest-benchmark: one epoch per round, for every strategy, both workloads, worker counts and batch sizes.

- ``test_epoch``: the ``full`` workload (the real per-image work), batch 32, 1 and 2 workers;
- ``test_epoch_batch_size``: the full workload's batch-size sweep at 2 workers;
- ``test_transfer``: the ``transfer`` workload (tiles computed once per worker: the IPC
  path alone) at 4 and 16 MiB of image data per batch, 2 workers, with the batches/s
  as a fraction of R (memcpy's batch copies per second on one core, ``fraction_of_r``).

The generator (its pool) is built before ``benchmark.pedantic`` and closed after it,
so start-up and shutdown are never inside a timed round; they are measured on their
own and reported in ``extra_info`` beside the per-round figures (batches/s, memory,
cleanliness, and ``stage_ms_per_batch`` where the strategy has stage timers).
``extra_info`` uses samples.jsonl's field names, so ``ipcbench report`` can read
``--benchmark-json`` output like a results folder. Groups are strategies.

A plain ``pytest`` runs each once, untimed, as a smoke test (and checks the epoch
had every batch and the shutdown was clean); ``pytest --benchmark-only
tests/benchmarks`` times them (see conftest.py for the dataset and rounds).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest

from harness.child import close_and_check
from harness.measure import MB, ProcessTree, Sampler, memory_stats, shm_segments, shm_used_bytes, stage_timer
from harness.memcpy import MemcpyResult
from strategies import STRATEGIES, LoaderConfig, make_generator
from strategies.work import tile_nbytes

WARMUP_ROUNDS = 1  # the first epoch pays for cold caches and lazily started work
SAMPLER_INTERVAL_S = 0.05  # memory only; its CPU is not inside the rounds' timing
WORKERS = (1, 2)
TRANSFER_WORKERS = 2  # the performance goals are for 2 workers
BATCH_SIZES = (8, 64)  # the sweep, at 2 workers; the main grid uses 32
# The sweep's strategies: every one but torch by default, whose workers import torch
# (seconds each) and would dominate the smoke run; IPCBENCH_BENCH_SWEEP=a,b chooses.
SWEEP = tuple(
    name
    for name in (os.environ.get("IPCBENCH_BENCH_SWEEP") or ",".join(s for s in STRATEGIES if s != "torch")).split(",")
    if name
)


def run_epochs(
    benchmark,
    setup,
    strategy: str,
    workers: int,
    batch_size: int,
    workload: str = "full",
    memcpy: MemcpyResult | None = None,
) -> None:
    """Time one epoch per round of ``strategy``; record what the timer cannot see in ``extra_info``.

    With ``memcpy``, also R for this batch size and the batches/s as a fraction of it.
    """
    benchmark.group = strategy  # before pedantic(): the stats take the group when they are created
    config = LoaderConfig(
        batch_size=batch_size, tile=setup.tile, workers=workers, start_method=setup.start_method, workload=workload
    )
    shm_before, shm_base = shm_segments(), shm_used_bytes()
    epochs: list[dict] = []
    with Sampler(ProcessTree(), SAMPLER_INTERVAL_S) as sampler:
        t0 = time.perf_counter()
        gen = make_generator(strategy, setup.dataset, config)
        startup_s = time.perf_counter() - t0
        worker_pids = list(getattr(gen, "worker_pids", lambda: [])())
        stage_times = stage_timer(gen)
        expected = len(gen)
        try:

            def one_epoch() -> int:
                stages = stage_times() if stage_times is not None else None
                start = time.perf_counter()
                batches = nbytes = 0
                for data, masks in gen:
                    batches += 1
                    nbytes += data.nbytes + masks.nbytes
                end = time.perf_counter()
                after = stage_times() if stage_times is not None else None
                epochs.append(
                    {"start": start, "end": end, "batches": batches, "bytes": nbytes, "stages": (stages, after)}
                )
                return batches

            batches = benchmark.pedantic(one_epoch, rounds=setup.rounds, iterations=1, warmup_rounds=WARMUP_ROUNDS)
        finally:
            closed = close_and_check(gen, worker_pids, shm_before, sampler.tree.seen_pids())
    timed = epochs if benchmark.disabled else epochs[WARMUP_ROUNDS:]
    rates = [e["batches"] / (e["end"] - e["start"]) for e in timed]
    memory = [memory_stats(sampler.between(e["start"], e["end"]), e["start"], shm_base) for e in timed]
    info = {
        "strategy": strategy,
        "workers": workers,
        "prefetch": config.prefetch,
        "start_method": config.start_method,
        "batch_size": batch_size,
        "tile": config.tile,
        "dataset": setup.name,
        "workload": workload,
        "step_ms": 0.0,
        "batches": timed[-1]["batches"],
        "bytes": timed[-1]["bytes"],
        "batches_per_s": statistics.median(rates),
        "rounds_batches_per_s": rates,
        "mb_per_s": statistics.median(e["bytes"] / MB / (e["end"] - e["start"]) for e in timed),
        "pss_peak_mb": max(m.pss_peak_mb for m in memory),
        "uss_peak_mb": max(m.uss_peak_mb for m in memory),
        "shm_peak_mb": max(m.shm_peak_mb for m in memory),
        "startup_s": startup_s,
        "shutdown_s": closed["shutdown_s"],
        "leaked_shm": closed["leaked_shm"],
        "leftover_processes": closed["leftover_processes"],
    }
    if stage_times is not None:
        info["stage_ms_per_batch"] = stage_ms(timed)
    if memcpy is not None:
        data, mask = tile_nbytes(setup.channels, setup.tile)
        r_rate = memcpy.batch_copies_per_s(batch_size * (data + mask))
        info.update(
            memcpy_gb_per_s=memcpy.gb_per_s, r_copies_per_s=r_rate, fraction_of_r=info["batches_per_s"] / r_rate
        )
    benchmark.extra_info.update(info)
    # What the smoke run checks: the epoch was whole and nothing was left behind.
    assert batches == expected > 0
    assert all(e["batches"] == batches for e in epochs)
    assert closed["leaked_shm"] == 0, closed["leaked_names"]
    assert closed["leftover_processes"] == 0, closed["leftover_pids"]


def stage_ms(epochs: list[dict]) -> dict[str, float]:
    """Milliseconds per batch by stage over the timed rounds (the change of ``stage_times()`` over their batches)."""
    batches = sum(e["batches"] for e in epochs)
    totals: dict[str, float] = {}
    for e in epochs:
        before, after = e["stages"]
        for stage, seconds in after.items():
            totals[stage] = totals.get(stage, 0.0) + seconds - before.get(stage, 0.0)
    return {stage: seconds * 1000.0 / batches for stage, seconds in totals.items()}


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_epoch(benchmark, bench_setup, strategy, workers):
    run_epochs(benchmark, bench_setup, strategy, workers, batch_size=32)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("strategy", SWEEP)
def test_epoch_batch_size(benchmark, bench_setup, strategy, batch_size):
    run_epochs(benchmark, bench_setup, strategy, workers=2, batch_size=batch_size)


@pytest.mark.parametrize("size", ["4MiB", "16MiB"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_transfer(benchmark, bench_setup, memcpy, strategy, size):
    mib = bench_setup.transfer_mib[["4MiB", "16MiB"].index(size)]
    batch_size = bench_setup.transfer_batch_size(mib)
    run_epochs(benchmark, bench_setup, strategy, TRANSFER_WORKERS, batch_size, workload="transfer", memcpy=memcpy)
    benchmark.extra_info["batch_mib"] = mib
    assert benchmark.extra_info["fraction_of_r"] > 0
