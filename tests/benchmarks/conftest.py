"""Benchmark fixtures: which dataset, tile, transfer batch sizes and how many rounds (environment variables).

``IPCBENCH_BENCH_DATASET=DIR``  a dataset folder to time, or ``real`` / ``tiny`` (default: ``real``, the
                                cached data/real, when timing; ``tiny`` for the untimed smoke run:
                                4 two-channel images of 256 x 320, written here, tile 64)
``IPCBENCH_BENCH_TILE=T``       tile size (default: 64 for the tiny dataset, else 256)
``IPCBENCH_BENCH_ROUNDS=R``     timed rounds per benchmark (default: 6, the fewest a verdict needs)
``IPCBENCH_BENCH_MIN_WINDOW_S``  the shortest round, in seconds: whole epochs until a round lasts it
                                (default: 0.5 when timing, 0.05 for the smoke run)
``IPCBENCH_BENCH_START_METHOD`` multiprocessing start method (default: LoaderConfig's)

The transfer workload runs at 4 and 16 MiB of image data per batch when timing; the
smoke run keeps the same 1:4 ratio at 1/64 of the size, so that a tiny epoch still
holds several batches. A plain ``pytest`` runs every benchmark once, untimed
(tests/conftest.py disables pytest-benchmark unless ``--benchmark-only`` or
``--benchmark-enable`` is given), as a smoke test on the tiny dataset;
``pytest --benchmark-only tests/benchmarks`` times them on the real dataset.

At the end of a session the terminal summary shows the performance goals
(``harness.report.goals``) computed from the benchmarks just run, each with its
verdict: what the table cannot show, since it compares times within a group. A timed
session measures the two-core copy bound there too (two processes copying side by side,
as ``ipcbench run`` does), and the transfer goals are stated against it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import write_dataset  # tests/conftest.py (this package's own is benchmarks.conftest)

from harness.memcpy import COPIERS_TOGETHER, MemcpyResult, measure_memcpy, measure_memcpy_together, together_dict
from harness.plan import batch_size_for_mib
from harness.results import MIN_SAMPLES
from strategies import LoaderConfig, open_dataset

TINY = {"images": 4, "height": 256, "width": 320, "channels": 2}
TRANSFER_MIB = (4.0, 16.0)  # the transfer workload's batch sizes
SMOKE_TRANSFER_MIB = (4.0 / 64, 16.0 / 64)
SMOKE_MEMCPY_BYTES = 8 * 2**20  # the smoke run only checks that R is computed


# What each benchmark of this session measured (pytest-benchmark's records, as in its JSON), for the goals.
RECORDED: list[dict] = []


@dataclass(frozen=True, slots=True)
class BenchSetup:
    dataset: Path
    name: str  # the dataset's name in extra_info
    tile: int
    rounds: int
    min_window_s: float  # the shortest round: whole epochs until it lasts this long
    start_method: str
    channels: int  # of the dataset's images: turns MiB into tiles
    transfer_mib: tuple[float, ...]  # the transfer workload's batch sizes
    timed: bool  # False for the untimed smoke run (plain pytest)

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
        rounds=int(os.environ.get("IPCBENCH_BENCH_ROUNDS", MIN_SAMPLES)),
        min_window_s=float(os.environ.get("IPCBENCH_BENCH_MIN_WINDOW_S", 0.5 if timed else 0.05)),
        start_method=os.environ.get("IPCBENCH_BENCH_START_METHOD", LoaderConfig().start_method),
        channels=open_dataset(dataset).channels,
        transfer_mib=TRANSFER_MIB if timed else SMOKE_TRANSFER_MIB,
        timed=timed,
    )


@pytest.fixture(scope="session")
def memcpy(bench_setup: BenchSetup) -> MemcpyResult:
    """This machine's single-core copy bandwidth, measured once per session (R = batch copies per second)."""
    return measure_memcpy() if bench_setup.timed else measure_memcpy(SMOKE_MEMCPY_BYTES, repeats=3)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The performance goals of the benchmarks just run, each a ratio of two of their medians, with its verdict."""
    if not RECORDED:
        return
    from harness.envinfo import machine_info
    from harness.report.goals import performance_goals
    from harness.results import run_from_benchmarks

    run = run_from_benchmarks(RECORDED, {"machine": machine_info()})
    if _timed(terminalreporter.config) and "memcpy" in run.env:
        # The two-core copy bound, measured as `ipcbench run` does: the transfer goals are stated against it too.
        together = together_dict([measure_memcpy_together(COPIERS_TOGETHER)], COPIERS_TOGETHER)
        run = dataclasses.replace(run, env={**run.env, "memcpy": {**run.env["memcpy"], "together": together}})
    mib = next((b["extra_info"]["batch_mib"] for b in RECORDED if "batch_mib" in b["extra_info"]), TRANSFER_MIB[0])
    goals = [g for g in performance_goals(run, transfer_mib=mib) if g.value is not None]
    if not goals:
        return
    terminalreporter.section("performance goals (ratios of this session's medians)")
    for goal in goals:
        terminalreporter.write_line(f"{goal.what:<40} {goal.goal:>18} {goal.value:>9.3g}  {goal.status}")
        terminalreporter.write_line(f"{'':<40} {goal.basis}")
