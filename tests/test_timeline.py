"""Stage tracing (strategies.stages, LoaderConfig.trace_dir), the timeline it records and its figure, and the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import write_dataset

from harness.cli import main
from harness.timeline import FIGURE_FILE, META_FILE, STEP_STAGE, TIMELINE_FILE, load, record, tracing_strategies
from strategies import STRATEGIES, LoaderConfig, make_generator
from strategies.stages import BATCH_EVENT, MAIN_ROLE, STAGES, StageClock, TracingStageClock, read_trace

pytestmark = pytest.mark.timeout(180)

CFG = LoaderConfig(batch_size=7, tile=16, workers=2, prefetch=2, start_method="fork")
TRACING = tracing_strategies()
PEERS = sorted(set(STRATEGIES) - set(TRACING))
# Workers that take their images from one shared queue: on a busy machine one of them may take them all.
SHARED_QUEUE = {"queue", "threads"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("timeline"), images=4)


def test_the_strategies_that_trace_are_ours_and_the_peers_are_not() -> None:
    assert set(TRACING) == {"baseline", "pipe", "queue", "shm", "shm_zerocopy", "threads"}


@pytest.mark.parametrize("strategy", ["baseline", "shm", "threads"])
def test_tracing_off_writes_nothing(strategy: str, dataset: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with make_generator(strategy, dataset, CFG) as gen:
        assert type(gen.clock) is StageClock  # the plain clock: no file, no per-interval work
        for clock in getattr(gen, "_clocks", []):
            assert type(clock) is StageClock
        served = sum(1 for _ in gen)
    assert served == len(gen)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("strategy", TRACING)
def test_tracing_on_writes_every_process_intervals_and_batches(strategy: str, dataset: Path, tmp_path: Path) -> None:
    folder = tmp_path / "trace"
    with make_generator(strategy, dataset, CFG.replace(trace_dir=str(folder))) as gen:
        served = sum(1 for _ in gen)
        served += sum(1 for _ in gen)
        pids = gen.worker_pids()
    records = read_trace(folder)
    roles = {r["role"] for r in records}
    workers = {f"worker{i}" for i in range(CFG.workers)}
    if strategy == "baseline":
        assert roles == {MAIN_ROLE}
    elif strategy in SHARED_QUEUE:
        assert MAIN_ROLE in roles and roles - {MAIN_ROLE} and roles <= {MAIN_ROLE} | workers
    else:  # each worker is sent its share of the images
        assert roles == {MAIN_ROLE} | workers
    by_file = {(r["role"], r["pid"]) for r in records}
    main_pids = {pid for role, pid in by_file if role == MAIN_ROLE}
    assert main_pids == {os.getpid()}
    if pids:  # worker processes: each wrote its own file under its own pid
        assert {pid for role, pid in by_file if role != MAIN_ROLE} == set(pids)
    intervals = [r for r in records if "stage" in r]
    assert intervals and all(r["stage"] in STAGES for r in intervals)
    assert all(r["start"] <= r["end"] for r in intervals)
    computing = {r["role"] for r in intervals if r["stage"] == "compute"}
    assert computing == ({MAIN_ROLE} if strategy == "baseline" else roles - {MAIN_ROLE})
    batches = [r for r in records if r.get("event") == BATCH_EVENT]
    assert len(batches) == served
    assert {r["role"] for r in batches} == {MAIN_ROLE}
    assert [r["at"] for r in batches] == sorted(r["at"] for r in batches)


def test_a_peer_refuses_to_trace(dataset: Path, tmp_path: Path) -> None:
    peer = next((name for name in PEERS if STRATEGIES[name].unavailable() is None), None)
    if peer is None:
        pytest.skip("no peer library installed")
    with pytest.raises(ValueError, match=f"the {peer} strategy does not trace"):
        make_generator(peer, dataset, CFG.replace(trace_dir=str(tmp_path / "trace")))
    assert not (tmp_path / "trace").exists()


def test_a_trace_dir_that_is_a_file_is_refused_by_name(dataset: Path, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    with pytest.raises(ValueError, match=r"trace_dir=.*taken.* is not a folder"):
        make_generator("baseline", dataset, CFG.replace(trace_dir=str(taken)))


def test_a_generator_that_fails_to_start_leaves_no_trace_folder(tmp_path: Path) -> None:
    from strategies import DatasetError

    with pytest.raises(DatasetError):
        make_generator("shm", tmp_path / "no-dataset", CFG.replace(trace_dir=str(tmp_path / "trace")))
    assert not (tmp_path / "trace").exists()


def test_a_traced_clock_writes_one_line_a_reading_and_a_torn_last_line_is_dropped(tmp_path: Path) -> None:
    from strategies.stages import stage_clock

    clock = stage_clock(str(tmp_path), "worker3")
    assert isinstance(clock, TracingStageClock)
    with clock.timing("compute"):
        pass
    clock.mark(BATCH_EVENT)
    clock.close()
    clock.since("wait", 0.0)  # after close: counted, not written
    path = tmp_path / f"worker3-{os.getpid()}.jsonl"
    lines = path.read_text().splitlines()
    assert [json.loads(line).keys() for line in lines] == [{"stage", "start", "end"}, {"event", "at"}]
    assert clock.seconds["wait"] > 0
    with path.open("a") as file:
        file.write('{"stage": "comp')  # a worker killed inside its write
    assert [r.get("stage", r.get("event")) for r in read_trace(tmp_path)] == ["compute", BATCH_EVENT]


@pytest.fixture(scope="module")
def recorded(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recorded") / "timeline"
    record(["pipe", "shm"], dataset, CFG, batches=8, step_ms=2.0, out=out)  # each worker sent its share
    return out


def test_record_writes_the_merged_timeline(recorded: Path) -> None:
    assert sorted(p.name for p in recorded.iterdir()) == sorted([META_FILE, TIMELINE_FILE])
    timeline = load(recorded)
    assert timeline.strategies == ["pipe", "shm"]
    assert timeline.meta["batches"] == 8 and timeline.meta["config"]["workers"] == CFG.workers
    assert len(timeline.meta["loadavg_before"]) == 3
    for strategy in timeline.strategies:
        mine = [r for r in timeline.records if r["strategy"] == strategy]
        assert sum(r.get("event") == BATCH_EVENT for r in mine) == 8
        steps = [r for r in mine if r.get("stage") == STEP_STAGE]
        assert len(steps) == 8 and all(r["role"] == MAIN_ROLE for r in steps)
        assert all(r["end_ms"] - r["start_ms"] >= 1.9 for r in steps)  # the 2 ms sleep
        intervals = [r for r in mine if "stage" in r]
        assert all(0 <= r["start_ms"] <= r["end_ms"] for r in intervals)
        assert {r["role"] for r in mine} == {MAIN_ROLE, "worker0", "worker1"}


def test_the_figure_draws_a_panel_per_strategy_a_row_per_process(recorded: Path) -> None:
    from harness.report import style
    from harness.report.timeline import draw, window

    style.apply()
    timeline = load(recorded)
    figure = draw(timeline)
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title(loc="left") for ax in axes] == ["pipe", "shm"]
    for ax in axes:
        assert [t.get_text() for t in ax.get_yticklabels()] == ["worker 1", "worker 0", "main"]
        assert ax.collections  # the stage bars
    assert figure.get_size_inches()[0] == style.FIGURE_WIDTH_IN
    assert "ms" in axes[-1].get_xlabel()
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend[-1] == "next() returns a batch"
    assert STEP_STAGE in legend and set(legend[:-1]) <= {*STAGES, STEP_STAGE}  # the stages the windows show
    pipe = [r for r in timeline.records if r["strategy"] == "pipe"]
    shown = window(pipe)
    returns = sorted(r["at_ms"] for r in pipe if r.get("event") == BATCH_EVENT)
    steps = sorted(r["end_ms"] for r in pipe if r.get("stage") == STEP_STAGE)
    calls = [0.0, *steps[: len(returns) - 1]]  # next() is called when the step after the previous batch ends
    took = [returned - called for called, returned in zip(calls, returns, strict=True)]
    assert shown.waiting is not None and shown.start <= shown.called < shown.waiting <= shown.end
    assert shown.waiting - shown.called == pytest.approx(max(took[3:-2]))  # the longest, batches on both sides
    assert len(style.png_bytes(figure)) > 10_000


def test_the_cli_writes_the_folder(dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "timeline"
    args = ["timeline", "--dataset", str(dataset), "--strategies", "shm", "--batch-size", "7", "--tile", "16"]
    assert main([*args, "--batches", "6", "--start-method", "fork", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / FIGURE_FILE)
    assert sorted(p.name for p in out.iterdir()) == sorted([FIGURE_FILE, META_FILE, TIMELINE_FILE])
    meta = json.loads((out / META_FILE).read_text())
    assert meta["command"][:2] == ["ipcbench", "timeline"] and "--tile" in meta["command"]
    assert meta["dataset"]["images"] == 4


@pytest.mark.parametrize(
    ("strategies", "extra", "message"),
    [
        ("shm,nope", [], "unknown strategy 'nope'; the strategies that trace: baseline"),
        ("torch", [], "torch cannot be traced"),
        ("shm,shm", [], "strategy shm named twice"),
        ("shm", ["--workers", "0"], "--workers 0 must be at least 1"),
        ("shm", ["--tile", "4096"], "tile=4096 is larger than 4 of the 4 images"),
    ],
)
def test_the_cli_refuses_bad_input_and_writes_nothing(
    strategies: str, extra: list[str], message: str, dataset: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "new" / "timeline"
    code = main(["timeline", "--dataset", str(dataset), "--strategies", strategies, *extra, "--out", str(out)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
