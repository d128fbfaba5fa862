"""What a fault scenario sees, and the helpers its plays share (they run in the scenario process).

A play (:mod:`.plays`, :mod:`.programs`) makes a generator through :func:`make`, which
records its workers and segments on the :class:`Probe`; it notes when it injected the
fault, the error it got and when, and how long ``close()`` took; the scenario process
(:mod:`.scenarios`) prints that as its result line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Longest an endless-iteration scenario waits for the matrix's signal before giving up.
AWAIT_SIGNAL_S = 30.0
# Bound on waiting for workers to disappear after close() or garbage collection.
GONE_WAIT_S = 5.0
POLL_S = 0.02


@dataclass(slots=True)
class Probe:
    """What a play function saw; turned into the ``result`` line."""

    pids: list[int] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    fault_at: float | None = None  # monotonic time the fault was injected
    error: BaseException | None = None
    error_at: float | None = None
    shutdown_s: float | None = None
    problems: list[str] = field(default_factory=list)  # contract breaches the play noticed itself

    def watch(self, gen: Any) -> Any:
        """Add ``gen``'s workers and segments to what the matrix checks are gone at the end."""
        self.pids += [p for p in gen.worker_pids() if p not in self.pids]
        self.segments += [s.name for s in getattr(gen, "segments", []) if s.name not in self.segments]
        return gen

    def fault(self) -> None:
        self.fault_at = time.monotonic()

    def close(self, gen: Any) -> None:
        """Time ``close()`` until every worker process and thread is gone."""
        threads = list(getattr(gen, "worker_threads", lambda: [])())
        started = time.monotonic()
        gen.close()
        survivors = wait_until_gone(self.pids) + [t.name for t in threads if not _joined(t)]
        self.shutdown_s = time.monotonic() - started
        if survivors:
            self.problems.append(f"workers alive {GONE_WAIT_S:g} s after close(): {survivors}")


@dataclass(frozen=True, slots=True)
class Context:
    strategy: str
    dataset: Path
    config: Any  # LoaderConfig


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until_gone(pids: Iterable[int], timeout_s: float = GONE_WAIT_S) -> list[int]:
    """Wait up to ``timeout_s`` for every pid to exit; return those still alive."""
    pids = list(pids)
    deadline = time.monotonic() + timeout_s
    while (survivors := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return survivors


def _joined(thread: Any) -> bool:
    thread.join(GONE_WAIT_S)
    return not thread.is_alive()


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def infrastructure_pids() -> list[int]:
    """Pids of this process's fork server and resource tracker: shared by every generator."""
    from strategies.internals import fork_server_pid, tracker_pid

    return [p for p in (fork_server_pid(), tracker_pid()) if p]


def make(ctx: Context, probe: Probe) -> Any:
    from strategies import make_generator

    return probe.watch(make_generator(ctx.strategy, ctx.dataset, ctx.config))


def drain(gen: Any, epochs: int = 1) -> int:
    """Consume the rest of the current epoch, then ``epochs`` more; return the batches seen."""
    seen = sum(1 for _ in iter(lambda: next(gen, None), None))
    for _ in range(epochs):
        seen += sum(1 for _ in gen)
    return seen


def expect_error(gen: Any, probe: Probe, epochs: int = 1) -> None:
    """Iterate until the fault surfaces; record it (or that it never came)."""
    try:
        drain(gen, epochs)
    except Exception as exc:  # the error under test: recorded, judged by the matrix
        probe.error, probe.error_at = exc, time.monotonic()
    probe.close(gen)


def _strips(path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return [(o, n) for page in tif.pages for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]


def garble_strips(path: str | os.PathLike[str]) -> None:
    """Overwrite every pixel strip with 0xFF bytes: headers intact, size intact, data undecodable.

    Only a compressed file fails to decode (0xFF is no zlib header); uncompressed
    garbage is just other pixels.
    """
    with open(path, "r+b") as fh:
        for offset, nbytes in _strips(path):
            fh.seek(offset)
            fh.write(b"\xff" * nbytes)
