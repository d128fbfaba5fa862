"""Two runs, cell by cell: how much did each metric change, and is it more than noise?

For every cell present in both runs (same strategy, workers, prefetch, start method,
batch size, tile, dataset, workload and step) and every key metric:

- the ratio of medians B / A, and the change ``B/A - 1``;
- a two-sided Mann-Whitney U test on the raw measured-epoch samples of the two runs
  (no normality assumed: epoch times are skewed, with stalls in the tail);
- *significant* when ``p < alpha`` **and** ``|change| >= noise_floor``: with enough
  samples a test calls 0.5% significant, but a 0.5% change on a shared machine is
  not a finding;
- the direction: higher is better for batches/s, MB/s and consumer utilization,
  lower is better for wait, memory, times and CPU. ``worse_pct`` is the change in
  the bad direction, in percent (negative when it got better).

Per-process metrics (start-up, shutdown) are tested on one value per process, as in
the summary. :func:`format_comparison` returns lines; the command prints them and
turns :func:`regressions` into the exit status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.report.provenance import cores_text, cpu_name, lookup
from harness.results import CELL_KEYS, METRICS, MIN_SAMPLES, RunData, iter_cells, variant_label

KEY_METRICS: tuple[str, ...] = (
    "batches_per_s",
    "mb_per_s",
    "wait_ms_p95",
    "time_to_first_batch_s",
    "startup_s",
    "shutdown_s",
    "pss_peak_mb",
    "uss_peak_mb",
    "shm_peak_mb",
    "cpu_s_per_batch",
)
DEFAULT_ALPHA = 0.05
DEFAULT_NOISE_FLOOR = 0.02  # 2%: below this a change is called noise whatever the p-value
SHORT_NAMES = {
    "batches_per_s": "batch/s",
    "mb_per_s": "MB/s",
    "wait_ms_p95": "wait p95",
    "time_to_first_batch_s": "1st batch",
    "startup_s": "startup",
    "shutdown_s": "shutdown",
    "pss_peak_mb": "PSS",
    "uss_peak_mb": "USS",
    "shm_peak_mb": "shm",
    "cpu_s_per_batch": "CPU/batch",
}


@dataclass(frozen=True, slots=True)
class CellChange:
    """One metric of one cell, run A against run B."""

    cell: tuple  # values of CELL_KEYS
    metric: str
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    ratio: float  # B / A (inf when A is 0 and B is not, nan when both are 0)
    p_value: float
    significant: bool

    @property
    def change(self) -> float:
        """B/A - 1; 0 when both medians are 0."""
        return 0.0 if math.isnan(self.ratio) else self.ratio - 1.0

    @property
    def worse_pct(self) -> float:
        """How much worse, in percent, in the metric's bad direction (negative: better)."""
        sign = -1.0 if METRICS[self.metric].higher_is_better else 1.0
        return sign * self.change * 100.0

    @property
    def verdict(self) -> str:
        """ "better", "worse", "same" (the test can tell and finds no difference) or "inconclusive (...)".

        With fewer than ``MIN_SAMPLES`` samples on a side the test cannot decide (at
        1 vs 1, p is 1 whatever the change): "same" would be a claim the data does not make.
        """
        if min(self.n_a, self.n_b) < MIN_SAMPLES:
            return f"inconclusive (n={self.n_a} vs {self.n_b}; needs >= {MIN_SAMPLES} each)"
        if not self.significant:
            return "same"
        return "worse" if self.worse_pct > 0 else "better"


@dataclass(frozen=True, slots=True)
class Comparison:
    label_a: str
    label_b: str
    changes: tuple[CellChange, ...]
    only_a: tuple[tuple, ...]
    only_b: tuple[tuple, ...]
    alpha: float
    noise_floor: float
    notes: tuple[str, ...]  # reasons to doubt the comparison (other machine, other dataset)


def compare_runs(
    a: RunData,
    b: RunData,
    *,
    metrics: tuple[str, ...] = KEY_METRICS,
    alpha: float = DEFAULT_ALPHA,
    noise_floor: float = DEFAULT_NOISE_FLOOR,
) -> Comparison:
    """Every cell and metric the two runs share, tested; cells only in one run listed."""
    cells_a = {_cell(row) for _, row in a.summary.iterrows()}
    cells_b = {_cell(row) for _, row in b.summary.iterrows()}
    changes = []
    for metric in metrics:
        if metric not in a.samples.columns or metric not in b.samples.columns:
            continue
        values_a = {_key(cell): v for cell, v in iter_cells(a.samples, metric)}
        values_b = {_key(cell): v for cell, v in iter_cells(b.samples, metric)}
        for key in sorted(values_a.keys() & values_b.keys(), key=str):
            x, y = values_a[key], values_b[key]
            ratio, p_value, significant = weigh_change(x, y, alpha=alpha, noise_floor=noise_floor)
            median_a, median_b = float(np.median(x)), float(np.median(y))
            changes.append(CellChange(key, metric, len(x), len(y), median_a, median_b, ratio, p_value, significant))
    keys_a, keys_b = {_key(c) for c in cells_a}, {_key(c) for c in cells_b}
    return Comparison(
        label_a=_run_label(a),
        label_b=_run_label(b),
        changes=tuple(changes),
        only_a=tuple(sorted(keys_a - keys_b, key=str)),
        only_b=tuple(sorted(keys_b - keys_a, key=str)),
        alpha=alpha,
        noise_floor=noise_floor,
        notes=tuple(_doubts(a, b)),
    )


def weigh_change(
    x, y, *, alpha: float = DEFAULT_ALPHA, noise_floor: float = DEFAULT_NOISE_FLOOR
) -> tuple[float, float, bool]:
    """Samples ``y`` against samples ``x``: (ratio of medians y / x, two-sided Mann-Whitney p, significant).

    Significant when ``p < alpha`` and the medians differ by at least ``noise_floor``.
    """
    from scipy.stats import mannwhitneyu

    ratio = _ratio(float(np.median(x)), float(np.median(y)))
    p_value = float(mannwhitneyu(x, y, alternative="two-sided").pvalue)
    p_value = 1.0 if math.isnan(p_value) else p_value  # all values tied: no evidence of a change
    change = 0.0 if math.isnan(ratio) else ratio - 1.0
    return ratio, p_value, p_value < alpha and abs(change) >= noise_floor


def regressions(comparison: Comparison, metric: str, threshold_pct: float) -> list[CellChange]:
    """Cells where ``metric`` got significantly worse by more than ``threshold_pct`` percent."""
    return [c for c in comparison.changes if c.metric == metric and c.significant and c.worse_pct > threshold_pct]


def format_comparison(comparison: Comparison, metric: str) -> list[str]:
    """The comparison as text lines: the chosen metric in detail, then B/A of every key metric."""
    spec = METRICS[metric]
    keys = _label_keys(comparison)
    lines = [
        f"A: {comparison.label_a}",
        f"B: {comparison.label_b}",
        *(f"note: {note}" for note in comparison.notes),
        "",
        f"{metric} ({'higher' if spec.higher_is_better else 'lower'} is better); significant = two-sided "
        f"Mann-Whitney U p < {comparison.alpha:g} and |change| >= {comparison.noise_floor:.0%}",
    ]
    detail = [c for c in comparison.changes if c.metric == metric]
    untestable = [c for c in detail if min_p_value(c.n_a, c.n_b) >= comparison.alpha]
    if untestable:
        # The exact two-sided test cannot go below 2 / C(n_a + n_b, n_a): with 3 + 3 samples that is 0.1.
        lines.append(
            f"note: {len(untestable)} of {len(detail)} cells have too few samples for any p < {comparison.alpha:g} "
            "(about 4 per run are needed): no change can be significant there"
        )
    rows = [("cell", "n A", "n B", "median A", "median B", "B/A", "change", "p", "verdict")]
    for c in detail:
        rows.append(
            (
                _label(c.cell, keys),
                str(c.n_a),
                str(c.n_b),
                _num(c.median_a),
                _num(c.median_b),
                _ratio_text(c.ratio),
                f"{c.change * 100:+.1f}%",
                f"{c.p_value:.3g}",
                c.verdict + (" *" if c.significant else ""),
            )
        )
    lines += _columns(rows) if detail else [f"(no cell of both runs has {metric})"]
    others = [m for m in KEY_METRICS if m != metric and any(c.metric == m for c in comparison.changes)]
    if others:
        lines += ["", "B/A of the other key metrics (* significant; arrows: ↑ better, ↓ worse)"]
        by_cell: dict[tuple, dict[str, CellChange]] = {}
        for c in comparison.changes:
            by_cell.setdefault(c.cell, {})[c.metric] = c
        table = [("cell", *(SHORT_NAMES.get(m, m) for m in others))]
        for cell, found in by_cell.items():
            table.append((_label(cell, keys), *(_mark(found.get(m)) for m in others)))
        lines += _columns(table)
    for name, cells in (("A", comparison.only_a), ("B", comparison.only_b)):
        if cells:
            lines += ["", f"only in {name} ({len(cells)}): " + "; ".join(_label(c, keys) for c in cells)]
    return lines


def min_p_value(n_a: int, n_b: int) -> float:
    """The smallest p-value an exact two-sided Mann-Whitney U test can give for these sample sizes."""
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


def _cell(row) -> tuple:
    return tuple(row[k] for k in CELL_KEYS)


def _key(cell: tuple) -> tuple:
    # 0 and 0.0 (JSON int vs float) must be the same cell; numpy scalars become Python values.
    return tuple(v.item() if hasattr(v, "item") else v for v in cell)


def _ratio(a: float, b: float) -> float:
    if a == 0:
        return math.nan if b == 0 else math.inf
    return b / a


def _run_label(run: RunData) -> str:
    run_id = lookup(run.env, "run_id", default=run.root.name)
    return f"{run_id} ({run.root}) on {cpu_name(run.env)}, {cores_text(run.env)}"


def _doubts(a: RunData, b: RunData) -> list[str]:
    notes = []
    if (cpu_name(a.env), cores_text(a.env)) != (cpu_name(b.env), cores_text(b.env)):
        notes.append("the runs were made on different machines: changes may be the machine's, not the code's")
    fa, fb = lookup(a.env, "dataset.fingerprint"), lookup(b.env, "dataset.fingerprint")
    if fa and fb and fa != fb:
        notes.append("the runs used different dataset contents (fingerprints differ)")
    return notes


def _label_keys(comparison: Comparison) -> list[str]:
    cells = {c.cell for c in comparison.changes} | set(comparison.only_a) | set(comparison.only_b)
    return [k for i, k in enumerate(CELL_KEYS) if k != "strategy" and len({c[i] for c in cells}) > 1]


def _label(cell: tuple, keys: list[str]) -> str:
    row = dict(zip(CELL_KEYS, cell, strict=True))
    return row["strategy"] + (f", {variant_label(row, keys)}" if keys else "")


def _num(value: float) -> str:
    return f"{value:.4g}"


def _ratio_text(ratio: float) -> str:
    if math.isnan(ratio):
        return "0 → 0"
    return "new" if math.isinf(ratio) else f"{ratio:.3f}"


def _mark(change: CellChange | None) -> str:
    if change is None:
        return "–"
    text = _ratio_text(change.ratio)
    if change.significant:
        text += " ↓*" if change.worse_pct > 0 else " ↑*"
    return text


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows padded into aligned columns: the first left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines
