"""``ipcbench run --distributed``: one generator per torch.distributed rank, one results folder.

When one machine cannot feed the model, each training replica reads its own shard of
the images (``LoaderConfig.rank``/``world_size``; strategies.plan gives the ranks
disjoint shards and equal batch counts). This measures how fast every rank's loader
goes while all of them run at once, and what they achieve together. ``torchrun``
starts one process per rank and puts its place in the environment (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``)::

    torchrun --nproc-per-node 2 --master-port 29517 .venv/bin/ipcbench run --distributed \\
        --dataset data/real --strategies shm,pipe --workers 1 --epochs 3 --out results/dist

Every rank (rank 0 also owns the results folder)::

    init_process_group("gloo", "env://")
    all_gather_object(RankInfo)         hosts, and the run id and folder rank 0 chose;
                                        the same dataset on every rank, or an error
    for each measurement of the runner's interleaved plan:
        python -m harness.child SPEC    a fresh process, as in ``ipcbench run``, with
                                        this rank's rank and world_size
          before each epoch it stops at a gate ("gate" event, harness.child):
          all_reduce(MIN, ok)           a barrier that also says whether every rank is fine:
                                        all are -> GATE_GO, the ranks' clocks start together;
                                        one is not -> stop, so no rank waits for a dead peer
        all_gather_object(RankOutcome)  each rank's epochs, with their image indices
        rank 0: samples.jsonl           per-rank rows (rank "0", "1", ...) and one combined
                                        row per epoch (rank "all", see :func:`combine_epoch`)
    rank 0: env.json (a "distributed" section: world size, per-rank hosts), summary.csv,
            report; destroy_process_group() on every rank, whatever happened

A measurement fails as a whole: if any rank's measurement process fails, the others
are stopped at their next gate, no rows are written and ``failures.jsonl`` says which
rank failed and why. A rank whose measurement ended early still takes its part in the
epochs' collectives (saying "not ok"), so the ranks stay in step.

Gloo and loopback: gloo connects over the interface its host name resolves to. When
``MASTER_ADDR`` is a loopback address every rank is on this host, so ``GLOO_SOCKET_IFNAME``
defaults to ``lo``: that works offline and where the host name resolves to an address
the ranks cannot reach (containers, CI runners). A value the user set is kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from strategies.signals import exit_on_sigterm

from .child import GATE_GO
from .errors import IpcbenchError
from .measure import MAX_CPU_FRACTION, wait_stats
from .plan import Measurement, RunOptions, plan_measurements
from .results import ALL_RANKS, ENV_FILE, SAMPLES_FILE, SamplesWriter, WindowSample, read_samples, summarize, write_json
from .runner import (
    Failure,
    RunResult,
    append_failure,
    child_spec,
    finish_env,
    prepare_run_dir,
    run_child,
    samples_from,
)
from .session import RunRequest, build_options, build_report, canonical_command, dataset_specs, resolve_dataset

BACKEND = "gloo"  # CPU tensors only: the collectives carry flags and Python objects, not batches
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
LOOPBACK_ADDRESSES = ("127.0.0.1", "localhost", "::1")
LOOPBACK_INTERFACE = "lo"
# How long a rank waits in one collective. Long enough for local rank 0 to build the
# real dataset on a first run while the others wait, and for a peer's measurement
# process to be killed by its watchdog (runner.DEFAULT_WATCHDOG_S) and report. A rank
# process that hangs or dies is torchrun's to stop: it ends the whole group.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
GATE_STOP = b"s"  # on a measurement's gate: another rank failed, stop before the epoch


@dataclass(frozen=True, slots=True)
class RankInfo:
    """What one rank says about itself at the start (all_gather_object)."""

    rank: int
    local_rank: int
    host: str
    pid: int
    cpus: int | None
    gloo_socket_ifname: str | None
    dataset: tuple[str | None, int, tuple[int, ...]]  # fingerprint, image count, first image's shape
    run_id: str  # rank 0's is the run's
    run_dir: str  # rank 0's is the run's; "" on the others

    def as_env(self) -> dict[str, Any]:
        """env.json's record of this rank (the dataset, run id and folder are recorded once, for the run)."""
        return {
            name: getattr(self, name) for name in ("rank", "local_rank", "host", "pid", "cpus", "gloo_socket_ifname")
        }


@dataclass(frozen=True, slots=True)
class RankOutcome:
    """One rank's result of one measurement (all_gather_object)."""

    rank: int
    samples: tuple[WindowSample, ...]  # empty when the measurement failed
    error: str | None
    detail: str


def torchrun_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's variables; a clear error outside torchrun."""
    missing = [name for name in TORCHRUN_ENV if not environ.get(name)]
    if missing:
        raise IpcbenchError(
            f"--distributed needs the environment torchrun sets for each rank ({', '.join(missing)} "
            f"not set); run it under torchrun: torchrun --nproc-per-node 2 --master-port 29517 "
            f".venv/bin/ipcbench run --distributed --dataset DIR ..."
        )
    try:
        rank, world_size = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local_rank = int(environ.get("LOCAL_RANK", rank))
    except ValueError as exc:
        raise IpcbenchError(f"torchrun's RANK/WORLD_SIZE/LOCAL_RANK are not integers: {exc}") from exc
    if not 0 <= rank < world_size:
        raise IpcbenchError(f"RANK={rank} is not in [0, WORLD_SIZE={world_size})")
    return rank, world_size, local_rank


def use_loopback_if_local(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """``GLOO_SOCKET_IFNAME=lo`` when every rank is on this host (see the module docstring)."""
    if environ.get("MASTER_ADDR") in LOOPBACK_ADDRESSES and not environ.get("GLOO_SOCKET_IFNAME"):
        environ["GLOO_SOCKET_IFNAME"] = LOOPBACK_INTERFACE


# -- combining the ranks' figures --------------------------------------------------
def combine_epoch(rows: Sequence[WindowSample], hosts: Sequence[str]) -> WindowSample:
    """One epoch of every rank (``rows[r]`` is rank r's, on ``hosts[r]``) as the run's row (rank "all").

    Each rank feeds its own training replica, so rates and volumes add up:
    ``batches_per_s`` and ``mb_per_s`` are the sums of the ranks'. ``seconds``,
    ``time_to_first_batch_s``, ``startup_s`` and ``shutdown_s`` are the slowest rank's
    (the epochs started together at the gate; a step waits for every replica). Wait
    percentiles are over every rank's waits; ``cpu_s_per_batch`` is the total CPU over
    the total batches; ``consumer_utilization`` the ranks' mean. Memory: PSS and USS
    are sums of the ranks' peaks (disjoint process trees; an upper bound, as the peaks
    need not coincide); ``/dev/shm`` is one per host and every rank on a host sees all
    of it, so the largest peak of each host counts once. Per-batch stage times are
    batch-weighted means. The checksum hashes the ranks' checksums in rank order.
    Fields not named here (the cell and epoch identity) are rank 0's.
    """
    if not rows or len(rows) != len(hosts):
        raise ValueError(f"combine_epoch needs one row per rank: {len(rows)} rows, {len(hosts)} hosts")
    first = rows[0]
    batches = sum(r.batches for r in rows)
    waits = tuple(w for r in rows for w in r.wait_ms)
    stats = wait_stats(waits)
    shm_by_host: dict[str, float] = {}
    for row, host in zip(rows, hosts, strict=True):
        shm_by_host[host] = max(shm_by_host.get(host, 0.0), row.shm_peak_mb)
    shutdowns = [r.shutdown_s for r in rows]
    fulls = [r.checksum_full for r in rows]
    return dataclasses.replace(
        first,
        rank=ALL_RANKS,
        batches=batches,
        tiles=sum(r.tiles for r in rows),
        bytes=sum(r.bytes for r in rows),
        seconds=max(r.seconds for r in rows),
        batches_per_s=sum(r.batches_per_s for r in rows),
        mb_per_s=sum(r.mb_per_s for r in rows),
        time_to_first_batch_s=max(r.time_to_first_batch_s for r in rows),
        startup_s=max(r.startup_s for r in rows),
        shutdown_s=None if None in shutdowns else max(s for s in shutdowns if s is not None),
        wait_ms_p50=stats.p50_ms,
        wait_ms_p95=stats.p95_ms,
        wait_ms_p99=stats.p99_ms,
        wait_ms_max=stats.max_ms,
        wait_ms=waits,
        consumer_utilization=sum(r.consumer_utilization for r in rows) / len(rows),
        pss_peak_mb=sum(r.pss_peak_mb for r in rows),
        uss_peak_mb=sum(r.uss_peak_mb for r in rows),
        shm_peak_mb=sum(shm_by_host.values()),
        cpu_s_per_batch=sum(r.cpu_s_per_batch * r.batches for r in rows) / batches if batches else 0.0,
        memory_trace=(),  # one trace per rank, in the rank rows
        leaked_shm=sum(r.leaked_shm for r in rows),
        leftover_processes=sum(r.leftover_processes for r in rows),
        checksum=_hash_in_order(r.checksum for r in rows),
        checksum_full=None if None in fulls else _hash_in_order(str(f) for f in fulls),
        sampler_cpu_s=sum(r.sampler_cpu_s for r in rows),
        orphans_after_exit=sum(r.orphans_after_exit for r in rows),
        leaked_shm_after_exit=sum(r.leaked_shm_after_exit for r in rows),
        stage_ms_per_batch=_weighted_stages(rows),
        images=tuple(i for r in rows for i in r.images),
    )


def _weighted_stages(rows: Sequence[WindowSample]) -> dict[str, float] | None:
    """Per-batch stage times over every rank's batches (None unless every rank timed its stages)."""
    stages = [r.stage_ms_per_batch for r in rows]
    batches = sum(r.batches for r in rows)
    if any(s is None for s in stages) or not batches:
        return None
    names = dict.fromkeys(name for s in stages if s is not None for name in s)
    return {
        name: sum((s or {}).get(name, 0.0) * r.batches for s, r in zip(stages, rows, strict=True)) / batches
        for name in names
    }


def _hash_in_order(parts: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode() + b"\n")
    return h.hexdigest()


def combined_rows(outcomes: Sequence[RankOutcome], hosts: Sequence[str]) -> list[WindowSample]:
    """Every rank's rows, marked with its rank, then one combined row per epoch."""
    ranked = [[dataclasses.replace(s, rank=str(o.rank)) for s in o.samples] for o in outcomes]
    counts = {len(rows) for rows in ranked}
    if len(counts) != 1:
        raise IpcbenchError(f"the ranks measured different numbers of epochs ({sorted(counts)})")
    together = [combine_epoch(epoch_rows, hosts) for epoch_rows in zip(*ranked, strict=True)]
    return [row for rows in ranked for row in rows] + together


# -- one rank ------------------------------------------------------------------------
class Collectives:
    """The two collectives this module needs, on the torch modules imported under ``--distributed`` only."""

    def __init__(self, dist: Any, torch: Any) -> None:
        self.dist = dist
        self.torch = torch

    def all_ok(self, ok: bool) -> bool:
        """A barrier that returns whether every rank passed ``ok=True``."""
        flag = self.torch.tensor([int(ok)], dtype=self.torch.int32)
        self.dist.all_reduce(flag, op=self.dist.ReduceOp.MIN)
        return bool(flag.item())

    def gather(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * self.dist.get_world_size()
        self.dist.all_gather_object(values, value)
        return values


def measure_on_rank(
    options: RunOptions, measurement: Measurement, run_id: str, rank: int, collectives: Collectives
) -> RankOutcome:
    """One measurement process on this rank, its epochs gated with the other ranks'."""
    read_fd, write_fd = os.pipe()
    # One epoch a window on every rank, so that the ranks' windows are the same epochs.
    spec = dataclasses.replace(child_spec(options, measurement), gate_fd=read_fd, epochs_per_window=1)
    gates_total, gates = 1 + options.windows, 0

    def on_event(event: dict[str, Any]) -> None:
        nonlocal gates
        if event.get("event") == "gate":
            gates += 1
            answer = GATE_GO if collectives.all_ok(True) else GATE_STOP
            try:
                os.write(write_fd, answer)
            except BrokenPipeError:  # it died while the ranks met; run_child reports how
                pass

    try:
        outcome = run_child(spec, watchdog_s=options.watchdog_s, on_event=on_event)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    while gates < gates_total:  # ended early: take part in the gates it did not reach
        gates += 1
        collectives.all_ok(False)
    samples = tuple(samples_from(outcome, options, measurement, run_id))
    error = outcome.error
    if error is None and not samples:
        error = "the measurement was interrupted before it finished"
    return RankOutcome(rank, samples, error, outcome.detail)


def _mean_rate(samples: Sequence[WindowSample]) -> float | None:
    rates = [s.batches_per_s for s in samples if not s.warmup]
    return sum(rates) / len(rates) if rates else None


def progress_line(index: int, total: int, measurement: Measurement, outcomes: Sequence[RankOutcome]) -> str:
    """``[1/2] shm workers=1 repeat=0: rank 0 41.2, rank 1 40.8 -> 82.0 batches/s together``."""
    m = measurement
    head = f"[{index + 1}/{total}] {m.strategy} workers={m.workers} repeat={m.repeat}"
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        return f"{head}: FAILED " + "; ".join(f"rank {o.rank}: {o.error}" for o in failed)
    rates = [_mean_rate(o.samples) or 0.0 for o in outcomes]
    ranks = ", ".join(f"rank {o.rank} {rate:.1f}" for o, rate in zip(outcomes, rates, strict=True))
    return f"{head}: {ranks} -> {sum(rates):.1f} batches/s together"


def summary_table(summary: Any) -> list[str]:
    """One line per cell and rank: batches/s median [q25-q75] and n, the combined row last."""
    lines = []
    for _, r in summary.iterrows():
        who = "together" if r["rank"] == ALL_RANKS else f"rank {r['rank']}"
        lines.append(
            f"{r['strategy']:<10} workers={int(r['workers'])} {who:<9} "
            f"{r['batches_per_s_median']:8.1f} batches/s [{r['batches_per_s_q25']:.1f}-"
            f"{r['batches_per_s_q75']:.1f}]  n={int(r['n'])}"
        )
    return lines


def run_distributed(request: RunRequest, *, say: Callable[[str], None], show: Callable[[str], None]) -> int:
    """``ipcbench run --distributed`` on this rank (see the module docstring).

    Rank 0 speaks for the run: ``say`` gets its progress lines, ``show`` the summary
    table (the CLI prints them); the other ranks stay quiet, as torchrun would
    interleave their lines.
    """
    if len(dataset_specs(request.dataset)) > 1:
        raise IpcbenchError(f"--distributed measures one dataset; --dataset {request.dataset!r} names several")
    rank, world_size, local_rank = torchrun_env()
    try:
        import torch
        import torch.distributed as dist
    except ImportError as exc:
        raise IpcbenchError(f"--distributed needs torch (torch.distributed): {exc}") from exc
    use_loopback_if_local()
    previous = exit_on_sigterm()  # torchrun stops ranks with SIGTERM: unwind, closing the measurement
    try:
        dist.init_process_group(BACKEND, init_method="env://", timeout=COLLECTIVE_TIMEOUT)
        try:
            return _run(request, rank, world_size, local_rank, Collectives(dist, torch), say, show)
        finally:
            dist.destroy_process_group()
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True, slots=True)
class Setup:
    """What every rank agreed on before measuring."""

    options: RunOptions  # with this rank's rank and world_size
    info: dict[str, Any]  # envinfo.dataset_info of the dataset
    ranks: list[RankInfo]
    run_id: str
    run_dir: Path  # written by rank 0 only

    @property
    def hosts(self) -> list[str]:
        return [r.host for r in self.ranks]


def _set_up(
    request: RunRequest, rank: int, world_size: int, local_rank: int, collectives: Collectives, say: Any
) -> Setup:
    """The dataset (built once per host), the options, and the run id and folder rank 0 chose."""
    from .envinfo import dataset_info, run_id_for, utc_now

    # Local rank 0 builds a built-in dataset (once, cached); the others then find it.
    if local_rank != 0:
        collectives.all_ok(True)
    dataset, source = resolve_dataset(request.dataset, progress=lambda line: say(f"dataset: {line}"))
    if local_rank == 0:
        collectives.all_ok(True)
    info = dataset_info(dataset, source)
    options = build_options(request, dataset, source, info["shape"][0])
    options = dataclasses.replace(options, loader=options.loader.replace(rank=rank, world_size=world_size))
    run_id = run_id_for(utc_now())
    run_dir = None
    if rank == 0:
        run_dir = prepare_run_dir(request.run_dir(run_id))
    me = RankInfo(
        rank=rank,
        local_rank=local_rank,
        host=socket.gethostname(),
        pid=os.getpid(),
        cpus=os.cpu_count(),
        gloo_socket_ifname=os.environ.get("GLOO_SOCKET_IFNAME"),
        dataset=(info["fingerprint"], info["images"], tuple(info["shape"])),
        run_id=run_id,
        run_dir="" if run_dir is None else str(run_dir),
    )
    ranks: list[RankInfo] = collectives.gather(me)
    if len({r.dataset for r in ranks}) > 1:
        listed = "; ".join(f"rank {r.rank} on {r.host}: {r.dataset}" for r in ranks)
        raise IpcbenchError(f"the ranks see different datasets (fingerprint, images, shape): {listed}")
    return Setup(options, info, ranks, ranks[0].run_id, Path(ranks[0].run_dir))


def _write_env(request: RunRequest, setup: Setup, world_size: int) -> dict[str, Any]:
    """Rank 0: env.json as ``ipcbench run`` writes it, with a ``distributed`` section."""
    from .envinfo import collect_env, utc_now
    from .memcpy import measure_memcpy

    options, info = setup.options, setup.info
    batch_bytes = options.batch_bytes(info["shape"][0])
    nodes = len(set(setup.hosts))
    launcher = ["torchrun", f"--nnodes={nodes}", f"--nproc-per-node={world_size // nodes}"]
    ipcbench, run, *rest = canonical_command(options, request.dataset)
    env = collect_env(
        run_id=setup.run_id,
        created=utc_now(),
        command=[*launcher, ipcbench, run, "--distributed", *rest],
        start_method=options.loader.start_method,
        dataset=info,
        config={**options.config_dict(), "rank": ALL_RANKS},
        memcpy=measure_memcpy().as_dict(batch_bytes),
        sampler={"interval_s": options.sampler_interval_s, "max_cpu_fraction": MAX_CPU_FRACTION},
    )
    env["distributed"] = {
        "backend": BACKEND,
        "world_size": world_size,
        "master_addr": os.environ.get("MASTER_ADDR"),
        "master_port": os.environ.get("MASTER_PORT"),
        "ranks": [r.as_env() for r in setup.ranks],
        "combined": "rank 'all' rows: see harness.distributed.combine_epoch",
    }
    write_json(setup.run_dir / ENV_FILE, env)
    return env


def _run(
    request: RunRequest,
    rank: int,
    world_size: int,
    local_rank: int,
    collectives: Collectives,
    tell: Callable[[str], None],
    show: Callable[[str], None],
) -> int:
    lead = rank == 0
    started = time.monotonic()

    def say(line: str) -> None:
        if lead:
            tell(line)

    setup = _set_up(request, rank, world_size, local_rank, collectives, say)
    run_dir, run_id, hosts = setup.run_dir, setup.run_id, setup.hosts
    env = _write_env(request, setup, world_size) if lead else {}
    # Start together: rank 0's memcpy measurement must not overlap another rank's start-up.
    collectives.all_ok(True)
    plan = plan_measurements(setup.options)
    say(
        f"ipcbench run --distributed {run_id}: {world_size} ranks on {len(set(hosts))} host(s), "
        f"{len(plan)} measurements per rank, 1 warm-up + {setup.options.windows} epochs each -> {run_dir}"
    )

    writer = SamplesWriter(run_dir / SAMPLES_FILE)  # appended to by rank 0 only
    failures: list[Failure] = []
    finished = 0
    for measurement in plan:
        outcomes: list[RankOutcome] = collectives.gather(
            measure_on_rank(setup.options, measurement, run_id, rank, collectives)
        )
        failed = [
            Failure(measurement, f"rank {o.rank} on {hosts[o.rank]}: {o.error}", o.detail) for o in outcomes if o.error
        ]
        failures += failed
        finished += not failed
        if lead:
            say(progress_line(measurement.index, len(plan), measurement, outcomes))
            for failure in failed:
                append_failure(run_dir, failure, run_id)
            if not failed:
                writer.append(combined_rows(outcomes, hosts))
    if lead:
        result = RunResult(
            run_dir, len(plan), finished, writer.count, False, tuple(failures), time.monotonic() - started
        )
        finish_env(run_dir, env, result)
        summary = summarize(read_samples(run_dir / SAMPLES_FILE))
        if len(summary):
            show("\n".join(summary_table(summary)))
        if request.report and result.samples:
            say(build_report(run_dir))
        say(f"{run_dir}: {finished}/{len(plan)} measurements on {world_size} ranks, {time.monotonic() - started:.0f} s")
    # torchrun stops every rank once one exits with an error: wait until rank 0 has written the folder.
    collectives.all_ok(True)
    if failures and not finished:
        raise IpcbenchError(f"every measurement failed; the first: {failures[0].error}")
    return 1 if failures else 0
