"""A script without ``if __name__ == "__main__":``: the error says so, in the worker and in the main process.

Under spawn and forkserver every worker imports the main script first; an unguarded
script makes a generator again there. The program must fail with an error that names
the script and the guard to add, leave no process behind, and the same script with
the guard must run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import write_dataset

from strategies.main_guard import GUARD, has_main_guard, unguarded_main_hint

pytestmark = pytest.mark.timeout(120)

BODY = """\
import sys

from strategies import make_generator

with make_generator({strategy!r}, {dataset!r}, workers=2, tile=16, batch_size=7, start_method={method!r}) as gen:
    batches = sum(1 for _ in gen)
print("batches", batches)
"""


def script(tmp_path: Path, strategy: str, method: str, dataset: Path, guarded: bool) -> Path:
    code = BODY.format(strategy=strategy, dataset=str(dataset), method=method)
    if guarded:
        head, _, rest = code.partition("with make_generator")
        code = head + GUARD + "\n" + textwrap.indent("with make_generator" + rest, "    ")
    path = tmp_path / f"{strategy}_{method}_{'guarded' if guarded else 'unguarded'}.py"
    path.write_text(code)
    return path


def run(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=90, start_new_session=True
    )


def in_session(session: int) -> list[int]:
    """Processes of the session a script ran as leader of: its workers, fork server, resource tracker."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session:
                found.append(process.pid)
        except (ProcessLookupError, PermissionError):
            continue  # gone meanwhile, or not ours to look at
    return found


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("guard"), images=3)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
@pytest.mark.parametrize("strategy", ["pipe", "shm", "torch"])
def test_an_unguarded_script_is_told_to_add_the_guard(
    tmp_path: Path, dataset: Path, strategy: str, method: str
) -> None:
    path = script(tmp_path, strategy, method, dataset, guarded=False)
    result = run(path)
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    # The main process's error: which worker, that it died starting, the script, the fix.
    assert last.startswith("strategies.errors.WorkerDiedError"), last
    assert str(path) in last and GUARD in last and f"start_method={method!r}" in last, last
    # The workers' own errors name the cause instead of multiprocessing's bootstrapping message.
    assert "ProcessContextError" in result.stderr and "importing the main script" in result.stderr
    assert "bootstrapping phase" not in result.stderr


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_the_same_script_with_the_guard_runs(tmp_path: Path, dataset: Path, method: str) -> None:
    result = run(script(tmp_path, "shm", method, dataset, guarded=True))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["batches", "9"]  # 3 images x 20 tiles of 16, batches of 7


def test_fork_needs_no_guard(tmp_path: Path, dataset: Path) -> None:
    # fork does not import the main script: an unguarded script works, and no hint is given.
    result = run(script(tmp_path, "shm", "fork", dataset, guarded=False))
    assert result.returncode == 0, result.stderr[-2000:]
    assert unguarded_main_hint("fork", 1) == ""


def test_nothing_of_a_failed_program_is_left(tmp_path: Path, dataset: Path) -> None:
    path = script(tmp_path, "shm", "forkserver", dataset, guarded=False)
    process = subprocess.Popen(
        [sys.executable, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    assert process.wait(timeout=90) == 1
    # The fork server and the resource tracker exit with the program; give them a moment.
    deadline = time.monotonic() + 5
    while in_session(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_session(process.pid) == []


@pytest.mark.parametrize(
    ("source", "guarded"),
    [
        ('if __name__ == "__main__":\n    main()\n', True),
        ("if '__main__' == __name__:\n    main()\n", True),
        ("import sys\nmain()\n", False),
        ('def f():\n    if __name__ == "__main__":\n        main()\n', False),  # not at the top level
        ('if __name__ != "__main__":\n    main()\n', False),
        ("if __name__ == '__mp_main__':\n    main()\n", False),
        ("this is not python(", True),  # cannot tell: no hint rather than a wrong one
    ],
)
def test_has_main_guard(source: str, guarded: bool) -> None:
    assert has_main_guard(source) is guarded


def test_no_hint_for_a_death_by_signal_or_another_status() -> None:
    assert unguarded_main_hint("spawn", -9) == ""
    assert unguarded_main_hint("forkserver", 2) == ""
    assert unguarded_main_hint("spawn", None) == ""
