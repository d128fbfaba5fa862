"""The full workload's two-core bound, measured: the per-image work alone and side by side.

The compute bound of the report's goals is ``cores / the baseline's compute stage``: the
rate if every core did the per-image work as fast as one core does it alone. Two cores
doing it at once can each be slower (decoding, cutting and masking an image moves ~150 MB
through memory, and the cores share the memory bus and the last-level cache, as the
two-core copy bound shows for plain copies); this measures whether they are. :func:`measure_work_side_by_side` runs the
per-image work (:class:`strategies.work.ImageProcessor`, one decode thread, reused
buffers: no IPC, no batches) in ``processes`` forked processes started at one barrier,
and returns each one's milliseconds per batch; ``ipcbench run`` records one process
alone and two side by side, at its start and at its end (env.json ``work``), for runs
with the full workload. ``processes x 1000 / ms`` is what that many cores can reach
doing nothing but the work: no loader can beat it, and one that costs nothing else
reaches it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from .memcpy import run_side_by_side

PROCESSES_TOGETHER = 2  # the goals' worker count on this 2-core class of machine
DEFAULT_MIN_S = 1.0  # per round, alone and side by side: two calibrated windows
WARM_UP_IMAGES = 2  # decode buffers allocated and faulted before the clock starts


def _work(dataset: str, tile: int, batch_size: int, min_s: float, start: Any, results: Any) -> None:
    """One process of :func:`measure_work_side_by_side` (a forked child)."""
    from strategies import LoaderConfig, open_dataset
    from strategies.plan import make_plan
    from strategies.work import image_buffers, make_processor

    images = open_dataset(dataset)
    config = LoaderConfig(batch_size=batch_size, tile=tile, decode_threads=1)
    processor = make_processor(images, config, decoders=1)
    jobs = make_plan(images.shapes, seed=0, epoch=0, tile=tile, batch_size=batch_size).jobs
    data, masks = image_buffers(max(job.n_tiles for job in jobs), images, config)
    for job in jobs[:WARM_UP_IMAGES]:
        processor.process(job, data, masks)
    start.wait()  # every process works at the same time, as workers do
    tiles, began = 0, time.perf_counter()
    while True:
        for job in jobs:
            processor.process(job, data, masks)
            tiles += job.n_tiles
        elapsed = time.perf_counter() - began
        if elapsed >= min_s:
            break
    results.put(elapsed * 1000.0 / (tiles / batch_size))


def measure_work_side_by_side(
    dataset: str, tile: int, batch_size: int, processes: int, min_s: float = DEFAULT_MIN_S, timeout_s: float = 120.0
) -> list[float]:
    """Milliseconds of per-image work per batch in each of ``processes`` processes working at once.

    Whole passes over the dataset's images (epoch 0's plan) until ``min_s`` has passed, in
    processes started at one barrier (:func:`harness.memcpy.run_side_by_side`).
    """
    args = (str(dataset), tile, batch_size, min_s)
    return sorted(run_side_by_side(_work, args, processes, timeout_s))


def work_dict(alone: Sequence[list[float]], together: Sequence[list[float]], processes: int) -> dict[str, object]:
    """env.json ``work``: each round's ms per batch alone and side by side, the medians, and the bound."""
    alone_ms = statistics.median(ms for round_ in alone for ms in round_)
    together_ms = statistics.median(ms for round_ in together for ms in round_)
    return {
        "processes": processes,
        "alone_ms_per_batch": alone_ms,
        "together_ms_per_batch": together_ms,
        "bound_batches_per_s": processes * 1000.0 / together_ms,
        "rounds_alone_ms": [list(r) for r in alone],
        "rounds_together_ms": [list(r) for r in together],
        "method": f"the full workload's per-image work (one decode thread, reused buffers), 1 process alone and "
        f"{processes} side by side from one barrier, whole passes over the images for >= {DEFAULT_MIN_S:g} s; "
        "one round at the run's start, one at its end; bound = processes x 1000 / the side-by-side median",
    }
