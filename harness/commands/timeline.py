"""``ipcbench timeline``: what each process does, stage by stage, over a short traced stretch of an epoch.

::

    ipcbench timeline --dataset real --strategies shm,pipe,queue --workers 2 --prefetch 2 \\
        [--batch-size 32] [--tile 256] [--batches 30] [--step-ms 0] [--start-method forkserver] \\
        [--out results/timeline]

For each strategy in turn: a generator with ``LoaderConfig.trace_dir`` set, one warm-up
epoch, then ``--batches`` traced batches (harness.timeline). Writes DIR/timeline.jsonl
(every process's stage intervals and the loop's batch returns, ms from the start of the
stretch), DIR/timeline.json (how it was made, with the load average before and after:
the figure shows one stretch, timed on whatever the machine was doing) and
DIR/timeline.png (harness.report.timeline). Arguments and strategies are checked
before anything runs, and nothing is written until every strategy is traced and the
figure drawn. Progress goes to stderr, the folder's path to stdout.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import IpcbenchError

from .run import name_list

HELP = "trace a few batches of each strategy, process by process, and draw the timeline figure"
DEFAULT_STRATEGIES = ("shm", "pipe", "queue")
DEFAULT_OUT = Path("results/timeline")


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineOptions:
    dataset: str
    strategies: tuple[str, ...]
    workers: int
    prefetch: int
    batch_size: int
    tile: int
    batches: int
    step_ms: float
    start_method: str
    out: Path

    def __post_init__(self) -> None:
        from ..timeline import check_strategies

        check_strategies(self.strategies)
        for name in ("workers", "prefetch", "batch_size", "tile", "batches"):
            if getattr(self, name) < 1:
                raise IpcbenchError(f"--{name.replace('_', '-')} {getattr(self, name)} must be at least 1")
        if not self.step_ms >= 0:
            raise IpcbenchError(f"--step-ms {self.step_ms:g} must be 0 or more")
        if self.out.exists() and not self.out.is_dir():
            raise IpcbenchError(f"--out {self.out} exists and is not a folder")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TimelineOptions:
        return cls(
            dataset=args.dataset,
            strategies=args.strategies,
            workers=args.workers,
            prefetch=args.prefetch,
            batch_size=args.batch_size,
            tile=args.tile,
            batches=args.batches,
            step_ms=args.step_ms,
            start_method=args.start_method,
            out=args.out,
        )

    def command(self) -> list[str]:
        """The command line that makes this timeline again."""
        return [
            "ipcbench",
            "timeline",
            "--dataset",
            self.dataset,
            "--strategies",
            ",".join(self.strategies),
            "--workers",
            str(self.workers),
            "--prefetch",
            str(self.prefetch),
            "--batch-size",
            str(self.batch_size),
            "--tile",
            str(self.tile),
            "--batches",
            str(self.batches),
            "--step-ms",
            f"{self.step_ms:g}",
            "--start-method",
            self.start_method,
            "--out",
            str(self.out),
        ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from strategies import LoaderConfig
    from strategies.config import START_METHODS

    from ..timeline import DEFAULT_BATCHES, tracing_strategies

    loader = LoaderConfig()
    parser.add_argument(
        "--dataset", default="real", metavar="DIR", help="'real', 'synth' or a dataset folder (default: real)"
    )
    parser.add_argument(
        "--strategies",
        type=name_list,
        default=DEFAULT_STRATEGIES,
        metavar="a,b",
        help=f"strategies to trace, each a panel (default: {','.join(DEFAULT_STRATEGIES)}); "
        f"these trace: {','.join(tracing_strategies())}",
    )
    parser.add_argument(
        "--workers", type=int, default=loader.workers, metavar="N", help="workers (default: %(default)s)"
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=loader.prefetch,
        metavar="N",
        help="images in flight per worker (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=loader.batch_size, metavar="B", help="tiles per batch (default: %(default)s)"
    )
    parser.add_argument(
        "--tile", type=int, default=loader.tile, metavar="T", help="tile size in pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=DEFAULT_BATCHES,
        metavar="N",
        help="batches traced after the warm-up epoch (default: %(default)s); the figure shows a few of them",
    )
    parser.add_argument(
        "--step-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="simulated training step after each batch, a sleep (default: 0)",
    )
    parser.add_argument(
        "--start-method", choices=START_METHODS, default=loader.start_method, help="default: %(default)s"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"folder for timeline.jsonl, timeline.json and timeline.png (default: {DEFAULT_OUT})",
    )


def main(args: argparse.Namespace) -> int:
    options = TimelineOptions.from_args(args)
    from strategies import LoaderConfig, open_dataset

    from ..report import style
    from ..report.timeline import draw
    from ..session import check_tile_fits, resolve_dataset
    from ..timeline import FIGURE_FILE, Timeline, record

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    dataset, source = resolve_dataset(options.dataset, progress=lambda line: say(f"dataset: {line}"))
    check_tile_fits(open_dataset(dataset), options.tile, given=True)  # every image checked before any work
    try:
        config = LoaderConfig(
            workers=options.workers,
            prefetch=options.prefetch,
            batch_size=options.batch_size,
            tile=options.tile,
            start_method=options.start_method,
        )
    except ValueError as exc:
        raise IpcbenchError(str(exc)) from exc

    def figure(timeline: Timeline) -> bytes:
        style.apply()
        return style.png_bytes(draw(timeline))

    try:
        record(
            options.strategies,
            dataset,
            config,
            batches=options.batches,
            step_ms=options.step_ms,
            out=options.out,
            source=source,
            command=options.command(),
            figure=figure,
            progress=say,
        )
    except ValueError as exc:  # a setting the generator refuses, said in its own words
        raise IpcbenchError(str(exc)) from exc
    print(options.out / FIGURE_FILE)
    return 0
