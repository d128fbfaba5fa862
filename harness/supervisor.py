"""Supervising a process we start: its own process group, watched, escalated, reaped.

Every process the harness starts goes through here: a measurement (``harness.runner``),
a fault scenario (``harness.faults.matrix``) and a strategy's soak (``harness.faults.soak``)::

    group = ProcessGroup.start(argv, ...)      its own session: a process group we can signal whole
    group.send("sigint")                        Ctrl-C, to the leader only (it closes its own workers)
    group.send("sigterm" | "sigkill")           to every member; SIGCONT first, a stopped one hears nothing else
    Escalation.for_interrupt(now).due(now)      which of those is due when (a clock passed in, so testable)
    group.reap(grace_s)                         after the leader exited: wait for the members to follow,
                                                then SIGKILL and name what was left (orphans)

The graces are the harness's, for whole process trees; a strategy's own graces for one
worker (``strategies.constants``) are shorter and separate.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .measure import read_stat

# After Ctrl-C a measurement closes its generator: bounded by the strategies' own
# stop -> terminate -> kill graces (about 5 s), plus the time to finish the batch in hand.
INTERRUPT_GRACE_S = 15.0
# SIGTERM -> SIGKILL of a supervised group (a whole process tree, not one worker).
GROUP_TERMINATE_GRACE_S = 3.0
# After the leader exits, multiprocessing's fork server and resource tracker notice their
# parent is gone and exit, workers their parent watch; wait this long before calling what
# is left of the group orphans.
GROUP_EXIT_GRACE_S = 5.0
POLL_S = 0.05

ACTIONS = ("sigint", "sigterm", "sigkill")


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``: one scan of /proc."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            state, pgrp, _, _ = read_stat(int(name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(name))
    return members


def wait_group_gone(pgid: int, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> list[int]:
    """Wait up to ``timeout_s`` for process group ``pgid`` to empty; return its members left."""
    deadline = clock() + timeout_s
    while (left := group_members(pgid)) and clock() < deadline:
        time.sleep(POLL_S)
    return left


def kill_group(pgid: int) -> None:
    """SIGCONT (a stopped member is in the group too), then SIGKILL, to every member."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return


@dataclass(slots=True)
class ProcessGroup:
    """A started command, leader of its own session (process group id = its pid)."""

    proc: subprocess.Popen

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdout: IO[Any] | int | None = subprocess.DEVNULL,
        stderr: IO[Any] | int | None = subprocess.DEVNULL,
        pass_fds: Sequence[int] = (),
        text: bool = False,
    ) -> ProcessGroup:
        return cls(
            subprocess.Popen(
                list(argv),
                env=dict(env) if env is not None else None,
                cwd=Path(cwd) if cwd is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                pass_fds=tuple(pass_fds),
                start_new_session=True,
                text=text,
            )
        )

    @property
    def pgid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals, *, whole_group: bool) -> None:
        """Send ``sig`` to the leader or to every member (SIGKILL to a group: SIGCONT first)."""
        try:
            if not whole_group:
                os.kill(self.proc.pid, sig)
            elif sig == signal.SIGKILL:
                kill_group(self.pgid)
            else:
                os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass  # gone already

    def send(self, action: str) -> None:
        """An escalation step: ``sigint`` to the leader (it closes its own workers); ``sigterm``/``sigkill`` to all."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {ACTIONS}")
        sig = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}[action]
        self.signal(sig, whole_group=action != "sigint")

    def kill(self) -> None:
        """Kill every member now and collect the leader."""
        kill_group(self.pgid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=GROUP_EXIT_GRACE_S)

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the leader to exit; False if it is still running."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def reap(self, grace_s: float = GROUP_EXIT_GRACE_S, clock: Callable[[], float] = time.monotonic) -> list[int]:
        """After the leader exited: wait up to ``grace_s`` for the members to follow; kill and return the rest."""
        left = wait_group_gone(self.pgid, grace_s, clock)
        if left:
            kill_group(self.pgid)
        return left


@dataclass(slots=True)
class Escalation:
    """Signals to send, each ``delay_s`` after ``started``; :meth:`due` returns those whose time came."""

    started: float
    steps: tuple[tuple[float, str], ...]  # (delay_s, one of ACTIONS)
    sent: int = 0

    @classmethod
    def for_interrupt(cls, now: float) -> Escalation:
        """Ctrl-C: ask the leader to stop, then terminate the group, then kill it."""
        return cls(
            now,
            (
                (0.0, "sigint"),
                (INTERRUPT_GRACE_S, "sigterm"),
                (INTERRUPT_GRACE_S + GROUP_TERMINATE_GRACE_S, "sigkill"),
            ),
        )

    @classmethod
    def for_watchdog(cls, now: float) -> Escalation:
        """A silent process: terminate the group, then kill it."""
        return cls(now, ((0.0, "sigterm"), (GROUP_TERMINATE_GRACE_S, "sigkill")))

    def due(self, now: float) -> list[str]:
        actions = []
        while self.sent < len(self.steps) and now - self.started >= self.steps[self.sent][0]:
            actions.append(self.steps[self.sent][1])
            self.sent += 1
        return actions
