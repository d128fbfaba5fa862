"""How much memory bandwidth two cores share: one process copying, then two at once.

R, the harness's memcpy rate, is what *one* core copies. Two workers copying at the
same time do not get 2 R: they share the memory bus. This measures the aggregate,
the ceiling of any 2-worker transfer (``docs/performance-notes.md``)::

    python scripts/copy_bandwidth.py --processes 1,2 --rounds 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp

from harness.memcpy import measure_memcpy


def copier(copies: int, results: mp.Queue, start: mp.Barrier) -> None:
    start.wait()  # every process measures at the same time, as workers copy at the same time
    results.put(measure_memcpy(repeats=copies).gb_per_s)  # R's own measurement: 64 MiB np.copyto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="process counts to try, in order")
    parser.add_argument("--copies", type=int, default=30, help="timed 64 MiB copies per process (median reported)")
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
            print(f"{n} process(es): {each} GB/s each (median of the copies), {sum(rates):.2f} GB/s together")


if __name__ == "__main__":
    main()
