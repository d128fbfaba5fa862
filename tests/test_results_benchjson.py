"""pytest-benchmark JSON read into a run: every round a sample, every field where the docstring says.

``test_report`` builds whole reports from such files; these tests read the RunData
itself, field by field, on documents small enough to know every expected value.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import IpcbenchError
from harness.results import ALL_RANKS, CELL_KEYS, load_benchmark_json
from harness.results.benchjson import run_from_benchmarks

MACHINE = {
    "node": "ci-host",
    "machine": "x86_64",
    "system": "Linux",
    "release": "6.1",
    "python_version": "3.11.7",
    "cpu": {"brand_raw": "AMD EPYC 7B13", "count": 2},
}


def _bench(**fields) -> dict:
    return {"stats": {"data": [0.5]}, **fields}


def _write(tmp_path: Path, document: dict, name: str = "bench.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_the_env_comes_from_machine_and_commit_info(tmp_path: Path) -> None:
    document = {
        "machine_info": MACHINE,
        "commit_info": {"id": "abc123", "dirty": True, "branch": "main"},
        "datetime": "2026-02-01T09:00:00+00:00",
        "version": "5.3.1",
        "benchmarks": [_bench(group="pipe")],
    }
    path = _write(tmp_path, document, "nightly.json")
    run = load_benchmark_json(path)
    assert run.env == {
        "run_id": "nightly",
        "created": "2026-02-01T09:00:00+00:00",
        "command": ["pytest", "--benchmark-json", str(path)],
        "machine": {"hostname": "ci-host", "platform": "x86_64", "cpu": "AMD EPYC 7B13", "cores_logical": 2},
        "os": "Linux 6.1",
        "python": "3.11.7",
        "packages": {"pytest-benchmark": "5.3.1"},
        "git": {"commit": "abc123", "dirty": True, "branch": "main"},
    }
    assert run.source == "pytest-benchmark" and run.root == path
    assert run.notes == ("built from pytest-benchmark results nightly.json: one sample per timed round",)
    assert run.stored_summary is None and run.faults is None


def test_a_bare_document_has_an_env_of_unknowns(tmp_path: Path) -> None:
    machine = {"processor": "x86_64 CPU", "system": "Linux"}
    run = load_benchmark_json(_write(tmp_path, {"machine_info": machine, "benchmarks": [_bench(group="pipe")]}))
    assert run.env["machine"] == {"hostname": None, "platform": None, "cpu": "x86_64 CPU", "cores_logical": None}
    assert run.env["os"] == "Linux" and run.env["created"] is None and run.env["python"] is None
    assert run.env["git"] == {"commit": None, "dirty": None, "branch": None}
    assert "memcpy" not in run.env and "config" not in run.env


def test_every_round_is_a_measured_sample_with_its_rates_and_extra_info(tmp_path: Path) -> None:
    bench = {
        "group": "ignored-when-params-name-the-strategy",
        "name": "test_epoch[pipe-2-4MiB]",
        "params": {"strategy": "pipe", "workers": 2, "size": "4MiB", "prefetch": None},
        "stats": {"data": [0.5, 0.4, 0.25], "median": 0.4, "rounds": 3},
        "extra_info": {
            "batches": 20,
            "bytes": 40_000_000,
            "pss_peak_mb": 300.0,
            "startup_s": 0.2,
            "leaked_shm": 1,
            "step_ms": 5,
            "batch_size": True,  # not a number: the default stays
            "tile": 16,
            "unknown_number": 7,  # not a samples field: not copied
            "cpu_s_per_batch": False,  # a bool is not a number either
            "wait_ms": [1.0, 2.0, 3.0],
            "stage_ms_per_batch": {"compute": 1.5, "wait": 0.25},
        },
    }
    run = run_from_benchmarks([bench], {"machine": {"cores_logical": 4}})
    samples = run.samples
    assert len(samples) == 3
    for number, (_, row) in enumerate(samples.iterrows()):
        seconds = (0.5, 0.4, 0.25)[number]
        assert (row["repeat"], row["epoch"], row["warmup"], row["seconds"]) == (0, number, False, seconds)
        assert row["batches_per_s"] == pytest.approx(20 / seconds)
        assert row["mb_per_s"] == pytest.approx(40 / seconds)
        assert (row["pss_peak_mb"], row["startup_s"], row["leaked_shm"], row["batches"]) == (300.0, 0.2, 1.0, 20.0)
        assert row["stage_ms_per_batch"] == {"compute": 1.5, "wait": 0.25}
        assert row["wait_ms"] == ([1.0, 2.0, 3.0] if number == 0 else [])  # each wait counted once
    assert "unknown_number" not in samples and "cpu_s_per_batch" not in samples
    cell = samples.iloc[0][list(CELL_KEYS)].to_dict()
    assert cell == {
        "strategy": "pipe",
        "workers": 2,
        "prefetch": 0,  # None in params: the default
        "start_method": "n/a",
        "batch_size": 0,
        "tile": 16,
        "dataset": "n/a",
        "workload": "test_epoch[size=4MiB]",  # the test's name and the params that are not cell keys
        "step_ms": 5,
        "rank": ALL_RANKS,
        "dtype": "uint16",
        "decode_threads": "1",
        "background_load": 0,
        "cache": "warm",
        "prefetch_next_epoch": "off",
        "background_start": "off",
    }
    row = run.summary.iloc[0]
    assert row["n"] == 3 and row["batches_per_s_median"] == pytest.approx(20 / 0.4)
    assert row["seconds_q25"] == pytest.approx(pd.Series([0.5, 0.4, 0.25]).quantile(0.25))


def test_the_strategy_falls_back_to_the_group_then_the_tests_name() -> None:
    benches = [
        {"group": "shm", "name": "test_a[x]", "stats": {"data": [0.1]}, "extra_info": {"workload": "transfer"}},
        {"name": "test_b", "stats": {"data": [0.1]}, "params": {"dtype": "float32", "cache": "cold"}},
        {"stats": {"data": [0.1]}, "extra_info": {"strategy": "queue", "decode_threads": 2, "dataset": "real"}},
    ]
    cells = run_from_benchmarks(benches, {}).samples[["strategy", "workload", "dtype", "cache", "decode_threads"]]
    assert cells.values.tolist() == [
        ["shm", "transfer", "uint16", "warm", "1"],
        ["test_b", "test_b", "float32", "cold", "1"],
        ["queue", "benchmark", "uint16", "warm", "2"],
    ]
    assert run_from_benchmarks(benches[2:], {}).samples.iloc[0]["dataset"] == "real"


def test_rates_given_as_values_are_copied_and_a_zero_time_gets_no_rate() -> None:
    bench = _bench(group="pipe", stats={"data": [0.0, 0.5]}, extra_info={"batches": 10, "mb_per_s": 99.0})
    samples = run_from_benchmarks([bench], {}).samples
    assert math.isnan(samples.iloc[0]["batches_per_s"]) and samples.iloc[1]["batches_per_s"] == 20.0
    assert samples["mb_per_s"].tolist() == [99.0, 99.0]


def test_a_benchmark_without_raw_rounds_is_one_sample_with_pytest_benchmarks_quartiles() -> None:
    stats_only = {"group": "shm", "stats": {"median": 0.2, "q1": 0.15, "q3": 0.35, "rounds": 9}}
    raw = {"group": "pipe", "stats": {"data": [0.1, 0.3]}}
    run = run_from_benchmarks([stats_only, raw], {})
    assert run.samples["seconds"].tolist() == [0.2, 0.1, 0.3]
    summary = run.summary.set_index("strategy")
    shm, pipe = summary.loc["shm"], summary.loc["pipe"]
    assert (shm["seconds_q25"], shm["seconds_q75"], shm["n"]) == (0.15, 0.35, 9)
    assert shm["seconds_iqr"] == pytest.approx(0.2)
    assert shm["seconds_median"] == 0.2
    assert (pipe["n"], pipe["seconds_q25"]) == (2, pytest.approx(0.15))  # its own rounds' quartiles
    assert run.notes[1] == "1 benchmark(s) had no raw round data: their seconds quartiles are pytest-benchmark's"
    unknown = run_from_benchmarks([{"group": "x", "stats": {"median": 0.2}}], {}).summary.iloc[0]
    assert math.isnan(unknown["seconds_q25"]) and unknown["n"] == 1


def test_transfer_benchmarks_give_the_memcpy_rates_and_workloads() -> None:
    def transfer(size: int, rate: float | None, gb_per_s: float | None, mib: float) -> dict:
        extra = {"workload": "transfer", "batch_size": size, "batch_mib": mib}
        if rate is not None:
            extra["r_copies_per_s"] = rate
        if gb_per_s is not None:
            extra["memcpy_gb_per_s"] = gb_per_s
        return _bench(group="shm", extra_info=extra)

    benches = [transfer(32, 954, 6.0, 4.0), transfer(8, 3800.0, 6.5, 1.0), transfer(32, 960.0, None, 4.0)]
    env = run_from_benchmarks(benches, {"run_id": "x"}).env
    assert env["run_id"] == "x"
    assert env["memcpy"] == {
        "gb_per_s": 6.0,
        "by_batch_size": [
            {"batch_size": 8, "batch_copies_per_s_one_core": 3800.0},
            {"batch_size": 32, "batch_copies_per_s_one_core": 960.0},
        ],
    }
    assert env["config"] == {
        "workloads": [
            {"name": "transfer", "batch_size": 32, "batch_mib": 4.0},
            {"name": "transfer", "batch_size": 8, "batch_mib": 1.0},
        ]
    }
    no_speed = run_from_benchmarks([transfer(32, 954.0, None, 4.0)], {}).env
    assert "memcpy" not in no_speed
    no_rate = run_from_benchmarks([transfer(32, None, 6.0, 4.0)], {}).env
    assert "memcpy" not in no_rate


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "no 'benchmarks' list: is this pytest-benchmark --benchmark-json output?"),
        ({"benchmarks": []}, "no 'benchmarks' list"),
        ({"benchmarks": [{"name": "x"}]}, r"benchmarks\[0\] has no 'stats' object"),
        ({"benchmarks": [_bench(), "text"]}, r"benchmarks\[1\] has no 'stats' object"),
        ({"benchmarks": [{"stats": {"rounds": 3}}]}, r"benchmarks\[0\] has neither stats.data nor stats.median"),
    ],
)
def test_a_file_that_is_not_benchmark_output_is_refused_with_where(
    tmp_path: Path, document: dict, message: str
) -> None:
    path = _write(tmp_path, document)
    with pytest.raises(IpcbenchError, match=f"^{path}: {message}"):
        load_benchmark_json(path)


def test_benchmarks_given_without_a_file_are_rooted_at_where_they_came_from() -> None:
    run = run_from_benchmarks([_bench(group="pipe")], {})
    assert run.root == Path("benchmarks")
    assert run.notes == ("built from pytest-benchmark results: one sample per timed round",)
    assert run_from_benchmarks([_bench(group="pipe")], {}, where="session").root == Path("session")


def test_the_workload_names_the_test_and_all_its_other_params() -> None:
    bench = _bench(
        name="test_epoch[a[1]-x]",  # the test's name is what precedes the first bracket
        params={"strategy": "pipe", "start_method": "spawn", "size": "4MiB", "codec": "zlib"},
    )
    row = run_from_benchmarks([bench], {}).samples.iloc[0]
    assert row["workload"] == "test_epoch[codec=zlib,size=4MiB]"
    assert row["start_method"] == "spawn"
