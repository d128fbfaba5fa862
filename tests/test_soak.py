"""The soak: a short one holds every bound, a planted leak breaks one, the CLI writes its folder.

The full 200-cycle soak of every strategy is ``ipcbench soak`` (minutes); here 20
cycles of three strategies, each in its own process as the command runs them.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from harness.cli import main
from harness.faults import soak as soak_module
from harness.faults.soak import BOUNDS, SoakOptions, run_soak, soak

pytestmark = pytest.mark.timeout(120)


def test_short_soak_holds_every_bound(tmp_path: Path) -> None:
    options = SoakOptions(strategies=("shm", "queue", "threads"), cycles=20, warmup=5)
    lines: list[str] = []
    records = run_soak(options, tmp_path, command=["test"], progress=lines.append)
    assert [r.strategy for r in records] == ["shm", "queue", "threads"]
    for record in records:
        assert record.passed, (record.strategy, record.failures, record.warm, record.end)
        assert set(record.growth) == set(BOUNDS) and record.cycles == 20 and record.warmup == 5
        # The warm-up started what persists (fork server, tracker), then nothing more stayed.
        assert record.end["children"] == 0 and record.end["shm_entries"] == 0
    assert lines[0].startswith("[1/3] shm: pass")
    stored = json.loads((tmp_path / "soak.json").read_text())
    assert [r["strategy"] for r in stored] == ["shm", "queue", "threads"] and stored[0]["schema_version"] == 1
    report = (tmp_path / "report.md").read_text()
    assert "3 of 3 strategies held every bound" in report and "| queue | 20 |" in report
    assert json.loads((tmp_path / "env.json").read_text())["config"]["cycles"] == 20


def test_a_leak_per_cycle_breaks_its_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    leaked_fds: list[int] = []
    stop = threading.Event()

    def leaky_cycle(*args: object) -> None:
        leaked_fds.append(os.open(os.devnull, os.O_RDONLY))
        threading.Thread(target=stop.wait, daemon=True).start()

    monkeypatch.setattr(soak_module, "cycle", leaky_cycle)
    try:
        record = soak("baseline", tmp_path, cycles=8, warmup=2, start_method="fork")
    finally:
        stop.set()
        for fd in leaked_fds:
            os.close(fd)
    assert not record.passed
    assert "fds grew by 6 (bound 0)" in record.failures and "threads grew by 6 (bound 0)" in record.failures
    assert record.growth["children"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategies": ("nope",)}, "unknown strategy 'nope'"),
        ({"strategies": ("shm",), "cycles": 5, "warmup": 5}, "must exceed"),
        ({"strategies": ("shm",), "warmup": 0}, "must be >= 1"),
        ({"strategies": ("shm",), "start_method": "thread"}, "unknown start method 'thread'"),
    ],
)
def test_options_name_the_bad_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SoakOptions(**kwargs)


def test_cli_soaks_one_strategy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "soak"
    assert main(["soak", "--strategies", "baseline", "--cycles", "4", "--warmup", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "[1/1] baseline: pass" in captured.err and "1 of 1 strategies held every bound" in captured.out
    (record,) = json.loads((out / "soak.json").read_text())
    assert record["strategy"] == "baseline" and record["passed"] is True
    assert main(["soak", "--strategies", "shm", "--cycles", "2", "--out", str(out)]) == 2
    assert "must exceed" in capsys.readouterr().err


def test_a_descriptor_only_the_garbage_collector_frees_breaks_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Release by the cyclic collector is not release by close(): counted before any collection."""

    class Holder:
        def __init__(self) -> None:
            self.fd = os.open(os.devnull, os.O_RDONLY)
            self.me = self  # a reference cycle: only the collector frees it

        def __del__(self) -> None:
            os.close(self.fd)

    def cycle_leaving_garbage(*args: object) -> None:
        Holder()

    monkeypatch.setattr(soak_module, "cycle", cycle_leaving_garbage)
    record = soak("baseline", tmp_path, cycles=6, warmup=2, start_method="fork")
    assert not record.passed
    assert "fds grew by 1 (bound 0)" in record.failures
    assert record.end["fds"] == record.warm["fds"], "the collector freed it in the end"
