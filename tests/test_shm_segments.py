"""Shared-memory segments with exactly one owner: create, attach, unlink, find stale ones, check space.

The owner creates, registers with the resource tracker and unlinks (once, idempotently,
also after someone else removed the name); users attach and never unlink or register,
so nothing ends with a "leaked shared_memory objects" warning. If the owner dies
without unlinking, the resource tracker removes the segment. Names carry the
owner's pid, so a segment whose owner is gone is found by :func:`stale_segments`.
"""

from __future__ import annotations

import _posixshmem
import contextlib
import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from faults_helpers import wait_segments_gone

from strategies import SharedMemorySpaceError
from strategies.constants import SHM_HEADROOM_BYTES, SHM_PREFIX
from strategies.shm_segments import SHM_DIR, Segment, check_free_space, stale_segments

pytestmark = pytest.mark.timeout(60)


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(SHM_DIR, name))


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(proc.stdout)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=False
    )


def test_create_attach_unlink_round_trip() -> None:
    owner = Segment.create(8192, "rt")
    try:
        assert owner.owner and owner.size == 8192
        assert owner.name.startswith(f"{SHM_PREFIX}{os.getpid()}_") and owner.name.endswith("_rt")
        assert exists(owner.name)
        user = Segment.attach(owner.name, 8192)
        assert not user.owner
        user.buf[100:105] = b"hello"  # written through the user's mapping ...
        assert bytes(owner.buf[100:105]) == b"hello"  # ... seen through the owner's
        user.unlink()  # a user never removes the name
        assert exists(owner.name)
        user.buf.close()
    finally:
        owner.unlink()
    assert not exists(owner.name)
    owner.unlink()  # idempotent
    assert bytes(owner.buf[100:105]) == b"hello", "the memory stays mapped until the owner drops it"
    owner.buf.close()
    with pytest.raises(FileNotFoundError):
        Segment.attach(owner.name, 8192)


def test_unlink_after_the_name_was_removed_elsewhere() -> None:
    owner = Segment.create(4096, "gone")
    _posixshmem.shm_unlink("/" + owner.name)  # as the resource tracker does after a crash
    owner.unlink()  # no error
    owner.buf.close()
    assert not exists(owner.name)


def test_full_dev_shm_fails_at_creation_and_leaves_no_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    mine = f"{SHM_PREFIX}{os.getpid()}_"
    before = {n for n in os.listdir(SHM_DIR) if n.startswith(mine)}
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(SharedMemorySpaceError, match=r"cannot reserve 64\.0 MiB in /dev/shm for ipcbench_") as info:
        Segment.create(64 * 2**20, "full")
    assert info.value.errno == errno.ENOSPC
    assert {n for n in os.listdir(SHM_DIR) if n.startswith(mine)} == before


def test_stale_segments_finds_those_whose_owner_died() -> None:
    pid = dead_pid()
    stale_name = f"{SHM_PREFIX}{pid}_deadbeef_test"
    odd_name = f"{SHM_PREFIX}notapid_test"
    live = Segment.create(4096, "live")
    try:
        for name in (stale_name, odd_name):
            os.close(_posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600))
        found = stale_segments()
        assert stale_name in found
        assert live.name not in found  # our own: the owner is alive
        assert odd_name not in found  # no pid in the name: not ours to judge
    finally:
        live.unlink()
        live.buf.close()
        for name in (stale_name, odd_name):
            with contextlib.suppress(FileNotFoundError):
                _posixshmem.shm_unlink("/" + name)
    assert stale_name not in stale_segments()


def test_stale_segments_of_a_missing_directory(tmp_path: Path) -> None:
    assert stale_segments(str(tmp_path / "missing")) == []


def test_no_resource_tracker_warning_when_owner_unlinks() -> None:
    # A worker (here: a spawned child) attaches and writes; the owner unlinks. Nobody
    # else registers the name, so the tracker has nothing to complain about at exit.
    result = run_python("""
        import multiprocessing as mp
        from strategies.shm_segments import Segment

        if __name__ == "__main__":
            owner = Segment.create(4096, "quiet")
            child = mp.get_context("spawn").Process(target=Segment.attach, args=(owner.name, 4096))
            child.start()
            child.join(30)
            assert child.exitcode == 0, child.exitcode
            owner.unlink()
            owner.buf.close()
            print(owner.name)
        """)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"stderr is not empty:\n{result.stderr}"
    assert not exists(result.stdout.strip())


def test_resource_tracker_unlinks_what_a_dead_owner_left() -> None:
    # The owner exits without unlinking (as if SIGKILLed: os._exit runs no clean-up);
    # the resource tracker, seeing its pipe close, removes the segment.
    result = run_python("""
        import os
        from strategies.shm_segments import Segment

        print(Segment.create(4096, "orphan").name, flush=True)
        os._exit(0)
        """)
    name = result.stdout.strip()
    assert name.startswith(SHM_PREFIX)
    assert wait_segments_gone([name], timeout_s=5.0) == []
    assert "leaked shared_memory" in result.stderr  # the tracker says what it cleaned up


def test_check_free_space_refuses_exactly_what_does_not_fit_with_its_headroom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free_blocks = 10_000
    real_statvfs = os.statvfs

    def statvfs(path):  # a filesystem with exactly free_blocks * block bytes free
        stats = real_statvfs(path)
        return os.statvfs_result((*stats[:4], free_blocks, *stats[5:]))

    monkeypatch.setattr(os, "statvfs", statvfs)
    free = free_blocks * os.statvfs(str(tmp_path)).f_frsize
    fits = free - SHM_HEADROOM_BYTES
    check_free_space(fits, directory=str(tmp_path))  # the last byte that fits, headroom kept
    with pytest.raises(SharedMemorySpaceError):
        check_free_space(fits + 1, directory=str(tmp_path))


def test_check_free_space_leaves_a_missing_directory_to_fallocate(tmp_path: Path) -> None:
    # Nothing to inspect (no /dev/shm on this system): no error here; posix_fallocate guards creation.
    assert check_free_space(2**60, directory=str(tmp_path / "missing")) is None


def test_check_free_space_names_need_free_and_fix() -> None:
    with pytest.raises(SharedMemorySpaceError) as info:
        check_free_space(2**50)
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert f"needs {2**50 / 2**20:.1f} MiB" in message  # what is needed
    assert f"+{SHM_HEADROOM_BYTES / 2**20:.1f} MiB headroom" in message
    assert "but /dev/shm has only" in message and "MiB free" in message  # what is there
    assert "Lower prefetch" in message and "--shm-size" in message  # the fix


def test_release_semaphores_unlinks_every_semaphore_of_queues_and_events() -> None:
    """Queue (3) and Event (5) semaphores are gone from /dev/shm at once, and their finalizers with them."""
    import multiprocessing as mp
    from multiprocessing import util as mp_util

    from strategies.internals import semaphore_names, tracker_pid
    from strategies.shm_segments import release_semaphores

    ctx = mp.get_context("spawn")  # named semaphores, registered with the resource tracker
    queue, event = ctx.Queue(), ctx.Event()
    names = semaphore_names(queue) | semaphore_names(event)
    assert len(names) == 8
    files = [Path("/dev/shm") / f"sem.{name.lstrip('/')}" for name in names]
    assert all(f.exists() for f in files)
    release_semaphores(tracker_pid(), queue, event)
    assert not any(f.exists() for f in files)
    pending = {f._args[0] for f in mp_util._finalizer_registry.values() if f._args}
    assert not names & pending
    queue.close()
