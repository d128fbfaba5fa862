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
from harness.results import SAMPLES_FILE, SUMMARY_FILE, read_samples, summarize
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
    assert env["dataset"]["description"] == "2 images, 1 x 96 x 128"
    assert env["dataset"]["sizes"] == [{"shape": [1, 96, 128], "images": 2}]
    assert env["memcpy"]["gb_per_s"] > 0 and env["memcpy"]["batch_copies_per_s_one_core"] > 0
    # R describes the whole run: a round at its start and one at its end, pooled.
    memcpy = env["memcpy"]
    assert len(memcpy["rounds_gb_per_s"]) == 2 and len(memcpy["samples"]) == 2 * DEFAULT_REPEATS
    assert memcpy["gb_per_s"] == pytest.approx(statistics.median(memcpy["samples"]))
    together = memcpy["together"]  # the two-core copy bound: two processes copying side by side, at start and end
    assert together["processes"] == 2 and len(together["rounds_gb_per_s"]) == 2
    assert together["gb_per_s"] == pytest.approx(statistics.median(together["rounds_gb_per_s"]))
    assert together["gb_per_s"] > 0
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
    assert f"on {dataset} (2 images, 1 x 96 x 128) -> {out}" in printed.err
    assert "2/2 measurements finished, 4 windows" in printed.err


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
    assert "unknown strategy 'nope'" in capsys.readouterr().err
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


def test_dtypes_are_cells_and_each_measures_its_own_conversion(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(harness.report, "build_report", lambda run_dir: run_dir / "report.md")
    out = tmp_path / "run"
    extra = ("--workers", "1", "--strategies", "baseline,shm", "--dtype", "uint16,float32", "--scale", "0.5")
    assert main(run_args(dataset, out, *extra)) == 0
    env = json.loads((out / "env.json").read_text())
    assert env["config"]["dtypes"] == ["uint16", "float32"] and env["config"]["float32_scale"] == 0.5
    command = env["command"]
    assert command[command.index("--dtype") + 1] == "uint16,float32"
    assert command[command.index("--scale") + 1] == "0.5"
    records = [r for r in read_samples(out / SAMPLES_FILE) if not r["warmup"]]
    assert sorted({(r["strategy"], r["dtype"]) for r in records}) == [
        ("baseline", "float32"),
        ("baseline", "uint16"),
        ("shm", "float32"),
        ("shm", "uint16"),
    ]
    # float32 batches carry twice the data bytes of uint16 ones (the masks stay uint8).
    per_batch = {r["dtype"]: r["bytes"] / r["batches"] for r in records if r["strategy"] == "shm"}
    tile = 32 * 32
    assert per_batch["uint16"] == 4 * (tile * 2 + tile) and per_batch["float32"] == 4 * (tile * 4 + tile)
    # The same tiles, converted: checksums differ by dtype, never by strategy.
    by_epoch = {
        (r["strategy"], r["dtype"], r["epoch"] + i): checksum
        for r in read_samples(out / SAMPLES_FILE)
        for i, checksum in enumerate(r["checksums"])
    }
    for epoch in (0, 1):  # the warm-up window's first epochs: every cell has them
        assert by_epoch["baseline", "float32", epoch] == by_epoch["shm", "float32", epoch]
        assert by_epoch["shm", "float32", epoch] != by_epoch["shm", "uint16", epoch]
    summary = pd.read_csv(out / SUMMARY_FILE)
    assert sorted(summary["dtype"]) == ["float32", "float32", "uint16", "uint16"]
    assert "full float32" in capsys.readouterr().out


def test_dtype_options_are_checked(dataset, tmp_path, capsys):
    assert main([*run_args(dataset, tmp_path / "a"), "--scale", "0.5"]) == 2
    assert "add float32 to --dtype" in capsys.readouterr().err
    assert main([*run_args(dataset, tmp_path / "b"), "--dtype", "float32", "--scale", "-1"]) == 2
    assert "scale=-1.0 must be a finite number > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*run_args(dataset, tmp_path / "c"), "--dtype", "float64"])
    assert "unknown dtype float64" in capsys.readouterr().err


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
    assert "2/12 measurements finished" in rest
    assert re.search(r"ipcbench: interrupted; kept the 2 measurements that finished", rest), rest
    assert "Traceback" not in rest and "leaked" not in rest
    assert len(read_samples(out / SAMPLES_FILE)) >= 1


def write_sized(root, sizes):
    """A dataset with one 1-channel image per (name, height, width), labels to match."""
    import numpy as np
    import tifffile

    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, height, width in sizes:
        tifffile.imwrite(root / "images" / name, rng.integers(0, 4096, (height, width), dtype=np.uint16))
        tifffile.imwrite(root / "labels" / name, np.ones((height, width), np.uint16))
    return root


def test_a_tile_too_large_for_some_images_fails_before_anything_is_measured_or_written(tmp_path, capsys):
    root = write_sized(
        tmp_path / "ds",
        [("big.tif", 300, 300), ("a.ome.tif", 20, 300), ("b.tiff", 300, 24), ("c.tif", 30, 30)],
    )
    out = tmp_path / "run"
    args = [a for a in run_args(root, out) if a not in ("--tile", "32")]  # the default tile, 256
    assert main(args) == 2
    err = capsys.readouterr().err
    # One error line (a busy machine may add a warning before it), and no measurement started.
    (first,) = [line for line in err.splitlines() if not line.startswith("ipcbench: warning:")]
    assert first.startswith("ipcbench: error: tile=256 is larger than 3 of the 4 images")
    assert "a.ome.tif (20 x 300), b.tiff (300 x 24), c.tif (30 x 30)" in first and "big.tif" not in first
    assert (
        "the largest tile that fits every image is 20 (256 is the default of --tile; pass --tile 20 or less)" in first
    )
    assert not out.exists()  # nothing half-written: no results folder at all
    assert main([*run_args(root, out), "--tile", "25"]) == 2
    err = capsys.readouterr().err
    assert "tile=25 is larger than 2 of the 4 images" in err and "(pass --tile 20 or less)" in err
    assert not out.exists()


def test_a_dataset_of_mixed_sizes_is_described_by_its_sizes(tmp_path, capsys):
    root = write_sized(tmp_path / "ds", [("a.tif", 64, 96), ("b.tif", 96, 128), ("c.tif", 64, 96)])
    out = tmp_path / "run"
    assert main(run_args(root, out, "--workers", "1", "--no-report")) == 0
    description = "3 images, 2 sizes from 1 x 64 x 96 to 1 x 96 x 128"
    assert f"on {root} ({description}) -> {out}" in capsys.readouterr().err
    dataset = json.loads((out / "env.json").read_text())["dataset"]
    assert dataset["description"] == description and dataset["shapes_differ"] is True
    assert dataset["sizes"] == [{"shape": [1, 64, 96], "images": 2}, {"shape": [1, 96, 128], "images": 1}]


def test_run_help_shows_every_default(capsys):
    from strategies import STRATEGIES, LoaderConfig

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    # Each option's help: its line "  --name ARG  help..." and the more indented lines after it.
    helps: dict[str, str] = {}
    option = None
    usage, listed = capsys.readouterr().out.split("options:", 1)
    for line in listed.splitlines():
        start = re.match(r"  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if start:
            option = re.findall(r"--[a-z-]+", start.group(1))[0]
            helps[option] = start.group(2) or ""
        elif option is not None:
            helps[option] += " " + line.strip()
    assert set(helps) == {"--help", *re.findall(r"\[(--[a-z-]+)", usage)}  # every option was read
    loader = LoaderConfig()
    for option, value in (
        ("--prefetch", loader.prefetch),
        ("--batch-size", loader.batch_size),
        ("--tile", loader.tile),
        ("--start-method", loader.start_method),
    ):
        assert f"(default: {value})" in helps[option], (option, helps[option])
    assert f"default: all: {', '.join(STRATEGIES)}" in helps["--strategies"]
    flags = {"--help", "--quick", "--no-report", "--distributed"}
    missing = [option for option, help_text in helps.items() if option not in flags and "default:" not in help_text]
    assert missing == [], missing


def test_ctrl_c_counts_only_the_measurements_that_finished(dataset, tmp_path, capsys, monkeypatch):
    """Ctrl-C in the second measurement: 1 of 2 finished, the stopped one's whole windows kept and counted apart."""
    import os
    import signal

    import harness.commands.run as run_command

    class CtrlCInSecond(ProgressLine):
        def __call__(self, progress):
            super().__call__(progress)
            if progress.kind == "window" and progress.measurement.index == 1 and progress.event["window"] == 0:
                os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C: the runner's handler takes it

    monkeypatch.setattr(run_command, "ProgressLine", CtrlCInSecond)
    out = tmp_path / "run"
    args = run_args(dataset, out, "--workers", "1", "--repeats", "2", "--windows", "3", "--no-report")
    assert main(args) == 130
    err = capsys.readouterr().err
    outcome = json.loads((out / "env.json").read_text())["outcome"]
    assert (outcome["planned"], outcome["finished"], outcome["stopped"], outcome["interrupted"]) == (2, 1, 1, True)
    kept = outcome["stopped_samples"]
    assert 1 <= kept < 4  # the warm-up window at least, and not all four
    records = read_samples(out / SAMPLES_FILE)
    assert len(records) == outcome["samples"] == 4 + kept
    assert [r["repeat"] for r in records].count(1) == kept
    assert f"1/2 measurements finished, 1 stopped mid-way, {4 + kept} windows" in err
    windows = "1 whole window" if kept == 1 else f"{kept} whole windows"
    assert f"ipcbench: interrupted; kept the 1 measurement that finished and the {windows} of the one it stopped" in err


def test_several_datasets_are_cells_of_one_interleaved_run_and_an_image_size_axis(tmp_path, capsys, monkeypatch):
    from harness.report.cells import first_dataset
    from harness.report.scaling import scaling_axes
    from harness.results import load_run

    monkeypatch.setattr(harness.report, "build_report", lambda run_dir: run_dir / "report.md")
    sizes = {"small": (64, 64), "medium": (96, 128), "large": (128, 256)}
    roots = [write_dataset(tmp_path / name, images=2, height=h, width=w, channels=1) for name, (h, w) in sizes.items()]
    out = tmp_path / "run"
    listed = ",".join(map(str, roots))
    assert main([*run_args(listed, out), "--workers", "1", "--repeats", "2"]) == 0
    env = json.loads((out / "env.json").read_text())
    assert env["dataset"]["name"] == "small"  # the run's first: the work bound is measured on it
    assert [d["name"] for d in env["datasets"]] == list(sizes)
    assert [d["shape"] for d in env["datasets"]] == [[1, h, w] for h, w in sizes.values()]
    assert env["config"]["datasets"] == list(sizes)
    assert env["command"][env["command"].index("--dataset") + 1] == listed  # the command repeats the run
    records = read_samples(out / SAMPLES_FILE)
    # Interleaved: each repeat measures every dataset before the next repeat begins.
    order = [(r["repeat"], r["dataset"]) for r in records if r["warmup"]]
    assert order == [(repeat, name) for repeat in range(2) for name in sizes]
    run = load_run(out)
    own, name = first_dataset(run)  # the goals and the batch and worker axes read the first dataset's cells
    assert name == "small" and set(own.summary["dataset"]) == set(own.samples["dataset"]) == {"small"}
    assert len(own.summary) == len(run.summary) / 3
    axes = scaling_axes(run)
    (image,) = [axis for axis in axes if axis.name == "image"]
    megapixels = {name: h * w / 1e6 for name, (h, w) in sizes.items()}
    assert dict(zip(image.cells["dataset"], image.cells["x"], strict=True)) == pytest.approx(megapixels, abs=1e-3)
    printed = capsys.readouterr()
    assert "x 3 datasets (small, medium, large)" in printed.err
    assert {line.split()[0] for line in printed.out.splitlines() if " full " in line} == {"baseline"}
    assert sum(" full " in line for line in printed.out.splitlines()) == 3  # one line per dataset


def test_datasets_of_one_run_must_share_their_channel_count(tmp_path, capsys):
    one = write_dataset(tmp_path / "one", images=2, height=64, width=64, channels=1)
    two = write_dataset(tmp_path / "two", images=2, height=64, width=64, channels=2)
    out = tmp_path / "run"
    assert main(run_args(f"{one},{two}", out)) == 2
    err = capsys.readouterr().err
    assert f"the datasets of one run must have the same number of channels; they have {one} 1, {two} 2" in err
    assert not out.exists()  # nothing half-written
    assert main(run_args(f"{one},{one}", out)) == 2
    assert "must list distinct datasets separated by commas" in capsys.readouterr().err
    assert not out.exists()


def test_a_dataset_folder_whose_name_holds_a_comma_is_one_dataset(tmp_path):
    from harness.session import dataset_specs

    folder = write_dataset(tmp_path / "a,b", images=1, height=32, width=32, channels=1)
    assert dataset_specs(str(folder)) == [str(folder)]
    assert dataset_specs("real, synth") == ["real", "synth"]
    assert dataset_specs("real") == ["real"]
