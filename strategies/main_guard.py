"""The ``if __name__ == "__main__":`` guard: the one mistake every spawn/forkserver program makes once.

With the ``spawn`` and ``forkserver`` start methods every worker process starts by
importing the program's main script (as ``__mp_main__``) to find the functions it
runs. A script that makes a generator at its top level, unguarded, makes one again
in each worker while that worker is still starting; multiprocessing refuses to
start processes from there, the worker exits with status 1, and the main process
only learns that a worker died.

Both sides say what is wrong here:

- in the worker, :func:`refuse_while_importing_main` (called by every generator's
  constructor) raises one clear error instead of multiprocessing's;
- in the main process, :func:`unguarded_main_hint` adds the cause and the fix to the
  error for a worker that died before it was ready, when the main script has no
  guard.
"""

from __future__ import annotations

import ast
import os
import sys

from .errors import ProcessContextError
from .internals import importing_main_for_a_child

GUARD = 'if __name__ == "__main__":'


def refuse_while_importing_main(strategy: str) -> None:
    """Raise if this process is a child still importing the main script (the script is unguarded)."""
    if importing_main_for_a_child():
        raise ProcessContextError(
            f"a {strategy} generator is being made while this process (pid {os.getpid()}) is a "
            f"multiprocessing child importing the main script{_being_imported()} at start-up. "
            f"With the spawn and forkserver start methods every worker imports the main script, so the "
            f"code that makes and uses generators must be under `{GUARD}`"
        )


def _being_imported() -> str:
    """`` PATH``: the main script a child is importing (as ``__mp_main__``), or "" if unknown."""
    path = getattr(sys.modules.get("__mp_main__"), "__file__", None)
    return f" {path}" if isinstance(path, str) else ""


def main_script() -> str | None:
    """The path of the program's main script, if it is a Python file (not ``-c``, stdin or a notebook)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path if isinstance(path, str) and path.endswith(".py") else None


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"``, either way round."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    constants = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and constants == ["__main__"]


def has_main_guard(source: str) -> bool:
    """Whether a module's top level has an ``if __name__ == "__main__":`` block."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return True  # cannot tell: say nothing rather than something wrong
    return any(isinstance(node, ast.If) and _is_main_test(node.test) for node in tree.body)


def unguarded_main_hint(start_method: str, exitcode: int | None) -> str:
    """The cause and the fix, for a worker that exited with status 1 before it was ready; "" if unlikely."""
    if start_method == "fork" or exitcode != 1:
        return ""  # fork does not import the main script; a signal or another status is something else
    path = main_script()
    if path is None:
        return ""
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except (OSError, UnicodeDecodeError):
        return ""
    if has_main_guard(source):
        return ""
    return (
        f". With start_method={start_method!r} every worker first imports the main script {path}, "
        f"which has no `{GUARD}` guard: the worker ran the script's code again, tried to make a "
        f"generator while it was still starting, and failed (its error is on stderr above). Put the "
        f"code that makes and uses generators under `{GUARD}`"
    )
