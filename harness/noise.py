"""This machine's own noise floor: how much the same work's time varies from one window to the next.

A shared VM's pace changes on its own (other tenants of the host, its memory bandwidth),
whatever runs inside it: here a fixed single-threaded copy loop, on an idle machine,
takes 8-19% longer or shorter from one 0.5 s window to another (cv about 10%). No
strategy's windows can be steadier than the machine's, so every run measures the floor
(:func:`measure_noise_floor`, at its start and at its end) and the report prints it
beside the cells' spread: a cell at the floor is the machine, not the strategy. The two
rounds also say how much the machine's pace changed over the run (``pace_change``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

WORK_BYTES = 16 * 2**20  # a copy of this much per step: memory-bound, as the loaders' hand-overs are
DEFAULT_SECONDS = 3.0
DEFAULT_WINDOW_S = 0.5


@dataclass(frozen=True, slots=True)
class NoiseFloor:
    """Durations of windows of identical work, and their spread."""

    window_s: float  # the target length of one window (its work is fixed by a first, calibrating window)
    windows: tuple[float, ...]  # the measured seconds of each window

    @property
    def cv(self) -> float:
        """Sample std / mean of the window durations (NaN for fewer than two windows)."""
        if len(self.windows) < 2:
            return float("nan")
        return statistics.stdev(self.windows) / statistics.mean(self.windows)

    def as_dict(self) -> dict[str, object]:
        return {
            "cv": self.cv,
            "window_s": self.window_s,
            "windows_s": list(self.windows),
            "method": f"np.copyto of {WORK_BYTES // 2**20} MiB repeated in windows of fixed work of about "
            f"{self.window_s:g} s, one core, at the run's start and end: cv of the windows' durations",
        }


def measure_noise_floor(
    seconds: float = DEFAULT_SECONDS, window_s: float = DEFAULT_WINDOW_S, clock: Callable[[], float] = time.perf_counter
) -> NoiseFloor:
    """Run fixed work in windows of about ``window_s`` for about ``seconds``; return their durations."""
    if window_s <= 0 or seconds < 2 * window_s:
        raise ValueError(f"{window_s=} must be > 0 and {seconds=} at least two windows")
    src = np.ones(WORK_BYTES, dtype=np.uint8)
    dst = np.zeros(WORK_BYTES, dtype=np.uint8)
    steps, started = 0, clock()
    while clock() - started < window_s:  # calibrate: how many steps make a window
        np.copyto(dst, src)
        steps += 1
    windows = []
    for _ in range(max(2, round(seconds / window_s) - 1)):
        t0 = clock()
        for _ in range(steps):
            np.copyto(dst, src)
        windows.append(clock() - t0)
    return NoiseFloor(window_s, tuple(windows))


def floor_dict(rounds: Sequence[NoiseFloor]) -> dict[str, object]:
    """env.json ``noise_floor``: each round (the run's start, its end), the floor, and the pace change between.

    The floor is the median of the rounds' own cvs: windows of one round are seconds
    apart. The rounds are minutes apart, and the machine's pace may change between
    them (``pace_change``: how much longer the same work took at the end, as a
    fraction); pooling their windows would count that drift as noise.
    """
    cvs = [r.cv for r in rounds if r.cv == r.cv]
    means = [statistics.mean(r.windows) for r in rounds if r.windows]
    return {
        "cv": statistics.median(cvs) if cvs else float("nan"),
        "window_s": rounds[0].window_s,
        "pace_change": means[-1] / means[0] - 1 if len(means) > 1 else None,
        "rounds": [r.as_dict() for r in rounds],
    }
