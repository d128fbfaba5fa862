"""Benchmark fixtures: which dataset, tile and how many rounds (environment variables).

``IPCBENCH_BENCH_DATASET=DIR``  a dataset folder to time (default: a tiny one, written
                                here: 4 two-channel images of 256 x 320, tile 64)
``IPCBENCH_BENCH_TILE=T``       tile size (default: 64 for the tiny dataset, else 256)
``IPCBENCH_BENCH_ROUNDS=R``     timed epochs per benchmark (default: 5), after 1 warm-up epoch
``IPCBENCH_BENCH_START_METHOD`` multiprocessing start method (default: LoaderConfig's)
``IPCBENCH_BENCH_SWEEP=a,b``    strategies of the batch-size sweep (default: all but torch)

A plain ``pytest`` runs every benchmark once, untimed (tests/conftest.py disables
pytest-benchmark unless ``--benchmark-only`` or ``--benchmark-enable`` is given), as a
smoke test on the tiny dataset; ``pytest --benchmark-only tests/benchmarks`` times
them, e.g. with ``IPCBENCH_BENCH_DATASET=data/real``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import write_dataset  # tests/conftest.py (this package's own is benchmarks.conftest)

from strategies import LoaderConfig

TINY = {"images": 4, "height": 256, "width": 320, "channels": 2}


@dataclass(frozen=True, slots=True)
class BenchSetup:
    dataset: Path
    name: str  # the dataset's name in extra_info
    tile: int
    rounds: int
    start_method: str


@pytest.fixture(scope="session")
def bench_setup(tmp_path_factory: pytest.TempPathFactory) -> BenchSetup:
    given = os.environ.get("IPCBENCH_BENCH_DATASET")
    if given:
        dataset = Path(given)
        if not dataset.is_dir():
            raise pytest.UsageError(f"IPCBENCH_BENCH_DATASET={given} is not a dataset folder")
        name, default_tile = dataset.name, 256
    else:
        dataset = write_dataset(tmp_path_factory.mktemp("bench") / "tiny", **TINY)
        name, default_tile = "tiny", 64
    return BenchSetup(
        dataset=dataset,
        name=name,
        tile=int(os.environ.get("IPCBENCH_BENCH_TILE", default_tile)),
        rounds=int(os.environ.get("IPCBENCH_BENCH_ROUNDS", 5)),
        start_method=os.environ.get("IPCBENCH_BENCH_START_METHOD", LoaderConfig().start_method),
    )
