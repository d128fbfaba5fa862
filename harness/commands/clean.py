"""``ipcbench clean``: remove the shared-memory segments of ipcbench processes that no longer exist.

A process killed together with its resource tracker (the OOM killer, ``kill -9`` on
the whole process group, a container stopped) cannot unlink its segments; they stay
in /dev/shm, holding memory, until something removes them. Segment names carry the
owner's pid (``ipcbench_<pid>_...``, docs/design.md section 8), so those whose owner
is gone are known to be stale; segments of running processes are never touched.
"""

from __future__ import annotations

import argparse
import os

from strategies.shm_segments import SHM_DIR, stale_segments

HELP = "remove /dev/shm segments left by ipcbench processes that no longer exist (--dry-run: only list them)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="list the stale segments, remove nothing")
    parser.add_argument(
        "--directory", metavar="DIR", default=SHM_DIR, help=f"where the segments live (default {SHM_DIR})"
    )


def main(args: argparse.Namespace) -> int:
    stale = stale_segments(args.directory)
    total = 0
    for name in stale:
        path = os.path.join(args.directory, name)
        try:
            size = os.stat(path).st_size
            if not args.dry_run:
                os.unlink(path)
        except FileNotFoundError:
            continue  # removed meanwhile
        total += size
        print(f"{'stale' if args.dry_run else 'removed'} {name} ({size / 2**20:,.1f} MiB)")
    verb = "would free" if args.dry_run else "freed"
    print(f"{len(stale)} stale segment(s) in {args.directory}; {verb} {total / 2**20:,.1f} MiB")
    return 0
