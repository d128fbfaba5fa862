"""Read a results folder (schema_version 1) into pandas, never trusting aggregates.

::

    RUN/env.json        -> RunData.env         (dict, as stored)
    RUN/samples.jsonl   -> RunData.samples     (one row per epoch, warm-up flagged)
                        -> RunData.summary     (recomputed here, see summary.py)
    RUN/summary.csv     -> RunData.stored_summary  (optional; only checked)
    RUN/faults.jsonl    -> RunData.faults      (optional; alone, without samples.jsonl, it is
                                                a faults-only folder of ``ipcbench faults``)

Extra fields in any file are kept and ignored, so the runner may add fields without
breaking reports. A file that is missing, unreadable, or of another schema version
raises :class:`~harness.errors.IpcbenchError` naming the file (and line). One
exception is forgiven: a truncated *last* line of ``samples.jsonl``, which is what a
run killed mid-write leaves; it is dropped with a note, so a crashed run can still be
looked at.

pytest-benchmark JSON is read by :mod:`harness.report.benchjson` into the same
:class:`RunData`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import IpcbenchError
from harness.results import ALL_RANKS

from .summary import CELL_KEYS, check_stored_summary, summarize

SCHEMA_VERSION = 1
REQUIRED_SAMPLE_FIELDS = ("strategy", "workers")
# Cell keys the schema requires but an older or partial file may lack: filled so cells still group.
KEY_FILL: dict[str, Any] = {
    "prefetch": 0,
    "start_method": "n/a",
    "batch_size": 0,
    "tile": 0,
    "dataset": "n/a",
    "workload": "full",
    "step_ms": 0.0,
    "rank": ALL_RANKS,
}


@dataclass(frozen=True, slots=True)
class RunData:
    """Everything a report or a comparison needs from one run."""

    root: Path  # the results folder, or the JSON file it was read from
    env: dict[str, Any]
    samples: pd.DataFrame  # every epoch, warm-up included (column ``warmup``)
    summary: pd.DataFrame  # recomputed from samples, one row per cell
    stored_summary: pd.DataFrame | None
    faults: pd.DataFrame | None
    source: str  # "samples", "pytest-benchmark", or "faults" (a faults-only folder: no samples, empty summary)
    notes: tuple[str, ...] = ()  # what the loader noticed (dropped lines, disagreeing summary.csv); plain text


def load(path: Path) -> RunData:
    """A results folder, or a pytest-benchmark JSON file (by its ``.json`` suffix)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        from .benchjson import load_benchmark_json

        return load_benchmark_json(path)
    return load_run(path)


def load_run(run_dir: Path) -> RunData:
    """Read a results folder written by ``ipcbench run`` (or ``ipcbench faults``: faults.jsonl alone)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise IpcbenchError(f"{run_dir} is not a results folder (no such directory)")
    notes: list[str] = []
    env = read_json_object(run_dir / "env.json")
    check_schema(env.get("schema_version"), run_dir / "env.json")
    if not (run_dir / "samples.jsonl").exists() and (run_dir / "faults.jsonl").is_file():
        return load_faults_only(run_dir, env)
    records, dropped = read_jsonl(run_dir / "samples.jsonl", forgive_last=True)
    if dropped:
        notes.append(f"samples.jsonl: dropped a truncated last line ({dropped})")
    samples = samples_frame(records, run_dir / "samples.jsonl")
    summary = summarize(samples)
    stored = None
    if (run_dir / "summary.csv").is_file():
        try:
            stored = pd.read_csv(run_dir / "summary.csv")
        except (OSError, ValueError) as exc:
            raise IpcbenchError(f"{run_dir / 'summary.csv'}: cannot read ({exc})") from exc
        problems = check_stored_summary(summary, stored)
        if problems:
            notes.append(
                "summary.csv disagrees with samples.jsonl (" + "; ".join(problems) + "); recomputed values used"
            )
        else:
            notes.append("summary.csv agrees with the values recomputed from samples.jsonl")
    if (run_dir / "failures.jsonl").is_file():  # the runner's record of measurements that died
        failures, _ = read_jsonl(run_dir / "failures.jsonl", forgive_last=True)
        if failures:
            listed = "; ".join(
                f"{f.get('strategy')} ({f.get('workers')} workers, repeat {f.get('repeat')}): {f.get('error')}"
                for f in failures[:5]
            )
            more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
            notes.append(f"failures.jsonl: {len(failures)} measurement(s) failed: {listed}{more}")
    faults = None
    if (run_dir / "faults.jsonl").is_file():
        faults = read_faults(run_dir / "faults.jsonl")
    return RunData(run_dir, env, samples, summary, stored, faults, "samples", tuple(notes))


def load_faults_only(run_dir: Path, env: dict[str, Any]) -> RunData:
    """A folder of ``ipcbench faults``: its matrix, with empty samples and summary that have every column."""
    faults = read_faults(run_dir / "faults.jsonl")
    columns = dict.fromkeys([*REQUIRED_SAMPLE_FIELDS, *CELL_KEYS])
    samples = pd.DataFrame({column: pd.Series(dtype=object) for column in columns})
    samples["warmup"] = pd.Series(dtype=bool)
    note = "faults-only results folder: no samples.jsonl, so no throughput or memory figures"
    return RunData(run_dir, env, samples, summarize(samples), None, faults, "faults", (note,))


def read_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise IpcbenchError(f"{path} is missing: is {path.parent} a results folder?") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise IpcbenchError(f"{path}: cannot read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise IpcbenchError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise IpcbenchError(f"{path}: expected one JSON object, found {type(value).__name__}")
    return value


def read_jsonl(path: Path, *, forgive_last: bool) -> tuple[list[dict[str, Any]], int]:
    """Objects of a JSON-lines file, and the 1-based number of a dropped truncated last line (0: none)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError as exc:
        raise IpcbenchError(f"{path} is missing: is {path.parent} a results folder?") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise IpcbenchError(f"{path}: cannot read ({exc})") from exc
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    records, dropped = [], 0
    for position, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if forgive_last and position == len(numbered) - 1 and position > 0:
                dropped = number
                break
            raise IpcbenchError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise IpcbenchError(f"{path}:{number}: expected a JSON object")
        check_schema(record.get("schema_version"), path, number)
        records.append(record)
    return records, dropped


def check_schema(version: object, path: Path, line: int | None = None) -> None:
    # A missing version is tolerated (hand-made files); a different one is not: fields may mean other things.
    if version is not None and version != SCHEMA_VERSION:
        where = f"{path}:{line}" if line else str(path)
        raise IpcbenchError(
            f"{where}: schema_version {version!r} is not supported (this ipcbench reads {SCHEMA_VERSION})"
        )


def samples_frame(records: list[dict[str, Any]], path: Path) -> pd.DataFrame:
    """Per-epoch records as a DataFrame with every cell key present and ``warmup`` a bool."""
    if not records:
        raise IpcbenchError(f"{path} holds no samples")
    samples = pd.DataFrame.from_records(records)
    missing = [field for field in REQUIRED_SAMPLE_FIELDS if field not in samples.columns]
    if missing:
        raise IpcbenchError(f"{path}: samples lack required field(s) {', '.join(missing)}")
    for key in CELL_KEYS:
        if key not in samples.columns:
            samples[key] = KEY_FILL[key]
        elif samples[key].isna().any():
            samples[key] = samples[key].fillna(KEY_FILL.get(key, "n/a"))
    samples["warmup"] = samples["warmup"].fillna(False).astype(bool) if "warmup" in samples else False
    if samples["warmup"].all():
        raise IpcbenchError(f"{path}: every epoch is a warm-up epoch; nothing was measured")
    return samples


def read_faults(path: Path) -> pd.DataFrame:
    records, _ = read_jsonl(path, forgive_last=False)
    return faults_frame(records, path)


def faults_frame(records: list[dict[str, Any]], path: Path) -> pd.DataFrame:
    """The shutdown-cleanliness records: at least scenario, strategy, clean."""
    frame = pd.DataFrame.from_records(records)
    missing = [field for field in ("scenario", "strategy", "clean") if field not in frame.columns]
    if missing or frame.empty:
        raise IpcbenchError(f"{path}: fault records lack field(s) {', '.join(missing) or 'scenario, strategy, clean'}")
    if "reason" not in frame.columns:
        frame["reason"] = ""
    frame["reason"] = frame["reason"].fillna("").astype(str)
    frame["clean"] = frame["clean"].astype(bool)
    return frame
