"""``ipcbench run`` end to end through harness.cli.main, on a tiny dataset (a few seconds)."""

from __future__ import annotations

import io
import json
import re
import statistics

import pandas as pd
import pytest
from conftest import write_dataset
from test_results import SCHEMA_FIELDS, make_sample

import harness.report
from harness.cli import main
from harness.commands.run import ProgressLine, format_eta, summary_lines
from harness.memcpy import DEFAULT_REPEATS
from harness.plan import Measurement
from harness.results import SAMPLES_FILE, read_samples, summarize
from harness.runner import ChildOutcome, Progress

ENV_KEYS = [
    "schema_version",
    "run_id",
    "created",
    "command",
    "machine",
    "os",
    "python",
    "packages",
    "git",
    "start_method",
    "dataset",
    "config",
    "memcpy",
    "loadavg_before",
    "loadavg_after",
    "thread_env",
    "sampler",
]


# Short calibrated windows: long enough to span several epochs of the tiny dataset, short for the suite.
MIN_WINDOW_S = 0.2


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "ds", images=2, height=96, width=128, channels=1)


def run_args(dataset, out, *extra: str) -> list[str]:
    return [
        "run",
        "--quick",
        "--strategies",
        "baseline",
        "--dataset",
        str(dataset),
        "--out",
        str(out),
        "--tile",
        "32",
        "--batch-size",
        "4",
        "--min-window-s",
        str(MIN_WINDOW_S),
        "--noise-floor-s",
        "0",
        *extra,
    ]


def test_quick_run_writes_a_complete_results_folder(dataset, tmp_path, capsys, monkeypatch):
    built = []
    monkeypatch.setattr(harness.report, "build_report", lambda run_dir: built.append(run_dir) or run_dir / "report.md")
    out = tmp_path / "run"
    assert main(run_args(dataset, out)) == 0
    env = json.loads((out / "env.json").read_text())
    assert set(ENV_KEYS) <= set(env)
    assert env["config"]["strategies"] == ["baseline"] and env["config"]["workers"] == [1, 2]
    assert env["config"]["tile"] == 32 and env["config"]["repeats"] == 1 and env["config"]["windows"] == 1
    assert env["config"]["min_window_s"] == MIN_WINDOW_S
    assert env["dataset"]["images"] == 2 and env["dataset"]["shape"] == [1, 96, 128]
    assert env["memcpy"]["gb_per_s"] > 0 and env["memcpy"]["batch_copies_per_s_one_core"] > 0
    # R describes the whole run: a round at its start and one at its end, pooled.
    memcpy = env["memcpy"]
    assert len(memcpy["rounds_gb_per_s"]) == 2 and len(memcpy["samples"]) == 2 * DEFAULT_REPEATS
    assert memcpy["gb_per_s"] == pytest.approx(statistics.median(memcpy["samples"]))
    assert env["loadavg_after"] is not None and env["thread_env"]["OMP_NUM_THREADS"] == "1"
    assert env["outcome"] == {**env["outcome"], "planned": 2, "finished": 2, "interrupted": False}
    assert env["command"][:2] == ["ipcbench", "run"] and "--quick" in env["command"]

    records = read_samples(out / SAMPLES_FILE)
    assert len(records) == 4  # 2 worker counts x 1 repeat x (warm-up + 1 window)
    # Calibrated windows: each stored sample covers at least the minimum, in whole epochs.
    assert all(r["seconds"] >= MIN_WINDOW_S and r["epochs"] >= 1 for r in records)
    assert all(r["batches"] == r["epochs"] * records[0]["batches"] // records[0]["epochs"] for r in records)
    assert all(len(r["checksums"]) == r["epochs"] for r in records)
    assert all(set(SCHEMA_FIELDS) <= set(r) for r in records)
    assert {(r["workers"], r["warmup"]) for r in records} == {(1, True), (1, False), (2, True), (2, False)}
    assert all(r["leaked_shm"] == 0 and r["leftover_processes"] == 0 for r in records)

    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["workers"]) == [1, 2] and list(summary["n"]) == [1, 1]
    assert built == [out]
    printed = capsys.readouterr()
    assert "baseline" in printed.out and "batches/s" in printed.out and "memcpy" in printed.out
    assert "[2/2] baseline workers=2" in printed.err  # not a TTY: one line per measurement


def test_a_failing_report_builder_does_not_fail_the_run(dataset, tmp_path, capsys, monkeypatch):
    def broken(run_dir):
        raise RuntimeError("no plots today")

    monkeypatch.setattr(harness.report, "build_report", broken)
    out = tmp_path / "run"
    assert main(run_args(dataset, out, "--workers", "1")) == 0
    assert "report not built (RuntimeError: no plots today)" in capsys.readouterr().err
    assert len(read_samples(out / SAMPLES_FILE)) == 2


def test_clear_errors_for_bad_arguments(dataset, tmp_path, capsys):
    assert main(run_args(tmp_path / "missing", tmp_path / "a")) == 2
    assert "neither 'real', 'synth' nor an existing dataset folder" in capsys.readouterr().err
    assert main([*run_args(dataset, tmp_path / "b"), "--strategies", "nope"]) == 2
    assert "unknown strategy nope" in capsys.readouterr().err
    assert main([*run_args(dataset, tmp_path / "c"), "--prefetch", "0"]) == 2
    assert "prefetch" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / SAMPLES_FILE).write_text("")
    assert main(run_args(dataset, taken)) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_summary_lines_one_per_cell_with_flags():
    rows = [
        make_sample(workers=w, repeat=r, epoch=1, batches_per_s=rate, leaked_shm=leak).as_dict()
        for w, rates, leak in ((1, (10.0, 10.2, 9.9, 10.1, 10.0, 9.8), 0), (2, (10.0, 30.0, 10.0) * 2, 1))
        for r, rate in enumerate(rates)
    ]
    lines = summary_lines(summarize(rows))
    assert len(lines) == 3 and lines[0].startswith("strategy")
    assert "10.0 [" in lines[1] and "unstable" not in lines[1]
    assert "unstable" in lines[2] and "UNCLEAN" in lines[2]
    few = summary_lines(summarize(rows[:3]))  # the same first cell, 3 samples: not judged
    assert "too few samples (n=3 < 6)" in few[1] and "ok" not in few[1].split()


def test_format_eta():
    assert format_eta(0, 10, 0.0) == "0:00 elapsed"
    assert format_eta(2, 10, 30.0) == "0:30 elapsed, ~2:00 left"
    assert format_eta(10, 10, 75.0) == "1:15 elapsed"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_line_on_a_terminal():
    measurement = Measurement(index=0, repeat=0, strategy="shm", workers=2)
    stream = FakeTerminal()
    progress = ProgressLine(stream)
    progress(Progress("start", measurement, total=2, elapsed_s=0.0))
    event = {"window": 0, "epoch": 0, "epochs": 3, "warmup": True, "batches_per_s": 50.0}
    progress(Progress("window", measurement, 2, 1.0, event=event))
    outcome = ChildOutcome(windows=({"warmup": True, "batches_per_s": 50.0}, {"warmup": False, "batches_per_s": 80.0}))
    progress(Progress("done", measurement, 2, 2.0, outcome=outcome))
    progress.end()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "window 0 (warm-up): 50.0 batches/s" in text and "80.0 batches/s" in text


def test_workloads_and_batch_sizes_in_mib_are_cells_with_r_for_each(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(harness.report, "build_report", lambda run_dir: run_dir / "report.md")
    out = tmp_path / "run"
    # 1 channel x 32 x 32 uint16 = 2 KiB per tile: 1/128 MiB = 4 tiles, 1/32 MiB = 16 tiles.
    extra = ("--workers", "1", "--workload", "full,transfer", "--batch-mib", "0.0078125,0.03125")
    assert main(run_args(dataset, out, *extra)) == 0
    env = json.loads((out / "env.json").read_text())
    assert [(w["name"], w["batch_size"]) for w in env["config"]["workloads"]] == [
        ("full", 4),
        ("transfer", 4),
        ("transfer", 16),
    ]
    by_size = {e["batch_size"]: e for e in env["memcpy"]["by_batch_size"]}
    assert set(by_size) == {4, 16}
    assert by_size[4]["batch_bytes"] == 4 * (2048 + 1024)  # data and masks: what the loop receives
    assert by_size[4]["batch_copies_per_s_one_core"] == pytest.approx(4 * by_size[16]["batch_copies_per_s_one_core"])
    command = env["command"]
    assert command[command.index("--workload") + 1] == "full,transfer"
    assert command[command.index("--batch-mib") + 1] == "0.0078125,0.03125"
    assert command[command.index("--batch-size") + 1] == "4"
    records = [r for r in read_samples(out / SAMPLES_FILE) if not r["warmup"]]
    assert sorted((r["workload"], r["batch_size"]) for r in records) == [("full", 4), ("transfer", 4), ("transfer", 16)]
    # The transfer workload hands over other tiles than the full one: checksums differ between them.
    assert len({r["checksum"] for r in records if r["batch_size"] == 4}) == 2
    printed = capsys.readouterr().out
    transfer_lines = [line for line in printed.splitlines() if " transfer " in line]
    assert len(transfer_lines) == 2 and all(re.search(r"\] +\d+\.\d\d ", line) for line in transfer_lines)
    assert "R " in printed and "(16 tiles)" in printed


def test_batch_options_must_match_the_workloads(dataset, tmp_path, capsys):
    assert main(run_args(dataset, tmp_path / "a", "--workload", "transfer")) == 2  # run_args sets --batch-size
    assert "--batch-size sets the full workload's batch" in capsys.readouterr().err
    assert main([*run_args(dataset, tmp_path / "b"), "--batch-mib", "4"]) == 2
    assert "add transfer to --workload" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*run_args(dataset, tmp_path / "c"), "--workload", "decode"])
    assert "unknown workload decode" in capsys.readouterr().err


def test_summary_lines_show_transfer_cells_as_a_fraction_of_r():
    rows = [
        make_sample(workload=w, batch_size=32, repeat=r, epoch=1, batches_per_s=rate).as_dict()
        for w, rate in (("full", 100.0), ("transfer", 500.0))
        for r in range(2)
    ]
    lines = summary_lines(summarize(rows), copies_per_s={32: 1000.0})
    assert "of R" in lines[0]
    full, transfer = (next(line for line in lines if f" {w} " in line) for w in ("full", "transfer"))
    assert " 0.50 " in transfer and " 0.50 " not in full


def test_sigterm_stops_a_run_as_ctrl_c_does_and_exits_143(dataset, tmp_path):
    """``kill PID`` (a scheduler's limit): the measurement closes, finished ones are kept, exit status 143."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    args = run_args(dataset, out, "--strategies", "baseline,shm", "--step-ms", "50", "--repeats", "3", "--no-report")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if re.match(r"\[\s*2/", line):  # two measurements done, the third under way
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 143, rest
    assert "interrupted; kept the measurements that finished" in rest
    assert "Traceback" not in rest and "leaked" not in rest
    assert len(read_samples(out / SAMPLES_FILE)) >= 1
