"""What the multi-process contract tests share: liveness, segments, broken datasets, scenarios.

Imported by ``test_equivalence``, ``test_lifecycle`` and ``test_faults`` for:

- **liveness**: :func:`alive`, :func:`wait_until_gone` (a zombie counts as gone: a
  re-parented worker may wait for a reaper this container does not run),
  :func:`leftover_children` (children of a process other than the fork server and the
  resource tracker, which legitimately outlive a generator), :func:`kill_survivors`;
- **segments**: :func:`segment_names` of a generator, :func:`existing_segments`;
- **broken files**: :func:`compress_images`, :func:`garble_strips`, :func:`truncate_pixels`.

Run as a script it plays one scenario in a fresh Python process, so that a test can read
its stderr, interrupt its process group or SIGKILL it::

    python tests/faults_helpers.py SCENARIO '{"strategy": "shm", "dataset": "...", "config": {...}}'

Each scenario prints JSON lines on stdout (flushed), e.g. the worker pids and segment
names once iteration is under way, and what was left after ``close()``. The module is
also the ``__main__`` that ``spawn`` children and the fork server import, so its top
level stays cheap. Under :data:`FAIL_AT_START_ENV` every worker fails its set-up, armed
at the strategies' ``worker.start`` injection point (``strategies.injection``).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# One implementation for the tests and the `ipcbench faults` matrix.
from harness.faults.injected import START_FAILURE_MESSAGE, arming
from harness.faults.probe import _strips, alive, garble_strips, infrastructure_pids, wait_until_gone
from harness.faults.scenarios import hear_ctrl_c

__all__ = ["alive", "garble_strips", "infrastructure_pids", "wait_until_gone"]

HELPERS = Path(__file__).resolve()
SHM_DIR = "/dev/shm"
# The environment under which every worker fails its set-up (strategies.injection).
FAIL_AT_START_ENV = arming({"worker.start": "failing_init"})
FAIL_INIT_MESSAGE = START_FAILURE_MESSAGE
# Polling step of the waits below; the waits themselves are bounded by their callers.
POLL_S = 0.05


# -- liveness ---------------------------------------------------------------------------
def kill_survivors(pids: Iterable[int]) -> None:
    """Clean-up after a failed test: SIGKILL what is left (SIGCONT first, for stopped ones)."""
    for pid in pids:
        if alive(pid):
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break


def children() -> set[int]:
    """Pids of every descendant of this process that is alive."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True) if alive(p.pid)}


def leftover_children(before: set[int], timeout_s: float = 5.0) -> list[int]:
    """Descendants that were not there ``before`` and are not infrastructure, after waiting for them."""
    deadline = time.monotonic() + timeout_s
    while True:
        extra = sorted(children() - before - set(infrastructure_pids()))
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(POLL_S)


# -- shared-memory segments ------------------------------------------------------------
def segment_names(gen: Any) -> list[str]:
    """Names of the shared-memory segments a generator owns (none for pipe and queue)."""
    return [segment.name for segment in getattr(gen, "segments", [])]


def existing_segments(names: Iterable[str]) -> list[str]:
    return [name for name in names if os.path.exists(os.path.join(SHM_DIR, name))]


def wait_segments_gone(names: Iterable[str], timeout_s: float = 5.0) -> list[str]:
    names = list(names)
    deadline = time.monotonic() + timeout_s
    while (left := existing_segments(names)) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return left


def segments_of_pid(pid: int) -> list[str]:
    """Segments in /dev/shm whose name says ``pid`` created them."""
    from strategies.constants import SHM_PREFIX

    prefix = f"{SHM_PREFIX}{pid}_"
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix)) if os.path.isdir(SHM_DIR) else []


def tiny_dev_shm(monkeypatch: Any, free_mib: int = 4) -> None:
    """Make /dev/shm report ``free_mib`` MiB free (statvfs), as a small tmpfs would (Docker's is 64 MB)."""
    from types import SimpleNamespace

    real_statvfs = os.statvfs

    def small_statvfs(path: Any) -> Any:
        stats = real_statvfs(path)
        if str(path) != SHM_DIR:
            return stats
        return SimpleNamespace(f_bavail=free_mib, f_frsize=2**20, f_bsize=stats.f_bsize, f_blocks=stats.f_blocks)

    monkeypatch.setattr(os, "statvfs", small_statvfs)


# -- broken files ---------------------------------------------------------------------
def compress_images(root: Path, compression: str = "zlib") -> None:
    """Rewrite every image of a dataset with TIFF compression (same pixels)."""
    import tifffile

    for path in sorted((root / "images").glob("*.tif")):
        tifffile.imwrite(path, tifffile.imread(path), compression=compression)


def truncate_pixels(path: str | os.PathLike[str]) -> None:
    """Cut the file where its first pixel strip starts: headers intact, pixels missing."""
    os.truncate(path, min(offset for offset, _ in _strips(path)))


# -- running a scenario in a subprocess -------------------------------------------------
def scenario_command(scenario: str, **args: Any) -> list[str]:
    return [sys.executable, str(HELPERS), scenario, json.dumps(args)]


def run_scenario(
    scenario: str, *, timeout_s: float = 60.0, env: dict[str, str] | None = None, **args: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        scenario_command(scenario, **args), capture_output=True, text=True, timeout=timeout_s, env=env, check=False
    )


def start_scenario(scenario: str, **args: Any) -> subprocess.Popen[str]:
    """Start a scenario in its own session (its own process group, for killpg)."""
    return subprocess.Popen(
        scenario_command(scenario, **args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def read_report(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> dict[str, Any]:
    """The next JSON line the scenario prints, or an AssertionError with its stderr."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            proc.kill()
            raise AssertionError(f"no report within {timeout_s}s; stderr: {proc.communicate()[1]}")
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"scenario ended without a report; stderr: {proc.communicate()[1]}")
    return json.loads(line)


def reports(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


# -- the scenarios (run in the subprocess) ----------------------------------------------
def _report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _make(args: dict[str, Any]) -> Any:
    from strategies import make_generator

    return make_generator(args["strategy"], args["dataset"], **args.get("config", {}))


def _state(gen: Any) -> dict[str, Any]:
    return {"pids": gen.worker_pids(), "segments": segment_names(gen), "main_pid": os.getpid()}


def _leftovers(state: dict[str, Any]) -> dict[str, Any]:
    return {"survivors": wait_until_gone(state["pids"]), "segments_left": existing_segments(state["segments"])}


def scenario_clean(args: dict[str, Any]) -> None:
    """A normal end (two epochs), then an early break; each closed. Report what is left."""
    for mode in ("end", "break"):
        gen = _make(args)
        state = _state(gen)
        if mode == "end":
            for _ in range(2):
                for _ in gen:
                    pass
        else:
            for _ in gen:
                break
        gen.close()
        _report(mode=mode, **state, **_leftovers(state))


def scenario_interrupt_body(args: dict[str, Any]) -> None:
    """KeyboardInterrupt raised by the loop body; the ``with`` closes the generator."""
    state: dict[str, Any] = {}
    try:
        with _make(args) as gen:
            state = _state(gen)
            for i, _ in enumerate(gen):
                if i == 2:
                    raise KeyboardInterrupt
    finally:
        _report(**state, **_leftovers(state))


def scenario_iterate(args: dict[str, Any]) -> None:
    """Iterate epoch after epoch until interrupted or killed; report once the first batch is out.

    ``SIGINT`` (from the test, to the whole process group) surfaces as one
    KeyboardInterrupt here; the scenario then reports what the ``with`` left behind.
    """
    state: dict[str, Any] = {}
    try:
        with _make(args) as gen:
            state = _state(gen)
            first = True
            while True:
                for _ in gen:
                    if first:
                        first = False
                        _report(ready=True, infrastructure=infrastructure_pids(), **state)
    except KeyboardInterrupt:
        _report(interrupted=True, **state, **_leftovers(state))
        raise


def scenario_startup_failure(args: dict[str, Any]) -> None:
    """Construct each strategy while every worker class raises in ``__init__``; report the errors."""
    from strategies import RemoteTraceback, WorkerError

    before = children()
    for strategy in args["strategies"]:
        outcome: dict[str, Any] = {"strategy": strategy, "raised": None}
        try:
            _make({**args, "strategy": strategy}).close()
        except Exception as exc:  # what the test inspects: type, message, cause
            cause = exc.__cause__
            outcome.update(
                raised=type(exc).__name__,
                is_worker_error=isinstance(exc, WorkerError),
                message=str(exc),
                cause=type(cause).__name__,
                remote_tb=cause.tb if isinstance(cause, RemoteTraceback) else "",
            )
        outcome.update(leftovers=leftover_children(before), segments=segments_of_pid(os.getpid()))
        _report(**outcome)


SCENARIOS = {
    "clean": scenario_clean,
    "interrupt_body": scenario_interrupt_body,
    "iterate": scenario_iterate,
    "startup_failure": scenario_startup_failure,
}

if __name__ == "__main__":
    hear_ctrl_c()
    SCENARIOS[sys.argv[1]](json.loads(sys.argv[2]))
