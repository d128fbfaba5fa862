"""The fault matrix runner: records follow the schema, leftovers and overruns are caught.

Each cell is a real subprocess, so the set stays small: two scenarios x two strategies,
the two self-test scenarios (a planted leak, a hang), and the CLI on one cell.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import write_dataset

from harness.cli import main
from harness.faults.matrix import MatrixOptions, group_members, run_cell, run_matrix
from harness.faults.scenarios import DEFAULT_SCENARIOS, SCENARIOS

pytestmark = pytest.mark.timeout(120)

FIELDS = {
    "schema_version",
    "scenario",
    "strategy",
    "start_method",
    "clean",
    "reason",
    "time_to_error_s",
    "shutdown_s",
    "error_type",
    "error_message",
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("faults"), images=4, height=64, width=80)


def test_matrix_writes_clean_schema_records(tmp_path: Path) -> None:
    options = MatrixOptions(
        strategies=("shm", "baseline"), start_methods=("fork",), scenarios=("sigkill_idle", "early_break")
    )
    lines: list[str] = []
    records = run_matrix(options, tmp_path, command=["test"], progress=lines.append)
    stored = [json.loads(line) for line in (tmp_path / "faults.jsonl").read_text().splitlines()]
    # sigkill_idle has no baseline cell: the baseline has no worker to kill.
    assert [(r["scenario"], r["strategy"]) for r in stored] == [
        ("sigkill_idle", "shm"),
        ("early_break", "shm"),
        ("early_break", "baseline"),
    ]
    assert len(lines) == 3 and lines[0].startswith("[1/3] sigkill_idle / shm / fork: clean")
    for record in stored:
        assert set(record) == FIELDS and record["schema_version"] == 1 and record["start_method"] == "fork"
        assert record["clean"] is True and record["reason"] == "", record
        assert isinstance(record["shutdown_s"], float)
    killed = stored[0]
    assert killed["error_type"] == "WorkerDiedError" and "was killed by signal 9" in killed["error_message"]
    assert isinstance(killed["time_to_error_s"], float)
    assert [r.clean for r in records] == [True, True, True]
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["schema_version"] == 1 and env["loadavg_after"] is not None and env["dataset"]["images"] == 6
    assert (tmp_path / "plots" / "faults.png").stat().st_size > 0
    assert "3 of 3 fault cells ended clean" in (tmp_path / "report.md").read_text()


def test_planted_leak_is_not_clean(dataset: Path) -> None:
    before = set(os.listdir("/dev/shm"))
    record = run_cell("selftest_leak", "pipe", "fork", dataset, cell_timeout_s=30.0)
    assert not record.clean
    assert "processes left" in record.reason
    assert "segments left in /dev/shm: ipcbench_" in record.reason and "_planted" in record.reason
    # The matrix cleans up after recording: the planted segment is gone again.
    assert set(os.listdir("/dev/shm")) - before == set()


def test_watchdog_kills_a_hanging_scenario(dataset: Path) -> None:
    record = run_cell("selftest_hang", "queue", "fork", dataset, cell_timeout_s=2.0)
    assert not record.clean
    assert "overran its 2 s bound; its process group was killed" in record.reason
    assert record.error_type is None and record.shutdown_s is None


def test_an_unmet_expectation_is_a_reason(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # early_break raises nothing; claiming it should raise makes the cell unclean, with why.
    import dataclasses

    scenario = dataclasses.replace(SCENARIOS["early_break"], expect="WorkerError")
    monkeypatch.setitem(SCENARIOS, "early_break", scenario)
    record = run_cell("early_break", "threads", "fork", dataset, cell_timeout_s=30.0)
    assert not record.clean and record.reason == "no WorkerError surfaced"


def test_options_reject_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        MatrixOptions(strategies=("shm",), scenarios=("nope",))
    with pytest.raises(ValueError, match="unknown start method 'thread'"):
        MatrixOptions(strategies=("shm",), start_methods=("thread",))
    assert "selftest_leak" not in DEFAULT_SCENARIOS and "main_sigkill" in DEFAULT_SCENARIOS


def test_group_members_sees_only_live_processes() -> None:
    assert os.getpgid(0) in {os.getpgid(p) for p in group_members(os.getpgid(0))}
    assert group_members(2**22 + 12345) == []


def test_cli_runs_one_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["faults", "--strategies", "queue", "--scenarios", "stop_reading", "--start-methods", "fork"]
    assert main([*args, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "[1/1] stop_reading / queue / fork: clean" in captured.err
    assert "1 of 1 fault cells ended clean" in captured.out
    (record,) = [json.loads(line) for line in (out / "faults.jsonl").read_text().splitlines()]
    assert record["clean"] and record["scenario"] == "stop_reading"
    assert main(["faults", "--strategies", "nope", "--out", str(out)]) == 2
    assert "unknown strategy 'nope'" in capsys.readouterr().err
