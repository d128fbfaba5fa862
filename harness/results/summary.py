"""Raw per-epoch samples -> one row per cell: the one aggregation behind summary.csv, reports and compare.

Tables show the median and the inter-quartile range; a cell whose batches/s spread
(sample std / mean) is over :data:`~.schema.UNSTABLE_CV` is flagged unstable, as
pyperf does. Quantiles are pandas' (linear interpolation).

Two metrics are properties of a *process*, not of an epoch: ``startup_s`` and
``shutdown_s`` are measured once per generator and copied onto each of its epochs.
Counting them once per epoch would pretend to more independent samples than exist
(and inflate a significance test), so they are reduced to one value per
``(cell, repeat)`` first (:func:`metric_values`).

``summary.csv`` is written from :func:`summarize`; a report recomputes it from
``samples.jsonl`` the same way and only checks the stored file against it
(:func:`check_stored_summary`: a hand-edited or stale file is noticed, not believed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .io import read_samples, write_atomic
from .schema import (
    ALL_RANKS,
    CELL_KEYS,
    COUNTERS,
    HEADLINE,
    KEY_FILL,
    METRICS,
    MIN_SAMPLES,
    SAMPLES_FILE,
    STAGES,
    SUMMARY_FILE,
    UNSTABLE_CV,
    stage_column,
)

STATS = ("median", "q25", "q75", "iqr", "cv")


# -- columns --------------------------------------------------------------------------
def with_cell_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every cell key present (older or partial files lack some) and ``warmup`` a bool."""
    frame = frame.copy()
    for key in CELL_KEYS:
        if key not in frame.columns:
            frame[key] = KEY_FILL.get(key, "n/a")
        elif key in KEY_FILL and frame[key].isna().any():
            frame[key] = frame[key].fillna(KEY_FILL[key])
    if "warmup" in frame.columns:
        frame["warmup"] = frame["warmup"].fillna(False).astype(bool)
    return frame


def stages_of(frame: pd.DataFrame, field: str = "stage_ms_per_batch") -> list[str]:
    """The stages any row's ``field`` names: :data:`STAGES` order first, then others sorted."""
    if field not in frame:
        return []
    named = {key for value in frame[field] if isinstance(value, dict) for key in value}
    return [s for s in STAGES if s in named] + sorted(named - set(STAGES))


# Per-sample dicts of ms per batch by stage, and the side their flat columns name ("" = both sides summed).
STAGE_FIELDS = (("stage_ms_per_batch", ""), ("stage_main_ms_per_batch", "main"))


def stage_metrics(frame: pd.DataFrame) -> list[str]:
    """The flat stage columns ``frame``'s samples carry, both sides summed first, then the main side's."""
    return [stage_column(stage, side) for field, side in STAGE_FIELDS for stage in stages_of(frame, field)]


def with_stage_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with one float column per stage and side (NaN where a row has no stage times), for aggregation."""
    columns = {
        stage_column(stage, side): frame[field].map(
            lambda value, stage=stage: float(value[stage]) if isinstance(value, dict) and stage in value else math.nan
        )
        for field, side in STAGE_FIELDS
        for stage in stages_of(frame, field)
    }
    return frame.assign(**columns) if columns else frame


def with_of_r(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``of_r``: each window's batches/s over R, R from the same process's own memcpy.

    R is batches of this size (data and masks) one core copies per second; measured in
    the window's own process moments before, it moves with the machine's pace, so the
    ratio does not carry the drift between the window and a measurement minutes away.
    Absent where a sample has no ``memcpy_gb_per_s`` or no byte count.
    """
    needed = {"memcpy_gb_per_s", "bytes", "batches", "batches_per_s"}
    if not needed <= set(frame.columns):
        return frame
    gb_per_s = pd.to_numeric(frame["memcpy_gb_per_s"], errors="coerce")
    if gb_per_s.isna().all():
        return frame
    batches = pd.to_numeric(frame["batches"], errors="coerce")
    batch_bytes = pd.to_numeric(frame["bytes"], errors="coerce") / batches.where(batches > 0)
    r_rate = gb_per_s * 1e9 / batch_bytes
    return frame.assign(of_r=pd.to_numeric(frame["batches_per_s"], errors="coerce") / r_rate.where(r_rate > 0))


def cell_keys(frame: pd.DataFrame) -> list[str]:
    """The cell keys present in ``frame``, in canonical order."""
    return [key for key in CELL_KEYS if key in frame.columns]


def variant_keys(summary: pd.DataFrame) -> list[str]:
    """Cell keys other than the strategy that vary across the run's cells."""
    return [k for k in CELL_KEYS if k != "strategy" and k in summary and summary[k].nunique(dropna=False) > 1]


def variant_label(row: pd.Series, keys: list[str]) -> str:
    phrases = {
        "workers": lambda v: f"{v} worker" + ("" if v == 1 else "s"),
        "prefetch": lambda v: f"prefetch {v}",
        "batch_size": lambda v: f"batch {v}",
        "tile": lambda v: f"tile {v}",
        "step_ms": lambda v: f"step {v:g} ms",
        "decode_threads": lambda v: f"{v} decode thread" + ("" if str(v) == "1" else "s"),
        "background_load": lambda v: f"{v} busy process" + ("" if v == 1 else "es") + " beside",
        "cache": lambda v: f"{v} cache",
        "prefetch_next_epoch": lambda v: "next epoch begun early" if v == "on" else "epoch by epoch",
        "background_start": lambda v: "started in the background" if v == "on" else "started in make_generator",
        "rank": lambda v: "all ranks" if v == ALL_RANKS else f"rank {v}",
    }
    return ", ".join(phrases.get(k, str)(row[k]) for k in keys) or "all cells"


def stage_medians(summary: pd.DataFrame, side: str = "") -> list[tuple[str, str]]:
    """``(stage, median column)`` for every stage the summary holds, in :data:`STAGES` order.

    ``side``: ``""`` for both sides summed, ``"main"`` for the main process's own share.
    """
    prefix, suffix = f"stage_{side + '_' if side else ''}", "_ms_per_batch_median"
    sides = [f"{s}_" for _, s in STAGE_FIELDS if s and s != side]  # another side's columns share the prefix
    found = {
        c[len(prefix) : -len(suffix)]
        for c in summary.columns
        if c.startswith(prefix) and c.endswith(suffix) and not any(c[len(prefix) :].startswith(o) for o in sides)
    }
    ordered = [s for s in STAGES if s in found] + sorted(found - set(STAGES))
    return [(stage, f"{stage_column(stage, side)}_median") for stage in ordered]


# -- rows -----------------------------------------------------------------------------
def measured(samples: pd.DataFrame) -> pd.DataFrame:
    """The measured (non-warm-up) epochs."""
    if "warmup" not in samples.columns:
        return samples
    return samples[~samples["warmup"].astype(bool)]


def metric_values(samples: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of measured windows holding ``metric``, one per process for per-process metrics."""
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


# -- the summary ----------------------------------------------------------------------
def spread_stats(name: str, values: Any) -> dict[str, Any]:
    """``name``'s median, quartiles, IQR and cv per cell, from a grouped column (pandas SeriesGroupBy).

    cv is the sample std over the mean: NaN for one value (std undefined) and for a
    zero mean (meaningless).
    """
    q25, q75, mean = values.quantile(0.25), values.quantile(0.75), values.mean()
    return {
        f"{name}_median": values.median(),
        f"{name}_q25": q25,
        f"{name}_q75": q75,
        f"{name}_iqr": q75 - q25,
        f"{name}_cv": values.std(ddof=1) / mean.where(mean != 0),
    }


def summarize(samples: pd.DataFrame | Iterable[Mapping[str, Any]], cores: int | None = None) -> pd.DataFrame:
    """One row per cell over the measured (non-warm-up) epochs, sorted by the cell keys.

    Columns: the cell keys, ``n`` (measured windows), and per metric of :data:`METRICS`
    that the samples carry ``M_median``, ``M_q25``, ``M_q75``, ``M_iqr``, ``M_cv``;
    the same for each ``stage_<stage>_ms_per_batch`` that any sample reports; then
    ``unstable`` (headline cv > :data:`UNSTABLE_CV`), ``checksums_consistent`` (every
    repeat yielded the same batches at the same epoch index), ``<counter>_max`` for
    every counter (0 where the samples do not carry it), ``drift`` (:func:`drift`),
    ``other_cores_median`` (what other processes used meanwhile) and ``verdict``
    (:func:`verdict`, the one judgement every table shows; ``cores``: of the machine
    that measured, this one's when not given).
    """
    frame = samples if isinstance(samples, pd.DataFrame) else pd.DataFrame(list(samples))
    frame = with_of_r(with_stage_columns(with_cell_keys(frame)))
    present = [m for m in METRICS if m in frame.columns] or [m for m in METRICS if m != "of_r"]  # none: empty input
    metrics = [*present, *stage_metrics(frame)]
    columns = [
        *CELL_KEYS,
        "n",
        *(f"{m}_{s}" for m in metrics for s in STATS),
        "unstable",
        "checksums_consistent",
        *(f"{c}_max" for c in COUNTERS),
        "drift",
        "other_cores_median",
        "verdict",
    ]
    rows = measured(frame) if "warmup" in frame.columns else frame.iloc[0:0]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    keys = list(CELL_KEYS)
    grouped = rows.groupby(keys, sort=True, dropna=False)
    n = grouped.size()
    # Every column is built first and joined once: inserting ~100 columns one by one fragments the frame.
    stats: dict[str, Any] = {"n": n}
    for metric in metrics:
        stats.update(spread_stats(metric, metric_values(frame, metric).groupby(keys, sort=True, dropna=False)[metric]))
    headline = f"{HEADLINE}_cv"
    stats["unstable"] = stats[headline].gt(UNSTABLE_CV) if headline in stats else pd.Series(False, index=n.index)
    epochs = epoch_checksums(rows)
    if epochs is not None:
        stats["checksums_consistent"] = (
            epochs.groupby([*keys, "epoch"], sort=True, dropna=False)["checksum"]
            .nunique()
            .le(1)
            .groupby(level=keys, sort=True, dropna=False)
            .all()
            .reindex(n.index, fill_value=True)
        )
    else:
        stats["checksums_consistent"] = pd.Series(True, index=n.index)
    for counter in COUNTERS:
        stats[f"{counter}_max"] = grouped[counter].max() if counter in rows else pd.Series(0, index=n.index)
    stats["drift"] = drift(rows, keys).reindex(n.index)
    stats["other_cores_median"] = (
        rows.assign(other_cores=unplanned_other_cores(rows))
        .groupby(keys, sort=True, dropna=False)["other_cores"]
        .median()
        if "other_cores" in rows
        else pd.Series(math.nan, index=n.index)
    )
    summary = pd.DataFrame(stats, index=n.index).reset_index()
    summary["verdict"] = [verdict(row, cores) for _, row in summary.iterrows()]
    return summary[columns]


def epoch_checksums(rows: pd.DataFrame) -> pd.DataFrame | None:
    """One row per epoch: the cell keys, ``repeat``, ``epoch`` and that epoch's ``checksum`` (None: no checksums).

    A window covers ``epochs`` epochs from ``epoch`` and lists their checksums
    (``checksums``); a sample without that list is one epoch, its ``checksum``.
    """
    if "checksum" not in rows.columns or rows["checksum"].isna().all():
        return None
    keep = [c for c in (*CELL_KEYS, "repeat", "warmup") if c in rows.columns]
    out = []
    for record in rows.to_dict("records"):
        listed = record.get("checksums")
        sums = list(listed) if isinstance(listed, list | tuple) and len(listed) else [record.get("checksum")]
        first = int(record.get("epoch", 0))
        for offset, checksum in enumerate(sums):
            if checksum is not None and not (isinstance(checksum, float) and math.isnan(checksum)):
                out.append({**{c: record[c] for c in keep}, "epoch": first + offset, "checksum": checksum})
    return pd.DataFrame(out) if out else None


def drift(rows: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Per cell, the median over processes of (last measured window / first measured window - 1), in batches/s.

    A machine (or a strategy) that speeds up or slows down while a process measures
    shows here; NaN where no process measured two windows.
    """
    if "repeat" not in rows.columns or HEADLINE not in rows.columns:
        return pd.Series(dtype=float)
    order = "window" if "window" in rows.columns else "epoch"
    per_process = rows.sort_values(order).groupby([*keys, "repeat"], sort=True, dropna=False)[HEADLINE]
    change = per_process.agg(lambda v: v.iloc[-1] / v.iloc[0] - 1 if len(v) > 1 and v.iloc[0] else math.nan)
    return change.groupby(level=keys, sort=True, dropna=False).median()


def verdict(row: pd.Series, cores: int | None = None) -> str:
    """The one verdict on a cell's figures, as every table and section shows it.

    "too few samples (n < 6)", "unstable (cv 12%)", or "ok"; a cell measured while
    other processes used more than half the machine's cores adds "loaded (...)".
    """
    n = int(row.get("n", 0) or 0)
    if n < MIN_SAMPLES:
        text = f"too few samples (n={n} < {MIN_SAMPLES})"
    else:
        cv = row.get(f"{HEADLINE}_cv")
        text = f"unstable (cv {cv:.0%})" if cv is not None and cv == cv and cv > UNSTABLE_CV else "ok"
    others = row.get("other_cores_median")
    limit = (cores or os.cpu_count() or 1) / 2
    if others is not None and others == others and others > limit:
        text += f"; loaded (other processes used {others:.1f} cores)"
    return text


def checksum_mismatches(samples: pd.DataFrame) -> list[str] | None:
    """Epoch groups whose batch checksums differ across strategies or repeats (None: no checksums).

    docs/design.md section 3: for one dataset and config, every strategy yields the
    same batches, so epoch ``k`` of every process must hash the same (per workload:
    the ``transfer`` workload hands over other tiles than the ``full`` one). Warm-up
    epochs count too: they carry the same batches as any other epoch ``k``.
    """
    epochs = epoch_checksums(samples)
    if epochs is None:
        return None
    # A rank of a distributed run yields its own shard's batches: compare like with like.
    keys = [k for k in ("dataset", "workload", "batch_size", "tile", "rank", "epoch") if k in epochs.columns]
    counts = epochs.groupby(keys, sort=True)["checksum"].nunique()
    return [", ".join(f"{k} {v}" for k, v in zip(keys, index, strict=True)) for index in counts[counts > 1].index]


def check_stored_summary(computed: pd.DataFrame, stored: pd.DataFrame, rel_tol: float = 1e-6) -> list[str]:
    """Where a stored ``summary.csv`` disagrees with the recomputed one (n and medians)."""
    keys = [key for key in cell_keys(computed) if key in stored.columns]
    if not keys:
        return ["summary.csv has no cell key columns"]
    columns = ["n", *(f"{m}_median" for m in METRICS)]
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


def write_summary(run_dir: Path, cores: int | None = None) -> Path:
    """Recompute ``summary.csv`` from ``samples.jsonl`` (also for a partial run), atomically."""
    run_dir = Path(run_dir)
    text = summarize(read_samples(run_dir / SAMPLES_FILE), cores).to_csv(index=False)
    return write_atomic(run_dir / SUMMARY_FILE, text.encode())


def unplanned_other_cores(rows: pd.DataFrame) -> pd.Series:
    """``other_cores`` less the run's own deliberate load (``background_load`` busy processes, one core each).

    What else the machine ran, which is what makes a figure suspect; the spinners of
    ``--background-load`` are part of the experiment.
    """
    others = pd.to_numeric(rows["other_cores"], errors="coerce")
    if "background_load" not in rows:
        return others
    planned = pd.to_numeric(rows["background_load"], errors="coerce").fillna(0)
    return (others - planned).clip(lower=0)


def load_verdict(env: Mapping[str, Any], samples: pd.DataFrame, cores: int | None = None) -> str | None:
    """Whether the run's machine was busy with other work: what to say, or None for a quiet machine.

    Busy means over half the cores: the cores other processes used over a second just
    before the run (or, for a run that did not measure it, the 1-minute load average,
    which also counts a run that just ended), or the cores that other processes used
    during the measured windows (median; a sample's
    ``other_cores``). Timing on a busy machine is not to be trusted: a figure taken
    under load once reversed a ranking.
    """
    cores = cores or os.cpu_count() or 1
    limit = cores / 2
    said = []
    before = env.get("loadavg_before")
    others_before = env.get("other_cores_before")
    measured_before = isinstance(others_before, int | float)
    # The load average decays over minutes: just after another run (a sweep of runs, say) it still
    # counts that run. Where the CPU other processes used just before this run was measured, that
    # measurement says whether the machine was busy; the load average only where it was not.
    loaded = isinstance(before, list | tuple) and before and isinstance(before[0], int | float) and before[0] > limit
    if loaded and not measured_before:
        said.append(f"the load average was {before[0]:.2f} before the run")
    if measured_before and others_before > limit:
        said.append(f"other processes used {others_before:.2f} cores just before it")
    if "other_cores" in samples.columns:
        others = unplanned_other_cores(measured(samples)).dropna()
        if len(others) and float(others.median()) > limit:
            said.append(f"other processes used {float(others.median()):.2f} cores (median) during its windows")
    if not said:
        return None
    return f"Measured on a busy machine ({' and '.join(said)}; {cores} cores): its figures are suspect."
