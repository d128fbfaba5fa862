"""pytest-benchmark: every strategy on the same work, one benchmark per (strategy, workload), 2 workers.

- ``test_full``: the ``full`` workload (the real per-image work), batch 32: group "full";
- ``test_transfer``: the ``transfer`` workload (tiles computed once per worker: the IPC
  path alone) at 4 and 16 MiB of image data per batch: groups "transfer 4 MiB" and
  "transfer 16 MiB", with the batches/s as a fraction of R (memcpy's batch copies per
  second on one core, ``fraction_of_r``).

Groups are workloads, so the table's relative column compares strategies on the same
work; the baseline, which has no workers, appears once in each. Rounds are calibrated
as pyperf calibrates its loops: a first window of whole epochs, at least
``min_window_s`` long, warms the pool up and counts how many epochs (``iterations``)
a round needs to last that long; every timed round then runs that many epochs, and
pytest-benchmark divides its time by them: the figures are seconds per epoch, rounds
long enough to be steady. The generator (its pool) is built before
``benchmark.pedantic`` and closed after it, so start-up and shutdown are never inside
a round; they are measured on their own and reported in ``extra_info`` beside the
per-round figures (batches/s, memory, cleanliness, ``stage_ms_per_batch``).
``extra_info`` uses samples.jsonl's field names, so ``ipcbench report`` reads
``--benchmark-json`` output like a results folder, and the session ends with the
performance goals computed from these benchmarks (tests/benchmarks/conftest.py).

A plain ``pytest`` runs each once, untimed, on a tiny dataset, as a smoke test (and
checks the epochs were whole and the shutdown clean); ``pytest --benchmark-only
tests/benchmarks`` times them (see conftest.py for the dataset and rounds).
"""

from __future__ import annotations

import math
import statistics
import time

import pytest

from harness.child import close_and_check
from harness.measure import MB, ProcessTree, Sampler, memory_stats, shm_segments, shm_used_bytes, stage_timer
from harness.memcpy import MemcpyResult
from strategies import STRATEGIES, LoaderConfig, make_generator
from strategies.work import tile_nbytes

from .conftest import RECORDED, BenchSetup

SAMPLER_INTERVAL_S = 0.05  # memory only; its CPU is not inside the rounds' timing
WORKERS = 2  # the performance goals are for 2 workers
FULL_BATCH = 32
SIZES = ("4MiB", "16MiB")


def run_windows(
    benchmark,
    setup: BenchSetup,
    strategy: str,
    batch_size: int,
    *,
    group: str,
    workload: str = "full",
    memcpy: MemcpyResult | None = None,
    batch_mib: float | None = None,
) -> None:
    """Time calibrated rounds of ``strategy``; record what the timer cannot see in ``extra_info``.

    With ``memcpy``, also R for this batch size and the batches/s as a fraction of it.
    """
    benchmark.group = group  # before pedantic(): the stats take the group when they are created
    config = LoaderConfig(
        batch_size=batch_size, tile=setup.tile, workers=WORKERS, start_method=setup.start_method, workload=workload
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

            # Calibration (and warm-up): whole epochs until a window lasts min_window_s.
            started = time.perf_counter()
            while not epochs or time.perf_counter() - started < setup.min_window_s:
                one_epoch()
            calibration = len(epochs)
            per_round = max(1, math.ceil(setup.min_window_s / ((time.perf_counter() - started) / calibration)))
            batches = benchmark.pedantic(one_epoch, rounds=setup.rounds, iterations=per_round, warmup_rounds=0)
        finally:
            closed = close_and_check(gen, worker_pids, shm_before, sampler.tree.seen_pids())
    if benchmark.disabled:  # the untimed smoke run: pedantic() called the function once
        per_round, expected_rounds = 1, 1
    else:
        expected_rounds = setup.rounds
    # With iterations > 1, pedantic() calls the function once more after the rounds, for its result: untimed.
    timed = epochs[calibration : calibration + expected_rounds * per_round]
    rounds = [timed[i : i + per_round] for i in range(0, len(timed), per_round)]
    rates = [sum(e["batches"] for e in r) / (r[-1]["end"] - r[0]["start"]) for r in rounds]
    memory = [memory_stats(sampler.between(r[0]["start"], r[-1]["end"]), r[0]["start"], shm_base) for r in rounds]
    info = {
        "strategy": strategy,
        "workers": WORKERS,
        "prefetch": config.prefetch,
        "start_method": config.start_method,
        "batch_size": batch_size,
        "tile": config.tile,
        "dataset": setup.name,
        "workload": workload,
        "step_ms": 0.0,
        "epochs_per_round": per_round,
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
    if batch_mib is not None:
        info["batch_mib"] = batch_mib
    if memcpy is not None:
        data, mask = tile_nbytes(setup.channels, setup.tile)
        r_rate = memcpy.batch_copies_per_s(batch_size * (data + mask))
        info.update(
            memcpy_gb_per_s=memcpy.gb_per_s, r_copies_per_s=r_rate, fraction_of_r=info["batches_per_s"] / r_rate
        )
    benchmark.extra_info.update(info)
    # What the session's goals are computed from (conftest.py): seconds per epoch of each round, as pytest-benchmark.
    round_seconds = [info["batches"] / rate for rate in rates]
    RECORDED.append({"name": benchmark.name, "group": group, "stats": {"data": round_seconds}, "extra_info": info})
    # What the smoke run checks: the epochs were whole and nothing was left behind.
    assert batches == expected > 0
    assert all(e["batches"] == batches for e in epochs)
    assert len(rounds) == expected_rounds and all(len(r) == per_round for r in rounds)
    assert closed["leaked_shm"] == 0, closed["leaked_names"]
    assert closed["leftover_processes"] == 0, closed["leftover_pids"]


def stage_ms(epochs: list[dict]) -> dict[str, float]:
    """Milliseconds per batch by stage over the timed epochs (the change of ``stage_times()`` over their batches)."""
    batches = sum(e["batches"] for e in epochs)
    totals: dict[str, float] = {}
    for e in epochs:
        before, after = e["stages"]
        for stage, seconds in after.items():
            totals[stage] = totals.get(stage, 0.0) + seconds - before.get(stage, 0.0)
    return {stage: seconds * 1000.0 / batches for stage, seconds in totals.items()}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_full(benchmark, bench_setup, strategy):
    run_windows(benchmark, bench_setup, strategy, FULL_BATCH, group=f"full, batch {FULL_BATCH}")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_transfer(benchmark, bench_setup, memcpy, strategy, size):
    mib = bench_setup.transfer_mib[SIZES.index(size)]
    batch_size = bench_setup.transfer_batch_size(mib)
    label = size.replace("MiB", " MiB")
    run_windows(
        benchmark,
        bench_setup,
        strategy,
        batch_size,
        group=f"transfer {label}",
        workload="transfer",
        memcpy=memcpy,
        batch_mib=mib,
    )
    assert benchmark.extra_info["fraction_of_r"] > 0
