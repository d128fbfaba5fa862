"""A small, seeded, synthetic results folder in the schema_version 1 layout, for report tests.

Plausible numbers for a 2-core machine (shared memory fastest, queue slowest, torch
heavy in memory and start-up), warm-up epochs flagged, per-batch wait lists and
memory traces, an independently computed summary.csv (NumPy, not the report's
pandas code) and an optional faults.jsonl with a few dirty cells. Knobs plant what a
test needs: ``factors`` scales a strategy's throughput (a regression), ``noise`` sets
the epoch-to-epoch spread, ``noisy`` makes chosen strategies unstable,
``transfer_sizes`` adds ``transfer``-workload cells at those batch sizes (tiles),
``stage_strategies`` gives those strategies stage times per batch.

Also a script, to look at a report by eye::

    .venv/bin/python tests/report_fixtures.py /tmp/synthetic-run && .venv/bin/ipcbench report /tmp/synthetic-run
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from harness.results import write_summary

BATCH_SIZE, TILE, CHANNELS = 32, 256, 2
BATCH_BYTES = BATCH_SIZE * CHANNELS * TILE * TILE * 2 + BATCH_SIZE * TILE * TILE  # uint16 data + uint8 masks
STRATEGIES = ("baseline", "pipe", "queue", "shm", "torch", "threads")
# batches/s at one worker, and the gain from each doubling of workers
RATE = {"baseline": 40.0, "pipe": 30.0, "queue": 22.0, "shm": 45.0, "torch": 38.0, "threads": 28.0}
GAIN = {"baseline": 1.0, "pipe": 1.7, "queue": 1.5, "shm": 1.85, "torch": 1.75, "threads": 1.1}
STARTUP_S = {"baseline": 0.0004, "pipe": 0.18, "queue": 0.2, "shm": 0.22, "torch": 0.9, "threads": 0.002}
SHUTDOWN_S = {"baseline": 0.0002, "pipe": 0.03, "queue": 0.06, "shm": 0.04, "torch": 0.12, "threads": 0.004}
PSS_MB = {
    "baseline": (210, 0),
    "pipe": (210, 95),
    "queue": (210, 110),
    "shm": (200, 90),
    "torch": (420, 260),
    "threads": (260, 0),
}
CPU_S = {"baseline": 0.022, "pipe": 0.030, "queue": 0.057, "shm": 0.025, "torch": 0.032, "threads": 0.026}
# transfer workload: batches/s of a 32-tile batch at two workers (inversely proportional to the batch size)
TRANSFER_RATE = {"baseline": 900.0, "pipe": 200.0, "queue": 90.0, "shm": 1100.0, "torch": 120.0, "threads": 700.0}
GB_PER_S = 9.9  # the fixture machine's memcpy
# ms per batch by stage; the baseline computes inline, so it has only compute and assemble
STAGE_MS = {
    "baseline": {"compute": 20.0, "assemble": 1.5},
    "pipe": {"compute": 24.0, "serialize": 2.0, "transfer": 6.0, "assemble": 1.5, "wait": 3.0},
    "shm": {"compute": 24.0, "transfer": 2.5, "assemble": 1.5, "wait": 4.0},
}


def write_results(
    root: Path,
    *,
    seed: int = 0,
    strategies: tuple[str, ...] = STRATEGIES,
    workers: tuple[int, ...] = (1, 2),
    repeats: int = 2,
    epochs: int = 4,
    batches: int = 40,
    noise: float = 0.02,
    factors: dict[str, float] | None = None,
    noisy: dict[str, float] | None = None,
    faults: bool = True,
    summary: bool = True,
    run_id: str = "synthetic",
    transfer_sizes: tuple[int, ...] = (),
    stage_strategies: tuple[str, ...] = (),
) -> Path:
    """Write env.json, samples.jsonl, summary.csv (optional), faults.jsonl (optional) into ``root``.

    Each process (strategy x workers x repeat) runs ``epochs`` epochs, the first a warm-up,
    so every cell has ``repeats * (epochs - 1)`` measured samples. The baseline is run at
    the smallest worker count only (it has no workers).
    """
    rng = np.random.default_rng(seed)
    factors, noisy = factors or {}, noisy or {}
    root.mkdir(parents=True, exist_ok=True)
    records = []
    loads = [("full", BATCH_SIZE), *(("transfer", size) for size in transfer_sizes)]
    for repeat in range(repeats):
        for strategy in strategies:  # interleaved: A B C ..., A B C ...
            for count in (min(workers),) if strategy == "baseline" else workers:
                for workload, batch_size in loads:
                    startup_s = STARTUP_S[strategy] * (1 + 0.25 * (count - 1)) * (1 + 0.05 * rng.standard_normal())
                    shutdown_s = SHUTDOWN_S[strategy] * (1 + 0.1 * rng.standard_normal())
                    for epoch in range(epochs):
                        record = _epoch(
                            rng,
                            run_id,
                            strategy,
                            count,
                            repeat,
                            epoch,
                            batches,
                            startup_s,
                            shutdown_s,
                            factors.get(strategy, 1.0),
                            noisy.get(strategy, noise),
                        )
                        if workload == "transfer":
                            _as_transfer(record, batch_size, count)
                        if strategy in stage_strategies:
                            record["stage_ms_per_batch"] = STAGE_MS.get(strategy, STAGE_MS["pipe"])
                        records.append(record)
    (root / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    env = _env(run_id, strategies, workers, repeats, epochs)
    if transfer_sizes:
        env["config"]["workloads"] = [{"name": name, "batch_size": size, "batch_mib": None} for name, size in loads]
        for entry in env["config"]["workloads"][1:]:
            entry["batch_mib"] = entry["batch_size"] * CHANNELS * TILE * TILE * 2 / 2**20
        env["memcpy"]["by_batch_size"] = [
            {"batch_size": size, "batch_bytes": batch_bytes(size), "batch_copies_per_s_one_core": copies_per_s(size)}
            for size in sorted({size for _, size in loads})
        ]
    (root / "env.json").write_text(json.dumps(env, indent=2))
    if summary:
        write_summary(root)  # the runner's own writer: the fixture stays in step with it
    if faults:
        _write_faults(root / "faults.jsonl", strategies)
    return root


def write_utilization_results(
    root: Path,
    utilization: dict[str, dict[float, float]],
    *,
    workers: tuple[int, ...] = (1, 2),
    repeats: int = 2,
    epochs: int = 4,
    jitter: float = 0.004,
    seed: int = 0,
) -> Path:
    """A run measured at several step times: ``utilization[strategy][step_ms]`` is the cell's utilization.

    That value holds at the largest worker count (each measured window within ``jitter``
    of it); at smaller counts the loader is slower, so the loop is half as busy. The
    baseline runs at the smallest count only, as :func:`write_results` does.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for repeat in range(repeats):
        for strategy, by_step in utilization.items():
            for step_ms, busy in by_step.items():
                for count in (min(workers),) if strategy == "baseline" else workers:
                    level = busy if strategy == "baseline" or count == max(workers) else busy / 2
                    for epoch in range(epochs):
                        record = _epoch(rng, "utilization", strategy, count, repeat, epoch, 40, 0.1, 0.01, 1.0, 0.02)
                        value = level + jitter * (2 * rng.random() - 1)
                        record.update(step_ms=float(step_ms), consumer_utilization=min(max(value, 0.0), 1.0))
                        records.append(record)
    (root / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    strategies = tuple(utilization)
    env = _env("utilization", strategies, workers, repeats, epochs)
    env["config"]["step_ms"] = sorted({float(s) for by_step in utilization.values() for s in by_step})
    (root / "env.json").write_text(json.dumps(env, indent=2))
    write_summary(root)
    return root


def write_regime_results(
    root: Path,
    *,
    dataset: str,
    compression: str | None = None,
    cost_factor: float = 1.0,
    factors: dict[str, float] | None = None,
    strategies: tuple[str, ...] = STRATEGIES,
    workers: tuple[int, ...] = (1, 2),
    images_per_epoch: int | None = 8,
    seed: int = 0,
) -> Path:
    """One data regime's run: :func:`write_results` with every strategy's stage times, named ``dataset``.

    The baseline's compute stage is ``STAGE_MS["baseline"]["compute"] * cost_factor`` ms per
    batch; ``factors`` scale strategies' batches/s; each window lists ``images_per_epoch``
    images (None: no ``images`` field, as older runs); ``compression`` is recorded in
    env.json's dataset parameters (None: not recorded).
    """
    write_results(
        root,
        seed=seed,
        strategies=strategies,
        workers=workers,
        factors=factors,
        faults=False,
        summary=False,
        stage_strategies=strategies,
        run_id=f"regime-{dataset}",
    )
    records = [json.loads(line) for line in (root / "samples.jsonl").read_text().splitlines()]
    for record in records:
        record["dataset"] = dataset
        if record["strategy"] == "baseline":
            stages = dict(record["stage_ms_per_batch"])
            stages["compute"] = STAGE_MS["baseline"]["compute"] * cost_factor
            record["stage_ms_per_batch"] = stages
        if images_per_epoch is not None:
            record["images"] = list(range(images_per_epoch))
    (root / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    env = json.loads((root / "env.json").read_text())
    env["dataset"]["name"] = dataset
    if compression is not None:
        env["dataset"]["params"] = {"compression": compression}
    (root / "env.json").write_text(json.dumps(env, indent=2))
    write_summary(root)
    return root


def batch_bytes(batch_size: int) -> int:
    return batch_size * BATCH_BYTES // BATCH_SIZE


def copies_per_s(batch_size: int) -> float:
    """The fixture's R: batches of ``batch_size`` one core copies per second."""
    return GB_PER_S * 1e9 / batch_bytes(batch_size)


def _as_transfer(record: dict, batch_size: int, workers: int) -> None:
    """Turn a full-workload epoch record into a transfer one at ``batch_size`` (rates scaled, same noise)."""
    scale = record["batches_per_s"] / (RATE[record["strategy"]] * GAIN[record["strategy"]] ** np.log2(workers))
    rate = TRANSFER_RATE[record["strategy"]] * BATCH_SIZE / batch_size * scale
    record.update(
        workload="transfer",
        batch_size=batch_size,
        batches_per_s=rate,
        seconds=record["batches"] / rate,
        bytes=record["batches"] * batch_bytes(batch_size),
        mb_per_s=batch_bytes(batch_size) * rate / 1e6,
        checksum=record["checksum"] + f"-transfer{batch_size}",
    )


def _epoch(
    rng: np.random.Generator,
    run_id: str,
    strategy: str,
    workers: int,
    repeat: int,
    epoch: int,
    batches: int,
    startup_s: float,
    shutdown_s: float,
    factor: float,
    noise: float,
) -> dict:
    warmup = epoch == 0
    rate = RATE[strategy] * GAIN[strategy] ** np.log2(workers) * factor * (0.7 if warmup else 1.0)
    batches_per_s = max(rate * (1 + noise * rng.standard_normal()), 0.5)
    seconds = batches / batches_per_s
    period_ms = 1000.0 / batches_per_s
    if strategy == "baseline":
        waits = period_ms * rng.lognormal(0.0, 0.15, batches)  # every batch is made inside next()
    else:
        waits = period_ms * 0.4 * rng.lognormal(-1.0, 1.4, batches)  # mostly ready, sometimes a stall
    ttfb_s = (0.08 + 0.04 * workers if strategy != "baseline" else 0.09) * (1 + 0.1 * rng.standard_normal())
    waits[0] = ttfb_s * 1000.0
    base_mb, per_worker_mb = PSS_MB[strategy]
    pss_mb = (base_mb + per_worker_mb * workers) * (1 + 0.01 * rng.standard_normal())
    shm_mb = {"shm": 2 * workers * 48.6, "torch": 2 * workers * BATCH_BYTES / 1e6}.get(strategy, 0.0)
    times = np.linspace(0.0, seconds, 30)
    ramp = 1 - np.exp(-times / (0.1 * seconds))
    trace_pss = 150 + (pss_mb - 150) * ramp * (0.97 + 0.03 * np.sin(times * 9))
    trace_shm = shm_mb * ramp * (0.8 + 0.2 * np.abs(np.sin(times * 5)))
    checksum = hashlib.sha256(f"{epoch}".encode()).hexdigest()[:16]  # same batches for every strategy
    return {
        "schema_version": 1,
        "run_id": run_id,
        "strategy": strategy,
        "workers": workers,
        "prefetch": 2,
        "start_method": "forkserver",
        "batch_size": BATCH_SIZE,
        "tile": TILE,
        "dataset": "synth",
        "workload": "full",
        "step_ms": 0.0,
        "repeat": repeat,
        "epoch": epoch,
        "warmup": warmup,
        "batches": batches,
        "tiles": batches * BATCH_SIZE,
        "bytes": batches * BATCH_BYTES,
        "seconds": seconds,
        "batches_per_s": batches_per_s,
        "mb_per_s": batches * BATCH_BYTES / seconds / 1e6,
        "time_to_first_batch_s": ttfb_s,
        "startup_s": startup_s,
        "shutdown_s": shutdown_s,
        "wait_ms_p50": float(np.percentile(waits, 50)),
        "wait_ms_p95": float(np.percentile(waits, 95)),
        "wait_ms_p99": float(np.percentile(waits, 99)),
        "wait_ms_max": float(waits.max()),
        "wait_ms": [round(float(w), 5) for w in waits],
        "consumer_utilization": 0.0,
        "pss_peak_mb": pss_mb,
        "uss_peak_mb": pss_mb * 0.82,
        "shm_peak_mb": shm_mb,
        "cpu_s_per_batch": CPU_S[strategy] * (1 + 0.03 * rng.standard_normal()),
        "memory_trace": [
            [round(float(t), 4), round(float(p), 2), round(float(p * 0.82), 2), round(float(s), 2)]
            for t, p, s in zip(times, trace_pss, trace_shm, strict=True)
        ],
        "leaked_shm": 0,
        "leftover_processes": 0,
        "checksum": checksum,
    }


def _env(run_id: str, strategies: tuple[str, ...], workers: tuple[int, ...], repeats: int, epochs: int) -> dict:
    return {
        "schema_version": 1,
        "run_id": run_id,
        "created": "2026-01-15T10:20:30+00:00",
        "command": ["ipcbench", "run", "--dataset", "synth"],
        "machine": {
            "hostname": "bench-vm",
            "platform": "x86_64",
            "cpu_model": "AMD EPYC 7B13",
            "cores_logical": 2,
            "cores_physical": 1,
            "memory_total_mb": 24576,
            "shm_total_mb": 12288,
        },
        "os": "Linux 6.1.0",
        "python": "3.11.7",
        "packages": {"numpy": "2.4.6", "tifffile": "2025.1.1", "torch": "2.13.0", "ipcbench": "0.1.0"},
        "git": {"commit": "6ee9069a1b2c3d4e5f60718293a4b5c6d7e8f901", "dirty": True},
        "start_method": "forkserver",
        "dataset": {
            "path": "data/synth",
            "source": "synth",
            "fingerprint": "9f8e7d6c5b4a39281706",
            "images": 8,
            "shape": [2, 2700, 3600],
        },
        "config": {
            "batch_size": BATCH_SIZE,
            "tile": TILE,
            "prefetch": 2,
            "seed": 0,
            "start_method": "forkserver",
            "timeout": 30.0,
            "strategies": list(strategies),
            "workers": list(workers),
            "repeats": repeats,
            "epochs": epochs,
            "step_ms": 0.0,
            "workload": "full",
        },
        "memcpy": {
            "bytes": 67108864,
            "gb_per_s": GB_PER_S,
            "batch_copies_per_s_one_core": 9.9e9 / BATCH_BYTES,
            "samples": 7,
        },
        "loadavg_before": [0.21, 0.35, 0.4],
        "loadavg_after": [1.85, 1.2, 0.7],
        "thread_env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        "sampler": {"interval_s": 0.05, "overhead_fraction": 0.004},
    }


SCENARIOS = (
    "worker_raises",
    "worker_sigkill",
    "worker_exits_at_startup",
    "main_sigkill",
    "break_early",
    "gc_without_close",
)
DIRTY = {
    ("main_sigkill", "queue"): "1 worker process left 5 s after the main process died",
    ("worker_sigkill", "torch"): "leaked 2 shared-memory segments (psm_*, ipcbench_*)",
    ("gc_without_close", "threads"): "close() not called: thread still alive after 10 s",
}


def _write_faults(path: Path, strategies: tuple[str, ...]) -> None:
    lines = []
    for scenario in SCENARIOS:
        for strategy in strategies:
            if strategy == "baseline" and scenario not in ("worker_raises", "break_early", "gc_without_close"):
                continue  # no worker to kill: not a scenario for the baseline
            reason = DIRTY.get((scenario, strategy), "")
            lines.append(
                {
                    "scenario": scenario,
                    "strategy": strategy,
                    "start_method": "forkserver",
                    "clean": not reason,
                    "reason": reason,
                    "time_to_error_s": 0.05,
                    "shutdown_s": 0.03,
                    "error_type": "WorkerDiedError" if "kill" in scenario else "WorkerError",
                    "error_message": f"synthetic {scenario}",
                }
            )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic ipcbench results folder.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-faults", action="store_true")
    args = parser.parse_args()
    write_results(args.out, seed=args.seed, faults=not args.no_faults, noisy={"threads": 0.15})
    print(args.out)


if __name__ == "__main__":
    main()
