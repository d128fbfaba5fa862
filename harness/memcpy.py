"""This machine's memcpy bandwidth: the physical ceiling every strategy's transfer rate sits under.

Every strategy ends by copying tiles into fresh batch arrays, and the IPC designs add
copies (into a pipe, out of a queue, into and out of shared memory). Expressing a
strategy's MB/s as a fraction of what one core can copy (``np.copyto`` between two
64 MiB buffers, already touched so no page faults are timed) says how close to the
limit it runs. ``batch_copies_per_s_one_core`` puts the same number in the
benchmark's own unit: how many batches of the run's size one core could copy per
second if copying were all it did. That rate is R: a strategy's batches/s
over R is the fraction of one core's copy bandwidth its transfer reaches. A batch's
bytes are what the training loop receives, data and masks; a run with several batch
sizes records R for each (``by_batch_size``).

GB here is 1e9 bytes of payload copied (each byte is read once and written once).

Two cores copying at once do not get 2 R: they share the memory bus. The *two-core copy
bound* (:func:`measure_memcpy_together`: two processes copying side by side, started
at one barrier, their medians added) is the ceiling of any 2-worker transfer, the
strategy's workers copying all the time and its main process costing nothing;
``ipcbench run`` records it beside R (env.json ``memcpy.together``).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_BYTES = 64 * 2**20
DEFAULT_REPEATS = 15
COPIERS_TOGETHER = 2  # the two-core copy bound: the transfer goals' worker count


@dataclass(frozen=True, slots=True)
class MemcpyResult:
    bytes: int
    gb_per_s: float  # median of the repeats
    samples: tuple[float, ...]  # GB/s of each repeat
    rounds: tuple[float, ...] = ()  # median GB/s of each round, when several were combined

    def batch_copies_per_s(self, batch_bytes: int) -> float:
        """Batches of ``batch_bytes`` one core could copy per second at this bandwidth."""
        if batch_bytes <= 0:
            raise ValueError(f"{batch_bytes=} must be > 0")
        return self.gb_per_s * 1e9 / batch_bytes

    def as_dict(self, batch_bytes: int, by_batch_size: Mapping[int, int] | None = None) -> dict[str, object]:
        """env.json ``memcpy``: R for ``batch_bytes`` (the run's first batch size) and for each of ``by_batch_size``.

        ``by_batch_size`` maps tiles per batch to that batch's bytes.
        """
        return {
            "bytes": self.bytes,
            "gb_per_s": self.gb_per_s,
            "batch_bytes": batch_bytes,
            "batch_copies_per_s_one_core": self.batch_copies_per_s(batch_bytes),
            "by_batch_size": [
                {
                    "batch_size": size,
                    "batch_bytes": nbytes,
                    "batch_copies_per_s_one_core": self.batch_copies_per_s(nbytes),
                }
                for size, nbytes in sorted((by_batch_size or {}).items())
            ],
            "samples": list(self.samples),
            "rounds_gb_per_s": list(self.rounds or (self.gb_per_s,)),
            "method": "np.copyto between two pre-touched buffers, median of the repeats of every round "
            "(ipcbench run: one at its start, one at its end), GB = 1e9 bytes",
        }


def measure_memcpy(
    nbytes: int = DEFAULT_BYTES, repeats: int = DEFAULT_REPEATS, clock: Callable[[], float] = time.perf_counter
) -> MemcpyResult:
    """Median single-core copy bandwidth for buffers of ``nbytes``."""
    if nbytes < 1 or repeats < 1:
        raise ValueError(f"{nbytes=} and {repeats=} must be >= 1")
    src = np.ones(nbytes, dtype=np.uint8)  # ones, not empty: every page is touched
    dst = np.zeros(nbytes, dtype=np.uint8)
    np.copyto(dst, src)  # one untimed copy: caches and TLB as in the timed ones
    samples = []
    for _ in range(repeats):
        t0 = clock()
        np.copyto(dst, src)
        elapsed = clock() - t0
        samples.append(nbytes / max(elapsed, 1e-9) / 1e9)
    return MemcpyResult(nbytes, statistics.median(samples), tuple(samples))


def run_side_by_side(target: Callable[..., None], args: tuple[Any, ...], processes: int, timeout_s: float) -> list[Any]:
    """Run ``target(*args, start, results)`` in ``processes`` forked processes at once; each puts one result.

    ``start`` is a barrier every process waits at before its timed work, so that they
    work at the same time, as workers do; ``results`` a queue for its one result. The
    results come back in the order they arrived; every process is joined (or killed)
    before this returns.
    """
    if processes < 1:
        raise ValueError(f"{processes=} must be >= 1")
    ctx = mp.get_context("fork")
    results, start = ctx.Queue(), ctx.Barrier(processes)
    children = [ctx.Process(target=target, args=(*args, start, results)) for _ in range(processes)]
    try:
        for child in children:
            child.start()
        return [results.get(timeout=timeout_s) for _ in children]
    finally:
        for child in children:
            child.join(timeout=5.0)
            if child.is_alive():
                child.kill()
                child.join()
        results.close()
        results.join_thread()


def _copy_side_by_side(repeats: int, start: Any, results: Any) -> None:
    """One copier of :func:`measure_memcpy_together` (a child process)."""
    start.wait()  # every process copies at the same time, as workers do
    results.put(measure_memcpy(repeats=repeats).gb_per_s)


def measure_memcpy_together(processes: int = 2, repeats: int = DEFAULT_REPEATS, timeout_s: float = 120.0) -> float:
    """GB/s that ``processes`` processes copy together, each ``np.copyto`` of 64 MiB at the same time.

    The sum of each process's median (:func:`run_side_by_side`).
    """
    return float(sum(run_side_by_side(_copy_side_by_side, (repeats,), processes, timeout_s)))


def together_dict(rounds: Sequence[float], processes: int) -> dict[str, object]:
    """env.json ``memcpy.together``: the rounds of :func:`measure_memcpy_together` and their median."""
    return {
        "processes": processes,
        "gb_per_s": statistics.median(rounds),
        "rounds_gb_per_s": list(rounds),
        "method": f"{processes} processes side by side, each np.copyto of 64 MiB (median of its repeats), "
        "summed; one round at the run's start, one at its end",
    }


def combine(results: Sequence[MemcpyResult]) -> MemcpyResult:
    """One bandwidth from several rounds: the median of all their repeats.

    ``ipcbench run`` measures at its start and at its end, so that R describes the
    minutes its cells ran in, not only its first second: this VM's bandwidth drifts.
    """
    if not results or len({r.bytes for r in results}) != 1:
        raise ValueError("combine needs one or more rounds of the same buffer size")
    samples = tuple(s for r in results for s in r.samples)
    return MemcpyResult(results[0].bytes, statistics.median(samples), samples, tuple(r.gb_per_s for r in results))
