"""Results files byte by byte: what the writers put in them, and every error the readers give, whole."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from harness.errors import IpcbenchError
from harness.results.io import (
    SamplesWriter,
    append_lines,
    check_schema,
    dumps_line,
    finite,
    read_json_object,
    read_jsonl,
    read_samples,
    write_atomic,
    write_json,
)


def test_a_line_is_compact_json_with_numpy_scalars_as_numbers_and_non_finite_as_null() -> None:
    record = {"a": np.float32(1.5), "b": np.int64(3), "c": [math.nan, (math.inf, 2.0)], "d": {"e": -math.inf}}
    assert dumps_line(record) == '{"a":1.5,"b":3,"c":[null,[null,2.0]],"d":{"e":null}}\n'
    assert finite(math.nan) is None and finite(2.5) == 2.5 and finite("nan") == "nan"
    with pytest.raises(TypeError, match=r"^set is not JSON serializable$"):
        dumps_line({"a": {1}})


def test_lines_are_appended_whole_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    assert append_lines(path, []) == 0 and not path.exists()
    assert append_lines(path, [{"a": 1}, {"b": 2}]) == 2
    assert append_lines(path, [{"c": 3}]) == 1
    assert path.read_text() == '{"a":1}\n{"b":2}\n{"c":3}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_samples_writer_appends_records_and_dicts_and_counts_them(tmp_path: Path) -> None:
    class Record:
        def as_dict(self) -> dict:
            return {"from": "record"}

    writer = SamplesWriter(tmp_path / "samples.jsonl")
    writer.append([Record(), {"from": "dict"}])
    writer.append([{"n": 3}])
    assert writer.count == 3
    assert read_jsonl(writer.path)[0] == [{"from": "record"}, {"from": "dict"}, {"n": 3}]


def test_reading_lines_skips_blank_ones_and_forgives_only_a_truncated_last(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"b": 2}\n{"c": ')
    assert read_jsonl(path) == ([{"a": 1}, {"b": 2}], 4)
    with pytest.raises(IpcbenchError) as info:
        read_jsonl(path, forgive_last=False)
    assert str(info.value).startswith(f"{path}:4: not valid JSON (")
    path.write_text('{"a": 1}\n{"b": \n{"c": 3}\n')
    with pytest.raises(IpcbenchError, match=rf"^{path}:2: not valid JSON \(Expecting value\)$"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(IpcbenchError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:2: expected a JSON object"
    path.write_text('{"a": 1}\n')
    assert read_jsonl(path) == ([{"a": 1}], 0)


def test_a_line_of_another_schema_version_is_refused_unless_not_checked(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"schema_version": 1}\n{"schema_version": 2}\n')
    with pytest.raises(IpcbenchError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:2: schema_version 2 is not supported (this ipcbench reads 1)"
    assert read_jsonl(path, check_version=False)[0] == [{"schema_version": 1}, {"schema_version": 2}]
    assert read_samples(path) == [{"schema_version": 1}, {"schema_version": 2}]


def test_missing_and_unreadable_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "run" / "samples.jsonl"
    for read in (read_jsonl, read_json_object):
        with pytest.raises(IpcbenchError) as info:
            read(missing)
        assert str(info.value) == f"{missing} is missing: is {missing.parent} a results folder?"
    assert read_samples(missing) == []
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    for read in (read_jsonl, read_json_object):
        with pytest.raises(IpcbenchError, match=rf"^{binary}: cannot read \('utf-8' codec"):
            read(binary)


def test_a_json_object_file_is_refused_when_it_is_not_one_object(tmp_path: Path) -> None:
    path = tmp_path / "env.json"
    path.write_text('{"a": [1, 2]}')
    assert read_json_object(path) == {"a": [1, 2]}
    path.write_text("[1, 2]")
    with pytest.raises(IpcbenchError) as info:
        read_json_object(path)
    assert str(info.value) == f"{path}: expected one JSON object, found list"
    path.write_text("{")
    with pytest.raises(IpcbenchError, match=rf"^{path}: not valid JSON \(Expecting property name"):
        read_json_object(path)


def test_the_schema_version_may_be_missing_but_not_another(tmp_path: Path) -> None:
    check_schema(None, tmp_path / "env.json")
    check_schema(1, tmp_path / "env.json", 3)
    with pytest.raises(IpcbenchError) as info:
        check_schema("1", tmp_path / "env.json")
    assert str(info.value) == f"{tmp_path / 'env.json'}: schema_version '1' is not supported (this ipcbench reads 1)"
    with pytest.raises(IpcbenchError, match=rf"^{tmp_path / 'x'}:7: schema_version 0 "):
        check_schema(0, tmp_path / "x", 7)


def test_atomic_writes_replace_the_file_readable_by_all_and_leave_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "summary.csv"
    path.write_text("old")
    assert write_atomic(path, b"new") == path
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "no-such-folder" / "x", b"")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]


def test_the_temporary_is_a_hidden_file_beside_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside it: the rename stays within one file system; hidden and .tmp: no reader takes it for a result."""
    renamed: list[tuple[str, str]] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append((src, dst)), real_replace(src, dst)))
    write_atomic(tmp_path / "summary.csv", b"x")
    ((src, dst),) = renamed
    assert Path(dst) == tmp_path / "summary.csv" and Path(src).parent == tmp_path
    assert Path(src).name.startswith(".summary.csv.") and src.endswith(".tmp")


def test_atomic_write_failing_midway_removes_its_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args) -> None:
        raise PermissionError("no")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_atomic(tmp_path / "x", b"data")
    assert list(tmp_path.iterdir()) == []


def test_json_files_are_indented_with_numpy_numbers_and_nulls(tmp_path: Path) -> None:
    path = write_json(tmp_path / "env.json", {"n": np.int32(2), "x": math.nan})
    assert path.read_text() == '{\n  "n": 2,\n  "x": null\n}\n'
    mapping = write_json(tmp_path / "m.json", MappingProxyType({"x": math.inf}))  # any mapping
    assert json.loads(mapping.read_text()) == {"x": None}
    assert json.loads(write_json(tmp_path / "list.json", [1.0, math.inf]).read_text()) == [1.0, None]
