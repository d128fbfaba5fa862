"""ipcbench compare: ratios of medians, Mann-Whitney significance with a noise floor, the regression gate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from report_fixtures import write_results

from harness.cli import main
from harness.compare import CellChange, compare_runs, format_comparison, min_p_value, regressions
from harness.results import load_run

# the cell keys, in CELL_KEYS order
CELL = ("shm", 2, 2, "forkserver", 32, 256, "synth", "full", 0.0, "all", "uint16", "1", 0, "warm", "off", "off")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    common = {"strategies": ("pipe", "queue", "shm"), "workers": (2,), "faults": False, "summary": False}
    return {
        "a": write_results(root / "a", seed=1, **common),  # 2 repeats x 3 measured epochs: n = 6 per cell
        "b": write_results(root / "b", seed=2, factors={"shm": 0.7, "pipe": 1.01}, **common),
        "same": write_results(root / "same", seed=3, factors={"pipe": 0.99}, **common),
        "more": write_results(root / "more", seed=4, **{**common, "strategies": ("pipe", "queue", "shm", "torch")}),
    }


def change_of(comparison, strategy: str, metric: str = "batches_per_s") -> CellChange:
    return next(c for c in comparison.changes if c.cell[0] == strategy and c.metric == metric)


def test_planted_regression_is_significant_and_jitter_is_not(runs: dict[str, Path]) -> None:
    comparison = compare_runs(load_run(runs["a"]), load_run(runs["b"]))
    shm = change_of(comparison, "shm")
    assert shm.cell == CELL and shm.n_a == shm.n_b == 6
    assert shm.ratio == pytest.approx(0.7, abs=0.03)
    assert shm.significant and shm.p_value < 0.01 and shm.verdict == "worse"
    assert shm.worse_pct == pytest.approx(30, abs=3)
    pipe = change_of(comparison, "pipe")  # 1% planted, inside the 2% noise floor
    assert abs(pipe.change) < 0.03 and not pipe.significant and pipe.verdict == "same"
    assert [c.cell[0] for c in regressions(comparison, "batches_per_s", 10)] == ["shm"]
    assert regressions(comparison, "batches_per_s", 40) == []
    # MB/s moves with batches/s; memory did not move at all
    assert change_of(comparison, "shm", "mb_per_s").significant
    assert not change_of(comparison, "shm", "pss_peak_mb").significant


def test_direction_is_per_metric() -> None:
    def change(metric: str, ratio: float) -> CellChange:
        return CellChange(CELL, metric, 6, 6, 100.0, 100.0 * ratio, ratio, 0.002, True)

    assert change("batches_per_s", 0.7).worse_pct == pytest.approx(30)  # higher is better
    assert change("pss_peak_mb", 1.3).worse_pct == pytest.approx(30)  # lower is better
    assert change("wait_ms_p95", 0.7).verdict == "better"
    assert change("startup_s", 1.3).verdict == "worse"


def test_too_few_samples_are_called_out() -> None:
    assert min_p_value(3, 3) == pytest.approx(0.1)  # 3 + 3 epochs can never reach p < 0.05
    assert min_p_value(6, 6) == pytest.approx(2 / 924)


def test_table_names_cells_only_in_one_run(runs: dict[str, Path]) -> None:
    comparison = compare_runs(load_run(runs["a"]), load_run(runs["more"]))
    assert [cell[0] for cell in comparison.only_b] == ["torch"] and comparison.only_a == ()
    lines = format_comparison(comparison, "batches_per_s")
    assert "only in B (1): torch" in lines
    header = next(line for line in lines if line.startswith("cell"))
    assert all(word in header for word in ("median A", "median B", "B/A", "p", "verdict"))


def test_fail_gate_exit_codes(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    a, b, same = str(runs["a"]), str(runs["b"]), str(runs["same"])
    assert main(["compare", a, b]) == 0  # no gate: a report, not a verdict
    out = capsys.readouterr().out
    shm_line = next(line for line in out.splitlines() if line.startswith("shm"))
    assert "worse *" in shm_line and re.search(r" -(2[6-9]|3[0-4])\.\d%", shm_line)  # about -30%
    assert main(["compare", a, b, "--fail-if-regressed", "10"]) == 1
    assert "FAIL: batches_per_s got significantly worse by more than 10%" in capsys.readouterr().out
    assert main(["compare", a, b, "--fail-if-regressed", "40"]) == 0
    assert main(["compare", a, same, "--fail-if-regressed", "5"]) == 0
    assert main(["compare", b, a, "--fail-if-regressed", "10"]) == 0  # B faster than A: an improvement
    assert main(["compare", a, b, "--metric", "pss_peak_mb", "--fail-if-regressed", "5"]) == 0
    capsys.readouterr()
    assert main(["compare", a, b, "--metric", "no_such_metric"]) == 2
    assert "is not one of" in capsys.readouterr().err


def test_gate_without_common_cells_is_an_error(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_results(tmp_path / "other", strategies=("torch",), workers=(1,), faults=False, summary=False)
    assert main(["compare", str(runs["a"]), str(other), "--fail-if-regressed", "10"]) == 2
    assert "nothing to gate on" in capsys.readouterr().err


def test_one_sample_against_one_is_inconclusive_not_same() -> None:
    """At n = 1 vs 1 the test's p is 1 whatever the change: -55% is not "same", it is undecided."""
    one = CellChange(CELL, "batches_per_s", 1, 1, 100.0, 44.5, 0.445, 1.0, False)
    assert one.verdict == "inconclusive (n=1 vs 1; needs >= 6 each)"
    five = CellChange(CELL, "batches_per_s", 6, 5, 100.0, 44.5, 0.445, 0.01, False)
    assert five.verdict.startswith("inconclusive (n=6 vs 5")
    six = CellChange(CELL, "batches_per_s", 6, 6, 100.0, 99.0, 0.99, 0.9, False)
    assert six.verdict == "same"
