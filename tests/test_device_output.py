"""``pin_memory`` and ``device`` for ``output="torch"``: checked here where possible, skipped without CUDA.

The CUDA tests run only where ``torch.cuda.is_available()``; on a CPU-only machine
the refusal itself is tested (a clear ``ValueError`` before any worker starts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_dataset

from strategies import LoaderConfig, make_generator

pytestmark = pytest.mark.timeout(120)

CFG = LoaderConfig(batch_size=7, tile=16, workers=1, prefetch=1, start_method="fork", output="torch")
STRATEGIES_TRIED = ("baseline", "pipe", "shm_zerocopy")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the refusal on a machine without CUDA")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("device"), images=2)


@pytest.fixture(scope="module")
def expected(dataset: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    with make_generator("baseline", dataset, CFG.replace(output="numpy")) as gen:
        return [(d.copy(), m.copy()) for d, m in gen]


@pytest.mark.parametrize("strategy", STRATEGIES_TRIED)
def test_device_cpu_yields_equal_tensors(strategy: str, dataset: Path, expected: list) -> None:
    with make_generator(strategy, dataset, CFG, device="cpu") as gen:
        for (data, masks), (want_d, want_m) in zip(gen, expected, strict=True):
            assert data.device.type == "cpu" and masks.device.type == "cpu"
            assert np.array_equal(data.numpy(), want_d) and np.array_equal(masks.numpy(), want_m)


@cpu_only
@pytest.mark.parametrize("overrides", [{"pin_memory": True}, {"device": "cuda"}, {"device": "cuda:1"}])
def test_cuda_settings_refused_without_cuda(overrides: dict, dataset: Path) -> None:
    with pytest.raises(ValueError, match=r"need a CUDA device.*torch.cuda.is_available\(\) is False"):
        make_generator("pipe", dataset, CFG, **overrides)


def test_unknown_device_is_a_clear_error(dataset: Path) -> None:
    with pytest.raises(ValueError, match="'tpu0' is not a torch device"):
        make_generator("baseline", dataset, CFG, device="tpu0")


@needs_cuda
@pytest.mark.parametrize("strategy", STRATEGIES_TRIED)
def test_pinned_batches(strategy: str, dataset: Path, expected: list) -> None:
    with make_generator(strategy, dataset, CFG, pin_memory=True) as gen:
        for (data, masks), (want_d, _) in zip(gen, expected, strict=True):
            assert data.is_pinned() and masks.is_pinned()
            assert np.array_equal(data.numpy(), want_d)


@needs_cuda
@pytest.mark.parametrize("strategy", STRATEGIES_TRIED)
def test_batches_on_the_device(strategy: str, dataset: Path, expected: list) -> None:
    with make_generator(strategy, dataset, CFG, pin_memory=True, device="cuda") as gen:
        for (data, masks), (want_d, want_m) in zip(gen, expected, strict=True):
            assert data.is_cuda and masks.is_cuda
            torch.cuda.synchronize()
            assert np.array_equal(data.cpu().numpy(), want_d) and np.array_equal(masks.cpu().numpy(), want_m)
