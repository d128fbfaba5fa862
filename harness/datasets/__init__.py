"""The built-in datasets: ``real`` (mosaics of real frames) and ``synth`` (a live/dead assay).

::

    from harness.datasets import ensure_dataset, dataset_fingerprint

    path = ensure_dataset("real")                              # data/real, built once
    path = ensure_dataset("synth", images=4, compression="zlib")  # data/synth-n4-zlib
    dataset_fingerprint(path)                                  # sha256 hex, for env.json

A source is a module with a frozen parameter dataclass (``RealParams``,
``SynthParams``: validated, with defaults) and a ``build(folder, params, progress)``
that writes ``images/``, ``labels/`` and ``classes.csv`` into a fresh folder.
:mod:`.store` does the rest: the atomic build, ``dataset.json`` with checksums and a
fingerprint, and reuse of a folder that already holds the same dataset.

Where a dataset goes when no ``out`` is given: ``data/<source>`` under the current
directory for the default parameters (``data/real``, ``data/synth``), and
``data/<source>-<what differs>`` otherwise (``data/synth-n4-zlib``), so datasets with
different parameters never fight over one folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import IpcbenchError
from . import real, store, synth

DEFAULT_DATA_DIR = Path("data")  # relative: resolved against the current directory when used
SOURCES = {real.SOURCE: (real.RealParams, real.build), synth.SOURCE: (synth.SynthParams, synth.build)}


def make_params(source: str, **params: Any) -> real.RealParams | synth.SynthParams:
    """The validated parameter record of ``source``; an unknown source or parameter is an IpcbenchError."""
    if source not in SOURCES:
        raise IpcbenchError(f"unknown dataset source {source!r}; choose one of {sorted(SOURCES)}")
    cls = SOURCES[source][0]
    known = cls.__dataclass_fields__
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise IpcbenchError(f"unknown {source} dataset parameter(s) {unknown}; known: {sorted(known)}")
    return cls(**params)


def default_dataset_dir(source: str, **params: Any) -> Path:
    """Where :func:`ensure_dataset` puts ``source(params)`` when no ``out`` is given."""
    slug = make_params(source, **params).slug()
    return DEFAULT_DATA_DIR / (f"{source}-{slug}" if slug else source)


def ensure_dataset(
    source: str,
    out: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    **params: Any,
) -> Path:
    """The folder holding dataset ``source`` built with ``params``; builds it unless it is already there.

    ``source`` is ``"real"`` or ``"synth"``; ``params`` are the fields of
    :class:`~harness.datasets.real.RealParams` or :class:`~harness.datasets.synth.SynthParams`
    (defaults for the rest). ``out`` defaults to :func:`default_dataset_dir`. An
    existing folder built with other parameters is rebuilt only with ``force``;
    ``progress`` receives one line per step (e.g. ``print`` to stderr). Returns an
    absolute path. Raises :class:`IpcbenchError` for bad parameters, a missing
    trackastra, or a folder that is not ours to overwrite.
    """
    record = make_params(source, **params)
    folder = Path(out) if out is not None else default_dataset_dir(source, **params)
    build = SOURCES[source][1]
    return store.ensure(
        folder, source, record.as_dict(), lambda path, say: build(path, record, say), force=force, progress=progress
    )


def dataset_fingerprint(path: str | os.PathLike[str]) -> str:
    """A sha256 hex string identifying a dataset: dataset.json's fingerprint, else one from file names and sizes."""
    return store.fingerprint(path)


__all__ = ["DEFAULT_DATA_DIR", "SOURCES", "dataset_fingerprint", "default_dataset_dir", "ensure_dataset", "make_params"]
