"""The program plays: loaders used the way training programs use them (run in the scenario process).

Not one fault in a program that does nothing else, but what real programs do: peek at
a batch before the loop, keep a train and a validation generator side by side beside
their own multiprocessing, close from a watchdog thread while the main thread
iterates, hold on to closed generators, fork a child that makes its own generator.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .probe import AWAIT_SIGNAL_S, GONE_WAIT_S, Context, Probe, _joined, make, wait_until_gone

# When the watchdog thread of close_from_thread closes the generator the main thread iterates.
CLOSE_FROM_THREAD_AFTER_S = 0.3


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
