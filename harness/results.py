"""The results folder (schema version 1): immutable records in, files out.

::

    RUN/env.json       provenance (harness.envinfo), written at the start, rewritten at the end
    RUN/samples.jsonl  one EpochSample per line, appended as each measurement finishes
    RUN/summary.csv    one row per cell over the measured epochs (summarize)

The records are frozen dataclasses and this module only turns them into files and
tables; printing them is the CLI's job (harness.commands.run).

``samples.jsonl`` is written by one ``os.write`` per measurement on a file opened
with ``O_APPEND``: a run interrupted (Ctrl-C) or killed keeps every measurement that
finished, and a line is either complete or, if the process died inside that write,
the truncated last line, which :func:`read_samples` drops.

Fields beyond the schema (kept in every line, ignored by readers that don't know
them): ``checksum_full`` (hash of every byte, warm-up epochs only, else null),
``sampler_cpu_s`` (the sampler thread's CPU time during the epoch, already
subtracted from ``cpu_s_per_batch``), ``orphans_after_exit`` and
``leaked_shm_after_exit`` (processes of the measurement's process group, and new
ipcbench_*/psm_* segments, found after the measurement process exited), ``images``
(the dataset indices of the epoch's images, in plan order: what a rank's shard was),
``stage_ms_per_batch`` (where the time went, per batch: the change of the
generator's ``stage_times()`` over the epoch divided by its batches, in ms, by
stage; null for a strategy without stage timers; see :data:`STAGES`).

Old files stay readable: a sample without ``workload`` is a ``full`` one (the only
workload there was), which :mod:`harness.report.load` fills in.

``rank`` is a cell key: ``"all"`` (:data:`ALL_RANKS`) for the figures of a whole run,
or ``"0"``, ``"1"``, ... for one rank's share of an ``ipcbench run --distributed``
(harness.distributed), whose ``"all"`` rows combine the ranks. It is a string so
that one column holds both.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
ENV_FILE = "env.json"
SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.csv"

CELL_KEYS = (
    "strategy",
    "workers",
    "prefetch",
    "start_method",
    "batch_size",
    "tile",
    "dataset",
    "workload",
    "step_ms",
    "rank",
)
ALL_RANKS = "all"  # the rank of a whole run's figures (see the module docstring)
SUMMARY_METRICS = (
    "batches_per_s",
    "mb_per_s",
    "seconds",
    "time_to_first_batch_s",
    "startup_s",
    "shutdown_s",
    "wait_ms_p50",
    "wait_ms_p95",
    "wait_ms_p99",
    "wait_ms_max",
    "consumer_utilization",
    "pss_peak_mb",
    "uss_peak_mb",
    "shm_peak_mb",
    "cpu_s_per_batch",
)
# Measured once per process and copied onto each of its epochs: aggregated over one
# value per (cell, repeat), so they do not pretend to more samples than exist.
PER_PROCESS_METRICS = ("startup_s", "shutdown_s")
COUNTERS = ("leaked_shm", "leftover_processes", "orphans_after_exit", "leaked_shm_after_exit")
UNSTABLE_CV = 0.10  # pyperf's threshold: a spread over 10% of the mean is a warning
# The stages a generator's stage_times() may report, in the order a batch meets them.
# Worker-side stages (compute, serialize, the worker's half of transfer) are summed
# over workers, which run in parallel with the main process; main-side ones (the
# main's half of transfer, assemble, wait) are wall time of the main process.
STAGES = ("compute", "serialize", "transfer", "assemble", "wait")


@dataclass(frozen=True, slots=True, kw_only=True)
class EpochSample:
    """One epoch of one measurement process: a line of samples.jsonl (see /tmp/schema.md)."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    strategy: str
    workers: int
    prefetch: int
    start_method: str
    batch_size: int
    tile: int
    dataset: str
    workload: str
    step_ms: float
    rank: str = ALL_RANKS
    repeat: int
    epoch: int
    warmup: bool
    batches: int
    tiles: int
    bytes: int
    seconds: float
    batches_per_s: float
    mb_per_s: float
    time_to_first_batch_s: float
    startup_s: float
    shutdown_s: float | None  # None: the generator closed itself on Ctrl-C, no orderly close() to time
    wait_ms_p50: float
    wait_ms_p95: float
    wait_ms_p99: float
    wait_ms_max: float
    wait_ms: tuple[float, ...]
    consumer_utilization: float
    pss_peak_mb: float
    uss_peak_mb: float
    shm_peak_mb: float
    cpu_s_per_batch: float
    memory_trace: tuple[tuple[float, float, float, float], ...]
    leaked_shm: int
    leftover_processes: int
    checksum: str
    # -- beyond the schema (see the module docstring) --
    checksum_full: str | None = None
    sampler_cpu_s: float = 0.0
    orphans_after_exit: int = 0
    leaked_shm_after_exit: int = 0
    stage_ms_per_batch: dict[str, float] | None = None
    images: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _finite(value: Any) -> Any:
    """NaN and inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps_line(record: Mapping[str, Any]) -> str:
    return json.dumps(_finite(dict(record)), default=_json_default, separators=(",", ":")) + "\n"


class SamplesWriter:
    """Appends complete lines to ``samples.jsonl``, one ``os.write`` per call."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.count = 0

    def append(self, samples: Sequence[EpochSample]) -> None:
        if not samples:
            return
        payload = "".join(dumps_line(s.as_dict()) for s in samples).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(payload)
            while view:  # a regular file takes it in one write; loop only for safety
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        self.count += len(samples)


def read_samples(path: Path) -> list[dict[str, Any]]:
    """Every complete line of ``samples.jsonl``; a truncated last line (a killed run) is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the write was cut short
                break
            raise
    return records


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` atomically (temp file + rename): a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_finite(dict(data)), indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def stage_column(stage: str) -> str:
    """The flat column of one stage: ``stage_compute_ms_per_batch``."""
    return f"stage_{stage}_ms_per_batch"


def stages_of(frame) -> list[str]:  # frame: pandas.DataFrame
    """The stages any row's ``stage_ms_per_batch`` names: :data:`STAGES` order first, then others sorted."""
    if "stage_ms_per_batch" not in frame:
        return []
    named = {key for value in frame["stage_ms_per_batch"] if isinstance(value, dict) for key in value}
    return [s for s in STAGES if s in named] + sorted(named - set(STAGES))


def with_stage_columns(frame):  # pandas.DataFrame -> pandas.DataFrame
    """``frame`` with one float column per stage (NaN where a row has no stage times), for aggregation."""
    stages = stages_of(frame)
    if not stages:
        return frame
    columns = {
        stage_column(stage): frame["stage_ms_per_batch"].map(
            lambda value, stage=stage: float(value[stage]) if isinstance(value, dict) and stage in value else math.nan
        )
        for stage in stages
    }
    return frame.assign(**columns)


def spread_stats(name: str, values: Any) -> dict[str, Any]:
    """``name``'s median, quartiles, IQR and cv per cell, from a grouped column (pandas SeriesGroupBy).

    cv is the sample std over the mean: NaN for one value (std undefined) and for a
    zero mean (meaningless). The one definition behind summary.csv and the report's
    recomputation of it.
    """
    q25, q75, mean = values.quantile(0.25), values.quantile(0.75), values.mean()
    return {
        f"{name}_median": values.median(),
        f"{name}_q25": q25,
        f"{name}_q75": q75,
        f"{name}_iqr": q75 - q25,
        f"{name}_cv": values.std(ddof=1) / mean.where(mean != 0),
    }


def summarize(samples: Iterable[Mapping[str, Any]]):  # -> pandas.DataFrame (imported lazily)
    """One row per cell over the measured (non-warm-up) epochs.

    Columns: the cell keys, ``n`` (measured epochs), and per metric ``M_median``,
    ``M_q25``, ``M_q75``, ``M_iqr``, ``M_cv`` (sample std / mean; NaN for n < 2),
    the same for each ``stage_<stage>_ms_per_batch`` that any sample reports, then
    ``unstable`` (``batches_per_s_cv > 0.10``), ``checksums_consistent`` (every
    repeat yielded the same batches at the same epoch index), and ``<counter>_max``.
    Quantiles are pandas' (linear interpolation). Per-process metrics (startup,
    shutdown) are taken once per (cell, repeat).
    """
    import pandas as pd

    frame = with_stage_columns(pd.DataFrame(list(samples)))
    metrics = (*SUMMARY_METRICS, *(stage_column(stage) for stage in stages_of(frame)))
    columns = [
        "n",
        *(f"{m}_{s}" for m in metrics for s in ("median", "q25", "q75", "iqr", "cv")),
        "unstable",
        "checksums_consistent",
        *(f"{c}_max" for c in COUNTERS),
    ]
    if frame.empty or "warmup" not in frame:
        return pd.DataFrame(columns=[*CELL_KEYS, *columns])
    if "rank" not in frame:  # samples written before ranks were recorded: whole-run figures
        frame["rank"] = ALL_RANKS
    # Samples written before workloads were recorded ran the full one.
    frame["workload"] = frame["workload"].fillna("full") if "workload" in frame else "full"
    rows = frame[~frame["warmup"].astype(bool)]
    if rows.empty:
        return pd.DataFrame(columns=[*CELL_KEYS, *columns])
    keys = list(CELL_KEYS)
    grouped = rows.groupby(keys, sort=True, dropna=False)
    n = grouped.size()
    per_process = rows.drop_duplicates([*keys, "repeat"]).groupby(keys, sort=True, dropna=False)
    # Every column is built first and joined once: inserting ~100 columns one by one fragments the frame.
    stats = {"n": n}
    for metric in metrics:
        stats.update(spread_stats(metric, (per_process if metric in PER_PROCESS_METRICS else grouped)[metric]))
    stats["unstable"] = stats["batches_per_s_cv"].gt(UNSTABLE_CV)
    stats["checksums_consistent"] = (
        rows.groupby([*keys, "epoch"], sort=True, dropna=False)["checksum"]
        .nunique()
        .le(1)
        .groupby(level=keys, sort=True, dropna=False)
        .all()
    )
    for counter in COUNTERS:
        stats[f"{counter}_max"] = grouped[counter].max() if counter in rows else pd.Series(0, index=n.index)
    return pd.DataFrame(stats).reset_index()[[*CELL_KEYS, *columns]]


def write_summary(run_dir: Path) -> Path:
    """Recompute ``summary.csv`` from ``samples.jsonl`` (also for a partial run)."""
    run_dir = Path(run_dir)
    path = run_dir / SUMMARY_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    summarize(read_samples(run_dir / SAMPLES_FILE)).to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
