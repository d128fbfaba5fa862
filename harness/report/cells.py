"""What a figure needs to know about a cell besides its medians: what its strategy is, and how many values its spread
rests on.

What a strategy is comes from its class in :data:`strategies.STRATEGIES`, not from its name:

- ``has_workers`` False (the baseline): ``workers`` is ignored, the work runs inside the training loop's own
  process. Its cells are not "at 2 workers": the throughput figure draws such a strategy as a horizontal line
  across the workers axis (its cells pooled), and every legend says "(no workers)".
- ``shared_memory`` False: the strategy hands nothing over through /dev/shm. Where it also measured none, the
  /dev/shm panel leaves it out and says so, instead of drawing a stub that reads "measured, about zero".

A spread needs at least :data:`MIN_SPREAD` values: a cell with one value (a quick run, or a per-process metric such
as start-up in a run of one repeat) has an IQR of 0 that is no measured zero spread. The figures draw no error bar
for it and write "n=1" instead, and the captions name those cells (:func:`single_value_note`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pandas as pd

from harness.results import (
    CELL_KEYS,
    KEY_FILL,
    METRICS,
    SWEPT_DEFAULTS,
    RunData,
    metric_values,
    variant_keys,
    variant_label,
    with_cell_keys,
)
from strategies import STRATEGIES

MIN_SPREAD = 2  # values a spread (IQR) needs; with fewer the figures draw no error bar


def has_workers(strategy: str) -> bool:
    """Whether ``strategy`` uses ``workers`` (a strategy no longer registered: assumed to)."""
    cls = STRATEGIES.get(strategy)
    return cls is None or bool(cls.has_workers)


def uses_shared_memory(strategy: str) -> bool:
    """Whether ``strategy`` hands images over through /dev/shm (a strategy no longer registered: assumed to)."""
    cls = STRATEGIES.get(strategy)
    return cls is None or bool(cls.shared_memory)


def strategy_label(strategy: str) -> str:
    """The strategy's name in a legend: ``"baseline (no workers)"`` for a strategy without workers."""
    return strategy if has_workers(strategy) else f"{strategy} (no workers)"


def value_counts(run: RunData, metric: str) -> pd.Series:
    """For each row of ``run.summary``, how many values its ``metric`` median and IQR rest on.

    Measured windows, or processes for a per-process metric (start-up, shutdown); 0 where
    the samples lack the metric.
    """
    summary = run.summary
    samples = with_cell_keys(run.samples)
    if metric not in samples.columns or summary.empty:
        return pd.Series(0, index=summary.index, dtype=int)
    keys = list(CELL_KEYS)
    counts = metric_values(samples, metric).groupby(keys, sort=False, dropna=False).size().rename("_count")
    merged = summary[keys].merge(counts.reset_index(), on=keys, how="left")
    return pd.Series(merged["_count"].fillna(0).astype(int).to_numpy(), index=summary.index)


def pooled_units(run: RunData, metric: str) -> pd.DataFrame:
    """``metric`` per cell as the throughput figure draws it: a strategy without workers pooled over its cells.

    One row per strategy with workers and cell; one per strategy without workers and the
    cell keys other than ``workers`` (``workers`` NaN there), since its cells at different
    worker counts measured the same thing. Columns: the cell keys, ``median``, ``q25``,
    ``q75`` and ``n`` (how many values).
    """
    columns = [*CELL_KEYS, "median", "q25", "q75", "n"]
    samples = with_cell_keys(run.samples)
    if metric not in samples.columns:
        return pd.DataFrame(columns=columns)
    rows = metric_values(samples, metric)
    inline = ~rows["strategy"].map(has_workers).astype(bool)
    rows = rows.assign(workers=rows["workers"].astype(float).where(~inline))
    values = rows.groupby(list(CELL_KEYS), sort=True, dropna=False)[metric]
    units = pd.DataFrame(
        {
            "median": values.median(),
            "q25": values.quantile(0.25),
            "q75": values.quantile(0.75),
            "n": values.size(),
        }
    ).reset_index()
    return units[columns]


def _cell_names(rows: pd.DataFrame, keys: list[str]) -> list[str]:
    names = []
    for _, row in rows.iterrows():
        own = [k for k in keys if not (k == "workers" and not has_workers(row["strategy"]))]
        if "workers" in own:
            row = row.copy()
            row["workers"] = int(row["workers"])  # pooled_units holds it as a float, NaN where pooled
        label = strategy_label(row["strategy"])
        names.append(label + (f" ({variant_label(row, own)})" if own else ""))
    return names


def single_value_note(run: RunData, metrics: tuple[str, ...], *, pool_inline: bool = False) -> str:
    """The caption sentence naming the drawn cells that have no error bar because one value is all they have.

    ``pool_inline``: cells as :func:`pooled_units` draws them (the throughput figure).
    Empty when every cell has a spread.
    """
    keys = variant_keys(run.summary)
    groups: dict[tuple[str, ...], list[str]] = {}  # cells without a spread -> the metrics they lack it for
    totals: dict[str, int] = {}
    for metric in metrics:
        if pool_inline:
            units = pooled_units(run, metric)
            units = units[units["median"].notna()]
            few = units[units["n"] < MIN_SPREAD]
        else:
            column = f"{metric}_median"
            if column not in run.summary:
                continue
            counts = value_counts(run, metric)
            units = run.summary[run.summary[column].notna()]
            few = units[counts[units.index] < MIN_SPREAD]
        totals[metric] = len(units)
        if len(few):
            groups.setdefault(tuple(_cell_names(few, keys)), []).append(metric)
    sentences = []
    for names, lacking in groups.items():
        labels = [METRICS[m].label.split(" (")[0] for m in lacking]
        what = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"
        if all(len(names) == totals[m] for m in lacking):
            sentences.append(f"No error bars for {what}: every cell has a single value (n=1).")
        else:
            sentences.append(f"No error bar for {what} where a cell has a single value (n=1): {'; '.join(names)}.")
    return " ".join(sentences)


def hold_at_defaults(rows: pd.DataFrame, keys: Iterable[str]) -> pd.DataFrame:
    """``rows`` with each of ``keys`` that takes several values held at one: its default where the run
    measured it (:data:`harness.results.SWEPT_DEFAULTS`, else the key's fill value), else its smallest."""
    for key in keys:
        if key not in rows or rows[key].nunique() <= 1:
            continue
        values = sorted(set(rows[key].astype(str)))
        usual = SWEPT_DEFAULTS.get(key, KEY_FILL.get(key))
        keep = str(usual) if usual is not None and str(usual) in values else values[0]
        rows = rows[rows[key].astype(str) == keep]
    return rows


def first_dataset(run: RunData) -> tuple[RunData, str | None]:
    """``run`` restricted to its first dataset (env.json ``dataset``) and that dataset's name, where it measured
    several (``--dataset a,b,c``); else ``run`` itself and None. Sections that judge one machine's loaders (the
    goals, the batch and worker axes) read one dataset's cells, not a mixture of image sizes."""
    info = run.env.get("dataset")
    name = info.get("name") if isinstance(info, dict) else None
    frames = (run.summary, run.samples)
    if name is None or not all("dataset" in frame for frame in frames) or run.summary["dataset"].nunique() <= 1:
        return run, None
    summary, samples = (frame[frame["dataset"].astype(str) == str(name)] for frame in frames)
    return dataclasses.replace(run, summary=summary, samples=samples), str(name)
