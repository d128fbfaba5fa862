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

import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strategies import STRATEGIES
from strategies.signals import EXIT_STATUS_SIGTERM, exit_on_sigterm

from . import plays, programs
from .injected import arming, victim_marker
from .probe import Context, Probe, emit

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
# The generator settings every scenario starts from (batch 16 of 16-px tiles).
BASE_CONFIG: dict[str, Any] = {"batch_size": 16, "tile": 16, "workers": 2, "prefetch": 2, "seed": 0, "timeout": 10.0}


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


def cut_mid_transfer(strategy: str) -> dict[str, str]:
    """Kill a worker half-way through handing over an image, where its strategy hands images over."""
    if STRATEGIES[strategy].shared_memory or strategy == "spdl":
        # Half the tiles written into a slot or a shared tensor. spdl and spdl_arena hand
        # images over inside SPDL (concurrent.futures' result pipe; SPDL's copy into an
        # arena segment), after our call returned: no point of ours inside that write, so
        # the victim dies half-way through its tiles, just before its image would travel.
        return {"tiles.start": "choose_victim", "tiles.row": "die_half_way"}
    if strategy == "queue":  # half the pickled result written into the shared pipe, its lock held
        return {"queue.result": "queue_message_cut_short"}
    return {"pipe.pixels": "pixels_cut_short"}  # half an image's bytes after the header promised them all


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "worker_raises",
            plays.play_worker_raises,
            ALL_STRATEGIES,
            "WorkerError",
            "DatasetError",
            traceback=True,
        ),
        Scenario("sigkill_idle", plays.signal_worker(signal.SIGKILL, "idle"), PROCESS_STRATEGIES, "WorkerDiedError"),
        Scenario(
            "sigkill_mid_epoch", plays.signal_worker(signal.SIGKILL, "mid_epoch"), PROCESS_STRATEGIES, "WorkerDiedError"
        ),
        Scenario(
            "sigterm_mid_epoch", plays.signal_worker(signal.SIGTERM, "mid_epoch"), PROCESS_STRATEGIES, "WorkerDiedError"
        ),
        # One worker: with two, the queue's idle worker would rightly take over the stopped one's jobs.
        Scenario(
            "worker_hangs",
            plays.signal_worker(signal.SIGSTOP, "mid_epoch"),
            PROCESS_STRATEGIES,
            "WorkerTimeoutError",
            config={"timeout": 2.0, "workers": 1},
        ),
        Scenario("stop_reading", plays.play_stop_reading, ALL_STRATEGIES),
        Scenario("early_break", plays.play_early_break, ALL_STRATEGIES),
        Scenario(
            "keyboard_interrupt",
            plays.play_keyboard_interrupt,
            ALL_STRATEGIES,
            "KeyboardInterrupt",
            "KeyboardInterrupt",
        ),
        Scenario(
            "sigint_group",
            plays.play_until_signalled,
            ALL_STRATEGIES,
            "KeyboardInterrupt",
            "KeyboardInterrupt",
            action="sigint_group",
        ),
        Scenario("main_sigkill", plays.play_until_signalled, PROCESS_STRATEGIES, action="kill_main"),
        Scenario("gc_without_close", plays.play_dropped, WITH_WORKERS),
        # torch and grain run their own worker loops: no worker class of ours to break at
        # start-up (and grain's constructor does not wait for its workers: a failed start
        # would surface at the first next()).
        Scenario(
            "startup_failure",
            plays.play_startup_failure,
            tuple(s for s in PROCESS_STRATEGIES if s not in ("torch", "grain")),
            "WorkerError",
            traceback=True,
            inject=lambda strategy: {"worker.start": "failing_init"},
        ),
        Scenario(
            "sigkill_mid_transfer",
            plays.play_victim_dies,
            PROCESS_STRATEGIES,
            "WorkerDiedError",
            inject=cut_mid_transfer,
        ),
        Scenario(
            "sigkill_after_shm_write",
            plays.play_victim_dies,
            SHARED_MEMORY,
            "WorkerDiedError",
            inject=lambda strategy: {"tiles.start": "choose_victim", "tiles.done": "die_after_writing"},
        ),
        # One worker, as for worker_hangs.
        Scenario(
            "hang_ignoring_sigterm",
            plays.play_ignores_sigterm,
            PROCESS_STRATEGIES,
            "WorkerTimeoutError",
            config={"timeout": 2.0, "workers": 1},
            inject=lambda strategy: {"tiles.start": "hang_ignoring_sigterm"},
        ),
        Scenario("tracker_killed", plays.play_tracker_killed, PROCESS_STRATEGIES),
        Scenario("peek_then_loop", programs.play_peek_then_loop, ALL_STRATEGIES),
        Scenario("train_and_validation", programs.play_side_by_side, ALL_STRATEGIES),
        Scenario("own_multiprocessing", programs.play_own_multiprocessing, ALL_STRATEGIES),
        Scenario(
            "close_from_thread",
            programs.play_close_from_thread,
            ALL_STRATEGIES,
            "LoaderClosedError",
            "LoaderClosedError",
            names_worker=False,
        ),
        Scenario("closed_but_referenced", programs.play_closed_but_referenced, ALL_STRATEGIES),
        Scenario(
            "sigterm_main",
            plays.play_until_signalled,
            ALL_STRATEGIES,
            "SystemExit",
            "SystemExit",
            names_worker=False,
            action="sigterm_main",
            exit_status=EXIT_STATUS_SIGTERM,
        ),
        Scenario("fork_child", programs.play_fork_child, ALL_STRATEGIES),
        Scenario("selftest_leak", plays.play_selftest_leak, ALL_STRATEGIES, hidden=True),
        Scenario("selftest_hang", plays.play_selftest_hang, ALL_STRATEGIES, hidden=True),
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
