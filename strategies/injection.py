"""Fault injection points: the named places where a test may break a worker on purpose.

The fault matrix and the fault tests must kill a worker half-way through handing
over an image, hang one that ignores SIGTERM, fail one at start-up. Rather than
patch strategy methods by name (a renamed method would silently disarm a test), the
strategies call :func:`hit` at the places listed in :data:`POINTS`, and a test arms
an action for a point by name. Nothing is armed unless a test arms it; an unarmed
:func:`hit` is a dictionary lookup.

Arming reaches the worker processes through the environment, whatever the start
method: :data:`ENV` holds ``point=module:function`` pairs separated by ``;``, and
every worker arms them when it starts (:func:`arm_from_environment`, called by
``workers.worker_main`` and by the ``torch`` strategy's worker init). Set it before
the first worker (and the fork server) starts. The main process arms nothing from
it, so a fault never strikes the process that judges it.

An action is called with the point's context as keyword arguments; it may raise,
exit or hang, or return, and the worker goes on as if nothing happened.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

ENV = "IPCBENCH_INJECT"

# point -> where it is, and the context its action gets
POINTS: dict[str, str] = {
    "worker.start": "a worker process of ours, before its set-up (worker_id)",
    "pipe.pixels": "a pipe worker, between an image's header and its pixels (conn, data)",
    "queue.result": "a queue worker, before it puts a processed image on the result queue (results, result)",
    "tiles.start": "the per-image work, before its first tile is written (job)",
    "tiles.row": "the per-image work, before tile ``index`` of the job is written (job, index)",
    "tiles.done": "the per-image work, every tile written, before the image is announced (job)",
}

_armed: dict[str, Callable[..., Any]] = {}


def arm(point: str, action: Callable[..., Any]) -> None:
    """Call ``action(**context)`` whenever this process reaches ``point``."""
    if point not in POINTS:
        raise ValueError(f"unknown injection point {point!r}; the points are {sorted(POINTS)}")
    _armed[point] = action


def disarm() -> None:
    """Disarm every point of this process."""
    _armed.clear()


def hit(point: str, **context: Any) -> None:
    """The strategies' side: run the action armed for ``point``, if any."""
    action = _armed.get(point)
    if action is not None:
        action(**context)


def spec(actions: dict[str, str]) -> str:
    """The value of :data:`ENV` that arms ``{point: "module:function"}`` in every worker."""
    for point in actions:
        if point not in POINTS:
            raise ValueError(f"unknown injection point {point!r}; the points are {sorted(POINTS)}")
    return ";".join(f"{point}={target}" for point, target in actions.items())


def arm_from_environment() -> None:
    """Arm what :data:`ENV` names (in a worker process, at its start)."""
    text = os.environ.get(ENV, "")
    for pair in filter(None, text.split(";")):
        point, _, target = pair.partition("=")
        module, _, function = target.partition(":")
        arm(point, getattr(importlib.import_module(module), function))
