"""What bounds a regime: the compute bound and, for a cold page cache, the disk bound, beside the best strategy.

Two ceilings that no loader can pass, each measured in the run itself:

- **compute**: ``cores / c``, where ``c`` is the single-process baseline's CPU seconds
  per batch (the per-image work with nothing handed over; the least over the run's
  decode-thread settings, which spread the work without changing it): the rate if
  every core did nothing but that work. On compressed images the work is mostly decoding, and the
  bound falls as the codec gets slower.
- **disk** (cells with ``cache == "cold"`` only): env.json's ``disk.read_mb_per_s``
  (the dataset's files read sequentially just after eviction, once per run) over the
  megabytes an epoch reads per batch (the dataset's bytes, env.json
  ``dataset.bytes``, over the epoch's batches).

For each variant of the run (cache, decode threads, dtype, ...; the step-free cells of
the full workload at the run's largest worker count, without deliberate background
load, which takes cores away from the bound) the report lists the baseline, the best
strategy and the slowest one with worker processes, each as a ratio, and the best
against the tighter bound. Ratios of cells measured side by side: they do not drift
with the machine as absolute figures do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.results import ALL_RANKS, RunData, measured, variant_keys, variant_label

from .cells import has_workers
from .goals import strategy_median, worker_processes
from .provenance import dataset_record, lookup

BASELINE = "baseline"


@dataclass(frozen=True, slots=True)
class RegimeBound:
    """One variant's baseline, best and slowest strategy, and the ceilings above them (batches/s)."""

    variant: str  # "cold cache, auto decode threads" or "all cells"
    workers: int
    baseline: float | None
    best_strategy: str | None
    best: float | None
    slowest_strategy: str | None  # the slowest strategy with worker processes
    slowest: float | None
    compute_bound: float | None
    disk_bound: float | None

    @property
    def tightest(self) -> float | None:
        bounds = [b for b in (self.compute_bound, self.disk_bound) if b]
        return min(bounds) if bounds else None

    def ratio(self, top: float | None, bottom: float | None) -> float | None:
        return top / bottom if top is not None and bottom else None


def batches_per_epoch(run: RunData, variant: dict[str, Any]) -> float | None:
    """Batches of one whole-dataset epoch in ``variant``'s cells (from the samples: batches / epochs)."""
    rows = measured(run.samples)
    rows = rows[(rows["workload"] == "full") & (rows["rank"].astype(str) == ALL_RANKS)]
    for key, value in variant.items():
        if key in rows:
            rows = rows[rows[key] == value]
    if rows.empty or "epochs" not in rows:
        return None
    per_epoch = pd.to_numeric(rows["batches"], errors="coerce") / pd.to_numeric(rows["epochs"], errors="coerce")
    return float(per_epoch.median()) if per_epoch.notna().any() else None


def disk_bound(run: RunData, variant: dict[str, Any]) -> float | None:
    """Batches/s the disk allows when every epoch reads the whole dataset from it (None without a measurement)."""
    mb_per_s = lookup(run.env, "disk.read_mb_per_s")
    dataset_bytes = dataset_record(run.env, variant.get("dataset")).get("bytes")  # the variant's own dataset
    batches = batches_per_epoch(run, variant)
    if not mb_per_s or not dataset_bytes or not batches:
        return None
    return float(mb_per_s) / (float(dataset_bytes) / 1e6 / batches)


def _least_work(rows: pd.DataFrame, variant: dict[str, Any]) -> float | None:
    """The baseline's CPU seconds per batch for ``variant``'s work: the least over its decode-thread settings.

    Decode threads spread the work; they do not change it, but threads that wait on
    each other add CPU (a second decode thread in the baseline costs a few percent
    more CPU per batch). The work itself is the least CPU any setting spent on it.
    """
    cells = rows[rows["strategy"] == BASELINE]
    for key, value in variant.items():
        if key != "decode_threads":
            cells = cells[cells[key] == value]
    values = [float(v) for v in cells.get("cpu_s_per_batch_median", []) if pd.notna(v) and v > 0]
    return min(values) if values else None


def regime_bounds(run: RunData) -> list[RegimeBound]:
    """One :class:`RegimeBound` per variant of the run's step-free, unloaded full-workload cells."""
    summary = run.summary
    if summary.empty or "cpu_s_per_batch_median" not in summary:
        return []
    rows = summary[(summary["workload"] == "full") & (summary["rank"].astype(str) == ALL_RANKS)]
    rows = rows[rows["step_ms"].astype(float) == 0]
    if "background_load" in rows:
        rows = rows[pd.to_numeric(rows["background_load"], errors="coerce").fillna(0) == 0]
    with_workers = rows[rows["strategy"].map(has_workers).astype(bool)]
    if rows.empty or with_workers.empty:
        return []
    workers = int(with_workers["workers"].max())
    cores = lookup(run.env, "machine.cores_logical")
    keys = [k for k in variant_keys(rows) if k not in ("workers", "strategy")]
    variants = rows[keys].drop_duplicates().to_dict("records") if keys else [{}]
    found = []
    for variant in variants:
        cells = rows
        for key, value in variant.items():
            cells = cells[cells[key] == value]
        base_rows = cells[cells["strategy"] == BASELINE]
        at = base_rows[base_rows["workers"] == workers]
        base_row = at if not at.empty else base_rows.head(1)
        baseline = strategy_median(base_row, BASELINE, "batches_per_s")
        base_cpu = _least_work(rows, variant)
        ranked = cells[cells["strategy"].map(has_workers).astype(bool) & (cells["workers"] == workers)]
        ranked = ranked[ranked["batches_per_s_median"].notna()].sort_values("batches_per_s_median")
        processes = ranked[ranked["strategy"].map(worker_processes).astype(bool)]
        best = ranked.iloc[-1] if not ranked.empty else None
        slowest = processes.iloc[0] if not processes.empty else None
        cold = str(variant.get("cache", cells["cache"].iloc[0] if "cache" in cells else "warm")) == "cold"
        found.append(
            RegimeBound(
                variant=variant_label(pd.Series(variant), list(variant)) if variant else "all cells",
                workers=workers,
                baseline=baseline,
                best_strategy=None if best is None else str(best["strategy"]),
                best=None if best is None else float(best["batches_per_s_median"]),
                slowest_strategy=None if slowest is None else str(slowest["strategy"]),
                slowest=None if slowest is None else float(slowest["batches_per_s_median"]),
                compute_bound=float(cores) / base_cpu if cores and base_cpu else None,
                disk_bound=disk_bound(run, variant) if cold else None,
            )
        )
    return found
