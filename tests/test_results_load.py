"""Reading a results folder: what each file becomes, the notes the loader adds, and what it refuses.

The report tests read whole generated runs; these write the few lines each case
needs, so every note and error can be compared whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import IpcbenchError
from harness.results import load, load_run, machine_cores, summarize, write_summary
from harness.results.load import read_faults


def _sample(strategy: str = "pipe", rate: float = 10.0, warmup: bool = False) -> dict:
    # start_method and dataset given: their fill, "n/a", would read back from a CSV as a missing value
    return {
        "strategy": strategy,
        "workers": 2,
        "start_method": "fork",
        "dataset": "tiny",
        "repeat": 0,
        "epoch": 1,
        "warmup": warmup,
        "batches_per_s": rate,
    }


def _lines(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _run(tmp_path: Path, samples: list[dict] | None, env: dict | None = None, **files: str) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "env.json").write_text(json.dumps({"schema_version": 1, **(env or {})}))
    if samples is not None:
        (run_dir / "samples.jsonl").write_text(_lines(samples))
    for name, text in files.items():
        (run_dir / name.replace("_", ".")).write_text(text)
    return run_dir


SAMPLES = [_sample(rate=1.0, warmup=True), _sample(rate=10.0), _sample(rate=14.0), _sample("shm", 20.0)]
FAULTS = [
    {"scenario": "early_break", "strategy": "pipe", "clean": True, "reason": None},
    {"scenario": "sigkill", "strategy": "shm", "clean": 0, "reason": "1 segment left"},
]


def test_a_results_folder_is_its_env_samples_and_recomputed_summary(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, SAMPLES, env={"machine": {"cores_logical": 8}})
    run = load(run_dir)
    assert run.root == run_dir and run.source == "samples" and run.notes == ()
    assert run.env == {"schema_version": 1, "machine": {"cores_logical": 8}}
    assert len(run.samples) == 4 and run.samples["warmup"].tolist() == [True, False, False, False]
    assert run.samples["prefetch"].tolist() == [0] * 4  # cell keys the samples lack are filled
    assert run.summary.set_index("strategy")["batches_per_s_median"].to_dict() == {"pipe": 12.0, "shm": 20.0}
    assert run.stored_summary is None and run.faults is None


def test_a_stored_summary_is_checked_against_the_samples(tmp_path: Path) -> None:
    run_dir = _run(tmp_path / "a", SAMPLES)
    write_summary(run_dir)
    run = load_run(run_dir)
    assert run.notes == ("summary.csv agrees with the values recomputed from samples.jsonl",)
    assert list(run.stored_summary["strategy"]) == ["pipe", "shm"]
    stale = summarize(pd.DataFrame(SAMPLES[:3])).to_csv(index=False)
    run = load_run(_run(tmp_path / "b", SAMPLES, summary_csv=stale))
    assert run.notes == (
        "summary.csv disagrees with samples.jsonl (1 cell(s) of samples.jsonl missing from summary.csv); "
        "recomputed values used",
    )
    edited = summarize(pd.DataFrame(SAMPLES[:3])).assign(n=[5]).to_csv(index=False)
    run = load_run(_run(tmp_path / "c", SAMPLES, summary_csv=edited))
    assert run.notes == (
        "summary.csv disagrees with samples.jsonl (1 cell(s) of samples.jsonl missing from summary.csv; "
        "n differs in 1 cell(s)); recomputed values used",
    )


def test_env_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, SAMPLES)
    (run_dir / "env.json").write_text(json.dumps({"schema_version": 2}))
    with pytest.raises(IpcbenchError) as info:
        load_run(run_dir)
    assert str(info.value) == f"{run_dir / 'env.json'}: schema_version 2 is not supported (this ipcbench reads 1)"


def test_verdicts_count_the_cores_of_the_machine_that_measured(tmp_path: Path) -> None:
    busy = [{**s, "other_cores": 1.5} for s in [_sample(rate=10.0 + i / 10) for i in range(6)]]
    two = load_run(_run(tmp_path / "two", busy, env={"machine": {"cores_logical": 2}}))
    assert two.summary.loc[0, "verdict"] == "ok; loaded (other processes used 1.5 cores)"
    eight = load_run(_run(tmp_path / "eight", busy, env={"machine": {"cores_logical": 8}}))
    assert eight.summary.loc[0, "verdict"] == "ok"


def test_failed_measurements_and_a_truncated_last_line_are_noted(tmp_path: Path) -> None:
    failures = [{"strategy": "shm", "workers": w, "repeat": 0, "error": f"died {w}"} for w in range(7)]
    run_dir = _run(tmp_path, SAMPLES, failures_jsonl=_lines(failures))
    with (run_dir / "samples.jsonl").open("a") as f:
        f.write('{"strategy": "pipe", "wor')
    run = load_run(run_dir)
    assert len(run.samples) == 4
    assert run.notes[0].startswith("samples.jsonl: dropped a truncated last line (")
    listed = "; ".join(f"shm ({w} workers, repeat 0): died {w}" for w in range(5))
    assert run.notes[1] == f"failures.jsonl: 7 measurement(s) failed: {listed}; and 2 more"
    few = load_run(_run(tmp_path / "few", SAMPLES, failures_jsonl=_lines(failures[:5])))
    assert few.notes == (f"failures.jsonl: 5 measurement(s) failed: {listed}",)
    six = load_run(_run(tmp_path / "six", SAMPLES, failures_jsonl=_lines(failures[:6])))
    assert six.notes == (f"failures.jsonl: 6 measurement(s) failed: {listed}; and 1 more",)
    none = load_run(_run(tmp_path / "none", SAMPLES, failures_jsonl=""))
    assert none.notes == ()


def test_fault_records_are_read_with_reasons_as_text_and_clean_as_bools(tmp_path: Path) -> None:
    run = load_run(_run(tmp_path, SAMPLES, faults_jsonl=_lines(FAULTS)))
    assert run.source == "samples"
    assert run.faults["reason"].tolist() == ["", "1 segment left"]
    assert run.faults["clean"].tolist() == [True, False] and run.faults["clean"].dtype == bool
    without = {k: v for k, v in FAULTS[0].items() if k != "reason"}
    no_reasons = read_faults(_run(tmp_path / "b", None, faults_jsonl=_lines([without])) / "faults.jsonl")
    assert no_reasons["reason"].tolist() == [""]


def test_a_truncated_fault_record_is_an_error_not_forgiven(tmp_path: Path) -> None:
    path = tmp_path / "faults.jsonl"
    path.write_text(_lines(FAULTS) + '{"scenario": "sigk')
    with pytest.raises(IpcbenchError, match=rf"^{path}:3: not valid JSON"):
        read_faults(path)


def test_a_faults_only_folder_has_empty_samples_and_summary_with_every_column(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, None, env={"run_id": "f"}, faults_jsonl=_lines(FAULTS))
    run = load_run(run_dir)
    assert run.source == "faults" and run.root == run_dir and run.stored_summary is None
    assert run.env == {"schema_version": 1, "run_id": "f"}
    assert run.samples["strategy"].dtype == object
    assert run.notes == ("faults-only results folder: no samples.jsonl, so no throughput or memory figures",)
    assert len(run.faults) == 2
    assert run.samples.empty and {"strategy", "workers", "workload", "cache", "warmup"} <= set(run.samples)
    assert run.samples["warmup"].dtype == bool
    assert run.summary.empty and list(run.summary.columns) == list(summarize([]).columns)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"strategy": "pipe", "scenario": "early_break"}], "fault records lack field(s) clean"),
        ([{"clean": True}], "fault records lack field(s) scenario, strategy"),
    ],
)
def test_fault_records_without_their_fields_are_refused(tmp_path: Path, records: list, message: str) -> None:
    path = tmp_path / "faults.jsonl"
    path.write_text(_lines(records))
    with pytest.raises(IpcbenchError) as info:
        read_faults(path)
    assert str(info.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        ([], "holds no samples"),
        ([{"strategy": "pipe", "epoch": 1}], ": samples lack required field(s) workers"),
        ([{"epoch": 1}], ": samples lack required field(s) strategy, workers"),
        ([_sample(warmup=True)], ": every epoch is a warm-up epoch; nothing was measured"),
    ],
)
def test_samples_that_cannot_make_a_summary_are_refused(tmp_path: Path, samples: list, message: str) -> None:
    run_dir = _run(tmp_path, samples)
    with pytest.raises(IpcbenchError) as info:
        load_run(run_dir)
    assert str(info.value) == f"{run_dir / 'samples.jsonl'}{' ' if message[0] != ':' else ''}{message}"


def test_samples_without_a_warmup_field_are_all_measured(tmp_path: Path) -> None:
    records = [{k: v for k, v in s.items() if k != "warmup"} for s in SAMPLES[1:]]
    run = load_run(_run(tmp_path, records))
    assert run.samples["warmup"].tolist() == [False] * 3 and run.summary["n"].tolist() == [2, 1]


def test_what_is_not_a_results_folder_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    with pytest.raises(IpcbenchError, match=rf"^{missing} is not a results folder \(no such directory\)$"):
        load(missing)
    run_dir = _run(tmp_path, SAMPLES, summary_csv='"a\n')
    with pytest.raises(IpcbenchError, match=rf"^{run_dir / 'summary.csv'}: cannot read \("):
        load_run(run_dir)


def test_the_machines_cores_are_read_when_env_says_them() -> None:
    assert machine_cores({"machine": {"cores_logical": 16}}) == 16
    assert machine_cores({"machine": {"cores_logical": 4.0}}) == 4
    assert machine_cores({"machine": {"cores_logical": 1}}) == 1
    assert machine_cores({"machine": {"cores_logical": 0}}) is None
    assert machine_cores({"machine": {"cores_logical": "8"}}) is None
    assert machine_cores({"machine": None}) is None
    assert machine_cores({}) is None


def test_a_json_file_is_benchmark_output_and_a_folder_a_results_folder_whatever_its_name(tmp_path: Path) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"benchmarks": [{"group": "pipe", "stats": {"data": [0.5]}}]}))
    run = load(bench)
    assert run.source == "pytest-benchmark" and run.root == bench
    folder = _run(tmp_path / "run.json", SAMPLES)  # a folder whose name ends in .json
    assert load(folder).source == "samples"
    other = tmp_path / "bench.txt"
    other.write_text(bench.read_text())
    with pytest.raises(IpcbenchError, match="is not a results folder"):
        load(other)
