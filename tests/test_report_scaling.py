"""The scaling figure and section: how throughput, memory and the first batch grow with batch size and workers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from report_fixtures import GAIN, batch_bytes, write_results

from harness.report import build_report
from harness.report.scaling import growth_exponent, growth_table, growth_words, has_scaling, scaling_axes
from harness.report.tables import fmt_number
from harness.results import load_run

WORKERS = (1, 2, 4)
TRANSFER_SIZES = (8, 16, 64)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = write_results(
        tmp_path_factory.mktemp("swept") / "run", workers=WORKERS, transfer_sizes=TRANSFER_SIZES, faults=False
    )
    build_report(run)
    return run


def axis_named(run: Path, name: str, workload: str):
    found = [a for a in scaling_axes(load_run(run)) if a.name == name and a.cells["workload"].eq(workload).all()]
    assert len(found) == 1, [a.title for a in scaling_axes(load_run(run))]
    return found[0]


def test_growth_exponent_recovers_a_power_law_and_refuses_too_little() -> None:
    x = [1, 2, 4, 8]
    assert growth_exponent(x, [5 * v**0.5 for v in x]) == pytest.approx(0.5)
    assert growth_exponent(x, [3 / v for v in x]) == pytest.approx(-1.0)
    assert growth_exponent([2], [3]) is None
    assert growth_exponent([2, 2], [3, 4]) is None  # no spread on the axis
    assert growth_exponent([1, 2, 4], [1, math.nan, 0]) is None  # one usable point
    assert growth_words(0.05).startswith("flat") and growth_words(-0.98).startswith("inversely proportional")
    assert growth_words(1.1).startswith("proportional") and growth_words(0.5) == "as x^0.50"


def test_worker_axis_finds_each_strategys_gain_per_doubling(swept: Path) -> None:
    axis = axis_named(swept, "workers", "full")
    assert sorted(axis.cells["x"].unique()) == list(WORKERS)
    assert "baseline" not in set(axis.cells["strategy"])  # it has no workers to count
    growth = growth_table(axis).set_index("strategy")["batches/s"]
    for strategy, exponent in growth.items():
        # The fixture's throughput is RATE * GAIN ** log2(workers): a power law with exponent log2(GAIN).
        assert exponent == pytest.approx(math.log2(GAIN[strategy]), abs=0.05), strategy


def test_batch_axis_is_in_megabytes_and_throughput_falls_inversely(swept: Path) -> None:
    axis = axis_named(swept, "batch", "transfer")
    # A whole batch's MB from its tiles, tile size, dtype and the images' channels (env.json), not from MB/s.
    assert sorted(axis.cells["x"].unique()) == pytest.approx([batch_bytes(s) / 1e6 for s in TRANSFER_SIZES])
    assert set(axis.cells["workers"][axis.cells["strategy"] != "baseline"]) == {2}  # the most workers <= cores
    growth = growth_table(axis).set_index("strategy")
    for strategy, row in growth.iterrows():
        assert row["batches/s"] == pytest.approx(-1.0, abs=0.05), strategy  # TRANSFER_RATE / batch size
        assert abs(row["PSS peak, MB"]) < 0.05, strategy  # the fixture's memory does not depend on it


def test_report_has_the_figure_and_a_section_per_axis(swept: Path) -> None:
    assert (swept / "plots" / "scaling.png").is_file()
    text = (swept / "report.md").read_text()
    section = text[text.index("### How cost grows") : text.index("\n### ", text.index("### How cost grows") + 1)]
    assert section.count("**Along the ") == len(scaling_axes(load_run(swept)))
    assert "oversubscribe" in section  # 4 workers on the fixture's 2 cores
    shm_full = axis_named(swept, "workers", "full").cells.set_index(["strategy", "x"])["batches_per_s_median"]
    row = next(line for line in section.splitlines() if line.startswith("| shm |"))
    assert row == "| shm | " + " | ".join(fmt_number(shm_full[("shm", w)]) for w in WORKERS) + " |"


def test_a_run_without_three_values_on_any_axis_has_no_scaling(tmp_path: Path) -> None:
    run = write_results(tmp_path / "run", workers=(1, 2), faults=False)
    assert not has_scaling(load_run(run))
    from harness.report.cells import first_dataset

    loaded = load_run(run)
    own, name = first_dataset(loaded)
    assert own is loaded and name is None  # one dataset: the run as it is
    build_report(run)
    assert not (run / "plots" / "scaling.png").exists()
    assert "How cost grows" not in (run / "report.md").read_text()


def test_image_size_is_the_mean_megapixels_of_each_datasets_images() -> None:
    from harness.report.scaling import image_megapixels

    mixed = {
        "name": "mixed",
        "shape": [2, 100, 100],
        "sizes": [{"shape": [2, 100, 100], "images": 3}, {"shape": [2, 200, 300], "images": 1}],
    }
    plain = {"name": "plain", "shape": [1, 1000, 2000]}  # an older env.json: no sizes
    assert image_megapixels({"dataset": mixed, "datasets": [mixed, plain]}) == pytest.approx(
        {"mixed": (3 * 100 * 100 + 200 * 300) / 4 / 1e6, "plain": 2.0}
    )
    assert image_megapixels({"dataset": plain}) == pytest.approx({"plain": 2.0})  # a run of one dataset


def test_a_run_over_several_datasets_bounds_each_variant_by_its_own_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from harness.report import bounds
    from harness.report.provenance import dataset_record

    small, large = {"name": "small", "bytes": 100e6}, {"name": "large", "bytes": 400e6}
    env = {"dataset": small, "datasets": [small, large], "disk": {"read_mb_per_s": 200.0}}
    assert dataset_record(env, "large") is large and dataset_record(env, None) is small
    assert dataset_record({"dataset": large}, "elsewhere") is large  # a run of one dataset: its own
    monkeypatch.setattr(bounds, "batches_per_epoch", lambda run, variant: 10.0)
    run = SimpleNamespace(env=env)
    # 200 MB/s over (MB an epoch reads / batches an epoch): 20 and 5 batches/s.
    assert bounds.disk_bound(run, {"dataset": "small"}) == pytest.approx(20.0)
    assert bounds.disk_bound(run, {"dataset": "large"}) == pytest.approx(5.0)
