"""An opt-in SIGTERM handler, so a terminated training program closes its loaders.

``kill PID``, a job scheduler's time limit, ``docker stop`` and ``torchrun`` all
send SIGTERM. Python's default is to die at once: no ``finally`` runs, no
generator is closed, and the resource tracker prints "leaked" warnings for the
shared memory and semaphores it then removes. A library must not install signal
handlers behind a program's back, so this is a call the program makes::

    from strategies import exit_on_sigterm

    if __name__ == "__main__":
        exit_on_sigterm()          # SIGTERM now unwinds like Ctrl-C, then exits 143
        with make_generator("shm", "data/real") as gen:
            train(gen)

The handler raises ``SystemExit(143)`` (128 + SIGTERM, the status a shell reports
for a process SIGTERM ended) in the main thread, wherever it is: ``with`` blocks
and ``finally`` clauses run, every generator is closed, and the program exits with
status 143 and no traceback. The ``ipcbench`` commands call it themselves.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

EXIT_STATUS_SIGTERM = 128 + signal.SIGTERM


def _exit(signum: int, frame: Any) -> None:
    raise SystemExit(EXIT_STATUS_SIGTERM)


def exit_on_sigterm() -> Any:
    """Make SIGTERM raise ``SystemExit(143)`` in the main thread; return the handler it replaces.

    Call it from the main thread (Python runs signal handlers only there). Restore
    the previous behaviour with ``signal.signal(signal.SIGTERM, previous)``.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("exit_on_sigterm() must be called from the main thread, where signal handlers run")
    return signal.signal(signal.SIGTERM, _exit)
