"""``ipcbench``: the command line (docs/design.md section 5).

Only this module prints errors or chooses exit codes: subcommands raise
:class:`~harness.errors.IpcbenchError` (or a strategies error such as
``DatasetError``), and :func:`main` turns it into one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence

from strategies import DatasetError, exit_on_sigterm

from .errors import IpcbenchError

# subcommand -> module in harness.commands implementing it
SUBCOMMANDS = {
    "data": "harness.commands.data",
    "run": "harness.commands.run",
    "report": "harness.commands.report",
    "compare": "harness.commands.compare",
    "regimes": "harness.commands.regimes",
    "timeline": "harness.commands.timeline",
    "advise": "harness.commands.advise",
    "faults": "harness.commands.faults",
    "soak": "harness.commands.soak",
    "clean": "harness.commands.clean",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="ipcbench",
        description="Compare ways of feeding 16-bit microscopy tiles to a training loop.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = {}
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
        modules[name] = module
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C (every generator and measurement closes), then exits 143.
    previous = exit_on_sigterm() if threading.current_thread() is threading.main_thread() else None
    try:
        return int(modules[args.command].main(args) or 0)
    except (IpcbenchError, DatasetError) as exc:
        print(f"ipcbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ipcbench: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
