"""What a report says, as data: front matter and a list of blocks, before any syntax.

:func:`build_document` decides the content (provenance, summary tables, figures with
captions, stability notes, the faults table); :mod:`.markdown` and :mod:`.html` only
spell it. Keeping the two apart is pyperf's split of results model and formatting:
one story, two renderings that cannot drift apart.

Inline text may use three markdown marks, which both renderers understand:
```code```, ``**bold**`` and ``*emphasis*``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from harness.results import (
    HEADLINE,
    KEY_FILL,
    METRICS,
    MIN_SAMPLES,
    UNSTABLE_CV,
    RunData,
    checksum_mismatches,
    load_verdict,
    machine_cores,
    stage_medians,
    variant_keys,
    variant_label,
)

from . import style
from .barcharts import stage_cells
from .bounds import regime_bounds
from .cells import first_dataset, single_value_note
from .cells import strategy_label as strategy_label_of
from .goals import GOALS, below_baseline_explanations, copies_per_s, first_batch_line, performance_goals
from .plots import FigureSpec
from .provenance import (
    caption_context,
    config_text,
    cores_text,
    cpu_name,
    dataset_text,
    lookup,
    n_text,
    plain,
    provenance_items,
)
from .scaling import COSTS as SCALING_COSTS
from .scaling import growth_table, growth_words, scaling_axes
from .tables import fmt_number, median_cell, summary_tables
from .utilization import (
    WITHIN_BEST,
    has_utilization_curve,
    largest_workers,
    loader_stops_mattering,
    stops_mattering_sentence,
    utilization_cells,
    utilization_table,
)

SERIES = "Live-Dead Assay"


@dataclass(frozen=True, slots=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True, slots=True)
class Paragraph:
    text: str


@dataclass(frozen=True, slots=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]  # right-align these columns


@dataclass(frozen=True, slots=True)
class Image:
    path: str  # relative to the report, e.g. "plots/throughput.png"
    alt: str
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


@dataclass(frozen=True, slots=True)
class Document:
    front_matter: dict[str, Any]
    blocks: tuple[Block, ...] = field(default=())


def escape(text: str) -> str:
    """Text from a results file, made inert: its ``*``, backticks and brackets are not marks.

    A fault reason such as "leaked ipcbench_* and psm_* segments" must not turn into
    emphasis. Both renderers undo the backslashes (``markdown.py`` by being Markdown,
    ``html.py`` explicitly).
    """
    return re.sub(r"([\\`*\[\]])", r"\\\1", text)


def build_document(run: RunData, figures: list[FigureSpec]) -> Document:
    """The whole report for ``run``, with ``figures`` (already drawn to plots/NAME.png)."""
    if run.source == "faults":
        return _faults_document(run, figures)
    blocks: list[Block] = [Paragraph(_lede(run))]
    blocks += [Heading(2, "Provenance"), Bullets(tuple(f"**{k}:** {v}" for k, v in provenance_items(run)))]
    blocks += _summary_section(run)
    blocks += _conversion_section(run)
    blocks += _transfer_section(run)
    blocks += _utilization_section(run)
    blocks += _bounds_section(run)
    blocks += _scaling_section(run)
    blocks += _stages_section(run)
    blocks += _goals_section(run)
    blocks.append(Heading(2, "Figures"))
    for number, spec in enumerate(figures, 1):
        blocks.append(Heading(3, spec.title))
        blocks.append(Image(f"plots/{spec.name}.png", spec.title, _caption(run, spec, number)))
    blocks += _stability_section(run)
    if run.faults is not None and not run.faults.empty:
        blocks += _faults_section(run)
    return Document(_front_matter(run), tuple(blocks))


def _front_matter(run: RunData) -> dict[str, Any]:
    strategies = style.order_strategies(run.samples["strategy"])
    machine = f"{cpu_name(run.env)} ({cores_text(run.env)})"
    return {
        "title": f"ipcbench: {', '.join(strategies)} on {dataset_text(run).split(' (')[0]}",
        "date": _date(run),
        "description": (
            f"Batches/s, wait latency, memory, start-up/shutdown and CPU cost of {', '.join(strategies)} "
            f"feeding 16-bit microscopy tiles to a training loop, measured on {machine}."
        ),
        "series": [SERIES],
        "tags": ["ipcbench", "benchmark", "python", "multiprocessing", "microscopy", *strategies],
    }


def _date(run: RunData) -> str:
    """The run's start (env.json ``created``) in ISO 8601, which Hugo reads as the page date; else now."""
    created = lookup(run.env, "created")
    try:
        when = datetime.fromisoformat(str(created)) if created is not None else datetime.now(UTC)
    except ValueError:
        when = datetime.now(UTC)  # an unreadable date would stop a Hugo build: the report's own date instead
    return when.isoformat(timespec="seconds")


def _lede(run: RunData) -> str:
    summary = run.summary
    text = (
        f"Results of run `{lookup(run.env, 'run_id', default=run.root.name)}` on {cpu_name(run.env)} "
        f"({cores_text(run.env)}); {n_text(run)}. Tables show medians with the inter-quartile range (IQR) in "
        "brackets."
    )
    metric = f"{HEADLINE}_median"
    if metric in summary and summary[metric].notna().any():
        best = summary.loc[summary[metric].idxmax()]
        text += f" Highest throughput: **{_cell_name(best, summary)}** at {fmt_number(best[metric])} batches/s"
        base = summary.loc[summary["strategy"] == "baseline", metric]
        if best["strategy"] != "baseline" and not base.empty and base.max() > 0:
            text += f", {best[metric] / base.max():.1f}x the single-process baseline"
        text += "."
    return text


def _cell_name(row: pd.Series, summary: pd.DataFrame) -> str:
    keys = variant_keys(summary)
    return row["strategy"] + (f", {variant_label(row, keys)}" if keys else "")


def _summary_section(run: RunData) -> list[Block]:
    summary = run.summary
    keys = variant_keys(summary)
    samples_word = "timed rounds" if run.source == "pytest-benchmark" else "measured windows"
    blocks: list[Block] = [
        Heading(2, "Summary"),
        Paragraph(
            f"One row per cell; {config_text(run.samples)}. Each value is the median over {samples_word} with the "
            f"IQR in brackets (start-up and shutdown: one value per process). Each cell has one verdict: *ok*, "
            f"*unstable* when its batches/s spread (std / mean) exceeds {UNSTABLE_CV:.0%}, *too few samples* under "
            f"{MIN_SAMPLES} measured windows, and *loaded* when other processes used over half the cores meanwhile."
        ),
    ]
    for title, header, rows, numeric in summary_tables(summary, keys):
        blocks += [Heading(3, title), Table(header, rows, numeric)]
    return blocks


def _transfer_section(run: RunData) -> list[Block]:
    """Transfer cells' batches/s as a fraction of R, memcpy's batch copies per second on one core."""
    summary = run.summary
    rows = summary[summary["workload"] == "transfer"]
    if rows.empty:
        return []
    keys = [k for k in variant_keys(rows) if k not in ("workload", "batch_size")]
    mib = {
        int(w["batch_size"]): w.get("batch_mib")
        for w in lookup(run.env, "config.workloads", default=[])
        if isinstance(w, dict) and w.get("name") == "transfer"
    }
    table_rows = []
    for _, row in rows.sort_values(["batch_size", "strategy"]).iterrows():
        size = int(row["batch_size"])
        r_rate = copies_per_s(run.env, size)
        rate = row[f"{HEADLINE}_median"]
        given = mib.get(size)
        table_rows.append(
            (
                str(row["strategy"]),
                *(str(plain(row[k])) for k in keys),
                str(int(row["n"])),
                str(size),
                "–" if given is None else f"{float(given):g}",
                median_cell(row, HEADLINE),
                median_cell(row, "mb_per_s"),
                "–" if r_rate is None else fmt_number(r_rate),
                "–" if r_rate is None or pd.isna(rate) else f"{rate / r_rate:.2f}",
            )
        )
    header = ("strategy", *keys, "n", "batch (tiles)", "MiB of pixels", "batches/s", "MB/s", "R (copies/s)", "of R")
    return [
        Heading(3, "Transfer workload against the memcpy limit"),
        Paragraph(
            "The *transfer* workload hands over tiles computed once per worker (no decode, no mask work), so only "
            "the path from worker to training loop is measured. R is this run's memcpy bandwidth on one core "
            "(env.json) expressed in batches: how many batches of that size (data and masks) one core copies per "
            "second. A strategy at 1.0 R moves batches as fast as one core can copy them; zero-copy designs, "
            "whose workers write in parallel and whose main process copies nothing, can exceed it."
        ),
        Table(header, tuple(table_rows), (False, *[True] * (len(header) - 1))),
    ]


def _utilization_section(run: RunData) -> list[Block]:
    """Consumer utilization at each step time per strategy, and from which step on the loader stops mattering."""
    if not has_utilization_curve(run):
        return []
    table = utilization_table(run)
    cells = utilization_cells(run.summary)
    steps = list(table.columns)
    rows = []
    for strategy in table.index:
        own = cells[cells["strategy"] == strategy]
        by_step = {float(r["step_ms"]): r for _, r in own.iterrows()}
        cells_text = (median_cell(by_step[s], "consumer_utilization") if s in by_step else "–" for s in steps)
        rows.append((strategy_label_of(strategy), *cells_text))
    workers = largest_workers(cells)
    at = f"at {workers} worker" + ("" if workers == 1 else "s") if workers is not None else ""
    found = loader_stops_mattering(table)
    text = (
        "Share of wall time the training loop spends in its simulated step (consumer utilization; DLIO and MLPerf "
        "Storage call it accelerator utilization), median [IQR] over measured windows, for each step time the run "
        f"measured: each strategy {at}{' (a strategy without workers: its own cell)' if at else ''}, full "
        "workload. 1.0 is a loop that never waits for a batch."
    )
    return [
        Heading(3, "Consumer utilization against step time"),
        Paragraph(text),
        Table(("strategy", *(f"{s:g} ms" for s in steps)), tuple(rows), (False, *[True] * len(steps))),
        *([Paragraph(stops_mattering_sentence(found, WITHIN_BEST))] if found is not None else []),
    ]


def _scaling_section(run: RunData) -> list[Block]:
    """Per scaling axis (batch size, worker count, image size): batches/s at each value, and how each cost grows."""
    axes = scaling_axes(run)
    if not axes:
        return []
    blocks: list[Block] = [
        Heading(3, "How cost grows"),
        Paragraph(
            "Batches/s, peak PSS and time to the first batch along each setting the run measured at three or more "
            "values, the others held at their defaults. *k* is the slope of log(cost) against log(setting), a "
            "least-squares summary of the measured range: 0 flat, 1 proportional, -1 inversely proportional."
        ),
    ]
    for axis in axes:
        values = sorted(axis.cells["x"].unique())
        over = axis.name == "workers" and axis.cores is not None and values[-1] > axis.cores
        blocks.append(
            Paragraph(
                f"**Along the {axis.title}.** Median batches/s at each value"
                + (f"; counts above the machine's {axis.cores} cores oversubscribe it" if over else "")
                + ":"
            )
        )
        unit = axis.unit
        shown = (lambda v: str(int(v))) if axis.name == "workers" else fmt_number
        rows = []
        for strategy in style.order_strategies(axis.cells["strategy"].unique()):
            own = axis.cells[axis.cells["strategy"] == strategy].set_index("x")["batches_per_s_median"]
            rows.append((strategy_label_of(strategy), *(fmt_number(own.get(v)) for v in values)))
        header = ("strategy", *(f"{shown(v)}{unit}" for v in values))
        blocks.append(Table(header, tuple(rows), (False, *[True] * len(values))))
        growth = growth_table(axis)
        labels = [label for _, label, _ in SCALING_COSTS if label in growth]
        rows = [
            (strategy_label_of(r["strategy"]), *(growth_words(None if pd.isna(r[c]) else r[c]) for c in labels))
            for _, r in growth.iterrows()
        ]
        header = ("strategy", *(f"{c}: grows" for c in labels))
        blocks.append(Table(header, tuple(rows), (False, *[False] * len(labels))))
    return blocks


def _bounds_section(run: RunData) -> list[Block]:
    """The regime's ceilings (compute, and disk for a cold cache) beside the baseline, best and slowest strategy."""
    found = [b for b in regime_bounds(run) if b.baseline is not None and b.best is not None]
    if not found:
        return []

    def ratio(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}x"

    def named(strategy: str | None, value: float | None) -> str:
        return "–" if strategy is None or value is None else f"{strategy_label_of(strategy)} {fmt_number(value)}"

    rows = tuple(
        (
            escape(b.variant),
            fmt_number(b.baseline),
            named(b.best_strategy, b.best),
            ratio(b.ratio(b.best, b.baseline)),
            named(b.slowest_strategy, b.slowest),
            ratio(b.ratio(b.slowest, b.baseline)),
            fmt_number(b.compute_bound) if b.compute_bound else "–",
            fmt_number(b.disk_bound) if b.disk_bound else "–",
            ratio(b.ratio(b.best, b.tightest)),
        )
        for b in found
    )
    workers = found[0].workers
    text = (
        f"Batches/s (medians) of the full workload without a training step, at {workers} worker"
        f"{'' if workers == 1 else 's'}: the single-process baseline, the best strategy and the slowest one with "
        "worker processes, each against the baseline; then what bounds them, measured in this run. Compute bound: "
        "the machine's cores over the baseline's CPU seconds per batch (every core doing nothing but the "
        "per-image work). Disk bound (cold page cache only): the disk's read bandwidth (env.json `disk`) over "
        "the megabytes an epoch reads per batch. The last column is the best strategy against the tighter bound. "
        "The baseline's CPU per batch is the least of its decode-thread settings: decoding on several threads "
        "costs a few percent more CPU, so a run that measured only that setting has a bound a few percent low, "
        "and a best strategy slightly above it."
    )
    header = (
        "variant",
        "baseline",
        "best",
        "best / baseline",
        "slowest with processes",
        "slowest / baseline",
        "compute bound",
        "disk bound",
        "best / bound",
    )
    return [
        Heading(3, "What bounds this regime"),
        Paragraph(text),
        Table(header, rows, (False, True, False, True, False, True, True, True, True)),
    ]


PIXELS = KEY_FILL["dtype"]  # the images' own dtype: what a converted cell is compared with


def _conversion_section(run: RunData) -> list[Block]:
    """What converting the batches (``--dtype``) costs: each converted cell against its uint16 twin."""
    summary = run.summary
    if "dtype" not in summary or summary["dtype"].nunique() < 2:
        return []
    keys = [k for k in variant_keys(summary) if k != "dtype"]
    images = summary[summary["dtype"] == PIXELS]
    table_rows = []
    for _, row in summary[summary["dtype"] != PIXELS].sort_values(["strategy", "dtype"]).iterrows():
        twin = images
        for key in ("strategy", *keys):
            twin = twin[twin[key] == row[key]]
        if twin.empty:
            continue
        ref = twin.iloc[0]
        rate, ref_rate = row[f"{HEADLINE}_median"], ref[f"{HEADLINE}_median"]
        # Each cell's own verdict, named by its dtype, where it is not ok.
        verdicts = [
            (dtype, verdict)
            for dtype, verdict in ((PIXELS, ref.get("verdict")), (str(row["dtype"]), row.get("verdict")))
            if isinstance(verdict, str)
        ]
        flagged = "; ".join(f"{dtype}: {verdict}" for dtype, verdict in verdicts if verdict != "ok")
        table_rows.append(
            (
                str(row["strategy"]),
                *(str(plain(row[k])) for k in keys),
                str(row["dtype"]),
                f"{int(ref['n'])} / {int(row['n'])}",
                median_cell(ref, HEADLINE),
                median_cell(row, HEADLINE),
                "–" if pd.isna(rate) or pd.isna(ref_rate) or not ref_rate else f"{rate / ref_rate:.2f}",
                median_cell(ref, "cpu_s_per_batch", 1000.0),
                median_cell(row, "cpu_s_per_batch", 1000.0),
                flagged or ("ok" if verdicts else "–"),
            )
        )
    if not table_rows:
        return []
    scale = lookup(run.env, "config.float32_scale")
    scaled = f", float32 multiplied by {scale:g}" if isinstance(scale, int | float) else ""
    header = (
        "strategy",
        *keys,
        "dtype",
        "n (uint16 / dtype)",
        "uint16 batches/s",
        "batches/s",
        "vs uint16",
        "uint16 CPU ms/batch",
        "CPU ms/batch",
        "verdict",
    )
    return [
        Heading(3, "What converting the batches costs"),
        Paragraph(
            f"Each cell converted to another dtype ({PIXELS} is the images' own{scaled}) beside the same cell in "
            f"{PIXELS}, measured in the same run. The conversion runs where the tiles are cut (in the workers, or "
            f"in the main process for strategies without them), so it costs CPU there and the batch carries more "
            f"bytes (float32 and int32: twice the data of uint16) through the strategy's IPC path."
        ),
        Table(header, tuple(table_rows), (False, *[False] * len(keys), False, False, *[True] * 5, False)),
    ]


def _stages_section(run: RunData) -> list[Block]:
    """Milliseconds per batch by stage, from the strategies' own timers."""
    summary = run.summary
    columns = stage_medians(summary)
    if not columns:
        return []
    keys = variant_keys(summary)
    timed = summary[[column for _, column in columns]].notna().any(axis=1)
    untimed = style.order_strategies(set(summary.loc[~timed, "strategy"]) - set(summary.loc[timed, "strategy"]))
    rows = []
    for _, row in stage_cells(summary[timed]).iterrows():
        cells = [median_cell(row, column.removesuffix("_median")) for _, column in columns]
        rate = row[f"{HEADLINE}_median"]
        wall = fmt_number(1000.0 / rate) if pd.notna(rate) and rate > 0 else "–"
        rows.append((str(row["strategy"]), *(str(plain(row[k])) for k in keys), str(int(row["n"])), *cells, wall))
    header = ("strategy", *keys, "n", *(f"{stage} (ms)" for stage, _ in columns), "wall (ms/batch)")
    text = (
        "Milliseconds per batch in each stage, measured by the strategies' own timers (the change of "
        "`stage_times()` over each measured epoch divided by its batches; median [IQR]). **compute**: the "
        "per-image work; **serialize**: pickling and framing in workers; **transfer**: writing the pixels into the "
        "IPC channel in workers plus reading or copying them out in the main process; **assemble**: the main "
        "process copying tiles into batches; **wait**: the main process blocked on a result. Worker stages are "
        "summed over workers, which run in parallel with the main process, so they can add up to more than the "
        "wall time per batch; main-side stages are wall time in the main process."
    )
    if untimed:
        text += f" Strategies without stage timers (not in the table): {', '.join(untimed)}."
    return [
        Heading(3, "Where the time goes per batch"),
        Paragraph(text),
        Table(header, tuple(rows), (False, *[True] * (len(header) - 1))),
    ]


def _goals_section(run: RunData) -> list[Block]:
    """The performance goals, each a ratio of this run's own cells (see :mod:`.goals`)."""
    run, dataset = first_dataset(run)  # a run over several datasets: its first one's cells
    results = [r for r in performance_goals(run) if r.value is not None]  # a missing cell: left out
    if not results:
        return []
    rows = tuple(
        (
            r.what,
            r.goal,
            fmt_number(r.value),
            r.status if r.met else f"**{r.status}**",
            escape(r.basis),
            escape(GOALS[r.key].reason),
        )
        for r in results
    )
    notes = (first_batch_line(run), *(e.text for e in below_baseline_explanations(run).values()))
    return [
        Heading(3, "Performance goals"),
        Paragraph(
            "Each goal is a ratio of two medians of this run (2 workers"
            + (f"; the cells of its first dataset, {dataset}" if dataset else "")
            + "), so machine drift cancels. Goals whose cells the run lacks are left out."
        ),
        Table(("goal", "threshold", "measured", "", "from", "why"), rows, (False, False, True, False, False, False)),
        *[Paragraph(escape(line)) for line in notes if line],
    ]


def _caption(run: RunData, spec: FigureSpec, number: int) -> str:
    text = f"**Figure {number}. {spec.title}.** {spec.describe}"
    notes = figure_notes(run, spec)
    text += f" {notes}" if notes else ""
    if spec.name == "faults":
        machine = f"{cpu_name(run.env)}, {cores_text(run.env)}"
        return f"{text} Machine: {machine}. {len(run.faults)} scenario runs from faults.jsonl."
    return f"{text} {caption_context(run, 'wait_ms' if spec.name == 'wait_ecdf' else None)}"


def figure_notes(run: RunData, spec: FigureSpec) -> str:
    """What a caption says about this run's figure beyond ``spec.describe``: the memcpy line, cells without a spread."""
    notes = []
    if spec.name == "throughput":
        gb_per_s = lookup(run.env, "memcpy.gb_per_s", "memcpy.gb_per_s_median")
        if gb_per_s is not None and len(set(run.summary["batch_size"])) == 1:
            notes.append(
                f"Dotted line: R, the batches one core can copy per second at this machine's memcpy bandwidth "
                f"({float(gb_per_s):.1f} GB/s, env.json)."
            )
    if spec.spread:
        notes.append(single_value_note(run, spec.spread, pool_inline=spec.name == "throughput"))
    return " ".join(note for note in notes if note)


# Besides the headline, the metrics whose spread is worth a warning: tail waits and one-off
# times are noisy by nature (that is what the ECDF shows), and MB/s is batches/s rescaled.
SPREAD_CHECKED = ("pss_peak_mb", "cpu_s_per_batch", "time_to_first_batch_s", "startup_s")


def _cell_list(rows: pd.DataFrame, summary: pd.DataFrame) -> str:
    keys = variant_keys(summary)
    names = [r["strategy"] + (f" ({variant_label(r, keys)})" if keys else "") for _, r in rows.iterrows()]
    return "; ".join(names)


def _stability_section(run: RunData) -> list[Block]:
    summary = run.summary
    items = []
    verdicts = summary["verdict"] if "verdict" in summary else pd.Series(dtype=str)
    few = summary[verdicts.str.startswith("too few")]
    unstable = summary[verdicts.str.startswith("unstable")]
    loaded = summary[verdicts.str.contains("loaded")]
    for _, row in unstable.iterrows():
        items.append(
            f"**Unstable:** {_cell_name(row, summary)}: batches/s cv {row[f'{HEADLINE}_cv']:.0%} over "
            f"n = {int(row['n'])}: the spread is over {UNSTABLE_CV:.0%} of the mean; rerun on a quieter machine or "
            "with more repeats before reading differences of this size."
        )
    if len(few):
        items.append(
            f"Fewer than {MIN_SAMPLES} measured windows in {len(few)} of {len(summary)} cells: their spread, and any "
            f"goal resting on them, cannot be judged: {_cell_list(few, summary)}."
        )
    if len(loaded):
        items.append(f"**Loaded:** other processes used over half the cores during {_cell_list(loaded, summary)}.")
    busy = load_verdict(run.env, run.samples, machine_cores(run.env))
    if busy:
        items.append(f"**{busy}**")
    if "drift" in summary:
        drifting = summary[summary["drift"].abs() > UNSTABLE_CV]
        if len(drifting):
            listed = "; ".join(f"{_cell_name(r, summary)} {r['drift']:+.0%}" for _, r in drifting.iterrows())
            items.append(
                f"Drift: the last measured window of a process differs from its first by over {UNSTABLE_CV:.0%} "
                f"(median over processes) in {len(drifting)} cells: {listed}. The warm-up was too short, or the "
                "machine changed pace while measuring."
            )
    for name in SPREAD_CHECKED:
        if f"{name}_cv" not in summary:
            continue
        noisy = summary[summary[f"{name}_cv"] > UNSTABLE_CV]
        if len(noisy):
            items.append(
                f"{METRICS[name].label}: cv over {UNSTABLE_CV:.0%} in {len(noisy)} of {len(summary)} cells: "
                f"{_cell_list(noisy, summary)}."
            )
    for name, spec in METRICS.items():
        if spec.seconds_scale is None or f"{name}_median" not in summary:
            continue
        tiny = summary[summary[f"{name}_median"] * spec.seconds_scale < 1e-3]
        if len(tiny):
            items.append(
                f"{spec.label}: median under 1 ms in {len(tiny)} of {len(summary)} cells: {_cell_list(tiny, summary)}. "
                'Values this small are dominated by timer and scheduler noise: read them as "about zero".'
            )
    mismatches = checksum_mismatches(run.samples)
    if mismatches == []:
        items.append(
            "Checksums: every strategy and repeat delivered the same batches at each epoch index "
            "(the equivalence contract, docs/design.md section 3)."
        )
    elif mismatches:
        items.append(
            f"**Checksums differ** across strategies or repeats in {len(mismatches)} epoch group(s) "
            f"({'; '.join(mismatches[:5])}): some strategy delivered other batches."
        )
    items += [escape(note) for note in run.notes]
    floor = lookup(run.env, "noise_floor.cv")
    if isinstance(floor, int | float) and floor == floor:
        change = lookup(run.env, "noise_floor.pace_change")
        drifted = (
            f" Between the run's start and its end the same work took {change:+.0%} longer: the machine itself "
            "changed pace while the cells were measured."
            if isinstance(change, int | float) and abs(change) > UNSTABLE_CV
            else ""
        )
        items.insert(
            0,
            f"This machine's own noise floor: the same work took a different time from one "
            f"{lookup(run.env, 'noise_floor.window_s'):g} s window to the next with cv {floor:.0%} (a fixed copy "
            "loop on one core, at the run's start and end). No cell's windows can be steadier than that; a cell "
            f"whose cv is near it shows the machine, not the strategy.{drifted}",
        )
    ok = int((verdicts == "ok").sum())
    if ok == len(summary):
        lead = f"Every cell is ok: at least {MIN_SAMPLES} measured windows, batches/s spread under {UNSTABLE_CV:.0%}."
    else:
        parts = [f"{ok} ok"] + [
            f"{len(rows)} {what}"
            for rows, what in ((unstable, "unstable"), (few, "with too few samples"), (loaded, "loaded"))
            if len(rows)
        ]
        lead = f"Of {len(summary)} cells: {', '.join(parts)}."
    return [
        Heading(2, "Stability"),
        Paragraph(lead + " Checks in the manner of pyperf's warnings:"),
        Bullets(tuple(items)),
    ]


def _faults_document(run: RunData, figures: list[FigureSpec]) -> Document:
    """A faults-only folder (``ipcbench faults``): the matrix, then every cell with its times."""
    frame = run.faults
    blocks: list[Block] = [
        Paragraph(
            f"Fault matrix of run `{lookup(run.env, 'run_id', default=run.root.name)}` on {cpu_name(run.env)} "
            f"({cores_text(run.env)}): each scenario broke a generator on purpose in a fresh process."
        ),
        Heading(2, "Provenance"),
        # No samples: the loader config lives in each cell (the scenarios' own settings).
        Bullets(tuple(f"**{k}:** {v}" for k, v in provenance_items(run) if k != "Config")),
        *_faults_section(run),
    ]
    for number, spec in enumerate(figures, 1):
        blocks.append(Image(f"plots/{spec.name}.png", spec.title, _caption(run, spec, number)))

    def seconds(value: Any) -> str:
        return "–" if value is None or pd.isna(value) else f"{float(value):.2f}"

    rows = tuple(
        (
            str(r.get("scenario")),
            str(r.get("strategy")),
            str(r.get("start_method", "–")),
            "yes" if r["clean"] else "**no**",
            seconds(r.get("time_to_error_s")),
            seconds(r.get("shutdown_s")),
            escape(str(r.get("reason") or "")),
        )
        for r in frame.to_dict("records")
    )
    header = ("scenario", "strategy", "start method", "clean", "time to error (s)", "shutdown (s)", "reason")
    blocks += [Heading(2, "Every cell"), Table(header, rows, (False, False, False, False, True, True, False))]
    strategies = style.order_strategies(frame["strategy"])
    front = {
        "title": f"ipcbench faults: {', '.join(strategies)}",
        "date": _date(run),
        "description": "Which loaders shut down cleanly when a worker dies, hangs or the main process is killed.",
        "series": [SERIES],
        "tags": ["ipcbench", "faults", "multiprocessing", *strategies],
    }
    return Document(front, tuple(blocks))


def _faults_section(run: RunData) -> list[Block]:
    frame = run.faults
    strategies = style.order_strategies(frame["strategy"])
    by_method = "start_method" in frame and frame["start_method"].nunique() > 1
    rows = []
    for scenario, group in frame.groupby(["scenario", "start_method"] if by_method else ["scenario"], sort=False):
        name = " / ".join(map(str, scenario)) if by_method else str(scenario[0])
        cells = [name]
        for strategy in strategies:
            match = group[group["strategy"] == strategy]
            if match.empty:
                cells.append("–")
            elif match["clean"].all():
                cells.append("clean")
            else:
                reasons = "; ".join(r for r in match.loc[~match["clean"], "reason"] if r) or "no reason given"
                cells.append(f"**not clean**: {escape(reasons)}")
        rows.append(tuple(cells))
    dirty = int((~frame["clean"]).sum())
    return [
        Heading(2, "Shutdown cleanliness"),
        Paragraph(
            f"{len(frame) - dirty} of {len(frame)} fault runs ended clean: the error surfaced within the timeout, no "
            "process was left behind and /dev/shm was as before (docs/design.md section 8)."
        ),
        Table(("scenario", *strategies), tuple(rows), tuple([False] * (1 + len(strategies)))),
    ]
