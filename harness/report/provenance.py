"""Where numbers came from: env.json read tolerantly, phrased for captions and tables.

The schema names *what* env.json records; the runner chooses the exact nesting
(``machine.cpu`` or ``machine.cpu_model``, ``git.commit`` or ``git_commit``). Each
fact is looked up under a few likely spellings, so a report never fails for a
provenance detail: what is absent reads "unknown".

Captions are built from the samples as much as from env.json: the config that a
figure shows is the set of cell-key values it contains (a key that varies across
cells is said to vary), and ``n`` is the count of measured windows per cell.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.results import RunData, measured

UNKNOWN = "unknown"


def lookup(env: dict[str, Any], *paths: str, default: Any = None) -> Any:
    """The first present value among dotted ``paths`` ("machine.cpu_model")."""
    for path in paths:
        value: Any = env
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
            if value is None:
                break
        if value is not None and value != "":
            return value
    return default


def cpu_name(env: dict[str, Any]) -> str:
    return str(
        lookup(env, "machine.cpu_model", "machine.cpu", "machine.cpu.model", "machine.processor", default=UNKNOWN)
    )


def cores_text(env: dict[str, Any]) -> str:
    logical = lookup(
        env, "machine.cores_logical", "machine.cores.logical", "machine.logical_cores", "machine.cpu_count"
    )
    physical = lookup(env, "machine.cores_physical", "machine.cores.physical", "machine.physical_cores")
    if logical is None and isinstance(lookup(env, "machine.cores"), int):
        logical = lookup(env, "machine.cores")
    if logical is None:
        return "cores unknown"
    return f"{logical} cores" if physical in (None, logical) else f"{logical} logical / {physical} physical cores"


def machine_text(env: dict[str, Any]) -> str:
    """``"AMD EPYC, 2 cores"``."""
    return f"{cpu_name(env)}, {cores_text(env)}"


def _details(info: dict[str, Any], names: list[str]) -> list[str]:
    """Source, image count and sizes, and compression of one dataset's env.json record."""
    source, description = info.get("source"), info.get("description")  # its sizes, all of them
    images, shape, compression = info.get("images"), info.get("shape"), info.get("compression")
    details = []
    if source and source not in names:
        details.append(str(source))
    if isinstance(description, str) and description:
        details.append(description)
    else:
        if images is not None:
            details.append(f"{images} images")
        if isinstance(shape, list | tuple):
            details.append(" x ".join(str(s) for s in shape))
    if isinstance(compression, str) and compression:
        details.append("uncompressed" if compression == "none" else f"{compression} compression")
    return details


def dataset_record(env: dict[str, Any], name: object = None) -> dict[str, Any]:
    """env.json's record of the dataset called ``name`` (a run over several lists each), else the run's first."""
    for info in env.get("datasets") or []:
        if isinstance(info, dict) and name is not None and str(info.get("name")) == str(name):
            return info
    info = env.get("dataset")
    return info if isinstance(info, dict) else {}


def dataset_text(run: RunData) -> str:
    """The dataset(s) of the samples, each with source, image count and sizes from env.json."""
    names = sorted({str(v) for v in run.samples["dataset"].unique()} - {"n/a"}) or ["not recorded"]
    several = run.env.get("datasets")  # a run over several datasets records each
    if isinstance(several, list) and len(several) > 1:
        return "; ".join(
            f"{info.get('name')} ({', '.join(_details(info, [str(info.get('name'))]))})"
            for info in several
            if isinstance(info, dict)
        )
    info = run.env.get("dataset")
    details = _details(info if isinstance(info, dict) else {}, names)
    text = ", ".join(names)
    return f"{text} ({', '.join(details)})" if details else text


CONFIG_PHRASES = (
    ("batch_size", "batch {}"),
    ("tile", "tile {} px"),
    ("prefetch", "prefetch {}"),
    ("start_method", "{}"),
    ("step_ms", "step {} ms"),
    ("workload", "workload {}"),
    ("decode_threads", "decode threads {}"),
    ("background_load", "{} busy processes beside"),
    ("cache", "{} page cache"),
    ("prefetch_next_epoch", "next epoch begun early: {}"),
    ("background_start", "workers started in the background: {}"),
)


# Values the loaders fill in for a cell key a file did not record (load.KEY_FILL, benchjson):
# 0 is never a real batch size, tile or prefetch (LoaderConfig requires >= 1).
NOT_RECORDED: dict[str, tuple[object, ...]] = {
    "batch_size": (0,),
    "tile": (0,),
    "prefetch": (0,),
    "start_method": ("n/a",),
    "workload": ("n/a",),
}


def disk_text(run: RunData) -> str:
    """The disk as a cold epoch meets it, and how well the eviction worked (env.json ``disk``, the samples)."""
    env = run.env
    text = (
        f"{float(lookup(env, 'disk.read_mb_per_s')):,.0f} MB/s reading "
        f"{float(lookup(env, 'disk.bytes', default=0)) / 1e6:,.0f} MB just evicted from the page cache"
    )
    readers = lookup(env, "disk.readers")
    if readers:
        text += f" ({readers} reader{'' if readers == 1 else 's'} side by side, median of the passes)"
    if "cache_resident_before" in run.samples.columns:
        resident = pd.to_numeric(run.samples["cache_resident_before"], errors="coerce").dropna()
        if len(resident):
            text += (
                f"; cold cells evict the dataset before every epoch, after which at most "
                f"{float(resident.max()):.1%} of its pages were still cached"
            )
    return text


def _numbers_first(value: object) -> tuple[int, float, str]:
    """Sort key: numbers in numeric order (5 before 20), then text in alphabetical order."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def config_text(samples: pd.DataFrame) -> str:
    """``"batch 32, tile 256 px, prefetch 2, forkserver, step 0 ms"``; varying keys are named as varying."""
    parts = []
    for key, phrase in CONFIG_PHRASES:
        values = sorted({plain(v) for v in samples[key].unique()}, key=_numbers_first)
        if len(values) == 1 and values[0] in NOT_RECORDED.get(key, ()):
            continue
        if len(values) == 1:
            parts.append(phrase.format(values[0]))
        else:
            parts.append(f"{key} varies ({', '.join(str(v) for v in values)})")
    return ", ".join(parts)


def n_text(run: RunData, column: str | None = None) -> str:
    """``"n = 6 measured windows per cell"`` (or a range when cells differ)."""
    counts = run.summary["n"].astype(int)
    unit = "timed round" if run.source == "pytest-benchmark" else "measured epoch"
    unit += "" if counts.max() == 1 else "s"
    span = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}–{counts.max()}"
    text = f"n = {span} {unit} per cell"
    if column is not None:
        rows = measured(run.samples)
        if column in rows.columns:
            text += f" ({int(rows[column].map(_length).sum()):,} values in all)"
    return text


def caption_context(run: RunData, column: str | None = None) -> str:
    """The sentences every caption ends with: machine, dataset, config, n (values of ``column`` counted)."""
    return (
        f"Machine: {machine_text(run.env)}. Dataset: {dataset_text(run)}. "
        f"Config: {config_text(run.samples)}; {n_text(run, column)}."
    )


def provenance_items(run: RunData) -> list[tuple[str, str]]:
    """(label, value) rows for the provenance section."""
    env = run.env
    items: list[tuple[str, str]] = [
        ("Run", f"{lookup(env, 'run_id', default=UNKNOWN)}, {lookup(env, 'created', default='date unknown')}")
    ]
    command = lookup(env, "command")
    if command:
        items.append(
            ("Command", "`" + (" ".join(map(str, command)) if isinstance(command, list) else str(command)) + "`")
        )
    machine = machine_text(env)
    memory = lookup(env, "machine.memory_total_mb")
    shm = lookup(env, "machine.shm_total_mb")
    if memory is not None:
        machine += f", {float(memory) / 1024:.1f} GiB RAM"
    if shm is not None:
        machine += f", {float(shm) / 1024:.1f} GiB /dev/shm"
    host = lookup(env, "machine.hostname")
    items.append(("Machine", machine + (f" (host `{host}`)" if host else "")))
    items.append(("OS", str(lookup(env, "os.platform", "os.release", "os", "machine.platform", default=UNKNOWN))))
    items.append(("Python", str(lookup(env, "python.version", "python_version", "python", default=UNKNOWN))))
    packages = lookup(env, "packages", "package_versions", "versions")
    if isinstance(packages, dict) and packages:
        items.append(("Packages", ", ".join(f"{k} {v}" for k, v in sorted(packages.items()) if v is not None)))
    commit = lookup(env, "git.commit", "git_commit", "commit")
    dirty = lookup(env, "git.dirty", "git_dirty", "dirty")
    if commit is not None:
        items.append(("Git", f"`{str(commit)[:12]}`" + (" (dirty: uncommitted changes)" if dirty else "")))
    dataset = dataset_text(run)
    fingerprint = lookup(env, "dataset.fingerprint")
    path = lookup(env, "dataset.path")
    if path:
        dataset += f"; the first at `{path}`" if run.env.get("datasets") else f" at `{path}`"
    if fingerprint:
        dataset += f", fingerprint `{str(fingerprint)[:16]}`"
    items.append(("Dataset", dataset))
    items.append(("Config", config_text(run.samples)))
    options = [
        f"{key} {plain(value)}"
        for key in ("start_method", "repeats", "epochs", "timeout", "seed", "shuffle", "augment")
        if (value := lookup(env, f"config.{key}", f"config.loader.{key}")) is not None
    ]
    if options:
        items.append(("Run options", ", ".join(options)))
    gb_per_s = lookup(env, "memcpy.gb_per_s", "memcpy.gb_per_s_median")
    if gb_per_s is not None:
        text = f"{float(gb_per_s):.1f} GB/s"
        copies = lookup(env, "memcpy.batch_copies_per_s_one_core")
        by_size = [e for e in lookup(env, "memcpy.by_batch_size", default=[]) if isinstance(e, dict)]
        if len(by_size) > 1:  # R for each batch size of the run
            rates = ", ".join(
                f"{float(e['batch_copies_per_s_one_core']):,.0f} of {e['batch_size']} tiles" for e in by_size
            )
            text += f" (batch copies/s on one core: {rates})"
        elif copies is not None:
            text += f" ({float(copies):,.0f} batch copies/s on one core)"
        items.append(("memcpy", text))
    disk = lookup(env, "disk.read_mb_per_s")
    if disk is not None:
        items.append(("Disk", disk_text(run)))
    before, after = lookup(env, "loadavg_before"), lookup(env, "loadavg_after")
    if before is not None or after is not None:
        items.append(("Load average", f"before {_loadavg(before)}, after {_loadavg(after)}"))
    overhead = lookup(env, "sampler.overhead_fraction")
    interval = lookup(env, "sampler.interval_s")
    if overhead is not None or interval is not None:
        parts = []
        if interval is not None:
            parts.append(f"every {float(interval) * 1000:.0f} ms")
        if overhead is not None:
            parts.append(f"its CPU time {float(overhead) * 100:.2f}% of epoch wall time (median)")
        items.append(("Memory sampler", ", ".join(parts)))
    outcome = lookup(env, "outcome")
    if isinstance(outcome, dict) and outcome.get("planned") is not None:
        text = f"{outcome.get('finished')} of {outcome.get('planned')} measurements finished"
        text += f", {outcome.get('failures') or 0} failed"
        if outcome.get("interrupted"):
            text += ", **interrupted**"
        if outcome.get("wall_s") is not None:
            text += f", {float(outcome['wall_s']) / 60:.1f} min in all"
        items.append(("Outcome", text))
    threads = lookup(env, "thread_env")
    if isinstance(threads, dict) and threads:
        items.append(("Thread env", ", ".join(f"{k}={v}" for k, v in sorted(threads.items()))))
    return items


def _loadavg(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " / ".join(f"{float(v):.2f}" for v in value)
    return UNKNOWN if value is None else str(value)


def plain(value: Any) -> Any:
    """0.0 -> 0, numpy scalars -> Python, for phrases."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _length(value: Any) -> int:
    return len(value) if isinstance(value, list) else 0
