"""LoaderConfig: every knob a generator has, validated once, frozen.

The config is what the harness records in ``env.json`` and what the equivalence
contract is stated over: for one dataset and one config, every strategy yields the
same batches, whatever ``workers``, ``prefetch`` and ``start_method`` are.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

START_METHODS = ("fork", "spawn", "forkserver")
OUTPUTS = ("numpy", "torch")
WORKLOADS = ("full", "transfer")
# What a batch's ``data`` holds: the images' own uint16, or converted in the workers.
DTYPES = ("uint16", "int32", "float32")
# The longest single wait: poll() takes whole milliseconds in a C int (2**31 - 1 ms is
# 24.8 days); a longer ``timeout`` (math.inf included) waits this long.
MAX_WAIT_S = 2_000_000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LoaderConfig:
    """How batches are cut, ordered and delivered.

    Fields that shape the batches (part of the equivalence contract):
    ``batch_size``, ``tile``, ``seed``, ``epoch``, ``shuffle``, ``augment``,
    ``drop_last``, ``rank``, ``world_size``, ``dtype``, ``scale``.

    ``dtype`` is what a batch's ``data`` holds: ``"uint16"`` (the images' own
    pixels), or ``"int32"`` / ``"float32"`` converted where the tiles are cut, in the
    workers, exactly as NumPy converts (``tiles.astype(dtype)``). ``scale``
    (``float32`` only) multiplies the converted pixels, e.g. ``1 / 65535`` for
    values in [0, 1]: ``tiles.astype(np.float32) * np.float32(scale)``, bit for bit.
    torch keeps ``torch.uint16`` mostly as a storage type: conversion (``.float()``,
    ``.to(torch.int32)``), indexing and ``torch.cat`` work, but ``max``, ``+``,
    ``mean``, matmul and convolutions raise, so ``output="torch"`` for training
    wants ``float32`` or ``int32``.

    Fields that only change how batches travel: ``workers``, ``prefetch`` (processed
    images in flight per worker, the backpressure knob every strategy honours),
    ``start_method``, ``timeout`` (longest wait in seconds for any one result or
    for the workers to become ready; ``math.inf`` for no limit, capped at
    ``MAX_WAIT_S``, about 23 days), ``output`` (``"numpy"`` or ``"torch"``),
    ``zero_copy`` (``shm`` only: workers assemble whole batches in shared memory and
    the batches are views, valid until the next ``next()``), ``pin_memory`` and
    ``device`` (``output="torch"`` only: batches in page-locked memory, or moved to
    a device such as ``"cuda"``).

    ``decode_threads``: tifffile's threads decoding one image's compressed strips or
    tiles in each process that decodes (the main process of ``baseline``, each
    worker or thread of the others). ``None`` (the default) shares the cores this
    process may run on among the decoders: ``max(1, cores // decoders)``, so
    ``decoders x threads <= cores`` (:func:`strategies.work.decode_threads_for`).
    Uncompressed images have nothing to decode in parallel; it changes nothing there.

    ``workload`` (``"full"`` or ``"transfer"``) chooses the per-image work:
    ``transfer`` hands over tiles computed once per worker, to measure the IPC path
    alone (:class:`strategies.work.TransferProcessor`); it changes the batches.

    ``trace_dir``: ``None`` (the default) or a folder (made by the first line) where every
    process of the generator, the main one and each worker, appends the intervals it
    spends in each stage, and the main process the moment each batch is returned, to
    a JSON-lines file of its own (:mod:`strategies.stages`, "Tracing"). The strategies
    whose ``traces`` is True honour it (``baseline``, ``pipe``, ``queue``, ``shm``,
    ``shm_zerocopy``, ``threads``); the peers refuse it. It changes no batch.

    ``prefetch_next_epoch`` (default False): once every image of the current epoch has
    been handed to the workers, the window's free room goes to the *next* epoch's first
    images, so the workers do not idle while the loop finishes an epoch and starts the
    next. Those images are the next epoch's by the plan, whatever happens in between (an
    early ``break`` keeps them; ``close()`` discards them). The strategies whose
    ``prefetches_next_epoch`` is True offer it (``pipe``, ``queue``, ``shm``,
    ``shm_zerocopy``, ``threads``); ``baseline`` has no workers, and the peers' own loops
    decide for themselves: they refuse it. It changes no batch.

    ``background_start`` (default False): ``make_generator`` returns at once and the workers
    start in a background thread; until they are ready, the main process makes the
    epoch's images itself (as ``baseline`` does), so the first batch waits for one image,
    not for the fork server, its imports and every worker's set-up. A start-up failure (a
    worker that dies or raises while starting) is raised by the next ``next()`` or
    ``iter()`` instead of by ``make_generator``; errors of the arguments, the dataset and
    /dev/shm are still ``make_generator``'s. ``worker_pids()`` is empty until the workers
    are ready. It needs ``start_method`` "forkserver" or "spawn": "fork" from the starting
    thread would copy into a worker whatever lock this process's own work holds then. The
    strategies whose ``starts_in_background`` is True offer it (``pipe``, ``queue``,
    ``shm``, ``shm_zerocopy``, ``torch``); the others refuse it. It changes no batch.
    """

    batch_size: int = 32
    tile: int = 256
    workers: int = 2
    prefetch: int = 2
    seed: int = 0
    epoch: int = 0
    start_method: str = "forkserver"
    timeout: float = 30.0
    shuffle: bool = True
    augment: bool = True
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1
    output: str = "numpy"
    workload: str = "full"
    zero_copy: bool = False
    pin_memory: bool = False
    device: str | None = None
    dtype: str = "uint16"
    scale: float | None = None
    decode_threads: int | None = None
    trace_dir: str | None = None
    prefetch_next_epoch: bool = False
    background_start: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "tile", "workers", "prefetch", "seed", "epoch", "rank", "world_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"LoaderConfig.{name}={value!r} must be an int")
        switches = (
            "shuffle",
            "augment",
            "drop_last",
            "zero_copy",
            "pin_memory",
            "prefetch_next_epoch",
            "background_start",
        )
        for name in switches:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"LoaderConfig.{name}={value!r} must be a bool")
        if self.batch_size < 1:
            raise ValueError(f"LoaderConfig.batch_size={self.batch_size} must be >= 1")
        if self.tile < 1:
            raise ValueError(f"LoaderConfig.tile={self.tile} must be >= 1")
        if self.workers < 1:
            raise ValueError(f"LoaderConfig.workers={self.workers} must be >= 1")
        if self.prefetch < 1:
            raise ValueError(f"LoaderConfig.prefetch={self.prefetch} must be >= 1")
        if self.seed < 0:
            raise ValueError(f"LoaderConfig.seed={self.seed} must be >= 0")
        if self.epoch < 0:
            raise ValueError(f"LoaderConfig.epoch={self.epoch} must be >= 0")
        if self.world_size < 1:
            raise ValueError(f"LoaderConfig.world_size={self.world_size} must be >= 1")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"LoaderConfig.rank={self.rank} must be in [0, world_size={self.world_size})")
        if self.start_method not in START_METHODS:
            raise ValueError(f"LoaderConfig.start_method={self.start_method!r} must be one of {START_METHODS}")
        if self.output not in OUTPUTS:
            raise ValueError(f"LoaderConfig.output={self.output!r} must be one of {OUTPUTS}")
        if self.workload not in WORKLOADS:
            raise ValueError(f"LoaderConfig.workload={self.workload!r} must be one of {WORKLOADS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"LoaderConfig.dtype={self.dtype!r} must be one of {DTYPES}")
        if self.scale is not None:
            if isinstance(self.scale, bool) or not isinstance(self.scale, int | float):
                raise ValueError(f"LoaderConfig.scale={self.scale!r} must be None or a number")
            if self.dtype != "float32":
                raise ValueError(
                    f"LoaderConfig.scale={self.scale!r} needs dtype='float32' (a scaled integer would be rounded); "
                    f"got dtype={self.dtype!r}"
                )
            if not (math.isfinite(self.scale) and self.scale > 0):
                raise ValueError(f"LoaderConfig.scale={self.scale!r} must be a finite number > 0")
        if self.decode_threads is not None and (
            isinstance(self.decode_threads, bool) or not isinstance(self.decode_threads, int) or self.decode_threads < 1
        ):
            raise ValueError(
                f"LoaderConfig.decode_threads={self.decode_threads!r} must be None (automatic) or an int >= 1"
            )
        if self.trace_dir is not None and (not isinstance(self.trace_dir, str) or not self.trace_dir):
            raise ValueError(f"LoaderConfig.trace_dir={self.trace_dir!r} must be None or a folder's path")
        if self.device is not None and (not isinstance(self.device, str) or not self.device):
            raise ValueError(f"LoaderConfig.device={self.device!r} must be None or a device name such as 'cuda'")
        if (self.pin_memory or self.device is not None) and self.output != "torch":
            raise ValueError(
                f"LoaderConfig.pin_memory={self.pin_memory} / device={self.device!r} need output='torch' "
                f"(NumPy batches live in ordinary host memory); got output={self.output!r}"
            )
        if self.background_start and self.start_method == "fork":
            raise ValueError(
                "LoaderConfig.background_start=True needs start_method 'forkserver' (the default) or 'spawn', not "
                "'fork': a worker forked by the starting thread while this process makes images inherits every "
                "lock that work holds at that moment, and can hang on it"
            )
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float) or not self.timeout > 0:
            raise ValueError(
                f"LoaderConfig.timeout={self.timeout!r} must be a number of seconds > 0 (math.inf: no limit)"
            )

    @property
    def wait_timeout(self) -> float:
        """``timeout`` as every wait uses it: capped at ``MAX_WAIT_S`` (the system's longest poll).

        A wait that reaches the cap raises as a timeout would; every wait also watches
        the workers, so a dead one is reported at once, whatever the timeout.
        """
        return min(float(self.timeout), MAX_WAIT_S)

    def replace(self, **overrides: Any) -> LoaderConfig:
        """A copy with some fields changed; an unknown field is a ValueError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown LoaderConfig field(s) {unknown}; known fields: {sorted(known)}")
        return dataclasses.replace(self, **overrides)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
