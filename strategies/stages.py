"""Where the time goes: cumulative seconds per stage, kept in every process of a generator.

The stages of getting one processed image into a batch:

- ``compute``: the per-image work (decode, mask, tiles), wherever it runs;
- ``serialize``: turning a result into bytes and back (pickling: ``queue``, ``torch``);
- ``transfer``: moving the pixels: a worker writing them into its channel (for
  ``pipe`` that includes waiting for room in a full pipe), the main process
  reading them out;
- ``assemble``: the main process copying tiles into batches;
- ``wait``: the main process blocked until a result is there.

Main-side stages are wall time in the loop's process. Worker-side stages are summed
over workers: workers run in parallel with each other and with the main process,
so their sum can exceed the wall time. A worker sends its cumulative totals with
each result (five floats), so the main process knows them up to that worker's
latest message. ``BatchGenerator.stage_times()`` returns both, summed per stage;
the harness turns epoch deltas into milliseconds per batch.

Where a stage runs out of reach of the timers (``torch`` unpickles inside its own
iterator, so the main side's ``serialize`` and ``transfer`` land in ``wait``),
the strategy's docstring says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

STAGES = ("compute", "serialize", "transfer", "assemble", "wait")


class StageClock:
    """Cumulative seconds per stage in one process (or thread); a few hundred ns per reading."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def since(self, stage: str, start: float) -> float:
        """Add the time from ``start`` (a ``perf_counter`` reading) to now to ``stage``; return now."""
        now = time.perf_counter()
        self.seconds[stage] += now - start
        return now

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.since(stage, start)

    def totals(self) -> tuple[float, ...]:
        """The totals in ``STAGES`` order: what a worker sends with its results."""
        return tuple(self.seconds.values())


def summed(main: StageClock, workers: Iterable[tuple[float, ...]]) -> dict[str, float]:
    """The main process's totals plus every worker's, per stage."""
    out = dict(main.seconds)
    for totals in workers:
        for stage, seconds in zip(STAGES, totals, strict=False):
            out[stage] += seconds
    return out


def time_queue_pickling(clock: StageClock, protocol: int | None = None) -> None:
    """Count this process's ``multiprocessing.Queue`` pickling as ``serialize`` in ``clock``.

    ``Queue.put`` only appends to a buffer; a feeder thread pickles the object later
    with ``multiprocessing.queues._ForkingPickler.dumps``. Rebinding that name, in a
    worker process only, is the one way to time it without pickling twice, and the
    one place to choose the pickle ``protocol`` (None: multiprocessing's default).
    """
    from multiprocessing.reduction import ForkingPickler

    from .internals import set_queue_pickler

    chosen = protocol

    class _TimedPickler(ForkingPickler):
        @classmethod
        def dumps(cls, obj: Any, protocol: int | None = None) -> memoryview:
            with clock.timing("serialize"):
                return ForkingPickler.dumps(obj, protocol if chosen is None else chosen)

    set_queue_pickler(_TimedPickler)
