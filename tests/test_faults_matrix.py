"""The fault matrix runner: records follow the schema, leftovers and overruns are caught.

Each cell is a real subprocess (about 1-5 s), so this is the fast subset of
``ipcbench faults``: every scenario for ``shm`` (forkserver), two scenarios for
``pipe``, ``queue`` and the baseline (fork), the two self-test scenarios (a planted
leak, a hang), and the CLI on one cell.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from conftest import write_dataset

from harness.cli import main
from harness.faults.matrix import (
    CLOSE_BOUND_S,
    MatrixOptions,
    _stderr_finding,
    run_cell,
    run_matrix,
)
from harness.faults.scenarios import DEFAULT_SCENARIOS, SCENARIOS
from harness.results import load_run
from harness.supervisor import group_members
from strategies.constants import TERMINATE_GRACE_S

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


def test_every_scenario_is_clean_for_shm(tmp_path: Path) -> None:
    # The loaders' default start method; this is the make-test subset of `ipcbench faults`.
    options = MatrixOptions(strategies=("shm",))
    lines: list[str] = []
    records = run_matrix(options, tmp_path, command=["test"], progress=lines.append)
    assert [r.scenario for r in records] == list(DEFAULT_SCENARIOS)
    assert [r.reason for r in records if not r.clean] == []
    stored = [json.loads(line) for line in (tmp_path / "faults.jsonl").read_text().splitlines()]
    for record in stored:
        assert set(record) == FIELDS and record["schema_version"] == 1 and record["start_method"] == "forkserver"
    by_name = {r["scenario"]: r for r in stored}
    for name in ("sigkill_mid_transfer", "sigkill_after_shm_write"):
        assert (
            by_name[name]["error_type"] == "WorkerDiedError" and "killed by signal 9" in by_name[name]["error_message"]
        )
    hung = by_name["hang_ignoring_sigterm"]
    # SIGTERM is ignored, so close() had to wait TERMINATE_GRACE_S before its SIGKILL.
    assert hung["error_type"] == "WorkerTimeoutError" and TERMINATE_GRACE_S <= hung["shutdown_s"] < CLOSE_BOUND_S
    assert by_name["tracker_killed"]["error_type"] is None
    assert len(lines) == len(DEFAULT_SCENARIOS) and lines[0].startswith(f"[1/{len(lines)}] worker_raises / shm")
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["schema_version"] == 1 and env["loadavg_after"] is not None and env["dataset"]["images"] == 6
    png = (tmp_path / "plots" / "faults.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"  # a whole PNG, drawn at blog width (8 in at 150 dpi)
    width, height = struct.unpack(">II", png[16:24])
    assert 1000 <= width <= 1400 and height > 200, (width, height)
    assert f"{len(records)} of {len(records)} fault runs ended clean" in (tmp_path / "report.md").read_text()


def test_a_few_cells_of_the_other_strategies(tmp_path: Path) -> None:
    options = MatrixOptions(
        strategies=("pipe", "queue", "baseline"),
        start_methods=("fork",),
        scenarios=("sigkill_mid_transfer", "early_break"),
    )
    records = run_matrix(options, tmp_path, command=["test"])
    # sigkill_mid_transfer has no baseline cell: the baseline has no worker to kill.
    assert [(r.scenario, r.strategy) for r in records] == [
        ("sigkill_mid_transfer", "pipe"),
        ("sigkill_mid_transfer", "queue"),
        ("early_break", "pipe"),
        ("early_break", "queue"),
        ("early_break", "baseline"),
    ]
    assert [r.reason for r in records if not r.clean] == []
    assert all(isinstance(r.shutdown_s, float) for r in records)
    killed = records[1]
    assert killed.error_type == "WorkerDiedError" and "queue worker" in (killed.error_message or "")
    assert isinstance(killed.time_to_error_s, float) and killed.time_to_error_s < CLOSE_BOUND_S


def test_every_registered_process_strategy_is_in_the_process_scenarios() -> None:
    from strategies import STRATEGIES

    process = set(STRATEGIES) - {"baseline", "threads"}
    assert set(SCENARIOS["sigkill_mid_transfer"].strategies) == process
    assert set(SCENARIOS["sigkill_after_shm_write"].strategies) <= {
        "shm",
        "shm_zerocopy",
        "torch",
        "grain",
        "spdl_arena",
    }
    assert "torch" not in SCENARIOS["startup_failure"].strategies
    assert "grain" not in SCENARIOS["startup_failure"].strategies


def test_a_stderr_reason_quotes_the_offending_line() -> None:
    stderr = "noise\nTraceback (most recent call last):\n  File \"x.py\", line 1, in main\nKeyError: '/mp-abc'\n"
    assert _stderr_finding(stderr, "Traceback") == "stderr shows 'Traceback': KeyError: '/mp-abc'"
    warning = "x.py:1: UserWarning: resource_tracker: process died unexpectedly, relaunching."
    assert _stderr_finding(warning, "resource_tracker").endswith("process died unexpectedly, relaunching.")


def test_planted_leak_is_not_clean(dataset: Path) -> None:
    record = run_cell("selftest_leak", "pipe", "fork", dataset, cell_timeout_s=30.0)
    assert not record.clean
    assert "processes left" in record.reason
    assert "segments left in /dev/shm: ipcbench_" in record.reason and "_planted" in record.reason
    # The matrix cleans up after recording: the planted segment is gone again. (Only it is
    # looked for: other processes of the machine may come and go in /dev/shm meanwhile.)
    assert [name for name in os.listdir("/dev/shm") if name.endswith("_planted")] == []


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


def test_report_reads_a_faults_only_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What `ipcbench faults` leaves: env.json and faults.jsonl, no samples.jsonl.
    (tmp_path / "env.json").write_text(json.dumps({"schema_version": 1, "run_id": "faults-only"}))
    cells = [
        {"scenario": "sigkill_idle", "strategy": "shm", "clean": True, "reason": ""},
        {"scenario": "tracker_killed", "strategy": "queue", "clean": False, "reason": "stderr shows 'Traceback'"},
    ]
    (tmp_path / "faults.jsonl").write_text("".join(json.dumps({"schema_version": 1, **c}) + "\n" for c in cells))
    run = load_run(tmp_path)
    assert run.source == "faults" and run.samples.empty and run.summary.empty and len(run.faults) == 2
    assert main(["report", str(tmp_path)]) == 0
    assert str(tmp_path / "report.md") in capsys.readouterr().out
    report = (tmp_path / "report.md").read_text()
    assert "1 of 2 fault runs ended clean" in report and "stderr shows 'Traceback'" in report
    # The fault report alone: each cell with its times, and no empty throughput sections.
    assert "| sigkill_idle | shm |" in report and "time to error (s)" in report
    assert "## Summary" not in report and "batches/s" not in report
    png = (tmp_path / "plots" / "faults.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"  # a whole PNG, drawn at blog width (8 in at 150 dpi)
    width, height = struct.unpack(">II", png[16:24])
    assert 1000 <= width <= 1400 and height > 200, (width, height)
    # Without faults.jsonl it is no results folder, and the error says which file is missing.
    (tmp_path / "faults.jsonl").unlink()
    assert main(["report", str(tmp_path)]) == 2
    assert "samples.jsonl is missing" in capsys.readouterr().err
