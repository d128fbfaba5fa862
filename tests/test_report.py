"""ipcbench report: from a synthetic results folder (tests/report_fixtures.py) to report.md, plots, html."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer
from report_fixtures import STRATEGIES, copies_per_s, write_results

from harness.cli import main
from harness.errors import IpcbenchError
from harness.report import build_report, style
from harness.report.barcharts import cpu_per_batch, lifecycle, memory, stage_cells, stages
from harness.report.document import escape
from harness.report.goals import below_baseline_explanations, performance_goals
from harness.report.goals import copies_per_s as copies_per_s_of_env
from harness.report.html import inline
from harness.report.linecharts import LINE_LABEL_GID, new_image_share, throughput, wait_ecdf
from harness.results import load_benchmark_json, load_run, stage_medians, summarize, write_summary

ALL_PLOTS = {"throughput", "wait_ecdf", "memory", "memory_trace", "lifecycle", "cpu_per_batch", "faults"}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def front_matter(text: str) -> dict[str, object]:
    lines = text.splitlines()
    assert lines[0] == "---", "report.md must open with Hugo front matter"
    end = lines.index("---", 1)
    # The writer emits YAML scalars and lists in JSON syntax, which YAML reads unchanged.
    return {key: json.loads(value) for key, value in (line.split(": ", 1) for line in lines[1:end])}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = write_results(tmp_path_factory.mktemp("full") / "run", noisy={"threads": 0.15})
    assert build_report(run, fmt="html") == run / "report.html"
    return run


def test_every_plot_is_written_at_blog_width(full_run: Path) -> None:
    assert {p.stem for p in (full_run / "plots").glob("*.png")} == ALL_PLOTS
    for name in ALL_PLOTS:
        width, height = png_size(full_run / "plots" / f"{name}.png")
        assert 1000 <= width <= 1400 and height > 300, (name, width, height)  # 8 in at 150 dpi, shown ~800 px


def test_report_md_has_front_matter_every_strategy_and_captions(full_run: Path) -> None:
    text = (full_run / "report.md").read_text()
    meta = front_matter(text)
    assert meta["series"] == ["Live-Dead Assay"]
    assert set(STRATEGIES) <= set(meta["tags"])
    assert meta["date"].startswith("2026-01-15") and meta["title"] and meta["description"]
    for strategy in STRATEGIES:
        assert f"| {strategy} |" in text, f"summary table lacks {strategy}"
    for name in ALL_PLOTS:
        assert f"](plots/{name}.png)" in text
    captions = [line for line in text.splitlines() if line.startswith("**Figure ")]
    assert len(captions) == len(ALL_PLOTS)
    assert all("AMD EPYC 7B13" in c and "2 logical / 1 physical cores" in c for c in captions)
    assert all(
        "synth" in c and "batch 32" in c and "n = 6 measured epochs per cell" in c
        for c in captions
        if "Shutdown cleanliness" not in c
    )
    for section in ("## Provenance", "## Summary", "## Figures", "## Stability", "## Shutdown cleanliness"):
        assert section in text
    assert "9.9 GB/s" in text and "`6ee9069a1b2c` (dirty" in text and "before 0.21 / 0.35 / 0.40" in text


def test_unstable_cells_and_tiny_values_are_flagged(full_run: Path) -> None:
    text = (full_run / "report.md").read_text()
    table_rows = [line for line in text.splitlines() if line.startswith("| threads |") and "unstable" in line]
    assert len(table_rows) == 2  # threads at 1 and 2 workers, planted cv 15%
    assert "**Unstable:** threads, 1 worker" in text
    assert "shm | 2 | 6 |" in text and "**unstable**" not in next(
        line for line in text.splitlines() if line.startswith("| shm | 2 |")
    )
    assert "startup (s): median under 1 ms in 1 of 11 cells: baseline (1 worker)" in text
    assert "summary.csv agrees" in text and "Checksums: every strategy and repeat" in text


def test_faults_matrix_lists_reasons(full_run: Path) -> None:
    text = (full_run / "report.md").read_text()
    assert "30 of 33 fault runs ended clean" in text
    assert "**not clean**: 1 worker process left 5 s after the main process died" in text
    assert r"(psm\_\*, ipcbench\_\*)" not in text and r"(psm_\*, ipcbench_\*)" in text  # escaped, not emphasis


def test_text_from_results_files_cannot_become_markup() -> None:
    reason = "leaked psm_* and ipcbench_* segments [see `ls`]"
    assert inline(f"**not clean**: {escape(reason)}") == (
        "<strong>not clean</strong>: leaked psm_* and ipcbench_* segments [see `ls`]"
    )
    assert inline("*unstable* `a*b*` <b>") == "<em>unstable</em> <code>a*b*</code> &lt;b&gt;"


def test_html_is_standalone_with_embedded_images(full_run: Path) -> None:
    page = (full_run / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count('src="data:image/png;base64,') == len(ALL_PLOTS)
    assert 'src="plots/' not in page
    assert "<strong>Figure 1. Throughput.</strong>" in page
    for strategy in STRATEGIES:
        assert f"<td>{strategy}</td>" in page


def test_faults_figure_only_with_faults_jsonl_and_failed_report_keeps_old_one(tmp_path: Path) -> None:
    run = write_results(
        tmp_path / "run", strategies=("baseline", "shm"), workers=(2,), repeats=1, epochs=3, faults=False
    )
    (run / "plots").mkdir()
    (run / "plots" / "faults.png").write_bytes(b"left by an older report, when faults.jsonl was there")
    assert main(["report", str(run)]) == 0
    assert {p.stem for p in (run / "plots").glob("*.png")} == ALL_PLOTS - {"faults"}  # a stale matrix is removed
    text = (run / "report.md").read_text()
    assert "Shutdown cleanliness" not in text and "faults.png" not in text
    assert "Fewer than 6 measured windows in 2 of 2 cells" in text

    before = (run / "report.md").read_bytes()
    lines = (run / "samples.jsonl").read_text().splitlines()
    lines[1] = lines[1][:40]  # a damaged line in the middle: no report from a corrupt run
    (run / "samples.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(IpcbenchError, match=r"samples\.jsonl:2: not valid JSON"):
        build_report(run)
    assert (run / "report.md").read_bytes() == before
    assert not [p for p in run.rglob("*.tmp")]


def test_benchmark_json_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    rounds = {"pipe": 0.5 + 0.01 * rng.standard_normal(6), "shm": 0.25 + 0.01 * rng.standard_normal(6)}
    document = {
        "machine_info": {
            "node": "ci",
            "machine": "x86_64",
            "system": "Linux",
            "release": "6.1",
            "python_version": "3.11.7",
            "cpu": {"brand_raw": "AMD EPYC", "count": 2},
        },
        "commit_info": {"id": "abc123def456", "dirty": False},
        "datetime": "2026-02-01T09:00:00+00:00",
        "version": "5.3.1",
        "benchmarks": [
            {
                "group": name,
                "name": f"test_epoch[{name}-2]",
                "params": {"strategy": name, "workers": 2},
                "stats": {"data": list(times), "median": float(np.median(times)), "rounds": 6},
                "extra_info": {"batches": 20, "bytes": 20 * 10_485_760, "pss_peak_mb": 300.0 + i, "leaked_shm": 0},
            }
            for i, (name, times) in enumerate(rounds.items())
        ],
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(document))
    run = load_benchmark_json(path)
    shm = run.summary[run.summary["strategy"] == "shm"].iloc[0]
    assert shm["n"] == 6
    assert shm["batches_per_s_median"] == pytest.approx(np.median(20 / rounds["shm"]))
    out = tmp_path / "out"
    assert main(["report", "--benchmark-json", str(path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    assert {p.stem for p in (out / "plots").glob("*.png")} == {"throughput", "memory"}
    text = (out / "report.md").read_text()
    assert front_matter(text)["series"] == ["Live-Dead Assay"]
    assert "| pipe |" in text and "| shm |" in text and "n = 6 timed rounds per cell" in text


def test_summary_is_recomputed_from_raw_samples(tmp_path: Path) -> None:
    rows = []
    for repeat, startup_s in ((0, 1.0), (1, 3.0)):
        for epoch, rate in enumerate((999.0, 10.0, 20.0, 30.0)):  # epoch 0: warm-up, never aggregated
            rows.append(
                {
                    "strategy": "pipe",
                    "workers": 2,
                    "prefetch": 2,
                    "start_method": "fork",
                    "batch_size": 8,
                    "tile": 64,
                    "dataset": "d",
                    "workload": "full",
                    "step_ms": 0.0,
                    "repeat": repeat,
                    "epoch": epoch,
                    "warmup": epoch == 0,
                    "batches_per_s": rate + repeat,
                    "startup_s": startup_s,
                }
            )
    summary = summarize(pd.DataFrame(rows)).iloc[0]
    rates = np.array([10, 20, 30, 11, 21, 31], float)
    assert summary["n"] == 6
    assert summary["batches_per_s_median"] == pytest.approx(np.median(rates))
    assert summary["batches_per_s_iqr"] == pytest.approx(np.percentile(rates, 75) - np.percentile(rates, 25))
    assert summary["batches_per_s_cv"] == pytest.approx(rates.std(ddof=1) / rates.mean())
    assert bool(summary["unstable"])
    # startup is one value per process: the quartiles of [1, 3], not of [1, 1, 1, 3, 3, 3]
    assert summary["startup_s_q25"] == pytest.approx(1.5)

    run_dir = write_results(tmp_path / "run", strategies=("pipe",), workers=(1,), faults=False)
    stored = pd.read_csv(run_dir / "summary.csv")
    stored.loc[0, "batches_per_s_median"] *= 2  # a summary.csv that lies is caught, and not used
    stored.to_csv(run_dir / "summary.csv", index=False)
    run = load_run(run_dir)
    assert any("batches_per_s_median differs in 1 cell" in note for note in run.notes)
    assert run.summary.loc[0, "batches_per_s_median"] == pytest.approx(stored.loc[0, "batches_per_s_median"] / 2)


def test_truncated_last_line_is_dropped_with_a_note(tmp_path: Path) -> None:
    run_dir = write_results(tmp_path / "run", strategies=("pipe",), workers=(1,), faults=False, summary=False)
    with (run_dir / "samples.jsonl").open("a") as file:
        file.write('{"schema_version": 1, "strategy": "pi')
    run = load_run(run_dir)
    assert len(run.samples) == 8 and "dropped a truncated last line" in run.notes[0]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        # (faults.jsonl alone would be a faults-only folder, which is fine)
        (lambda d: [(d / name).unlink() for name in ("samples.jsonl", "faults.jsonl")], "samples.jsonl is missing"),
        (lambda d: (d / "env.json").write_text('{"schema_version": 2}'), "schema_version 2 is not supported"),
        (lambda d: (d / "faults.jsonl").write_text('{"scenario": "x"}\n'), "lack field"),
    ],
)
def test_bad_results_folder_is_a_clear_cli_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage, message: str
) -> None:
    run_dir = write_results(tmp_path / "run", strategies=("pipe",), workers=(1,), summary=False)
    damage(run_dir)
    assert main(["report", str(run_dir)]) == 2
    assert message in capsys.readouterr().err
    assert not (run_dir / "report.md").exists()


def test_report_arguments_are_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report"]) == 2
    assert "exactly one" in capsys.readouterr().err
    assert main(["report", "--benchmark-json", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Full and transfer cells (2 channels x 256 px: 16 tiles = 4 MiB, 64 = 16 MiB), stage times for two strategies."""
    run = write_results(
        tmp_path_factory.mktemp("transfer") / "run",
        strategies=("baseline", "queue", "shm", "torch"),
        workers=(2,),
        epochs=4,
        transfer_sizes=(16, 64),
        stage_strategies=("baseline", "shm"),
        faults=False,
    )
    build_report(run)
    return run


def test_transfer_cells_are_shown_as_a_fraction_of_r(transfer_run: Path) -> None:
    run = load_run(transfer_run)
    text = (transfer_run / "report.md").read_text()
    assert "### Transfer workload against the memcpy limit" in text
    shm = run.summary[(run.summary["strategy"] == "shm") & (run.summary["batch_size"] == 64)].iloc[0]
    fraction = shm["batches_per_s_median"] / copies_per_s(64)
    row = next(line for line in text.splitlines() if line.startswith("| shm | 6 | 64 | 16 |"))
    assert row.endswith(f"| {fraction:.2f} |")
    assert "| baseline | 6 | 32 |" not in text.split("### Transfer")[1].split("###")[0]  # full cells not in it


def test_stage_times_get_a_figure_and_a_table_and_untimed_strategies_are_named(transfer_run: Path) -> None:
    assert png_size(transfer_run / "plots" / "stages.png")[0] >= 1000
    text = (transfer_run / "report.md").read_text()
    section = text.split("### Where the time goes per batch")[1].split("###")[0]
    assert "summed over workers" in section and "wall time in the main process" in section
    assert "Strategies without stage timers (not in the table): queue, torch." in section
    assert "| shm | 16 | transfer | 6 | 24.0 [0] | 2.50 [0] | 1.50 [0] | 4.00 [0] | 0.46 |" in section
    assert "](plots/stages.png)" in text


def test_goals_are_ratios_of_the_runs_own_cells(transfer_run: Path) -> None:
    run = load_run(transfer_run)
    targets = {t.key: t for t in performance_goals(run)}
    summary = run.summary.set_index(["strategy", "workload", "batch_size"])["batches_per_s_median"]
    assert targets["copying_shm_per_r"].value == pytest.approx(summary["shm", "transfer", 16] / copies_per_s(16))
    assert targets["best_shm_per_torch"].value == pytest.approx(
        summary["shm", "transfer", 16] / summary["torch", "transfer", 16]
    )
    assert (
        targets["zero_copy_shm_per_r"].value is None and "shm_zerocopy missing" in targets["zero_copy_shm_per_r"].basis
    )
    assert targets["best_full_per_baseline"].value == pytest.approx(
        summary["shm", "full", 32] / summary["baseline", "full", 32]
    )
    assert targets["slowest_multiprocess_full_per_baseline"].value == pytest.approx(
        summary["queue", "full", 32] / summary["baseline", "full", 32]
    )
    # The fixture's baseline computes for 20 ms a batch: two cores doing only that make 100 batches/s.
    assert targets["best_full_per_compute_bound"].value == pytest.approx(summary["shm", "full", 32] / 100.0)
    assert "bound 100/s = 2 cores" in targets["best_full_per_compute_bound"].basis
    # ...and says how busy the cores were: the best cell's CPU per batch (all its processes) at its rate.
    best = run.summary[(run.summary["strategy"] == "shm") & (run.summary["workload"] == "full")]
    best = best[best["workers"] == 2]
    busy = summary["shm", "full", 32] * float(best["cpu_s_per_batch_median"].iloc[0]) / 2
    assert f"the 2 cores {busy:.0%} busy" in targets["best_full_per_compute_bound"].basis
    assert targets["stage_timed_share"].value == 0.5 and not targets["stage_timed_share"].met
    # With the two-core copy bound measured (env.json memcpy.together), each transfer goal is stated against it.
    assert "two-core copy bound" not in targets["copying_shm_per_r"].basis
    env = {**run.env, "memcpy": {**run.env["memcpy"], "together": {"gb_per_s": 1.7 * run.env["memcpy"]["gb_per_s"]}}}
    bound = {t.key: t for t in performance_goals(dataclasses.replace(run, env=env))}["copying_shm_per_r"]
    assert bound.value == targets["copying_shm_per_r"].value  # against R, as before
    together = 1.7 * copies_per_s(16)
    assert f"two-core copy bound {together:,.0f}/s = 1.70 R" in bound.basis
    share = summary["shm", "transfer", 16] / together
    assert f"{share:.2f} of the two-core copy bound ({together:,.0f}/s)" in bound.basis
    # With the per-image work measured side by side (env.json work), the compute goal states that bound too.
    assert "measured side by side" not in targets["best_full_per_compute_bound"].basis
    env = {**run.env, "work": {"processes": 2, "alone_ms_per_batch": 20.0, "together_ms_per_batch": 25.0}}
    side = {t.key: t for t in performance_goals(dataclasses.replace(run, env=env))}["best_full_per_compute_bound"]
    assert side.value == targets["best_full_per_compute_bound"].value  # against the baseline's stage, as before
    share = summary["shm", "full", 32] / 80.0
    assert (
        f"takes 25 ms a batch in each of 2 processes at once (20 ms alone), a bound of 80/s, {share:.2f} of it"
        in side.basis
    )
    # Below the baseline is allowed only with a measured explanation.
    slowest = targets["slowest_multiprocess_full_per_baseline"]
    assert slowest.value < 1 and slowest.met and "queue, each explained below the table" in slowest.basis
    # A bound far above the measured rate explains nothing: CPU accounts for under 85% of the bound.
    queue = run.summary["strategy"] == "queue"
    run.summary.loc[queue, "cpu_s_per_batch_median"] = run.summary.loc[queue, "cpu_s_per_batch_median"] / 2
    missed = {t.key: t for t in performance_goals(run)}["slowest_multiprocess_full_per_baseline"]
    assert missed.met is False and "not explained: queue" in missed.basis
    assert "Not explained: the bound is" in below_baseline_explanations(run)["queue"].text
    run.summary.loc[queue, "cpu_s_per_batch_median"] = float("nan")
    unexplained = {t.key: t for t in performance_goals(run)}["slowest_multiprocess_full_per_baseline"]
    assert unexplained.met is False and "not explained: queue" in unexplained.basis
    text = (transfer_run / "report.md").read_text()
    assert "### Performance goals" in text and "| copying shm / R | >= 1 |" in text


def test_benchmark_json_stage_times_and_r_reach_the_report(tmp_path: Path) -> None:
    bench = {
        "group": "shm",
        "name": "test_transfer[shm-4MiB]",
        "params": {"strategy": "shm", "size": "4MiB"},
        "stats": {"data": [0.1, 0.11, 0.12], "median": 0.11, "rounds": 3},
        "extra_info": {
            "workload": "transfer",
            "batch_size": 32,
            "batches": 10,
            "stage_ms_per_batch": {"transfer": 2.0, "wait": 0.5},
            "memcpy_gb_per_s": 6.0,
            "r_copies_per_s": 954.0,
        },
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": [bench]}))
    run = load_benchmark_json(path)
    row = run.summary.iloc[0]
    assert row["workload"] == "transfer" and row["stage_transfer_ms_per_batch_median"] == pytest.approx(2.0)
    assert copies_per_s_of_env(run.env, 32) == 954.0  # R travels in extra_info, so the report can use it


def test_every_multiprocess_strategy_below_baseline_gets_a_measured_explanation() -> None:
    from harness.report.goals import NEXT_EPOCH_EARLY, first_batch_line, worker_processes
    from harness.results import load_run

    run = load_run(Path(__file__).resolve().parents[1] / "results" / "reference-goals")
    full = run.summary[(run.summary["workload"] == "full") & (run.summary["workers"] == 2)]
    # A cell with the next epoch begun early is a strategy of its own to the goals.
    early = full["prefetch_next_epoch"] == "on"
    names = full["strategy"].where(~early, full["strategy"] + NEXT_EPOCH_EARLY)
    rates = dict(zip(names, full["batches_per_s_median"], strict=True))
    below = sorted(s for s, r in rates.items() if worker_processes(s) and r < rates["baseline"])
    lines = below_baseline_explanations(run)
    assert sorted(lines) == below
    for explanation in lines.values():
        line = explanation.text
        assert "ms of CPU per batch" in line and "it could not pass" in line, line
        # Which stages hold the extra, against the baseline's own stage times.
        assert "its stage timers put the extra per batch in " in line and " vs " in line, line
    assert first_batch_line(run).count(" s") >= sum(worker_processes(s) for s in set(full["strategy"]))


def test_a_one_repeat_run_judges_nothing(tmp_path: Path) -> None:
    """n = 2 measured windows per cell: no cell is "ok" and no goal "met"; every table says why."""
    run_dir = write_results(
        tmp_path / "run",
        strategies=("baseline", "queue", "shm", "torch"),
        workers=(2,),
        repeats=1,
        epochs=3,
        transfer_sizes=(16,),
        faults=False,
    )
    run = load_run(run_dir)
    assert set(run.summary["verdict"]) == {"too few samples (n=2 < 6)"}
    goals = performance_goals(run)
    assert [g.key for g in goals if g.met] == [] and sum(g.value is not None for g in goals) >= 4
    assert all(g.status == "not measurable at this n (n=2 < 6)" for g in goals if g.value is not None)
    build_report(run_dir)
    text = (run_dir / "report.md").read_text()
    assert "| ok |" not in text and "| met |" not in text
    assert "Of 8 cells: 0 ok, 8 with too few samples." in text


def _thin(run_dir: Path, strategy: str, workers: int, keep: int) -> None:
    """Keep only the first ``keep`` measured windows of one cell (its warm-ups stay), and rewrite summary.csv."""
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    kept, seen = [], 0
    for record in records:
        if record["strategy"] == strategy and record["workers"] == workers and not record["warmup"]:
            seen += 1
            if seen > keep:
                continue
        kept.append(record)
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    write_summary(run_dir)


def _bars_without_spread(container) -> list[bool]:
    """Per point of an errorbar() line: True where it has no error bar (an empty or NaN segment)."""
    (segments,) = [collection.get_segments() for collection in container.lines[2]]
    return [len(segment) == 0 or bool(np.isnan(np.asarray(segment, float)).any()) for segment in segments]


def test_a_quick_run_draws_no_error_bars_and_says_n_1(tmp_path: Path) -> None:
    """One measured window per cell: an IQR of 0 is no measured spread, so nothing may look like one."""
    run_dir = write_results(
        tmp_path / "run", strategies=("baseline", "pipe", "shm"), workers=(1, 2), repeats=1, epochs=2, faults=False
    )
    run = load_run(run_dir)
    assert set(run.summary["n"]) == {1}
    ax = throughput(run).axes[0]
    errorbars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbars) == 2 and all(all(_bars_without_spread(c)) for c in errorbars)  # pipe and shm, no bars
    texts = [t.get_text() for t in ax.texts if t.get_gid() != LINE_LABEL_GID]  # the notes, not the lines' names
    assert texts[0] == "no error bars: one value per cell (n=1)"
    r = copies_per_s_of_env(run.env, int(run.summary["batch_size"].iloc[0]))  # R for the run's one batch size
    assert texts[1:] == [f"memcpy limit, one core: {r:,.0f} batches/s (R)"]
    for axes in lifecycle(run).axes:
        assert not [c for c in axes.containers if isinstance(c, ErrorbarContainer)], axes.get_title()
        assert "no whiskers: one value per cell (n=1)" in [t.get_text().replace("\n", " ") for t in axes.texts]
    build_report(run_dir)
    text = (run_dir / "report.md").read_text()
    assert "No error bars for batches/s: every cell has a single value (n=1)." in text
    assert "No error bars for startup, time to first batch and shutdown: every cell has a single value (n=1)." in text


def test_a_cell_of_one_window_among_others_is_marked_n_1(tmp_path: Path) -> None:
    run_dir = write_results(
        tmp_path / "run", strategies=("baseline", "pipe", "shm"), workers=(1, 2), repeats=2, epochs=3, faults=False
    )
    _thin(run_dir, "pipe", 2, keep=1)
    run = load_run(run_dir)
    assert dict(zip(run.summary["strategy"] + run.summary["workers"].astype(str), run.summary["n"], strict=True)) == {
        "baseline1": 4,
        "pipe1": 4,
        "pipe2": 1,
        "shm1": 4,
        "shm2": 4,
    }
    ax = throughput(run).axes[0]
    bars = {c.get_label(): _bars_without_spread(c) for c in ax.containers if isinstance(c, ErrorbarContainer)}
    assert bars == {"pipe": [False, True], "shm": [False, False]}  # pipe at 2 workers alone has no bar
    (label,) = [t for t in ax.texts if not t.get_text().startswith("memcpy limit") and t.get_gid() != LINE_LABEL_GID]
    assert label.get_text() == "n=1" and label.xy[0] == pytest.approx(2, abs=0.1)
    cpu = cpu_per_batch(run).axes[0]
    assert [t.get_text() for t in cpu.texts] == ["n=1"]
    assert len([c for c in cpu.containers if isinstance(c, ErrorbarContainer)]) == 4  # the other four cells
    build_report(run_dir)
    text = (run_dir / "report.md").read_text()
    assert "No error bar for batches/s where a cell has a single value (n=1): pipe (2 workers)." in text
    assert "No error bar for CPU s/batch where a cell has a single value (n=1): pipe (2 workers)." in text


def test_the_baseline_is_a_level_across_the_workers_axis_and_not_a_dev_shm_stub(tmp_path: Path) -> None:
    """The baseline ignores ``workers``: a horizontal line (its cells pooled), and no /dev/shm bar."""
    run_dir = write_results(
        tmp_path / "run", strategies=("baseline", "queue", "shm"), workers=(1, 2), repeats=2, epochs=3, faults=False
    )
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    # The baseline measured at 2 workers too (as a run with --workers 1,2 does): the same thing, measured again.
    again = [
        {**r, "workers": 2, "batches_per_s": r["batches_per_s"] * 1.5} for r in records if r["strategy"] == "baseline"
    ]
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records + again))
    write_summary(run_dir)
    run = load_run(run_dir)
    base = run.samples[(run.samples["strategy"] == "baseline") & ~run.samples["warmup"]]["batches_per_s"]
    assert len(base) == 8

    figure = throughput(run)
    ax = figure.axes[0]
    assert {c.get_label() for c in ax.containers if isinstance(c, ErrorbarContainer)} == {"queue", "shm"}
    across = [line for line in ax.lines if list(line.get_xdata()) == [0, 1]]  # axhlines: across the whole axis
    (level,) = [line for line in across if line.get_color() != "black"]  # not the memcpy reference
    assert list(level.get_ydata()) == pytest.approx([base.median()] * 2)
    assert level.get_color() == style.colour("baseline")
    assert "baseline (no workers)" in [t.get_text() for t in ax.texts if t.get_gid() == LINE_LABEL_GID]

    memory_axes = {a.get_title(): a for a in memory(run).axes}
    shm_panel = memory_axes["/dev/shm peak"]
    colours = {to_hex(p.get_facecolor()) for p in shm_panel.patches}
    assert to_hex(style.colour("baseline")) not in colours and to_hex(style.colour("shm")) in colours
    pss_colours = {to_hex(p.get_facecolor()) for p in memory_axes["PSS peak"].patches}
    assert to_hex(style.colour("baseline")) in pss_colours  # it has memory: only /dev/shm leaves it out

    build_report(run_dir)
    text = (run_dir / "report.md").read_text()
    assert "A strategy without workers (the baseline" in text and "a horizontal line across the axis" in text
    assert "left out of the /dev/shm panel, which names it" in text
    (note,) = [t.get_text().replace("\n", " ") for t in shm_panel.texts]
    assert note == "no /dev/shm, not drawn: baseline, queue"  # queue: the fixture's queue measured none either


JUMPY = (0.7, 1.3, 0.7, 1.3)  # factors that leave a median in place and make the cv large


def test_converted_cells_are_set_beside_their_uint16_twins(tmp_path: Path) -> None:
    run_dir = write_results(tmp_path / "run", strategies=("baseline", "shm"), workers=(2,), faults=False)
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    converted = [
        {
            **r,
            "dtype": "float32",
            "batches_per_s": r["batches_per_s"] * 0.8 * (1.0 if r["strategy"] == "baseline" else JUMPY[i % 4]),
            "cpu_s_per_batch": r["cpu_s_per_batch"] * 1.25,
        }
        for i, r in enumerate(records)
    ]
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records + converted))
    write_summary(run_dir)
    build_report(run_dir)
    text = (run_dir / "report.md").read_text()
    rows = _markdown_table(text, "### What converting the batches costs")
    assert [(row["strategy"], row["dtype"]) for row in rows] == [("baseline", "float32"), ("shm", "float32")]
    # batches/s against the uint16 twin of the same run: the ratio of the two cells' medians
    shm_rates = {
        dtype: np.median([r["batches_per_s"] for r in group if r["strategy"] == "shm" and not r["warmup"]])
        for dtype, group in (("uint16", records), ("float32", converted))
    }
    assert [row["vs uint16"] for row in rows] == ["0.80", f"{shm_rates['float32'] / shm_rates['uint16']:.2f}"]
    # The verdict column names the dtype of each cell it flags (here: float32 windows made jumpy).
    verdicts = [row["verdict"] for row in rows]
    assert verdicts[0] == "ok" and re.fullmatch(r"float32: unstable \(cv \d+%\)", verdicts[1]), verdicts


def test_a_run_of_one_dtype_has_no_conversion_section(tmp_path: Path) -> None:
    run_dir = write_results(tmp_path / "run", strategies=("baseline", "shm"), workers=(2,), faults=False)
    build_report(run_dir)
    assert "What converting" not in (run_dir / "report.md").read_text()


def test_a_dataset_of_several_sizes_is_described_by_them_all(tmp_path: Path) -> None:
    run_dir = write_results(tmp_path / "run", strategies=("baseline",), workers=(1,), faults=False)
    env = json.loads((run_dir / "env.json").read_text())
    env["dataset"] = {
        **env.get("dataset", {}),
        "images": 12,
        "shape": [1, 512, 512],  # the first image's: not the dataset's
        "description": "12 images, 3 sizes from 1 x 512 x 512 to 1 x 2700 x 3600",
    }
    (run_dir / "env.json").write_text(json.dumps(env))
    build_report(run_dir)
    text = (run_dir / "report.md").read_text()
    assert "12 images, 3 sizes from 1 x 512 x 512 to 1 x 2700 x 3600" in text
    assert "12 images, 1 x 512 x 512" not in text


def _markdown_table(text: str, heading: str) -> list[dict[str, str]]:
    """The first table under ``heading`` in report.md, one dict per row keyed by the header."""
    after = text.split(f"\n{heading}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(after) if line.startswith("|"))
    lines = list(itertools.takewhile(lambda line: line.startswith("|"), after[start:]))
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]]


def _number(text: str) -> float:
    return float(text.replace(",", "").replace("*", ""))


# column label -> (sample field, unit scale, one value per process rather than per window)
SUMMARY_COLUMNS = {
    "batches/s": ("batches_per_s", 1.0, False),
    "MB/s": ("mb_per_s", 1.0, False),
    "wait p50 (ms)": ("wait_ms_p50", 1.0, False),
    "wait p95 (ms)": ("wait_ms_p95", 1.0, False),
    "wait p99 (ms)": ("wait_ms_p99", 1.0, False),
    "first batch (ms)": ("time_to_first_batch_s", 1000.0, False),
    "consumer busy": ("consumer_utilization", 1.0, False),
    "epoch (s)": ("seconds", 1.0, False),
    "PSS (MB)": ("pss_peak_mb", 1.0, False),
    "USS (MB)": ("uss_peak_mb", 1.0, False),
    "/dev/shm (MB)": ("shm_peak_mb", 1.0, False),
    "CPU ms/batch": ("cpu_s_per_batch", 1000.0, False),
    "startup (ms)": ("startup_s", 1000.0, True),
    "shutdown (ms)": ("shutdown_s", 1000.0, True),
}


def test_every_summary_cell_is_the_median_and_iqr_of_its_samples_in_the_column_unit(tmp_path: Path) -> None:
    """Each number of the summary tables, against the raw samples: right statistic, right unit, every column.

    The samples are noisy (cv 20%), so their mean, median and quartiles differ: a table
    showing a quartile or the mean, or a unit scaled wrongly, does not match.
    """
    run_dir = write_results(tmp_path / "run", strategies=("baseline", "pipe", "shm"), noise=0.2, faults=False)
    build_report(run_dir)
    text = (run_dir / "report.md").read_text()
    samples = pd.DataFrame([json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()])
    measured = samples[~samples["warmup"]]
    checked: set[str] = set()
    shown_columns: set[str] = set()
    for heading in ("### Throughput and latency", "### Memory, CPU, start-up and shutdown"):
        for row in _markdown_table(text, heading):
            cell = measured[(measured["strategy"] == row["strategy"]) & (measured["workers"] == int(row["workers"]))]
            assert int(row["n"]) == len(cell)
            for label, shown in row.items():
                if label not in SUMMARY_COLUMNS or shown == "–":
                    continue
                field, scale, per_process = SUMMARY_COLUMNS[label]
                values = (cell.groupby("repeat")[field].first() if per_process else cell[field]) * scale
                median, iqr = shown.removesuffix("]").split(" [")
                expected_median = float(np.median(values))
                expected_iqr = float(np.quantile(values, 0.75) - np.quantile(values, 0.25))
                # three significant figures (fmt_number): within half a unit of the last digit shown
                for got, want in ((median, expected_median), (iqr, expected_iqr)):
                    where = (row["strategy"], row["workers"], label, shown)
                    if got == "<0.01":
                        assert 0 < want < 0.01, where
                    else:
                        assert _number(got) == pytest.approx(want, rel=6e-3, abs=6e-3), where
                checked.add(label)
            shown_columns |= set(row) & set(SUMMARY_COLUMNS)
    assert checked == shown_columns  # every column shown was checked, in some row with a value
    assert {"batches/s", "MB/s", "wait p99 (ms)", "first batch (ms)", "PSS (MB)", "CPU ms/batch"} <= checked
    assert {"startup (ms)", "shutdown (ms)"} <= checked


def test_the_wait_ecdf_marks_where_batches_start_waiting_for_the_next_image(tmp_path: Path) -> None:
    """The plateau of the ECDF: batches cut from an image already processed below, those that wait above."""
    run_dir = write_results(tmp_path / "run", strategies=("baseline", "shm"), workers=(2,), faults=False)
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    for record in records:  # three images an epoch, as a run records the images of its epochs
        record["images"] = [0, 1, 2] * int(record.get("epochs", 1))
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run = load_run(run_dir)
    rows = run.samples[~run.samples["warmup"]]
    images = sum(len(v) for v in rows["images"])
    share = images / rows["batches"].sum()
    assert new_image_share(rows) == pytest.approx(share)
    texts = [t.get_text() for t in wait_ecdf(run).axes[0].texts]
    assert f"{share:.0%} wait for the next image's work" in texts
    assert f"{1 - share:.0%} cut from an image already here" in texts
    assert new_image_share(rows.drop(columns="images")) is None  # an older run: no line, nothing guessed


def test_the_stages_figure_puts_each_workers_time_beside_the_main_process_wall_time(tmp_path: Path) -> None:
    """Worker stages per worker (they run side by side) in one panel, the main process's own in the other."""
    run_dir = write_results(tmp_path / "run", strategies=("baseline", "pipe"), workers=(2,), faults=False)
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    for record in records:  # both sides summed, and the main process's own share, as the child records them
        if record["strategy"] == "baseline":
            record["stage_ms_per_batch"] = record["stage_main_ms_per_batch"] = {"compute": 6.0, "assemble": 0.5}
        else:
            record["stage_ms_per_batch"] = {"compute": 6.0, "transfer": 2.0, "assemble": 1.0, "wait": 1.5}
            record["stage_main_ms_per_batch"] = {"transfer": 0.5, "assemble": 1.0, "wait": 1.5}
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_summary(run_dir)
    run = load_run(run_dir)
    figure = stages(run)
    worker_ax, main_ax = figure.axes[:2]
    assert (worker_ax.get_title(), main_ax.get_title()) == ("Each worker (in parallel)", "Main process (wall time)")
    order = list(stage_cells(run.summary)["strategy"])
    pipe = run.summary[run.summary["strategy"] == "pipe"].iloc[0]
    total = sum(pipe[column] for _, column in stage_medians(run.summary) if pd.notna(pipe[column]))
    main = sum(pipe[column] for _, column in stage_medians(run.summary, "main") if pd.notna(pipe[column]))
    assert (total, main) == (pytest.approx(10.5), pytest.approx(3.0))

    def bar_length(ax, y: int) -> float:
        return sum(p.get_width() for p in ax.patches if abs(p.get_y() + p.get_height() / 2 - y) < 1e-9)

    assert bar_length(main_ax, order.index("pipe")) == pytest.approx(main)
    assert bar_length(worker_ax, order.index("pipe")) == pytest.approx((total - main) / 2)  # two workers
    assert bar_length(worker_ax, order.index("baseline")) == 0.0  # no workers: all its time is the main process's


def test_the_first_batch_goal_judges_each_strategy_at_its_quickest_start() -> None:
    from harness.report.goals import BACKGROUND_START, base_strategy, first_batch_s, slowest_first_batch
    from harness.results.rundata import RunData

    def warmup(strategy: str, background: str, since: float) -> dict:
        startup = 0.01 if background == "on" else 0.3
        return {
            "strategy": strategy,
            "workers": 2,
            "workload": "full",
            "warmup": True,
            "background_start": background,
            "prefetch_next_epoch": "off",
            "startup_s": startup,
            "time_to_first_batch_s": since - startup - 0.002,  # the instrument's steps between: 2 ms
            "first_batch_since_start_s": since,
        }

    cells = [("baseline", "off", 0.06), ("shm", "off", 0.45), ("shm", "on", 0.09), ("pipe", "off", 0.40)]
    samples = pd.DataFrame([warmup(*cell) for cell in cells])
    run = RunData(Path("."), {}, samples, pd.DataFrame(), None, None, "samples")
    first = first_batch_s(run)
    assert first == pytest.approx({"baseline": 0.06, "shm": 0.45, "shm" + BACKGROUND_START: 0.09, "pipe": 0.40})
    assert base_strategy("shm" + BACKGROUND_START) == "shm"
    late, slowest = slowest_first_batch(first)
    # shm at its quickest (background start, +0.03 s); pipe has no other way: it is the slowest.
    assert slowest == "pipe" and late["pipe"] == pytest.approx(0.34)
    assert late["shm" + BACKGROUND_START] == pytest.approx(0.03)
