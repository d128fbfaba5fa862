"""``ipcbench advise``: which loader, how many workers and what prefetch, for the reader's data, measured here.

A short, adaptive search under a time budget (not a grid), every measurement as
``ipcbench run`` makes it (a fresh process, a warm-up window, measured windows, the
batch checksum), all of them appended to one normal results folder::

    screen    every strategy at workers = cores, prefetch 2: one measured window each
    widen     the SHORTLIST best: workers 1 .. cores + 1 x prefetch PREFETCHES, best first,
              while the estimated time of the next measurement fits the budget
    confirm   the two best cells, re-ranked after every measurement, until the two on top
              both have MIN_SAMPLES measured windows (or the budget ends): the
              recommendation and the runner-up, with a Mann-Whitney U test between them

The time of each measurement is estimated from the strategy's own earlier ones (its
start-up differs: torch imports itself, Grain spawns); the budget covers the whole
call, with ``FINISH_RESERVE_S`` kept for the summary, the report and ``advice.md``.

The answer (:class:`Advice`) names the recommendation with its expected batches/s and
IQR, the runner-up and how far behind it is ("no measurable difference" when the test
or the noise floor says so, and then the simpler of the two is recommended), the
memory it costs, what bounds it (the training step, the per-image compute of the
cores, or handing batches over), the lines of Python to paste, and the limits of the
answer (too few windows for a clear ranking, and what budget would give them).
``tifffile`` decode threads stay automatic (``LoaderConfig.decode_threads=None``):
docs/design.md section 7 gives the measurement behind that default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strategies.work import usable_cores

from .errors import IpcbenchError
from .plan import Measurement, RunOptions
from .results import MIN_SAMPLES

PREFETCHES = (2, 4)  # images in flight per worker: the default, and twice it
SCREEN_PREFETCH = 2
SHORTLIST = 3  # strategies widened over workers and prefetch
FINISH_RESERVE_S = 15.0  # summary, report and advice.md, at the end of the budget
FINISH_RESERVE_NO_REPORT_S = 3.0  # summary and advice.md only
MIN_BUDGET_S = 30.0  # below this not even the screen of a few strategies fits
DEFAULT_BUDGET_S = 120.0
# A measurement whose time is not yet known is estimated at this (a strategy's first start).
FIRST_ESTIMATE_S = 4.0
ALPHA = 0.05
NOISE_FLOOR = 0.05  # two cells closer than this are not told apart, whatever the p-value
STEP_BOUND = 0.90  # the loop spends this share of its time in the step: the step is the bottleneck
COMPUTE_BOUND = 0.85  # the best reaches this share of the compute bound: the cores' per-image work limits
# From the simplest to paste and reason about to the most involved; a tie goes to the simpler.
SIMPLEST_FIRST = (
    "baseline",
    "threads",
    "torch",
    "pipe",
    "queue",
    "shm",
    "shm_zerocopy",
    "grain",
    "spdl_arena",
    "spdl",
)
BASELINE = "baseline"


@dataclass(frozen=True, slots=True, order=True)
class Candidate:
    """One configuration the search may measure."""

    strategy: str
    workers: int
    prefetch: int

    def describe(self) -> str:
        if self.strategy == BASELINE:
            return "baseline (in the training process, no workers)"
        return f"{self.strategy}, {self.workers} worker{'' if self.workers == 1 else 's'}, prefetch {self.prefetch}"


@dataclass(frozen=True, slots=True)
class CellResult:
    """What the search measured of one candidate (medians over its measured windows)."""

    candidate: Candidate
    n: int
    batches_per_s: float
    q25: float
    q75: float
    pss_mb: float | None
    shm_mb: float | None
    utilization: float | None
    cpu_s_per_batch: float | None
    values: tuple[float, ...] = field(repr=False, default=())


@dataclass(frozen=True, slots=True)
class Advice:
    """The answer of :func:`advise`, and everything it rests on."""

    dataset: str
    step_ms: float
    budget_s: float
    wall_s: float
    recommended: CellResult
    runner_up: CellResult | None
    p_value: float | None  # Mann-Whitney U, recommended vs runner-up (None: no runner-up or too few values)
    behind: float | None  # how far the runner-up is behind the fastest of the two (0.04 = 4%)
    distinguishable: bool  # the two differ beyond the test and the noise floor
    bound: str  # "step", "compute", "handover" or "unknown"
    bound_text: str
    code: str
    limits: tuple[str, ...]
    cells: tuple[CellResult, ...]  # every measured cell, fastest first
    measurements: int
    interrupted: bool
    run_dir: Path
    start_method: str
    batch_size: int
    tile: int

    def headline(self) -> str:
        r = self.recommended
        return (
            f"use {r.candidate.describe()}: {r.batches_per_s:.1f} batches/s "
            f"[IQR {r.q25:.1f}-{r.q75:.1f}] over {r.n} windows"
        )


def shown_path(path: Path) -> str:
    """``path`` as a reader pastes it: relative to the current folder when inside it, else absolute."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


class Search:
    """Runs measurements one at a time into one results folder, within a deadline."""

    def __init__(
        self,
        options: RunOptions,
        run_dir: Path,
        run_id: str,
        *,
        deadline: float,
        clock: Callable[[], float],
        launch: Any = None,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.options = options
        self.run_dir = run_dir
        self.run_id = run_id
        self.deadline = deadline
        self.clock = clock
        self.launch = launch
        self.say = say
        self.walls: dict[str, list[float]] = {}
        self.repeats: dict[Candidate, int] = {}
        self.count = 0
        self.interrupted = False

    def estimate(self, candidate: Candidate, windows: int) -> float:
        """Seconds a measurement of ``candidate`` with ``windows`` windows is expected to take."""
        own = self.walls.get(candidate.strategy)
        if own:
            base = max(own)
        else:
            seen = [w for walls in self.walls.values() for w in walls]
            base = max(seen) if seen else FIRST_ESTIMATE_S
        return base + max(0, windows - 1) * self.options.min_window_s

    def fits(self, candidate: Candidate, windows: int, keep_s: float = 0.0) -> bool:
        return self.clock() + self.estimate(candidate, windows) + keep_s <= self.deadline

    def measure(self, candidate: Candidate, windows: int, phase: str) -> bool:
        """One fresh process of ``candidate``; False when it failed or the user stopped the search."""
        from .runner import run_plan

        repeat = self.repeats.get(candidate, 0)
        self.repeats[candidate] = repeat + 1
        loader = self.options.loader.replace(prefetch=candidate.prefetch)
        options = dataclasses.replace(self.options, loader=loader, windows=windows, workers=(candidate.workers,))
        measurement = Measurement(
            self.count, repeat, candidate.strategy, candidate.workers, step_ms=self.options.step_ms[0]
        )
        left = max(0.0, self.deadline - self.clock())
        self.say(f"advise [{phase}, {left:.0f} s left]: {candidate.describe()} ...")
        started = self.clock()
        result = run_plan(options, self.run_dir, self.run_id, launch=self.launch, plan=[measurement])
        self.walls.setdefault(candidate.strategy, []).append(self.clock() - started)
        self.count += 1
        if result.interrupted:
            self.interrupted = True
        if result.failures:
            self.say(f"advise: {candidate.describe()} failed: {result.failures[0].error}")
        return bool(result.finished) and not result.interrupted


def cell_results(run_dir: Path) -> list[CellResult]:
    """Every measured cell of the search's folder, fastest first."""
    from .results import SAMPLES_FILE, iter_cells, read_samples, summarize
    from .results.load import samples_frame

    records = read_samples(run_dir / SAMPLES_FILE)
    summary = summarize(records)
    samples = samples_frame(records, run_dir / SAMPLES_FILE)
    values = {
        (key[0], int(key[1]), int(key[2])): tuple(float(v) for v in vals)
        for key, vals in iter_cells(samples, "batches_per_s")
    }
    cells = []
    for _, row in summary.iterrows():

        def get(column: str, row: Any = row) -> float | None:
            value = row.get(column)
            return None if value is None or value != value else float(value)

        candidate = Candidate(str(row["strategy"]), int(row["workers"]), int(row["prefetch"]))
        cells.append(
            CellResult(
                candidate,
                int(row["n"]),
                float(row["batches_per_s_median"]),
                float(row["batches_per_s_q25"]),
                float(row["batches_per_s_q75"]),
                get("pss_peak_mb_median"),
                get("shm_peak_mb_median"),
                get("consumer_utilization_median"),
                get("cpu_s_per_batch_median"),
                values.get((candidate.strategy, candidate.workers, candidate.prefetch), ()),
            )
        )
    return sorted(cells, key=lambda c: -c.batches_per_s)


def simpler(a: Candidate, b: Candidate) -> Candidate:
    """The simpler of two candidates: strategy by :data:`SIMPLEST_FIRST`, then fewer workers, less prefetch."""

    def rank(c: Candidate) -> tuple[int, int, int]:
        place = SIMPLEST_FIRST.index(c.strategy) if c.strategy in SIMPLEST_FIRST else len(SIMPLEST_FIRST)
        return (place, c.workers, c.prefetch)

    return min(a, b, key=rank)


def compare_cells(a: CellResult, b: CellResult) -> tuple[float | None, float, bool]:
    """(Mann-Whitney p, how far the slower median is behind the faster, whether they differ measurably)."""
    fast, slow = max(a.batches_per_s, b.batches_per_s), min(a.batches_per_s, b.batches_per_s)
    behind = 1.0 - slow / fast if fast > 0 else 0.0
    if len(a.values) < 2 or len(b.values) < 2:
        return None, behind, False
    from scipy.stats import mannwhitneyu

    p_value = float(mannwhitneyu(a.values, b.values, alternative="two-sided").pvalue)
    p_value = 1.0 if math.isnan(p_value) else p_value
    return p_value, behind, p_value < ALPHA and behind >= NOISE_FLOOR


def _text(value: str) -> str:
    """A Python string literal in double quotes, as the project's code writes them (json's escaping is Python's)."""
    import json

    return json.dumps(value)


def paste_code(candidate: Candidate, dataset: str, *, batch_size: int, tile: int, start_method: str) -> str:
    """The lines to paste: the chosen loader in a training loop, under the guard spawn and forkserver need."""
    options = [f"batch_size={batch_size}", f"tile={tile}"]
    if candidate.strategy != BASELINE:
        options += [
            f"workers={candidate.workers}",
            f"prefetch={candidate.prefetch}",
            f"start_method={_text(start_method)}",
        ]
    return "\n".join(
        (
            "from strategies import LoaderConfig, make_generator",
            "",
            "",
            "def main():",
            f"    config = LoaderConfig({', '.join(options)})",
            f"    with make_generator({_text(candidate.strategy)}, {_text(dataset)}, config) as loader:",
            "        for epoch in range(2):",
            "            for data, masks in loader:  # data: uint16 (B, C, T, T), masks: uint8 (B, T, T)",
            "                ...  # your training step",
            "",
            "",
            'if __name__ == "__main__":  # workers start with spawn or forkserver: the guard is required',
            "    main()",
        )
    )


def judge_bound(best: CellResult, step_ms: float, compute_bound: float | None, cores: int) -> tuple[str, str]:
    """(bound, sentence): what limits the best measured configuration."""
    if step_ms > 0 and best.utilization is not None and best.utilization >= STEP_BOUND:
        return "step", (
            f"Your loop is the bottleneck: with a {step_ms:g} ms step the loop spends {best.utilization:.0%} of its "
            f"time in the step (it cannot take more than {1000 / step_ms:.0f} batches/s). Any loader that keeps up "
            "is fine: pick the simplest."
        )
    if compute_bound:
        share = best.batches_per_s / compute_bound
        if share >= COMPUTE_BOUND:
            return "compute", (
                f"Per-image compute on {cores} cores: the best reaches {share:.0%} of the compute bound "
                f"({compute_bound:.0f} batches/s = {cores} cores / the baseline's "
                f"{cores / compute_bound * 1e3:.1f} ms of CPU per batch). More workers than cores will not help; "
                "cheaper per-image work (a faster codec, uncompressed or larger images per read) would."
            )
        return "handover", (
            f"Handing batches over: the best reaches {share:.0%} of the compute bound ({compute_bound:.0f} "
            f"batches/s = {cores} cores / the baseline's {cores / compute_bound * 1e3:.1f} ms of CPU per batch); "
            "the rest is lost moving and coordinating batches between processes, where the strategies differ."
        )
    return "unknown", "Not judged: the baseline was not measured, so the compute bound is unknown."


def advise(
    dataset: str | os.PathLike[str] = "real",
    *,
    step_ms: float = 0.0,
    budget_s: float = DEFAULT_BUDGET_S,
    strategies: Sequence[str] | None = None,
    out: Path | None = None,
    batch_size: int | None = None,
    tile: int | None = None,
    report: bool = True,
    say: Callable[[str], None] = lambda line: None,
    launch: Any = None,
    clock: Callable[[], float] = time.monotonic,
) -> Advice:
    """Search for the best loader configuration on ``dataset`` within ``budget_s`` seconds; write the folder.

    ``dataset``: ``"real"``, ``"synth"`` or a dataset folder. Returns the :class:`Advice`
    (also written as ``advice.md`` into the results folder, ``out`` or
    ``results/advise-<run id>``). Raises :class:`IpcbenchError` for a bad argument, a
    budget too small for even the screen, or a search in which nothing could be measured.
    """
    from strategies import open_dataset

    from .envinfo import dataset_info, run_id_for, utc_now
    from .memcpy import measure_memcpy
    from .results import ENV_FILE, write_atomic, write_json, write_summary
    from .runner import finish_env, prepare_run_dir
    from .session import RESULTS_DIR, RunRequest, build_options, resolve_dataset, run_env

    if not budget_s >= MIN_BUDGET_S:
        raise IpcbenchError(
            f"--budget-s {budget_s:g} is too short: a search measures each strategy in a fresh process "
            f"(a few seconds each) and needs at least {MIN_BUDGET_S:g} s"
        )
    if not step_ms >= 0:
        raise IpcbenchError(f"--step-ms {step_ms} must be >= 0")
    started = clock()
    deadline = started + budget_s
    cores = usable_cores()
    path, source = resolve_dataset(str(dataset), progress=lambda line: say(f"dataset: {line}"))
    images = open_dataset(path)
    request = RunRequest(
        dataset=str(path),
        strategies=tuple(strategies) if strategies else None,
        workers=(cores,),
        repeats=1,
        windows=1,
        step_ms=(float(step_ms),),
        batch_size=batch_size,
        tile=tile,
        prefetch=(SCREEN_PREFETCH,),
        out=out,
    )
    options = build_options(request, path, source, images.channels, opened=images)
    created = utc_now()
    run_id = run_id_for(created)
    run_dir = prepare_run_dir(out if out is not None else RESULTS_DIR / f"advise-{run_id}")
    memcpy = measure_memcpy(repeats=5)
    batch_bytes = options.batch_bytes(images.channels)
    command = [
        "ipcbench",
        "advise",
        "--dataset",
        str(dataset),
        "--step-ms",
        f"{step_ms:g}",
        "--budget-s",
        f"{budget_s:g}",
    ]
    if strategies:
        command += ["--strategies", ",".join(strategies)]
    env = run_env(
        options,
        run_id=run_id,
        created=created,
        command=command,
        dataset=dataset_info(path, source, opened=images),
        memcpy=memcpy.as_dict(batch_bytes, {options.loader.batch_size: batch_bytes}),
    )
    env["advise"] = {"budget_s": budget_s, "phases": ["screen", "widen", "confirm"]}
    write_json(run_dir / ENV_FILE, env)

    reserve = FINISH_RESERVE_S if report else FINISH_RESERVE_NO_REPORT_S
    search = Search(options, run_dir, run_id, deadline=deadline - reserve, clock=clock, launch=launch, say=say)
    # -- screen: every strategy once, at workers = cores ----------------------------------------------
    screened = [Candidate(s, 1 if s == BASELINE else cores, SCREEN_PREFETCH) for s in options.strategies]
    for candidate in screened:
        if search.interrupted:
            break
        if search.count and not search.fits(candidate, 1):
            break
        search.measure(candidate, 1, "screen")
    cells = cell_results(run_dir) if search.count else []
    if not cells:
        raise IpcbenchError(
            f"advise measured nothing in {budget_s:g} s (see {run_dir}/failures.jsonl if it exists); "
            "give it a larger --budget-s"
        )
    # -- widen: the shortlist over workers and prefetch, most promising first -------------------------
    # Room to confirm the two best: from one window each to MIN_SAMPLES, two windows a measurement.
    confirm_keep = 2 * math.ceil((MIN_SAMPLES - 1) / 2) * search.estimate(cells[0].candidate, 2)
    shortlist = [c.candidate.strategy for c in cells if c.candidate.strategy != BASELINE][:SHORTLIST]
    measured = {c.candidate for c in cells}
    variants = [
        Candidate(strategy, workers, prefetch)
        for workers in sorted(range(1, cores + 2), key=lambda w: (abs(w - cores), w))
        for prefetch in PREFETCHES
        for strategy in shortlist
    ]
    for candidate in variants:
        if search.interrupted:
            break
        if candidate in measured:
            continue
        if not search.fits(candidate, 1, keep_s=confirm_keep):
            continue  # another strategy's measurement may still fit
        search.measure(candidate, 1, "widen")
        measured.add(candidate)
    # -- confirm: the two best cells, re-ranked after every measurement, until both have MIN_SAMPLES -----
    # A cell measured once can lead by luck; measured again it takes its place, and the next two are
    # confirmed instead, so the answer rests on the two that stay on top with enough windows.
    while not search.interrupted:
        short = [c for c in cell_results(run_dir)[:2] if c.n < MIN_SAMPLES]
        if not short:
            break
        candidate = min(short, key=lambda c: c.n).candidate
        if not search.fits(candidate, 2):
            break
        search.measure(candidate, 2, "confirm")

    # -- the answer -------------------------------------------------------------------------------
    cells = cell_results(run_dir)
    first = cells[0]
    second = cells[1] if len(cells) > 1 else None
    p_value, behind, distinguishable = compare_cells(first, second) if second is not None else (None, None, False)
    baseline = next((c for c in cells if c.candidate.strategy == BASELINE), None)
    compute_bound = cores / baseline.cpu_s_per_batch if baseline and baseline.cpu_s_per_batch else None
    bound, bound_text = judge_bound(first, float(step_ms), compute_bound, cores)
    recommended, runner_up = first, second
    if bound == "step":
        # Every cell that keeps up is as good: the simplest of those within the noise floor of the best.
        keeping_up = [c for c in cells if c.batches_per_s >= (1 - NOISE_FLOOR) * first.batches_per_s]
        simplest = keeping_up[0].candidate
        for c in keeping_up[1:]:
            simplest = simpler(simplest, c.candidate)
        recommended = next(c for c in cells if c.candidate == simplest)
        runner_up = first if recommended is not first else second
        if runner_up is not None:
            p_value, behind, distinguishable = compare_cells(recommended, runner_up)
    elif second is not None and not distinguishable and simpler(first.candidate, second.candidate) == second.candidate:
        recommended, runner_up = second, first
    limits = _limits(recommended, runner_up, distinguishable, search, clock() - started, budget_s)
    if search.interrupted:
        limits.insert(0, "The search was interrupted: the answer rests on what was measured before.")
    advice = Advice(
        dataset=shown_path(path),
        step_ms=float(step_ms),
        budget_s=budget_s,
        wall_s=0.0,
        recommended=recommended,
        runner_up=runner_up,
        p_value=p_value,
        behind=behind,
        distinguishable=distinguishable,
        bound=bound,
        bound_text=bound_text,
        code=paste_code(
            recommended.candidate,
            shown_path(path),
            batch_size=options.loader.batch_size,
            tile=options.loader.tile,
            start_method=options.loader.start_method,
        ),
        limits=tuple(limits),
        cells=tuple(cells),
        measurements=search.count,
        interrupted=search.interrupted,
        run_dir=run_dir,
        start_method=options.loader.start_method,
        batch_size=options.loader.batch_size,
        tile=options.loader.tile,
    )
    write_summary(run_dir)
    from .runner import RunResult

    finish_env(run_dir, env, RunResult(run_dir, search.count, search.count, 0, search.interrupted))
    if report:
        from .session import build_report

        say(build_report(run_dir))
    advice = dataclasses.replace(advice, wall_s=clock() - started)
    write_atomic(run_dir / ADVICE_FILE, advice_markdown(advice).encode())
    return advice


ADVICE_FILE = "advice.md"


def _limits(
    recommended: CellResult,
    runner_up: CellResult | None,
    distinguishable: bool,
    search: Search,
    elapsed_s: float,
    budget_s: float,
) -> list[str]:
    """What the answer cannot say, and what budget would let it."""
    limits = []
    short = [c for c in (recommended, runner_up) if c is not None and c.n < MIN_SAMPLES]
    if short:
        needed = sum(math.ceil((MIN_SAMPLES - c.n) / 2) for c in short)
        more = needed * max(search.estimate(c.candidate, 2) for c in short)
        limits.append(
            f"The budget ran out before the top two had {MIN_SAMPLES} measured windows each "
            f"({'; '.join(f'{c.candidate.describe()}: {c.n}' for c in short)}): the ranking is not settled. "
            f"A budget of about {budget_s + more:.0f} s (--budget-s {math.ceil(budget_s + more)}) would settle it."
        )
    elif runner_up is not None and not distinguishable:
        limits.append(
            "The recommendation and the runner-up are not measurably different here: either serves; the simpler "
            "one is recommended. A longer budget gives more windows, but a difference under "
            f"{NOISE_FLOOR:.0%} is below what this machine's noise lets anyone claim."
        )
    return limits


def advice_markdown(advice: Advice) -> str:
    """advice.md: the recommendation, why, what to paste, what was measured and the answer's limits."""
    r = advice.recommended
    memory = f"{r.pss_mb:.0f} MB PSS" if r.pss_mb is not None else "memory not measured"
    if r.shm_mb:
        memory += f" + {r.shm_mb:.0f} MB of /dev/shm"
    lines = [
        f"# Loader advice for `{advice.dataset}`",
        "",
        f"**Use {r.candidate.describe()}** ({advice.start_method}): {r.batches_per_s:.1f} batches/s expected "
        f"[IQR {r.q25:.1f}–{r.q75:.1f}, n = {r.n} measured windows], {memory} at its peak"
        + (f", with a {advice.step_ms:g} ms training step" if advice.step_ms else "")
        + ".",
        "",
    ]
    if advice.runner_up is not None:
        u = advice.runner_up
        test = "no test: too few windows" if advice.p_value is None else f"Mann-Whitney U p = {advice.p_value:.3f}"
        if advice.distinguishable:
            verdict = f"a measurable difference ({test})"
        elif advice.p_value is not None and advice.p_value < ALPHA:
            verdict = f"no measurable difference ({test}, but a gap under {NOISE_FLOOR:.0%} is within the noise)"
        else:
            verdict = f"no measurable difference ({test})"
        faster = u.batches_per_s > r.batches_per_s
        lines += [
            f"Runner-up: {u.candidate.describe()}, {u.batches_per_s:.1f} batches/s [IQR {u.q25:.1f}–{u.q75:.1f}, "
            f"n = {u.n}]: {advice.behind:.1%} {'ahead, but not simpler' if faster else 'behind'}; {verdict}.",
            "",
        ]
    lines += ["## What limits it", "", advice.bound_text, "", "## Paste this", "", "```python", advice.code, "```", ""]
    if advice.limits:
        lines += ["## Limits of this answer", "", *(f"- {limit}" for limit in advice.limits), ""]
    lines += [
        "## What was measured",
        "",
        f"{advice.measurements} measurements in {advice.wall_s:.0f} s (budget {advice.budget_s:g} s), each a fresh "
        f"process as `ipcbench run` makes it; batch {advice.batch_size}, tile {advice.tile}, decode threads "
        "automatic. Every measured configuration, fastest first:",
        "",
        "| strategy | workers | prefetch | batches/s median [IQR] | n | PSS peak (MB) |",
        "|:---|---:|---:|---:|---:|---:|",
    ]
    for c in advice.cells:
        workers = "–" if c.candidate.strategy == BASELINE else str(c.candidate.workers)
        prefetch = "–" if c.candidate.strategy == BASELINE else str(c.candidate.prefetch)
        pss = "–" if c.pss_mb is None else f"{c.pss_mb:.0f}"
        lines.append(
            f"| {c.candidate.strategy} | {workers} | {prefetch} | {c.batches_per_s:.1f} "
            f"[{c.q25:.1f}–{c.q75:.1f}] | {c.n} | {pss} |"
        )
    lines += ["", f"Raw samples, summary and report: `{advice.run_dir}` (docs/design.md section 5).", ""]
    return "\n".join(lines)
