"""WorkerPool and worker_main with workers of a few lines: the messages, errors and exits each path gives.

The strategies' suites reach this code through whole loaders, in worker processes.
Here the workers are tiny classes (echo, fail, die), so each test says exactly which
message or error a path produces; ``worker_main`` also runs in the test process, fed
through a pipe, so what it sends can be read back.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from multiprocessing import Pipe

import pytest
from conftest import write_dataset

from strategies import injection
from strategies import workers as workers_module
from strategies.constants import PARENT_POLL_S, STOP_GRACE_S, TERMINATE_GRACE_S
from strategies.errors import (
    DescriptorLimitError,
    RemoteTraceback,
    WorkerDiedError,
    WorkerError,
    WorkerTimeoutError,
)
from strategies.messages import Ready, Stop, WorkerFailure
from strategies.workers import (
    EXIT_PARENT_DIED,
    WorkerPool,
    check_descriptor_room,
    descriptor_limit_error,
    how_it_ended,
    main_process_watch,
    stop_processes,
    watch_parent,
    worker_main,
)

pytestmark = pytest.mark.timeout(60)


class Echo:
    """Sends back every message, tagged with its id, until Stop."""

    def __init__(self, worker_id: int, conn, tag: str) -> None:
        self.worker_id, self.conn, self.tag = worker_id, conn, tag

    def run(self) -> None:
        while not isinstance(message := self.conn.recv(), Stop):
            self.conn.send((self.tag, self.worker_id, message))


class FailsToStart:
    def __init__(self, worker_id: int, conn) -> None:
        raise ValueError(f"no dataset for worker {worker_id}")

    def run(self) -> None:  # never reached: __init__ raises
        pass


class DiesWhileStarting:
    def __init__(self, worker_id: int, conn) -> None:
        os._exit(5)

    def run(self) -> None:  # never reached: __init__ exits
        pass


class KilledOnFirstMessage(Echo):
    def run(self) -> None:
        self.conn.recv()
        os.kill(os.getpid(), signal.SIGKILL)


class ReadsLater(Echo):
    """Leaves its pipe unread for a while, then reads everything until Stop."""

    def run(self) -> None:
        time.sleep(0.5)
        while not isinstance(self.conn.recv(), Stop):
            pass


class NeverReads(Echo):
    def run(self) -> None:
        time.sleep(60)


class ExitsWithoutReading(Echo):
    def run(self) -> None:
        time.sleep(0.3)
        os._exit(4)


BIG = b"x" * (1 << 20)  # more than a pipe holds: a send waits for the worker to read


class SpeaksBeforeReady(Echo):
    def __init__(self, worker_id: int, conn) -> None:
        super().__init__(worker_id, conn, "x")
        conn.send("hello")  # then Ready, then Echo's loop, which ends at the pool's Stop


class RaisesOnFirstMessage(Echo):
    def run(self) -> None:
        self.conn.recv()
        raise KeyError("missing tile")


class ExitsOnFirstMessage(Echo):
    def run(self) -> None:
        self.conn.recv()
        os._exit(7)


def _pool(worker_cls: type, *args, workers: int = 1, timeout: float = 10.0) -> WorkerPool:
    return WorkerPool(
        name="toy", worker_cls=worker_cls, args=args, workers=workers, start_method="fork", timeout=timeout
    )


def test_workers_say_ready_with_their_pids_answer_and_exit_cleanly_on_close() -> None:
    pool = _pool(Echo, "hi", workers=2)
    try:
        assert pool.pids == [p.pid for p in pool.processes]
        for worker_id in (1, 0):
            pool.send(worker_id, {"n": worker_id})
        assert pool.read(0) == ("hi", 0, {"n": 0})
        assert pool.read(1) == ("hi", 1, {"n": 1})
        assert len(pool.alive()) == 2
    finally:
        start = time.monotonic()
        pool.close()
        took = time.monotonic() - start
    # Stop is answered at once: the workers exit by themselves, far sooner than the grace before SIGTERM.
    assert took < STOP_GRACE_S / 2, took
    assert pool.processes == [] and pool.alive() == []  # every one reaped
    pool.close()  # idempotent


def test_a_worker_that_fails_to_start_raises_its_error_with_its_traceback_and_leaves_nothing() -> None:
    with pytest.raises(WorkerError) as info:
        _pool(FailsToStart)
    error = info.value
    assert type(error) is WorkerError and error.worker_id == 0 and error.pid is not None
    assert str(error) == f"toy worker 0 (pid {error.pid}) raised ValueError: no dataset for worker 0"
    assert isinstance(error.__cause__, RemoteTraceback)
    assert "in __init__" in error.__cause__.tb and error.__cause__.tb.endswith("ValueError: no dataset for worker 0\n")
    with pytest.raises(ProcessLookupError):  # reaped, not a zombie
        os.kill(error.pid, 0)


def test_an_error_in_the_loop_is_raised_by_the_next_read() -> None:
    pool = _pool(RaisesOnFirstMessage, "x")
    try:
        pid = pool.pids[0]
        pool.send(0, "go")
        with pytest.raises(WorkerError, match=rf"^toy worker 0 \(pid {pid}\) raised KeyError: 'missing tile'$"):
            pool.read(0)
    finally:
        pool.close()


def test_a_death_seen_on_its_sentinel_raises_the_failure_the_worker_reported_before() -> None:
    pool = _pool(RaisesOnFirstMessage, "x")
    try:
        pid = pool.pids[0]
        pool.send(0, "go")
        pool.processes[0].join(10.0)  # reported, then exited with status 1
        with pytest.raises(WorkerError) as info:
            pool.wait([])  # no reader to wait for: only the sentinels, and this one is ready
        assert type(info.value) is WorkerError
        assert str(info.value) == f"toy worker 0 (pid {pid}) raised KeyError: 'missing tile'"
        assert "KeyError: 'missing tile'" in info.value.__cause__.tb
    finally:
        pool.close()


def test_a_death_without_a_report_seen_on_its_sentinel_is_a_death() -> None:
    pool = _pool(ExitsOnFirstMessage, "x")
    try:
        pid = pool.pids[0]
        pool.send(0, "go")
        pool.processes[0].join(10.0)
        with pytest.raises(WorkerDiedError, match=rf"^toy worker 0 \(pid {pid}\) exited with code 7 without"):
            pool.wait([])
    finally:
        pool.close()


def test_worker_main_passes_its_id_to_the_start_injection_point(in_process: list) -> None:
    seen: list = []
    injection.arm("worker.start", lambda **context: seen.append(context))
    try:
        main_end, worker_end = Pipe()
        main_end.send(Stop())
        worker_main(Echo, 6, worker_end, ("tag",))
    finally:
        injection.disarm()
    assert seen == [{"worker_id": 6}]


def test_a_worker_that_exits_without_a_report_is_said_dead_with_its_exit_code() -> None:
    pool = _pool(ExitsOnFirstMessage, "x")
    try:
        pid = pool.pids[0]
        pool.send(0, "go")
        with pytest.raises(WorkerDiedError) as info:
            pool.read(0)  # its pipe's end of file
        error = info.value
        assert (error.worker_id, error.pid, error.exitcode) == (0, pid, 7)
        assert str(error) == f"toy worker 0 (pid {pid}) exited with code 7 without reporting an error"
    finally:
        pool.close()


def test_a_worker_that_dies_before_ready_is_said_dead_while_starting() -> None:
    with pytest.raises(WorkerDiedError) as info:
        _pool(DiesWhileStarting)
    error = info.value
    assert (error.worker_id, error.exitcode) == (0, 5)
    # fork runs no main script again: no hint about a missing main guard
    assert str(error) == f"toy worker 0 (pid {error.pid}) exited with code 5 without reporting an error while starting"


def test_a_worker_killed_by_a_signal_is_said_killed_by_it_whichever_read_finds_it() -> None:
    pool = _pool(KilledOnFirstMessage, "x", workers=2)
    try:
        pid = pool.pids[0]
        pool.send(0, "go")
        with pytest.raises(WorkerDiedError) as info:
            pool.read_into(0, memoryview(bytearray(64)))
        error = info.value
        assert (error.worker_id, error.pid, error.exitcode) == (0, pid, -signal.SIGKILL)
        assert str(error) == f"toy worker 0 (pid {pid}) was killed by signal 9 without reporting an error"
    finally:
        pool.close()


def test_a_send_to_a_full_pipe_waits_for_the_worker_to_read() -> None:
    pool = _pool(ReadsLater, "x", timeout=5.0)
    try:
        start = time.monotonic()
        for _ in range(4):
            pool.send(0, BIG)
        assert time.monotonic() - start >= 0.4  # it waited for the worker to start reading
    finally:
        pool.close()


def test_a_send_to_a_pipe_nobody_reads_times_out_naming_the_worker() -> None:
    pool = _pool(NeverReads, "x", timeout=0.3)
    try:
        pid = pool.pids[0]
        start = time.monotonic()
        with pytest.raises(WorkerTimeoutError) as info:
            for _ in range(16):
                pool.send(0, BIG)
        assert 0.3 <= time.monotonic() - start < 0.3 + STOP_GRACE_S / 2
        assert str(info.value) == "toy: worker 0 has not read its pipe for timeout=0.3s"
        assert (info.value.worker_id, info.value.pid) == (0, pid)
    finally:
        pool.broken = True  # as a strategy marks it after a timeout: no Stop grace for a worker that cannot hear
        pool.close()


def test_a_worker_that_dies_while_a_send_waits_for_room_is_said_dead() -> None:
    pool = _pool(ExitsWithoutReading, "x", timeout=10.0)
    try:
        pid = pool.pids[0]
        with pytest.raises(WorkerDiedError) as info:
            for _ in range(16):
                pool.send(0, BIG)
        assert (info.value.worker_id, info.value.exitcode) == (0, 4)
        assert str(info.value) == f"toy worker 0 (pid {pid}) exited with code 4 without reporting an error"
        with pytest.raises(WorkerDiedError) as info:
            pool.send(0, "after")  # its pipe is broken now
        assert info.value.worker_id == 0 and info.value.exitcode == 4
    finally:
        pool.close()


def test_workers_are_named_daemons_and_a_new_pool_is_not_broken() -> None:
    pool = _pool(Echo, "x", workers=2)
    try:
        assert [p.name for p in pool.processes] == ["ipcbench-toy-0", "ipcbench-toy-1"]
        assert all(p.daemon for p in pool.processes)
        assert pool.start_method == "fork" and not pool.broken
    finally:
        pool.close()


def test_a_worker_that_speaks_before_ready_is_an_error() -> None:
    with pytest.raises(WorkerError) as info:
        _pool(SpeaksBeforeReady)
    assert str(info.value) == "toy worker 0 sent 'hello' before Ready" and info.value.worker_id == 0


def test_running_out_of_descriptors_while_starting_names_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_descriptors(connection) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(workers_module, "widen", no_descriptors)
    with pytest.raises(
        DescriptorLimitError, match=r"^\[Errno 24\] the toy strategy ran out of file descriptors starting 3"
    ):
        _pool(Echo, "x", workers=3)

    def no_space(connection) -> None:
        raise OSError(errno.ENOSPC, "No space left")

    monkeypatch.setattr(workers_module, "widen", no_space)
    with pytest.raises(OSError) as info:
        _pool(Echo, "x")
    assert type(info.value) is OSError and info.value.errno == errno.ENOSPC  # other errors as they are


def test_waiting_in_vain_names_what_was_awaited_and_the_workers_alive() -> None:
    pool = _pool(Echo, "x", workers=2, timeout=10.0)
    try:
        pids = pool.pids
        start = time.monotonic()
        with pytest.raises(WorkerTimeoutError) as info:
            pool.wait([pool.conns[0]], timeout=0.1)
        assert time.monotonic() - start < 1.0  # its own timeout, not the pool's
        assert str(info.value) == f"toy: no a result within timeout=0.1s; workers alive: {pids}"
        pool.timeout = 0.1
        with pytest.raises(WorkerTimeoutError, match=r"^toy: no data from worker 1 within timeout=0.1s; workers alive"):
            pool.read(1)
    finally:
        pool.close()


def test_a_close_waits_the_stop_grace_for_a_worker_that_neither_reads_nor_exits_then_terminates_it() -> None:
    pool = _pool(NeverReads, "x", timeout=0.3)
    with pytest.raises(WorkerTimeoutError):
        for _ in range(16):
            pool.send(0, BIG)  # its pipe is full: not even Stop fits
    start = time.monotonic()
    pool.close()  # not marked broken: the polite path, in vain
    took = time.monotonic() - start
    assert STOP_GRACE_S <= took < STOP_GRACE_S + TERMINATE_GRACE_S, took
    assert pool.processes == []


def test_the_descriptor_check_counts_what_is_open_against_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "listdir", lambda path: [str(i) for i in range(11)])  # 10 open, and the listing's own
    needed = 4 * 10 + 24
    monkeypatch.setattr(resource, "getrlimit", lambda which: (10 + needed, resource.RLIM_INFINITY))
    check_descriptor_room(10, "pipe")  # exactly at the limit: room enough
    monkeypatch.setattr(resource, "getrlimit", lambda which: (10 + needed - 1, resource.RLIM_INFINITY))
    with pytest.raises(DescriptorLimitError) as info:
        check_descriptor_room(10, "pipe")
    assert info.value.errno == errno.EMFILE
    assert str(info.value) == (
        f"[Errno {errno.EMFILE}] the pipe strategy with 10 workers needs about {needed} more file descriptors, and "
        f"this process has 10 open of its limit of {10 + needed - 1} (ulimit -n). Raise the limit (ulimit -n 4096, "
        "or resource.setrlimit(resource.RLIMIT_NOFILE, ...)), or use fewer workers"
    )
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    check_descriptor_room(10_000, "pipe")  # no limit

    def no_proc(path: str) -> list:
        raise OSError("no /proc")

    monkeypatch.setattr(resource, "getrlimit", lambda which: (10, 10))
    monkeypatch.setattr(os, "listdir", no_proc)
    check_descriptor_room(10_000, "pipe")  # cannot count: left to the start's own EMFILE


def test_exit_statuses_in_words() -> None:
    assert how_it_ended(None) == "exited"
    assert how_it_ended(0) == "exited with code 0"
    assert how_it_ended(2) == "exited with code 2"
    assert how_it_ended(-9) == "was killed by signal 9 (SIGKILL)"
    assert how_it_ended(-15) == "was killed by signal 15 (SIGTERM)"


def test_running_out_of_descriptors_names_the_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    error = descriptor_limit_error(OSError(errno.EMFILE, "Too many open files"), "pipe", 3)
    assert isinstance(error, DescriptorLimitError) and error.errno == errno.EMFILE
    assert str(error).endswith(
        f"the pipe strategy ran out of file descriptors starting 3 workers: this process's limit of {soft} "
        "(ulimit -n) is reached. Raise the limit or use fewer workers"
    )
    system = descriptor_limit_error(OSError(errno.ENFILE, "Too many open files in system"), "shm", 2)
    assert system.errno == errno.ENFILE and "starting 2 workers: this system's is reached" in str(system)


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> list:
    """worker_main in the test process: no parent watch (the parent is pytest's), SIGINT left as it is."""
    watched: list = []
    monkeypatch.setattr(workers_module, "watch_parent", lambda: watched.append(True))
    monkeypatch.setattr(signal, "signal", lambda *args: watched.append(args))
    return watched


def test_worker_main_says_ready_runs_the_worker_and_returns_when_the_main_process_hangs_up(in_process: list) -> None:
    main_end, worker_end = Pipe()
    main_end.send("ping")
    main_end.send(Stop())
    worker_main(Echo, 4, worker_end, ("tag",))
    assert main_end.recv() == Ready(4, os.getpid())
    assert main_end.recv() == ("tag", 4, "ping")
    assert not main_end.poll(0)  # nothing after Stop
    assert in_process == [(signal.SIGINT, signal.SIG_IGN), True]  # Ctrl-C is the main process's; parent watched
    # The main process closing its end is not an error: the worker just returns.
    main_end.close()
    other_main, other_worker = Pipe()
    other_main.close()
    worker_main(Echo, 0, other_worker, ("tag",))


def test_worker_main_reports_any_exception_then_exits_with_status_1(in_process: list) -> None:
    main_end, worker_end = Pipe()
    with pytest.raises(SystemExit) as info:
        worker_main(FailsToStart, 2, worker_end, ())
    assert info.value.code == 1
    failure = main_end.recv()
    assert isinstance(failure, WorkerFailure)
    assert (failure.worker_id, failure.pid, failure.exc_type, failure.message) == (
        2,
        os.getpid(),
        "ValueError",
        "no dataset for worker 2",
    )
    assert failure.traceback.startswith("Traceback") and "in __init__" in failure.traceback
    assert not main_end.poll(0)  # no Ready before it


def test_a_forked_worker_sees_its_parent_gone_when_it_is_re_parented(monkeypatch: pytest.MonkeyPatch) -> None:
    """fork: no parent sentinel; the main process is gone once the parent pid changes."""
    monkeypatch.setattr(mp, "parent_process", lambda: None)
    parent = os.getppid()
    gone = main_process_watch()
    start = time.monotonic()
    assert not gone(0.05)
    assert time.monotonic() - start >= 0.05  # it waited the timeout before looking
    monkeypatch.setattr(os, "getppid", lambda: parent + 1)
    assert gone(0.0)


def test_a_spawned_worker_sees_its_parent_gone_when_the_sentinel_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    """spawn and forkserver: the main process's sentinel, a pipe only it writes to, reads as closed."""
    read_end, write_end = os.pipe()
    try:
        monkeypatch.setattr(mp, "parent_process", lambda: type("Parent", (), {"sentinel": read_end})())
        monkeypatch.setattr(os, "getppid", lambda: 1)  # the fork server's child: its parent pid proves nothing
        gone = main_process_watch()
        start = time.monotonic()
        assert not gone(0.05)
        assert time.monotonic() - start >= 0.05
        os.close(write_end)
        write_end = -1
        assert gone(5.0)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


@pytest.fixture
def watchers(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The threads watch_parent starts, kept so that a test can join them."""
    started: list[threading.Thread] = []

    class Recorded(threading.Thread):
        def start(self) -> None:
            started.append(self)
            super().start()

    monkeypatch.setattr(threading, "Thread", Recorded)
    return started


def test_the_parent_watch_runs_before_exit_then_exits_with_its_status(
    monkeypatch: pytest.MonkeyPatch, watchers: list[threading.Thread]
) -> None:
    answers = iter([False, False, True])  # the main process is seen gone at the third look
    looks: list[float] = []

    def gone(timeout: float) -> bool:
        looks.append(timeout)
        return next(answers)

    events: list = []
    monkeypatch.setattr(workers_module, "main_process_watch", lambda: gone)
    monkeypatch.setattr(os, "_exit", lambda status: events.append(("exit", status)))
    returned = watch_parent(lambda: events.append("before_exit"))
    (watcher,) = watchers
    assert watcher.daemon and watcher.name == "ipcbench-parent-watch"
    watcher.join(5.0)
    assert not watcher.is_alive()
    assert returned is gone
    assert looks == [PARENT_POLL_S] * 3
    assert events == ["before_exit", ("exit", EXIT_PARENT_DIED)]


def test_the_parent_watch_exits_even_when_before_exit_raises(
    monkeypatch: pytest.MonkeyPatch, watchers: list[threading.Thread]
) -> None:
    events: list = []
    monkeypatch.setattr(workers_module, "main_process_watch", lambda: lambda timeout: True)
    monkeypatch.setattr(os, "_exit", lambda status: events.append(status))
    monkeypatch.setattr(threading, "excepthook", lambda args: events.append(args.exc_type))

    def before_exit() -> None:
        raise OSError("segment already gone")

    watch_parent(before_exit)
    watchers[0].join(5.0)
    assert events == [EXIT_PARENT_DIED, OSError]
    events.clear()
    watch_parent()  # without before_exit
    watchers[1].join(5.0)
    assert events == [EXIT_PARENT_DIED]


def _exit_soon() -> None:
    time.sleep(0.2)


def _sleep() -> None:
    time.sleep(60)


def _sleep_through_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)


def test_processes_a_library_started_get_their_grace_then_sigterm_then_sigkill() -> None:
    ctx = mp.get_context("fork")
    polite, stubborn, deaf = (ctx.Process(target=t, daemon=True) for t in (_exit_soon, _sleep, _sleep_through_sigterm))
    for process in (polite, stubborn, deaf):
        process.start()
    time.sleep(0.1)  # the deaf one has set its SIGTERM handler
    start = time.monotonic()
    stop_processes([polite], grace_s=5.0)
    assert time.monotonic() - start < 2.0 and polite.exitcode == 0  # it exited within its grace, unasked
    start = time.monotonic()
    stop_processes([stubborn, deaf], grace_s=0.0)
    took = time.monotonic() - start
    assert stubborn.exitcode == -signal.SIGTERM and deaf.exitcode == -signal.SIGKILL
    # SIGTERM ends the first at once; the second is killed after TERMINATE_GRACE_S
    assert TERMINATE_GRACE_S <= took < TERMINATE_GRACE_S + STOP_GRACE_S / 2, took
    stop_processes([polite, stubborn, deaf])  # all gone: nothing to do, no error
    late = ctx.Process(target=_sleep, daemon=True)
    late.start()
    start = time.monotonic()
    stop_processes([late])  # no grace by default: SIGTERM at once
    assert late.exitcode == -signal.SIGTERM and time.monotonic() - start < TERMINATE_GRACE_S / 2


WORKER_ENVIRONMENTS = """
import multiprocessing as mp, os, sys
from strategies import make_generator

SHOW = "import os; print('worker', os.environ.get('GLIBC_TUNABLES', 'unset'))"

if __name__ == "__main__":
    gen = make_generator(sys.argv[1], sys.argv[2], workers=2, tile=32, background_start=sys.argv[3] == "on")
    # Forked from the generator's fork server, as its workers are.
    probe = mp.get_context("forkserver").Process(target=exec, args=(SHOW,))
    probe.start()
    probe.join()
    print("main", os.environ.get("GLIBC_TUNABLES", "unset"))
    gen.close()
"""


@pytest.mark.parametrize(
    ("inherited", "workers_get"),
    [
        (None, "glibc.cpu.x86_non_temporal_threshold=0x100000"),
        ("glibc.malloc.check=0", "glibc.malloc.check=0:glibc.cpu.x86_non_temporal_threshold=0x100000"),
        ("glibc.cpu.x86_non_temporal_threshold=0xb580000", "glibc.cpu.x86_non_temporal_threshold=0xb580000"),
    ],
)
@pytest.mark.parametrize(("strategy", "background_start"), [("pipe", "off"), ("shm_zerocopy", "on")])
def test_workers_copy_past_the_cache_and_the_program_keeps_its_environment(
    tmp_path, inherited: str | None, workers_get: str, strategy: str, background_start: str
) -> None:
    """The fork server, hence every worker, starts with streaming copies; a threshold the program sets wins."""
    dataset = write_dataset(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if inherited is not None:
        env["GLIBC_TUNABLES"] = inherited
    out = subprocess.run(
        [sys.executable, "-c", WORKER_ENVIRONMENTS, strategy, str(dataset), background_start],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    assert out.stdout.splitlines() == [f"worker {workers_get}", f"main {inherited or 'unset'}"], out.stderr


def test_the_streaming_threshold_is_added_to_what_the_program_sets_unless_it_sets_its_own() -> None:
    streaming = f"glibc.cpu.x86_non_temporal_threshold={workers_module.STREAMING_COPY_BYTES:#x}"
    assert workers_module.worker_glibc_tunables(None) == streaming
    assert workers_module.worker_glibc_tunables("") == streaming
    assert workers_module.worker_glibc_tunables("glibc.malloc.tcache_count=0") == (
        f"glibc.malloc.tcache_count=0:{streaming}"
    )
    own = "glibc.cpu.x86_non_temporal_threshold=0x4040:glibc.malloc.check=0"
    assert workers_module.worker_glibc_tunables(own) == own
