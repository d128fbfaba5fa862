"""``ipcbench compare RUN_A RUN_B``: per-cell ratios B/A with significance, and a CI gate.

::

    ipcbench compare RUN_A RUN_B [--metric batches_per_s] [--alpha 0.05] [--noise-floor 2]
                                 [--fail-if-regressed PCT]

Prints a table (see :mod:`harness.compare`). Exit status: 0, or 1 with
``--fail-if-regressed PCT`` when ``--metric`` got significantly worse by more than
PCT percent in any cell (direction-aware: for batches/s worse is lower, for memory or
wait it is higher); 2 for a usage error (through ``harness.cli``), including a gate
that would compare nothing because no cell is in both runs. RUN_A / RUN_B may also
be pytest-benchmark ``--benchmark-json`` files.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from harness.errors import IpcbenchError

HELP = "compare two runs cell by cell: ratios of medians, Mann-Whitney U significance, optional regression gate"


@dataclass(frozen=True, slots=True, kw_only=True)
class CompareOptions:
    run_a: Path
    run_b: Path
    metric: str = "batches_per_s"
    alpha: float = 0.05
    noise_floor_pct: float = 2.0
    fail_if_regressed_pct: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise IpcbenchError(f"--alpha {self.alpha} must be between 0 and 1")
        if self.noise_floor_pct < 0:
            raise IpcbenchError(f"--noise-floor {self.noise_floor_pct} must be >= 0 (percent)")
        if self.fail_if_regressed_pct is not None and self.fail_if_regressed_pct < 0:
            raise IpcbenchError(f"--fail-if-regressed {self.fail_if_regressed_pct} must be >= 0 (percent)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CompareOptions:
        return cls(
            run_a=args.run_a,
            run_b=args.run_b,
            metric=args.metric,
            alpha=args.alpha,
            noise_floor_pct=args.noise_floor,
            fail_if_regressed_pct=args.fail_if_regressed,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", metavar="RUN_A", type=Path, help="the reference run (results folder)")
    parser.add_argument("run_b", metavar="RUN_B", type=Path, help="the run to judge against it")
    parser.add_argument(
        "--metric",
        default="batches_per_s",
        help="metric shown in detail and gated (default batches_per_s; e.g. mb_per_s, wait_ms_p95, "
        "pss_peak_mb, startup_s, cpu_s_per_batch)",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the test (default 0.05)")
    parser.add_argument(
        "--noise-floor",
        type=float,
        default=2.0,
        metavar="PCT",
        help="smallest change in percent that can count as significant (default 2)",
    )
    parser.add_argument(
        "--fail-if-regressed",
        type=float,
        default=None,
        metavar="PCT",
        help="exit 1 if --metric got significantly worse by more than PCT percent in any cell",
    )


def main(args: argparse.Namespace) -> int:
    options = CompareOptions.from_args(args)
    from harness.compare import KEY_METRICS, compare_runs, format_comparison, regressions
    from harness.results import METRICS, load

    if options.metric not in METRICS:
        raise IpcbenchError(f"--metric {options.metric!r} is not one of {', '.join(METRICS)}")
    run_a, run_b = load(options.run_a), load(options.run_b)
    metrics = KEY_METRICS if options.metric in KEY_METRICS else (options.metric, *KEY_METRICS)
    comparison = compare_runs(
        run_a, run_b, metrics=metrics, alpha=options.alpha, noise_floor=options.noise_floor_pct / 100.0
    )
    for line in format_comparison(comparison, options.metric):
        print(line)
    if options.fail_if_regressed_pct is None:
        return 0
    if not any(change.metric == options.metric for change in comparison.changes):
        raise IpcbenchError(
            f"--fail-if-regressed: no cell of {options.run_a} and {options.run_b} both have "
            f"{options.metric}; nothing to gate on"
        )
    worse = regressions(comparison, options.metric, options.fail_if_regressed_pct)
    print()
    if worse:
        print(
            f"FAIL: {options.metric} got significantly worse by more than {options.fail_if_regressed_pct:g}% "
            f"in {len(worse)} cell(s)"
        )
        return 1
    print(f"OK: no significant {options.metric} regression over {options.fail_if_regressed_pct:g}%")
    return 0
