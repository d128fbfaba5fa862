"""Per-stage timers (strategies.stages): every strategy says where its time goes, measured."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import write_dataset

from strategies import STRATEGIES, LoaderConfig, make_generator
from strategies.stages import STAGES, StageClock, summed

pytestmark = pytest.mark.timeout(120)

CFG = LoaderConfig(batch_size=7, tile=16, workers=2, prefetch=2, start_method="fork")
# Where each strategy does the copy into batches in the main process (all but zero-copy).
ASSEMBLES = set(STRATEGIES) - {"shm_zerocopy"}


def test_clock_accumulates_and_sums_workers() -> None:
    clock = StageClock()
    start = time.perf_counter() - 0.5
    clock.since("wait", start)
    with clock.timing("compute"):
        time.sleep(0.01)
    assert clock.seconds["wait"] >= 0.5 and clock.seconds["compute"] >= 0.01
    assert list(clock.seconds) == list(STAGES) and len(clock.totals()) == len(STAGES)
    total = summed(clock, [(1.0, 2.0, 0, 0, 0), (0.5, 0, 0, 0, 0)])
    assert total["compute"] == pytest.approx(clock.seconds["compute"] + 1.5)
    assert total["serialize"] == pytest.approx(2.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("stages"), images=4)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_reports_its_stages(strategy: str, dataset: Path) -> None:
    with make_generator(strategy, dataset, CFG) as gen:
        assert set(gen.stage_times()) == set(STAGES)
        for _ in gen:
            pass
        before = gen.stage_times()
        for _ in gen:
            pass
        after = gen.stage_times()
    delta = {stage: after[stage] - before[stage] for stage in STAGES}
    assert all(seconds >= 0 for seconds in delta.values()), delta
    # The per-image work ran, wherever it runs, and its workers said so.
    assert delta["compute"] > 0, delta
    if strategy in ASSEMBLES:
        assert delta["assemble"] > 0, delta
    else:
        assert after["assemble"] == 0.0, "zero-copy shm must never copy tiles in the main process"
    if strategy == "baseline":
        assert after["wait"] == 0.0 and after["transfer"] == 0.0, "one process: nothing to wait for or move"
    if strategy == "queue":
        assert delta["serialize"] > 0, "pickling in the workers and unpickling in the main process are timed"
