"""Busy processes beside a measurement: the CPU contention of a real training program.

``ipcbench run --background-load N`` starts N processes that spin on one core each
for the whole of a measurement (``python -m harness.background``), then stops them
before the next one starts. They are not part of the measured process tree, so
their CPU and memory are never counted as the strategy's; the run's *other cores*
figure sees them, and the summary takes the deliberate load out before it judges
whether the machine was busy (:func:`harness.results.summary.unplanned_other_cores`).

Each spinner asks Linux to end it when the runner dies (PR_SET_PDEATHSIG, as the
measurement process does), and :class:`BackgroundLoad` stops them on every way out
of its block (an error, Ctrl-C): a run leaves no spinner behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import TracebackType

STOP_GRACE_S = 2.0  # a spinner exits on SIGTERM at once; this bounds a stuck one before SIGKILL
READY_LINE = b"spinning\n"


class BackgroundLoad:
    """``with BackgroundLoad(n):`` n busy processes for the block's duration (none for n = 0)."""

    def __init__(self, count: int) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"background load {count!r} must be a count of busy processes >= 0")
        self.count = count
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> BackgroundLoad:
        try:
            for _ in range(self.count):
                process = subprocess.Popen(
                    [sys.executable, "-m", "harness.background"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
                )
                self.processes.append(process)
            for process in self.processes:  # spinning (not still importing) before the measurement starts
                assert process.stdout is not None
                if process.stdout.readline() != READY_LINE:
                    raise RuntimeError(f"a background-load process (pid {process.pid}) exited before it started")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        """SIGTERM every spinner, SIGKILL any still there after ``STOP_GRACE_S``, and reap them all."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        self.processes.clear()


def spin() -> None:
    """Burn one core until SIGTERM (or the parent's death)."""
    from .child import die_with_parent

    die_with_parent()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the runner, which stops us
    sys.stdout.buffer.write(READY_LINE)
    sys.stdout.buffer.flush()
    x = 0
    while True:
        x = (x + 1) & 0xFFFF


if __name__ == "__main__":
    spin()
