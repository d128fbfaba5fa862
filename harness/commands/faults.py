"""``ipcbench faults``: run the shutdown-cleanliness matrix into a results folder.

Each scenario x strategy (x start method) runs in a fresh process under a watchdog;
a progress line per cell goes to stderr, the summary table to stdout, and the folder
gets faults.jsonl, env.json, report.md and plots/faults.png.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import IpcbenchError

HELP = "run every fault scenario against every strategy and report which shut down cleanly"


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultsCommand:
    strategies: tuple[str, ...] | None
    start_methods: tuple[str, ...] | None
    scenarios: tuple[str, ...] | None
    out: Path | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FaultsCommand:
        return cls(
            strategies=names_list(args.strategies),
            start_methods=names_list(args.start_methods),
            scenarios=names_list(args.scenarios),
            out=args.out,
        )


def names_list(value: str | None) -> tuple[str, ...] | None:
    """``"a, b"`` -> ``("a", "b")``; None (the option was not given) stays None."""
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategies", metavar="A,B", help="strategies to break (default: all)")
    parser.add_argument(
        "--start-methods", metavar="M,N", help="fork, forkserver, spawn (default: forkserver, the loaders' default)"
    )
    parser.add_argument("--scenarios", metavar="X,Y", help="scenarios to run (default: all)")
    parser.add_argument("--out", type=Path, help="results folder (default: results/faults-<UTC time>/)")


def main(args: argparse.Namespace) -> int:
    from harness.envinfo import run_id_for, utc_now
    from harness.faults.matrix import MatrixOptions, run_matrix, summary_lines
    from harness.faults.scenarios import DEFAULT_SCENARIOS
    from strategies import StrategyUnavailableError, available_strategies

    command = FaultsCommand.from_args(args)
    try:
        options = MatrixOptions(
            strategies=command.strategies or available_strategies(),
            start_methods=command.start_methods or ("forkserver",),
            scenarios=command.scenarios or DEFAULT_SCENARIOS,
        )
    except (ValueError, StrategyUnavailableError) as exc:
        raise IpcbenchError(str(exc)) from exc
    out = command.out or Path("results") / f"faults-{run_id_for(utc_now())}"
    if not options.cells():
        raise IpcbenchError("no scenario applies to the chosen strategies")
    records = run_matrix(
        options, out, command=["ipcbench", *sys.argv[1:]], progress=lambda line: print(line, file=sys.stderr)
    )
    lines = summary_lines(records)
    print("\n".join([lines[2], "", *lines[6:]]))  # the count and the table, not the figure link
    print(f"\nwrote {out}/faults.jsonl, {out}/report.md, {out}/plots/faults.png")
    return 0
