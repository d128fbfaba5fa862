"""Reading and writing results files: one writer per kind, one tolerant JSON-lines reader.

Nothing a reader can see is ever half written:

- ``samples.jsonl`` (and the other ``.jsonl`` files) grow by whole lines, one
  ``os.write`` per batch of lines on a file opened with ``O_APPEND``: a run interrupted
  (Ctrl-C) or killed keeps every measurement that finished, and a line is either
  complete or, if the process died inside that write, the truncated last line, which
  :func:`read_jsonl` drops (and says so);
- every other file is written to a temporary name beside it and renamed over it
  (:func:`write_atomic`, :func:`write_json`).

NaN and infinity are not JSON: they are written as null.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.errors import IpcbenchError

from .schema import SCHEMA_VERSION


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def finite(value: Any) -> Any:
    """``value`` with every NaN and infinity (at any depth) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps_line(record: Mapping[str, Any]) -> str:
    """One JSON line, compact, NaN as null."""
    return json.dumps(finite(dict(record)), default=_json_default, separators=(",", ":")) + "\n"


def append_lines(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Append ``records`` to a JSON-lines file as whole lines, in one write; return how many."""
    lines = [dumps_line(r) for r in records]
    if not lines:
        return 0
    payload = "".join(lines).encode()
    fd = os.open(Path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(payload)
        while view:  # a regular file takes it in one write; loop only for safety
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(lines)


class SamplesWriter:
    """Appends records (dataclasses with ``as_dict``, or dicts) to one JSON-lines file, counting them."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.count = 0

    def append(self, records: Iterable[Any]) -> None:
        self.count += append_lines(self.path, (r.as_dict() if hasattr(r, "as_dict") else r for r in records))


def read_jsonl(
    path: Path, *, forgive_last: bool = True, check_version: bool = True
) -> tuple[list[dict[str, Any]], int]:
    """The objects of a JSON-lines file, and the 1-based number of a dropped truncated last line (0: none).

    A truncated *last* line is what a process killed mid-write leaves; with
    ``forgive_last`` it is dropped (a crashed run can still be looked at). Any other
    bad line, a line that is not an object, or another schema version is an
    :class:`IpcbenchError` naming the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError as exc:
        raise IpcbenchError(f"{path} is missing: is {path.parent} a results folder?") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise IpcbenchError(f"{path}: cannot read ({exc})") from exc
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    records, dropped = [], 0
    for position, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if forgive_last and position == len(numbered) - 1:
                dropped = number
                break
            raise IpcbenchError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise IpcbenchError(f"{path}:{number}: expected a JSON object")
        if check_version:
            check_schema(record.get("schema_version"), path, number)
        records.append(record)
    return records, dropped


def read_samples(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSON-lines file (no file: none); a truncated last line is dropped."""
    if not Path(path).exists():
        return []
    records, _ = read_jsonl(path, check_version=False)
    return records


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding one object, or an IpcbenchError naming the file and what is wrong."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise IpcbenchError(f"{path} is missing: is {Path(path).parent} a results folder?") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise IpcbenchError(f"{path}: cannot read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise IpcbenchError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise IpcbenchError(f"{path}: expected one JSON object, found {type(value).__name__}")
    return value


def check_schema(version: object, path: Path, line: int | None = None) -> None:
    """A missing version is tolerated (hand-made files); another one is not: fields may mean other things."""
    if version is not None and version != SCHEMA_VERSION:
        where = f"{path}:{line}" if line else str(path)
        raise IpcbenchError(
            f"{where}: schema_version {version!r} is not supported (this ipcbench reads {SCHEMA_VERSION})"
        )


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; results are for reading
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` (an object or a list) as indented JSON, atomically; NaN as null."""
    text = json.dumps(finite(data if isinstance(data, list) else dict(data)), indent=2, default=_json_default)
    return write_atomic(Path(path), (text + "\n").encode())
