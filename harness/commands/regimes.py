"""``ipcbench regimes``: the regime map, one figure and one table from several results folders.

::

    ipcbench regimes RUN_DIR RUN_DIR [RUN_DIR ...] --out DIR [--workers N]

Each RUN_DIR is one data regime (a dataset measured by its own ``ipcbench run`` with
the same strategies and worker counts). Writes DIR/regime-map.png (batches/s of every
strategy against the regime's measured per-image cost, each regime named, its winner
marked) and DIR/regimes.md (regime, per-image cost, each strategy's batches/s, the
winner, best / baseline), both rendered before anything is written and each replaced
atomically (harness/report/regimes.py). Their paths go to stdout. ``--workers``: the
worker count to compare at (default: the largest every run measured).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from harness.errors import IpcbenchError

HELP = "the regime map: batches/s of every strategy against each regime's per-image cost, from several runs"


@dataclass(frozen=True, slots=True, kw_only=True)
class RegimesOptions:
    run_dirs: tuple[Path, ...]
    out: Path
    workers: int | None = None

    def __post_init__(self) -> None:
        if len(self.run_dirs) < 2:
            raise IpcbenchError(
                f"a regime map needs at least two results folders, one per regime (got {len(self.run_dirs)})"
            )
        if self.workers is not None and self.workers < 1:
            raise IpcbenchError(f"--workers {self.workers} must be at least 1")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RegimesOptions:
        return cls(run_dirs=tuple(args.run_dirs), out=args.out, workers=args.workers)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs",
        metavar="RUN_DIR",
        type=Path,
        nargs="+",
        help="results folders of `ipcbench run`, one per data regime (two or more)",
    )
    parser.add_argument(
        "--out", metavar="DIR", type=Path, required=True, help="folder for regime-map.png and regimes.md"
    )
    parser.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=None,
        help="compare at this worker count (default: the largest that every run measured)",
    )


def main(args: argparse.Namespace) -> int:
    options = RegimesOptions.from_args(args)
    from harness.report.regimes import write_regimes

    for path in write_regimes(list(options.run_dirs), options.out, workers=options.workers):
        print(path)
    return 0
