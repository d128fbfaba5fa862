"""``ipcbench soak``: create / iterate / break / close many times per strategy, and count what stays.

Each strategy soaks in a fresh process (:mod:`harness.faults.soak`); a progress line per
strategy goes to stderr, the table to stdout, and the folder gets soak.json, env.json
and report.md. The exit status is 1 when a strategy broke a bound.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import IpcbenchError

from .faults import names_list

HELP = "repeat create / a few batches / break / close per strategy and report resource growth"


@dataclass(frozen=True, slots=True, kw_only=True)
class SoakCommand:
    strategies: tuple[str, ...] | None
    cycles: int
    warmup: int
    start_method: str
    out: Path | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SoakCommand:
        return cls(
            strategies=names_list(args.strategies),
            cycles=args.cycles,
            warmup=args.warmup,
            start_method=args.start_method,
            out=args.out,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.faults.soak import DEFAULT_CYCLES, DEFAULT_WARMUP

    parser.add_argument("--strategies", metavar="A,B", help="strategies to soak (default: all)")
    parser.add_argument(
        "--cycles", type=int, default=DEFAULT_CYCLES, help=f"cycles per strategy (default {DEFAULT_CYCLES})"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=DEFAULT_WARMUP,
        help=f"cycles before the baseline count (default {DEFAULT_WARMUP})",
    )
    parser.add_argument("--start-method", default="forkserver", help="fork, forkserver or spawn (default forkserver)")
    parser.add_argument("--out", type=Path, help="results folder (default: results/soak-<UTC time>/)")


def main(args: argparse.Namespace) -> int:
    from harness.envinfo import run_id_for, utc_now
    from harness.faults.soak import SoakOptions, run_soak, soak_lines
    from strategies import StrategyUnavailableError, available_strategies

    command = SoakCommand.from_args(args)
    try:
        options = SoakOptions(
            strategies=command.strategies or available_strategies(),
            cycles=command.cycles,
            warmup=command.warmup,
            start_method=command.start_method,
        )
    except (ValueError, StrategyUnavailableError) as exc:
        raise IpcbenchError(str(exc)) from exc
    out = command.out or Path("results") / f"soak-{run_id_for(utc_now())}"
    records = run_soak(
        options, out, command=["ipcbench", *sys.argv[1:]], progress=lambda line: print(line, file=sys.stderr)
    )
    print("\n".join(soak_lines(records)[2:]))
    print(f"\nwrote {out}/soak.json, {out}/report.md")
    return 0 if all(r.passed for r in records) else 1
