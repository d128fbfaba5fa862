"""Reading ``multiprocessing.connection`` messages without ever blocking forever.

``Connection.recv_bytes()`` blocks until the whole message has arrived. If the
writer dies half-way through a 40 MB message, the reader waits for the rest:

- on a worker's own Pipe the kernel reports EOF once the worker is gone, so
  ``recv_bytes`` raises ``EOFError``; but a *stopped* worker (hung, or SIGSTOPped)
  blocks it forever;
- on a ``multiprocessing.Queue`` every worker holds the write end of the one result
  pipe, so a worker SIGKILLed mid-``put`` leaves a partial message that never
  completes and never reaches EOF: ``Queue.get()`` hangs for good, and the other
  workers hang on the queue's write lock that the dead one held.

:class:`MessageReader` speaks the same wire format as ``Connection.send_bytes``
(a 4-byte big-endian length, or -1 then an 8-byte length; CPython
``Lib/multiprocessing/connection.py``) but reads from a non-blocking descriptor,
calling ``wait()`` whenever no byte is ready. The caller's ``wait`` is where the
timeout and the liveness check live (``connection.wait`` on the descriptor and the
workers' sentinels): a dead writer surfaces as an error there, never as a hang.

Writing has the mirror problem: the main process's ends are non-blocking, so a
plain ``Connection.send`` into a full pipe (a worker that stopped reading) would
raise in the middle of a message and leave half of it behind. :func:`send_message`
frames the same way and calls ``wait_writable()`` (bounded, watching the workers)
until the rest fits.

Reading straight into a caller's buffer (:meth:`MessageReader.recv_into`) is also
how ``pipe`` receives pixels without an intermediate copy, like
``recv_bytes_into``.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import struct
from collections.abc import Callable
from multiprocessing.connection import Connection

# Room in the kernel for a large message: each time a reader drains the buffer it
# waits (a poll and a wake-up of the writer), so a 64 KiB pipe costs ~500 round
# trips per 30 MB image. 1 MiB is Linux's default ceiling for an unprivileged pipe
# (/proc/sys/fs/pipe-max-size).
WIDE_BUFFER_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

_SMALL = struct.Struct("!i")
_LARGE = struct.Struct("!Q")


def widen(conn: Connection, nbytes: int = WIDE_BUFFER_BYTES) -> None:
    """Ask the kernel for an ``nbytes`` buffer behind ``conn`` (a pipe or a socket); best effort."""
    fd = conn.fileno()
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, _F_SETPIPE_SZ, nbytes)
        else:
            sock = socket.socket(fileno=os.dup(fd))
            with sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, nbytes)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, nbytes)
    except OSError:
        pass  # a lower limit on this system: the default buffer still works, only slower


class MessageReader:
    """Reads framed messages from ``conn``'s descriptor, which it makes non-blocking.

    ``wait`` is called with no argument whenever the descriptor has no byte ready;
    it must return once it may have, or raise (timeout, dead writer).
    """

    def __init__(self, conn: Connection, wait: Callable[[], None]) -> None:
        self.fd = conn.fileno()
        os.set_blocking(self.fd, False)
        self.wait = wait
        self._buffer = bytearray()  # reused by recv(): no fresh 30 MB (zeroed, page-faulted) per image

    def _fill(self, view: memoryview) -> None:
        filled = 0
        while filled < len(view):
            try:
                n = os.readv(self.fd, [view[filled:]])
            except BlockingIOError:
                n = None  # wait outside the handler, so that its errors are not chained to this one
            except ConnectionResetError:
                n = 0  # a socket pair whose peer died with unread data: ECONNRESET instead of EOF
            if n is None:
                self.wait()
                continue
            if n == 0:
                raise EOFError("the writer closed its end in the middle of a message")
            filled += n

    def _size(self) -> int:
        header = bytearray(_SMALL.size)
        self._fill(memoryview(header))
        (size,) = _SMALL.unpack(header)
        if size == -1:
            header = bytearray(_LARGE.size)
            self._fill(memoryview(header))
            (size,) = _LARGE.unpack(header)
        return size

    def recv(self) -> memoryview:
        """The next whole message: a view of a buffer that the next ``recv()`` reuses (unpickle it first)."""
        size = self._size()
        if size > len(self._buffer):
            self._buffer = bytearray(size)  # a new one: views of the old may still exist
        view = memoryview(self._buffer)[:size]
        self._fill(view)
        return view

    def recv_into(self, buffer: memoryview) -> int:
        """Read the next message into ``buffer``, which must be exactly its size."""
        size = self._size()
        if size != buffer.nbytes:
            raise ValueError(f"message of {size} bytes does not fit the {buffer.nbytes}-byte buffer it was meant for")
        self._fill(buffer.cast("B"))
        return size

    def drain(self) -> bool:
        """Discard whatever bytes are ready now; False once the writer has closed its end."""
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False


def send_message(conn: Connection, payload: bytes, wait_writable: Callable[[], None]) -> None:
    """Write ``payload`` as one message on ``conn``'s non-blocking descriptor, as ``send_bytes`` frames it."""
    n = len(payload)
    header = _SMALL.pack(n) if n <= 0x7FFFFFFF else _SMALL.pack(-1) + _LARGE.pack(n)
    view = memoryview(header + payload)
    fd = conn.fileno()
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            written = None  # wait outside the handler, so that its errors are not chained to this one
        if written is None:
            wait_writable()
            continue
        view = view[written:]
