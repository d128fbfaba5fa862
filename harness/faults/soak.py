"""Soak: create / iterate a few batches / break / close, many times per strategy, counting what stays.

::

    ipcbench soak --> for each strategy, a fresh process: python -m harness.faults.soak STRATEGY JSON
                        snapshot "start" -> warm-up cycles -> snapshot "warm" -> the other cycles
                        -> snapshot "end" -> one JSON line
                  --> soak.json (one SoakRecord per strategy), env.json, report.md

    a cycle: make_generator -> next() `batches` times -> break -> close()

The cyclic garbage collector is off during the cycles: descriptors and this process's
/dev/shm entries are counted after every cycle, before a collection runs, so what is
measured is what ``close()`` itself released (a generator kept alive by a reference
cycle must still hold nothing once closed), and the worst cycle counts. Collections
run only between cycles, after that count (see :func:`snapshot` for RSS).

A snapshot counts what a leak would grow: open file descriptors (``/proc/self/fd``), this
process's entries in /dev/shm, Python threads (``threading``) and OS threads
(``/proc/self/task``: torch's and NumPy's native threads too), live child processes
(``psutil``; the fork server and the resource tracker excepted: they serve every
generator of the process and persist by design) and the resident set (RSS).

The warm-up absorbs what is paid once per process (imports, the fork server, the
resource tracker, allocator pools). Growth from "warm" to "end" is judged against
:data:`BOUNDS`, absolute bounds over all the cycles after the warm-up: a leak of one
descriptor, segment, thread or process per cycle fails at once, and the RSS bound is
far below what keeping one batch per cycle would cost.

/dev/shm is shared with every other process of the machine, so only entries that are
this process's count: ``ipcbench_<pid>_*`` named after it (the main process owns every
segment), and any entry it has mapped (``/proc/self/maps``): a ``sem.mp-*`` semaphore
or ``psm_*`` segment whose object is still alive. (One created, closed and never
unlinked would escape; multiprocessing's finalizers unlink those when the object dies.)
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.results import ENV_FILE, SCHEMA_VERSION, SOAK_FILE, SoakRecord, write_atomic, write_json
from harness.supervisor import ProcessGroup

SHM_DIR = Path("/dev/shm")
# Allowed growth from the "warm" snapshot to the "end" one, whatever the cycle count.
BOUNDS: dict[str, float] = {
    "fds": 0,
    "shm_entries": 0,
    "threads": 0,
    "os_threads": 0,
    "children": 0,
    "rss_mb": 20.0,  # allocator noise; one 8 x 2 x 16 x 16 batch kept per cycle is 8 KiB, a pool of them MBs
}
# Counted after every cycle, before the cyclic garbage collector runs: their growth is
# the worst cycle's (what one close() left), not the last snapshot's.
PER_CYCLE = ("fds", "shm_entries")
# The generator of every cycle: tiny images, a few batches, the loaders' defaults otherwise.
SOAK_CONFIG: dict[str, Any] = {"batch_size": 8, "tile": 16, "workers": 2, "prefetch": 2, "seed": 0, "timeout": 10.0}
DEFAULT_CYCLES = 200
DEFAULT_WARMUP = 10
BATCHES_PER_CYCLE = 3
# One strategy's soak: 200 cycles of ~0.1 s (torch: ~0.5 s with the fork server preloaded).
STRATEGY_TIMEOUT_S = 300.0
# A snapshot waits this long at most for the last cycle's workers to be reaped.
SETTLE_S = 2.0
POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class Snapshot:
    fds: int
    shm_entries: int
    threads: int
    os_threads: int
    children: int
    rss_mb: float


# -- in the soak process -----------------------------------------------------------------
def _shm_entries() -> int:
    """Entries of /dev/shm that are this process's: named after it, or mapped by it."""
    try:
        names = os.listdir(SHM_DIR)
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return 0
    mapped = {line.rsplit("/dev/shm/", 1)[1].split()[0] for line in maps.splitlines() if "/dev/shm/" in line}
    return sum(1 for name in names if name.startswith(f"ipcbench_{os.getpid()}_") or name in mapped)


def _children() -> list[int]:
    """Live child processes (recursively) other than the fork server and the resource tracker."""
    import psutil

    from .probe import infrastructure_pids

    infrastructure = set(infrastructure_pids())
    live = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid not in infrastructure and child.status() != psutil.STATUS_ZOMBIE:
                live.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return live


def held_after_close() -> dict[str, int]:
    """What a closed generator could still hold, counted after every cycle (:data:`PER_CYCLE`)."""
    return {"fds": len(os.listdir("/proc/self/fd")), "shm_entries": _shm_entries()}


def snapshot() -> Snapshot:
    """Count what this process holds now, after letting dead workers go.

    Descriptors, /dev/shm, threads and children are counted with the garbage not
    collected (what ``close()`` released); RSS after a collection, because a library
    under the loaders leaves cyclic garbage that only the collector frees (tifffile:
    every ``TiffFile`` and its pages form a cycle, ~4 KB an opened file): without it,
    RSS would grow with every file opened, which is not a leak of a generator's.
    """
    import psutil

    deadline = time.monotonic() + SETTLE_S
    while (children := _children()) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    counts = {
        **held_after_close(),
        "threads": threading.active_count(),
        "os_threads": len(os.listdir("/proc/self/task")),
        "children": len(children),
    }
    gc.collect()
    return Snapshot(**counts, rss_mb=round(psutil.Process().memory_info().rss / 2**20, 2))


def cycle(strategy: str, dataset: Path, config: Any, batches: int) -> None:
    """Create, take ``batches`` batches, break, close: what a training script does on every restart."""
    from strategies import make_generator

    gen = make_generator(strategy, dataset, config)
    try:
        for i, _ in enumerate(gen):
            if i + 1 == batches:
                break
    finally:
        gen.close()


def soak(strategy: str, dataset: Path, *, cycles: int, warmup: int, start_method: str) -> SoakRecord:
    from strategies import LoaderConfig

    config = LoaderConfig(**SOAK_CONFIG, start_method=start_method)
    gc.collect()
    # The cyclic garbage collector runs only after each cycle has been counted: what
    # close() did not release is seen, even where the collector would release it later.
    gc.disable()
    try:
        start = snapshot()
        started = time.monotonic()
        for _ in range(warmup):
            cycle(strategy, dataset, config, BATCHES_PER_CYCLE)
            gc.collect()
        warm = snapshot()
        most = {key: getattr(warm, key) for key in PER_CYCLE}
        for _ in range(cycles - warmup):
            cycle(strategy, dataset, config, BATCHES_PER_CYCLE)
            for key, held in held_after_close().items():
                most[key] = max(most[key], held)
            gc.collect()
        end = snapshot()
        seconds = time.monotonic() - started
    finally:
        gc.enable()
    growth = {k: round(getattr(end, k) - getattr(warm, k), 2) for k in BOUNDS}
    growth.update({k: most[k] - getattr(warm, k) for k in PER_CYCLE})  # the worst cycle, not only the last
    failures = [f"{k} grew by {growth[k]:g} (bound {bound:g})" for k, bound in BOUNDS.items() if growth[k] > bound]
    return SoakRecord(
        schema_version=SCHEMA_VERSION,
        strategy=strategy,
        start_method=start_method,
        cycles=cycles,
        warmup=warmup,
        batches_per_cycle=BATCHES_PER_CYCLE,
        seconds=round(seconds, 2),
        start=asdict(start),
        warm=asdict(warm),
        end=asdict(end),
        growth=growth,
        passed=not failures,
        failures=failures,
    )


def main(argv: list[str]) -> int:
    strategy, raw = argv
    args = json.loads(raw)
    record = soak(
        strategy, Path(args["dataset"]), cycles=args["cycles"], warmup=args["warmup"], start_method=args["start_method"]
    )
    print(json.dumps(asdict(record)), flush=True)
    return 0


# -- the command's side --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SoakOptions:
    strategies: tuple[str, ...]
    cycles: int = DEFAULT_CYCLES
    warmup: int = DEFAULT_WARMUP
    start_method: str = "forkserver"

    def __post_init__(self) -> None:
        from strategies import resolve_strategies

        if not self.strategies:
            raise ValueError("no strategy chosen")
        resolve_strategies(self.strategies)
        if self.start_method not in ("fork", "forkserver", "spawn"):
            raise ValueError(f"unknown start method {self.start_method!r}; choose from fork, forkserver, spawn")
        if self.warmup < 1:
            raise ValueError(f"{self.warmup=} must be >= 1: the first cycle pays one-time costs")
        if self.cycles <= self.warmup:
            raise ValueError(f"{self.cycles=} must exceed {self.warmup=}: growth is measured after the warm-up")


def soak_dataset(folder: Path) -> Path:
    """Four 64 x 96 two-channel images: a cycle costs the generator's lifecycle, not the work."""
    from harness.datasets.synth import SynthParams, build

    build(folder, SynthParams(images=4, height=64, width=96), lambda line: None)
    return folder


def run_strategy(strategy: str, dataset: Path, options: SoakOptions, timeout_s: float) -> SoakRecord:
    """Soak ``strategy`` in a fresh process; its crash or overrun is an error naming the strategy."""
    from harness.errors import IpcbenchError

    args = {"dataset": str(dataset), "cycles": options.cycles, "warmup": options.warmup}
    command = [
        sys.executable,
        "-m",
        "harness.faults.soak",
        strategy,
        json.dumps({**args, "start_method": options.start_method}),
    ]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        group = ProcessGroup.start(command, stdout=out, stderr=err, cwd=Path(__file__).resolve().parents[2])
        finished = group.wait(timeout_s)
        if not finished:
            group.kill()
        left = group.reap()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if not finished:
        raise IpcbenchError(f"soak of {strategy} overran its {timeout_s:g} s bound")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if group.returncode != 0 or not lines:
        tail = (stderr.strip().splitlines() or ["no stderr"])[-1]
        raise IpcbenchError(f"soak of {strategy} failed (exit status {group.returncode}): {tail}")
    if left:
        raise IpcbenchError(f"soak of {strategy} left processes behind after it exited: {left}")
    return SoakRecord(**json.loads(lines[-1]))


def run_soak(
    options: SoakOptions,
    out_dir: Path,
    *,
    command: list[str],
    progress: Callable[[str], None] = lambda line: None,
    timeout_s: float = STRATEGY_TIMEOUT_S,
) -> list[SoakRecord]:
    """Soak every strategy into ``out_dir`` (soak.json, env.json, report.md)."""
    from harness.envinfo import collect_env, dataset_info, loadavg, run_id_for, utc_now

    out_dir.mkdir(parents=True, exist_ok=True)
    created = utc_now()
    records = []
    with tempfile.TemporaryDirectory(prefix="ipcbench-soak-data-") as tmp:
        dataset = soak_dataset(Path(tmp) / "soak")
        env = collect_env(
            run_id=run_id_for(created),
            created=created,
            command=command,
            start_method=options.start_method,
            dataset=dataset_info(dataset, "synth"),
            config={**SOAK_CONFIG, **asdict(options), "batches_per_cycle": BATCHES_PER_CYCLE, "bounds": BOUNDS},
            memcpy=None,
            sampler={},
        )
        for number, strategy in enumerate(options.strategies, 1):
            record = run_strategy(strategy, dataset, options, timeout_s)
            records.append(record)
            verdict = "pass" if record.passed else "FAIL: " + "; ".join(record.failures)
            progress(f"[{number}/{len(options.strategies)}] {strategy}: {verdict} ({record.seconds:.1f} s)")
    env["loadavg_after"] = loadavg()
    write_json(out_dir / ENV_FILE, env)
    write_json(out_dir / SOAK_FILE, [asdict(r) for r in records])
    write_atomic(out_dir / "report.md", ("\n".join(soak_lines(records)) + "\n").encode())
    return records


def soak_lines(records: list[SoakRecord]) -> list[str]:
    """A markdown report: the bounds, then one row per strategy (warm -> end, and the growth)."""
    passed = sum(1 for r in records if r.passed)
    bounds = ", ".join(f"{k} {v:g}" for k, v in BOUNDS.items())
    lines = [
        "# Soak",
        "",
        f"{passed} of {len(records)} strategies held every bound over their cycles after the warm-up "
        f"(growth allowed: {bounds}).",
        "",
        "| strategy | cycles | s | fds | /dev/shm | threads | OS threads | children | RSS MiB | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        cells = [f"{r.warm[k]:g} → {r.end[k]:g} ({r.growth[k]:+g})" for k in BOUNDS]
        verdict = "pass" if r.passed else "**FAIL**: " + "; ".join(r.failures)
        lines.append(f"| {r.strategy} | {r.cycles} | {r.seconds:.0f} | " + " | ".join(cells) + f" | {verdict} |")
    lines += [
        "",
        f"Each cycle: create, {BATCHES_PER_CYCLE} batches, break, close; counts are taken after "
        f"{records[0].warmup if records else DEFAULT_WARMUP} warm-up cycles and at the end; descriptors "
        "and /dev/shm entries after every cycle, before the cyclic garbage collector runs, so that only "
        "what close() released counts, and the worst cycle is the growth "
        "(fork server and resource tracker not counted as children).",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
