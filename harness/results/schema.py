"""What a results folder holds and what its numbers mean: the one definition of each.

::

    RUN/env.json         provenance (harness.envinfo): machine, packages, config, load average
    RUN/samples.jsonl    one WindowSample per line (records.py), appended as measurements finish
    RUN/summary.csv      one row per cell over the measured windows (summary.py)
    RUN/failures.jsonl   measurements that died, and why
    RUN/faults.jsonl     one FaultRecord per cell of ``ipcbench faults``
    RUN/soak.json        one SoakRecord per strategy of ``ipcbench soak``

A *cell* is one configuration (:data:`CELL_KEYS`); a *sample* is one measured epoch
of it (warm-up epochs are stored, flagged, and never aggregated). Every metric a
sample carries is described once, in :data:`METRICS`, with its unit and direction;
tables, plots, comparisons and the summary all read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strategies.stages import STAGES as STAGES  # where the time goes, in the order a batch meets the stages

SCHEMA_VERSION = 1

ENV_FILE = "env.json"
SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.csv"
FAILURES_FILE = "failures.jsonl"
FAULTS_FILE = "faults.jsonl"
SOAK_FILE = "soak.json"

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
    "dtype",
    "decode_threads",
    "background_load",
    "cache",
    "prefetch_next_epoch",
    "background_start",
)
# ``rank`` is a cell key: "all" for the figures of a whole run, or "0", "1", ... for one
# rank's share of an ``ipcbench run --distributed``, whose "all" rows combine the ranks.
ALL_RANKS = "all"
# Cell keys an older or hand-made file may lack: filled so that its cells still group.
# (A sample without ``workload`` ran the full workload, the only one there was.)
KEY_FILL: dict[str, Any] = {
    "prefetch": 0,
    "start_method": "n/a",
    "batch_size": 0,
    "tile": 0,
    "dataset": "n/a",
    "workload": "full",
    "step_ms": 0.0,
    "rank": ALL_RANKS,
    "dtype": "uint16",  # converting came later: an older sample's batches held the images' uint16
    "decode_threads": "1",  # before it was a setting, every process decoded with one thread
    "background_load": 0,
    "cache": "warm",
    "prefetch_next_epoch": "off",  # before it was a setting, no strategy started the next epoch early
    "background_start": "off",  # before it was a setting, every pool started before make_generator returned
}
# What a run measures unless a sweep asks for more (ipcbench run's defaults): a figure or map that
# shows one value of a swept setting shows this one where the run measured it.
SWEPT_DEFAULTS: dict[str, Any] = {
    "decode_threads": "auto",
    "background_load": 0,
    "cache": "warm",
    "prefetch_next_epoch": "off",
    "background_start": "off",
}
REQUIRED_SAMPLE_FIELDS = ("strategy", "workers")


@dataclass(frozen=True, slots=True)
class Metric:
    """How to show and judge one per-epoch metric."""

    name: str
    label: str  # axis / column label, unit included
    higher_is_better: bool
    # Measured once per process and copied onto each of its epochs: aggregated over one
    # value per (cell, repeat), so that it does not pretend to more samples than exist.
    per_process: bool = False
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
        # batches/s over R, with R measured in the same process just before (derived: see summary.with_of_r)
        Metric("of_r", "of R", True),
    )
}
HEADLINE = "batches_per_s"
# Counts that must stay 0; the last two are found by the runner after the measurement
# process exited (processes of its group, new ipcbench_*/psm_* segments).
COUNTERS = ("leaked_shm", "leftover_processes", "orphans_after_exit", "leaked_shm_after_exit")
# pyperf's threshold: a spread (std / mean) over 10% of the mean is a warning.
UNSTABLE_CV = 0.10
# docs/design.md section 7: at least this many measured windows per cell for a full run.
MIN_SAMPLES = 6


def stage_column(stage: str, side: str = "") -> str:
    """The flat column of one stage: ``stage_compute_ms_per_batch``; the main side's: ``stage_main_compute_...``."""
    prefix = f"{side}_" if side else ""
    return f"stage_{prefix}{stage}_ms_per_batch"
