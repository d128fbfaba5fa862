"""The fault scenarios: each breaks one generator on purpose, in a fresh Python process.

The matrix (:mod:`.matrix`) runs ``python -m harness.faults.scenarios NAME STRATEGY
START_METHOD JSON`` in its own session and reads the JSON lines it prints::

    {"event": "ready", "pids": [...], "segments": [...], "infrastructure": [...]}
        printed by scenarios with an ``action``: the matrix then sends SIGINT to the
        process group (``sigint_group``), SIGTERM to this process (``sigterm_main``)
        or SIGKILLs it (``kill_main``)
    {"event": "result", "error_type": ..., "error_message": ..., "time_to_error_s": ...,
     "shutdown_s": ..., "traceback": bool, "problems": [...], "pids": [...], ...}
        what happened, measured here: time from the fault to the error, and how long
        ``close()`` took to see every worker gone

The matrix judges cleanliness from the outside (process group, /dev/shm, stderr,
exit status); this process only says what it saw. Each :class:`Scenario` is data
(which strategies it applies to, which error it expects, what the matrix does); its
``play`` function runs here. This module is also the ``__main__`` that ``spawn`` and
``forkserver`` children import (as ``__mp_main__``), so its top level stays cheap (it
imports ``strategies``, which every worker imports anyway). Faults that must happen
*inside* a worker (a failed start-up, a kill mid-transfer or after writing shared
memory, a hang that ignores SIGTERM) are actions of :mod:`.injected`, armed by name at
the strategies' injection points (:mod:`strategies.injection`): :func:`main` puts the
scenario's ``inject`` into the environment before any worker starts, and every worker
arms it when it starts. Nothing is patched.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strategies import STRATEGIES
from strategies.signals import EXIT_STATUS_SIGTERM, exit_on_sigterm

from .injected import VICTIM_IMAGE, arming, victim_marker

# The victim strikes at its second image: one image of the epoch has got through first.
# Every registered strategy runs in the matrix; which scenarios apply to it follows from
# what it declares (strategies.base.BatchGenerator's traits), so a new strategy joins
# every scenario that fits it by registering.
ALL_STRATEGIES = tuple(STRATEGIES)
PROCESS_STRATEGIES = tuple(name for name, cls in STRATEGIES.items() if cls.worker_processes)
# Strategies with workers of any kind (processes or threads): something to stop at garbage collection.
WITH_WORKERS = tuple(name for name, cls in STRATEGIES.items() if cls.has_workers)
# Workers that write their tiles straight into shared memory (ImageProcessor.write_tiles
# into a slot or a shared tensor), then announce them.
SHARED_MEMORY = tuple(name for name, cls in STRATEGIES.items() if cls.shared_memory)
# Longest an endless-iteration scenario waits for the matrix's signal before giving up.
AWAIT_SIGNAL_S = 30.0
# When the watchdog thread of close_from_thread closes the generator the main thread iterates.
CLOSE_FROM_THREAD_AFTER_S = 0.3
# Bound on waiting for workers to disappear after close() or garbage collection.
GONE_WAIT_S = 5.0
POLL_S = 0.02
# The generator settings every scenario starts from (batch 16 of 16-px tiles).
BASE_CONFIG: dict[str, Any] = {"batch_size": 16, "tile": 16, "workers": 2, "prefetch": 2, "seed": 0, "timeout": 10.0}


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
class Scenario:
    """One fault: where it applies, what it should raise, what the matrix does, how it is played."""

    name: str
    play: Callable[[Any, Probe], None]  # (context, probe); raises nothing it means to surface
    strategies: tuple[str, ...]
    expect: str | None = None  # class name (or a base's) the error must have; None: no error
    expect_baseline: str | None = None  # the baseline raises in the main process: no WorkerError
    traceback: bool = False  # the error must carry the worker's traceback
    names_worker: bool = True  # the error must name the worker and its pid (a worker's error)
    action: str | None = None  # "sigint_group", "sigterm_main" or "kill_main", after the ready line
    exit_status: int = 0  # the scenario process's exit status when all went well
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    # The faults the workers arm, per strategy: {injection point: action in harness.faults.injected}.
    inject: Callable[[str], dict[str, str]] | None = None
    hidden: bool = False  # self-test scenarios: only when named

    def expected_error(self, strategy: str) -> str | None:
        return self.expect_baseline if strategy == "baseline" else self.expect


@dataclass(frozen=True, slots=True)
class Context:
    strategy: str
    dataset: Path
    config: Any  # LoaderConfig


# -- helpers (run in the scenario process) ----------------------------------------------
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


# -- the plays -------------------------------------------------------------------------
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


def _signal_worker(sig: signal.Signals, moment: str) -> Callable[[Context, Probe], None]:
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


# -- programs: how training programs use loaders, beyond one fault at a time ------------
def batch_digests(batches: Iterable[Any]) -> list[str]:
    """One short digest per batch (data and masks), to compare batch sequences across strategies."""
    import hashlib

    import numpy as np

    out = []
    for data, masks in batches:
        digest = hashlib.blake2b(np.asarray(data).tobytes(), digest_size=8)
        digest.update(np.asarray(masks).tobytes())
        out.append(digest.hexdigest())
    return out


def baseline_digests(ctx: Context, epochs: int) -> list[list[str]]:
    from strategies import make_generator

    with make_generator("baseline", ctx.dataset, ctx.config) as gen:
        return [batch_digests(gen) for _ in range(epochs)]


def play_peek_then_loop(ctx: Context, probe: Probe) -> None:
    """Peek at one batch, then loop over the same iterator; islice three, then list the rest."""
    import itertools

    expected = baseline_digests(ctx, 2)
    gen = make(ctx, probe)
    it = iter(gen)
    got = batch_digests([next(it)]) + batch_digests(it)
    if got != expected[0]:
        probe.problems.append(f"peek then loop: {len(got)} batches (baseline {len(expected[0])}), or other batches")
    it = iter(gen)
    got = batch_digests(itertools.islice(it, 3)) + batch_digests(it)
    if got != expected[1]:
        probe.problems.append(f"islice then loop: {len(got)} batches (baseline {len(expected[1])}), or other batches")
    probe.close(gen)


def play_side_by_side(ctx: Context, probe: Probe) -> None:
    """A train and a validation generator side by side, closed in either order: the other goes on."""
    for closed_first in ("train", "validation"):
        train = make(ctx, probe)
        validation = probe.watch(
            make(Context(ctx.strategy, ctx.dataset, ctx.config.replace(shuffle=False, augment=False)), probe)
        )
        for name, gen in (("train", train), ("validation", validation)):
            if (seen := sum(1 for _ in gen)) != len(gen):
                probe.problems.append(f"{name} yielded {seen} of {len(gen)} batches beside the other")
        first, second = (train, validation) if closed_first == "train" else (validation, train)
        first.close()
        if (seen := sum(1 for _ in second)) != len(second):
            probe.problems.append(f"closing the {closed_first} generator broke the other: {seen} of {len(second)}")
        probe.close(second)


def play_own_multiprocessing(ctx: Context, probe: Probe) -> None:
    """The program's own Queue, Event and Pool in use before, during and after the generator's life."""
    import multiprocessing as mp

    import numpy as np

    context = mp.get_context(ctx.config.start_method)
    own_queue, own_event, pool = context.Queue(), context.Event(), context.Pool(1)

    def use(moment: str) -> None:
        try:
            own_queue.put(np.arange(1000))
            if int(own_queue.get(timeout=ctx.config.timeout).sum()) != 499_500:
                probe.problems.append(f"the program's Queue returned another array {moment}")
            own_event.set()
            if not own_event.is_set() or not isinstance(pool.apply(os.getpid), int):
                probe.problems.append(f"the program's Event or Pool misbehaved {moment}")
            own_event.clear()
        except Exception as exc:  # the finding: the generator broke the program's multiprocessing
            probe.problems.append(f"the program's multiprocessing failed {moment}: {type(exc).__name__}: {exc}")

    try:
        use("before the generator")
        gen = make(ctx, probe)
        if (seen := sum(1 for _ in gen)) != len(gen):
            probe.problems.append(f"the generator yielded {seen} of {len(gen)} batches")
        use("while the generator lives")
        probe.close(gen)
        use("after the generator closed")
    finally:
        pool.close()
        pool.join()
        own_queue.close()
        own_queue.join_thread()


def play_close_from_thread(ctx: Context, probe: Probe) -> None:
    """A watchdog thread closes the generator while the main thread iterates: LoaderClosedError, at once."""
    import threading

    gen = make(ctx, probe)
    threads = list(getattr(gen, "worker_threads", lambda: [])())
    timings: dict[str, float] = {}

    def watchdog() -> None:
        time.sleep(CLOSE_FROM_THREAD_AFTER_S)
        probe.fault()
        started = time.monotonic()
        gen.close()
        timings["close"] = time.monotonic() - started

    closer = threading.Thread(target=watchdog, name="watchdog")
    closer.start()
    deadline = time.monotonic() + AWAIT_SIGNAL_S
    try:
        while time.monotonic() < deadline:
            for _ in gen:
                pass
        probe.problems.append(f"no LoaderClosedError within {AWAIT_SIGNAL_S:g} s of iterating")
    except Exception as exc:  # the error under test
        probe.error, probe.error_at = exc, time.monotonic()
    closer.join(GONE_WAIT_S * 2)
    probe.shutdown_s = timings.get("close")
    survivors = wait_until_gone(probe.pids) + [t.name for t in threads if not _joined(t)]
    if survivors:
        probe.problems.append(f"workers alive after close() from another thread: {survivors}")


def _holdings() -> dict[str, Any]:
    """What this process holds that a generator could leak: descriptors, /dev/shm mappings and entries."""
    maps = Path("/proc/self/maps").read_text()
    mapped = sorted({line.rsplit("/dev/shm/", 1)[1].split()[0] for line in maps.splitlines() if "/dev/shm/" in line})
    own = sorted(n for n in os.listdir("/dev/shm") if n.startswith((f"ipcbench_{os.getpid()}_", "sem.mp-", "torch_")))
    return {"descriptors": len(os.listdir("/proc/self/fd")), "mapped": mapped, "entries": own}


def play_closed_but_referenced(ctx: Context, probe: Probe) -> None:
    """Closed generators still referenced (a variable, a traceback) hold no descriptor, mapping or segment.

    The cyclic garbage collector is off: what is released is what close() released.
    """
    warm = make(ctx, probe)  # what a process pays once: fork server, resource tracker, arenas
    next(iter(warm))
    warm.close()
    del warm
    gc.collect()
    gc.disable()
    try:
        before = _holdings()
        kept = []
        for _ in range(3):
            gen = make(ctx, probe)
            next(iter(gen))
            probe.close(gen)
            kept.append(gen)
        after = _holdings()
    finally:
        gc.enable()
    for what in before:
        if after[what] != before[what]:
            probe.problems.append(
                f"three closed, referenced generators still hold {what}: {before[what]} -> {after[what]}"
            )


def _child_makes_its_own(ctx: Context, results: Any) -> None:
    from strategies import make_generator

    try:
        with make_generator(ctx.strategy, ctx.dataset, ctx.config) as gen:
            results.put(("ok", sum(1 for _ in gen), gen.worker_pids()))
    except Exception as exc:
        results.put((type(exc).__name__, str(exc), []))


def _child_uses_the_parents(gen: Any, results: Any) -> None:
    try:
        next(iter(gen))
        results.put(("no error", "", []))
    except Exception as exc:
        results.put((type(exc).__name__, str(exc), []))
    gen.close()  # must leave the parent's workers and memory alone


def play_fork_child(ctx: Context, probe: Probe) -> None:
    """After the parent used the strategy, a fork child makes a generator of its own; the parent's goes on."""
    import multiprocessing as mp

    gen = make(ctx, probe)
    n = sum(1 for _ in gen)
    fork = mp.get_context("fork")
    results = fork.Queue()
    try:
        for target, args, wanted in (
            (_child_makes_its_own, (ctx, results), "ok"),
            (_child_uses_the_parents, (gen, results), "ProcessContextError"),
        ):
            child = fork.Process(target=target, args=args)
            child.start()
            try:
                kind, detail, pids = results.get(timeout=AWAIT_SIGNAL_S)
            except Exception as exc:  # queue.Empty: the child hung or died silently
                kind, detail, pids = type(exc).__name__, "no answer from the fork child", []
            child.join(GONE_WAIT_S)
            probe.pids += [child.pid, *pids]
            if kind != wanted or (wanted == "ok" and detail != n):
                probe.problems.append(f"fork child ({target.__name__}): {kind} {detail}, expected {wanted}")
        if (seen := sum(1 for _ in gen)) != n:
            probe.problems.append(f"the parent's generator yielded {seen} of {n} batches after its fork children")
    finally:
        results.close()
        results.join_thread()
    probe.close(gen)


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


def cut_mid_transfer(strategy: str) -> dict[str, str]:
    """Kill a worker half-way through handing over an image, where its strategy hands images over."""
    if STRATEGIES[strategy].shared_memory:  # half the tiles written into a slot or a shared tensor
        return {"tiles.start": "choose_victim", "tiles.row": "die_half_way"}
    if strategy == "queue":  # half the pickled result written into the shared pipe, its lock held
        return {"queue.result": "queue_message_cut_short"}
    return {"pipe.pixels": "pixels_cut_short"}  # half an image's bytes after the header promised them all


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "worker_raises",
            play_worker_raises,
            ALL_STRATEGIES,
            "WorkerError",
            "DatasetError",
            traceback=True,
        ),
        Scenario("sigkill_idle", _signal_worker(signal.SIGKILL, "idle"), PROCESS_STRATEGIES, "WorkerDiedError"),
        Scenario(
            "sigkill_mid_epoch", _signal_worker(signal.SIGKILL, "mid_epoch"), PROCESS_STRATEGIES, "WorkerDiedError"
        ),
        Scenario(
            "sigterm_mid_epoch", _signal_worker(signal.SIGTERM, "mid_epoch"), PROCESS_STRATEGIES, "WorkerDiedError"
        ),
        # One worker: with two, the queue's idle worker would rightly take over the stopped one's jobs.
        Scenario(
            "worker_hangs",
            _signal_worker(signal.SIGSTOP, "mid_epoch"),
            PROCESS_STRATEGIES,
            "WorkerTimeoutError",
            config={"timeout": 2.0, "workers": 1},
        ),
        Scenario("stop_reading", play_stop_reading, ALL_STRATEGIES),
        Scenario("early_break", play_early_break, ALL_STRATEGIES),
        Scenario(
            "keyboard_interrupt", play_keyboard_interrupt, ALL_STRATEGIES, "KeyboardInterrupt", "KeyboardInterrupt"
        ),
        Scenario(
            "sigint_group",
            play_until_signalled,
            ALL_STRATEGIES,
            "KeyboardInterrupt",
            "KeyboardInterrupt",
            action="sigint_group",
        ),
        Scenario("main_sigkill", play_until_signalled, PROCESS_STRATEGIES, action="kill_main"),
        Scenario("gc_without_close", play_dropped, WITH_WORKERS),
        # torch runs torch's own worker loop: no worker class of ours to break at start-up.
        Scenario(
            "startup_failure",
            play_startup_failure,
            tuple(s for s in PROCESS_STRATEGIES if s != "torch"),
            "WorkerError",
            traceback=True,
            inject=lambda strategy: {"worker.start": "failing_init"},
        ),
        Scenario(
            "sigkill_mid_transfer", play_victim_dies, PROCESS_STRATEGIES, "WorkerDiedError", inject=cut_mid_transfer
        ),
        Scenario(
            "sigkill_after_shm_write",
            play_victim_dies,
            SHARED_MEMORY,
            "WorkerDiedError",
            inject=lambda strategy: {"tiles.start": "choose_victim", "tiles.done": "die_after_writing"},
        ),
        # One worker, as for worker_hangs.
        Scenario(
            "hang_ignoring_sigterm",
            play_ignores_sigterm,
            PROCESS_STRATEGIES,
            "WorkerTimeoutError",
            config={"timeout": 2.0, "workers": 1},
            inject=lambda strategy: {"tiles.start": "hang_ignoring_sigterm"},
        ),
        Scenario("tracker_killed", play_tracker_killed, PROCESS_STRATEGIES),
        Scenario("peek_then_loop", play_peek_then_loop, ALL_STRATEGIES),
        Scenario("train_and_validation", play_side_by_side, ALL_STRATEGIES),
        Scenario("own_multiprocessing", play_own_multiprocessing, ALL_STRATEGIES),
        Scenario(
            "close_from_thread",
            play_close_from_thread,
            ALL_STRATEGIES,
            "LoaderClosedError",
            "LoaderClosedError",
            names_worker=False,
        ),
        Scenario("closed_but_referenced", play_closed_but_referenced, ALL_STRATEGIES),
        Scenario(
            "sigterm_main",
            play_until_signalled,
            ALL_STRATEGIES,
            "SystemExit",
            "SystemExit",
            names_worker=False,
            action="sigterm_main",
            exit_status=EXIT_STATUS_SIGTERM,
        ),
        Scenario("fork_child", play_fork_child, ALL_STRATEGIES),
        Scenario("selftest_leak", play_selftest_leak, ALL_STRATEGIES, hidden=True),
        Scenario("selftest_hang", play_selftest_hang, ALL_STRATEGIES, hidden=True),
    )
}
DEFAULT_SCENARIOS = tuple(name for name, s in SCENARIOS.items() if not s.hidden)


# -- the scenario process ---------------------------------------------------------------
def _has_traceback(exc: BaseException) -> bool:
    from strategies import RemoteTraceback

    cause = exc.__cause__
    if isinstance(cause, RemoteTraceback):
        return "Traceback (most recent call last)" in cause.tb
    return cause is not None and cause.__traceback__ is not None  # threads: the worker's own exception


def result_fields(probe: Probe) -> dict[str, Any]:
    error = probe.error
    start = probe.fault_at
    return {
        "event": "result",
        "error_type": type(error).__name__ if error is not None else None,
        "error_bases": [c.__name__ for c in type(error).__mro__] if error is not None else [],
        "error_message": str(error) if error is not None else None,
        "traceback": _has_traceback(error) if error is not None else False,
        "time_to_error_s": probe.error_at - start if error is not None and start and probe.error_at else None,
        "shutdown_s": probe.shutdown_s,
        "pids": probe.pids,
        "segments": probe.segments,
        "problems": probe.problems,
    }


def hear_ctrl_c() -> None:
    """Let SIGINT raise KeyboardInterrupt here, as in a training program, even if it came in ignored.

    A process started in the background without job control (``cmd &`` in a script,
    some CI runners) inherits SIGINT ignored, and Python keeps it so: a scenario that
    sends Ctrl-C would then test nothing and time out.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str]) -> int:
    from strategies import LoaderConfig

    name, strategy, start_method, raw = argv
    scenario = SCENARIOS[name]
    hear_ctrl_c()
    if scenario.action == "sigterm_main":
        exit_on_sigterm()  # what a training program opts into: SIGTERM unwinds, closing the generator
    args = json.loads(raw)
    config = LoaderConfig(**{**BASE_CONFIG, **scenario.config, "start_method": start_method})
    probe = Probe()
    if scenario.inject:
        # Before any worker or fork server starts: every worker process arms from its
        # environment when it starts, whatever the start method (strategies.injection).
        os.environ.update(arming(scenario.inject(strategy)))
    try:
        scenario.play(Context(strategy, Path(args["dataset"]), config), probe)
    except Exception as exc:  # an error the scenario did not provoke on purpose: a finding
        probe.problems.append(f"unexpected {type(exc).__name__}: {exc}")
    finally:
        victim_marker().unlink(missing_ok=True)
    emit(**result_fields(probe))
    if isinstance(probe.error, SystemExit):
        return int(probe.error.code or 0)  # exit as the unwound program would: 143 after SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
