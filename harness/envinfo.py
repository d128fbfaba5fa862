"""Provenance for env.json: what machine, software, code and data produced a run.

Everything here is read cheaply and never fails a run: a fact that cannot be read
(no git, no /proc/cpuinfo, a package not installed) is recorded as null. Package
versions come from ``importlib.metadata`` so that recording torch's version does not
import torch (seconds of start-up). Git is asked with ``--no-optional-locks`` so
that ``git status`` never writes the index of a checkout someone is working in.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .measure import SHM_DIR

if TYPE_CHECKING:
    from strategies.dataset import Dataset

PACKAGES = (
    "ipcbench",
    "numpy",
    "tifffile",
    "imagecodecs",
    "psutil",
    "pandas",
    "matplotlib",
    "scipy",
    "torch",
    "pytest-benchmark",
)
# Pinned to 1 in every measurement process (docs/design.md section 7): a BLAS or OpenMP
# pool per worker would oversubscribe the 2 cores and measure thread contention.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
PINNED_THREAD_ENV = dict.fromkeys(THREAD_ENV_VARS, "1")
GIT_TIMEOUT_S = 10.0  # a huge or networked checkout must not stall a run
REPO_ROOT = Path(__file__).resolve().parents[1]


def utc_now() -> datetime:
    return datetime.now(UTC)


def run_id_for(moment: datetime) -> str:
    """``20251125T141503Z``: sortable, and safe as a folder name on every OS."""
    return moment.strftime("%Y%m%dT%H%M%SZ")


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict[str, Any]:
    import psutil

    try:
        st = os.statvfs(SHM_DIR)
        shm_total_mb: float | None = st.f_blocks * st.f_frsize / 1e6
    except OSError:
        shm_total_mb = None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_mb": psutil.virtual_memory().total / 1e6,
        "shm_total_mb": shm_total_mb,
    }


def os_info() -> dict[str, Any]:
    pretty = None
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "system": platform.system(),
        "release": platform.release(),
        "version": platform.version(),
        "platform": pretty or platform.platform(),
    }


def python_info() -> dict[str, Any]:
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_info(cwd: Path = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` (None: no git or not a checkout)."""
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    status = _git("status", "--porcelain", cwd=cwd) if commit is not None else None
    return {"commit": commit.strip() if commit else None, "dirty": None if status is None else bool(status.strip())}


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def dataset_info(path: Path, source: str, *, opened: Dataset | None = None) -> dict[str, Any]:
    """Path, source, fingerprint, image count, and the images' sizes.

    ``shape`` is the first image's (C, H, W) (``shape[0]`` is every image's channel
    count); ``sizes`` lists each distinct (C, H, W) with its number of images, smallest
    first, and ``description`` says it in words: ``"8 images, 1 x 2700 x 3600"`` or
    ``"12 images, 3 sizes from 1 x 512 x 512 to 1 x 2700 x 3600"``. ``opened``: the
    dataset already opened from ``path`` (else it is opened here).
    """
    from strategies import open_dataset

    dataset = opened if opened is not None else open_dataset(path)
    sizes = dataset.sizes
    return {
        "path": str(Path(path).resolve()),
        "source": source,
        "name": Path(path).name,
        "fingerprint": dataset_fingerprint(Path(path)),
        "images": len(dataset),
        "shape": list(dataset.entries[0].shape),
        "shapes_differ": len(sizes) > 1,
        "sizes": [{"shape": list(shape), "images": count} for shape, count in sizes],
        "description": dataset.describe(),
        "compression": image_compression(dataset.entries[0].image_path),
        "bytes": sum(os.path.getsize(p) for e in dataset.entries for p in (e.image_path, e.label_path)),
    }


# tifffile's names of the compressions `ipcbench data --compression` writes, by the option's names.
COMPRESSION_NAMES = {"NONE": "none", "ADOBE_DEFLATE": "zlib", "DEFLATE": "zlib", "LZW": "lzw", "ZSTD": "zstd"}


def image_compression(path: str) -> str | None:
    """The TIFF compression of an image's first page: ``none``, ``zlib``, ``lzw``, ``zstd``, or tifffile's name."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            name = tif.pages[0].compression.name
    except Exception:  # the dataset was validated; a file that changed since is the run's to report
        return None
    return COMPRESSION_NAMES.get(name, name.lower())


def dataset_fingerprint(path: Path) -> str | None:
    """harness.datasets' fingerprint (from dataset.json); None for a folder it cannot fingerprint."""
    try:
        from harness.datasets import dataset_fingerprint as fingerprint
    except ImportError:  # the datasets module is not there: read what dataset.json recorded
        return _recorded_fingerprint(path)
    try:
        return str(fingerprint(path))
    except Exception:  # a user's folder without dataset.json: provenance must not fail the run
        return None


def _recorded_fingerprint(path: Path) -> str | None:
    import json

    try:
        value = json.loads((Path(path) / "dataset.json").read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return None if value is None else str(value)


def collect_env(
    *,
    run_id: str,
    created: datetime,
    command: list[str],
    start_method: str,
    dataset: dict[str, Any],
    config: dict[str, Any],
    memcpy: dict[str, Any] | None,
    sampler: dict[str, Any],
) -> dict[str, Any]:
    """The env.json object at the start of a run (``loadavg_after`` is filled in at the end)."""
    from .results import SCHEMA_VERSION

    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created": created.isoformat(timespec="seconds"),
        "command": list(command),
        "machine": machine_info(),
        "os": os_info(),
        "python": python_info(),
        "packages": package_versions(),
        "git": git_info(),
        "start_method": start_method,
        "dataset": dataset,
        "config": config,
        "memcpy": memcpy,
        "loadavg_before": loadavg(),
        "loadavg_after": None,
        "thread_env": dict(PINNED_THREAD_ENV),
        "sampler": sampler,
    }
