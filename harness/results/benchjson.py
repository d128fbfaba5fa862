"""pytest-benchmark ``--benchmark-json`` output -> the same RunData as a results folder.

The benchmarks in ``tests/benchmarks/`` time one epoch per round with
``benchmark.pedantic`` (pool set-up outside the timed region) and put what a timer
cannot see into ``extra_info`` (docs/design.md section 7). Each round becomes one
measured sample:

- ``seconds``: the round's time (``stats.data``; without raw data, one sample at the
  median, and the table shows pytest-benchmark's own quartiles);
- ``batches_per_s`` = ``extra_info.batches / seconds`` and ``mb_per_s`` =
  ``extra_info.bytes / seconds / 1e6`` when those counts are given, else the
  ``extra_info`` values of the same names (then one value for every round);
- every other numeric ``extra_info`` field named like a samples.jsonl field
  (``pss_peak_mb``, ``startup_s``, ...) is copied onto each round, and a
  ``wait_ms`` list (or ``memory_trace``) onto the first round only, so an ECDF
  counts each wait once;
- ``stage_ms_per_batch`` (a dict: ms per batch by stage) onto each round.

Cell keys come from ``params``, then ``extra_info``; the strategy falls back to the
benchmark's ``group`` and the workload to the test's name plus any params that are
not cell keys, so two different benchmarks never merge into one cell. Numeric keys a
benchmark did not record are 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import IpcbenchError

from .io import read_json_object
from .rundata import RunData
from .schema import ALL_RANKS, CELL_KEYS, KEY_FILL, METRICS
from .summary import summarize

NUMERIC_KEYS = {"workers": 0, "prefetch": 0, "batch_size": 0, "tile": 0, "step_ms": 0.0, "background_load": 0}
PER_ROUND_FROM_COUNTS = {"batches_per_s": "batches", "mb_per_s": "bytes"}
EXTRA_NUMBERS = ("batches", "bytes", "tiles", "leaked_shm", "leftover_processes")
PER_BENCHMARK_LISTS = ("wait_ms", "memory_trace")  # raw lists: kept once, on the first round


def load_benchmark_json(path: Path) -> RunData:
    """Read pytest-benchmark's JSON file into a RunData (source ``"pytest-benchmark"``)."""
    document = read_json_object(path)
    benchmarks = document.get("benchmarks")
    if not isinstance(benchmarks, list) or not benchmarks:
        raise IpcbenchError(f"{path}: no 'benchmarks' list: is this pytest-benchmark --benchmark-json output?")
    return run_from_benchmarks(benchmarks, _env(document, path), root=path, where=str(path))


def run_from_benchmarks(
    benchmarks: list[Any], env: dict[str, Any], *, root: Path | None = None, where: str = "benchmarks"
) -> RunData:
    """A RunData from pytest-benchmark's benchmark records (as in its JSON: name, group, params, stats,
    extra_info), one sample per timed round: what a benchmark session computes its goals from."""
    records: list[dict[str, Any]] = []
    quartiles: dict[tuple, dict[str, float]] = {}
    for index, bench in enumerate(benchmarks):
        if not isinstance(bench, dict) or not isinstance(bench.get("stats"), dict):
            raise IpcbenchError(f"{where}: benchmarks[{index}] has no 'stats' object")
        rows, stats_only = _rounds(bench, f"{where}: benchmarks[{index}]")
        records.extend(rows)
        if stats_only:
            quartiles[tuple(rows[0][key] for key in CELL_KEYS)] = stats_only
    samples = pd.DataFrame.from_records(records)
    summary = summarize(samples, (env.get("machine") or {}).get("cores_logical"))
    notes = [
        f"built from pytest-benchmark results{'' if root is None else ' ' + root.name}: one sample per timed round"
    ]
    if quartiles:
        _use_stats_quartiles(summary, quartiles)
        notes.append(
            f"{len(quartiles)} benchmark(s) had no raw round data: their seconds quartiles are pytest-benchmark's"
        )
    env = {**env, **_memcpy(benchmarks), **_workloads(benchmarks)}
    return RunData(root or Path(where), env, samples, summary, None, None, "pytest-benchmark", tuple(notes))


def _rounds(bench: dict[str, Any], where: str) -> tuple[list[dict[str, Any]], dict[str, float]]:
    stats = bench["stats"]
    params = bench.get("params") or {}
    extra = bench.get("extra_info") or {}
    data = stats.get("data")
    stats_only: dict[str, float] = {}
    if not data:
        if not isinstance(stats.get("median"), int | float):
            raise IpcbenchError(f"{where} has neither stats.data nor stats.median")
        data = [stats["median"]]
        stats_only = {
            "q25": stats.get("q1", math.nan),
            "q75": stats.get("q3", math.nan),
            "n": stats.get("rounds", 1),
        }
    cell = _cell(bench, params, extra)
    rows = []
    for number, seconds in enumerate(data):
        row: dict[str, Any] = {**cell, "repeat": 0, "epoch": number, "warmup": False, "seconds": float(seconds)}
        for name, value in extra.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and name not in row and (name in METRICS or name in EXTRA_NUMBERS):
                row[name] = float(value)
        for name, count in PER_ROUND_FROM_COUNTS.items():
            if isinstance(extra.get(count), int | float) and seconds > 0:
                scale = 1e-6 if name == "mb_per_s" else 1.0
                row[name] = extra[count] / seconds * scale
        if isinstance(extra.get("stage_ms_per_batch"), dict):
            row["stage_ms_per_batch"] = dict(extra["stage_ms_per_batch"])
        for name in PER_BENCHMARK_LISTS:
            if isinstance(extra.get(name), list):
                row[name] = list(extra[name]) if number == 0 else []
        rows.append(row)
    return rows, stats_only


def _cell(bench: dict[str, Any], params: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    def pick(key: str, default: Any) -> Any:
        for source in (params, extra):
            if key in source and source[key] is not None:
                return source[key]
        return default

    base = str(bench.get("name", "benchmark")).split("[", 1)[0]
    others = sorted((k, v) for k, v in params.items() if k not in CELL_KEYS)
    workload = pick("workload", base + (f"[{','.join(f'{k}={v}' for k, v in others)}]" if others else ""))
    cell = {
        "strategy": str(pick("strategy", bench.get("group") or base)),
        "start_method": str(pick("start_method", "n/a")),
        "dataset": str(pick("dataset", "n/a")),
        "workload": str(workload),
        "rank": ALL_RANKS,
        "dtype": str(pick("dtype", KEY_FILL["dtype"])),
        "decode_threads": str(pick("decode_threads", KEY_FILL["decode_threads"])),
        "cache": str(pick("cache", KEY_FILL["cache"])),
        "prefetch_next_epoch": str(pick("prefetch_next_epoch", KEY_FILL["prefetch_next_epoch"])),
        "background_start": str(pick("background_start", KEY_FILL["background_start"])),
    }
    for key, default in NUMERIC_KEYS.items():
        value = pick(key, default)
        cell[key] = value if isinstance(value, int | float) and not isinstance(value, bool) else default
    return {key: cell[key] for key in CELL_KEYS}


def _use_stats_quartiles(summary: pd.DataFrame, quartiles: dict[tuple, dict[str, float]]) -> None:
    for index, row in summary.iterrows():
        stats = quartiles.get(tuple(row[key] for key in CELL_KEYS))
        if stats is None:
            continue
        summary.loc[index, "seconds_q25"] = stats["q25"]
        summary.loc[index, "seconds_q75"] = stats["q75"]
        summary.loc[index, "seconds_iqr"] = stats["q75"] - stats["q25"]
        summary.loc[index, "n"] = stats["n"]


def _env(document: dict[str, Any], path: Path) -> dict[str, Any]:
    """An env.json-shaped dict from pytest-benchmark's machine_info and commit_info."""
    machine = document.get("machine_info") or {}
    cpu = machine.get("cpu") or {}
    commit = document.get("commit_info") or {}
    return {
        "run_id": path.stem,
        "created": document.get("datetime"),
        "command": ["pytest", "--benchmark-json", str(path)],
        "machine": {
            "hostname": machine.get("node"),
            "platform": machine.get("machine"),
            "cpu": cpu.get("brand_raw") or machine.get("processor"),
            "cores_logical": cpu.get("count"),
        },
        "os": " ".join(str(machine[k]) for k in ("system", "release") if machine.get(k)),
        "python": machine.get("python_version"),
        "packages": {"pytest-benchmark": document.get("version")},
        "git": {"commit": commit.get("id"), "dirty": commit.get("dirty"), "branch": commit.get("branch")},
    }


def _memcpy(benchmarks: list[Any]) -> dict[str, Any]:
    """env.json ``memcpy`` from the transfer benchmarks' ``memcpy_gb_per_s`` and R per batch size, if any."""
    extras = [b.get("extra_info") or {} for b in benchmarks if isinstance(b, dict)]
    rates = {
        int(e["batch_size"]): float(e["r_copies_per_s"])
        for e in extras
        if isinstance(e.get("r_copies_per_s"), int | float) and isinstance(e.get("batch_size"), int)
    }
    speeds = [float(e["memcpy_gb_per_s"]) for e in extras if isinstance(e.get("memcpy_gb_per_s"), int | float)]
    if not rates or not speeds:
        return {}
    by_size = [{"batch_size": size, "batch_copies_per_s_one_core": rate} for size, rate in sorted(rates.items())]
    return {"memcpy": {"gb_per_s": speeds[0], "by_batch_size": by_size}}


def _workloads(benchmarks: list[Any]) -> dict[str, Any]:
    """env.json ``config.workloads`` (name, batch size, MiB) from the benchmarks' ``extra_info``, if they say."""
    seen: dict[tuple, dict[str, Any]] = {}
    for bench in benchmarks:
        extra = (bench.get("extra_info") or {}) if isinstance(bench, dict) else {}
        if isinstance(extra.get("workload"), str) and isinstance(extra.get("batch_size"), int):
            key = (extra["workload"], extra["batch_size"])
            seen[key] = {"name": key[0], "batch_size": key[1], "batch_mib": extra.get("batch_mib")}
    return {"config": {"workloads": list(seen.values())}} if seen else {}
