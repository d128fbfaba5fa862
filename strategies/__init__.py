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
    WorkerDiedError,
    WorkerError,
    WorkerTimeoutError,
)
from .mpqueue import QueueGenerator
from .pipe import PipeGenerator
from .plan import EpochPlan, ImageJob, make_plan
from .shm import ShmGenerator
from .shm_zerocopy import ShmZeroCopyGenerator
from .signals import exit_on_sigterm
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
}


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
    "WorkerDiedError",
    "WorkerError",
    "WorkerTimeoutError",
    "exit_on_sigterm",
    "make_generator",
    "make_plan",
    "open_dataset",
]
