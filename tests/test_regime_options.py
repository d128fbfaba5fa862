"""The regime options of ``ipcbench run``: step sweeps, decode threads, background load and a cold page cache."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pandas as pd
import psutil
import pytest
import tifffile
from conftest import write_dataset
from test_cli_run import run_args

import harness.report
from harness.background import BackgroundLoad
from harness.child import EpochTiming, window_record
from harness.cli import main
from harness.pagecache import dataset_files, evict, read_bandwidth, resident_fraction
from harness.plan import RunOptions, measurement_loader, plan_measurements
from harness.results import SAMPLES_FILE, read_samples, summarize
from harness.results.summary import load_verdict
from strategies import LoaderConfig, make_generator, open_dataset
from strategies import work as work_module
from strategies.work import ImageProcessor, decode_threads_for, make_processor

MB = 2**20


# -- the page cache ---------------------------------------------------------------
@pytest.fixture
def cached_file(tmp_path):
    """An 8 MiB file on a disk file system (not tmpfs, whose pages cannot be dropped), read once."""
    path = tmp_path / "blob.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 8 * MB, dtype=np.uint8).tobytes())
    path.read_bytes()
    return path


def _on_tmpfs(path) -> bool:
    best = ""
    fstype = ""
    for part in psutil.disk_partitions(all=True):
        if str(path).startswith(part.mountpoint) and len(part.mountpoint) > len(best):
            best, fstype = part.mountpoint, part.fstype
    return fstype == "tmpfs"


def test_evict_drops_a_files_pages_and_reading_brings_them_back(cached_file):
    if _on_tmpfs(cached_file):
        pytest.skip("the temporary folder is a tmpfs: its pages are the file and cannot be evicted")
    assert resident_fraction([cached_file]) > 0.9
    evict([cached_file])
    assert resident_fraction([cached_file]) < 0.05
    cached_file.read_bytes()
    assert resident_fraction([cached_file]) > 0.9


def test_read_bandwidth_reads_every_byte_of_evicted_files(tmp_path):
    root = write_dataset(tmp_path / "ds", images=2, height=96, width=128, channels=1)
    files = dataset_files(root)
    assert [p.parent.name for p in files] == ["images", "images", "labels", "labels"]
    bandwidth = read_bandwidth(files)
    assert bandwidth.bytes == sum(p.stat().st_size for p in files)
    assert bandwidth.files == 4 and len(bandwidth.passes_mb_per_s) == 3 and bandwidth.readers >= 1
    assert read_bandwidth(files, readers=3).bytes == bandwidth.bytes  # files shared among readers, each read once
    assert bandwidth.mb_per_s == sorted(bandwidth.passes_mb_per_s)[1] > 0  # the median pass
    if not _on_tmpfs(root):
        assert bandwidth.resident_before < 0.05
    assert bandwidth.as_dict()["read_mb_per_s"] == bandwidth.mb_per_s


def test_an_eviction_between_epochs_is_not_the_windows_time():
    def epoch(start: float, end: float) -> EpochTiming:
        return EpochTiming(10, 40, 1000, start, end, 0.01, (1.0,) * 10, "c", None)

    timings = [epoch(0.0, 1.0), epoch(1.5, 2.5)]  # 0.5 s between them, spent evicting
    common = {"step_ms": 0.0, "samples": (), "shm_base": 0, "cpu_s": 1.0}
    plain = window_record(1, 0, timings, **common)
    paused = window_record(1, 0, timings, **common, paused_s=0.5)
    assert plain["seconds"] == pytest.approx(2.5) and paused["seconds"] == pytest.approx(2.0)
    assert paused["batches_per_s"] == pytest.approx(20 / 2.0)


# -- busy processes ------------------------------------------------------------------
def test_background_load_spins_while_its_block_runs_and_leaves_nothing():
    with BackgroundLoad(2) as load:
        processes = [psutil.Process(pid) for pid in load.pids()]
        before = [p.cpu_times().user for p in processes]
        time.sleep(0.5)
        used = [p.cpu_times().user - b for p, b in zip(processes, before, strict=True)]
    assert len(processes) == 2
    assert all(u > 0.1 for u in used), used  # each burns CPU (two cores: each gets at least a share)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    assert BackgroundLoad(0).__enter__().pids() == []


def test_background_load_stops_its_processes_when_the_block_raises():
    with pytest.raises(RuntimeError, match="inside"), BackgroundLoad(1) as load:
        pid = load.pids()[0]
        raise RuntimeError("inside")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("count", [-1, 1.5, True])
def test_background_load_refuses_a_bad_count(count):
    with pytest.raises(ValueError, match="background load"):
        BackgroundLoad(count)


def test_deliberate_load_is_not_a_busy_machine():
    rows = [
        {
            "strategy": "shm",
            "workers": 2,
            "epoch": e,
            "warmup": False,
            "batches_per_s": 10.0 + e,
            "other_cores": o,
            "background_load": b,
            "checksum": "c",
        }
        for e in range(6)
        for b, o in ((2, 2.05), (0, 0.05))
    ]
    summary = summarize(rows, cores=2)
    assert not summary["verdict"].str.contains("loaded").any()
    assert summary["other_cores_median"].max() == pytest.approx(0.05)
    assert load_verdict({}, pd.DataFrame(rows), cores=2) is None
    for row in rows:
        row["background_load"] = 0  # the same CPU, not asked for: the machine was busy
    assert load_verdict({}, pd.DataFrame(rows), cores=2) is not None


# -- decode threads ------------------------------------------------------------------
def test_automatic_decode_threads_share_the_cores_among_the_decoders(monkeypatch):
    monkeypatch.setattr(work_module, "usable_cores", lambda: 8)
    auto = LoaderConfig()
    assert [decode_threads_for(auto, n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert decode_threads_for(LoaderConfig(decode_threads=3), 8) == 3  # asked for: taken as is


def test_each_strategy_resolves_its_decoders(tiny_dataset, monkeypatch):
    monkeypatch.setattr(work_module, "usable_cores", lambda: 4)
    config = LoaderConfig(batch_size=4, tile=32, workers=2)
    dataset = open_dataset(tiny_dataset)
    assert make_processor(dataset, config).decode_threads == 2  # two workers share four cores
    assert make_processor(dataset, config, decoders=1).decode_threads == 4
    with make_generator("baseline", dataset, config) as gen:
        assert gen.decode_threads == 4  # one process decodes: every core
    with make_generator("threads", dataset, config) as gen:
        assert gen.decode_threads == 2


def test_decoding_with_threads_gives_the_same_pixels(tmp_path):
    root = tmp_path / "zlib"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        image = rng.integers(0, 4096, (2, 300, 260), dtype=np.uint16)
        # Many compressed strips: what the threads share out.
        tifffile.imwrite(root / "images" / f"i{i}.tif", image, compression="zlib", rowsperstrip=16)
        labels = rng.integers(0, 3, (300, 260), dtype=np.uint16)
        tifffile.imwrite(root / "labels" / f"i{i}.tif", labels, compression="zlib", rowsperstrip=16)
    dataset = open_dataset(root)

    def batches(threads: int) -> list[bytes]:
        config = LoaderConfig(batch_size=8, tile=64, decode_threads=threads)
        with make_generator("baseline", dataset, config) as gen:
            return [data.tobytes() + masks.tobytes() for data, masks in gen]

    assert batches(1) == batches(3)
    processor = ImageProcessor(dataset, 64, decode_threads=3)
    assert processor.decode_threads == 3


# -- plan and command line ---------------------------------------------------------
def test_every_swept_value_is_a_cell_of_every_strategy():
    options = RunOptions(
        dataset="d",
        dataset_name="d",
        dataset_source="dir",
        strategies=("baseline", "shm"),
        workers=(2,),
        loader=LoaderConfig(),
        repeats=2,
        step_ms=(0.0, 20.0),
        decode_threads=(None, 1),
        background_load=(0, 1),
        caches=("warm", "cold"),
    )
    plan = plan_measurements(options)
    cells = [(m.strategy, m.step_ms, m.decode_threads, m.background_load, m.cache) for m in plan]
    assert len(plan) == 2 * 2 * 16 and len(set(cells)) == 2 * 16
    assert cells[: len(cells) // 2] == cells[len(cells) // 2 :]  # interleaved: the same order every repeat
    one = next(m for m in plan if m.decode_threads == 1)
    assert measurement_loader(options, one).decode_threads == 1 and one.decode_threads_key == "1"
    assert next(m for m in plan if m.decode_threads is None).decode_threads_key == "auto"
    config = options.config_dict()
    assert config["step_ms"] == [0.0, 20.0] and config["decode_threads"] == ["auto", 1]
    assert config["background_load"] == [0, 1] and config["cache"] == ["warm", "cold"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("step_ms", (-1.0,)),
        ("step_ms", ()),
        ("decode_threads", (0,)),
        ("background_load", (-1,)),
        ("caches", ("hot",)),
        ("caches", ("warm", "warm")),
    ],
)
def test_bad_swept_values_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        RunOptions(
            dataset="d",
            dataset_name="d",
            dataset_source="dir",
            strategies=("baseline",),
            workers=(1,),
            loader=LoaderConfig(),
            **{field: value},
        )


@pytest.mark.parametrize(
    "extra",
    [
        ("--step-ms", "5,-1"),
        ("--decode-threads", "0"),
        ("--decode-threads", "many"),
        ("--cache", "hot"),
        ("--background-load", "-2"),
    ],
)
def test_bad_regime_options_are_usage_errors(tmp_path, capsys, extra):
    with pytest.raises(SystemExit) as info:
        main(run_args(tmp_path / "nowhere", tmp_path / "out", *extra))
    assert info.value.code == 2
    assert extra[0] in capsys.readouterr().err


def test_a_cold_sweep_records_what_stayed_cached_and_the_disk(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(harness.report, "build_report", lambda run_dir: run_dir / "report.md")
    root = write_dataset(tmp_path / "ds", images=2, height=96, width=128, channels=1)
    out = tmp_path / "run"
    extra = ("--workers", "1", "--step-ms", "0,1", "--cache", "warm,cold", "--decode-threads", "auto,2")
    assert main(run_args(root, out, *extra)) == 0
    env = json.loads((out / "env.json").read_text())
    assert env["disk"]["read_mb_per_s"] > 0 and env["disk"]["files"] == 4
    assert env["dataset"]["compression"] == "none"
    command = env["command"]
    assert command[command.index("--step-ms") + 1] == "0,1"
    assert command[command.index("--cache") + 1] == "warm,cold"
    assert command[command.index("--decode-threads") + 1] == "auto,2"
    records = [r for r in read_samples(out / SAMPLES_FILE) if not r["warmup"]]
    cells = {(r["step_ms"], r["cache"], r["decode_threads"]) for r in records}
    assert cells == {(s, c, d) for s in (0.0, 1.0) for c in ("warm", "cold") for d in ("auto", "2")}
    for r in records:
        if r["cache"] == "cold":
            assert r["cache_resident_before"] is not None
            if not _on_tmpfs(root):
                assert r["cache_resident_before"] < 0.05
        else:
            assert r["cache_resident_before"] is None
        assert r["decode_threads_used"] == (2 if r["decode_threads"] == "2" else len(os.sched_getaffinity(0)))
        assert (r["consumer_utilization"] > 0) == (r["step_ms"] > 0)
        # The main process's own share of the stage times, never more than both sides together.
        assert set(r["stage_main_ms_per_batch"]) <= set(r["stage_ms_per_batch"])
        assert all(v <= r["stage_ms_per_batch"][s] + 1e-9 for s, v in r["stage_main_ms_per_batch"].items())
    assert "cold cache" in capsys.readouterr().out


def test_prefetch_is_a_sweep_too(tmp_path, monkeypatch):
    monkeypatch.setattr(harness.report, "build_report", lambda run_dir: run_dir / "report.md")
    root = write_dataset(tmp_path / "ds", images=2, height=96, width=128, channels=1)
    out = tmp_path / "run"
    assert main(run_args(root, out, "--strategies", "shm", "--workers", "1", "--prefetch", "1,3")) == 0
    records = [r for r in read_samples(out / SAMPLES_FILE) if not r["warmup"]]
    assert {r["prefetch"] for r in records} == {1, 3}
    env = json.loads((out / "env.json").read_text())
    assert env["config"]["prefetch"] == [1, 3]
    assert env["command"][env["command"].index("--prefetch") + 1] == "1,3"


# -- the next epoch begun early ------------------------------------------------------
def test_a_window_that_works_ahead_counts_the_gap_before_it():
    def epoch(start: float, end: float) -> EpochTiming:
        return EpochTiming(10, 40, 1000, start, end, 0.01, (1.0,) * 10, "c", None)

    timings = [epoch(1.0, 2.0)]  # the previous window ended at 0.75: its workers had 0.25 s more
    common = {"step_ms": 0.0, "samples": (), "shm_base": 0, "cpu_s": 1.0}
    plain = window_record(1, 0, timings, **common)
    contiguous = window_record(1, 0, timings, **common, lead_in_s=0.25)
    assert plain["seconds"] == pytest.approx(1.0) and contiguous["seconds"] == pytest.approx(1.25)
    assert contiguous["batches_per_s"] == pytest.approx(10 / 1.25)


@pytest.mark.parametrize(
    ("option", "field", "offering"),
    [
        ("next_epoch", "prefetch_next_epoch", ("pipe", "threads")),
        ("background_start", "background_start", ("pipe", "torch")),
    ],
)
def test_an_option_on_is_a_cell_only_of_the_strategies_that_offer_it(option, field, offering):
    """``RunOptions.<option>`` "on" makes a cell of its own (LoaderConfig.<field> True) only where it is offered."""
    common = {"dataset": "d", "dataset_name": "d", "dataset_source": "dir", "loader": LoaderConfig()}
    strategies = ("baseline", "pipe", "torch", "threads")
    options = RunOptions(**common, strategies=strategies, workers=(2,), **{option: ("off", "on")})
    plan = plan_measurements(options)
    cells = {(m.strategy, getattr(m, field)) for m in plan}
    assert cells == {(s, "off") for s in strategies} | {(s, "on") for s in offering}
    on = next(m for m in plan if getattr(m, field) == "on")
    assert getattr(measurement_loader(options, on), field) is True
    assert options.config_dict()[field] == ["off", "on"]
    with pytest.raises(ValueError, match=option):
        RunOptions(**common, strategies=("pipe",), workers=(1,), **{option: ("sometimes",)})


def test_background_start_with_fork_is_refused_before_the_run_starts():
    with pytest.raises(ValueError, match="not 'fork'"):
        RunOptions(
            dataset="d",
            dataset_name="d",
            dataset_source="dir",
            loader=LoaderConfig(start_method="fork"),
            strategies=("pipe",),
            workers=(2,),
            background_start=("off", "on"),
        )


def test_next_epoch_is_a_sweep_of_the_run_command(tmp_path, monkeypatch):
    monkeypatch.setattr(harness.report, "build_report", lambda run_dir: run_dir / "report.md")
    root = write_dataset(tmp_path / "ds", images=3, height=96, width=128, channels=1)
    out = tmp_path / "run"
    args = run_args(root, out, "--strategies", "threads", "--workers", "1", "--prefetch-next-epoch", "off,on")
    assert main(args) == 0
    records = [r for r in read_samples(out / SAMPLES_FILE) if not r["warmup"]]
    assert {r["prefetch_next_epoch"] for r in records} == {"off", "on"}
    env = json.loads((out / "env.json").read_text())
    assert env["command"][env["command"].index("--prefetch-next-epoch") + 1] == "off,on"
    summary = summarize(read_samples(out / SAMPLES_FILE))
    assert set(summary["prefetch_next_epoch"]) == {"off", "on"}
