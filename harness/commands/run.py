"""``ipcbench run``: measure strategies side by side and write a results folder.

::

    ipcbench run                               # the main job: real dataset, every strategy,
                                               # workers 1 and 2, 5 repeats x 2 windows
    ipcbench run --quick                       # 1 repeat x 1 window: a check in about a minute
    ipcbench run --dataset synth --strategies pipe,shm --workers 2 --step-ms 20
    ipcbench run --workload transfer           # the IPC path alone, batches of 4 and 16 MiB
    ipcbench run --workload full,transfer --batch-mib 4 --workers 2   # the performance goals, one run
    ipcbench run --step-ms 0,5,20,50 --workers 2    # a sweep: every value its own cell
    ipcbench run --dataset data/real-zlib --decode-threads 1,auto --background-load 0,2
    ipcbench run --cache warm,cold                  # cold: the dataset evicted before every epoch

Workloads (``--workload``, a cell key): ``full`` is the real per-image work at
``--batch-size`` tiles (default 32); ``transfer`` hands over tiles computed once per
worker, at each of ``--batch-mib`` (MiB of image data per batch, default 4 and 16).
memcpy's R (batch copies per second on one core) is recorded for every batch size.
The regime options (``--step-ms``, ``--decode-threads``, ``--background-load``,
``--cache``) take comma-separated lists, each value a cell of its own; with a cold
cell the disk's read bandwidth is measured once and recorded (docs/design.md section 5).

Steps: prepare the dataset (cached), measure memcpy, write ``env.json``, run the
interleaved plan (harness.runner; one fresh process per measurement), write
``summary.csv``, print one line per cell, build the report if
``harness.report.build_report`` exists. Progress goes to stderr: one ``\\r``-updated
line on a terminal, one line per measurement otherwise. Ctrl-C stops the current
measurement cleanly, keeps what was measured (the measurements that finished, and
the whole windows of the one it stopped, which is not counted as finished), writes the
summary and exits 130; SIGTERM does the same and exits 143. Every image is checked
before anything is measured or written: a tile larger than some images is one error
naming each of them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from strategies.config import DTYPES, WORKLOADS
from strategies.signals import EXIT_STATUS_SIGTERM

from ..errors import IpcbenchError
from ..noise import DEFAULT_SECONDS as DEFAULT_NOISE_FLOOR_S
from ..plan import AUTO, BACKGROUND_START, CACHES, DEFAULT_SAMPLER_INTERVAL_S, DEFAULT_WATCHDOG_S, NEXT_EPOCH
from ..session import (
    DEFAULT_REPEATS,
    DEFAULT_TRANSFER_MIB,
    DEFAULT_WINDOWS,
    QUICK_REPEATS,
    QUICK_WINDOWS,
    RESULTS_DIR,
    RunRequest,
    build_options,
    build_report,
    busy_cores,
    busy_warning,
    canonical_command,
    check_same_channels,
    dataset_specs,
    resolve_dataset,
    run_env,
)

HELP = "Measure every strategy in fresh processes and write a results folder (env, samples, summary, report)."
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _numbers(text: str, unit: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated {unit}, got {text!r}") from exc


def _float_list(text: str) -> tuple[float, ...]:
    values = _numbers(text, "numbers")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected one or more sizes > 0, got {text!r}")
    return values


def _choice_list(what: str, choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """A parser of comma-separated ``choices`` (each once, in the order given); an unknown one names the others."""

    def parse(text: str) -> tuple[str, ...]:
        names = name_list(text)
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(choices)}")
        return tuple(dict.fromkeys(names))

    return parse


_workload_list = _choice_list("workload", WORKLOADS)
_dtype_list = _choice_list("dtype", DTYPES)
_cache_list = _choice_list("cache", CACHES)
_next_epoch_list = _choice_list("next-epoch setting", NEXT_EPOCH)
_background_start_list = _choice_list("background-start setting", BACKGROUND_START)

# Cell keys a run may sweep besides workers, workload and dtype: named in a summary line when they vary.
SWEPT_KEYS = (
    "dataset",
    "prefetch",
    "step_ms",
    "decode_threads",
    "background_load",
    "cache",
    "prefetch_next_epoch",
    "background_start",
)
PIXEL_DTYPE = "uint16"  # the images' own: a cell in another dtype says so in progress and summary lines


def _step_list(text: str) -> tuple[float, ...]:
    values = _numbers(text, "milliseconds")
    if not values or any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected one or more step times >= 0 ms, got {text!r}")
    return tuple(dict.fromkeys(values))


def _decode_threads_list(text: str) -> tuple[int | None, ...]:
    values: list[int | None] = []
    for name in name_list(text):
        if name == AUTO:
            values.append(None)
            continue
        try:
            count = int(name)
        except ValueError:
            count = 0
        if count < 1:
            raise argparse.ArgumentTypeError(f"decode threads must be 'auto' or counts >= 1, got {name!r}")
        values.append(count)
    return tuple(dict.fromkeys(values))


def _prefetch_list(text: str) -> tuple[int, ...]:
    return tuple(dict.fromkeys(_int_list(text)))  # each checked by LoaderConfig, which names the field


def _count_list(text: str) -> tuple[int, ...]:
    values = _int_list(text)
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected counts >= 0, got {text!r}")
    return tuple(dict.fromkeys(values))


def name_list(text: str) -> tuple[str, ...]:
    """Comma-separated names (blanks dropped); at least one."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected at least one name")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from strategies import STRATEGIES, LoaderConfig
    from strategies.config import START_METHODS

    # Every default shown comes from the code that applies it: RunRequest's and LoaderConfig's fields.
    request, loader = RunRequest(), LoaderConfig()
    parser.add_argument(
        "--dataset",
        default=request.dataset,
        metavar="DIR|real|synth[,...]",
        help="a dataset folder, or a built-in source prepared (once) under data/; several, separated by commas, "
        "are each measured as their own cells (e.g. one per image size: the scaling section's image-size axis) "
        f"(default: {request.dataset})",
    )
    parser.add_argument(
        "--strategies",
        type=name_list,
        metavar="A,B",
        # ", ": a list with no spaces is one word, which the help's line wrapping cuts anywhere.
        help=f"strategies to run (default: all: {', '.join(STRATEGIES)})",
    )
    parser.add_argument(
        "--workers",
        type=_int_list,
        default=request.workers,
        metavar="N,M",
        help=f"worker counts (default: {','.join(map(str, request.workers))})",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        help=f"fresh processes per cell (default: {DEFAULT_REPEATS}; --quick: {QUICK_REPEATS})",
    )
    parser.add_argument(
        "--windows",
        "--epochs",
        dest="windows",
        type=int,
        metavar="W",
        help=f"measured windows per process, after one warm-up window (default: {DEFAULT_WINDOWS}; "
        f"--quick: {QUICK_WINDOWS}); --epochs is the same option",
    )
    parser.add_argument(
        "--min-window-s",
        type=float,
        default=request.min_window_s,
        metavar="S",
        help="each measured window runs as many whole epochs as it takes to last S seconds, so that short "
        f"epochs still give steady figures (default: {request.min_window_s:g}; 0: one epoch a window)",
    )
    parser.add_argument(
        "--step-ms",
        type=_step_list,
        default=request.step_ms,
        metavar="X[,Y]",
        help="simulated training step after each batch, in ms (a sleep, as a GPU step leaves the CPU free); "
        "comma-separated for a sweep, each its own cell, e.g. 0,5,20,50 "
        f"(default: {','.join(f'{v:g}' for v in request.step_ms)})",
    )
    parser.add_argument(
        "--decode-threads",
        type=_decode_threads_list,
        default=request.decode_threads,
        metavar="auto|N",
        help="tifffile's threads decoding one compressed image in each decoding process or thread; auto shares "
        "the cores among the decoders (cores // workers, the baseline's one process gets them all); "
        "comma-separated, each its own cell (default: auto)",
    )
    parser.add_argument(
        "--background-load",
        type=_count_list,
        default=request.background_load,
        metavar="N[,M]",
        help="busy processes spinning beside each measurement, one core each: how a strategy degrades when it "
        "competes for cores; comma-separated, each its own cell (default: 0)",
    )
    parser.add_argument(
        "--cache",
        type=_cache_list,
        default=request.caches,
        metavar="warm|cold",
        help="warm: the dataset stays in the page cache; cold: its files are evicted before every epoch "
        "(posix_fadvise DONTNEED), so every image is read from disk, as for a dataset larger than memory; "
        "comma-separated for both, each its own cell (default: warm)",
    )
    parser.add_argument(
        "--prefetch-next-epoch",
        type=_next_epoch_list,
        default=request.next_epoch,
        metavar="off|on",
        help="on: the workers start the next epoch's first images while the loop finishes the current one "
        "(LoaderConfig.prefetch_next_epoch; pipe, queue, shm, shm_zerocopy, threads; the others are measured "
        "off only); "
        "comma-separated for both, each its own cell (default: off)",
    )
    parser.add_argument(
        "--background-start",
        type=_background_start_list,
        default=request.background_start,
        metavar="off|on",
        help="on: make_generator returns at once, the workers start in a background thread and the main process "
        "makes the first images itself until they are ready (LoaderConfig.background_start; pipe, queue, shm, "
        "shm_zerocopy, torch; the others are measured off only); comma-separated for both, each its own cell "
        "(default: off)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a fast check: {QUICK_REPEATS} repeat x {QUICK_WINDOWS} window unless given",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help=f"results folder (default: {RESULTS_DIR}/<UTC time of the run>)"
    )
    parser.add_argument(
        "--prefetch",
        type=_prefetch_list,
        metavar="P[,Q]",
        help=f"processed images in flight per worker; comma-separated, each its own cell (default: {loader.prefetch})",
    )
    parser.add_argument(
        "--workload",
        type=_workload_list,
        default=request.workloads,
        metavar="full|transfer",
        help="per-image work: full (real decode and masks) and/or transfer (tiles computed once per worker, "
        f"the IPC path alone); comma-separated for both (default: {','.join(request.workloads)})",
    )
    parser.add_argument(
        "--batch-mib",
        type=_float_list,
        metavar="X,Y",
        help="batch sizes of the transfer workload, in MiB of image data "
        f"(default: {','.join(f'{m:g}' for m in DEFAULT_TRANSFER_MIB)})",
    )
    parser.add_argument(
        "--batch-size",
        type=_int_list,
        metavar="B[,C]",
        help="tiles per batch of the full workload; comma-separated for a sweep, each its own cell "
        f"(default: {loader.batch_size})",
    )
    parser.add_argument(
        "--dtype",
        type=_dtype_list,
        metavar="uint16,float32",
        help=f"what the batches' data holds, converted in the workers: {', '.join(DTYPES)}; comma-separated to "
        f"measure what converting costs, each its own cell (default: {loader.dtype})",
    )
    parser.add_argument(
        "--scale",
        type=float,
        metavar="S",
        help="multiply float32 batches by S, e.g. 1.5259e-05 (1/65535) for values in [0, 1] (default: none)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        metavar="T",
        help=f"tile size in pixels; it must fit every image (default: {loader.tile})",
    )
    parser.add_argument(
        "--start-method",
        choices=START_METHODS,
        help=f"multiprocessing start method (default: {loader.start_method})",
    )
    parser.add_argument(
        "--sampler-interval-s",
        type=float,
        metavar="S",
        help=f"memory sampling interval (default: {DEFAULT_SAMPLER_INTERVAL_S:g}; 0 samples only at epoch boundaries)",
    )
    parser.add_argument(
        "--watchdog-s",
        type=float,
        metavar="S",
        help=f"kill a measurement that reports nothing for this long (default: {DEFAULT_WATCHDOG_S:g})",
    )
    parser.add_argument(
        "--noise-floor-s",
        type=float,
        default=DEFAULT_NOISE_FLOOR_S,
        metavar="S",
        help="seconds of the machine's own noise-floor measurement at the run's start and at its end "
        f"(default: {DEFAULT_NOISE_FLOOR_S:g}; 0: skip)",
    )
    parser.add_argument("--no-report", action="store_true", help="skip building report.md and plots")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="one rank of a torchrun launch: each rank runs its shard, rank 0 writes one results folder "
        "(see harness.distributed)",
    )


class ProgressLine:
    """Draws the runner's progress on ``stream``: a ``\\r`` line on a terminal, else a line per measurement."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._width = 0

    def __call__(self, progress: Any) -> None:
        m, total = progress.measurement, progress.total
        cell = f" {m.workload} batch={m.batch_size}" if m.batch_size else ""
        cell += f" {m.dtype}" if m.dtype and m.dtype != PIXEL_DTYPE else ""
        cell += "".join(
            f" {key}={value}"
            for key, value, usual in (
                ("prefetch", str(m.prefetch), "None"),
                ("step_ms", f"{m.step_ms:g}", "0"),
                ("decode_threads", m.decode_threads_key, AUTO),
                ("background_load", str(m.background_load), "0"),
                ("cache", m.cache, "warm"),
                ("prefetch_next_epoch", m.prefetch_next_epoch, "off"),
                ("background_start", m.background_start, "off"),
            )
            if value != usual
        )
        head = f"[{m.index + 1:>{len(str(total))}}/{total}] {m.strategy} workers={m.workers}{cell} repeat={m.repeat}"
        eta = format_eta(m.index + (progress.kind == "done"), total, progress.elapsed_s)
        if progress.kind == "done":
            outcome = progress.outcome
            status = _outcome_text(outcome)
            if self.tty:
                self._draw(f"{head}: {status}  {eta}")
            else:
                print(f"{head}: {status} ({outcome.wall_s:.1f} s)  {eta}", file=self.stream, flush=True)
        elif self.tty:
            window = progress.event
            detail = "starting"
            if window is not None:
                warmup = " (warm-up)" if window["warmup"] else ""
                detail = f"window {window['window']}{warmup}: {window['batches_per_s']:.1f} batches/s"
            self._draw(f"{head}: {detail}  {eta}")

    def _draw(self, text: str) -> None:
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def end(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def _outcome_text(outcome: Any) -> str:
    if outcome.error:
        return f"FAILED: {outcome.error}"
    rates = [w["batches_per_s"] for w in outcome.windows if not w["warmup"]]
    text = f"{sum(rates) / len(rates):.1f} batches/s" if rates else "no measured window"
    if outcome.interrupted:
        text += " (interrupted)"
    if outcome.orphans_after_exit or outcome.leaked_shm_after_exit:
        text += f" [left {outcome.orphans_after_exit} processes, {outcome.leaked_shm_after_exit} shm segments]"
    return text


def format_eta(done: int, total: int, elapsed_s: float) -> str:
    """``"0:42 elapsed, ~1:10 left"`` from the mean time per finished measurement."""
    text = f"{_clock(elapsed_s)} elapsed"
    if 0 < done < total:
        text += f", ~{_clock(elapsed_s / done * (total - done))} left"
    return text


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def _fmt(value: Any, digits: int) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if number != number else f"{number:,.{digits}f}"


def summary_lines(summary: Any, copies_per_s: dict[int, float] | None = None) -> list[str]:
    """One line per cell: strategy, workers, workload, batch, batches/s median [IQR], MB/s, PSS MB, TTFB s,
    shutdown s, n, flags; with ``copies_per_s`` (memcpy's R by batch size) also transfer cells' batches/s / R.
    """
    header = (
        "strategy",
        "workers",
        "workload",
        "batch",
        "batches/s median [q25-q75]",
        "of R",
        "MB/s",
        "PSS MB",
        "TTFB s",
        "shutdown s",
        "n",
        "",
    )
    from ..results import variant_label

    rows = [header]
    varying = [k for k in SWEPT_KEYS if k in summary and summary[k].nunique() > 1]
    for _, r in summary.iterrows():
        r_rate = (copies_per_s or {}).get(int(r["batch_size"]))
        of_r = "-"
        paired = r.get("of_r_median")
        if r["workload"] == "transfer" and paired is not None and paired == paired:
            of_r = f"{float(paired):.2f}"  # each window over R measured in its own process
        elif r["workload"] == "transfer" and r_rate:
            of_r = f"{float(r['batches_per_s_median']) / r_rate:.2f}"
        flags = [] if r["verdict"] == "ok" else [str(r["verdict"])]
        if r["leaked_shm_max"] or r["leftover_processes_max"] or r["orphans_after_exit_max"]:
            flags.append("UNCLEAN shutdown")
        if not bool(r["checksums_consistent"]):
            flags.append("checksums differ")
        rows.append(
            (
                str(r["strategy"]),
                str(int(r["workers"])),
                str(r["workload"])
                + (f" {r['dtype']}" if r.get("dtype", PIXEL_DTYPE) != PIXEL_DTYPE else "")
                + (f" ({variant_label(r, varying)})" if varying else ""),
                str(int(r["batch_size"])),
                f"{_fmt(r['batches_per_s_median'], 1)} [{_fmt(r['batches_per_s_q25'], 1)}-"
                f"{_fmt(r['batches_per_s_q75'], 1)}]",
                of_r,
                _fmt(r["mb_per_s_median"], 0),
                _fmt(r["pss_peak_mb_median"], 0),
                _fmt(r["time_to_first_batch_s_median"], 3),
                _fmt(r["shutdown_s_median"], 3),
                str(int(r["n"])),
                ", ".join(flags),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {1, 3, 4, 5, 6, 7, 8, 9, 10}
    return [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def outcome_text(result: Any) -> str:
    """``"1/4 measurements finished, 1 stopped mid-way, 5 windows"``: only measurements that ran to their end count."""
    text = f"{result.finished}/{result.planned} measurements finished"
    if result.stopped:
        text += f", {result.stopped} stopped mid-way"
    return f"{text}, {_count(result.samples, 'window')}"


def kept_text(result: Any) -> str:
    """What an interrupted run kept: the finished measurements, and the whole windows of the one it stopped."""
    text = f"kept the {_count(result.finished, 'measurement')} that finished"
    if result.stopped:
        stopped = "the one" if result.stopped == 1 else f"the {result.stopped}"
        text += f" and the {_count(result.stopped_samples, 'whole window')} of {stopped} it stopped"
    return text


def request_from(args: argparse.Namespace) -> RunRequest:
    """The typed request behind ``ipcbench run``'s arguments (nothing below the CLI sees argparse)."""
    return RunRequest(
        dataset=args.dataset,
        strategies=args.strategies,
        workers=args.workers,
        repeats=args.repeats,
        windows=args.windows,
        min_window_s=args.min_window_s,
        step_ms=args.step_ms,
        decode_threads=args.decode_threads,
        background_load=args.background_load,
        caches=args.cache,
        next_epoch=args.prefetch_next_epoch,
        background_start=args.background_start,
        quick=args.quick,
        out=args.out,
        prefetch=args.prefetch,
        workloads=args.workload,
        batch_mib=args.batch_mib,
        batch_size=args.batch_size,
        dtypes=args.dtype,
        scale=args.scale,
        tile=args.tile,
        start_method=args.start_method,
        sampler_interval_s=args.sampler_interval_s,
        watchdog_s=args.watchdog_s,
        report=not args.no_report,
    )


def unavailable_lines() -> list[str]:
    """One line per strategy left out of a default run because the library it wraps is missing."""
    from strategies import STRATEGIES

    reasons = (cls.unavailable() for cls in STRATEGIES.values())
    return [f"not measured: {reason}" for reason in reasons if reason is not None]


def main(args: argparse.Namespace) -> int:
    request = request_from(args)
    if args.distributed:
        from ..distributed import run_distributed

        return run_distributed(
            request,
            say=lambda line: print(line, file=sys.stderr, flush=True),
            show=lambda text: print(text, file=sys.stdout, flush=True),
        )
    from strategies import open_dataset

    from ..envinfo import dataset_info, loadavg, run_id_for, utc_now
    from ..memcpy import COPIERS_TOGETHER, combine, measure_memcpy, measure_memcpy_together, together_dict
    from ..noise import floor_dict, measure_noise_floor
    from ..pagecache import dataset_files, read_bandwidth
    from ..plan import plan_measurements
    from ..results import ENV_FILE, SAMPLES_FILE, SUMMARY_FILE, read_samples, summarize, write_json
    from ..runner import finish_env, prepare_run_dir, run_plan
    from ..workbound import PROCESSES_TOGETHER, measure_work_side_by_side, work_dict

    err = sys.stderr
    cores_in_use = busy_cores()
    warning = busy_warning(cores_in_use, loadavg(), os.cpu_count() or 1)
    if warning:
        print(warning, file=err)
    started = time.monotonic()
    created = utc_now()
    run_id = run_id_for(created)
    resolved = [
        resolve_dataset(spec, progress=lambda line: print(f"dataset: {line}", file=err))
        for spec in dataset_specs(request.dataset)
    ]
    # Every image is checked (files, sizes against the tile) before the results folder exists.
    opened = [(path, source, open_dataset(path)) for path, source in resolved]
    (dataset, source, images), more = opened[0], tuple(opened[1:])
    channels = check_same_channels([(path, images) for path, _, images in opened])
    infos = [dataset_info(path, source, opened=images) for path, source, images in opened]
    info = infos[0]
    options = build_options(request, dataset, source, channels, opened=images, more=more)
    run_dir = prepare_run_dir(request.run_dir(run_id))

    memcpy = measure_memcpy()
    together = [measure_memcpy_together(COPIERS_TOGETHER)]
    # The full workload's two-core bound: its per-image work alone and side by side (harness.workbound).
    full_batch = next((w.batch_size for w in options.cell_workloads if w.name == "full"), None)
    work_rounds: dict[int, list[list[float]]] = {1: [], PROCESSES_TOGETHER: []}

    def measure_work_bound() -> dict[str, object] | None:
        if full_batch is None:
            return None
        for processes, rounds in work_rounds.items():
            rounds.append(measure_work_side_by_side(dataset, options.loader.tile, full_batch, processes))
        return work_dict(work_rounds[1], work_rounds[PROCESSES_TOGETHER], PROCESSES_TOGETHER)

    work_bound = measure_work_bound()
    floor = measure_noise_floor(args.noise_floor_s) if args.noise_floor_s else None
    batch_bytes = options.batch_bytes(channels)
    by_batch_size = {w.batch_size: options.batch_bytes(channels, w.batch_size) for w in options.cell_workloads}
    env = run_env(
        options,
        run_id=run_id,
        created=created,
        command=canonical_command(options, request.dataset),
        dataset=info,
        memcpy={**memcpy.as_dict(batch_bytes, by_batch_size), "together": together_dict(together, COPIERS_TOGETHER)},
    )
    if more:  # each dataset's own record; "dataset" above is the run's first, on which the work bound is measured
        env["datasets"] = infos
    env["other_cores_before"] = round(cores_in_use, 3)  # other processes' CPU over 1 s before the run
    # The disk as a cold epoch meets it: measured once, when some cell reads the dataset cold.
    files = [name for path, _, _ in opened for name in dataset_files(path)]
    env["disk"] = read_bandwidth(files).as_dict() if "cold" in options.caches else None
    env["noise_floor"] = floor_dict([floor]) if floor is not None else None
    env["work"] = work_bound
    write_json(run_dir / ENV_FILE, env)
    variants, dtypes = len(options.cell_workloads), options.cell_dtypes
    plan_size = len(plan_measurements(options))
    swept = "".join(
        f" x {len(values)} {what} ({', '.join(map(str, values))})"
        for what, values in (
            ("prefetches", options.cell_prefetches),
            ("dtypes", dtypes),
            ("step times in ms", [f"{v:g}" for v in options.step_ms]),
            ("decode threads", [AUTO if n is None else n for n in options.decode_threads]),
            ("background loads", options.background_load),
            ("caches", options.caches),
            ("next-epoch settings", options.next_epoch),
            ("background-start settings", options.background_start),
            ("datasets", [d.name for d in options.cell_datasets]),
        )
        if len(values) > 1
    )
    print(
        f"ipcbench run {run_id}: {plan_size} measurements ({len(options.strategies)} strategies x "
        f"{len(options.workers)} worker counts x {variants} workload/batch sizes{swept} x "
        f"{options.repeats} repeats, "
        f"1 warm-up + {options.windows} windows of >= {options.min_window_s:g} s each) on "
        + "; ".join(
            f"{path} ({described['description']})" for (path, _, _), described in zip(opened, infos, strict=True)
        )
        + f" -> {run_dir}",
        file=err,
    )

    if not request.strategies:
        for line in unavailable_lines():
            print(line, file=err)
    progress = ProgressLine(err)
    try:
        result = run_plan(options, run_dir, run_id, on_progress=progress)
    finally:
        progress.end()
    if not result.interrupted:  # R and the noise floor of the whole run: a second round now, at the run's end
        memcpy = combine([memcpy, measure_memcpy()])
        together.append(measure_memcpy_together(COPIERS_TOGETHER))
        env = {
            **env,
            "memcpy": {
                **memcpy.as_dict(batch_bytes, by_batch_size),
                "together": together_dict(together, COPIERS_TOGETHER),
            },
        }
        if floor is not None:
            env["noise_floor"] = floor_dict([floor, measure_noise_floor(args.noise_floor_s)])
        env["work"] = measure_work_bound()
    final_env = finish_env(run_dir, env, result)

    summary = summarize(read_samples(run_dir / SAMPLES_FILE))
    out = sys.stdout
    copies_per_s = {size: memcpy.batch_copies_per_s(nbytes) for size, nbytes in by_batch_size.items()}
    if len(summary):
        print("\n".join(summary_lines(summary, copies_per_s)), file=out)
    rates = ", ".join(
        f"{copies_per_s[size]:,.0f} of a {nbytes / 1e6:.1f} MB batch ({size} tiles)"
        for size, nbytes in sorted(by_batch_size.items())
    )
    print(
        f"memcpy {memcpy.gb_per_s:.1f} GB/s on one core = R {rates} per second; sampler overhead "
        f"{_fmt(100 * (final_env['sampler']['overhead_fraction'] or 0), 2)}% of one core",
        file=out,
    )
    for failure in result.failures:
        m = failure.measurement
        print(f"FAILED {m.strategy} workers={m.workers} repeat={m.repeat}: {failure.error}", file=err)
    if request.report and result.samples:
        print(build_report(run_dir), file=err)
    print(f"{run_dir / SUMMARY_FILE}: {outcome_text(result)}, {time.monotonic() - started:.0f} s", file=err)
    if result.interrupted:
        print(f"ipcbench: interrupted; {kept_text(result)}", file=err)
        return EXIT_STATUS_SIGTERM if result.terminated else INTERRUPTED_EXIT
    if result.failures and not result.finished:
        raise IpcbenchError(f"every measurement failed; the first: {result.failures[0].error}")
    return 1 if result.failures else 0
