"""How much memory bandwidth two cores share: one process copying, then two at once.

R, the harness's memcpy rate, is what *one* core copies. Two workers copying at the
same time do not get 2 R: they share the memory bus. This measures the aggregate,
the ceiling of any 2-worker transfer (``docs/performance-notes.md``)::

    python scripts/copy_bandwidth.py --processes 1,2 --rounds 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

BYTES = 64 * 2**20  # as harness.memcpy: larger than the last-level cache


def copier(copies: int, results: mp.Queue, start: mp.Barrier) -> None:
    source = np.ones(BYTES, np.uint8)
    target = np.empty_like(source)
    np.copyto(target, source)  # touch both: no page faults in the timed loop
    start.wait()
    began = time.perf_counter()
    for _ in range(copies):
        np.copyto(target, source)
    results.put(copies * BYTES / (time.perf_counter() - began) / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="process counts to try, in order")
    parser.add_argument("--copies", type=int, default=30, help="64 MiB copies per process")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    for _ in range(args.rounds):
        for n in (int(p) for p in args.processes.split(",")):
            results, start = ctx.Queue(), ctx.Barrier(n)
            procs = [ctx.Process(target=copier, args=(args.copies, results, start)) for _ in range(n)]
            for p in procs:
                p.start()
            rates = [results.get(timeout=120) for _ in procs]
            for p in procs:
                p.join()
            each = ", ".join(f"{r:.2f}" for r in rates)
            print(f"{n} process(es): {each} GB/s each, {sum(rates):.2f} GB/s together")


if __name__ == "__main__":
    main()
