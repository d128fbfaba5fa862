"""Batches/s and shutdown time of every strategy, side by side, on one dataset.

A quick check between harness runs (the harness, ``ipcbench run``, is the real
instrument: fresh processes, memory sampling, reports). Here every strategy is
created, warmed up for one epoch, timed over ``--epochs`` epochs and closed, in
rounds that interleave the strategies (A B C D, A B C D, ...); the medians over
rounds are printed.

    python scripts/strategy_throughput.py --dataset real --workers 2 --rounds 3
    python scripts/strategy_throughput.py --workload transfer --epochs 8

The CPU columns say where the cores went during the timed epochs: the main
process's and the workers' CPU time (user + system, psutil) as a share of one core,
the workers' summed; "busy" is their sum over the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import psutil

from harness.datasets import SOURCES, ensure_dataset
from strategies import STRATEGIES, LoaderConfig, make_generator


def cpu_s(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds of ``processes`` so far."""
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def measure(name: str, dataset: str, config: LoaderConfig, epochs: int) -> dict[str, float]:
    t0 = time.perf_counter()
    gen = make_generator(name, dataset, config)
    startup_s = time.perf_counter() - t0
    try:
        for _ in gen:  # warm-up epoch
            pass
        main = [psutil.Process()]
        workers = [psutil.Process(pid) for pid in getattr(gen, "worker_pids", list)()]
        main_cpu, workers_cpu = cpu_s(main), cpu_s(workers)
        batches, t1 = 0, time.perf_counter()
        for _ in range(epochs):
            for _ in gen:
                batches += 1
        seconds = time.perf_counter() - t1
        main_cpu, workers_cpu = cpu_s(main) - main_cpu, cpu_s(workers) - workers_cpu
    finally:
        t2 = time.perf_counter()
        gen.close()
        shutdown_s = time.perf_counter() - t2
    return {
        "startup_s": startup_s,
        "batches_per_s": batches / seconds,
        "shutdown_s": shutdown_s,
        "main_cpu": main_cpu / seconds,
        "workers_cpu": workers_cpu / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset", default="real", help="a dataset folder, or real / synth: built under data/ if missing"
    )
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--start-method", default="forkserver")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workload", default="full", choices=["full", "transfer"])
    args = parser.parse_args()
    if args.dataset in SOURCES:  # a built-in dataset, as `ipcbench run --dataset real` takes it
        args.dataset = str(ensure_dataset(args.dataset, progress=lambda line: print(line, file=sys.stderr)))
    config = LoaderConfig(
        batch_size=args.batch_size,
        tile=args.tile,
        workers=args.workers,
        prefetch=args.prefetch,
        start_method=args.start_method,
        workload=args.workload,
    )
    names = args.strategies.split(",")
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            results[name].append(measure(name, args.dataset, config, args.epochs))
    print(
        f"{args.dataset}: workers={args.workers} prefetch={args.prefetch} batch={args.batch_size} "
        f"tile={args.tile} {args.start_method} workload={args.workload}; "
        f"medians of {args.rounds} rounds x {args.epochs} epochs"
    )
    print(
        f"{'strategy':12} {'batches/s':>10} {'x baseline':>10} {'startup s':>10} {'shutdown s':>11} "
        f"{'main CPU':>9} {'workers CPU':>12} {'busy':>6}"
    )
    base = statistics.median(r["batches_per_s"] for r in results.get("baseline", [])) if "baseline" in results else None
    cores = len(os.sched_getaffinity(0))
    for name, runs in results.items():
        bps = statistics.median(r["batches_per_s"] for r in runs)
        ratio = f"{bps / base:10.2f}" if base else f"{'-':>10}"
        main_cpu, workers_cpu = (statistics.median(r[key] for r in runs) for key in ("main_cpu", "workers_cpu"))
        print(
            f"{name:12} {bps:10.1f} {ratio} {statistics.median(r['startup_s'] for r in runs):10.2f} "
            f"{statistics.median(r['shutdown_s'] for r in runs):11.3f} {main_cpu:9.0%} {workers_cpu:12.0%} "
            f"{(main_cpu + workers_cpu) / cores:6.0%}"
        )


if __name__ == "__main__":
    main()
