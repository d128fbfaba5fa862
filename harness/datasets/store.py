"""The dataset cache: build a folder once, atomically; reuse it while it matches.

Life of a built-in dataset folder ``DIR`` (say ``data/synth``)::

    lock  DIR/../.synth.lock                 one builder per folder at a time (flock)
    build DIR/../.synth.partial-<pid>-<hex>/ images/, labels/, classes.csv, then
                                             dataset.json, written last
    swap  DIR -> .synth.old-<pid>-<hex>      (only when replacing, with force)
          .synth.partial-... -> DIR          a rename: DIR is complete or absent
          rm -r .synth.old-...

A build that fails or is interrupted removes its partial folder; one killed outright
leaves a hidden ``.partial`` folder that never looks like a dataset, and the next
build of that folder deletes it. A folder with a ``dataset.json`` is therefore always
complete.

``dataset.json`` (schema :data:`SCHEMA_VERSION`) records the source, the generator
parameters, the package versions that wrote it, every file's size, mtime and sha256,
and a ``fingerprint``: the sha256 of the source, parameters and sorted checksums.

Reuse: the same source and parameters, the same file names, and every file with its
recorded size and mtime (a cheap ``stat``; hashing ~300 MB on every run would cost
more than the benchmark's start-up). A file whose size is right but whose mtime moved
(a copy, say) is re-hashed once and its mtime re-recorded. A damaged folder of ours
(missing or resized file) with the same parameters is rebuilt. Different parameters
are an error unless ``force``; a non-empty folder without ``dataset.json`` is never
touched (it may be the user's own data).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from strategies import open_dataset

from ..errors import IpcbenchError

SCHEMA_VERSION = 1
MANIFEST = "dataset.json"
# TIFF compression of built-in datasets: lossless codecs only (the pixels read back are
# the pixels written); "lzw" and "zstd" are encoded by imagecodecs, which tifffile uses.
COMPRESSIONS = ("none", "zlib", "zstd", "lzw")
LAYOUTS = ("strips", "tiles")
TIFF_TILE_PX = 256  # layout="tiles": 256 x 256 TIFF tiles, the size of a training tile
# How long to wait for another process building the same folder (a full real or
# synth build takes seconds to a minute; ten minutes means that process is stuck).
LOCK_TIMEOUT_S = 600.0
LOCK_POLL_S = 0.2
HASH_CHUNK = 4 * 2**20

Progress = Callable[[str], None]
Builder = Callable[[Path, Progress], dict[str, Any]]


def check_int(name: str, value: object, low: int, high: int) -> None:
    """Raise IpcbenchError unless ``value`` is an int in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise IpcbenchError(f"{name}={value!r} must be an integer")
    if not low <= value <= high:
        raise IpcbenchError(f"{name}={value} must be in {low}..{high}")


def write_tiff(path: Path, array: np.ndarray, compression: str, layout: str) -> None:
    """Write ``array`` ((H, W) or (C, H, W), one page per channel) with the given compression and layout.

    ``compression`` is one of :data:`COMPRESSIONS` (all lossless: :func:`tifffile.imread`
    gives back ``array`` bit for bit), ``layout`` one of :data:`LAYOUTS`.
    """
    kwargs: dict[str, Any] = {"tile": (TIFF_TILE_PX, TIFF_TILE_PX)} if layout == "tiles" else {}
    tifffile.imwrite(
        path,
        array,
        photometric="minisblack",
        compression=None if compression == "none" else compression,
        metadata={"axes": "YX" if array.ndim == 2 else "CYX"},
        **kwargs,
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _dataset_files(folder: Path) -> list[str]:
    """Relative paths of the files that make up a dataset folder (not dataset.json), sorted."""
    names = [
        f"{sub}/{p.name}"
        for sub in ("images", "labels")
        if (folder / sub).is_dir()
        for p in (folder / sub).iterdir()
        if p.is_file()
    ]
    if (folder / "classes.csv").is_file():
        names.append("classes.csv")
    return sorted(names)


def _fingerprint(source: str, params: dict[str, Any], checksums: dict[str, str]) -> str:
    blob = json.dumps({"source": source, "params": params, "files": sorted(checksums.items())}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's dataset.json, or None when it has none."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IpcbenchError(
            f"{path} is not readable JSON ({exc}); remove the folder or rebuild it with --force"
        ) from exc
    if not isinstance(manifest, dict):
        raise IpcbenchError(f"{path} is not an ipcbench dataset manifest (a JSON object)")
    return manifest


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, folder / MANIFEST)


def fingerprint(path: str | os.PathLike[str]) -> str:
    """The dataset's fingerprint: from dataset.json, or (a user's folder) from file names and sizes."""
    folder = Path(path)
    manifest = read_manifest(folder)
    if manifest is not None and isinstance(manifest.get("fingerprint"), str):
        return manifest["fingerprint"]
    if not folder.is_dir():
        raise IpcbenchError(f"dataset directory {folder} does not exist")
    lines = [f"{name}\t{(folder / name).stat().st_size}" for name in _dataset_files(folder)]
    if not lines:
        raise IpcbenchError(f"{folder} holds no dataset files (images/, labels/, classes.csv)")
    return hashlib.sha256(("files-and-sizes\n" + "\n".join(lines)).encode()).hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0], "numpy": np.__version__, "tifffile": tifffile.__version__}
    for package in ("imagecodecs", "ipcbench"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


@contextlib.contextmanager
def _locked(folder: Path, progress: Progress) -> Iterator[None]:
    """Hold an exclusive lock on ``folder``'s name (a hidden sibling file) while building or checking it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f".{folder.name}.lock").open("a") as fh:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        told = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise IpcbenchError(
                        f"another process has been building {folder} for over "
                        f"{LOCK_TIMEOUT_S:.0f} s; stop it or use another --out"
                    ) from None
                if not told:
                    progress(f"waiting for another ipcbench process building {folder}")
                    told = True
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove_leftovers(folder: Path) -> None:
    """Delete partial and old folders that a killed build of ``folder`` left behind (we hold its lock)."""
    for pattern in (f".{folder.name}.partial-*", f".{folder.name}.old-*"):
        for leftover in folder.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _differences(built: dict[str, Any], asked: dict[str, Any]) -> tuple[str, str]:
    """The parameters that differ, as 'k=v, ...' for the built and the asked-for dataset."""
    keys = [k for k in {**built, **asked} if built.get(k) != asked.get(k)]
    return (", ".join(f"{k}={built.get(k)!r}" for k in keys), ", ".join(f"{k}={asked.get(k)!r}" for k in keys))


def _check_files(folder: Path, manifest: dict[str, Any]) -> str | None:
    """Why the folder's files no longer match ``manifest`` (None: they match). Re-records moved mtimes."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "its dataset.json lists no files"
    present = _dataset_files(folder)
    if present != sorted(files):
        missing, extra = sorted(set(files) - set(present)), sorted(set(present) - set(files))
        return f"files changed (missing: {missing[:3]}, unexpected: {extra[:3]})"
    moved = False
    for name, record in files.items():
        stat = (folder / name).stat()
        if stat.st_size != record.get("size"):
            return f"{name} has {stat.st_size} bytes, {record.get('size')} when built"
        if stat.st_mtime_ns != record.get("mtime_ns"):
            # Same size, new mtime (copied, touched): trust the bytes, not the clock.
            if file_sha256(folder / name) != record.get("sha256"):
                return f"{name} changed since it was built (checksum differs)"
            record["mtime_ns"] = stat.st_mtime_ns
            moved = True
    if moved:
        _write_manifest(folder, manifest)
    return None


def _rebuild_reason(folder: Path, source: str, params: dict[str, Any], force: bool) -> str | None:
    """Why ``folder`` must be (re)built for ``source(params)``; None when it can be reused as is."""
    if not folder.exists():
        return "it does not exist"
    if not folder.is_dir():
        raise IpcbenchError(f"{folder} exists and is not a directory; choose another --out")
    if not (folder / MANIFEST).exists():
        if any(folder.iterdir()):
            raise IpcbenchError(
                f"{folder} exists, is not empty and has no {MANIFEST}: it is not a dataset ipcbench built, so "
                "ipcbench will not overwrite it; choose another --out (or use it as your own dataset)"
            )
        return "it is empty"
    try:
        manifest = read_manifest(folder)
    except IpcbenchError:
        if force:
            return f"forced rebuild: its {MANIFEST} is unreadable"
        raise
    assert manifest is not None
    if manifest.get("source") != source or manifest.get("params") != params:
        if force:
            return "forced rebuild with new parameters"
        built_params = manifest.get("params") if isinstance(manifest.get("params"), dict) else {}
        built, asked = _differences({"source": manifest.get("source"), **built_params}, {"source": source, **params})
        raise IpcbenchError(
            f"{folder} holds a dataset built with {built}, but you asked for {asked}; "
            "rebuild it with --force (force=True) or choose another --out"
        )
    if force:
        return "forced rebuild"
    if manifest.get("schema_version") != SCHEMA_VERSION:
        return f"it has schema version {manifest.get('schema_version')}, this ipcbench writes {SCHEMA_VERSION}"
    try:
        damage = _check_files(folder, manifest)
    except (AttributeError, TypeError, KeyError) as exc:  # a hand-edited dataset.json of ours
        damage = f"its {MANIFEST} is malformed ({type(exc).__name__}: {exc})"
    return None if damage is None else f"it is damaged: {damage}"


def ensure(
    folder: Path,
    source: str,
    params: dict[str, Any],
    builder: Builder,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Return ``folder`` holding the dataset ``source(params)``, building it when needed (see module doc)."""
    say = progress if progress is not None else (lambda message: None)
    folder = folder.absolute()
    params = json.loads(json.dumps(params))  # the form dataset.json stores: tuples -> lists
    with _locked(folder, say):
        _remove_leftovers(folder)
        reason = _rebuild_reason(folder, source, params, force)
        if reason is None:
            say(f"{source}: reusing {folder} (fingerprint {fingerprint(folder)[:12]})")
            return folder
        say(f"{source}: building {folder} ({reason})")
        _build(folder, source, params, builder, say)
    return folder


def _build(folder: Path, source: str, params: dict[str, Any], builder: Builder, say: Progress) -> None:
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    partial = folder.parent / f".{folder.name}.partial-{token}"
    started = time.perf_counter()
    partial.mkdir()
    try:
        details = builder(partial, say)
        dataset = open_dataset(partial)  # the built folder must pass the harness's own validation
        files: dict[str, dict[str, Any]] = {}
        for name in _dataset_files(partial):
            stat = (partial / name).stat()
            files[name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_sha256(partial / name)}
        entry = dataset.entries[0]
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "source": source,
            "params": params,
            "fingerprint": _fingerprint(source, params, {k: v["sha256"] for k, v in files.items()}),
            "images": len(dataset),
            "shape": [entry.channels, entry.height, entry.width],
            "dtype": "uint16",
            "total_mb": round(sum(f["size"] for f in files.values()) / 1e6, 3),
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_s": round(time.perf_counter() - started, 3),
            "versions": _versions(),
            "details": details,
            "files": files,
        }
        _write_manifest(partial, manifest)
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{token}"
            folder.rename(old)
            try:
                partial.rename(folder)
            except BaseException:
                old.rename(folder)  # put the previous dataset back rather than leave nothing
                raise
            shutil.rmtree(old)
        else:
            partial.rename(folder)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    say(
        f"{source}: built {folder} in {time.perf_counter() - started:.1f} s "
        f"({manifest['total_mb']:.0f} MB, fingerprint {manifest['fingerprint'][:12]})"
    )
