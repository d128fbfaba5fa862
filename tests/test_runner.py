"""harness.runner: plan and interleaving (fake launcher), escalation (fake clock), real children."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from harness import runner, supervisor
from harness.child import ChildSpec
from harness.measure import is_alive
from harness.plan import RunOptions, Workload, batch_size_for_mib, measurement_loader, plan_measurements
from harness.results import SAMPLES_FILE, STAGES, read_samples
from harness.runner import (
    ChildOutcome,
    InterruptFlag,
    run_child,
    run_plan,
)
from harness.supervisor import Escalation
from strategies import LoaderConfig


def options(tmp_path, **changes) -> RunOptions:
    fields = dict(
        dataset=str(tmp_path),
        dataset_name="tiny",
        dataset_source="dir",
        strategies=("a", "b"),
        workers=(1, 2),
        loader=LoaderConfig(batch_size=8, tile=32),
        repeats=2,
        windows=2,
    )
    fields.update(changes)
    return RunOptions(**fields)


def epoch_event(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "warmup": epoch == 0,
        "batches": 3,
        "tiles": 20,
        "bytes": 1000,
        "seconds": 0.1,
        "batches_per_s": 30.0,
        "mb_per_s": 0.01,
        "time_to_first_batch_s": 0.01,
        "wait_ms_p50": 1.0,
        "wait_ms_p95": 1.0,
        "wait_ms_p99": 1.0,
        "wait_ms_max": 1.0,
        "wait_ms": [1.0, 1.0, 1.0],
        "consumer_utilization": 0.0,
        "pss_peak_mb": 50.0,
        "uss_peak_mb": 40.0,
        "shm_peak_mb": 0.0,
        "cpu_s_per_batch": 0.01,
        "memory_trace": [[0.0, 50.0, 40.0, 0.0]],
        "checksum": f"c{epoch}",
        "checksum_full": None,
        "sampler_cpu_s": 0.001,
    }


def fake_outcome(epochs: int = 3, **changes) -> ChildOutcome:
    fields = dict(
        windows=tuple(epoch_event(e) for e in range(epochs)),
        startup_s=0.2,
        closed={"shutdown_s": 0.05, "leaked_shm": 0, "leftover_processes": 0},
        returncode=0,
    )
    fields.update(changes)
    return ChildOutcome(**fields)


class FakeLauncher:
    """Records what it was asked to measure; returns canned outcomes (no processes)."""

    def __init__(self, outcomes=None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.outcomes = outcomes or {}

    def __call__(self, spec: ChildSpec, interrupt: InterruptFlag, on_event) -> ChildOutcome:
        self.calls.append((spec.strategy, spec.loader["workers"]))
        outcome = self.outcomes.get(len(self.calls), fake_outcome())
        if isinstance(outcome, BaseException):
            raise outcome
        for event in outcome.windows:
            on_event({"event": "window", **event})
        return outcome


def test_plan_interleaves_cells_within_each_repeat(tmp_path):
    plan = plan_measurements(options(tmp_path, repeats=3))
    cells = [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert [(m.strategy, m.workers) for m in plan] == cells * 3
    assert [m.repeat for m in plan] == [0] * 4 + [1] * 4 + [2] * 4
    assert [m.index for m in plan] == list(range(12))


def test_dtypes_are_cells_and_only_float32_cells_are_scaled(tmp_path):
    opts = options(tmp_path, repeats=1, workers=(1,), dtypes=("uint16", "float32"), scale=0.5)
    plan = plan_measurements(opts)
    assert [(m.strategy, m.dtype) for m in plan] == [
        ("a", "uint16"),
        ("a", "float32"),
        ("b", "uint16"),
        ("b", "float32"),
    ]
    loaders = [measurement_loader(opts, m) for m in plan]
    assert [(c.dtype, c.scale) for c in loaders] == [("uint16", None), ("float32", 0.5)] * 2
    with pytest.raises(ValueError, match="needs float32 among the dtypes"):
        options(tmp_path, dtypes=("int32",), scale=0.5)
    with pytest.raises(ValueError, match="must be distinct"):
        options(tmp_path, dtypes=("int32", "int32"))


def test_run_plan_launches_in_plan_order_and_appends_samples(tmp_path):
    launch = FakeLauncher()
    seen = []
    result = run_plan(options(tmp_path), tmp_path, "run1", launch=launch, on_progress=seen.append)
    assert launch.calls == [("a", 1), ("a", 2), ("b", 1), ("b", 2)] * 2
    assert (result.planned, result.finished, result.samples, result.interrupted) == (8, 8, 24, False)
    records = read_samples(tmp_path / SAMPLES_FILE)
    assert len(records) == 24
    first = records[0]
    assert (first["strategy"], first["workers"], first["repeat"], first["run_id"]) == ("a", 1, 0, "run1")
    assert (first["batch_size"], first["tile"], first["dataset"], first["startup_s"]) == (8, 32, "tiny", 0.2)
    assert [r["warmup"] for r in records[:3]] == [True, False, False]
    assert [p.kind for p in seen[:5]] == ["start", "window", "window", "window", "done"]


def test_interruption_keeps_finished_measurements(tmp_path):
    launch = FakeLauncher({3: KeyboardInterrupt()})
    result = run_plan(options(tmp_path), tmp_path, "run1", launch=launch)
    assert result.interrupted and result.finished == 2
    assert len(read_samples(tmp_path / SAMPLES_FILE)) == 6


def test_an_interrupted_child_that_closed_cleanly_keeps_its_epochs_and_stops_the_run(tmp_path):
    launch = FakeLauncher({2: fake_outcome(epochs=2, interrupted=True, returncode=130)})
    result = run_plan(options(tmp_path), tmp_path, "run1", launch=launch)
    assert result.interrupted and len(launch.calls) == 2
    assert len(read_samples(tmp_path / SAMPLES_FILE)) == 3 + 2
    # Stopped after 2 of its 3 windows: its windows are kept, but it did not finish.
    assert (result.finished, result.stopped, result.stopped_samples, result.samples) == (1, 1, 2, 5)


def test_a_child_interrupted_after_its_last_window_finished(tmp_path):
    launch = FakeLauncher({2: fake_outcome(epochs=3, interrupted=True, returncode=130)})
    result = run_plan(options(tmp_path), tmp_path, "run1", launch=launch)
    assert result.interrupted and (result.finished, result.stopped, result.samples) == (2, 0, 6)


def test_a_failed_measurement_is_recorded_and_the_run_goes_on(tmp_path):
    launch = FakeLauncher({1: fake_outcome(error="WorkerDiedError: boom", detail="Traceback ...")})
    result = run_plan(options(tmp_path), tmp_path, "run1", launch=launch)
    assert len(launch.calls) == 8 and result.finished == 7 and len(result.failures) == 1
    failure = json.loads((tmp_path / runner.FAILURES_FILE).read_text())
    assert (failure["strategy"], failure["workers"], failure["error"]) == ("a", 1, "WorkerDiedError: boom")


def test_escalation_timeline_with_a_fake_clock():
    interrupt = Escalation.for_interrupt(now=100.0)
    assert interrupt.due(100.0) == ["sigint"]
    assert interrupt.due(100.0 + supervisor.INTERRUPT_GRACE_S - 0.01) == []
    assert interrupt.due(100.0 + supervisor.INTERRUPT_GRACE_S) == ["sigterm"]
    assert interrupt.due(1000.0) == ["sigkill"]
    assert interrupt.due(2000.0) == []
    watchdog = Escalation.for_watchdog(now=0.0)
    assert watchdog.due(1000.0) == ["sigterm", "sigkill"]


def test_options_are_validated(tmp_path):
    with pytest.raises(ValueError, match="repeats"):
        options(tmp_path, repeats=0)
    with pytest.raises(ValueError, match="duplicates"):
        options(tmp_path, strategies=("a", "a"))
    with pytest.raises(ValueError, match="workers"):
        options(tmp_path, workers=(0,))


# -- real processes (fast: a tiny dataset, or a few lines of Python) -------------------------
def test_run_child_measures_baseline_end_to_end(tiny_dataset):
    spec = ChildSpec(
        strategy="baseline",
        dataset=str(tiny_dataset),
        windows=2,
        sampler_interval_s=0.05,
        loader=LoaderConfig(batch_size=4, tile=32, workers=1).as_dict(),
    )
    events = []
    outcome = run_child(spec, on_event=events.append, watchdog_s=60)
    assert outcome.complete, (outcome.error, outcome.detail)
    assert outcome.returncode == 0 and outcome.orphans_after_exit == 0 and outcome.leaked_shm_after_exit == 0
    assert [e["epoch"] for e in outcome.windows] == [0, 1, 2]
    assert [e["event"] for e in events] == ["ready", "window", "window", "window", "closed"]
    warmup, measured = outcome.windows[0], outcome.windows[1]
    assert warmup["checksum_full"] and measured["checksum_full"] is None
    assert measured["batches"] == len(measured["wait_ms"]) > 0
    assert measured["pss_peak_mb"] > 10 and measured["memory_trace"]
    # The baseline times its own stages: the per-image work dominates, the stage names are the known ones.
    assert set(measured["stage_ms_per_batch"]) <= set(STAGES) and measured["stage_ms_per_batch"]["compute"] > 0
    assert outcome.closed["leftover_processes"] == 0 and outcome.closed["leaked_shm"] == 0


FAKE_CHILD = textwrap.dedent("""
    import json, os, subprocess, sys
    spec = json.loads(sys.argv[-1])
    out = os.fdopen(spec["event_fd"], "w", buffering=1)
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    out.write(json.dumps({"event": "ready", "startup_s": 0.0, "threads": threads}) + "\\n")
    if spec["strategy"] == "orphan":  # a grandchild that outlives us, in our process group
        subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    if spec["strategy"] == "hang":
        import time; time.sleep(60)
    out.write(json.dumps({"event": "closed", "shutdown_s": 0.0, "leaked_shm": 0, "leftover_processes": 0}) + "\\n")
""")


def fake_child(strategy: str) -> tuple[ChildSpec, list[str]]:
    return ChildSpec(strategy=strategy, dataset="-", windows=1), [sys.executable, "-c", FAKE_CHILD]


def test_child_environment_pins_threads_and_orphans_are_counted_and_killed(monkeypatch):
    monkeypatch.setattr(runner, "ORPHAN_GRACE_S", 0.3)
    spec, command = fake_child("orphan")
    events = []
    outcome = run_child(spec, command=command, on_event=events.append, watchdog_s=30)
    assert events[0]["threads"] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    assert outcome.orphans_after_exit == 1
    assert outcome.complete  # the measurement itself reported; the orphan is recorded beside it


def test_watchdog_kills_a_silent_child():
    spec, command = fake_child("hang")
    outcome = run_child(spec, command=command, watchdog_s=0.5)
    assert outcome.error is not None and "watchdog" in outcome.error
    assert not outcome.complete and outcome.returncode is not None and outcome.returncode < 0
    assert outcome.orphans_after_exit == 0


def test_ctrl_c_stops_the_child_which_closes_its_generator_and_reports(tiny_dataset):
    spec = ChildSpec(
        strategy="baseline",
        dataset=str(tiny_dataset),
        windows=200,
        step_ms=5.0,
        loader=LoaderConfig(batch_size=4, tile=32, workers=1).as_dict(),
    )
    flag = InterruptFlag()
    child_pids = []

    def on_event(event):
        if event["event"] == "ready":
            child_pids.append(event["pid"])
        if event["event"] == "window" and event["epoch"] == 1:
            flag.count = 1  # what the SIGINT handler does on Ctrl-C

    outcome = run_child(spec, interrupt=flag, on_event=on_event, watchdog_s=60)
    assert outcome.interrupted and outcome.returncode == 130
    assert outcome.complete and 2 <= len(outcome.windows) < 201
    assert outcome.closed["leftover_processes"] == 0
    assert not is_alive(child_pids[0])


def test_a_measurement_process_dies_with_its_runner():
    # A stand-in runner starts a child that asks for PR_SET_PDEATHSIG, reports its pid, and exits.
    grandchild = "from harness.child import die_with_parent; die_with_parent(); import time; time.sleep(60)"
    runner_code = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}], start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
        "import time; time.sleep(0.5)\n"  # let the child reach prctl
    )
    done = subprocess.run([sys.executable, "-c", runner_code], capture_output=True, text=True, timeout=30, check=True)
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_alive(pid)


def test_sampler_overhead_is_a_ratio_of_totals_over_measured_epochs():
    samples = [
        {"strategy": "a", "warmup": True, "seconds": 1.0, "sampler_cpu_s": 0.5},  # ignored
        {"strategy": "a", "warmup": False, "seconds": 0.3, "sampler_cpu_s": 0.0},  # no sample landed in it
        {"strategy": "a", "warmup": False, "seconds": 0.7, "sampler_cpu_s": 0.02},
        {"strategy": "b", "warmup": False, "seconds": 1.0, "sampler_cpu_s": 0.01},
    ]
    assert runner.sampler_overhead(samples) == pytest.approx(0.03 / 2.0)
    assert runner.sampler_overhead(samples, "a") == pytest.approx(0.02 / 1.0)
    assert runner.sampler_overhead([]) is None


# -- workloads and batch sizes ------------------------------------------------------------
def test_workloads_are_cells_of_the_plan_and_reach_the_child_and_the_samples(tmp_path):
    loads = (Workload("full", 8), Workload("transfer", 4, 0.25), Workload("transfer", 16, 1.0))
    opts = options(tmp_path, strategies=("a",), workers=(2,), repeats=2, workloads=loads)
    plan = plan_measurements(opts)
    assert [(m.workload, m.batch_size) for m in plan] == [("full", 8), ("transfer", 4), ("transfer", 16)] * 2
    specs = []

    def launch(spec, interrupt, on_event):
        specs.append(spec)
        return fake_outcome()

    run_plan(opts, tmp_path, "run1", launch=launch)
    assert [(s.loader["workload"], s.loader["batch_size"]) for s in specs[:3]] == [
        ("full", 8),
        ("transfer", 4),
        ("transfer", 16),
    ]
    records = read_samples(tmp_path / SAMPLES_FILE)
    assert {(r["workload"], r["batch_size"]) for r in records} == {("full", 8), ("transfer", 4), ("transfer", 16)}
    assert opts.config_dict()["workloads"][1] == {"name": "transfer", "batch_size": 4, "batch_mib": 0.25}


def test_without_workloads_the_loader_is_the_one_cell(tmp_path):
    opts = options(tmp_path, loader=LoaderConfig(batch_size=8, tile=32, workload="transfer"))
    assert opts.cell_workloads == (Workload("transfer", 8),)
    assert {m.batch_size for m in plan_measurements(opts)} == {8}


def test_batch_size_for_mib_counts_image_bytes_only():
    assert batch_size_for_mib(4, channels=1, tile=256) == 32  # the real dataset: 128 KiB per tile
    assert batch_size_for_mib(16, channels=1, tile=256) == 128
    assert batch_size_for_mib(4, channels=2, tile=256) == 16
    with pytest.raises(ValueError, match="holds no whole tile"):
        batch_size_for_mib(0.01, channels=1, tile=256)


def test_workloads_are_validated(tmp_path):
    with pytest.raises(ValueError, match="duplicates"):
        options(tmp_path, workloads=(Workload("full", 8), Workload("full", 8)))
    with pytest.raises(ValueError, match="must be one of"):
        Workload("decode", 8)
    with pytest.raises(ValueError, match="batch_size"):
        Workload("transfer", 0)
