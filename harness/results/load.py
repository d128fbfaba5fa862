"""Read a results folder (or pytest-benchmark JSON) into one :class:`RunData`, never trusting aggregates.

::

    RUN/env.json        -> RunData.env            (dict, as stored)
    RUN/samples.jsonl   -> RunData.samples        (one row per epoch, warm-up flagged)
                        -> RunData.summary        (recomputed here, summary.summarize)
    RUN/summary.csv     -> RunData.stored_summary (optional; only checked)
    RUN/failures.jsonl  -> a note per failed measurement
    RUN/faults.jsonl    -> RunData.faults         (optional; alone, without samples.jsonl,
                                                   a faults-only folder of ``ipcbench faults``)
    BENCH.json          -> the same RunData, one sample per timed round (benchjson.py)

Extra fields in any file are kept and ignored, so the runner may add fields without
breaking readers. A file that is missing, unreadable, or of another schema version
raises :class:`~harness.errors.IpcbenchError` naming the file (and line). One
exception is forgiven: a truncated *last* line of ``samples.jsonl``, which is what a
run killed mid-write leaves; it is dropped with a note.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import IpcbenchError

from .benchjson import load_benchmark_json
from .io import check_schema, read_json_object, read_jsonl
from .rundata import RunData
from .schema import (
    CELL_KEYS,
    ENV_FILE,
    FAILURES_FILE,
    FAULTS_FILE,
    REQUIRED_SAMPLE_FIELDS,
    SAMPLES_FILE,
    SUMMARY_FILE,
)
from .summary import check_stored_summary, summarize, with_cell_keys


def load(path: Path) -> RunData:
    """A results folder, or a pytest-benchmark JSON file (by its ``.json`` suffix)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        return load_benchmark_json(path)
    return load_run(path)


def load_run(run_dir: Path) -> RunData:
    """Read a results folder written by ``ipcbench run`` (or ``ipcbench faults``: faults.jsonl alone)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise IpcbenchError(f"{run_dir} is not a results folder (no such directory)")
    notes: list[str] = []
    env = read_json_object(run_dir / ENV_FILE)
    check_schema(env.get("schema_version"), run_dir / ENV_FILE)
    if not (run_dir / SAMPLES_FILE).exists() and (run_dir / FAULTS_FILE).is_file():
        return load_faults_only(run_dir, env)
    records, dropped = read_jsonl(run_dir / SAMPLES_FILE)
    if dropped:
        notes.append(f"{SAMPLES_FILE}: dropped a truncated last line ({dropped})")
    samples = samples_frame(records, run_dir / SAMPLES_FILE)
    summary = summarize(samples, machine_cores(env))
    stored = None
    if (run_dir / SUMMARY_FILE).is_file():
        try:
            stored = pd.read_csv(run_dir / SUMMARY_FILE)
        except (OSError, ValueError) as exc:
            raise IpcbenchError(f"{run_dir / SUMMARY_FILE}: cannot read ({exc})") from exc
        problems = check_stored_summary(summary, stored)
        if problems:
            notes.append(
                f"{SUMMARY_FILE} disagrees with {SAMPLES_FILE} (" + "; ".join(problems) + "); recomputed values used"
            )
        else:
            notes.append(f"{SUMMARY_FILE} agrees with the values recomputed from {SAMPLES_FILE}")
    if (run_dir / FAILURES_FILE).is_file():  # the runner's record of measurements that died
        failures, _ = read_jsonl(run_dir / FAILURES_FILE)
        if failures:
            listed = "; ".join(
                f"{f.get('strategy')} ({f.get('workers')} workers, repeat {f.get('repeat')}): {f.get('error')}"
                for f in failures[:5]
            )
            more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
            notes.append(f"{FAILURES_FILE}: {len(failures)} measurement(s) failed: {listed}{more}")
    faults = read_faults(run_dir / FAULTS_FILE) if (run_dir / FAULTS_FILE).is_file() else None
    return RunData(run_dir, env, samples, summary, stored, faults, "samples", tuple(notes))


def machine_cores(env: dict[str, Any]) -> int | None:
    """The logical cores of the machine that measured (env.json), None when it does not say."""
    cores = (env.get("machine") or {}).get("cores_logical")
    return int(cores) if isinstance(cores, int | float) and cores > 0 else None


def load_faults_only(run_dir: Path, env: dict[str, Any]) -> RunData:
    """A folder of ``ipcbench faults``: its matrix, with empty samples and summary that have every column."""
    faults = read_faults(run_dir / FAULTS_FILE)
    columns = dict.fromkeys([*REQUIRED_SAMPLE_FIELDS, *CELL_KEYS])
    samples = pd.DataFrame({column: pd.Series(dtype=object) for column in columns})
    samples["warmup"] = pd.Series(dtype=bool)
    note = f"faults-only results folder: no {SAMPLES_FILE}, so no throughput or memory figures"
    return RunData(run_dir, env, samples, summarize(samples), None, faults, "faults", (note,))


def samples_frame(records: list[dict[str, Any]], path: Path) -> pd.DataFrame:
    """Per-epoch records as a DataFrame with every cell key present and ``warmup`` a bool."""
    if not records:
        raise IpcbenchError(f"{path} holds no samples")
    samples = pd.DataFrame.from_records(records)
    missing = [field for field in REQUIRED_SAMPLE_FIELDS if field not in samples.columns]
    if missing:
        raise IpcbenchError(f"{path}: samples lack required field(s) {', '.join(missing)}")
    samples = with_cell_keys(samples)
    if "warmup" not in samples.columns:
        samples["warmup"] = False
    if samples["warmup"].all():
        raise IpcbenchError(f"{path}: every epoch is a warm-up epoch; nothing was measured")
    return samples


def read_faults(path: Path) -> pd.DataFrame:
    """The shutdown-cleanliness records: at least scenario, strategy, clean."""
    records, _ = read_jsonl(path, forgive_last=False)
    frame = pd.DataFrame.from_records(records)
    missing = [field for field in ("scenario", "strategy", "clean") if field not in frame.columns]
    if missing or frame.empty:
        raise IpcbenchError(f"{path}: fault records lack field(s) {', '.join(missing) or 'scenario, strategy, clean'}")
    if "reason" not in frame.columns:
        frame["reason"] = ""
    frame["reason"] = frame["reason"].fillna("").astype(str)
    frame["clean"] = frame["clean"].astype(bool)
    return frame
