"""The fault plays: each breaks one generator on purpose, one fault at a time (run in the scenario process).

A worker raises, is killed (idle, mid-epoch, mid-transfer, after writing shared
memory), is stopped or hangs ignoring SIGTERM; the loop stops reading, breaks early,
is interrupted; the main process is signalled; the generator is dropped unclosed; the
resource tracker is killed. The faults inside workers are armed by :mod:`.scenarios`
from :mod:`.injected`; here they are waited for and their aftermath recorded.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from .injected import VICTIM_IMAGE, victim_marker
from .probe import (
    AWAIT_SIGNAL_S,
    GONE_WAIT_S,
    Context,
    Probe,
    _joined,
    alive,
    drain,
    emit,
    expect_error,
    garble_strips,
    infrastructure_pids,
    make,
    wait_until_gone,
)


def play_worker_raises(ctx: Context, probe: Probe) -> None:
    # A private copy: the damage must not reach other cells. The last image of epoch 0
    # is not dispatched while the first is consumed, so the failure comes mid-epoch.
    with tempfile.TemporaryDirectory(prefix="ipcbench-fault-") as tmp:
        root = Path(shutil.copytree(ctx.dataset, Path(tmp) / "ds"))
        gen = make(Context(ctx.strategy, root, ctx.config), probe)
        victim = gen.dataset.entries[gen.plan_for(0).jobs[-1].image_index].image_path
        next(gen)
        garble_strips(Path(victim))
        probe.fault()
        expect_error(gen, probe, epochs=0)
        if probe.error is not None and str(victim) not in str(probe.error):
            probe.problems.append(f"the error does not name the damaged file {victim}")


def signal_worker(sig: signal.Signals, moment: str) -> Callable[[Context, Probe], None]:
    def play(ctx: Context, probe: Probe) -> None:
        gen = make(ctx, probe)
        try:
            if moment == "mid_epoch":
                next(gen)
                time.sleep(0.3)  # the window fills: workers block writing into a full pipe
            os.kill(probe.pids[0], sig)
            probe.fault()
            expect_error(gen, probe)
        finally:
            for pid in probe.pids:  # a stopped worker ignores everything but SIGKILL/SIGCONT
                if alive(pid):
                    os.kill(pid, signal.SIGCONT)

    return play


def play_stop_reading(ctx: Context, probe: Probe) -> None:
    gen = make(ctx, probe)
    next(gen)
    time.sleep(0.5)  # workers fill the window and block with results in flight
    probe.close(gen)


def play_early_break(ctx: Context, probe: Probe) -> None:
    gen = make(ctx, probe)
    for i, _ in enumerate(gen):
        if i == 2:
            break
    seen = sum(1 for _ in gen)
    if seen != len(gen):
        probe.problems.append(f"the epoch after an early break yielded {seen} of {len(gen)} batches")
    probe.close(gen)


def play_keyboard_interrupt(ctx: Context, probe: Probe) -> None:
    try:
        with make(ctx, probe) as gen:
            for i, _ in enumerate(gen):
                if i == 2:
                    probe.fault()
                    raise KeyboardInterrupt
    except KeyboardInterrupt as exc:
        probe.error = exc
        probe.error_at = probe.fault_at  # raised here, at once; what follows is the with's close()
        probe.shutdown_s = time.monotonic() - probe.fault_at
        if left := wait_until_gone(probe.pids):
            probe.problems.append(f"workers alive after the with block: {left}")


def play_until_signalled(ctx: Context, probe: Probe) -> None:
    """Iterate epoch after epoch; say "ready" after the first batch; the matrix signals."""
    gen = make(ctx, probe)
    deadline = time.monotonic() + AWAIT_SIGNAL_S
    try:
        first = True
        while time.monotonic() < deadline:
            for _ in gen:
                if first:
                    first = False
                    emit(event="ready", pids=probe.pids, segments=probe.segments, infrastructure=infrastructure_pids())
        probe.problems.append(f"no signal arrived within {AWAIT_SIGNAL_S:g} s")
    except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C; SIGTERM through exit_on_sigterm
        probe.error, probe.error_at = exc, time.monotonic()
    probe.close(gen)


def play_dropped(ctx: Context, probe: Probe) -> None:
    gen = make(ctx, probe)
    threads = list(getattr(gen, "worker_threads", lambda: [])())
    next(gen)
    time.sleep(0.2)  # results in flight
    ref = weakref.ref(gen)
    started = time.monotonic()
    del gen
    gc.collect()
    survivors = wait_until_gone(probe.pids) + [t.name for t in threads if not _joined(t)]
    probe.shutdown_s = time.monotonic() - started
    if survivors:
        probe.problems.append(f"workers outlived the dropped generator: {survivors}")
    if ref() is not None:
        probe.problems.append("the generator was not collected (a reference cycle or a live thread holds it)")
        ref().close()


def play_startup_failure(ctx: Context, probe: Probe) -> None:
    probe.fault()
    try:
        make(ctx, probe).close()
    except Exception as exc:  # the error under test
        probe.error, probe.error_at = exc, time.monotonic()


def _struck_at() -> float | None:
    """Monotonic time the victim worker struck (its marker file's mtime), None if none did."""
    try:
        mtime = victim_marker().stat().st_mtime
    except FileNotFoundError:
        return None
    return time.monotonic() - (time.time() - mtime)


def play_victim_dies(ctx: Context, probe: Probe) -> None:
    """A worker armed by the scenario (harness.faults.injected) breaks at its second image; the loop gets the error."""
    gen = make(ctx, probe)
    try:
        drain(gen)
    except Exception as exc:  # the error under test: recorded, judged by the matrix
        probe.error, probe.error_at = exc, time.monotonic()
    probe.fault_at = _struck_at()
    if probe.fault_at is None:
        probe.problems.append(f"the fault never struck: no worker reached image {VICTIM_IMAGE}")
    probe.close(gen)


def _ignores_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has SIGTERM ignored (its SigIgn mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def play_ignores_sigterm(ctx: Context, probe: Probe) -> None:
    """A worker ignores SIGTERM and hangs: a timeout error, then close() must get to SIGKILL in time.

    The generator closes itself on the error, inside ``next()``: that close is the one
    timed (until every worker is gone), and before it runs the victim must be seen
    ignoring SIGTERM, or the scenario would prove nothing.
    """
    gen = make(ctx, probe)
    close = gen.close

    def timed_close() -> None:
        if probe.shutdown_s is not None:
            return close()
        if not any(_ignores_sigterm(pid) for pid in probe.pids):
            probe.problems.append("no worker ignored SIGTERM when close() began: the fault did not take")
        started = time.monotonic()
        close()
        survivors = wait_until_gone(probe.pids)
        probe.shutdown_s = time.monotonic() - started
        if survivors:
            probe.problems.append(f"workers alive {GONE_WAIT_S:g} s after close(): {survivors}")

    gen.close = timed_close  # the instance attribute shadows the method, also for _close_after
    try:
        drain(gen)
    except Exception as exc:  # the error under test
        probe.error, probe.error_at = exc, time.monotonic()
    probe.fault_at = _struck_at()
    if probe.fault_at is None:
        probe.problems.append(f"the fault never struck: no worker reached image {VICTIM_IMAGE}")
    gen.close()


def play_tracker_killed(ctx: Context, probe: Probe) -> None:
    """SIGKILL the resource tracker after the first batch, then finish two epochs and close."""
    from multiprocessing import resource_tracker

    from strategies.internals import tracker_pid

    resource_tracker.ensure_running()  # under fork, pipe and torch would start none
    gen = make(ctx, probe)
    next(gen)
    tracker = tracker_pid()
    os.kill(tracker, signal.SIGKILL)
    probe.fault()
    if wait_until_gone([tracker]):
        probe.problems.append(f"the resource tracker (pid {tracker}) survived SIGKILL")
    expect_error(gen, probe)


def play_selftest_leak(ctx: Context, probe: Probe) -> None:
    """Self-test: leave a segment and a process behind, to prove the matrix notices."""
    import subprocess
    from multiprocessing import resource_tracker, shared_memory

    segment = shared_memory.SharedMemory(name=f"ipcbench_{os.getpid()}_planted", create=True, size=4096)
    resource_tracker.unregister("/" + segment.name, "shared_memory")  # no tracker rescue, no warning
    segment.close()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    probe.pids = [child.pid]


def play_selftest_hang(ctx: Context, probe: Probe) -> None:
    """Self-test: never end, to prove the watchdog kills the process group."""
    time.sleep(3600)
