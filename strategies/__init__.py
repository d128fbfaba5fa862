"""ipcbench strategies: interchangeable ways to feed tile batches to a training loop.

::

    from strategies import STRATEGIES, LoaderConfig, make_generator

    cfg = LoaderConfig(batch_size=32, tile=256, workers=2, prefetch=2)
    with make_generator("shm", "data/real", cfg) as gen:
        for data, masks in gen:   # uint16 (B, C, T, T), uint8 (B, T, T)
            ...

This package is the system under test: it never imports ``harness``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from .base import BatchGenerator
from .baseline import BaselineGenerator
from .config import LoaderConfig
from .dataset import Dataset, ImageEntry, open_dataset
from .errors import (
    DatasetError,
    DescriptorLimitError,
    LoaderClosedError,
    ProcessContextError,
    RemoteTraceback,
    SharedMemorySpaceError,
    StrategyUnavailableError,
    WorkerDiedError,
    WorkerError,
    WorkerTimeoutError,
)
from .grain_loader import GrainGenerator
from .mpqueue import QueueGenerator
from .pipe import PipeGenerator
from .plan import EpochPlan, ImageJob, make_plan
from .shm import ShmGenerator
from .shm_zerocopy import ShmZeroCopyGenerator
from .signals import exit_on_sigterm
from .spdl_arena import SpdlArenaGenerator
from .spdl_pool import SpdlGenerator
from .threads import ThreadGenerator
from .torch_loader import TorchGenerator

STRATEGIES: dict[str, type[BatchGenerator]] = {
    "baseline": BaselineGenerator,
    "pipe": PipeGenerator,
    "queue": QueueGenerator,
    "shm": ShmGenerator,
    "shm_zerocopy": ShmZeroCopyGenerator,
    "torch": TorchGenerator,
    "threads": ThreadGenerator,
    "grain": GrainGenerator,
    "spdl": SpdlGenerator,
    "spdl_arena": SpdlArenaGenerator,
}


def available_strategies() -> tuple[str, ...]:
    """The strategies that can run here: every one whose wrapped library (if any) is installed."""
    return tuple(name for name, cls in STRATEGIES.items() if cls.unavailable() is None)


def resolve_strategies(names: Iterable[str] | None = None) -> tuple[str, ...]:
    """``names`` checked (each known and able to run here), or every available strategy when None.

    An unknown name is a ``ValueError`` listing the known ones; a peer strategy whose
    library is missing is a :class:`StrategyUnavailableError` with the pip line.
    """
    if names is None:
        return available_strategies()
    names = tuple(names)
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(map(repr, unknown))}; choose from {', '.join(STRATEGIES)}")
    for name in names:
        missing = STRATEGIES[name].unavailable()
        if missing is not None:
            raise StrategyUnavailableError(missing)
    return names


def make_generator(
    name: str, dataset: Dataset | str | os.PathLike[str], config: LoaderConfig | None = None, **overrides: Any
) -> BatchGenerator:
    """Build the generator of strategy ``name`` over ``dataset``.

    ``overrides`` replace fields of ``config`` (default: ``LoaderConfig()``). An
    unknown strategy, field or value is a ``ValueError`` that says what is allowed.
    ``make_generator("shm", ..., zero_copy=True)`` is the ``shm_zerocopy`` strategy.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    config = (config if config is not None else LoaderConfig()).replace(**overrides)
    if name == "shm" and config.zero_copy:
        name = "shm_zerocopy"
    return STRATEGIES[name](dataset, config)


__all__ = [
    "STRATEGIES",
    "BatchGenerator",
    "Dataset",
    "DatasetError",
    "DescriptorLimitError",
    "EpochPlan",
    "ImageEntry",
    "ImageJob",
    "LoaderClosedError",
    "LoaderConfig",
    "ProcessContextError",
    "RemoteTraceback",
    "SharedMemorySpaceError",
    "StrategyUnavailableError",
    "WorkerDiedError",
    "WorkerError",
    "WorkerTimeoutError",
    "available_strategies",
    "exit_on_sigterm",
    "make_generator",
    "make_plan",
    "open_dataset",
    "resolve_strategies",
]
