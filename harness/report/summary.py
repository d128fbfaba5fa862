"""Metrics and their aggregation: raw per-epoch samples -> one row per cell.

A *cell* is one configuration (``CELL_KEYS``); a *sample* is one measured epoch of
it (warm-up epochs are stored but never aggregated). Tables show the median and the
inter-quartile range, and a cell whose batches/s spread (std / mean) is over 10% is
flagged unstable, as pyperf does.

Two metrics are properties of a *process*, not of an epoch: ``startup_s`` and
``shutdown_s`` are measured once per generator and copied onto each of its epochs.
Counting them once per epoch would pretend to more independent samples than exist
(and inflate a significance test), so they are reduced to one value per
``(cell, repeat)`` first.

The summary is always recomputed here from ``samples.jsonl``; a stored
``summary.csv`` is only checked against it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.results import (  # one definition of a cell, of "unstable" and of the stages
    ALL_RANKS,
    CELL_KEYS,
    STAGES,
    UNSTABLE_CV,
    spread_stats,
    stage_column,
    stages_of,
    with_stage_columns,
)

HEADLINE = "batches_per_s"


@dataclass(frozen=True, slots=True)
class Metric:
    """How to show and judge one per-epoch metric."""

    name: str
    label: str  # axis / column label, unit included
    higher_is_better: bool
    per_process: bool = False  # one value per (cell, repeat), see the module docstring
    seconds_scale: float | None = None  # factor to seconds, for the "under 1 ms" check


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("batches_per_s", "batches/s", True),
        Metric("mb_per_s", "MB/s", True),
        Metric("seconds", "epoch time (s)", False, seconds_scale=1.0),
        Metric("time_to_first_batch_s", "time to first batch (s)", False, seconds_scale=1.0),
        Metric("startup_s", "startup (s)", False, per_process=True, seconds_scale=1.0),
        Metric("shutdown_s", "shutdown (s)", False, per_process=True, seconds_scale=1.0),
        Metric("wait_ms_p50", "wait p50 (ms)", False, seconds_scale=1e-3),
        Metric("wait_ms_p95", "wait p95 (ms)", False, seconds_scale=1e-3),
        Metric("wait_ms_p99", "wait p99 (ms)", False, seconds_scale=1e-3),
        Metric("wait_ms_max", "wait max (ms)", False, seconds_scale=1e-3),
        Metric("consumer_utilization", "consumer utilization", True),
        Metric("pss_peak_mb", "PSS peak (MB)", False),
        Metric("uss_peak_mb", "USS peak (MB)", False),
        Metric("shm_peak_mb", "/dev/shm peak (MB)", False),
        Metric("cpu_s_per_batch", "CPU s/batch", False, seconds_scale=1.0),
    )
}
# The last two are written by this project's runner beyond the schema: found after the measurement process exited.
COUNTERS: tuple[str, ...] = ("leaked_shm", "leftover_processes", "orphans_after_exit", "leaked_shm_after_exit")


def cell_keys(frame: pd.DataFrame) -> list[str]:
    """The cell keys present in ``frame``, in canonical order."""
    return [key for key in CELL_KEYS if key in frame.columns]


def variant_keys(summary: pd.DataFrame) -> list[str]:
    """Cell keys other than the strategy that vary across the run's cells."""
    return [k for k in CELL_KEYS if k != "strategy" and summary[k].nunique(dropna=False) > 1]


def variant_label(row: pd.Series, keys: list[str]) -> str:
    phrases = {
        "workers": lambda v: f"{v} worker" + ("" if v == 1 else "s"),
        "prefetch": lambda v: f"prefetch {v}",
        "batch_size": lambda v: f"batch {v}",
        "tile": lambda v: f"tile {v}",
        "step_ms": lambda v: f"step {v:g} ms",
        "rank": lambda v: "all ranks" if v == ALL_RANKS else f"rank {v}",
    }
    return ", ".join(phrases.get(k, str)(row[k]) for k in keys) or "all cells"


def stage_medians(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """``(stage, median column)`` for every stage the summary holds, in :data:`harness.results.STAGES` order."""
    prefix, suffix = "stage_", "_ms_per_batch_median"
    found = {c[len(prefix) : -len(suffix)] for c in summary.columns if c.startswith(prefix) and c.endswith(suffix)}
    ordered = [s for s in STAGES if s in found] + sorted(found - set(STAGES))
    return [(stage, f"{stage_column(stage)}_median") for stage in ordered]


def measured(samples: pd.DataFrame) -> pd.DataFrame:
    """The measured (non-warm-up) epochs."""
    if "warmup" not in samples.columns:
        return samples
    return samples[~samples["warmup"].astype(bool)]


def metric_values(samples: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of measured epochs holding ``metric``, one per process for per-process metrics."""
    rows = measured(samples)
    rows = rows[rows[metric].notna()]
    spec = METRICS.get(metric)
    if spec is not None and spec.per_process and "repeat" in rows.columns:
        rows = rows.drop_duplicates([*cell_keys(rows), "repeat"])
    return rows


def iter_cells(samples: pd.DataFrame, metric: str) -> Iterator[tuple[tuple, np.ndarray]]:
    """``(cell key tuple, values)`` for every cell with at least one value of ``metric``."""
    keys = cell_keys(samples)
    for key, group in metric_values(samples, metric).groupby(keys, sort=True, dropna=False):
        yield tuple(key), group[metric].to_numpy(dtype=float)


def summarize(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: ``n``, and ``M_median``/``_q25``/``_q75``/``_iqr``/``_cv`` per metric.

    Also ``unstable`` (headline cv > 10%) and ``leaked_shm_max`` /
    ``leftover_processes_max``; per stage that the samples report,
    ``stage_<stage>_ms_per_batch_median`` and its quartiles. Sorted by cell keys.
    """
    samples = with_stage_columns(samples)
    keys = cell_keys(samples)
    rows = measured(samples)
    n = rows.groupby(keys, sort=True, dropna=False).size()
    # Columns are collected and joined once: inserting ~100 one by one fragments the frame.
    stats: dict[str, pd.Series] = {"n": n}
    stages = [stage_column(stage) for stage in stages_of(rows)]
    for name in [*(m for m in METRICS if m in rows.columns), *stages]:
        stats.update(spread_stats(name, metric_values(samples, name).groupby(keys, sort=True, dropna=False)[name]))
    for name in (c for c in COUNTERS if c in rows.columns):
        stats[f"{name}_max"] = rows.groupby(keys, sort=True, dropna=False)[name].max()
    summary = pd.DataFrame(stats, index=n.index)
    headline = f"{HEADLINE}_cv"
    summary["unstable"] = summary[headline].gt(UNSTABLE_CV) if headline in summary else False
    return summary.reset_index()


def checksum_mismatches(samples: pd.DataFrame) -> list[str] | None:
    """Epoch groups whose batch checksums differ across strategies or repeats (None: no checksums).

    docs/design.md section 3: for one dataset and config, every strategy yields the same
    batches, so epoch ``k`` of every process must hash the same (per workload: the
    ``transfer`` workload hands over other tiles than the ``full`` one). Warm-up epochs count
    too: they carry the same batches as any other epoch ``k``.
    """
    if "checksum" not in samples.columns or samples["checksum"].isna().all():
        return None
    # A rank of a distributed run yields its own shard's batches: compare like with like.
    keys = [k for k in ("dataset", "workload", "batch_size", "tile", "rank", "epoch") if k in samples.columns]
    counts = samples.dropna(subset=["checksum"]).groupby(keys, sort=True)["checksum"].nunique()
    return [", ".join(f"{k} {v}" for k, v in zip(keys, index, strict=True)) for index in counts[counts > 1].index]


def check_stored_summary(computed: pd.DataFrame, stored: pd.DataFrame, rel_tol: float = 1e-6) -> list[str]:
    """Where a stored ``summary.csv`` disagrees with the recomputed one (n and medians).

    Per-process metrics are skipped: a runner may aggregate them over epochs, which
    gives the same story but other quartiles.
    """
    keys = [key for key in cell_keys(computed) if key in stored.columns]
    if not keys:
        return ["summary.csv has no cell key columns"]
    columns = ["n"] + [f"{m}_median" for m, spec in METRICS.items() if not spec.per_process]
    columns = [c for c in columns if c in computed.columns and c in stored.columns]
    # Compare keys as strings: CSV round-trips 0.0 as "0.0" but JSON may give 0.
    left = computed.assign(**{k: computed[k].map(_key_text) for k in keys}).set_index(keys)
    right = stored.assign(**{k: stored[k].map(_key_text) for k in keys}).set_index(keys)
    problems = []
    missing = left.index.difference(right.index)
    if len(missing):
        problems.append(f"{len(missing)} cell(s) of samples.jsonl missing from summary.csv")
    extra = right.index.difference(left.index)
    if len(extra):
        problems.append(f"{len(extra)} cell(s) in summary.csv have no measured samples")
    common = left.index.intersection(right.index)
    for column in columns:
        a = left.loc[common, column].astype(float).to_numpy()
        b = right.loc[common, column].astype(float).to_numpy()
        bad = ~np.isclose(a, b, rtol=rel_tol, atol=1e-12, equal_nan=True)
        if bad.any():
            problems.append(f"{column} differs in {int(bad.sum())} cell(s)")
    return problems


def _key_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
