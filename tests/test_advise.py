"""``ipcbench advise``: a measured search under a budget, and advice that can be pasted as is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_dataset

from harness.advise import (
    MIN_BUDGET_S,
    Candidate,
    CellResult,
    advise,
    compare_cells,
    judge_bound,
    paste_code,
    simpler,
)
from harness.cli import main
from harness.errors import IpcbenchError
from harness.results import SAMPLES_FILE, read_samples

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 40.0
# The last measurement may run past its estimate (a process's start-up varies); the search's own
# bookkeeping (summary, advice.md) comes after. What the budget must bound, with this slack:
OVERRUN_S = 8.0


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("advise") / "ds", images=3, height=96, width=128, channels=1)


def cell(strategy, workers=2, prefetch=2, median=100.0, values=(), **fields):
    defaults = {"pss_mb": 300.0, "shm_mb": None, "utilization": None, "cpu_s_per_batch": None}
    return CellResult(
        Candidate(strategy, workers, prefetch),
        len(values),
        median,
        median * 0.98,
        median * 1.02,
        **{**defaults, **fields},
        values=tuple(values),
    )


@pytest.fixture(scope="module")
def slow_step_search(small_dataset, tmp_path_factory):
    """One search, shared by the tests that read it: a 60 ms training step, three strategies, the budget."""
    out = tmp_path_factory.mktemp("search") / "advice"
    lines: list[str] = []
    result = advise(
        small_dataset,
        step_ms=60.0,
        budget_s=BUDGET_S,
        strategies=("shm", "baseline", "threads"),
        out=out,
        batch_size=4,
        tile=32,
        report=False,
        say=lines.append,
    )
    return result, out, lines


def test_a_search_keeps_to_its_budget_and_recommends_a_measured_cell(slow_step_search):
    result, out, lines = slow_step_search
    assert result.wall_s <= BUDGET_S + OVERRUN_S
    measured = {(r["strategy"], r["workers"], r["prefetch"]) for r in read_samples(out / SAMPLES_FILE)}
    candidates = {(c.candidate.strategy, c.candidate.workers, c.candidate.prefetch) for c in result.cells}
    assert candidates == measured and len(measured) >= 3  # at least the screen: every strategy once
    recommended = result.recommended.candidate
    assert (recommended.strategy, recommended.workers, recommended.prefetch) in measured
    assert result.recommended.n >= 1 and result.measurements >= 3
    assert any(line.startswith("advise [screen") for line in lines)  # progress, one line per measurement
    text = (out / "advice.md").read_text()
    assert recommended.strategy in text and "```python" in text and (out / "summary.csv").exists()


def test_a_slow_training_step_gets_the_simplest_loader_that_keeps_up(slow_step_search):
    result, _, _ = slow_step_search
    assert result.bound == "step", result.bound_text
    assert "Your loop is the bottleneck" in result.bound_text
    assert result.recommended.candidate.strategy == "baseline"  # it keeps up with a 60 ms step and is simplest


def test_the_pasted_code_runs_as_is(small_dataset, tmp_path):
    code = paste_code(Candidate("shm", 2, 4), str(small_dataset), batch_size=4, tile=32, start_method="forkserver")
    script = tmp_path / "train.py"
    script.write_text(code + "\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'if __name__ == "__main__":' in code and "workers=2, prefetch=4" in code
    baseline = paste_code(Candidate("baseline", 1, 2), str(small_dataset), batch_size=4, tile=32, start_method="spawn")
    assert "workers" not in baseline.split("LoaderConfig(")[1].split(")")[0]


def test_a_budget_too_short_is_refused_before_anything_is_written(small_dataset, tmp_path):
    with pytest.raises(IpcbenchError, match="--budget-s 5 is too short"):
        advise(small_dataset, budget_s=5, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert MIN_BUDGET_S > 5


def test_the_command_prints_the_advice(small_dataset, tmp_path, capsys):
    args = ["advise", "--dataset", str(small_dataset), "--strategies", "baseline,threads", "--budget-s", "30"]
    args += ["--batch-size", "4", "--tile", "32", "--out", str(tmp_path / "cli"), "--no-report"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("advice: use ") and "advice.md" in out


def test_two_cells_within_the_noise_floor_are_not_told_apart():
    a = cell("shm", median=100.0, values=(99, 100, 101, 100, 99, 101))
    b = cell("threads", median=98.0, values=(97, 98, 99, 98, 97, 99))
    p_value, behind, distinct = compare_cells(a, b)
    assert behind == pytest.approx(0.02) and p_value < 0.05 and not distinct  # significant, but under 5%
    c = cell("pipe", median=80.0, values=(79, 80, 81, 80, 79, 81))
    assert compare_cells(a, c)[2]
    assert compare_cells(a, cell("pipe", values=(80,)))[0] is None  # one value: no test


def test_the_simpler_of_two_candidates():
    assert simpler(Candidate("shm", 2, 2), Candidate("threads", 2, 2)).strategy == "threads"
    assert simpler(Candidate("shm", 3, 2), Candidate("shm", 2, 4)) == Candidate("shm", 2, 4)
    assert simpler(Candidate("pipe", 2, 4), Candidate("pipe", 2, 2)).prefetch == 2


def test_what_bounds_the_best_configuration():
    assert judge_bound(cell("shm", utilization=0.95), 40.0, 200.0, 2)[0] == "step"
    bound, text = judge_bound(cell("shm", median=180.0, utilization=0.1), 0.0, 200.0, 2)
    assert bound == "compute" and "90%" in text
    bound, text = judge_bound(cell("shm", median=100.0), 0.0, 200.0, 2)
    assert bound == "handover" and "50%" in text
    assert judge_bound(cell("shm"), 0.0, None, 2)[0] == "unknown"
