"""The one results model: schema, records, files, summary and loading, for every command and report.

::

    schema.py    what a results folder holds; cell keys; every metric with its unit and direction
    records.py   WindowSample, FaultRecord, SoakRecord (frozen dataclasses)
    io.py        the writers (whole lines appended; other files atomically) and the one JSONL reader
    summary.py   samples -> one row per cell (summary.csv, reports, compare)
    rundata.py   RunData: one run as every reader sees it
    load.py      a results folder -> RunData;   benchjson.py: pytest-benchmark JSON -> RunData

It imports nothing from the rest of ``harness`` but its errors: the runner, the fault
matrix, the reports and the commands import it, never the other way round.
"""

from .benchjson import load_benchmark_json, run_from_benchmarks
from .io import (
    SamplesWriter,
    append_lines,
    dumps_line,
    read_json_object,
    read_jsonl,
    read_samples,
    write_atomic,
    write_json,
)
from .load import load, load_faults_only, load_run, machine_cores, read_faults, samples_frame
from .records import FaultRecord, SoakRecord, WindowSample
from .rundata import RunData
from .schema import (
    ALL_RANKS,
    CELL_KEYS,
    COUNTERS,
    ENV_FILE,
    FAILURES_FILE,
    FAULTS_FILE,
    HEADLINE,
    KEY_FILL,
    METRICS,
    MIN_SAMPLES,
    SAMPLES_FILE,
    SCHEMA_VERSION,
    SOAK_FILE,
    STAGES,
    SUMMARY_FILE,
    SWEPT_DEFAULTS,
    UNSTABLE_CV,
    Metric,
    stage_column,
)
from .summary import (
    cell_keys,
    check_stored_summary,
    checksum_mismatches,
    iter_cells,
    load_verdict,
    measured,
    metric_values,
    spread_stats,
    stage_medians,
    stages_of,
    summarize,
    variant_keys,
    variant_label,
    verdict,
    with_cell_keys,
    with_stage_columns,
    write_summary,
)

__all__ = [
    "ALL_RANKS",
    "CELL_KEYS",
    "COUNTERS",
    "ENV_FILE",
    "FAILURES_FILE",
    "FAULTS_FILE",
    "HEADLINE",
    "KEY_FILL",
    "METRICS",
    "MIN_SAMPLES",
    "SAMPLES_FILE",
    "SCHEMA_VERSION",
    "SOAK_FILE",
    "STAGES",
    "SUMMARY_FILE",
    "SWEPT_DEFAULTS",
    "UNSTABLE_CV",
    "FaultRecord",
    "Metric",
    "RunData",
    "SamplesWriter",
    "SoakRecord",
    "WindowSample",
    "append_lines",
    "cell_keys",
    "check_stored_summary",
    "checksum_mismatches",
    "dumps_line",
    "iter_cells",
    "load",
    "load_benchmark_json",
    "load_faults_only",
    "load_run",
    "load_verdict",
    "machine_cores",
    "measured",
    "metric_values",
    "read_faults",
    "read_json_object",
    "read_jsonl",
    "read_samples",
    "run_from_benchmarks",
    "samples_frame",
    "spread_stats",
    "stage_column",
    "stage_medians",
    "stages_of",
    "summarize",
    "variant_keys",
    "variant_label",
    "verdict",
    "with_cell_keys",
    "with_stage_columns",
    "write_atomic",
    "write_json",
    "write_summary",
]
