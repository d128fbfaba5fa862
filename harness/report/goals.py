"""The performance goals, each a ratio of two medians of one run, judged against a named threshold.

Every goal compares cells measured side by side in the same run on the same machine
(absolute times on a shared 2-core machine drift; ratios of interleaved cells do not
drift with them). :data:`GOALS` lists them with their thresholds and the reason each
exists; :func:`performance_goals` measures them on a run:

- transfer workload, 4 MiB batches, 2 workers, against R (memcpy's batch copies per
  second on one core, from env.json): copying shm, zero-copy shm, and the better of
  the two against torch's DataLoader; each also stated against the two-core copy bound
  measured in the same run (env.json ``memcpy.together``: two processes copying side by
  side, the ceiling of any 2-worker transfer), which R underrates;
- full workload, 2 workers: the best strategy against the single-process baseline and
  against the two-core compute bound (2 cores over the baseline's own ``compute`` stage
  per batch: the rate if both cores did nothing but the per-image work; also stated
  against that work measured side by side, env.json ``work``), and the
  slowest multi-process one, which may be below the baseline only with a measured
  explanation (:func:`below_baseline_explanations`, printed under the table);
- first batch (start-up + the first epoch's wait for its first batch, per process) of
  every multi-process strategy against the baseline's;
- peak PSS of shm against torch's (full workload, same prefetch);
- every strategy reports where its time goes per batch (stage timers).

The zero-copy and best-full goals also say how busy the cell's workers were on their
own work and how busy all its processes kept the cores (:func:`_with_busy`), which is
what tells a loader limited by waiting from one limited by CPU.

A goal whose cells the run lacks is listed with no value, saying which cell is
missing; nothing here judges a run it cannot read. The report prints the table
(:mod:`.document`), and ``tests/benchmarks/conftest.py`` prints the same goals, computed
from the benchmarks' medians, at the end of ``pytest --benchmark-only``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from harness.results import ALL_RANKS, MIN_SAMPLES, RunData, measured, stage_column
from strategies import STRATEGIES

from .provenance import lookup

WORKERS = 2  # the goals are for 2 workers on a 2-core machine
TRANSFER_MIB = 4.0  # the transfer goals' batch size: one image-sized batch of the real dataset
COPYING_SHM, ZERO_COPY_SHM = "shm", "shm_zerocopy"
FIRST_BATCH_KEY = "first_batch_minus_baseline_s"
NEXT_EPOCH_EARLY = " (next epoch early)"  # a cell with prefetch_next_epoch on, named as a strategy of its own
BACKGROUND_START = " (background start)"  # a cell with background_start on, likewise
# Each option a cell key turns on, and what its cells are called.
OPTION_SUFFIXES = (("prefetch_next_epoch", NEXT_EPOCH_EARLY), ("background_start", BACKGROUND_START))


@dataclass(frozen=True, slots=True)
class Goal:
    """A named goal: what is compared, the threshold, which side of it is met, and why it is asked."""

    key: str  # a name for extra_info and scripts: "copying_shm_per_r"
    what: str
    threshold: float
    at_least: bool  # met when the value is >= threshold (else <=)
    reason: str

    @property
    def goal(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.threshold:g}"

    def met_by(self, value: float) -> bool:
        return value >= self.threshold if self.at_least else value <= self.threshold


GOALS: dict[str, Goal] = {
    g.key: g
    for g in (
        Goal(
            "copying_shm_per_r",
            "copying shm / R",
            1.0,
            True,
            "a worker writes each tile into its slot and the main process copies it out once: "
            "close to one memcpy of the batch",
        ),
        Goal(
            "zero_copy_shm_per_r",
            "zero-copy shm / R",
            1.5,
            True,
            "the main process copies nothing and both workers copy at once: about 90% of the two-core copy "
            "bound (~1.7 R on this machine)",
        ),
        Goal(
            "best_shm_per_torch",
            "best shm / torch",
            10,
            True,
            "recycled shared-memory slots against torch's fresh shared memory for every image",
        ),
        Goal(
            "best_full_per_baseline",
            "best full / baseline",
            1.7,
            True,
            "two workers on two cores should come close to doubling the single-process loop",
        ),
        Goal(
            "best_full_per_compute_bound",
            "best full / two-core compute bound",
            0.95,
            True,
            "the per-image work is the floor: a loader that keeps both cores on it and costs nothing else "
            "reaches the bound",
        ),
        Goal(
            "slowest_multiprocess_full_per_baseline",
            "slowest multi-process full / baseline",
            1.0,
            True,
            "a loader with worker processes that is slower than none costs more than it brings, "
            "unless its cost is measured and explained",
        ),
        Goal(
            FIRST_BATCH_KEY,
            "first batch - baseline's (s)",
            0.15,
            False,
            "starting workers (a fork server, imports) must not keep the first batch waiting",
        ),
        Goal(
            "pss_shm_per_torch",
            "peak PSS shm / torch",
            1.0,
            False,
            "shared memory must not cost more memory than torch's DataLoader",
        ),
        Goal(
            "stage_timed_share",
            "share of strategies with stage times",
            1.0,
            True,
            "every strategy says where its time goes, so that a figure can be explained",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class GoalResult:
    """One goal measured on a run: the value, whether it is met (None: not measured), and its basis."""

    key: str
    what: str
    goal: str
    value: float | None
    met: bool | None  # None: not measured, or not measurable at this n
    basis: str  # the medians the value came from, or which cell is missing
    n: int | None = None  # the fewest samples among the cells the value rests on

    @property
    def status(self) -> str:
        """ "met", "not met", "not measurable at this n (...)" or "not measured (a cell is missing)"."""
        if self.value is None:
            return "not measured (a cell is missing)"
        if self.met is None:
            return f"not measurable at this n (n={self.n} < {MIN_SAMPLES})"
        return "met" if self.met else "not met"


def base_strategy(name: str) -> str:
    """The strategy a goals cell's name stands for, without the options it was measured with."""
    for _, suffix in reversed(OPTION_SUFFIXES):
        name = name.removesuffix(suffix)
    return name


def named_by_options(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` whose ``strategy`` names the options each was measured with ("shm (background start)")."""
    for key, suffix in OPTION_SUFFIXES:
        if key in rows:
            on = rows[key].astype(str) == "on"
            rows = rows.assign(strategy=rows["strategy"].where(~on, rows["strategy"] + suffix))
    return rows


def worker_processes(strategy: str) -> bool:
    """Whether ``strategy`` does its work in worker processes (a strategy no longer registered: no)."""
    cls = STRATEGIES.get(base_strategy(strategy))
    return bool(cls is not None and cls.worker_processes)


def copies_per_s(env: dict[str, Any], batch_size: int) -> float | None:
    """R for ``batch_size``: batches of that size one core can copy per second (env.json ``memcpy``).

    ``memcpy.by_batch_size`` has one entry per batch size of the run; an older env.json
    knows only the run's one batch size (``config.batch_size``).
    """
    for entry in lookup(env, "memcpy.by_batch_size", default=[]):
        if isinstance(entry, dict) and entry.get("batch_size") == batch_size:
            return float(entry["batch_copies_per_s_one_core"])
    single = lookup(env, "memcpy.batch_copies_per_s_one_core")
    if single is not None and lookup(env, "config.batch_size") == batch_size and not lookup(env, "config.workloads"):
        return float(single)
    return None


def transfer_batch_size(run: RunData, mib: float = TRANSFER_MIB) -> int | None:
    """The batch size (tiles) the run used for ``mib`` MiB transfer batches, from env.json ``config.workloads``."""
    for entry in lookup(run.env, "config.workloads", default=[]):
        given = entry.get("batch_mib")
        if entry.get("name") == "transfer" and given is not None and math.isclose(float(given), mib):
            return int(entry["batch_size"])
    return None


def _cells(summary: pd.DataFrame, workload: str, batch_size: int | None = None) -> pd.DataFrame:
    """The goals' cells: ``workload`` at 2 workers (at ``batch_size``), every rank together.

    A cell whose next epoch was begun early (``prefetch_next_epoch`` "on") is a strategy of its
    own here, named with :data:`NEXT_EPOCH_EARLY`: it competes for "best", never stands in for
    the strategy's plain cell. A cell whose workers started in the background
    (``background_start`` "on") is left out: its measured windows run on a pool that is up by
    then, the same as its plain cell's, so it would only be a second draw of the same
    figure, and the best of two draws flatters. It differs in its first batch, which
    :func:`first_batch_s` judges.
    """
    rows = summary[(summary["workload"] == workload) & (summary["workers"] == WORKERS)]
    if "rank" in rows:
        rows = rows[rows["rank"] == ALL_RANKS]
    if batch_size is not None:
        rows = rows[rows["batch_size"] == batch_size]
    if "background_start" in rows:
        rows = rows[rows["background_start"].astype(str) != "on"]
    return named_by_options(rows)


def strategy_median(rows: pd.DataFrame, strategy: str, metric: str) -> float | None:
    """The strategy's median of ``metric`` in ``rows``; None when it has no such cell (or no value)."""
    match = rows.loc[rows["strategy"] == strategy, f"{metric}_median"] if f"{metric}_median" in rows else []
    values = [float(v) for v in match if pd.notna(v)]
    return values[0] if values else None


def measured_goal(key: str, value: float | None, basis: str, n: int | None) -> GoalResult:
    """Goal ``key`` judged on ``value``, resting on cells of at least ``n`` samples.

    No value: not measured (a cell is missing). Fewer than ``MIN_SAMPLES`` samples
    in a cell it rests on: a value, but no judgement (a median of one window can be
    anything; a goal read as "met" on it would mean nothing).
    """
    goal = GOALS[key]
    judged = value is not None and n is not None and n >= MIN_SAMPLES
    return GoalResult(key, goal.what, goal.goal, value, goal.met_by(value) if judged else None, basis, n)


def _ratio(key: str, top: float | None, bottom: float | None, basis: str, n: int | None) -> GoalResult:
    """Goal ``key`` on ``top / bottom`` (no value when either median is missing)."""
    if top is None or bottom is None or bottom <= 0:
        return measured_goal(key, None, basis, n)
    return measured_goal(key, top / bottom, basis, n)


def _n(rows: pd.DataFrame, *strategies: str | None) -> int | None:
    """The fewest measured samples among the cells of ``strategies`` in ``rows`` (None: none of them there)."""
    counts = [int(v) for s in strategies if s is not None for v in rows.loc[rows["strategy"] == s, "n"]]
    return min(counts) if counts else None


def _min_n(*counts: int | None) -> int | None:
    known = [c for c in counts if c is not None]
    return min(known) if known else None


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "missing"
    return (f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}") + unit


def transfer_goals(run: RunData, mib: float = TRANSFER_MIB) -> list[GoalResult]:
    """The ``mib`` MiB (4) transfer cells against R and against torch."""
    size = transfer_batch_size(run, mib)
    rows = _cells(run.summary, "transfer", size) if size is not None else run.summary.iloc[0:0]
    r_rate = copies_per_s(run.env, size) if size is not None else None
    where = f"transfer {mib:g} MiB = {size} tiles, {WORKERS} workers" if size else f"no {mib:g} MiB transfer cells"
    copying, zero = (
        strategy_median(rows, COPYING_SHM, "batches_per_s"),
        strategy_median(rows, ZERO_COPY_SHM, "batches_per_s"),
    )
    torch = strategy_median(rows, "torch", "batches_per_s")
    shm_modes = [v for v in (copying, zero) if v is not None]
    best = max(shm_modes) if shm_modes else None
    together = copies_together_per_s(run.env, size) if size is not None else None
    r_text = f"R {_fmt(r_rate, '/s')}" + (
        f", two-core copy bound {_fmt(together, '/s')} = {together / r_rate:.2f} R" if together and r_rate else ""
    )
    best_name = None if best is None else (ZERO_COPY_SHM if best == zero else COPYING_SHM)
    zero_goal = _of_r("zero_copy_shm_per_r", rows, ZERO_COPY_SHM, zero, r_rate, where, r_text)
    zero_goal = _of_bound(zero_goal, zero, together)
    return [
        _of_bound(_of_r("copying_shm_per_r", rows, COPYING_SHM, copying, r_rate, where, r_text), copying, together),
        _with_busy(zero_goal, rows, ZERO_COPY_SHM, zero),
        _ratio(
            "best_shm_per_torch",
            best,
            torch,
            f"{where}: best shm {_fmt(best, '/s')}, torch {_fmt(torch, '/s')}",
            _n(rows, best_name, "torch"),
        ),
    ]


def _of_bound(result: GoalResult, rate: float | None, together: float | None) -> GoalResult:
    """``result`` with the rate also stated against the two-core copy bound, where both are known."""
    if rate is None or not together:
        return result
    return replace(
        result, basis=f"{result.basis}; {rate / together:.2f} of the two-core copy bound ({_fmt(together, '/s')})"
    )


def _with_busy(result: GoalResult, rows: pd.DataFrame, strategy: str | None, rate: float | None) -> GoalResult:
    """``result`` with how busy ``strategy``'s workers were on their own work (its ``compute`` stage).

    The compute stage is summed over the workers, per batch: at ``rate`` batches/s the workers
    spend ``rate x compute`` of the cores' time on it, and could reach ``cores / compute`` if
    they did nothing else. What that leaves is waiting on hand-overs, not the work itself.
    The CPU of all the strategy's processes per batch (``cpu_s_per_batch``) says how busy the
    cores were: near 100%, the loader's own CPU, not waiting, is what is left to win.
    """
    compute_ms = strategy_median(rows, strategy, stage_column("compute")) if strategy else None
    if not compute_ms or rate is None:
        return result
    busy = rate * compute_ms / 1000.0 / WORKERS
    own_bound = WORKERS * 1000.0 / compute_ms
    cpu_s = strategy_median(rows, strategy, "cpu_s_per_batch")
    cpu = (
        f"; all its processes: {_fmt(cpu_s * 1000.0, ' ms')} of CPU a batch, the {WORKERS} cores "
        f"{rate * cpu_s / WORKERS:.0%} busy"
        if cpu_s
        else ""
    )
    return replace(
        result,
        basis=f"{result.basis}; {strategy}'s workers: compute stage {_fmt(compute_ms, ' ms')} per batch, busy "
        f"{busy:.0%} of the {WORKERS} cores on it ({_fmt(own_bound, '/s')} if they did nothing else){cpu}",
    )


def _with_side_by_side(result: GoalResult, env: dict[str, Any], rate: float | None) -> GoalResult:
    """``result`` with the bound measured side by side (env.json ``work``, :mod:`harness.workbound`), where known."""
    together_ms, alone_ms = lookup(env, "work.together_ms_per_batch"), lookup(env, "work.alone_ms_per_batch")
    processes = lookup(env, "work.processes")
    if not together_ms or not alone_ms or not processes or rate is None:
        return result
    bound = float(processes) * 1000.0 / float(together_ms)
    return replace(
        result,
        basis=f"{result.basis}; measured side by side: the per-image work takes {_fmt(float(together_ms), ' ms')} "
        f"a batch in each of {processes} processes at once ({_fmt(float(alone_ms), ' ms')} alone), a bound of "
        f"{_fmt(bound, '/s')}, {rate / bound:.2f} of it",
    )


def copies_together_per_s(env: dict[str, Any], batch_size: int) -> float | None:
    """The two-core copy bound for ``batch_size``: batches two processes copying side by side move per second."""
    gb_per_s = lookup(env, "memcpy.together.gb_per_s")
    r_rate = copies_per_s(env, batch_size)
    one_core = lookup(env, "memcpy.gb_per_s")
    if gb_per_s is None or r_rate is None or not one_core:
        return None
    return r_rate * float(gb_per_s) / float(one_core)  # R scales with the bandwidth: same batch bytes


def _of_r(
    key: str, rows: pd.DataFrame, strategy: str, rate: float | None, r_rate: float | None, where: str, r_text: str
) -> GoalResult:
    """A strategy's batches/s over R: paired per window where each process measured its own R (``of_r``),
    else the cell's median over the run's R."""
    paired = strategy_median(rows, strategy, "of_r")
    if paired is not None:
        basis = f"{where}: {strategy} {_fmt(rate, '/s')}; median of each window over R measured in its own process"
        return measured_goal(key, paired, basis, _n(rows, strategy))
    return _ratio(key, rate, r_rate, f"{where}: {strategy} {_fmt(rate, '/s')}, {r_text}", _n(rows, strategy))


def full_goals(run: RunData) -> list[GoalResult]:
    """The full workload at 2 workers: against the baseline, first batch, memory."""
    rows = _cells(run.summary, "full")
    where = f"full, {WORKERS} workers"
    base = strategy_median(rows, "baseline", "batches_per_s")
    if base is None:  # the baseline has no workers: any worker count is the same baseline
        base = strategy_median(run.summary[run.summary["workload"] == "full"], "baseline", "batches_per_s")
    rates = {s: strategy_median(rows, s, "batches_per_s") for s in rows["strategy"].unique() if s != "baseline"}
    rates = {s: r for s, r in rates.items() if r is not None}
    best = max(rates, key=rates.__getitem__) if rates else None
    multi = {s: r for s, r in rates.items() if worker_processes(s)}
    slowest = min(multi, key=multi.__getitem__) if multi else None
    below = sorted(s for s, r in multi.items() if base and r < base)
    explained = below_baseline_explanations(run)
    first = first_batch_s(run)
    base_first = first.get("baseline")
    late, latest = slowest_first_batch(first)
    shm_pss, torch_pss = (
        strategy_median(rows, COPYING_SHM, "pss_peak_mb"),
        strategy_median(rows, "torch", "pss_peak_mb"),
    )
    best_rate = rates.get(best) if best else None
    slowest_rate = multi.get(slowest) if slowest else None
    base_n = _n(rows, "baseline") or _n(run.summary[run.summary["workload"] == "full"], "baseline")
    slowest_goal = _ratio(
        "slowest_multiprocess_full_per_baseline",
        slowest_rate,
        base,
        f"{where}: {slowest or 'no multi-process strategy'} {_fmt(slowest_rate, '/s')}"
        + (f"; below baseline: {', '.join(below)}" if below else ""),
        _min_n(_n(rows, slowest), base_n),
    )
    if below and slowest_goal.met is not None:
        # Below the baseline only "with a measured explanation": each must have one that accounts for it.
        unexplained = [s for s in below if s not in explained or not explained[s].accounts]
        slowest_goal = replace(
            slowest_goal,
            goal=">= 1, or explained",
            met=not unexplained,
            basis=slowest_goal.basis
            + (f" (not explained: {', '.join(unexplained)})" if unexplained else ", each explained below the table"),
        )
    if latest is None:
        first_goal = measured_goal(FIRST_BATCH_KEY, None, f"{where}: missing", None)
    else:
        # One value per process: the goal is judged on the cells' samples like the others.
        first_goal = measured_goal(
            FIRST_BATCH_KEY,
            late[latest],
            f"{where}: slowest {latest} {first[latest]:.3f} s, baseline {base_first:.3f} s "
            "(make_generator to the first epoch's first batch; each strategy at its quickest start)",
            _min_n(_n(rows, latest), base_n),
        )
    compute_ms = strategy_median(rows, "baseline", stage_column("compute"))
    if compute_ms is None:  # the baseline has no workers: any worker count is the same baseline
        full_rows = run.summary[run.summary["workload"] == "full"]
        compute_ms = strategy_median(full_rows, "baseline", stage_column("compute"))
    bound = WORKERS * 1000.0 / compute_ms if compute_ms else None
    return [
        _ratio(
            "best_full_per_baseline",
            best_rate,
            base,
            f"{where}: {best or 'no strategy'} {_fmt(best_rate, '/s')}, baseline {_fmt(base, '/s')}",
            _min_n(_n(rows, best), base_n),
        ),
        _with_side_by_side(
            _with_busy(
                _ratio(
                    "best_full_per_compute_bound",
                    best_rate,
                    bound,
                    f"{where}: {best or 'no strategy'} {_fmt(best_rate, '/s')}, bound {_fmt(bound, '/s')} = "
                    f"{WORKERS} cores / the baseline's compute stage, {_fmt(compute_ms, ' ms')} per batch"
                    if bound
                    else f"{where}: the baseline has no compute stage time",
                    _min_n(_n(rows, best), base_n),
                ),
                rows,
                best,
                best_rate,
            ),
            run.env,
            best_rate,
        ),
        slowest_goal,
        first_goal,
        _ratio(
            "pss_shm_per_torch",
            shm_pss,
            torch_pss,
            f"{where}: shm {_fmt(shm_pss, ' MB')}, torch {_fmt(torch_pss, ' MB')}",
            _n(rows, COPYING_SHM, "torch"),
        ),
    ]


def slowest_first_batch(first: dict[str, float]) -> tuple[dict[str, float], str | None]:
    """Each multi-process cell's first batch minus the baseline's, and the cell the goal is judged on.

    ``first``: :func:`first_batch_s`. The goal asks every multi-process strategy, each at its
    quickest way of starting (``background_start`` is an option of the strategy): the
    slowest of those quickest cells. No baseline: nothing to judge.
    """
    base = first.get("baseline")
    if base is None:
        return {}, None
    late = {s: t - base for s, t in first.items() if worker_processes(s)}
    quickest: dict[str, str] = {}
    for name, delta in late.items():
        strategy = base_strategy(name)
        if strategy not in quickest or delta < late[quickest[strategy]]:
            quickest[strategy] = name
    return late, (max(quickest.values(), key=late.__getitem__) if quickest else None)


def first_batch_s(run: RunData) -> dict[str, float]:
    """Per strategy, its cells named by their options (full workload, 2 workers; the baseline at any): median
    over processes of the time from the ``make_generator`` call to the warm-up epoch's first batch.

    That is what a user waits, forkserver and imports included, and whatever the generator
    does meanwhile (a pool started in the background); the measured windows' first batches
    come from a warm pool. A run recorded before that time was (``first_batch_since_start_s``)
    counts start-up + the first batch's wait.
    """
    rows = named_by_options(run.samples)
    at_workers = (rows["workers"] == WORKERS) | (rows["strategy"] == "baseline")  # the baseline has no workers
    rows = rows[(rows["workload"] == "full") & at_workers & rows["warmup"].astype(bool)]
    if "rank" in rows:
        rows = rows[rows["rank"] == ALL_RANKS]
    if rows.empty or "startup_s" not in rows or "time_to_first_batch_s" not in rows:
        return {}
    total = rows["startup_s"].astype(float) + rows["time_to_first_batch_s"].astype(float)
    if "first_batch_since_start_s" in rows:  # measured on one clock, the instrument's steps between included
        total = rows["first_batch_since_start_s"].astype(float).fillna(total)
    return {str(s): float(v) for s, v in total.groupby(rows["strategy"]).median().items() if pd.notna(v)}


def stage_goal(run: RunData) -> GoalResult:
    """Which strategies report stage times (measured, not guessed)."""
    rows = measured(run.samples)
    strategies = sorted(rows["strategy"].unique())
    if "stage_ms_per_batch" not in rows:
        timed: list[str] = []
    else:
        has = rows["stage_ms_per_batch"].map(lambda v: isinstance(v, dict) and len(v) > 0)
        timed = sorted(rows.loc[has, "strategy"].unique())
    missing = [s for s in strategies if s not in timed]
    basis = f"stage timers in {len(timed)} of {len(strategies)} strategies" + (
        f"; none from {', '.join(missing)}" if missing else ""
    )
    n = _n(run.summary, *strategies) if strategies else None
    return measured_goal("stage_timed_share", len(timed) / len(strategies) if strategies else None, basis, n)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a multi-process strategy is below the baseline, and whether that accounts for the figure."""

    text: str
    accounts: bool  # the computed bound is within EXPLAINED_WITHIN of the measured rate


# A bound explains a measured rate when the rate reaches this share of it: a bound far above
# the measurement does not say why the measurement is so low.
EXPLAINED_WITHIN = 0.15


def below_baseline_explanations(run: RunData) -> dict[str, Explanation]:
    """The proviso of the slowest-strategy goal: each multi-process strategy below the baseline -> why, measured.

    The explanation is CPU: a strategy whose processes together spend ``c`` seconds of
    CPU per batch cannot deliver more than ``cores / c`` batches/s, however its work is
    spread. It accounts for the figure only when the measured rate is within
    ``EXPLAINED_WITHIN`` (15%) of that bound; otherwise it says how much is left
    unexplained (time blocked, not spent). The baseline's own line is the check that
    the bound is tight (one core, its own CPU per batch). The stage timers say which
    stages the extra CPU goes to.
    """
    rows = _cells(run.summary, "full")
    full = run.summary[run.summary["workload"] == "full"]
    base = strategy_median(rows, "baseline", "batches_per_s") or strategy_median(full, "baseline", "batches_per_s")
    base_cpu = strategy_median(rows, "baseline", "cpu_s_per_batch") or strategy_median(
        full, "baseline", "cpu_s_per_batch"
    )
    cores = lookup(run.env, "machine.cores_logical")
    if not base or not base_cpu or not cores:
        return {}
    explanations: dict[str, Explanation] = {}
    for strategy in sorted(rows["strategy"].unique()):
        rate, cpu = strategy_median(rows, strategy, "batches_per_s"), strategy_median(rows, strategy, "cpu_s_per_batch")
        if not worker_processes(strategy) or rate is None or cpu is None or rate >= base:
            continue
        extra = _extra_stages(rows, full, strategy)
        where = ", ".join(f"{stage} +{ms - base_ms:.1f} ms ({ms:.1f} vs {base_ms:.1f})" for stage, ms, base_ms in extra)
        bound = cores / cpu
        accounts = rate >= (1 - EXPLAINED_WITHIN) * bound
        verdict = (
            f"The bound accounts for the measured rate ({rate / bound:.0%} of it)."
            if accounts
            else f"Not explained: the bound is {bound:.0f} but it measured {rate:.1f} ({rate / bound:.0%} of it); "
            f"{1 - rate / bound:.0%} of the bound is lost elsewhere than in CPU (waiting, contention)."
        )
        text = (
            f"{strategy}: {rate:.1f} batches/s = {rate / base:.2f}x baseline. Its processes spend "
            f"{cpu * 1e3:.1f} ms of CPU per batch, {cpu / base_cpu:.1f}x the baseline's {base_cpu * 1e3:.1f} ms, "
            f"so even spread perfectly over {cores} cores it could not pass {bound:.0f} batches/s (the "
            f"same bound for the baseline's one core: {1 / base_cpu:.0f}, measured {base:.0f})"
            + (f"; its stage timers put the extra per batch in {where}" if where else "")
            + ". "
            + verdict
        )
        explanations[strategy] = Explanation(text, accounts)
    return explanations


# A stage counts as where a strategy's extra time goes when it exceeds the baseline's by this much per batch.
EXTRA_STAGE_MS = 0.5


def _extra_stages(rows: pd.DataFrame, full: pd.DataFrame, strategy: str) -> list[tuple[str, float, float]]:
    """(stage, strategy's ms, baseline's ms) per batch for the CPU stages where ``strategy`` exceeds the baseline.

    ``wait`` is left out: it is time blocked, not CPU. Summary medians, full workload.
    """
    out = []
    for stage in ("compute", "serialize", "transfer", "assemble"):
        ms = strategy_median(rows, strategy, stage_column(stage))
        base_ms = strategy_median(rows, "baseline", stage_column(stage))
        if base_ms is None:
            base_ms = strategy_median(full, "baseline", stage_column(stage))
        if ms is not None and ms - (base_ms or 0.0) > EXTRA_STAGE_MS:
            out.append((stage, ms, base_ms or 0.0))
    return out


def first_batch_line(run: RunData) -> str | None:
    """The first-batch goal per strategy: every multi-process strategy's first batch minus the baseline's."""
    late, _ = slowest_first_batch(first_batch_s(run))
    if not late:
        return None
    return (
        "First batch minus the baseline's, start-up included: "
        + ", ".join(f"{s} {d:+.2f} s" for s, d in sorted(late.items()))
        + "."
    )


def performance_goals(run: RunData, transfer_mib: float = TRANSFER_MIB) -> list[GoalResult]:
    """Every goal of :data:`GOALS`, measured on ``run`` (the transfer ones at ``transfer_mib`` MiB batches)."""
    results = {r.key: r for r in [*transfer_goals(run, transfer_mib), *full_goals(run), stage_goal(run)]}
    return [results[key] for key in GOALS]
