"""The runner: a plan of measurements, each in a fresh process, interleaved, watched.

::

    plan        harness.plan: for repeat in range(R): for cell in cells: one measurement
                (A B C D, A B C D, ...: a slow drift of the machine spreads over
                every cell instead of biasing the ones that ran last); a cell is
                (strategy, workers, workload, batch size)
    measurement python -m harness.child SPEC_JSON, in its own session (process group)
                   events  <- JSON lines on a pipe: ready, epoch..., closed
                   watchdog: no event for watchdog_s -> SIGTERM the group, then SIGKILL
                   Ctrl-C:   SIGINT to the child (it closes its generator and reports),
                             SIGTERM / SIGKILL of the group if it does not exit in time;
                             a second Ctrl-C kills at once
                after exit: no process of its group may remain (left ones are counted
                as orphans_after_exit and killed), no new ipcbench_*/psm_* segment
                (counted as leaked_shm_after_exit; not deleted: on a shared machine it
                may belong to someone else)
    results     each finished measurement's windows are appended to samples.jsonl at once;
                summary.csv and env.json are (re)written at the end, also after Ctrl-C
                (a measurement stopped by Ctrl-C keeps its whole windows but is counted
                as stopped, not finished)

The child's environment pins OMP/MKL/OpenBLAS/numexpr to one thread. A failed
measurement (an exception in the child, the watchdog) writes no samples; it is
recorded in ``failures.jsonl`` and the run goes on with the next one.

Processes are started, signalled and reaped by :mod:`harness.supervisor`, whose
:class:`~harness.supervisor.Escalation` takes a clock, so the timing of signals
is tested without sleeping; the launcher is injected, so the plan, interleaving and
interruption are tested without processes.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import envinfo
from .background import BackgroundLoad
from .child import ChildSpec
from .errors import IpcbenchError
from .measure import leaked_segments, shm_segments
from .plan import DEFAULT_WATCHDOG_S, Measurement, RunOptions, measurement_loader, plan_measurements
from .results import (
    ENV_FILE,
    FAILURES_FILE,
    SAMPLES_FILE,
    SCHEMA_VERSION,
    SamplesWriter,
    WindowSample,
    append_lines,
    read_samples,
    write_json,
    write_summary,
)
from .supervisor import GROUP_EXIT_GRACE_S, Escalation, ProcessGroup

# After the child exits, multiprocessing's fork server and resource tracker notice their
# parent is gone and exit; wait this long before calling what is left orphans.
ORPHAN_GRACE_S = GROUP_EXIT_GRACE_S
POLL_S = 0.1  # how often the runner looks at the interrupt flag and the watchdog


def child_spec(options: RunOptions, measurement: Measurement) -> ChildSpec:
    loader = measurement_loader(options, measurement)
    return ChildSpec(
        strategy=measurement.strategy,
        dataset=options.dataset_of(measurement).path,
        loader=loader.as_dict(),
        windows=options.windows,
        min_window_s=options.min_window_s,
        step_ms=measurement.step_ms,
        cache=measurement.cache,
        sampler_interval_s=options.sampler_interval_s,
    )


# -- one child --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """What a measurement process reported, and what it left behind."""

    windows: tuple[dict[str, Any], ...] = ()
    startup_s: float | None = None
    closed: dict[str, Any] | None = None  # shutdown_s, leftover_processes, leaked_shm, ...
    returncode: int | None = None
    interrupted: bool = False
    error: str | None = None  # one line: why it failed
    detail: str = ""  # traceback and the tail of the child's output
    orphans_after_exit: int = 0
    leaked_shm_after_exit: int = 0
    wall_s: float = 0.0

    @property
    def complete(self) -> bool:
        """Its windows can be written: they are whole and the shutdown was measured."""
        return self.error is None and self.closed is not None


class InterruptFlag:
    """Counts Ctrl-C (SIGINT) and SIGTERM while active instead of raising.

    The runner then stops the child in order and keeps what was measured; SIGTERM
    (``kill``, a scheduler's time limit) is handled as Ctrl-C is, and remembered
    (:attr:`terminated`) so that the command exits 143, as a terminated program
    does. Only the main thread can own signal handlers; elsewhere the flag is inert.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.count = 0
        self.terminated = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1
        self.terminated = self.terminated or signum == signal.SIGTERM

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


def run_child(
    spec: ChildSpec,
    *,
    watchdog_s: float = DEFAULT_WATCHDOG_S,
    interrupt: InterruptFlag | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    command: Sequence[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ChildOutcome:
    """Run one measurement process to its end and collect its events.

    ``command`` replaces ``python -m harness.child`` (tests); the spec JSON is its last argument.
    """
    read_fd, write_fd = os.pipe()
    spec = dataclasses.replace(spec, event_fd=write_fd)
    argv = [*(command or (sys.executable, "-m", "harness.child")), spec.to_json()]
    env = {**os.environ, **envinfo.PINNED_THREAD_ENV}
    shm_before = shm_segments()
    started = clock()
    with tempfile.TemporaryFile() as log:
        try:
            group = ProcessGroup.start(
                argv,
                env=env,
                pass_fds=(write_fd,) if spec.gate_fd < 0 else (write_fd, spec.gate_fd),
                stdout=log,
                stderr=log,
            )
        finally:
            os.close(write_fd)
        try:
            events, reason = _collect(group, read_fd, watchdog_s, interrupt, on_event, clock)
        finally:
            os.close(read_fd)
            if group.running():  # only on an error of the runner itself
                group.kill()
        orphans = len(group.reap(ORPHAN_GRACE_S, clock))
        # The workers are named when the generator is ready, or (started in the background) when it closes.
        named = (e.get("worker_pids", []) for e in events if e.get("event") in ("ready", "closed"))
        ours = {group.pgid, *(p for pids in named for p in pids)}
        leaked = len(leaked_segments(shm_before, pids=ours))
        log.seek(0)
        tail = log.read()[-4000:].decode(errors="replace")
    return _outcome(events, reason, group.returncode, tail, orphans, leaked, clock() - started)


def _collect(
    group: ProcessGroup,
    read_fd: int,
    watchdog_s: float,
    interrupt: InterruptFlag | None,
    on_event: Callable[[dict[str, Any]], None] | None,
    clock: Callable[[], float],
) -> tuple[list[dict[str, Any]], str | None]:
    import json

    os.set_blocking(read_fd, False)
    events: list[dict[str, Any]] = []
    buffer = b""
    eof = False
    reason: str | None = None
    escalation: Escalation | None = None
    last_event = clock()
    while True:
        if not eof and select.select([read_fd], [], [], POLL_S)[0]:
            try:
                chunk = os.read(read_fd, 1 << 16)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                eof = True
            elif chunk:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    try:
                        event = json.loads(line)
                    except ValueError:  # not ours (or cut by a kill): the events around it still count
                        continue
                    if isinstance(event, dict):
                        events.append(event)
                        last_event = clock()
                        if on_event is not None:
                            on_event(event)
        elif eof:
            group.wait(POLL_S)
        if not group.running() and (eof or not select.select([read_fd], [], [], 0)[0]):
            # Exited, and nothing more to read (workers started with fork may still
            # hold the pipe open, so an exit without EOF is also the end).
            return events, reason
        now = clock()
        if interrupt is not None and interrupt.count >= 2 and reason == "interrupted":
            group.send("sigkill")
        elif interrupt is not None and interrupt.count and escalation is None:
            reason, escalation = "interrupted", Escalation.for_interrupt(now)
        elif escalation is None and now - last_event > watchdog_s:
            reason = f"watchdog: no progress from the measurement process for {watchdog_s:g} s; killed it"
            escalation = Escalation.for_watchdog(now)
        if escalation is not None:
            for action in escalation.due(now):
                group.send(action)


def _outcome(
    events: list[dict[str, Any]],
    reason: str | None,
    returncode: int | None,
    tail: str,
    orphans: int,
    leaked: int,
    wall_s: float,
) -> ChildOutcome:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_kind.setdefault(event.get("event", "?"), []).append(event)
    ready = by_kind.get("ready", [{}])[0]
    closed = by_kind.get("closed", [None])[0]
    windows = tuple({k: v for k, v in e.items() if k != "event"} for e in by_kind.get("window", []))
    interrupted = reason == "interrupted" or "interrupted" in by_kind
    error, detail = None, tail
    if "error" in by_kind:
        failure = by_kind["error"][0]
        error = f"{failure.get('error_type')}: {failure.get('message')}"
        detail = f"{failure.get('traceback', '')}\n--- output of the measurement process ---\n{tail}"
    elif reason is not None and reason != "interrupted":
        error = reason
    elif closed is None and not interrupted:
        error = f"the measurement process exited with status {returncode} without reporting its results"
    elif returncode not in (0, 130) and not interrupted:
        error = f"the measurement process exited with status {returncode}"
    return ChildOutcome(
        windows=windows,
        startup_s=ready.get("startup_s"),
        closed=None if closed is None else {k: v for k, v in closed.items() if k != "event"},
        returncode=returncode,
        interrupted=interrupted,
        error=error,
        detail=detail,
        orphans_after_exit=orphans,
        leaked_shm_after_exit=leaked,
        wall_s=wall_s,
    )


def samples_from(
    outcome: ChildOutcome, options: RunOptions, measurement: Measurement, run_id: str
) -> list[WindowSample]:
    """samples.jsonl lines of a complete measurement (none for an incomplete one)."""
    if not outcome.complete:
        return []
    assert outcome.closed is not None
    loader = measurement_loader(options, measurement)
    identity = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "strategy": measurement.strategy,
        "workers": measurement.workers,
        "prefetch": loader.prefetch,
        "start_method": loader.start_method,
        "batch_size": loader.batch_size,
        "tile": loader.tile,
        "dataset": options.dataset_of(measurement).name,
        "workload": loader.workload,
        "step_ms": float(measurement.step_ms),
        "dtype": loader.dtype,
        "decode_threads": measurement.decode_threads_key,
        "background_load": measurement.background_load,
        "cache": measurement.cache,
        "prefetch_next_epoch": measurement.prefetch_next_epoch,
        "background_start": measurement.background_start,
        "repeat": measurement.repeat,
    }
    process = {
        "startup_s": outcome.startup_s,
        "shutdown_s": outcome.closed["shutdown_s"],
        "leaked_shm": outcome.closed["leaked_shm"],
        "leftover_processes": outcome.closed["leftover_processes"],
        "orphans_after_exit": outcome.orphans_after_exit,
        "leaked_shm_after_exit": outcome.leaked_shm_after_exit,
    }
    known = set(WindowSample.field_names())
    samples = []
    for window in outcome.windows:
        fields = {**identity, **process, **{k: v for k, v in window.items() if k in known}}
        fields["wait_ms"] = tuple(fields["wait_ms"])
        fields["memory_trace"] = tuple(tuple(row) for row in fields["memory_trace"])
        fields["images"] = tuple(fields.get("images", ()))
        fields["checksums"] = tuple(fields.get("checksums", ()))
        samples.append(WindowSample(**fields))
    return samples


# -- the whole run ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Progress:
    """What the runner tells its caller (the CLI draws it): kind is start, window or done."""

    kind: str
    measurement: Measurement
    total: int
    elapsed_s: float
    event: dict[str, Any] | None = None  # kind "window": the child's window event
    outcome: ChildOutcome | None = None  # kind "done"


@dataclass(frozen=True, slots=True)
class Failure:
    measurement: Measurement
    error: str
    detail: str


@dataclass(frozen=True, slots=True)
class RunResult:
    run_dir: Path
    planned: int
    finished: int  # measurements that ran all their windows, closed, and whose samples were written
    samples: int  # windows written, of finished and stopped measurements alike
    interrupted: bool
    failures: tuple[Failure, ...] = field(default=())
    wall_s: float = 0.0
    terminated: bool = False  # the interruption was SIGTERM, not Ctrl-C
    stopped: int = 0  # measurements stopped mid-way (Ctrl-C, SIGTERM) that closed cleanly: not finished
    stopped_samples: int = 0  # the whole windows those measured before they stopped, written too


Launcher = Callable[[ChildSpec, InterruptFlag, Callable[[dict[str, Any]], None]], ChildOutcome]


def default_launcher(options: RunOptions) -> Launcher:
    def launch(spec: ChildSpec, interrupt: InterruptFlag, on_event: Callable[[dict[str, Any]], None]) -> ChildOutcome:
        return run_child(spec, watchdog_s=options.watchdog_s, interrupt=interrupt, on_event=on_event)

    return launch


def prepare_run_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if (run_dir / SAMPLES_FILE).exists():
        raise IpcbenchError(f"{run_dir} already holds a run ({SAMPLES_FILE} exists); choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IpcbenchError(f"cannot create the results folder {run_dir}: {exc}") from exc
    return run_dir


def run_plan(
    options: RunOptions,
    run_dir: Path,
    run_id: str,
    *,
    launch: Launcher | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    plan: Sequence[Measurement] | None = None,
) -> RunResult:
    """Run every measurement of the plan, appending samples as each finishes.

    ``plan``: the measurements to run (default: :func:`plan_measurements` of ``options``,
    every cell once per repeat); an adaptive search (``harness.advise``) passes its own.
    """
    launch = launch or default_launcher(options)
    notify = on_progress or (lambda progress: None)
    plan = plan_measurements(options) if plan is None else tuple(plan)
    writer = SamplesWriter(run_dir / SAMPLES_FILE)
    failures: list[Failure] = []
    finished = stopped = stopped_samples = 0
    interrupted = False
    started = clock()
    with InterruptFlag() as flag:
        for measurement in plan:
            if flag.count:
                interrupted = True
                break
            notify(Progress("start", measurement, len(plan), clock() - started))

            def forward(event: dict[str, Any], measurement: Measurement = measurement) -> None:
                if event.get("event") == "window":
                    notify(Progress("window", measurement, len(plan), clock() - started, event=event))

            try:
                with BackgroundLoad(measurement.background_load):
                    outcome = launch(child_spec(options, measurement), flag, forward)
            except KeyboardInterrupt:  # a launcher without the flag (or Ctrl-C outside the handler)
                interrupted = True
                break
            samples = samples_from(outcome, options, measurement, run_id)
            writer.append(samples)
            # Interrupted before its last window, it is not finished; its whole windows are kept all the same.
            if samples and outcome.interrupted and len(outcome.windows) < 1 + options.windows:
                stopped += 1
                stopped_samples += len(samples)
            else:
                finished += bool(samples)
            if outcome.error is not None:
                failure = Failure(measurement, outcome.error, outcome.detail)
                failures.append(failure)
                append_failure(run_dir, failure, run_id)
            notify(Progress("done", measurement, len(plan), clock() - started, outcome=outcome))
            if outcome.interrupted or flag.count:
                interrupted = True
                break
    wall_s = clock() - started
    return RunResult(
        run_dir,
        len(plan),
        finished,
        writer.count,
        interrupted,
        tuple(failures),
        wall_s,
        flag.terminated,
        stopped=stopped,
        stopped_samples=stopped_samples,
    )


def append_failure(run_dir: Path, failure: Failure, run_id: str) -> None:
    """One line of failures.jsonl: which measurement died, and why."""
    m = failure.measurement
    append_lines(
        run_dir / FAILURES_FILE,
        [
            {
                "schema_version": SCHEMA_VERSION,
                "run_id": run_id,
                "strategy": m.strategy,
                "workers": m.workers,
                "workload": m.workload,
                "batch_size": m.batch_size,
                "dtype": m.dtype,
                "step_ms": m.step_ms,
                "decode_threads": m.decode_threads_key,
                "background_load": m.background_load,
                "cache": m.cache,
                "prefetch_next_epoch": m.prefetch_next_epoch,
                "background_start": m.background_start,
                "repeat": m.repeat,
                "error": failure.error,
                "detail": failure.detail,
            }
        ],
    )


def sampler_overhead(samples: Sequence[dict[str, Any]], strategy: str | None = None) -> float | None:
    """The sampler thread's CPU time over the measured windows' wall time (a fraction of one core).

    A ratio of totals, not a median of per-epoch ratios: an epoch shorter than the
    sampler's wait holds no sample at all, and a median of such epochs would say 0.
    """
    rows = [
        s
        for s in samples
        if not s.get("warmup")
        and s.get("seconds")
        and s.get("sampler_cpu_s") is not None
        and (strategy is None or s.get("strategy") == strategy)
    ]
    wall_s = sum(s["seconds"] for s in rows)
    return sum(s["sampler_cpu_s"] for s in rows) / wall_s if wall_s > 0 else None


def finish_env(run_dir: Path, env: dict[str, Any], result: RunResult) -> dict[str, Any]:
    """env.json at the end: load average after, the sampler's measured overhead, the outcome."""
    samples = read_samples(run_dir / SAMPLES_FILE)
    strategies = sorted({s["strategy"] for s in samples})
    sampler = {
        **env.get("sampler", {}),
        "overhead_fraction": sampler_overhead(samples),
        "overhead_fraction_by_strategy": {name: sampler_overhead(samples, name) for name in strategies},
    }
    final = {
        **env,
        "loadavg_after": envinfo.loadavg(),
        "sampler": sampler,
        "finished": envinfo.utc_now().isoformat(timespec="seconds"),
        "outcome": {
            "planned": result.planned,
            "finished": result.finished,
            "stopped": result.stopped,
            "samples": result.samples,
            "stopped_samples": result.stopped_samples,
            "interrupted": result.interrupted,
            "failures": len(result.failures),
            "wall_s": round(result.wall_s, 3),
        },
    }
    write_json(run_dir / ENV_FILE, final)
    write_summary(run_dir)
    return final
