"""How ``close()`` in one thread wakes a ``next()`` blocked in another.

A training program may close a loader from a thread other than the one iterating
it (a watchdog, a signal handler's helper, a validation thread). The iterating
thread is then blocked in a wait for a worker's result. Closing the channels under
it would make it read from a half-closed pipe (or, worse, from a descriptor number
the kernel has already handed to something else). Instead:

1. ``close()`` *fires* the signal: a byte into a pipe that every wait of the main
   process watches beside its workers' pipes and sentinels (``fileno()``), and a
   completed future for waits on futures (the ``threads`` strategy);
2. the waiting ``next()`` sees it, raises :class:`~strategies.errors.LoaderClosedError`
   and leaves, releasing the generator's lock;
3. ``close()``, holding that lock now, shuts the channels down. Nothing is ever read
   from a channel that is being closed.
"""

from __future__ import annotations

import os
from concurrent.futures import Future

from .errors import LoaderClosedError


class CloseSignal:
    """A pipe and a future that ``fire()`` makes ready, for ``connection.wait`` and ``futures.wait``."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self.future: Future[None] = Future()
        self.fired = False

    def fileno(self) -> int:
        """The read end: readable once fired (a wait on it returns)."""
        return self._read

    def fire(self) -> None:
        """Wake every wait that watches this signal. Idempotent; safe from any thread."""
        if self.fired:
            return
        self.fired = True
        try:
            os.write(self._write, b"\0")
        except OSError:
            pass  # already closed (the generator is gone): nobody waits any more
        if not self.future.done():
            try:
                self.future.set_result(None)
            except Exception:
                pass  # a concurrent fire() set it first

    def check(self, waiting_for: str) -> None:
        """Raise :class:`LoaderClosedError` if the signal fired."""
        if self.fired:
            raise LoaderClosedError(f"the generator was closed (by another thread) while waiting for {waiting_for}")

    def close(self) -> None:
        """Release both descriptors. Only once no thread waits on the signal any more."""
        for fd in (self._read, self._write):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass  # closed already
        self._read = self._write = -1
