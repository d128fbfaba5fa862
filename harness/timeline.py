"""A short stretch of an epoch, process by process: what each one did, and when.

::

    from harness.timeline import record, load
    record(["shm", "pipe"], "data/real", LoaderConfig(workers=2, prefetch=2), batches=30, out=Path("results/timeline"))
    timeline = load(Path("results/timeline"))   # harness.report.timeline.draw(timeline) is its figure

For each strategy, :func:`trace` makes a generator with ``LoaderConfig.trace_dir`` set
(a temporary folder: every process writes its own stage intervals there,
:mod:`strategies.stages`, "Tracing"), runs one whole epoch as a warm-up (workers
started, files in the page cache, buffers touched), then the traced stretch:
``batches`` batches (on into the next epoch if need be), each followed by the optional
simulated training step (a sleep of ``step_ms``, as ``ipcbench run --step-ms`` does).
What the processes wrote during the stretch is merged into one list, times in
milliseconds from the stretch's start. Only the strategies whose ``traces`` is True
can be traced (not the peers: ``torch``, ``grain``, ``spdl``, ``spdl_arena``).

The folder :func:`write` makes::

    DIR/timeline.jsonl   one JSON object a line, every strategy's records:
        {"strategy": "shm", "role": "worker0", "pid": 4242, "stage": "compute", "start_ms": 3.1, "end_ms": 61.9}
        {"strategy": "shm", "role": "main", "pid": 4240, "event": "batch", "at_ms": 62.4}
      role: "main" (the loop's process) or "worker<i>" (worker process or thread i);
      stage: one of strategies.stages.STAGES, or "step" (the loop's simulated training
      step, main only); event "batch": the moment next() returned a batch
    DIR/timeline.json    how it was made: the command, config, dataset, batches, step,
                         the machine's cores and its load average before and after
    DIR/timeline.png     the figure (written by ``ipcbench timeline``)

Each file is written atomically (harness.results.io).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strategies import STRATEGIES, LoaderConfig, make_generator
from strategies.stages import MAIN_ROLE, read_trace

from .envinfo import dataset_info, git_info, loadavg, utc_now
from .errors import IpcbenchError
from .results.io import dumps_line, read_json_object, read_jsonl, write_atomic, write_json

TIMELINE_FILE = "timeline.jsonl"
META_FILE = "timeline.json"
FIGURE_FILE = "timeline.png"
STEP_STAGE = "step"  # the loop's simulated training step, drawn on the main row
DEFAULT_BATCHES = 30
WARMUP_EPOCHS = 1


@dataclass(frozen=True, slots=True)
class Timeline:
    """The records of DIR/timeline.jsonl (see the module docstring) and the metadata of DIR/timeline.json."""

    records: list[dict[str, Any]]
    meta: dict[str, Any]

    @property
    def strategies(self) -> list[str]:
        """The strategies traced, in the order they were."""
        return list(dict.fromkeys(r["strategy"] for r in self.records))


def tracing_strategies() -> list[str]:
    """The strategies that can be traced (``BatchGenerator.traces``)."""
    return [name for name, cls in STRATEGIES.items() if cls.traces]


def check_strategies(names: Sequence[str]) -> None:
    """An :class:`IpcbenchError` for no name, a name twice, an unknown strategy or one that cannot trace."""
    if not names:
        raise IpcbenchError("name at least one strategy to trace")
    twice = sorted({name for name in names if list(names).count(name) > 1})
    if twice:
        raise IpcbenchError(f"strategy {', '.join(twice)} named twice")
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown:
        raise IpcbenchError(
            f"unknown strategy {', '.join(map(repr, unknown))}; the strategies that trace: "
            f"{', '.join(tracing_strategies())}"
        )
    silent = [name for name in names if not STRATEGIES[name].traces]
    if silent:
        raise IpcbenchError(
            f"{', '.join(silent)} cannot be traced (a peer: its workers run inside another library's loop); "
            f"the strategies that trace: {', '.join(tracing_strategies())}"
        )


def trace(
    strategy: str, dataset: str | os.PathLike[str], config: LoaderConfig, *, batches: int, step_ms: float = 0.0
) -> list[dict[str, Any]]:
    """One strategy's records: a warm-up epoch, then ``batches`` traced batches, each followed by ``step_ms``.

    Times are milliseconds from the start of the traced stretch; what a process did
    before it or after the last batch returned is cut off at its ends (an interval
    that crosses an end keeps only its part inside).
    """
    if batches < 1:
        raise IpcbenchError(f"batches={batches}: trace at least one batch")
    if step_ms < 0:
        raise IpcbenchError(f"step_ms={step_ms:g}: a training step cannot be negative")
    steps: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="ipcbench-trace-") as folder:
        with make_generator(strategy, dataset, config.replace(trace_dir=folder)) as gen:
            for _ in range(WARMUP_EPOCHS):
                for _ in gen:
                    pass
            origin = time.perf_counter()
            served = 0
            while served < batches:
                for _ in gen:  # each pass over gen is the next epoch
                    served += 1
                    if step_ms:
                        start = time.perf_counter()
                        time.sleep(step_ms / 1000)
                        steps.append((start, time.perf_counter()))
                    if served == batches:
                        break
            end = time.perf_counter()
        raw = read_trace(folder)
    main_pid = next((r["pid"] for r in raw if r["role"] == MAIN_ROLE), os.getpid())
    raw += [{"role": MAIN_ROLE, "pid": main_pid, "stage": STEP_STAGE, "start": a, "end": b} for a, b in steps]

    def ms(seconds: float) -> float:
        return round((seconds - origin) * 1000, 4)

    records = []
    for r in raw:
        head = {"strategy": strategy, "role": r["role"], "pid": r["pid"]}
        if "stage" in r and r["end"] >= origin and r["start"] <= end:
            start_ms, end_ms = ms(max(r["start"], origin)), ms(min(r["end"], end))
            records.append({**head, "stage": r["stage"], "start_ms": start_ms, "end_ms": end_ms})
        elif "event" in r and origin <= r["at"] <= end:
            records.append({**head, "event": r["event"], "at_ms": ms(r["at"])})
    records.sort(key=lambda r: (r["role"] != MAIN_ROLE, r["role"], r.get("start_ms", r.get("at_ms", 0.0))))
    return records


def record(
    strategies: Sequence[str],
    dataset: str | os.PathLike[str],
    config: LoaderConfig,
    *,
    batches: int = DEFAULT_BATCHES,
    step_ms: float = 0.0,
    out: Path,
    source: str = "dir",
    command: Sequence[str] = (),
    figure: Callable[[Timeline], bytes] | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> Timeline:
    """Trace each of ``strategies`` in turn (:func:`trace`) and write the folder ``out`` (:func:`write`).

    ``source``: where the dataset came from (``real``, ``synth``, ``dir``), as env.json says it;
    ``command``: the command line that makes the folder again; ``progress``: one line per step.

    Nothing is written until every strategy is traced and ``figure`` (the PNG of the
    timeline, if given) is drawn, so a failure leaves ``out`` as it was.
    """
    check_strategies(strategies)
    before = loadavg()
    records = []
    for name in strategies:
        progress(f"{name}: one warm-up epoch, then {batches} traced batches")
        started = time.monotonic()
        records += trace(name, dataset, config, batches=batches, step_ms=step_ms)
        progress(f"{name}: done in {time.monotonic() - started:.1f} s")
    meta = {
        "created": utc_now().isoformat(),
        "command": list(command),
        "strategies": list(strategies),
        "dataset": dataset_info(Path(dataset), source),
        "config": {k: v for k, v in config.as_dict().items() if k != "trace_dir"},
        "batches": batches,
        "step_ms": step_ms,
        "warmup_epochs": WARMUP_EPOCHS,
        "cores": os.cpu_count(),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
        "git": git_info(),
        "times": "ms from the start of each strategy's traced stretch (time.perf_counter, CLOCK_MONOTONIC)",
    }
    timeline = Timeline(records, meta)
    write(timeline, out, figure(timeline) if figure is not None else None)
    return timeline


def write(timeline: Timeline, out: Path, png: bytes | None = None) -> Path:
    """``out``/timeline.jsonl, timeline.json and (given its bytes) timeline.png, each atomically; returns ``out``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise IpcbenchError(f"{out} is a file, not a folder for the timeline")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / TIMELINE_FILE, "".join(dumps_line(r) for r in timeline.records).encode())
    write_json(out / META_FILE, timeline.meta)
    if png is not None:
        write_atomic(out / FIGURE_FILE, png)
    return out


def load(out: Path) -> Timeline:
    """The timeline in folder ``out``; an :class:`IpcbenchError` naming what is missing or wrong."""
    out = Path(out)
    records, _ = read_jsonl(out / TIMELINE_FILE, forgive_last=False, check_version=False)
    for number, r in enumerate(records, 1):
        if not {"strategy", "role"} <= set(r) or not ({"stage", "start_ms", "end_ms"} <= set(r) or "event" in r):
            raise IpcbenchError(f"{out / TIMELINE_FILE}:{number}: not a timeline record")
    meta = read_json_object(out / META_FILE) if (out / META_FILE).exists() else {}
    return Timeline(records, meta)
