"""The equivalence contract (docs/design.md section 3): every strategy yields the baseline's batches, bit for bit.

One generator per (strategy, workers, prefetch, start method) plays the same protocol
as a baseline generator: two whole epochs, an epoch abandoned in the middle of an
image, then a whole epoch after it. Its batches must equal the baseline's, and it
must leave no worker and no segment behind once closed. A few configs that shape the
batches (``drop_last``, ``shuffle``, ``augment``, ranks), torch output and 8 workers
(more workers than images, more than cores) are checked once each per strategy.

The dataset: 5 images of 2 x 70 x 90 with a class table; tile 16 gives 20 tiles an
image, batch 7 makes most batches span two images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_dataset
from faults_helpers import existing_segments, segment_names, wait_until_gone

from strategies import LoaderConfig, make_generator

pytestmark = pytest.mark.timeout(120)

MULTI = ("pipe", "queue", "shm", "shm_zerocopy")
START_METHODS = ("fork", "spawn", "forkserver")
CFG = LoaderConfig(batch_size=7, tile=16, seed=0, timeout=30.0)
BREAK_AFTER = 3  # batches taken from the abandoned epoch: tile 21, in the middle of the second image

Batches = list[tuple[np.ndarray, np.ndarray]]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("equivalence"), images=5, classes=True)


def take(gen: Any, limit: int | None = None) -> Batches:
    """The batches of one epoch (all, or the first ``limit`` then break), as NumPy copies."""
    out = []
    for data, masks in gen:
        out.append((np.array(data, copy=True), np.array(masks, copy=True)))
        if limit is not None and len(out) == limit:
            break
    return out


def protocol(gen: Any) -> list[Batches]:
    """Two whole epochs, one abandoned after BREAK_AFTER batches, one whole after it."""
    epochs = []
    for limit in (None, None, BREAK_AFTER, None):
        expected_len = len(gen)
        epochs.append(take(gen, limit))
        if limit is None:
            assert len(epochs[-1]) == expected_len, f"epoch {len(epochs) - 1}: len() disagrees with the batches"
    return epochs


def assert_same(expected: list[Batches], actual: list[Batches]) -> None:
    assert [len(e) for e in actual] == [len(e) for e in expected], "batch counts per epoch differ"
    for epoch, (want, got) in enumerate(zip(expected, actual, strict=True)):
        for index, ((want_d, want_m), (got_d, got_m)) in enumerate(zip(want, got, strict=True)):
            where = f"epoch {epoch} batch {index}"
            assert got_d.dtype == want_d.dtype and got_d.shape == want_d.shape, f"{where}: data {got_d.shape}"
            assert got_m.dtype == want_m.dtype and got_m.shape == want_m.shape, f"{where}: masks {got_m.shape}"
            assert np.array_equal(got_d, want_d), f"{where}: data differs from baseline"
            assert np.array_equal(got_m, want_m), f"{where}: masks differ from baseline"


def baseline_protocol(dataset: Path, config: LoaderConfig) -> list[Batches]:
    with make_generator("baseline", dataset, config) as gen:
        return protocol(gen)


def run_and_check_clean(strategy: str, dataset: Path, config: LoaderConfig) -> list[Batches]:
    """Play the protocol on ``strategy``; after close no worker and no segment of it remains."""
    gen = make_generator(strategy, dataset, config)
    pids, segments = gen.worker_pids(), segment_names(gen)
    try:
        assert len(pids) == len(set(pids)) == config.workers
        epochs = protocol(gen)
        assert gen.worker_pids() == pids, "workers must persist across epochs"
    finally:
        gen.close()
    assert wait_until_gone(pids) == []
    assert existing_segments(segments) == []
    return epochs


@pytest.fixture(scope="module")
def reference(dataset: Path) -> list[Batches]:
    epochs = baseline_protocol(dataset, CFG)
    # The protocol is only a test if epochs differ and batches span images.
    assert [len(e) for e in epochs] == [15, 15, BREAK_AFTER, 15]
    assert not np.array_equal(epochs[0][0][0], epochs[1][0][0])
    return epochs


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize("prefetch", [1, 2])
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("strategy", MULTI)
def test_bit_identical_to_baseline(
    strategy: str, workers: int, prefetch: int, start_method: str, dataset: Path, reference: list[Batches]
) -> None:
    config = CFG.replace(workers=workers, prefetch=prefetch, start_method=start_method)
    assert_same(reference, run_and_check_clean(strategy, dataset, config))


@pytest.mark.parametrize(
    "overrides",
    [{"drop_last": True}, {"shuffle": False}, {"augment": False}, {"rank": 1, "world_size": 2}],
    ids=["drop_last", "no_shuffle", "no_augment", "rank1_of_2"],
)
@pytest.mark.parametrize("strategy", MULTI)
def test_batch_shaping_options(strategy: str, overrides: dict[str, Any], dataset: Path) -> None:
    config = CFG.replace(workers=2, prefetch=2, start_method="fork", **overrides)
    expected = baseline_protocol(dataset, config)
    assert_same(expected, run_and_check_clean(strategy, dataset, config))


@pytest.mark.parametrize("strategy", MULTI)
def test_torch_output_equals_numpy(strategy: str, dataset: Path, reference: list[Batches]) -> None:
    import torch

    config = CFG.replace(workers=2, prefetch=2, start_method="fork", output="torch")
    with make_generator(strategy, dataset, config) as gen:
        # clone(): a zero-copy batch is only valid until the next next()
        batches = [(data.clone(), masks.clone()) for data, masks in gen]
    assert len(batches) == len(reference[0])
    for (data, masks), (want_d, want_m) in zip(batches, reference[0], strict=True):
        assert isinstance(data, torch.Tensor) and isinstance(masks, torch.Tensor)
        assert data.dtype == torch.uint16 and masks.dtype == torch.uint8
        assert np.array_equal(data.numpy(), want_d) and np.array_equal(masks.numpy(), want_m)


@pytest.fixture(scope="module")
def many_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 12 images of 3 x 4 tiles: 8 workers x prefetch 2 is a window larger than an epoch.
    return write_dataset(tmp_path_factory.mktemp("many"), images=12, height=48, width=64, classes=True, seed=3)


@pytest.mark.parametrize("strategy", MULTI)
def test_eight_workers(strategy: str, many_images: Path) -> None:
    # More workers than cores (2 here) and than some epochs need: idle workers must not matter.
    config = CFG.replace(workers=8, prefetch=2, start_method="forkserver")
    assert_same(baseline_protocol(many_images, config), run_and_check_clean(strategy, many_images, config))


@pytest.mark.parametrize("strategy", [*MULTI, "threads", "torch", "grain", "spdl", "spdl_arena"])
def test_transfer_workload_is_the_same_for_every_strategy(strategy: str, dataset: Path) -> None:
    # The transfer workload hands over tiles computed once; its batches still must not
    # depend on how they travel (or the benchmark would compare different work).
    config = CFG.replace(workers=2, prefetch=2, start_method="fork", workload="transfer")
    expected = baseline_protocol(dataset, config)
    with make_generator(strategy, dataset, config) as gen:
        assert_same(expected, protocol(gen))


CONVERSIONS = {
    "int32": ({"dtype": "int32"}, lambda d: d.astype(np.int32)),
    "float32": ({"dtype": "float32"}, lambda d: d.astype(np.float32)),
    "float32_scaled": (
        {"dtype": "float32", "scale": 1 / 65535},
        lambda d: d.astype(np.float32) * np.float32(1 / 65535),
    ),
}


def bits(array: np.ndarray) -> np.ndarray:
    """The array's bytes as unsigned integers: equal means equal bit for bit (no NaN or -0 latitude)."""
    return array.view(f"u{array.dtype.itemsize}")


@pytest.mark.parametrize("workload", ["full", "transfer"])
@pytest.mark.parametrize("conversion", list(CONVERSIONS))
@pytest.mark.parametrize("strategy", ["baseline", *MULTI, "threads", "torch", "spdl", "spdl_arena"])
def test_conversion_in_the_workers_is_numpys(strategy: str, conversion: str, workload: str, dataset: Path) -> None:
    # The workers write tiles in the batch's dtype; the batches must be NumPy's conversion
    # of the uint16 batches, bit for bit, whatever the strategy (masks untouched).
    overrides, convert = CONVERSIONS[conversion]
    config = CFG.replace(workers=2, prefetch=2, start_method="fork", workload=workload)
    expected = baseline_protocol(dataset, config)
    with make_generator(strategy, dataset, config.replace(**overrides)) as gen:
        got = protocol(gen)
    assert [len(e) for e in got] == [len(e) for e in expected]
    for want_epoch, got_epoch in zip(expected, got, strict=True):
        for (want_d, want_m), (got_d, got_m) in zip(want_epoch, got_epoch, strict=True):
            want = convert(want_d)
            assert got_d.dtype == want.dtype == np.dtype(overrides["dtype"])
            assert np.array_equal(bits(got_d), bits(want)), "converted data differs from NumPy's conversion"
            assert np.array_equal(got_m, want_m)


@pytest.mark.parametrize("strategy", ["shm", "shm_zerocopy", "torch", "grain"])
def test_torch_output_in_float32_is_what_training_code_can_use(
    strategy: str, dataset: Path, reference: list[Batches]
) -> None:
    import torch

    config = CFG.replace(workers=2, start_method="fork", output="torch", dtype="float32", scale=1 / 65535)
    with make_generator(strategy, dataset, config) as gen:
        data, masks = next(iter(gen))
        assert data.dtype == torch.float32 and masks.dtype == torch.uint8
        # What torch refuses on uint16 tensors works on these.
        peak = float(data.max())
    want = reference[0][0][0].astype(np.float32) * np.float32(1 / 65535)
    assert peak == float(want.max()) and 0.0 < peak <= 1.0
