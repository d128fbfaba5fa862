"""harness.results: records, samples.jsonl, summary aggregation (hand-made samples)."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest

from harness.results import (
    CELL_KEYS,
    SAMPLES_FILE,
    SCHEMA_VERSION,
    SUMMARY_FILE,
    SamplesWriter,
    WindowSample,
    read_samples,
    summarize,
    write_json,
    write_summary,
)

# Every field of samples.jsonl that the schema names.
SCHEMA_FIELDS = [
    "schema_version",
    "run_id",
    "strategy",
    "workers",
    "prefetch",
    "start_method",
    "batch_size",
    "tile",
    "dataset",
    "workload",
    "step_ms",
    "repeat",
    "epoch",
    "warmup",
    "batches",
    "tiles",
    "bytes",
    "seconds",
    "batches_per_s",
    "mb_per_s",
    "time_to_first_batch_s",
    "startup_s",
    "shutdown_s",
    "wait_ms_p50",
    "wait_ms_p95",
    "wait_ms_p99",
    "wait_ms_max",
    "wait_ms",
    "consumer_utilization",
    "pss_peak_mb",
    "uss_peak_mb",
    "shm_peak_mb",
    "cpu_s_per_batch",
    "memory_trace",
    "leaked_shm",
    "leftover_processes",
    "checksum",
]


def make_sample(**changes) -> WindowSample:
    fields = dict(
        run_id="r",
        strategy="baseline",
        workers=1,
        prefetch=2,
        start_method="forkserver",
        batch_size=32,
        tile=64,
        dataset="tiny",
        workload="full",
        step_ms=0.0,
        repeat=0,
        epoch=1,
        warmup=False,
        batches=10,
        tiles=320,
        bytes=10_000_000,
        seconds=0.5,
        batches_per_s=20.0,
        mb_per_s=20.0,
        time_to_first_batch_s=0.05,
        startup_s=0.1,
        shutdown_s=0.01,
        wait_ms_p50=1.0,
        wait_ms_p95=2.0,
        wait_ms_p99=3.0,
        wait_ms_max=4.0,
        wait_ms=(1.0, 2.0),
        consumer_utilization=0.0,
        pss_peak_mb=100.0,
        uss_peak_mb=80.0,
        shm_peak_mb=0.0,
        cpu_s_per_batch=0.01,
        memory_trace=((0.0, 100.0, 80.0, 0.0),),
        leaked_shm=0,
        leftover_processes=0,
        checksum="abc",
    )
    fields.update(changes)
    return WindowSample(**fields)


def test_record_has_every_schema_field_and_is_frozen():
    sample = make_sample()
    assert set(SCHEMA_FIELDS) <= set(WindowSample.field_names())
    assert sample.schema_version == SCHEMA_VERSION
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.workers = 2  # type: ignore[misc]


def test_writer_appends_complete_lines_that_read_back(tmp_path):
    path = tmp_path / SAMPLES_FILE
    writer = SamplesWriter(path)
    writer.append([make_sample(epoch=0, warmup=True), make_sample(epoch=1)])
    writer.append([make_sample(repeat=1)])
    writer.append([])
    text = path.read_text()
    assert text.endswith("\n") and text.count("\n") == 3 and writer.count == 3
    records = read_samples(path)
    assert [r["repeat"] for r in records] == [0, 0, 1]
    assert records[0]["wait_ms"] == [1.0, 2.0] and records[0]["memory_trace"] == [[0.0, 100.0, 80.0, 0.0]]
    assert set(SCHEMA_FIELDS) <= set(records[0])


def test_samples_survive_an_interruption_mid_write(tmp_path):
    path = tmp_path / SAMPLES_FILE
    SamplesWriter(path).append([make_sample(), make_sample(epoch=2)])
    with path.open("a") as fh:  # a process killed inside its write leaves a cut line
        fh.write(json.dumps(make_sample(epoch=3).as_dict())[:40])
    assert [r["epoch"] for r in read_samples(path)] == [1, 2]
    assert read_samples(tmp_path / "missing.jsonl") == []


def test_non_finite_numbers_are_written_as_null(tmp_path):
    path = tmp_path / SAMPLES_FILE
    SamplesWriter(path).append([make_sample(wait_ms_p99=math.nan)])
    assert "NaN" not in path.read_text()
    assert read_samples(path)[0]["wait_ms_p99"] is None
    env = write_json(tmp_path / "env.json", {"x": math.inf, "nested": {"y": [1.0, math.nan]}})
    assert json.loads(env.read_text()) == {"x": None, "nested": {"y": [1.0, None]}}


def _samples(strategy: str, rates: list[float], **changes) -> list[dict]:
    """One warm-up (rate 1.0, must be ignored) then one measured epoch per rate, repeats of 2 epochs."""
    rows = [make_sample(strategy=strategy, epoch=0, warmup=True, batches_per_s=1.0, **changes).as_dict()]
    for i, rate in enumerate(rates):
        rows.append(
            make_sample(
                strategy=strategy,
                repeat=i // 2,
                epoch=1 + i % 2,
                batches_per_s=rate,
                startup_s=(0.1, 0.2, 0.6)[i // 2 % 3],
                checksum=f"c{i % 2}",
                **changes,
            ).as_dict()
        )
    return rows


def test_summary_median_iqr_n_cv_and_stability():
    # Skewed on purpose: mean and median differ, so a summary that took the mean would fail.
    stable = [10.0, 10.2, 9.8, 10.1, 9.9, 10.6]  # median 10.05, mean 10.1
    noisy = [10.0, 20.0, 10.0, 20.0, 12.0, 30.0]  # median 16.0, mean 17.0
    summary = summarize(_samples("steady", stable) + _samples("jumpy", noisy)).set_index("strategy")
    assert list(summary.reset_index().columns[: len(CELL_KEYS)]) == list(CELL_KEYS)
    steady, jumpy = summary.loc["steady"], summary.loc["jumpy"]
    assert steady["n"] == 6 and jumpy["n"] == 6  # warm-ups excluded
    assert steady["batches_per_s_median"] == pytest.approx(10.05)
    s = pd.Series(stable)
    assert steady["batches_per_s_q25"] == pytest.approx(s.quantile(0.25))
    assert steady["batches_per_s_iqr"] == pytest.approx(s.quantile(0.75) - s.quantile(0.25))
    assert steady["batches_per_s_cv"] == pytest.approx(s.std() / s.mean())
    assert not steady["unstable"]
    assert jumpy["batches_per_s_median"] == pytest.approx(16.0)
    assert jumpy["batches_per_s_cv"] > 0.10 and jumpy["unstable"]
    # startup is per process: three repeats, one value each (0.1, 0.2, 0.6: median 0.2, mean 0.3).
    assert steady["startup_s_median"] == pytest.approx(0.2)
    assert steady["checksums_consistent"]
    assert steady["leaked_shm_max"] == 0 and steady["leftover_processes_max"] == 0


def test_summary_flags_inconsistent_checksums_and_counters():
    rows = _samples("a", [10.0, 10.0, 10.0, 10.0])
    rows[-1] = {**rows[-1], "checksum": "different", "leaked_shm": 2}
    row = summarize(rows).iloc[0]
    assert not row["checksums_consistent"]
    assert row["leaked_shm_max"] == 2


def test_summary_of_one_epoch_has_undefined_cv_and_is_not_unstable():
    row = summarize(_samples("one", [10.0])).iloc[0]
    assert row["n"] == 1 and math.isnan(row["batches_per_s_cv"]) and not row["unstable"]


def test_summary_of_nothing_measured_is_empty_with_columns(tmp_path):
    assert summarize([]).empty
    assert "batches_per_s_median" in summarize(_samples("w", [])).columns
    path = write_summary(tmp_path)  # no samples.jsonl yet (Ctrl-C before the first measurement)
    assert path.name == SUMMARY_FILE and "strategy" in path.read_text()


def test_write_summary_from_samples_file(tmp_path):
    SamplesWriter(tmp_path / SAMPLES_FILE).append([make_sample(epoch=e, repeat=r) for r in range(2) for e in (1, 2)])
    frame = pd.read_csv(write_summary(tmp_path))
    assert len(frame) == 1 and frame.loc[0, "n"] == 4


def test_summary_has_stage_columns_per_cell_and_workload_and_batch_size_are_cells():
    timed = _samples("shm", [10.0, 10.0, 10.0, 10.0], workload="transfer", batch_size=128)
    for i, row in enumerate(timed):
        row["stage_ms_per_batch"] = {"transfer": 1.0 + i, "wait": 0.5}
    untimed = _samples("shm", [20.0, 20.0])  # the full workload, batch 32, no stage timers
    summary = summarize(timed + untimed).set_index(["workload", "batch_size"])
    assert len(summary) == 2  # the workload and the batch size make separate cells
    transfer = summary.loc[("transfer", 128)]
    assert transfer["stage_transfer_ms_per_batch_median"] == pytest.approx(3.5)  # 2, 3, 4, 5: warm-up left out
    assert transfer["stage_wait_ms_per_batch_median"] == pytest.approx(0.5)
    assert math.isnan(summary.loc[("full", 32), "stage_transfer_ms_per_batch_median"])
    assert [c for c in summary.columns if c.startswith("stage_") and c.endswith("_median")] == [
        "stage_transfer_ms_per_batch_median",
        "stage_wait_ms_per_batch_median",
    ]  # the stages' own order (STAGES), and only the stages some sample reports


def test_samples_without_a_workload_are_full_ones():
    old = [{k: v for k, v in row.items() if k != "workload"} for row in _samples("pipe", [10.0, 12.0])]
    row = summarize(old + _samples("pipe", [11.0, 13.0]))  # an old file appended to by a newer runner
    assert list(row["workload"]) == ["full"] and row.loc[0, "n"] == 4


def test_a_busy_machine_is_said_once_and_a_quiet_one_not() -> None:
    from harness.results import load_verdict

    quiet = pd.DataFrame(_samples("a", [10.0, 10.0]))
    assert load_verdict({"loadavg_before": [0.4, 0.5, 0.5]}, quiet, cores=2) is None
    busy = quiet.assign(other_cores=1.4)
    said = load_verdict({"loadavg_before": [1.8, 1.2, 1.0]}, busy, cores=2)
    assert said is not None and "load average was 1.80" in said and "1.40 cores" in said
    # Measured just before the run, the CPU of other processes outranks a load average that still
    # counts the run before it: quiet then means quiet.
    assert load_verdict({"loadavg_before": [1.8, 1.2, 1.0], "other_cores_before": 0.05}, quiet, cores=2) is None
    said = load_verdict({"loadavg_before": [0.2, 0.2, 0.2], "other_cores_before": 1.6}, quiet, cores=2)
    assert said is not None and "1.60 cores just before" in said


def test_a_cell_measured_under_load_says_so_in_its_verdict() -> None:
    rows = [{**r, "other_cores": 1.5} for r in _samples("a", [10.0] * 6)]
    assert summarize(rows, cores=2).loc[0, "verdict"] == "ok; loaded (other processes used 1.5 cores)"
    assert summarize(rows, cores=8).loc[0, "verdict"] == "ok"


def test_drift_compares_a_process_first_and_last_measured_windows() -> None:
    rows = _samples("a", [10.0, 12.0, 10.0, 11.0])  # two processes of 2 measured windows: +20%, +10%
    for row in rows:
        row["window"] = row["epoch"]
    assert summarize(rows).iloc[0]["drift"] == pytest.approx(0.15)
    assert math.isnan(summarize(_samples("b", [10.0])).iloc[0]["drift"])  # one window: no drift to tell
