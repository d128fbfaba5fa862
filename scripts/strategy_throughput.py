"""Batches/s and shutdown time of every strategy, side by side, on one dataset.

A quick check between harness runs (the harness, ``ipcbench run``, is the real
instrument: fresh processes, memory sampling, reports). Here every strategy is
created, warmed up for one epoch, timed over ``--epochs`` epochs and closed, in
rounds that interleave the strategies (A B C D, A B C D, ...); the medians over
rounds are printed.

    python scripts/strategy_throughput.py --dataset data/real --workers 2 --rounds 3
    python scripts/strategy_throughput.py --workload transfer --epochs 8
"""

from __future__ import annotations

import argparse
import statistics
import time

from strategies import STRATEGIES, LoaderConfig, make_generator


def measure(name: str, dataset: str, config: LoaderConfig, epochs: int) -> dict[str, float]:
    t0 = time.perf_counter()
    gen = make_generator(name, dataset, config)
    startup_s = time.perf_counter() - t0
    try:
        for _ in gen:  # warm-up epoch
            pass
        batches, t1 = 0, time.perf_counter()
        for _ in range(epochs):
            for _ in gen:
                batches += 1
        seconds = time.perf_counter() - t1
    finally:
        t2 = time.perf_counter()
        gen.close()
        shutdown_s = time.perf_counter() - t2
    return {"startup_s": startup_s, "batches_per_s": batches / seconds, "shutdown_s": shutdown_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="data/real")
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
    print(f"{'strategy':12} {'batches/s':>10} {'x baseline':>10} {'startup s':>10} {'shutdown s':>11}")
    base = statistics.median(r["batches_per_s"] for r in results.get("baseline", [])) if "baseline" in results else None
    for name, runs in results.items():
        bps = statistics.median(r["batches_per_s"] for r in runs)
        ratio = f"{bps / base:10.2f}" if base else f"{'-':>10}"
        print(
            f"{name:12} {bps:10.1f} {ratio} {statistics.median(r['startup_s'] for r in runs):10.2f} "
            f"{statistics.median(r['shutdown_s'] for r in runs):11.3f}"
        )


if __name__ == "__main__":
    main()
