"""The one look (harness.report.style): strategies told apart in colour and in greyscale; lines named at their ends."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from report_fixtures import write_results

from harness.report import style
from harness.report.linecharts import LINE_LABEL_GID, spread_labels, throughput
from harness.results import load_run

# Two colours closer than this in CIE L* (0..100) print as about the same grey.
GREYSCALE_MIN_DELTA_L = 10.0


def greyscale_clashes(colours: dict[str, str], markers: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs of strategies that greyscale print cannot tell apart: about the same grey and the same marker."""
    return [
        (a, b)
        for a, b in itertools.combinations(sorted(colours), 2)
        if abs(style.lightness(colours[a]) - style.lightness(colours[b])) < GREYSCALE_MIN_DELTA_L
        and markers[a] == markers[b]
    ]


def test_every_strategy_has_its_own_colour_and_marker() -> None:
    assert set(style.STRATEGY_COLOURS) == set(style.STRATEGY_MARKERS)
    looks = [(style.STRATEGY_COLOURS[s].upper(), style.STRATEGY_MARKERS[s]) for s in style.STRATEGY_COLOURS]
    assert len(set(looks)) == len(looks)


def test_no_two_strategies_look_alike_in_greyscale() -> None:
    assert greyscale_clashes(style.STRATEGY_COLOURS, style.STRATEGY_MARKERS) == []


def test_the_greyscale_check_finds_a_clash() -> None:
    """The check above can fail: two near greys with one marker are caught, a different marker clears them."""
    colours = {"a": "#117733", "b": "#AA4499", "c": "#DDCC77"}  # shm's green and threads' purple: L* 44 and 46
    assert style.lightness("#000000") == 0 and style.lightness("#FFFFFF") == pytest.approx(100)
    assert greyscale_clashes(colours, {"a": "D", "b": "D", "c": "D"}) == [("a", "b")]
    assert greyscale_clashes(colours, {"a": "D", "b": "P", "c": "D"}) == []


def test_text_in_a_light_strategy_colour_is_darkened_to_read() -> None:
    for strategy in style.STRATEGY_COLOURS:
        assert style.lightness(style.text_colour(strategy)) <= style.TEXT_MAX_LIGHTNESS
    assert style.text_colour("shm") == style.colour("shm")  # dark enough already: as it is


def test_spread_labels_keeps_the_order_and_the_gap_and_moves_only_what_overlaps() -> None:
    targets = [0.50, 0.52, 0.10, 0.51, 0.90]
    placed = spread_labels(targets, 0.05)
    by_target = sorted(range(len(targets)), key=lambda i: targets[i])
    ordered = [placed[i] for i in by_target]
    assert all(b - a >= 0.05 - 1e-9 for a, b in itertools.pairwise(ordered))
    assert placed[2] == 0.10 and placed[4] == 0.90  # alone: where they were
    assert sum(placed[i] for i in (0, 1, 3)) / 3 == pytest.approx(0.51)  # the crowd stays centred on its targets
    assert spread_labels([0.99, 0.98], 0.05, high=1.0) == pytest.approx([1.0, 0.95])  # kept inside


def test_throughput_names_each_line_at_its_end_instead_of_a_legend(tmp_path: Path) -> None:
    run_dir = write_results(
        tmp_path / "run", strategies=("baseline", "pipe", "queue", "shm"), workers=(1, 2), repeats=2, epochs=3
    )
    figure = throughput(load_run(run_dir))
    ax = figure.axes[0]
    names = [t for t in ax.texts if t.get_gid() == LINE_LABEL_GID]
    assert sorted(t.get_text() for t in names) == ["baseline (no workers)", "pipe", "queue", "shm"]
    assert not figure.legends
    heights = sorted(t.xy[1] for t in names)  # in the axes' height, 0..1
    assert all(b - a > 0.04 for a, b in itertools.pairwise(heights))  # a line of 8.5 pt text apart, at least
    for text in names:
        strategy = text.get_text().split(" ")[0]
        assert text.get_color() == style.text_colour(strategy)
    assert ax.get_xlim()[1] > 2.5  # widened for the names, right of the last points
