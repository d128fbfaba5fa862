"""The shutdown-cleanliness matrix: every scenario x strategy (x start method), judged from outside.

For each cell::

    snapshot /dev/shm --> python -m harness.faults.scenarios ... (own session = own process group)
                            stdout/stderr -> temporary files, polled; "ready" -> SIGINT the group
                            or SIGKILL the main process; past the cell's bound -> SIGKILL the group
                      --> wait for the process group to vanish, /dev/shm to be as before
                      --> FaultRecord(clean, reason, time_to_error_s, shutdown_s, error_*)

Clean (docs/design.md section 8): the expected error surfaced, within the timeout, naming the
worker (and with its traceback where the worker raised); no process of the group is
left (workers, and after ``kill_main`` the fork server and resource tracker too); no
new ``ipcbench_*``/``psm_*``/``sem.mp-*`` entry in /dev/shm; stderr has no resource_tracker or
"leaked" warning and no traceback; the scenario exited by itself within its bound.
Leftovers are killed and unlinked after they are recorded, so one cell cannot spoil
the next.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.results import ENV_FILE, FAULTS_FILE, SCHEMA_VERSION, FaultRecord, append_lines, write_json
from harness.supervisor import GROUP_EXIT_GRACE_S, ProcessGroup
from strategies.constants import KILL_GRACE_S, STOP_GRACE_S, TERMINATE_GRACE_S

from .scenarios import BASE_CONFIG, DEFAULT_SCENARIOS, SCENARIOS

SHM_DIR = Path("/dev/shm")
# close() escalates stop -> terminate -> kill; 2 s of scheduling noise on a busy 2-core machine.
CLOSE_BOUND_S = STOP_GRACE_S + TERMINATE_GRACE_S + KILL_GRACE_S + 2.0
# A scenario process: interpreter + imports (torch: seconds) + the play; far above a healthy cell.
CELL_TIMEOUT_S = 60.0
# After the scenario ends, how long its workers, fork server and tracker may take to follow.
AFTERMATH_S = GROUP_EXIT_GRACE_S
# What the matrix does to a scenario process once it says it is ready (Scenario.action):
# the signal, and whether to the whole process group or to the main process alone.
ACTIONS = {
    "sigint_group": (signal.SIGINT, True),  # Ctrl-C in a terminal: every process of the group
    "sigterm_main": (signal.SIGTERM, False),  # kill PID, a scheduler's time limit, docker stop
    "kill_main": (signal.SIGKILL, False),  # the main process dies; nothing of the run may survive it
}
POLL_S = 0.05
WORKER_IDENTITY = re.compile(r"worker \d+ \(pid \d+\)")
STDERR_MARKERS = ("resource_tracker", "leaked", "Traceback")
STDERR_QUOTE_CHARS = 160  # how much of the offending stderr line a reason quotes


@dataclass(frozen=True, slots=True)
class MatrixOptions:
    strategies: tuple[str, ...]
    start_methods: tuple[str, ...] = ("forkserver",)
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    cell_timeout_s: float = CELL_TIMEOUT_S

    def __post_init__(self) -> None:
        from strategies import STRATEGIES, resolve_strategies

        for kind, values, known in (
            ("strategy", self.strategies, tuple(STRATEGIES)),
            ("start method", self.start_methods, ("fork", "forkserver", "spawn")),
            ("scenario", self.scenarios, tuple(SCENARIOS)),
        ):
            if not values:
                raise ValueError(f"no {kind} chosen")
            for value in values:
                if value not in known:
                    raise ValueError(f"unknown {kind} {value!r}; choose from {', '.join(known)}")
        resolve_strategies(self.strategies)  # a peer whose library is missing: the pip line
        if self.cell_timeout_s <= 0:
            raise ValueError(f"{self.cell_timeout_s=} must be > 0")

    def cells(self) -> list[tuple[str, str, str]]:
        """(scenario, strategy, start_method) for every scenario that applies to the strategy."""
        return [
            (scenario, strategy, method)
            for method in self.start_methods
            for scenario in self.scenarios
            for strategy in self.strategies
            if strategy in SCENARIOS[scenario].strategies
        ]


# -- the outside view --------------------------------------------------------------------
def shm_entries() -> set[str]:
    return set(os.listdir(SHM_DIR)) if SHM_DIR.is_dir() else set()


def new_segments(before: set[str], pids: set[int]) -> list[str]:
    """New ``psm_*`` and ``sem.mp-*`` entries (names without a pid: SharedMemory, and the named
    semaphores of multiprocessing locks and queues under spawn/forkserver), and new
    ``ipcbench_<pid>_*`` and ``torch_<pid>_*`` (torch's shared tensors) ones of this cell's processes."""
    found = []
    for name in sorted(shm_entries() - before):
        if name.startswith(("psm_", "sem.mp-")):
            found.append(name)
        elif name.startswith(("ipcbench_", "torch_")):
            pid = name.split("_", 2)[1]
            if pid.isdigit() and int(pid) in pids:
                found.append(name)
    return found


def wait_segments_gone(before: set[str], pids: set[int], timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := new_segments(before, pids)) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return left


def _lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by SIGKILL
    return out


# -- one cell ----------------------------------------------------------------------------
def run_cell(scenario_name: str, strategy: str, start_method: str, dataset: Path, cell_timeout_s: float) -> FaultRecord:
    scenario = SCENARIOS[scenario_name]
    command = [
        sys.executable,
        "-m",
        "harness.faults.scenarios",
        scenario_name,
        strategy,
        start_method,
        json.dumps({"dataset": str(dataset)}),
    ]
    before = shm_entries()
    problems: list[str] = []
    acted_at: float | None = None
    shutdown_s: float | None = None
    with tempfile.TemporaryDirectory(prefix="ipcbench-faults-") as tmp:
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            started = time.monotonic()
            group = ProcessGroup.start(
                command,
                stdout=out,
                stderr=err,
                env={**os.environ, **scenario.env},
                cwd=Path(__file__).resolve().parents[2],  # the checkout: -m finds harness/
            )
            while group.running():
                if time.monotonic() - started > cell_timeout_s:
                    problems.append(
                        f"the scenario overran its {cell_timeout_s:g} s bound; its process group was killed"
                    )
                    group.kill()
                    break
                if scenario.action and acted_at is None and any(r.get("event") == "ready" for r in _lines(out_path)):
                    acted_at = time.monotonic()
                    sig, whole_group = ACTIONS[scenario.action]
                    group.signal(sig, whole_group=whole_group)
                time.sleep(POLL_S)
            group.wait(AFTERMATH_S)
        records = _lines(out_path)
        ready = next((r for r in records if r.get("event") == "ready"), {})
        result = next((r for r in records if r.get("event") == "result"), None)
        left = group.reap(AFTERMATH_S)
        if scenario.action == "kill_main" and acted_at is not None:
            shutdown_s = time.monotonic() - acted_at if not left else None
        pids = {group.pgid, *ready.get("pids", []), *(result or {}).get("pids", [])}
        segments = wait_segments_gone(before, pids, AFTERMATH_S)
        stderr = err_path.read_text(errors="replace")
    if left:
        problems.append(f"processes left: {left}")  # killed by reap()
    if segments:
        problems.append(f"segments left in /dev/shm: {', '.join(segments)}")
        for name in segments:
            (SHM_DIR / name).unlink(missing_ok=True)
    # After kill_main the resource tracker's "leaked shared_memory" warning is the rescue
    # working (it unlinks what the dead main process registered); the segment check judges it.
    markers = STDERR_MARKERS[2:] if scenario.action == "kill_main" else STDERR_MARKERS
    problems += [_stderr_finding(stderr, m) for m in markers if m in stderr]
    if scenario.action == "kill_main":
        if acted_at is None:
            problems.append("the scenario never said it was ready to be killed")
    elif result is None:
        if not any("overran" in p for p in problems):
            tail = stderr.strip().splitlines()[-1:] or ["no stderr"]
            problems.append(f"no result (exit status {group.returncode}): {tail[0]}")
    else:
        problems += result["problems"]
        problems += judge_error(scenario_name, strategy, result)
        if result["shutdown_s"] is not None and result["shutdown_s"] > CLOSE_BOUND_S:
            problems.append(f"close took {result['shutdown_s']:.1f} s (bound {CLOSE_BOUND_S:g} s)")
        if group.returncode != scenario.exit_status:
            problems.append(f"exit status {group.returncode} (expected {scenario.exit_status})")
        shutdown_s = result["shutdown_s"]
    result = result or {}
    return FaultRecord(
        schema_version=SCHEMA_VERSION,
        scenario=scenario_name,
        strategy=strategy,
        start_method=start_method,
        clean=not problems,
        reason="; ".join(problems),
        time_to_error_s=_rounded(result.get("time_to_error_s")),
        shutdown_s=_rounded(shutdown_s),
        error_type=result.get("error_type"),
        error_message=result.get("error_message"),
    )


def _stderr_finding(stderr: str, marker: str) -> str:
    """Say which stderr line showed ``marker``: for a traceback, its last line (the exception)."""
    lines = stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if marker in line)
    if marker == "Traceback":
        at = next((i for i in range(at + 1, len(lines)) if lines[i] and not lines[i][0].isspace()), at)
    return f"stderr shows {marker!r}: {lines[at].strip()[:STDERR_QUOTE_CHARS]}"


def judge_error(scenario_name: str, strategy: str, result: dict[str, Any]) -> list[str]:
    """What is wrong with the error the scenario saw, against what it should have seen."""
    scenario = SCENARIOS[scenario_name]
    expected = scenario.expected_error(strategy)
    got = result["error_type"]
    if expected is None:
        return [f"unexpected {got}: {result['error_message']}"] if got else []
    if got is None:
        return [f"no {expected} surfaced"]
    if expected not in result["error_bases"]:
        return [f"{got} instead of {expected}: {result['error_message']}"]
    problems = []
    timeout_s = {**BASE_CONFIG, **scenario.config}["timeout"]
    took = result["time_to_error_s"]
    if took is not None and took > timeout_s + CLOSE_BOUND_S:
        problems.append(f"the error took {took:.1f} s (timeout {timeout_s:g} s + close {CLOSE_BOUND_S:g} s)")
    if scenario.names_worker and expected != "KeyboardInterrupt" and strategy != "baseline":
        message = result["error_message"] or ""
        # A timeout cannot always say which worker stalled (queue: any may hold the job); the pids alive do.
        if not WORKER_IDENTITY.search(message) and not any(str(pid) in message for pid in result["pids"]):
            problems.append("the error does not name the worker and its pid")
        if scenario.traceback and not result["traceback"]:
            problems.append("the error lacks the worker's traceback")
    return problems


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


# -- the whole matrix ------------------------------------------------------------------
def run_matrix(
    options: MatrixOptions, out_dir: Path, *, command: list[str], progress: Callable[[str], None] = lambda line: None
) -> list[FaultRecord]:
    """Run every cell into ``out_dir`` (faults.jsonl, env.json), then build its report."""
    from harness.datasets.synth import SynthParams, build
    from harness.envinfo import collect_env, dataset_info, loadavg, run_id_for, utc_now

    out_dir.mkdir(parents=True, exist_ok=True)
    created = utc_now()
    records: list[FaultRecord] = []
    with tempfile.TemporaryDirectory(prefix="ipcbench-faults-data-") as tmp:
        # Six zlib images of 256 x 320 (400 KiB of tiles each): garbled strips fail to
        # decode (no zlib header); sigkill_mid_transfer cuts a message in half on purpose.
        dataset = Path(tmp) / "faults"
        build(dataset, SynthParams(images=6, height=256, width=320, compression="zlib"), lambda line: None)
        env = collect_env(
            run_id=run_id_for(created),
            created=created,
            command=command,
            start_method=",".join(options.start_methods),
            dataset=dataset_info(dataset, "synth"),
            config={**BASE_CONFIG, **asdict(options)},
            memcpy=None,
            sampler={},
        )
        cells = options.cells()
        (out_dir / FAULTS_FILE).unlink(missing_ok=True)  # a rerun into the same folder starts afresh
        for number, (scenario, strategy, method) in enumerate(cells, 1):
            started = time.monotonic()
            record = run_cell(scenario, strategy, method, dataset, options.cell_timeout_s)
            append_lines(out_dir / FAULTS_FILE, [asdict(record)])  # a killed matrix keeps its finished cells
            records.append(record)
            verdict = "clean" if record.clean else f"NOT clean: {record.reason}"
            progress(
                f"[{number}/{len(cells)}] {scenario} / {strategy} / {method}: {verdict} "
                f"({time.monotonic() - started:.1f} s)"
            )
    env["loadavg_after"] = loadavg()
    write_json(out_dir / ENV_FILE, env)
    write_report(out_dir)
    return records


def write_report(out_dir: Path) -> None:
    """report.md and plots/faults.png of a faults folder: the same report ``ipcbench report DIR`` builds."""
    from harness.report import build_report

    build_report(out_dir)


def summary_lines(records: list[dict[str, Any]] | list[FaultRecord]) -> list[str]:
    """A markdown report: counts, then one row per cell."""
    rows = [asdict(r) if isinstance(r, FaultRecord) else r for r in records]
    clean = sum(1 for r in rows if r["clean"])
    lines = [
        "# Shutdown cleanliness",
        "",
        f"{clean} of {len(rows)} fault cells ended clean (docs/design.md section 8).",
        "",
        "![matrix](plots/faults.png)",
        "",
        "| scenario | strategy | start method | clean | time to error (s) | shutdown (s) | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reason = (r["reason"] or "").replace("|", "\\|")
        lines.append(
            f"| {r['scenario']} | {r['strategy']} | {r['start_method']} | {'yes' if r['clean'] else '**no**'} "
            f"| {_cell(r['time_to_error_s'])} | {_cell(r['shutdown_s'])} | {reason} |"
        )
    return lines


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"
