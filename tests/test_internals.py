"""Every private CPython and torch attribute the strategies use still exists (strategies.internals).

A Python or torch upgrade that renames one fails here, naming it, instead of as a
strange error inside a strategy. Each attribute is looked up on a live object of the
kind the strategies use it on: a Queue with a started feeder thread, an Event, the
fork server and resource tracker after they started, a DataLoader iterator with a
worker process.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor

from strategies import internals


def live_objects() -> tuple[dict[str, object], tuple[object, object]]:
    import _multiprocessing
    import _posixshmem
    from multiprocessing import forkserver, queues, resource_tracker, synchronize
    from multiprocessing import util as mp_util

    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data._utils import signal_handling

    context = mp.get_context("forkserver")
    channel = context.Queue()
    channel.put(1)  # starts its feeder thread
    event = context.Event()
    lock = context.Lock()
    forkserver.ensure_running()
    resource_tracker.ensure_running()
    executor = ProcessPoolExecutor(1, mp_context=mp.get_context("fork"))
    loader = DataLoader(range(4), num_workers=1, multiprocessing_context="fork", persistent_workers=True)
    iterator = iter(loader)
    objects = {
        "_posixshmem": _posixshmem,
        "_multiprocessing": _multiprocessing,
        "multiprocessing.util": mp_util,
        "multiprocessing.synchronize.SemLock": synchronize.SemLock,
        "multiprocessing.synchronize.SemLock()": lock,
        "multiprocessing.Queue()": channel,
        "multiprocessing.Event()": event,
        "multiprocessing.queues": queues,
        "multiprocessing.forkserver._forkserver": forkserver._forkserver,
        "multiprocessing.resource_tracker._resource_tracker": resource_tracker._resource_tracker,
        "concurrent.futures.ProcessPoolExecutor()": executor,
        "torch.UntypedStorage": torch.UntypedStorage,
        "torch.utils.data._utils.signal_handling": signal_handling,
        "DataLoader iterator": iterator,
    }
    executor.shutdown()  # never started a process: its attributes are all there is to look at
    return objects, (channel, iterator)


def test_every_private_attribute_the_strategies_use_exists() -> None:
    objects, (channel, iterator) = live_objects()
    try:
        assert set(objects) == {where for where, _ in internals.REQUIRED}, "a place of REQUIRED is not checked"
        assert internals.missing(objects) == []
    finally:
        iterator._shutdown_workers()
        channel.get(timeout=10)
        channel.close()
        channel.join_thread()


def test_an_attribute_that_is_gone_is_named() -> None:
    class Bare:
        pass

    objects = {where: sys.modules[__name__] for where, _ in internals.REQUIRED}
    objects["multiprocessing.Queue()"] = Bare()
    absent = internals.missing(objects)
    assert "multiprocessing.Queue()._reader" in absent and "multiprocessing.Queue()._thread" in absent
    assert "DataLoader iterator._workers" in internals.missing({})  # nothing given: nothing passes
