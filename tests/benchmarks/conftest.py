"""Benchmark fixtures: which dataset, tile, transfer batch sizes and how many rounds (environment variables).

``IPCBENCH_BENCH_DATASET=DIR``  a dataset folder to time, or ``real`` / ``tiny`` (default: ``real``, the
                                cached data/real, when timing; ``tiny`` for the untimed smoke run:
                                4 two-channel images of 256 x 320, written here, tile 64)
``IPCBENCH_BENCH_TILE=T``       tile size (default: 64 for the tiny dataset, else 256)
``IPCBENCH_BENCH_ROUNDS=R``     timed epochs per benchmark (default: 5), after 1 warm-up epoch
``IPCBENCH_BENCH_START_METHOD`` multiprocessing start method (default: LoaderConfig's)
``IPCBENCH_BENCH_SWEEP=a,b``    strategies of the batch-size sweep (default: all but torch)
``IPCBENCH_BENCH_REPEATS=N``    fresh processes per cell of the performance goals run (default: 3, x 2 epochs)

The transfer workload runs at 4 and 16 MiB of image data per batch when timing; the
smoke run keeps the same 1:4 ratio at 1/64 of the size, so that a tiny epoch still
holds several batches. A plain ``pytest`` runs every benchmark once, untimed
(tests/conftest.py disables pytest-benchmark unless ``--benchmark-only`` or
``--benchmark-enable`` is given), as a smoke test on the tiny dataset;
``pytest --benchmark-only tests/benchmarks`` times them on the real dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import write_dataset  # tests/conftest.py (this package's own is benchmarks.conftest)

from harness.memcpy import MemcpyResult, measure_memcpy
from harness.plan import batch_size_for_mib
from strategies import LoaderConfig, open_dataset

TINY = {"images": 4, "height": 256, "width": 320, "channels": 2}
TRANSFER_MIB = (4.0, 16.0)  # the transfer workload's batch sizes
SMOKE_TRANSFER_MIB = (4.0 / 64, 16.0 / 64)
SMOKE_MEMCPY_BYTES = 8 * 2**20  # the smoke run only checks that R is computed


@dataclass(frozen=True, slots=True)
class BenchSetup:
    dataset: Path
    name: str  # the dataset's name in extra_info
    tile: int
    rounds: int
    start_method: str
    channels: int  # of the dataset's images: turns MiB into tiles
    transfer_mib: tuple[float, ...]  # the transfer workload's batch sizes
    timed: bool  # False for the untimed smoke run (plain pytest)
    repeats: int  # processes per cell of the goals run

    def transfer_batch_size(self, mib: float) -> int:
        return batch_size_for_mib(mib, self.channels, self.tile)


def _timed(config: pytest.Config) -> bool:
    return not getattr(config.option, "benchmark_disable", True)


@pytest.fixture(scope="session")
def bench_setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> BenchSetup:
    timed = _timed(request.config)
    given = os.environ.get("IPCBENCH_BENCH_DATASET") or ("real" if timed else "tiny")
    if given == "tiny":
        dataset = write_dataset(tmp_path_factory.mktemp("bench") / "tiny", **TINY)
        name, default_tile = "tiny", 64
    elif given == "real":
        from harness.datasets import ensure_dataset

        dataset = Path(ensure_dataset("real"))
        name, default_tile = "real", 256
    else:
        dataset = Path(given)
        if not dataset.is_dir():
            raise pytest.UsageError(f"IPCBENCH_BENCH_DATASET={given} is neither real, tiny nor a dataset folder")
        name, default_tile = dataset.name, 256
    return BenchSetup(
        dataset=dataset,
        name=name,
        tile=int(os.environ.get("IPCBENCH_BENCH_TILE", default_tile)),
        rounds=int(os.environ.get("IPCBENCH_BENCH_ROUNDS", 5)),
        start_method=os.environ.get("IPCBENCH_BENCH_START_METHOD", LoaderConfig().start_method),
        channels=open_dataset(dataset).channels,
        transfer_mib=TRANSFER_MIB if timed else SMOKE_TRANSFER_MIB,
        timed=timed,
        repeats=int(os.environ.get("IPCBENCH_BENCH_REPEATS", 3)),
    )


@pytest.fixture(scope="session")
def memcpy(bench_setup: BenchSetup) -> MemcpyResult:
    """This machine's single-core copy bandwidth, measured once per session (R = batch copies per second)."""
    return measure_memcpy() if bench_setup.timed else measure_memcpy(SMOKE_MEMCPY_BYTES, repeats=3)
