"""``ipcbench clean``: stale segments (owner gone) are removed, live owners' segments are kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.cli import main
from strategies.constants import SHM_PREFIX


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _segments(directory: Path, dead: int) -> tuple[Path, Path, Path]:
    stale = directory / f"{SHM_PREFIX}{dead}_0a1b2c3d_w0"
    stale.write_bytes(b"\0" * 2**20)
    live = directory / f"{SHM_PREFIX}{os.getpid()}_4e5f6a7b_w0"
    live.write_bytes(b"\0" * 10)
    other = directory / "psm_someone_else"
    other.write_bytes(b"")
    return stale, live, other


def test_clean_removes_only_segments_whose_owner_is_gone(tmp_path: Path, capsys) -> None:
    stale, live, other = _segments(tmp_path, _dead_pid())
    assert main(["clean", "--directory", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert not stale.exists()
    assert live.exists() and other.exists()
    assert f"removed {stale.name} (1.0 MiB)" in out
    assert "1 stale segment(s)" in out and "freed 1.0 MiB" in out


def test_dry_run_lists_and_removes_nothing(tmp_path: Path, capsys) -> None:
    stale, live, _ = _segments(tmp_path, _dead_pid())
    assert main(["clean", "--directory", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert stale.exists() and live.exists()
    assert f"stale {stale.name}" in out and live.name not in out
    assert "would free 1.0 MiB" in out


def test_nothing_stale_says_so(tmp_path: Path, capsys) -> None:
    assert main(["clean", "--directory", str(tmp_path)]) == 0
    assert "0 stale segment(s)" in capsys.readouterr().out
