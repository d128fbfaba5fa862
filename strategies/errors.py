"""The errors a generator raises, in one place so callers can catch them by kind.

Worker errors follow CPython's ``concurrent.futures.process``: the exception that
reaches the main process carries the worker's traceback text as its ``__cause__``
(a :class:`RemoteTraceback`), so the reader sees where in the worker it failed.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset folder or one of its files is missing, corrupt or malformed.

    The message always names the offending file or folder.
    """


class StrategyUnavailableError(ImportError):
    """The strategy wraps a library (a peer loader) that is not installed; the message has the pip line."""


class LoaderClosedError(RuntimeError):
    """The generator was used after ``close()`` (or after a worker failure closed it)."""


class ProcessContextError(RuntimeError):
    """The generator cannot work in this process: a daemonic one, or a fork child that inherited it."""


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in a worker process."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class WorkerError(RuntimeError):
    """A worker process failed: it raised, died, or stopped answering."""

    def __init__(self, message: str, *, worker_id: int | None = None, pid: int | None = None) -> None:
        super().__init__(message)
        self.worker_id = worker_id
        self.pid = pid


class WorkerDiedError(WorkerError):
    """A worker process exited without reporting an error (killed, crashed, exited)."""

    def __init__(
        self, message: str, *, worker_id: int | None = None, pid: int | None = None, exitcode: int | None = None
    ) -> None:
        super().__init__(message, worker_id=worker_id, pid=pid)
        self.exitcode = exitcode


class WorkerTimeoutError(WorkerError, TimeoutError):
    """No result (or no readiness) arrived within ``LoaderConfig.timeout``."""


class SharedMemorySpaceError(OSError):
    """/dev/shm has less free space than the shared-memory slots need."""


class DescriptorLimitError(OSError):
    """The process may not open the file descriptors that the workers' pipes and sentinels need."""
