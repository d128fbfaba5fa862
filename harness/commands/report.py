"""``ipcbench report``: report.md (+ report.html) and plots/*.png from stored results.

::

    ipcbench report RUN_DIR [--format md|html] [--hugo DIR]
    ipcbench report --benchmark-json FILE [--out DIR] [--format md|html] [--hugo DIR]

From a results folder the report is written into it, built from the raw samples
alone (summary.csv is only checked). From pytest-benchmark JSON it goes into
``--out``, by default ``<FILE stem>-report/`` beside the file. The report's path
goes to stdout. All rendering happens before any file is written, and each file is
replaced atomically, so a failure leaves the previous report as it was.

``--hugo DIR`` also writes the report as a Hugo leaf bundle (harness/report/hugo.py):
DIR/index.md and DIR/plots/*.png, built beside DIR and renamed into place; the path of
DIR/index.md goes to stdout after the report's.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from harness.errors import IpcbenchError

HELP = "write report.md and plots/*.png from a results folder (or pytest-benchmark JSON); --hugo: a Hugo bundle too"
FORMATS = ("md", "html")  # harness.report.FORMATS, repeated so --help does not import pandas
TAXONOMIES_LINE = "taxonomies: {tag: tags, series: series}"  # harness.report.TAXONOMIES_LINE, likewise
HUGO_HELP = (
    "also write the report as a Hugo leaf bundle into DIR: DIR/index.md (the report with its front matter) and "
    "DIR/plots/*.png (the figures it shows, linked relatively). DIR may be absent, empty, or a bundle this option "
    "wrote before (index.md tagged ipcbench and plots/*.png, nothing else), which is replaced whole; any other DIR "
    "is refused before anything is written. The bundle is built beside DIR and renamed into place, so a failure "
    "leaves no half bundle. Copy DIR into the site's content/ (e.g. content/posts/NAME). The front matter's "
    "`series` is a taxonomy the site config (hugo.yaml or config.yaml) must declare: "
    f"`{TAXONOMIES_LINE}` (declaring taxonomies replaces Hugo's default tags and categories: add "
    "`category: categories` if the site uses those)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportOptions:
    run_dir: Path | None
    fmt: str = "md"
    benchmark_json: Path | None = None
    out: Path | None = None
    hugo: Path | None = None

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise IpcbenchError(f"--format {self.fmt!r} must be one of {', '.join(FORMATS)}")
        if (self.run_dir is None) == (self.benchmark_json is None):
            raise IpcbenchError("give either RUN_DIR or --benchmark-json FILE (exactly one)")
        if self.out is not None and self.benchmark_json is None:
            raise IpcbenchError("--out is for --benchmark-json; a results folder's report is written into it")
        if self.benchmark_json is not None and not self.benchmark_json.is_file():
            raise IpcbenchError(f"--benchmark-json {self.benchmark_json}: no such file")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReportOptions:
        return cls(
            run_dir=args.run_dir, fmt=args.format, benchmark_json=args.benchmark_json, out=args.out, hugo=args.hugo
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        type=Path,
        nargs="?",
        default=None,
        help="results folder written by `ipcbench run` (env.json, samples.jsonl, ...)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="md",
        help="md: report.md; html: report.md and a standalone report.html (images embedded)",
    )
    parser.add_argument(
        "--benchmark-json",
        metavar="FILE",
        type=Path,
        default=None,
        help="build the report from pytest-benchmark --benchmark-json output instead",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=None,
        help="output folder for --benchmark-json (default: <FILE stem>-report beside FILE)",
    )
    parser.add_argument("--hugo", metavar="DIR", type=Path, default=None, help=HUGO_HELP)


def main(args: argparse.Namespace) -> int:
    options = ReportOptions.from_args(args)
    from harness.report import build_benchmark_report, build_report

    if options.benchmark_json is not None:
        path = build_benchmark_report(options.benchmark_json, out_dir=options.out, fmt=options.fmt, hugo=options.hugo)
    else:
        path = build_report(options.run_dir, fmt=options.fmt, hugo=options.hugo)
    print(path)
    if options.hugo is not None:
        print(options.hugo / "index.md")
    return 0
