"""The report's tables, cell by cell: the numbers' format, each column's statistic and unit, the Markdown.

``test_report`` checks whole reports built from samples; these tests check the table
code on summaries written by hand, where each expected cell can be read off the input.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.report.document import Bullets, Document, Heading, Image, Paragraph, Table
from harness.report.markdown import front_matter_lines, render_markdown, table_lines
from harness.report.tables import COUNTERS, SUMMARY_TABLES, fmt_number, median_cell, shown, summary_tables


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1156.7, "1,157"),
        (100.0, "100"),  # from 100 up: no decimals
        (99.94, "99.9"),
        (10.0, "10.0"),  # from 10 up: one decimal
        (9.994, "9.99"),
        (1.0, "1.00"),
        (0.25, "0.25"),
        (0.1, "0.10"),  # from 0.1 up: two decimals
        (0.0999, "0.1"),  # below 0.1: three decimals, trailing zeros dropped
        (0.0123, "0.012"),
        (0.01, "0.01"),
        (0.0099, "<0.01"),
        (0.0, "0"),
        (-0.004, ">-0.01"),
        (-0.5, "-0.50"),
        (-150.0, "-150"),
        (-12.34, "-12.3"),
        (float("nan"), "–"),
        (None, "–"),
    ],
)
def test_numbers_have_three_significant_figures_at_every_magnitude(value: float | None, text: str) -> None:
    assert fmt_number(value) == text


def test_a_cell_is_the_median_and_iqr_scaled_to_the_columns_unit() -> None:
    row = pd.Series({"startup_s_median": 0.0123, "startup_s_iqr": 0.004, "startup_s_q25": 0.011})
    assert median_cell(row, "startup_s", 1000.0) == "12.3 [4.00]"
    assert median_cell(row, "startup_s") == "0.012 [<0.01]"
    assert median_cell(pd.Series({"x_median": 2.5}), "x") == "2.50"  # no IQR: no brackets
    assert median_cell(pd.Series({"x_median": 2.5, "x_iqr": math.nan}), "x", 2.0) == "5.00"
    assert median_cell(pd.Series({"x_median": math.nan, "x_iqr": 1.0}), "x") == "–"
    assert median_cell(pd.Series({"y_median": 1.0}), "x") == "–"


def test_every_column_in_milliseconds_scales_seconds_and_no_other_does() -> None:
    for _, columns in SUMMARY_TABLES:
        for metric, label, scale in columns:
            in_ms = "(ms)" in label or "ms/" in label
            from_seconds = metric.endswith("_s") or metric.endswith("_s_per_batch")
            assert scale == (1000.0 if in_ms and from_seconds else 1.0), (metric, label, scale)


def _summary(**columns) -> pd.DataFrame:
    return pd.DataFrame({"strategy": ["baseline", "shm"], "workers": [1.0, 2.0], "n": [6, 5], **columns})


def test_a_metric_gets_a_column_only_where_it_was_measured_and_means_something() -> None:
    summary = _summary(
        batches_per_s_median=[10.0, 20.0],
        mb_per_s_median=[math.nan, math.nan],
        consumer_utilization_median=[0.5, 0.6],
        step_ms=[0.0, 0.0],
        seconds_median=[1.0, 2.0],
    )
    assert shown(summary, "batches_per_s")
    assert not shown(summary, "mb_per_s")  # never measured
    assert not shown(summary, "wait_ms_p50")  # not in the summary
    assert not shown(summary, "consumer_utilization")  # 0 by definition without a training step
    assert shown(summary.assign(step_ms=[0.0, 0.5]), "consumer_utilization")  # any step, however short
    assert not shown(summary, "seconds")  # throughput is known
    assert shown(summary.drop(columns="batches_per_s_median"), "seconds")


def test_summary_tables_show_each_cells_values_in_its_row_under_its_label() -> None:
    summary = _summary(
        batches_per_s_median=[10.0, 25.5],
        batches_per_s_iqr=[0.5, 1.25],
        time_to_first_batch_s_median=[0.2, 0.35],
        time_to_first_batch_s_iqr=[0.01, math.nan],
        verdict=["ok", "unstable"],
        startup_s_median=[0.05, 1.5],
        startup_s_iqr=[0.002, 0.25],
        leaked_shm_max=[0.0, 3.0],
        orphans_after_exit_max=[math.nan, 1.0],
    )
    throughput, memory = summary_tables(summary, ["workers"])
    assert throughput == (
        "Throughput and latency",
        ("strategy", "workers", "n", "batches/s", "first batch (ms)", "verdict"),
        (
            ("baseline", "1", "6", "10.0 [0.50]", "200 [10.0]", "ok"),
            ("shm", "2", "5", "25.5 [1.25]", "350", "**unstable**"),
        ),
        (False, True, True, True, True, False),
    )
    assert memory == (
        "Memory, CPU, start-up and shutdown",
        ("strategy", "workers", "n", "startup (ms)", "leaked shm", "orphans after exit"),
        (
            ("baseline", "1", "6", "50.0 [2.00]", "0", "–"),
            ("shm", "2", "5", "1,500 [250]", "3", "1"),
        ),
        (False, True, True, True, True, True),
    )


def test_a_table_without_a_column_to_show_is_left_out_and_counters_follow_their_order() -> None:
    summary = _summary(pss_peak_mb_median=[100.0, 120.0], **{c: [0.0, 1.0] for c, _ in reversed(COUNTERS)})
    (memory,) = summary_tables(summary, [])
    title, header, rows, numeric = memory
    assert title.startswith("Memory")
    assert header == ("strategy", "n", "PSS (MB)", *(label for _, label in COUNTERS))
    assert rows == (("baseline", "6", "100", "0", "0", "0", "0"), ("shm", "5", "120", "1", "1", "1", "1"))
    assert numeric == (False, True, True, True, True, True, True)


def test_markdown_tables_escape_pipes_and_line_breaks_and_align_numbers_right() -> None:
    table = Table(("name | kind", "value"), (("a|b", "1\n2"), ("c", "3")), (False, True))
    assert table_lines(table) == [
        "| name \\| kind | value |",
        "|:---|---:|",
        "| a\\|b | 1 2 |",
        "| c | 3 |",
    ]


def test_front_matter_is_yaml_of_json_strings_lists_and_integers() -> None:
    lines = front_matter_lines({"title": 'IPC: "fast"', "tags": ["a", 2], "n": 3, "date": 2.5, "draft": True})
    # An integer stays a number (Hugo sorts pages by weight); anything else is a string.
    assert lines == [
        "---",
        'title: "IPC: \\"fast\\""',
        'tags: ["a", "2"]',
        "n: 3",
        'date: "2.5"',
        'draft: "True"',
        "---",
    ]


def test_every_block_kind_is_spelled_in_markdown() -> None:
    document = Document(
        {"title": "t"},
        (
            Heading(2, "Summary"),
            Paragraph("Some *text*."),
            Bullets(("one", "two")),
            Table(("a",), (("1",),), (True,)),
            Image("plots/x.png", "alt text", "**Figure 1.** A caption."),
        ),
    )
    assert render_markdown(document) == [
        "---",
        'title: "t"',
        "---",
        "",
        "## Summary",
        "",
        "Some *text*.",
        "",
        "- one",
        "- two",
        "",
        "| a |",
        "|---:|",
        "| 1 |",
        "",
        "![alt text](plots/x.png)",
        "",
        "**Figure 1.** A caption.",
        "",
    ]
