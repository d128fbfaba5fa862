"""MessageReader: the wire format of ``Connection.send_bytes``, read without ever blocking forever.

Messages of every size written by ``send_bytes`` read back intact, whole or straight
into an exactly sized buffer; the 8-byte length form is understood; ``wait()`` is
called whenever no byte is ready (that is where the strategies put their timeout and
liveness check) and whatever it raises reaches the caller as is; a writer that
closes in the middle of a message is an ``EOFError``, never a hang. ``send_message``
frames the same way and waits through ``wait_writable()`` when the pipe is full.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait

import numpy as np
import pytest

from strategies.framing import MessageReader, send_message

pytestmark = pytest.mark.timeout(30)

WAIT_S = 5.0  # what the tests' own wait() allows before failing: nothing here takes long


def never_called() -> None:
    raise AssertionError("wait() was called although the whole message was already there")


def waiting_on(conn: Connection, calls: list[float]) -> Callable[[], None]:
    """A wait() that blocks until ``conn`` is readable, recording each call."""

    def wait_for_data() -> None:
        calls.append(time.monotonic())
        if not wait([conn], WAIT_S):
            raise TimeoutError(f"no data within {WAIT_S}s")

    return wait_for_data


@pytest.fixture
def pipe():
    reader, writer = Pipe(duplex=False)
    yield reader, writer
    reader.close()
    writer.close()


def write_later(action: Callable[[], None], delay_s: float = 0.1) -> threading.Thread:
    def run() -> None:
        time.sleep(delay_s)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_reader_makes_the_descriptor_non_blocking(pipe) -> None:
    reader, _ = pipe
    assert os.get_blocking(reader.fileno())
    MessageReader(reader, never_called)
    assert not os.get_blocking(reader.fileno())


@pytest.mark.parametrize("payload", [b"", b"x", b"hello" * 100])
def test_small_messages_already_there(pipe, payload: bytes) -> None:
    reader, writer = pipe
    writer.send_bytes(payload)
    writer.send_bytes(b"next")
    messages = MessageReader(reader, never_called)
    assert messages.recv() == payload
    assert messages.recv() == b"next"  # framing keeps message boundaries


def test_large_message_written_while_reading(pipe) -> None:
    # 3 MiB: far more than a pipe holds (64 KiB), so it arrives in many pieces.
    reader, writer = pipe
    payload = np.random.default_rng(0).integers(0, 256, 3 * 2**20, dtype=np.uint8).tobytes()
    calls: list[float] = []
    thread = write_later(lambda: writer.send_bytes(payload))
    assert MessageReader(reader, waiting_on(reader, calls)).recv() == payload
    thread.join(WAIT_S)
    assert calls, "wait() must be called while no byte is ready"


def test_wait_is_called_when_no_data(pipe) -> None:
    # The writer writes only once the reader has called wait(): a reader that spun
    # (or blocked) instead would get its data only after WAIT_S, with no call recorded.
    reader, writer = pipe
    calls: list[float] = []
    waiting = threading.Event()
    wait_for_data = waiting_on(reader, calls)

    def signalling_wait() -> None:
        waiting.set()
        wait_for_data()

    def write_once_waited() -> None:
        waiting.wait(WAIT_S)
        writer.send_bytes(b"late")

    thread = write_later(write_once_waited, delay_s=0.0)
    assert MessageReader(reader, signalling_wait).recv() == b"late"
    thread.join(WAIT_S)
    assert waiting.is_set() and calls


@pytest.mark.parametrize("shape", [(3,), (5, 2, 16, 16), (40, 2, 64, 64)], ids=["tiny", "20KiB", "640KiB"])
def test_recv_into_an_exactly_sized_buffer(pipe, shape: tuple[int, ...]) -> None:
    reader, writer = pipe
    sent = np.random.default_rng(1).integers(0, 2**16, shape, dtype=np.uint16)
    # As pipe.py sends tiles: flat bytes of a multi-dimensional array.
    thread = write_later(lambda: writer.send_bytes(memoryview(sent).cast("B")), delay_s=0.0)
    received = np.zeros(shape, np.uint16)
    calls: list[float] = []
    size = MessageReader(reader, waiting_on(reader, calls)).recv_into(memoryview(received))
    thread.join(WAIT_S)
    assert size == sent.nbytes
    np.testing.assert_array_equal(received, sent)


def test_recv_into_a_buffer_of_the_wrong_size(pipe) -> None:
    reader, writer = pipe
    writer.send_bytes(b"x" * 100)
    with pytest.raises(ValueError, match="message of 100 bytes does not fit the 99-byte buffer"):
        MessageReader(reader, never_called).recv_into(memoryview(bytearray(99)))


def test_eight_byte_length_form(pipe) -> None:
    # send_bytes frames messages of 2 GiB or more as -1 then an 8-byte length.
    reader, writer = pipe
    os.write(writer.fileno(), struct.pack("!i", -1) + struct.pack("!Q", 5) + b"hello")
    assert MessageReader(reader, never_called).recv() == b"hello"


@pytest.mark.parametrize(
    "written",
    [b"", struct.pack("!i", 100)[:2], struct.pack("!i", 100) + b"0123456789"],
    ids=["between_messages", "mid_header", "mid_payload"],
)
def test_writer_closing_is_eof_not_a_hang(pipe, written: bytes) -> None:
    reader, writer = pipe
    os.write(writer.fileno(), written)
    writer.close()
    calls: list[float] = []
    with pytest.raises(EOFError):
        MessageReader(reader, waiting_on(reader, calls)).recv()


def test_writer_closing_mid_message_during_recv_into(pipe) -> None:
    reader, writer = pipe
    os.write(writer.fileno(), struct.pack("!i", 1000) + b"x" * 10)
    write_later(writer.close)
    with pytest.raises(EOFError):
        MessageReader(reader, waiting_on(reader, [])).recv_into(memoryview(bytearray(1000)))


def test_wait_errors_reach_the_caller_unchained(pipe) -> None:
    # wait() is where a timeout or a dead worker is raised; the caller must see that
    # error alone, not "during handling of BlockingIOError" (an implementation detail).
    reader, writer = pipe
    os.write(writer.fileno(), struct.pack("!i", 10) + b"abc")  # a message that never completes

    def give_up() -> None:
        raise TimeoutError("nothing within the timeout")

    with pytest.raises(TimeoutError, match="nothing within the timeout") as info:
        MessageReader(reader, give_up).recv()
    assert not isinstance(info.value.__context__, BlockingIOError), "the error is chained to BlockingIOError"


def test_socket_peer_dying_with_unread_data_is_eof() -> None:
    # The duplex Pipe of pipe and shm is a socket pair. A worker killed while requests
    # it never read sit in its socket resets the connection: the reader must see that
    # as the end of the stream (EOFError), like a pipe's EOF, not as a raw OSError.
    main_end, worker_end = Pipe(duplex=True)
    try:
        main_end.send(b"a request the worker never reads")
        worker_end.send_bytes(b"partial")
        worker_end.close()
        messages = MessageReader(main_end, never_called)
        assert messages.recv() == b"partial"
        with pytest.raises(EOFError):
            messages.recv()
    finally:
        main_end.close()


def test_drain_discards_until_the_writer_closes(pipe) -> None:
    reader, writer = pipe
    messages = MessageReader(reader, never_called)
    assert messages.drain() is True  # nothing there, writer open
    # More than the pipe holds: the writer blocks until drain() makes room, as a
    # worker blocked on a full pipe does while the pool closes.
    thread = write_later(lambda: writer.send_bytes(b"y" * 1_000_000), delay_s=0.0)
    deadline = time.monotonic() + WAIT_S
    while thread.is_alive() and time.monotonic() < deadline:
        assert messages.drain() is True
        time.sleep(0.001)
    assert not thread.is_alive(), "drain() did not free the blocked writer"
    writer.close()
    assert messages.drain() is False


def test_send_message_waits_for_room_and_frames_like_send_bytes() -> None:
    main_end, worker_end = multiprocessing.Pipe(duplex=True)
    os.set_blocking(main_end.fileno(), False)
    payload = os.urandom(4 << 20)  # far more than a socket buffer holds
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(worker_end.recv_bytes()))
    reader.start()
    waits = []

    def wait_writable() -> None:
        waits.append(1)
        select.select([], [main_end], [], 5.0)

    try:
        send_message(main_end, payload, wait_writable)
        reader.join(10.0)
        assert received == [payload]
        assert waits, "a full pipe must be waited for through wait_writable, not by blocking"
    finally:
        main_end.close()
        worker_end.close()


def test_send_message_gives_up_when_wait_writable_raises() -> None:
    main_end, worker_end = multiprocessing.Pipe(duplex=True)
    os.set_blocking(main_end.fileno(), False)

    def give_up() -> None:
        raise TimeoutError("nobody reads")

    try:
        with pytest.raises(TimeoutError, match="nobody reads"):
            send_message(main_end, os.urandom(4 << 20), give_up)
    finally:
        main_end.close()
        worker_end.close()


def test_widen_gives_pipes_and_sockets_a_larger_kernel_buffer() -> None:
    import fcntl
    import socket

    from strategies.framing import WIDE_BUFFER_BYTES, widen

    reader, writer = multiprocessing.Pipe(duplex=False)  # an os.pipe: what a Queue reads from
    a, b = multiprocessing.Pipe(duplex=True)  # a socket pair: a worker's Pipe
    try:
        widen(reader)
        assert fcntl.fcntl(reader.fileno(), getattr(fcntl, "F_GETPIPE_SZ", 1032)) == WIDE_BUFFER_BYTES
        widen(a)
        with socket.socket(fileno=os.dup(a.fileno())) as sock:
            # Linux reports double what was asked (bookkeeping overhead), capped by wmem_max.
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= WIDE_BUFFER_BYTES
        # Still the same connection: a message goes through.
        a.send_bytes(b"x" * 300_000)
        assert b.recv_bytes() == b"x" * 300_000
    finally:
        for conn in (reader, writer, a, b):
            conn.close()
