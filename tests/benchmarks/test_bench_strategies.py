"""pytest-benchmark: one epoch per round, for every strategy, worker count and a batch-size sweep.

The generator (its pool) is built before ``benchmark.pedantic`` and closed after it,
so start-up and shutdown are never inside a timed round; they are measured on their
own and reported in ``extra_info`` beside the per-round figures (batches/s, memory,
cleanliness). ``extra_info`` uses samples.jsonl's field names, so ``ipcbench report``
can read ``--benchmark-json`` output like a results folder. Groups are strategies.

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
from harness.measure import MB, ProcessTree, Sampler, memory_stats, shm_segments, shm_used_bytes
from strategies import STRATEGIES, LoaderConfig, make_generator

WARMUP_ROUNDS = 1  # the first epoch pays for cold caches and lazily started work
SAMPLER_INTERVAL_S = 0.05  # memory only; its CPU is not inside the rounds' timing
WORKERS = (1, 2)
BATCH_SIZES = (8, 64)  # the sweep, at 2 workers; the main grid uses 32
# The sweep's strategies: every one but torch by default, whose workers import torch
# (seconds each) and would dominate the smoke run; IPCBENCH_BENCH_SWEEP=a,b chooses.
SWEEP = tuple(
    name
    for name in (os.environ.get("IPCBENCH_BENCH_SWEEP") or ",".join(s for s in STRATEGIES if s != "torch")).split(",")
    if name
)


def run_epochs(benchmark, setup, strategy: str, workers: int, batch_size: int) -> None:
    benchmark.group = strategy  # before pedantic(): the stats take the group when they are created
    config = LoaderConfig(batch_size=batch_size, tile=setup.tile, workers=workers, start_method=setup.start_method)
    shm_before, shm_base = shm_segments(), shm_used_bytes()
    epochs: list[dict] = []
    with Sampler(ProcessTree(), SAMPLER_INTERVAL_S) as sampler:
        t0 = time.perf_counter()
        gen = make_generator(strategy, setup.dataset, config)
        startup_s = time.perf_counter() - t0
        worker_pids = list(getattr(gen, "worker_pids", lambda: [])())
        expected = len(gen)
        try:

            def one_epoch() -> int:
                start = time.perf_counter()
                batches = nbytes = 0
                for data, masks in gen:
                    batches += 1
                    nbytes += data.nbytes + masks.nbytes
                epochs.append({"start": start, "end": time.perf_counter(), "batches": batches, "bytes": nbytes})
                return batches

            batches = benchmark.pedantic(one_epoch, rounds=setup.rounds, iterations=1, warmup_rounds=WARMUP_ROUNDS)
        finally:
            closed = close_and_check(gen, worker_pids, shm_before, sampler.tree.seen_pids())
    timed = epochs if benchmark.disabled else epochs[WARMUP_ROUNDS:]
    rates = [e["batches"] / (e["end"] - e["start"]) for e in timed]
    memory = [memory_stats(sampler.between(e["start"], e["end"]), e["start"], shm_base) for e in timed]
    benchmark.extra_info.update(
        {
            "strategy": strategy,
            "workers": workers,
            "prefetch": config.prefetch,
            "start_method": config.start_method,
            "batch_size": batch_size,
            "tile": config.tile,
            "dataset": setup.name,
            "workload": "full",
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
    )
    # What the smoke run checks: the epoch was whole and nothing was left behind.
    assert batches == expected > 0
    assert all(e["batches"] == batches for e in epochs)
    assert closed["leaked_shm"] == 0, closed["leaked_names"]
    assert closed["leftover_processes"] == 0, closed["leftover_pids"]


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_epoch(benchmark, bench_setup, strategy, workers):
    run_epochs(benchmark, bench_setup, strategy, workers, batch_size=32)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("strategy", SWEEP)
def test_epoch_batch_size(benchmark, bench_setup, strategy, batch_size):
    run_epochs(benchmark, bench_setup, strategy, workers=2, batch_size=batch_size)
