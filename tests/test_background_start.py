"""LoaderConfig.background_start: the workers start in a thread; the main process makes the first images.

What it must keep: the same batches as the baseline, across the hand-over from the main
process to the workers in the middle of an epoch, an early ``break`` and the next epoch
begun early; a start-up failure raised by ``next()`` with the worker named, nothing left
behind; a ``close()`` while the workers start that releases everything. What it must do:
return from ``make_generator`` and yield the first batch without waiting for the workers
(their start is held back on purpose by the ``worker.start`` injection point), and hand
the work to them once they are ready.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import assert_same_batches, write_dataset
from test_cli_run import run_args

import harness.report
from harness.cli import main
from harness.measure import is_infrastructure
from harness.results import SAMPLES_FILE, read_samples, summarize
from strategies import STRATEGIES, LoaderConfig, WorkerDiedError, WorkerError, injection, make_generator
from strategies.base import offering

pytestmark = pytest.mark.timeout(120)

OFFERING = ("pipe", "queue", "shm", "shm_zerocopy", "torch")
# Torch's worker loop answers the start's handshake before its first image: a worker whose
# set-up failed is reported by the first image it is asked for, as a worker error, not by the start.
POOLS = ("pipe", "queue", "shm", "shm_zerocopy")
HOLD_ENV = "IPCBENCH_TEST_HOLD_START_S"
STARTED_DIR_ENV = "IPCBENCH_TEST_STARTED_IMAGES"
IMAGES = 6


def config(**overrides) -> LoaderConfig:
    base = {
        "batch_size": 5,
        "tile": 16,
        "workers": 2,
        "prefetch": 2,
        "start_method": "spawn",  # forkserver would keep the environment, and the injections, of its first start
        "timeout": 20.0,
        "background_start": True,
    }
    return LoaderConfig(**{**base, **overrides})


# Injection actions, run in a worker process at "worker.start" (before its set-up and Ready).
def hold_start(worker_id: int) -> None:
    time.sleep(float(os.environ[HOLD_ENV]))


def fail_start(worker_id: int) -> None:
    raise RuntimeError(f"worker {worker_id} cannot start: no licence for the microscope")


def hold_then_fail_start(worker_id: int) -> None:
    hold_start(worker_id)
    fail_start(worker_id)


def die_at_start(worker_id: int) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def record_start(job) -> None:
    """At "tiles.start", in a worker: one file per image a worker makes."""
    (Path(os.environ[STARTED_DIR_ENV]) / f"{os.getpid()}-{time.monotonic_ns()}-{job.position}").touch()


def arm(monkeypatch: pytest.MonkeyPatch, **actions: str) -> None:
    """Arm ``point=function`` of this module in every worker (the main process arms nothing from the environment)."""
    points = {point.replace("_", "."): f"{__name__}:{function}" for point, function in actions.items()}
    monkeypatch.setenv(injection.ENV, injection.spec(points))


def hold(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    monkeypatch.setenv(HOLD_ENV, str(seconds))
    arm(monkeypatch, worker_start="hold_start")


def assert_said_where(name: str, error: BaseException) -> None:
    """A start that failed says so; torch's failed set-up comes with its worker's first image (``POOLS``)."""
    said = any("started in the background" in note for note in getattr(error, "__notes__", []))
    assert said == (name in POOLS), getattr(error, "__notes__", None)
    assert name in POOLS or "torch worker" in str(error)


def offers_next_epoch(name: str) -> bool:
    return STRATEGIES[name].prefetches_next_epoch


def wait_for_workers(gen, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while not gen.worker_pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    return gen.worker_pids()


def run_epochs_for(gen, seconds: float) -> None:
    """Whole epochs for ``seconds``: the main process makes them itself until a failed start shows."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in gen:
            pass


def children() -> list[psutil.Process]:
    """This process's live descendants but multiprocessing's own helpers (resource tracker, fork server)."""
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if p.status() != psutil.STATUS_ZOMBIE and not is_infrastructure(p.pid)
    ]


def wait_until_no_children(timeout: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := children()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def handed_over_epochs(name: str, root: Path, cfg: LoaderConfig) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Epoch 0: two batches made here, then (workers ready) the rest; epochs 1 and 3 whole, 2 broken off."""
    out = []
    with make_generator(name, root, cfg) as gen:
        it = iter(gen)
        first = [(np.array(d), np.array(m)) for d, m in (next(it), next(it))]
        if cfg.background_start:
            assert gen.worker_pids() == [], "the workers were held back: these batches were made here"
            assert len(wait_for_workers(gen)) == cfg.workers
        out.append(first + [(np.array(d), np.array(m)) for d, m in it])
        out.append([(np.array(d), np.array(m)) for d, m in gen])
        for i, _ in enumerate(gen):
            if i == 2:
                break
        out.append([(np.array(d), np.array(m)) for d, m in gen])
    return out


def test_the_strategies_that_offer_it_are_the_documented_ones() -> None:
    assert tuple(offering("starts_in_background")) == OFFERING
    for name, cls in STRATEGIES.items():
        assert cls.starts_in_background == (name in OFFERING), name


HAND_OVERS = [(name, ahead) for name in OFFERING for ahead in (False, True) if not ahead or offers_next_epoch(name)]


@pytest.mark.parametrize(
    ("name", "ahead"), HAND_OVERS, ids=[f"{n}-{'next_epoch_early' if a else 'epoch_by_epoch'}" for n, a in HAND_OVERS]
)
def test_same_batches_as_the_baseline_across_the_hand_over_to_the_workers(
    name: str, ahead: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    reference = handed_over_epochs("baseline", dataset, config(background_start=False))
    hold(monkeypatch, 0.5)  # long against two batches of a tiny dataset, even on a loaded machine
    assert_same_batches(reference, handed_over_epochs(name, dataset, config(prefetch_next_epoch=ahead)))


@pytest.mark.parametrize("name", OFFERING)
def test_the_first_batch_does_not_wait_for_the_workers(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    hold(monkeypatch, 1.5)
    t0 = time.monotonic()
    with make_generator(name, dataset, config()) as gen:
        made = time.monotonic() - t0
        batch = next(gen)
        first = time.monotonic() - t0
        assert gen.worker_pids() == []
        assert made < 1.0 and first < 1.0, f"make_generator {made:.2f} s, first batch {first:.2f} s: it waited"
        assert batch[0].shape == (5, 2, 16, 16)
        assert len(wait_for_workers(gen)) == 2


@pytest.mark.parametrize("name", OFFERING)
def test_once_ready_the_workers_make_every_image(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    folder = tmp_path / "started"
    folder.mkdir()
    monkeypatch.setenv(STARTED_DIR_ENV, str(folder))
    arm(monkeypatch, tiles_start="record_start")
    with make_generator(name, dataset, config()) as gen:
        wait_for_workers(gen)
        before = len(os.listdir(folder))
        for _ in range(2):
            assert sum(1 for _ in gen) == len(gen)
        assert len(os.listdir(folder)) - before == 2 * IMAGES


@pytest.mark.parametrize("name", OFFERING)
def test_a_worker_failing_at_start_is_raised_by_next_and_leaves_nothing(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    arm(monkeypatch, worker_start="fail_start")
    gen = make_generator(name, dataset, config())
    with pytest.raises(WorkerError, match="no licence for the microscope") as caught:
        run_epochs_for(gen, 20.0)
    assert_said_where(name, caught.value)
    assert gen.closed
    assert not wait_until_no_children()
    # /dev/shm is checked by the autouse fixture (conftest.dev_shm_unchanged)


@pytest.mark.parametrize("ending", ["finished", "abandoned"])
@pytest.mark.parametrize("name", POOLS)  # torch's start does not fail for a worker's set-up (POOLS)
def test_a_start_failing_while_an_epoch_ends_is_raised_by_the_loop_and_leaves_nothing(
    name: str, ending: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The epoch's images made here; the start fails before the loop ends the epoch (the last
    ``next()``, or ``iter()`` breaking it off) and starts the next one."""
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    monkeypatch.setenv(HOLD_ENV, "1.0")  # long against an epoch of a tiny dataset, made here
    arm(monkeypatch, worker_start="hold_then_fail_start")
    gen = make_generator(name, dataset, config())
    it = iter(gen)
    for _ in range(len(it) if ending == "finished" else 1):
        next(it)
    gen._starting.join(30.0)  # the start has failed; nothing has asked for its error yet
    with pytest.raises(WorkerError, match="no licence for the microscope") as caught:
        for _ in it:
            pass
        next(iter(gen))
    assert_said_where(name, caught.value)
    assert gen.closed
    assert not wait_until_no_children()
    # /dev/shm is checked by the autouse fixture (conftest.dev_shm_unchanged)


@pytest.mark.parametrize("name", OFFERING)
def test_a_worker_killed_while_starting_is_named(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    arm(monkeypatch, worker_start="die_at_start")
    gen = make_generator(name, dataset, config())
    with pytest.raises(WorkerDiedError, match=r"killed by signal 9.*(while starting|first answer of every worker)"):
        run_epochs_for(gen, 20.0)
    assert not wait_until_no_children()


@pytest.mark.parametrize("name", OFFERING)
def test_close_while_the_workers_start_releases_everything(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    hold(monkeypatch, 30.0)
    gen = make_generator(name, dataset, config())
    next(gen)
    assert gen.worker_pids() == []
    t0 = time.monotonic()
    gen.close()
    assert time.monotonic() - t0 < 10.0, "close() must not wait for a start held back for 30 s"
    assert not children(), "close() returned with a worker still alive"
    with pytest.raises(Exception, match="closed"):
        next(gen)


@pytest.mark.parametrize("name", ["shm", "torch"])
def test_a_loader_dropped_while_its_workers_start_is_released(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    hold(monkeypatch, 0.5)
    gen = make_generator(name, dataset, config())
    next(gen)
    starting = gen._starting
    del gen  # unclosed: the starting thread holds it until the workers are up, then the finalizer releases it
    assert starting.join(30.0), "the start should have ended well"
    gc.collect()
    assert not wait_until_no_children()
    # /dev/shm is checked by the autouse fixture (conftest.dev_shm_unchanged)


def test_a_train_and_a_validation_loader_side_by_side_with_a_consumer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_set = write_dataset(tmp_path / "train", images=IMAGES)
    val_set = write_dataset(tmp_path / "val", images=3, seed=1)
    cfg = config(shuffle=False, augment=False)
    reference = {
        root: epochs("baseline", root, cfg.replace(background_start=False), 1)[0] for root in (train_set, val_set)
    }
    hold(monkeypatch, 0.3)
    with make_generator("shm", train_set, cfg) as train, make_generator("torch", val_set, cfg) as val:
        got: dict[Path, list] = {}
        reader = threading.Thread(target=lambda: got.setdefault(val_set, [(np.array(d), np.array(m)) for d, m in val]))
        reader.start()
        got[train_set] = [(np.array(d), np.array(m)) for d, m in train]
        reader.join(30.0)
    assert_same_batches([reference[train_set], reference[val_set]], [got[train_set], got[val_set]])


def epochs(name: str, root: Path, cfg: LoaderConfig, n: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    with make_generator(name, root, cfg) as gen:
        return [[(np.array(d), np.array(m)) for d, m in gen] for _ in range(n)]


def test_under_the_default_start_method_forkserver(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    reference = epochs("baseline", dataset, config(background_start=False), 3)
    assert_same_batches(reference, epochs("pipe", dataset, config(start_method="forkserver"), 3))


@pytest.mark.parametrize("name", ("baseline", "threads"))
def test_a_strategy_that_cannot_is_refused_by_name(name: str, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "ds", images=IMAGES)
    with pytest.raises(ValueError, match=rf"not offered by the {name} strategy.*pipe, queue, shm, shm_zerocopy, torch"):
        make_generator(name, dataset, config())


def test_the_option_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="background_start=1 must be a bool"):
        config(background_start=1)


def test_fork_is_refused_with_the_reason() -> None:
    """A worker forked by the starting thread copies the locks the main thread holds mid-image: it can hang."""
    with pytest.raises(ValueError, match=r"needs start_method 'forkserver'.*'spawn', not 'fork'.*lock"):
        config(start_method="fork")


def test_a_sweep_of_the_run_command_timed_from_make_generator_measures_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ipcbench run --background-start off,on``: its own cells, the first batch on one clock from
    ``make_generator``, and a warm-up window that lasts until the workers are up, however long."""
    monkeypatch.setattr(harness.report, "build_report", lambda run_dir: run_dir / "report.md")
    root = write_dataset(tmp_path / "ds", images=3, height=96, width=128, channels=1)
    # The measurement process's workers import this module for the injected hold.
    path = [str(Path(__file__).parent), os.getenv("PYTHONPATH")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, path)))
    hold(monkeypatch, 1.5)  # several windows long: without the wait, measured windows would be made in the main process
    out = tmp_path / "run"
    args = run_args(root, out, "--strategies", "baseline,pipe", "--workers", "1", "--background-start", "off,on")
    assert main(args) == 0
    records = read_samples(out / SAMPLES_FILE)
    assert {(r["strategy"], r["background_start"]) for r in records} == {
        ("baseline", "off"),
        ("pipe", "off"),
        ("pipe", "on"),
    }
    for record in records:
        since = record["first_batch_since_start_s"]
        if record["warmup"]:  # one clock from the make_generator call: at least start-up + the first batch's wait
            assert since >= record["startup_s"] + record["time_to_first_batch_s"] - 1e-6, record
        else:
            assert since is None
    env = json.loads((out / "env.json").read_text())
    assert env["command"][env["command"].index("--background-start") + 1] == "off,on"
    assert set(summarize(records)["background_start"]) == {"off", "on"}
    started = [r for r in records if r["strategy"] == "pipe" and r["background_start"] == "on"]
    made_here = {warmup: [made_in_main(r) for r in started if r["warmup"] == warmup] for warmup in (True, False)}
    assert made_here[True][0] > 0, "the held start should have left the first images to the main process"
    assert made_here[False] and not any(made_here[False]), "a measured window had images made here"


def made_in_main(record: dict) -> float:
    """The main process's compute stage in a window, ms a batch: images it made itself."""
    return (record["stage_main_ms_per_batch"] or {}).get("compute", 0.0)
