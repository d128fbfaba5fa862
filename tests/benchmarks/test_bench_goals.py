"""pytest-benchmark: the performance goals, measured side by side in one harness run.

The goals are ratios of cells of one run (see :mod:`harness.report.goals`), so this
benchmark runs the harness itself, as a user would, in fresh measurement processes
(forkserver start-up and imports included, which the first-batch goal is about)::

    ipcbench run --dataset D --workers 2 --workload full,transfer --batch-mib 4 --repeats 3 --epochs 2

and puts every goal's value, whether it is met, and the medians it came from into
``extra_info`` (``copying_shm_per_r``, ``copying_shm_per_r_met``,
``copying_shm_per_r_basis``, ...), with the command that reproduces the run. The
timed region is that whole run (one round): a benchmark here measures, it asserts no
goal. The smoke run (plain ``pytest``) runs the same command on the tiny dataset
with the shared-memory strategies and the baseline only, one process per cell, and
checks the plumbing: every goal whose cells were measured has a value.
"""

from __future__ import annotations

import pytest

from harness.cli import main
from harness.report.goals import performance_goals
from harness.results import load_run
from strategies import STRATEGIES

SMOKE_STRATEGIES = tuple(s for s in ("baseline", "shm", "shm_zerocopy") if s in STRATEGIES)
RUN_TIMEOUT_S = 1800  # about 40 fresh processes on the real dataset, torch's among them


def run_command(setup, out) -> list[str]:
    strategies = list(STRATEGIES) if setup.timed else list(SMOKE_STRATEGIES)
    return [
        "run",
        "--dataset",
        str(setup.dataset),
        "--strategies",
        ",".join(strategies),
        "--workers",
        "2",
        "--workload",
        "full,transfer",
        "--batch-mib",
        f"{setup.transfer_mib[0]:g}",
        "--repeats",
        str(setup.repeats if setup.timed else 1),
        "--epochs",
        "2" if setup.timed else "1",
        "--tile",
        str(setup.tile),
        "--start-method",
        setup.start_method,
        "--out",
        str(out),
        "--no-report",
    ]


@pytest.mark.timeout(RUN_TIMEOUT_S)
def test_performance_goals(benchmark, bench_setup, tmp_path):
    benchmark.group = "performance goals"
    out = tmp_path / "goals-run"
    codes = benchmark.pedantic(main, args=(run_command(bench_setup, out),), rounds=1, iterations=1)
    assert codes == 0, f"the goals run failed; see {out}"
    run = load_run(out)
    goals = performance_goals(run, transfer_mib=bench_setup.transfer_mib[0])
    for goal in goals:
        benchmark.extra_info[goal.key] = goal.value
        benchmark.extra_info[f"{goal.key}_met"] = goal.met
        benchmark.extra_info[f"{goal.key}_basis"] = goal.basis
    benchmark.extra_info["command"] = " ".join(run.env["command"])
    benchmark.extra_info["dataset"] = bench_setup.name
    measured = {g.key for g in goals if g.value is not None}
    expected = {"copying_shm_per_r", "best_full_per_baseline", "first_batch_minus_baseline_s", "stage_timed_share"}
    if "shm_zerocopy" in STRATEGIES:
        expected.add("zero_copy_shm_per_r")
    assert expected <= measured, [g for g in goals if g.key in expected - measured]
