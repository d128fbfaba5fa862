"""``ipcbench advise``: the loader, worker count and prefetch for your data, measured on this machine.

::

    ipcbench advise                                   # the real dataset, 2 minutes
    ipcbench advise --dataset path/to/dataset --step-ms 30 --budget-s 300

A short adaptive search under a time budget (harness.advise); it writes a normal
results folder (``--out``, default ``results/advise-<run id>``) with ``advice.md``, and
prints the advice. Progress goes to stderr, one line per measurement.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..advise import DEFAULT_BUDGET_S, advise
from .run import name_list

INTERRUPTED_EXIT = 130  # as ipcbench run: the advice from what was measured, then 128 + SIGINT
HELP = "measure a few configurations on your data and say which loader, workers and prefetch to use"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", default="real", metavar="DIR", help="'real', 'synth' or a dataset folder (default: real)"
    )
    parser.add_argument(
        "--step-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="your training step per batch, in ms (simulated by a sleep; default: 0, the loader alone)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=DEFAULT_BUDGET_S,
        metavar="S",
        help=f"wall time for the whole search, report included (default: {DEFAULT_BUDGET_S:g})",
    )
    parser.add_argument(
        "--strategies", type=name_list, metavar="a,b", help="strategies to consider (default: every available one)"
    )
    parser.add_argument("--batch-size", type=int, metavar="B", help="tiles per batch (default: 32)")
    parser.add_argument("--tile", type=int, metavar="T", help="tile size in pixels (default: 256)")
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="results folder (default: results/advise-<UTC time of the run>)"
    )
    parser.add_argument("--no-report", action="store_true", help="skip report.md and its plots (advice.md stays)")


def main(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = advise(
        args.dataset,
        step_ms=args.step_ms,
        budget_s=args.budget_s,
        strategies=args.strategies,
        out=args.out,
        batch_size=args.batch_size,
        tile=args.tile,
        report=not args.no_report,
        say=say,
    )
    print(f"advice: {result.headline()}")
    if result.runner_up is not None:
        u = result.runner_up
        print(f"runner-up: {u.candidate.describe()}: {u.batches_per_s:.1f} batches/s")
    print(f"limited by: {result.bound_text}")
    for limit in result.limits:
        print(f"note: {limit}")
    print(f"{result.run_dir / 'advice.md'} ({result.measurements} measurements, {result.wall_s:.0f} s)")
    return INTERRUPTED_EXIT if result.interrupted else 0
