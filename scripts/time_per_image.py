"""Per-image work time of the built-in datasets, and the synth generator's CPU time per image.

What one worker spends on one image (read + decode image and labels, assemble the
mask, cut 140 tiles of 256 px) sets the ceiling of every strategy: with W workers no
strategy can beat W / (work time) images per second. This script measures it with
``strategies.work.ImageProcessor.process`` over the epoch plan the generators use
(batch 32, tile 256, shuffled, augmented), for ``real`` and for ``synth`` with each
compression, and prints the median, the spread and the implied throughput.

    .venv/bin/python scripts/time_per_image.py [--repeats 3] [--synth-images 4] [--data-dir data]

Datasets are built (or reused) with ``harness.datasets.ensure_dataset`` under
``--data-dir``. Times are wall-clock per image in one process with one decode thread
(tifffile ``maxworkers=1``, as the workers run); on a shared machine, trust medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from harness.datasets import default_dataset_dir, ensure_dataset
from harness.datasets.synth import SynthParams, render
from strategies import make_plan, open_dataset
from strategies.work import ImageProcessor

BATCH_SIZE = 32
TILE = 256


def work_times_ms(path: Path, repeats: int) -> tuple[list[float], int, float]:
    """Per-image process() times (ms) over ``repeats`` epochs; tiles per image; MB read per image."""
    dataset = open_dataset(path)
    processor = ImageProcessor(dataset, TILE)
    times, tiles = [], []
    for epoch in range(repeats):
        plan = make_plan(dataset.shapes, seed=0, epoch=epoch, tile=TILE, batch_size=BATCH_SIZE)
        for job in plan.jobs:
            started = time.perf_counter()
            processor.process(job)
            times.append((time.perf_counter() - started) * 1e3)
            tiles.append(job.n_tiles)
    e = dataset.entries[0]
    raw_mb = (e.channels * 2 + 2) * e.height * e.width / 1e6  # uint16 image + uint16 labels, decoded
    return times, int(np.median(tiles)), raw_mb


def render_cpu_s(params: SynthParams, count: int) -> list[float]:
    """CPU seconds (time.process_time) to render each of ``count`` synth images."""
    times = []
    for index in range(count):
        started = time.process_time()
        render(params, index)
        times.append(time.process_time() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per dataset (default 3)")
    parser.add_argument("--synth-images", type=int, default=4, help="images per synth dataset (default 4)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where datasets are built (default data)")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def ensure(source: str, **params: object) -> Path:
        # The folder ensure_dataset would pick by default, under --data-dir instead of data/.
        folder = args.data_dir / default_dataset_dir(source, **params).name
        return ensure_dataset(source, folder, progress=say, **params)

    cases = [("real", ensure("real"))]
    for compression in ("none", "zlib", "zstd"):
        cases.append((f"synth {compression}", ensure("synth", images=args.synth_images, compression=compression)))

    print(f"per-image work: ImageProcessor.process, batch {BATCH_SIZE}, tile {TILE}, {args.repeats} epochs")
    print(
        f"{'dataset':<12} {'images':>6} {'tiles':>5} {'median ms':>9} {'p10 ms':>7} {'p90 ms':>7} "
        f"{'images/s':>8} {'decoded MB/s':>12}"
    )
    for name, path in cases:
        times, tiles, raw_mb = work_times_ms(path, args.repeats)
        median = statistics.median(times)
        p10, p90 = np.percentile(times, [10, 90])
        print(
            f"{name:<12} {len(times):>6} {tiles:>5} {median:>9.1f} {p10:>7.1f} {p90:>7.1f} "
            f"{1e3 / median:>8.1f} {raw_mb / median * 1e3:>12.0f}"
        )

    params = SynthParams()
    cpu = render_cpu_s(params, 5)
    print(
        f"\nsynth render, {params.channels} x {params.height} x {params.width}: CPU s per image "
        f"(time.process_time) median {statistics.median(cpu):.3f}, min {min(cpu):.3f}, max {max(cpu):.3f} "
        f"over {len(cpu)} images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
