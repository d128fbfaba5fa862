"""ipcbench regimes: the regime map from several hand-made results folders (tests/report_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_fixtures import STAGE_MS, write_regime_results

from harness.cli import main
from harness.errors import IpcbenchError
from harness.report.regimes import build_regime_map, load_regime_runs, write_regimes

BASE_COMPUTE = STAGE_MS["baseline"]["compute"]  # ms per batch at cost_factor 1
IMAGES_PER_BATCH = 8 / 40  # the fixture: 8 images listed per window of 40 batches


def table(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, [c.strip() for c in line.strip("|").split("|")], strict=True)) for line in lines[2:]]


@pytest.fixture(scope="module")
def regimes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("regimes")
    plain = write_regime_results(root / "plain", dataset="real", compression="none")
    # zlib: three times the per-image work; the process strategies lose more than threads, which win here.
    zlib = write_regime_results(
        root / "zlib",
        dataset="real-zlib",
        compression="zlib",
        cost_factor=3.0,
        factors={"baseline": 0.4, "pipe": 0.5, "queue": 0.6, "shm": 0.5, "torch": 0.55, "threads": 3.2},
        seed=1,
    )
    zstd = write_regime_results(root / "zstd", dataset="real-zstd", cost_factor=1.8, seed=2)
    return [zlib, plain, zstd]


def test_map_and_table_are_written_with_each_regime_by_cost(regimes: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "map"
    assert main(["regimes", *map(str, regimes), "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out / "regime-map.png"), str(out / "regimes.md")]
    assert (out / "regime-map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "regimes.md").read_text()
    assert "![Regime map](regime-map.png)" in text
    rows = table(text)
    # Names: the dataset's, with its compression where env.json records it and the name does not say it.
    assert [row["regime"] for row in rows] == ["real, uncompressed", "real-zstd", "real-zlib"]
    costs = [float(row["per-image cost (ms)"].split(" ")[0]) for row in rows]
    assert costs == pytest.approx([BASE_COMPUTE / IMAGES_PER_BATCH * f for f in (1.0, 1.8, 3.0)], rel=0.01)
    assert [row["winner"] for row in rows] == ["**shm**", "**shm**", "**threads**"]
    assert {"baseline (no workers)", "pipe", "queue", "shm", "torch", "threads", "best / baseline"} <= set(rows[0])


def test_values_are_the_runs_medians_at_the_largest_common_worker_count(regimes: list[Path]) -> None:
    regime_map = build_regime_map(load_regime_runs(regimes))
    assert regime_map.workers == 2 and regime_map.measure.kind == "image"
    for regime in regime_map.regimes:
        summary = regime.run.summary
        shm = summary[(summary["strategy"] == "shm") & (summary["workers"] == 2)]
        assert regime.rates.loc["shm", "median"] == pytest.approx(float(shm["batches_per_s_median"].iloc[0]))
        best = regime.rates["median"].max()
        assert regime.winner == regime.rates["median"].idxmax()
        assert regime.best_over_baseline == pytest.approx(best / regime.rates.loc["baseline", "median"])
    at_one = build_regime_map(load_regime_runs(regimes), workers=1)
    assert at_one.workers == 1
    assert at_one.regimes[0].rates.loc["shm", "median"] < regime_map.regimes[0].rates.loc["shm", "median"]


def test_without_image_counts_the_cost_is_per_batch_and_says_so(tmp_path: Path) -> None:
    a = write_regime_results(tmp_path / "a", dataset="real", images_per_epoch=None)
    b = write_regime_results(tmp_path / "b", dataset="real-zstd", cost_factor=2.0)
    regime_map = build_regime_map(load_regime_runs([a, b]))
    assert regime_map.measure.kind == "batch"
    assert "per batch of 32 tiles" in regime_map.measure.axis
    assert [r.cost for r in regime_map.regimes] == pytest.approx([BASE_COMPUTE, 2 * BASE_COMPUTE])


def test_fewer_than_two_runs(regimes: list[Path], tmp_path: Path, capsys) -> None:
    assert main(["regimes", str(regimes[0]), "--out", str(tmp_path / "out")]) == 2
    assert "at least two results folders" in capsys.readouterr().err
    with pytest.raises(IpcbenchError, match="at least two"):
        write_regimes([regimes[0]], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["empty", "missing", "file"])
def test_a_folder_that_is_not_a_results_folder(regimes: list[Path], tmp_path: Path, kind: str, capsys) -> None:
    other = tmp_path / "other"
    if kind == "empty":
        other.mkdir()
    elif kind == "file":
        other.write_text("not a folder")
    out = tmp_path / "out"
    assert main(["regimes", str(regimes[0]), str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{other} is not a results folder" in err
    assert not out.exists()


def test_runs_with_no_common_worker_count(tmp_path: Path) -> None:
    one = write_regime_results(tmp_path / "one", dataset="real", workers=(1,))
    two = write_regime_results(tmp_path / "two", dataset="real-zlib", workers=(2,))
    with pytest.raises(IpcbenchError, match="no worker count in common") as caught:
        write_regimes([one, two], tmp_path / "out")
    assert f"{one}: 1" in str(caught.value) and f"{two}: 2" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_a_worker_count_not_every_run_measured(regimes: list[Path], tmp_path: Path) -> None:
    with pytest.raises(IpcbenchError, match="--workers 4 was not measured by every run"):
        write_regimes(regimes, tmp_path / "out", workers=4)


def test_a_run_without_a_baseline_cell(regimes: list[Path], tmp_path: Path) -> None:
    without = write_regime_results(tmp_path / "nobase", dataset="real-lzw", strategies=("pipe", "shm"))
    with pytest.raises(IpcbenchError, match="no baseline cell") as caught:
        write_regimes([regimes[0], without], tmp_path / "out")
    assert str(without) in str(caught.value)
    assert not (tmp_path / "out").exists()
