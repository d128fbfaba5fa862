"""The numbers of the report's tables: each cell a summary median [IQR] in its column's unit.

Separate from :mod:`.document` (the prose around them) so that the mutation run
(docs/mutation.md) can cover every number a table prints without the report's prose.
"""

from __future__ import annotations

import pandas as pd

from harness.results import HEADLINE

from .provenance import plain

# (title, ((summary metric, column label, scale to the label's unit), ...)) of each summary table.
SUMMARY_TABLES = (
    (
        "Throughput and latency",
        (
            ("batches_per_s", "batches/s", 1.0),
            ("mb_per_s", "MB/s", 1.0),
            ("wait_ms_p50", "wait p50 (ms)", 1.0),
            ("wait_ms_p95", "wait p95 (ms)", 1.0),
            ("wait_ms_p99", "wait p99 (ms)", 1.0),
            ("time_to_first_batch_s", "first batch (ms)", 1000.0),
            ("consumer_utilization", "consumer busy", 1.0),
            ("seconds", "epoch (s)", 1.0),
        ),
    ),
    (
        "Memory, CPU, start-up and shutdown",
        (
            ("pss_peak_mb", "PSS (MB)", 1.0),
            ("uss_peak_mb", "USS (MB)", 1.0),
            ("shm_peak_mb", "/dev/shm (MB)", 1.0),
            ("cpu_s_per_batch", "CPU ms/batch", 1000.0),
            ("startup_s", "startup (ms)", 1000.0),
            ("shutdown_s", "shutdown (ms)", 1000.0),
        ),
    ),
)

# Counters shown after the memory table's medians: (summary column, label).
COUNTERS = (
    ("leaked_shm_max", "leaked shm"),
    ("leftover_processes_max", "leftover procs"),
    ("orphans_after_exit_max", "orphans after exit"),
    ("leaked_shm_after_exit_max", "shm leaked after exit"),
)


def fmt_number(value: float) -> str:
    """Three significant figures, no exponent for everyday magnitudes: 1,157 / 80.1 / 2.35 / 0.0123."""
    if value is None or pd.isna(value):
        return "–"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude == 0:
        return "0"
    if magnitude < 0.01:
        return "<0.01" if value > 0 else ">-0.01"  # tables choose units that keep real values above this
    return f"{value:.3f}".rstrip("0") if magnitude < 0.1 else f"{value:.2f}"


def median_cell(row: pd.Series, metric: str, scale: float = 1.0) -> str:
    """``metric``'s median with its IQR in brackets, both times ``scale``; "–" when there is no median."""
    median = row.get(f"{metric}_median")
    if median is None or pd.isna(median):
        return "–"
    iqr = row.get(f"{metric}_iqr")
    spread = "" if iqr is None or pd.isna(iqr) else f" [{fmt_number(iqr * scale)}]"
    return fmt_number(median * scale) + spread


def shown(summary: pd.DataFrame, metric: str) -> bool:
    """Does ``metric`` get a column: some cell has a median, and the metric means something in this run?"""
    column = f"{metric}_median"
    if column not in summary or summary[column].isna().all():
        return False
    if metric == "consumer_utilization":
        return bool((summary["step_ms"].astype(float) > 0).any())  # 0 by definition without a step
    if metric == "seconds":
        return f"{HEADLINE}_median" not in summary  # epoch time only where throughput is unknown
    return True


def summary_tables(
    summary: pd.DataFrame, keys: list[str]
) -> list[tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...], tuple[bool, ...]]]:
    """``(title, header, rows, numeric)`` of each summary table with a column to show, one row per cell.

    A row: the strategy, its variant ``keys``, ``n``, then each shown metric's
    :func:`median_cell`; the throughput table ends with the verdict (bold unless *ok*),
    the memory table with the shutdown counters the summary holds.
    """
    tables = []
    for title, columns in SUMMARY_TABLES:
        present = [(m, label, scale) for m, label, scale in columns if shown(summary, m)]
        if not present:
            continue
        header = ["strategy", *keys, "n", *(label for _, label, _ in present)]
        numeric = [False] + [True] * (len(keys) + 1 + len(present))
        extra = []
        if title.startswith("Throughput") and "verdict" in summary:
            header.append("verdict")
            numeric.append(False)
            extra = ["verdict"]
        if title.startswith("Memory"):
            for counter, label in COUNTERS:
                if counter in summary:
                    header.append(label)
                    numeric.append(True)
                    extra.append(counter)
        rows = []
        for _, row in summary.iterrows():
            cells = [str(row["strategy"]), *(str(plain(row[k])) for k in keys), str(int(row["n"]))]
            cells += [median_cell(row, m, scale) for m, _, scale in present]
            for column in extra:
                if column == "verdict":
                    cells.append(row["verdict"] if row["verdict"] == "ok" else f"**{row['verdict']}**")
                else:
                    cells.append(str(int(row[column])) if pd.notna(row[column]) else "–")
            rows.append(tuple(cells))
        tables.append((title, tuple(header), tuple(rows), tuple(numeric)))
    return tables
