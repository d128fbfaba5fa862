"""The one error type the CLI catches: a clear, user-facing failure with no traceback."""

from __future__ import annotations


class IpcbenchError(Exception):
    """A failure the user can act on (bad argument, missing package, bad dataset).

    ``ipcbench`` prints ``ipcbench: error: <message>`` and exits with status 2.
    """
