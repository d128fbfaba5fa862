"""How much memory bandwidth two cores share: one process copying, then two at once.

R, the harness's memcpy rate, is what *one* core copies. Two workers copying at the
same time do not get 2 R: they share the memory bus. This measures the aggregate,
the ceiling of any 2-worker transfer (``docs/performance-notes.md``)::

    python scripts/copy_bandwidth.py --processes 1,2 --rounds 2
    python scripts/copy_bandwidth.py --tile-kib 128   # copies the way zero-copy workers write tiles
    # 4 MiB runs past the cache, as the workers copy (docs/design.md section 9):
    GLIBC_TUNABLES=glibc.cpu.x86_non_temporal_threshold=0x100000 python scripts/copy_bandwidth.py --tile-kib 4096

``--tile-kib`` copies tile by tile instead of 64 MiB at once: a 32 MiB source (a
transfer workload's bank of tiles is ~27 MB per worker) into a 128 MiB destination
(zero-copy ``shm``'s batch slots), wrapping around both, as a zero-copy worker does.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from harness.memcpy import DEFAULT_BYTES, measure_memcpy_together, run_side_by_side

SOURCE_BYTES, DESTINATION_BYTES = 32 * 2**20, 128 * 2**20


def tile_copies_gb_per_s(tile_bytes: int, copies: int) -> float:
    """Median GB/s of ``copies`` rounds of 64 MiB copied ``tile_bytes`` at a time, source and destination wrapping."""
    src = np.ones(SOURCE_BYTES, np.uint8)
    dst = np.ones(DESTINATION_BYTES, np.uint8)  # ones: every page touched, as reused slots are
    rates, s_at, d_at = [], 0, 0
    for _ in range(copies):
        t0 = time.perf_counter()
        for _ in range(DEFAULT_BYTES // tile_bytes):
            s_at = 0 if s_at + tile_bytes > SOURCE_BYTES else s_at
            d_at = 0 if d_at + tile_bytes > DESTINATION_BYTES else d_at
            dst[d_at : d_at + tile_bytes] = src[s_at : s_at + tile_bytes]
            s_at, d_at = s_at + tile_bytes, d_at + tile_bytes
        rates.append(DEFAULT_BYTES // tile_bytes * tile_bytes / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def copier(copies: int, tile_bytes: int, start: Any, results: Any) -> None:
    start.wait()  # every process measures at the same time, as workers copy at the same time
    results.put(tile_copies_gb_per_s(tile_bytes, copies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="process counts to try, in order")
    parser.add_argument("--copies", type=int, default=30, help="timed 64 MiB copies per process (median reported)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tile-kib", type=int, default=0, help="copy this many KiB at a time (0: 64 MiB at once)")
    args = parser.parse_args()
    for _ in range(args.rounds):
        for n in (int(p) for p in args.processes.split(",")):
            if not args.tile_kib:  # R's own measurement, 64 MiB np.copyto, as ipcbench run takes it
                together = measure_memcpy_together(n, repeats=args.copies)
                print(f"{n} process(es): {together:.2f} GB/s together")
                continue
            rates = run_side_by_side(copier, (args.copies, args.tile_kib * 1024), n, timeout_s=120.0)
            each = ", ".join(f"{r:.2f}" for r in rates)
            print(f"{n} process(es): {each} GB/s each (median of the copies), {sum(rates):.2f} GB/s together")


if __name__ == "__main__":
    main()
