"""The summary's helpers one by one: columns derived from samples, cell labels, checksums, drift, verdicts.

``test_results`` checks ``summarize`` as a whole; these tests take each helper on
inputs small enough that every expected value is written out, asymmetric wherever a
statistic is computed (so that a mean, a quartile or a swapped operand differs).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness.results import ALL_RANKS, CELL_KEYS, KEY_FILL, SAMPLES_FILE, SUMMARY_FILE, summarize, write_summary
from harness.results.io import append_lines
from harness.results.schema import stage_column
from harness.results.summary import (
    check_stored_summary,
    checksum_mismatches,
    epoch_checksums,
    iter_cells,
    load_verdict,
    metric_values,
    stage_medians,
    stage_metrics,
    stages_of,
    unplanned_other_cores,
    variant_keys,
    variant_label,
    verdict,
    with_cell_keys,
    with_of_r,
    with_stage_columns,
)


def _rows(*rates: float, strategy: str = "pipe", **fields) -> list[dict]:
    """Measured windows of one process (repeat 0), epochs 1, 2, ..., every cell key given."""
    keys = {**KEY_FILL, "strategy": strategy, "workers": 1, "dataset": "d", "workload": "full"}
    return [
        {**keys, "repeat": 0, "epoch": 1 + i, "warmup": False, "batches_per_s": rate, **fields}
        for i, rate in enumerate(rates)
    ]


def test_missing_cell_keys_are_filled_and_warmup_is_a_bool() -> None:
    frame = pd.DataFrame({"strategy": ["a", "b"], "prefetch": [2, None], "warmup": [None, True]})
    filled = with_cell_keys(frame)
    assert filled["prefetch"].tolist() == [2, KEY_FILL["prefetch"]]
    assert filled["rank"].tolist() == [ALL_RANKS] * 2 and filled["cache"].tolist() == ["warm"] * 2
    assert filled["dataset"].tolist() == ["n/a"] * 2  # a key without a fill
    assert filled["warmup"].tolist() == [False, True] and filled["warmup"].dtype == bool
    assert "prefetch" in frame and frame["prefetch"].isna().any()  # the input is left as it was
    assert "warmup" not in with_cell_keys(pd.DataFrame({"strategy": ["a"]}))


def test_stage_columns_follow_the_stages_order_then_unknown_ones_sorted() -> None:
    frame = pd.DataFrame(
        {
            "stage_ms_per_batch": [{"zeta": 1.0, "wait": 2.0, "compute": 3.0}, None, {"alpha": 4.0}],
            "stage_main_ms_per_batch": [{"wait": 5.0}, {"assemble": 6.0}, 7.0],
        }
    )
    assert stage_metrics(frame) == [
        "stage_compute_ms_per_batch",
        "stage_wait_ms_per_batch",
        "stage_alpha_ms_per_batch",
        "stage_zeta_ms_per_batch",
        "stage_main_assemble_ms_per_batch",
        "stage_main_wait_ms_per_batch",
    ]
    columns = with_stage_columns(frame)
    assert columns["stage_compute_ms_per_batch"].tolist()[0] == 3.0
    assert np.isnan(columns["stage_compute_ms_per_batch"].tolist()[1:]).all()
    assert columns["stage_alpha_ms_per_batch"].tolist()[2] == 4.0
    assert columns["stage_main_assemble_ms_per_batch"].tolist()[1] == 6.0
    assert math.isnan(columns["stage_main_wait_ms_per_batch"].tolist()[2])  # 7.0 is no dict of stages
    plain = pd.DataFrame({"x": [1]})
    assert stage_metrics(plain) == [] and with_stage_columns(plain) is plain


def test_stage_medians_of_a_side_leave_the_other_sides_columns_out() -> None:
    summary = pd.DataFrame(
        columns=[
            "stage_wait_ms_per_batch_median",
            "stage_compute_ms_per_batch_median",
            "stage_main_wait_ms_per_batch_median",
            "stage_extra_ms_per_batch_median",
            "stage_compute_ms_per_batch_q25",
        ]
    )
    assert stage_medians(summary) == [
        ("compute", "stage_compute_ms_per_batch_median"),
        ("wait", "stage_wait_ms_per_batch_median"),
        ("extra", "stage_extra_ms_per_batch_median"),
    ]
    assert stage_medians(summary, "main") == [("wait", "stage_main_wait_ms_per_batch_median")]


def test_of_r_is_each_windows_rate_over_the_memcpy_rate_of_its_own_batches() -> None:
    frame = pd.DataFrame(
        {
            "memcpy_gb_per_s": [2.0, 4.0, None, 2.0],
            "bytes": [10e6, 10e6, 10e6, 10e6],
            "batches": [10, 5, 10, 0],
            "batches_per_s": [100.0, 100.0, 100.0, 100.0],
        }
    )
    of_r = with_of_r(frame)["of_r"].tolist()
    # R = 2e9 B/s / 1e6 B a batch = 2000 batches/s; then 4e9 / 2e6 = 2000 again.
    assert of_r[:2] == [0.05, 0.05]
    assert math.isnan(of_r[2]) and math.isnan(of_r[3])  # no memcpy rate; no batches
    assert "of_r" not in with_of_r(frame.drop(columns="bytes"))
    assert "of_r" not in with_of_r(frame.assign(memcpy_gb_per_s=None))


def test_variant_keys_are_the_keys_besides_the_strategy_that_vary() -> None:
    summary = pd.DataFrame(
        {"strategy": ["a", "b", "c"], "workers": [1, 2, 2], "prefetch": [2, 2, 2], "cache": ["warm", None, "warm"]}
    )
    assert variant_keys(summary) == ["workers", "cache"]


@pytest.mark.parametrize(
    ("values", "label"),
    [
        ({"workers": 1}, "1 worker"),
        ({"workers": 4}, "4 workers"),
        ({"prefetch": 3}, "prefetch 3"),
        ({"batch_size": 32}, "batch 32"),
        ({"tile": 64}, "tile 64"),
        ({"step_ms": 2.5}, "step 2.5 ms"),
        ({"decode_threads": "1"}, "1 decode thread"),
        ({"decode_threads": "4"}, "4 decode threads"),
        ({"background_load": 1}, "1 busy process beside"),
        ({"background_load": 2}, "2 busy processes beside"),
        ({"cache": "cold"}, "cold cache"),
        ({"rank": ALL_RANKS}, "all ranks"),
        ({"rank": "1"}, "rank 1"),
        ({"dtype": "float32"}, "float32"),
        ({"workers": 2, "dtype": "float32"}, "2 workers, float32"),
        ({}, "all cells"),
    ],
)
def test_a_cell_is_named_by_its_varying_keys(values: dict, label: str) -> None:
    assert variant_label(pd.Series(values, dtype=object), list(values)) == label


def test_values_per_process_metrics_count_once_per_process() -> None:
    rows = pd.DataFrame(
        [*_rows(10.0, 11.0, 9.0, startup_s=0.5), *_rows(12.0, startup_s=0.7, repeat=1), *_rows(13.0, startup_s=None)]
    )
    rows.loc[0, "warmup"] = True
    assert metric_values(rows, "batches_per_s")["batches_per_s"].tolist() == [11.0, 9.0, 12.0, 13.0]
    assert metric_values(rows, "startup_s")["startup_s"].tolist() == [0.5, 0.7]  # one per process
    no_repeat = rows.drop(columns="repeat")  # processes cannot be told apart: every window counts
    assert metric_values(no_repeat, "startup_s")["startup_s"].tolist() == [0.5, 0.5, 0.7]
    cells = list(iter_cells(pd.DataFrame([*_rows(3.0, 1.0), *_rows(5.0, strategy="b")]), "batches_per_s"))
    assert [(key[CELL_KEYS.index("strategy")], values.tolist()) for key, values in cells] == [
        ("b", [5.0]),
        ("pipe", [3.0, 1.0]),
    ]
    assert all(len(key) == len(CELL_KEYS) for key, _ in cells)


def test_epoch_checksums_expand_a_windows_list_from_its_first_epoch() -> None:
    rows = pd.DataFrame(
        [
            {"strategy": "a", "repeat": 0, "epoch": 3, "checksum": "x", "checksums": ["p", "q", None]},
            {"strategy": "a", "repeat": 1, "epoch": 1, "checksum": "y", "checksums": []},
            {"strategy": "a", "repeat": 2, "epoch": 1, "checksum": math.nan, "checksums": None},
        ]
    )
    epochs = epoch_checksums(rows)
    assert epochs[["repeat", "epoch", "checksum"]].values.tolist() == [[0, 3, "p"], [0, 4, "q"], [1, 1, "y"]]
    assert epoch_checksums(rows.drop(columns=["checksum", "checksums"])) is None
    assert epoch_checksums(rows.assign(checksum=None, checksums=None)) is None


def test_checksum_mismatches_name_each_epoch_group_that_differs() -> None:
    samples = pd.DataFrame(
        [
            {"strategy": "a", "dataset": "d", "workload": "full", "epoch": 2, "checksum": "x"},
            {"strategy": "b", "dataset": "d", "workload": "full", "epoch": 2, "checksum": "y"},
            {"strategy": "a", "dataset": "d", "workload": "full", "epoch": 3, "checksum": "z"},
            {"strategy": "b", "dataset": "d", "workload": "full", "epoch": 3, "checksum": "z"},
            {"strategy": "a", "dataset": "d", "workload": "full", "epoch": 1, "checksum": "u"},
            {"strategy": "b", "dataset": "d", "workload": "full", "epoch": 1, "checksum": "v"},
            {"strategy": "a", "dataset": "d", "workload": "transfer", "epoch": 1, "checksum": "t"},
        ]
    )
    # sorted by epoch, whatever the samples' order
    assert checksum_mismatches(samples) == ["dataset d, workload full, epoch 1", "dataset d, workload full, epoch 2"]
    assert checksum_mismatches(samples.drop(columns="checksum")) is None


@pytest.mark.parametrize(("key", "values"), [("batch_size", (32, 64)), ("tile", (16, 32)), ("rank", ("0", "1"))])
def test_other_batch_sizes_tiles_and_ranks_yield_other_batches(key: str, values: tuple) -> None:
    """Each of these keys changes what the batches hold: their checksums are compared only within it."""
    samples = pd.DataFrame(
        [
            {"strategy": s, "dataset": "d", "workload": "full", key: v, "epoch": 1, "checksum": s}
            for s, v in zip("ab", values, strict=True)
        ]
    )
    assert checksum_mismatches(samples) == []
    same = samples.assign(**{key: values[0]})
    assert checksum_mismatches(same) == [f"dataset d, workload full, {key} {values[0]}, epoch 1"]


def test_cells_keep_their_missing_key_values_and_give_float_values() -> None:
    rows = pd.DataFrame([*_rows(3.0), *_rows(4.0, dataset=None)]).astype({"batches_per_s": object})
    cells = list(iter_cells(rows, "batches_per_s"))
    datasets = [key[CELL_KEYS.index("dataset")] for key, _ in cells]
    assert datasets[0] == "d" and pd.isna(datasets[1])  # a cell whose dataset is unknown is still a cell
    assert all(values.dtype == float for _, values in cells)


def test_drift_uses_the_window_order_and_ignores_a_zero_first_window() -> None:
    rows = _rows(10.0, 15.0, 9.0)
    for row, window in zip(rows, (3, 1, 2), strict=True):
        row["window"] = window  # windows 1, 2, 3: 15 -> 9 -> 10
    assert summarize(rows).iloc[0]["drift"] == pytest.approx(10.0 / 15.0 - 1)
    assert summarize(_rows(10.0, 15.0, 9.0)).iloc[0]["drift"] == pytest.approx(-0.1)  # by epoch: 10 -> 9
    assert math.isnan(summarize(_rows(0.0, 5.0)).iloc[0]["drift"])
    assert math.isnan(summarize([{k: v for k, v in r.items() if k != "repeat"} for r in rows]).iloc[0]["drift"])


@pytest.mark.parametrize(
    ("row", "cores", "text"),
    [
        ({"n": 5, "batches_per_s_cv": 0.5}, 8, "too few samples (n=5 < 6)"),
        ({"n": 6, "batches_per_s_cv": 0.10}, 8, "ok"),
        ({"n": 6, "batches_per_s_cv": 0.126}, 8, "unstable (cv 13%)"),
        ({"n": 6, "batches_per_s_cv": math.nan}, 8, "ok"),
        ({"n": 6}, 8, "ok"),
        ({}, 8, "too few samples (n=0 < 6)"),
        ({"n": 6, "other_cores_median": 4.0}, 8, "ok"),
        ({"n": 6, "other_cores_median": 4.04}, 8, "ok; loaded (other processes used 4.0 cores)"),
        ({"n": 6, "other_cores_median": math.nan}, 8, "ok"),
        ({"n": 2, "other_cores_median": 1.5}, 2, "too few samples (n=2 < 6); loaded (other processes used 1.5 cores)"),
    ],
)
def test_the_verdict_of_a_cell(row: dict, cores: int, text: str) -> None:
    assert verdict(pd.Series(row, dtype=object), cores) == text


def test_the_verdict_counts_this_machines_cores_when_none_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    row = pd.Series({"n": 6, "other_cores_median": 2.5})
    assert verdict(row) == "ok; loaded (other processes used 2.5 cores)"
    assert verdict(row, 6) == "ok"
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert verdict(row) == "ok; loaded (other processes used 2.5 cores)"  # one core assumed


def test_a_deliberate_background_load_is_not_counted_as_other_work() -> None:
    rows = pd.DataFrame({"other_cores": [3.0, 0.5, None, "x"], "background_load": [2, 1, 1, None]})
    assert unplanned_other_cores(rows).tolist()[:2] == [1.0, 0.0]  # clipped at 0
    assert np.isnan(unplanned_other_cores(rows).tolist()[2:]).all()
    assert unplanned_other_cores(rows.drop(columns="background_load")).tolist()[:2] == [3.0, 0.5]
    loaded = summarize([{**r, "other_cores": 2.5, "background_load": 1} for r in _rows(*[10.0] * 6)], cores=2)
    assert loaded.iloc[0]["other_cores_median"] == 1.5 and loaded.iloc[0]["verdict"].startswith("ok; loaded")


def test_the_machine_is_said_busy_for_each_reason_with_its_figures() -> None:
    quiet = pd.DataFrame(_rows(10.0, 10.0))
    assert load_verdict({"loadavg_before": [1.0]}, quiet, cores=2) is None  # at half the cores: not over
    assert load_verdict({"loadavg_before": [1.01]}, quiet, cores=2) == (
        "Measured on a busy machine (the load average was 1.01 before the run; 2 cores): its figures are suspect."
    )
    assert load_verdict({"loadavg_before": ["high"]}, quiet, cores=2) is None
    assert load_verdict({"other_cores_before": 1.0}, quiet, cores=2) is None
    busy_during = quiet.assign(other_cores=[1.2, 3.0])
    assert load_verdict({"other_cores_before": 1.5}, busy_during, cores=2) == (
        "Measured on a busy machine (other processes used 1.50 cores just before it and other processes used "
        "2.10 cores (median) during its windows; 2 cores): its figures are suspect."
    )
    at_the_limit = quiet.assign(other_cores=[0.5, 1.5])  # median 1.0 of 2 cores: half, not over
    assert load_verdict({}, at_the_limit, cores=2) is None
    warmup_only_busy = pd.DataFrame(_rows(10.0, 10.0)).assign(other_cores=[5.0, 0.2], warmup=[True, False])
    assert load_verdict({}, warmup_only_busy, cores=2) is None


def test_the_machines_own_cores_set_the_busy_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    quiet = pd.DataFrame(_rows(10.0))
    assert load_verdict({"other_cores_before": 3.9}, quiet) is None
    assert load_verdict({"other_cores_before": 4.1}, quiet).endswith("; 8 cores): its figures are suspect.")
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert "; 1 cores)" in load_verdict({"other_cores_before": 0.6}, quiet)


def test_a_stored_summary_is_compared_on_n_and_medians_within_a_tolerance() -> None:
    computed = summarize(_rows(10.0, 12.0) + _rows(20.0, strategy="shm"))
    assert check_stored_summary(computed, computed.copy()) == []
    close = computed.assign(batches_per_s_median=computed["batches_per_s_median"] * (1 + 1e-7))
    assert check_stored_summary(computed, close) == []
    off = computed.assign(batches_per_s_median=computed["batches_per_s_median"] * (1 + 1e-5), n=[2, 9])
    assert check_stored_summary(computed, off) == [
        "n differs in 1 cell(s)",
        "batches_per_s_median differs in 2 cell(s)",
    ]
    assert check_stored_summary(computed, off, rel_tol=1e-4) == ["n differs in 1 cell(s)"]
    as_csv = computed.assign(workers=computed["workers"].astype(float), step_ms=0)  # 1.0 and 0 read back as keys
    assert check_stored_summary(computed, as_csv) == []
    assert check_stored_summary(computed, computed.iloc[:1]) == ["1 cell(s) of samples.jsonl missing from summary.csv"]
    assert check_stored_summary(computed.iloc[1:], computed) == ["1 cell(s) in summary.csv have no measured samples"]
    assert check_stored_summary(computed, pd.DataFrame({"n": [1]})) == ["summary.csv has no cell key columns"]
    older = computed.drop(columns="batches_per_s_median")  # a summary.csv of fewer metrics: compared on the rest
    assert check_stored_summary(computed, older) == []


def test_a_stored_summary_agrees_on_missing_values_and_on_tiny_ones_only_when_equal() -> None:
    computed = summarize(_rows(10.0, 12.0)).assign(mb_per_s_median=[float("nan")], cpu_s_per_batch_median=[1e-10])
    assert check_stored_summary(computed, computed.copy()) == []  # NaN in both: agreeing
    tiny = computed.assign(cpu_s_per_batch_median=[3e-10])
    assert check_stored_summary(computed, tiny) == ["cpu_s_per_batch_median differs in 1 cell(s)"]


def test_summary_csv_is_the_summary_without_an_index_judged_with_the_cores_given(tmp_path) -> None:
    append_lines(tmp_path / SAMPLES_FILE, [{**r, "other_cores": 1.5} for r in _rows(*[10.0] * 6)])
    path = write_summary(tmp_path, cores=2)
    assert path == tmp_path / SUMMARY_FILE
    stored = pd.read_csv(path)
    assert list(stored.columns[: len(CELL_KEYS) + 1]) == [*CELL_KEYS, "n"]  # the cell keys first: no index column
    assert stored.loc[0, "verdict"] == "ok; loaded (other processes used 1.5 cores)"
    assert pd.read_csv(write_summary(tmp_path, cores=8)).loc[0, "verdict"] == "ok"


def test_stage_column_names() -> None:
    assert stage_column("wait") == "stage_wait_ms_per_batch"
    assert stage_column("wait", "main") == "stage_main_wait_ms_per_batch"


def test_cells_are_sorted_by_their_keys_and_a_missing_key_value_is_a_cell_of_its_own() -> None:
    rows = [*_rows(10.0, 11.0, strategy="b"), *_rows(5.0, 6.0, 7.0, strategy="a"), *_rows(3.0, 4.0, workers=None)]
    summary = summarize(rows)
    assert summary["strategy"].tolist() == ["a", "b", "pipe"]
    assert summary["n"].tolist() == [3, 2, 2]
    assert summary["batches_per_s_median"].tolist() == [6.0, 10.5, 3.5]
    assert pd.isna(summary.loc[2, "workers"]) and summary.loc[2, "drift"] == pytest.approx(4.0 / 3.0 - 1)


def test_samples_without_throughput_are_never_unstable_and_without_warmup_flags_are_not_measured() -> None:
    timed = [
        {k: v for k, v in r.items() if k != "batches_per_s"} | {"seconds": s}
        for r, s in zip(_rows(0, 0, 0), (1.0, 2.0, 9.0), strict=True)
    ]
    summary = summarize(timed)
    assert summary["unstable"].tolist() == [False] and summary.loc[0, "seconds_cv"] > 0.10
    unflagged = [{k: v for k, v in r.items() if k != "warmup"} for r in _rows(10.0, 12.0)]
    assert summarize(unflagged).empty
    empty = summarize([])
    assert "batches_per_s_median" in empty.columns and "of_r_median" not in empty.columns


def test_cv_is_defined_for_a_mean_of_one_and_drift_is_a_float_column() -> None:
    row = summarize(_rows(0.5, 1.5)).iloc[0]
    assert row["batches_per_s_cv"] == pytest.approx(np.std([0.5, 1.5], ddof=1))
    no_repeat = summarize([{k: v for k, v in r.items() if k != "repeat"} for r in _rows(10.0, 12.0)])
    assert no_repeat["drift"].dtype == float and no_repeat["drift"].isna().all()


def test_a_cell_without_checksums_is_consistent_beside_one_with_them() -> None:
    rows = [*_rows(10.0, 11.0, strategy="a", checksum="x"), *_rows(10.0, 11.0, strategy="b", checksum=None)]
    assert summarize(rows)["checksums_consistent"].tolist() == [True, True]
    rows += _rows(10.0, strategy="a", checksum="y", repeat=1)  # epoch 1 again, other batches
    assert summarize(rows)["checksums_consistent"].tolist() == [False, True]


def test_an_unknown_or_missing_background_load_is_no_deliberate_load() -> None:
    rows = pd.DataFrame({"other_cores": [2.0, 2.0], "background_load": [None, "many"]})
    assert unplanned_other_cores(rows).tolist() == [2.0, 2.0]


def test_without_a_core_count_one_core_is_assumed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert verdict(pd.Series({"n": 6, "other_cores_median": 0.8})) == "ok; loaded (other processes used 0.8 cores)"


def test_of_r_for_batches_of_one_huge_batches_and_unreadable_values() -> None:
    frame = pd.DataFrame(
        {
            "memcpy_gb_per_s": [2.0, 2.0, 0.0, "n/a"],
            "bytes": [1e6, 1e10, 1e6, 1e6],
            "batches": [1, 1, 1, "n/a"],
            "batches_per_s": [100.0, 0.1, 100.0, 100.0],
        }
    )
    of_r = with_of_r(frame)["of_r"].tolist()
    assert of_r[0] == 0.05  # one batch of 1 MB: R = 2000 batches/s
    assert of_r[1] == pytest.approx(0.5)  # R = 0.2 batches/s: below one, still a rate
    assert math.isnan(of_r[2]) and math.isnan(of_r[3])  # no memcpy rate; unreadable values
    unreadable = frame.assign(bytes=[1e6, "n/a", 1e6, 1e6], batches_per_s=[100.0, 0.1, "n/a", 100.0])
    of_r = with_of_r(unreadable)["of_r"].tolist()
    assert of_r[0] == 0.05 and all(math.isnan(v) for v in of_r[1:])


def test_samples_without_checksums_or_counters_are_consistent_with_zero_counts() -> None:
    summary = summarize(_rows(10.0, 11.0) + _rows(12.0, strategy="b"))
    assert summary["checksums_consistent"].tolist() == [True, True]
    for counter in ("leaked_shm", "leftover_processes", "orphans_after_exit", "leaked_shm_after_exit"):
        assert summary[f"{counter}_max"].tolist() == [0, 0]
    assert summary["other_cores_median"].isna().all()


def test_a_cell_with_a_missing_key_value_keeps_its_checksums_and_other_cores() -> None:
    rows = [
        *_rows(10.0, 11.0, workers=None, checksum="x", other_cores=0.5),
        *_rows(10.0, workers=None, checksum="y", other_cores=0.7, repeat=1),
    ]
    row = summarize(rows).iloc[0]
    assert pd.isna(row["workers"]) and not row["checksums_consistent"]
    assert row["other_cores_median"] == 0.5


def test_keys_without_a_fill_are_na_and_unknown_warmup_flags_are_measured() -> None:
    frame = pd.DataFrame({"strategy": ["a", "b"], "warmup": [math.nan, True]})
    filled = with_cell_keys(frame)
    assert filled["workers"].tolist() == ["n/a", "n/a"]
    assert filled["warmup"].tolist() == [False, True]


def test_a_windows_epochs_start_at_0_without_an_epoch_and_unusable_checksum_lists_give_none() -> None:
    rows = pd.DataFrame([{"strategy": "a", "checksum": "x", "checksums": ["p", "q"]}])
    assert epoch_checksums(rows)[["epoch", "checksum"]].values.tolist() == [[0, "p"], [1, "q"]]
    assert epoch_checksums(pd.DataFrame([{"strategy": "a", "checksum": "x", "checksums": [None]}])) is None


def test_stages_are_read_from_the_stage_times_unless_told_another_field() -> None:
    frame = pd.DataFrame({"stage_ms_per_batch": [{"wait": 1.0}], "stage_main_ms_per_batch": [{"compute": 2.0}]})
    assert stages_of(frame) == ["wait"]
    assert stages_of(frame, "stage_main_ms_per_batch") == ["compute"]
