"""Zero-copy ``shm``: batches are views of worker-written slots, valid until the next ``next()``.

Bit-identity with the baseline, faults and lifecycle are in the shared suites
(``test_equivalence``, ``test_faults``, ``test_lifecycle`` run ``shm_zerocopy`` too);
this file checks what is particular to zero copies: where the batches live, the
documented lifetime rule, and the slot arithmetic.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dataset
from faults_helpers import existing_segments, segment_names, wait_until_gone

from strategies import STRATEGIES, LoaderConfig, make_generator
from strategies.plan import ImageJob, make_plan
from strategies.shm_zerocopy import ShmZeroCopyGenerator, batch_runs, in_window, n_batch_slots

pytestmark = pytest.mark.timeout(120)

# 5 images of 20 tiles (tile 16), batch 7: 15 batches an epoch, most spanning two images.
CFG = LoaderConfig(batch_size=7, tile=16, workers=1, prefetch=1, seed=0, start_method="fork", timeout=30.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("zerocopy"), images=5, classes=True)


@pytest.fixture(scope="module")
def expected(dataset: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    with make_generator("baseline", dataset, CFG) as gen:
        return [(d.copy(), m.copy()) for d, m in gen]


def test_shm_with_zero_copy_is_the_zero_copy_strategy(dataset: Path) -> None:
    with make_generator("shm", dataset, CFG, zero_copy=True) as gen:
        assert isinstance(gen, ShmZeroCopyGenerator)
    with make_generator("shm_zerocopy", dataset, CFG) as gen:
        assert gen.config.zero_copy, "the recorded config must say what the generator does"


@pytest.mark.parametrize("strategy", sorted(set(STRATEGIES) - {"shm", "shm_zerocopy"}))
def test_other_strategies_refuse_zero_copy(strategy: str, dataset: Path) -> None:
    with pytest.raises(ValueError, match="zero_copy=True is an option of the shm strategy"):
        make_generator(strategy, dataset, CFG, zero_copy=True)
    # the copying shm class itself, built directly, refuses too
    with pytest.raises(ValueError, match="the shm strategy copies every batch"):
        STRATEGIES["shm"](dataset, CFG.replace(zero_copy=True))


def test_batches_are_views_of_the_slots_and_reused_after_n_slots(dataset: Path, expected: list) -> None:
    with make_generator("shm_zerocopy", dataset, CFG) as gen:
        n = gen.n_slots
        assert len(expected) > n + 1, "the epoch must outlast the ring for this test to mean anything"
        held = []
        for k, (data, masks) in enumerate(gen):
            # Valid until the next next(): equal to the baseline's batch now...
            assert np.array_equal(data, expected[k][0]) and np.array_equal(masks, expected[k][1]), k
            assert not data.flags.owndata and not masks.flags.owndata, "a zero-copy batch is a view"
            held.append((data, masks))
        # ...and the documented reuse: batch k's memory is batch k + n_slots's slot.
        for k in range(len(held) - n):
            assert np.shares_memory(held[k][0], held[k + n][0]), k
            assert not np.shares_memory(held[k][0], held[k + 1][0]), k
        # A view kept past its next() shows the later batch written into its slot.
        first_data, first_masks = held[0]
        last_k = (len(held) - 1) // n * n  # the last batch that reused slot 0
        assert last_k >= n
        size = len(expected[last_k][0])
        assert np.array_equal(first_data[:size], expected[last_k][0][:size])
        assert np.array_equal(first_masks[:size], expected[last_k][1][:size])


def test_copies_kept_by_the_caller_stay_valid(dataset: Path, expected: list) -> None:
    with make_generator("shm_zerocopy", dataset, CFG.replace(workers=2, prefetch=2)) as gen:
        kept = [(np.array(d), np.array(m)) for d, m in gen]
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(kept, expected, strict=True))


def test_views_outlive_close_without_leaking_the_segment(dataset: Path, expected: list) -> None:
    gen = make_generator("shm_zerocopy", dataset, CFG)
    pids, segments = gen.worker_pids(), segment_names(gen)
    assert len(segments) == 1
    data, masks = next(gen)
    gen.close()
    assert wait_until_gone(pids) == []
    assert existing_segments(segments) == [], "the name is unlinked at close, views or not"
    # The mapping lives as long as a view does: reading is safe, and nothing rewrites it any more.
    assert np.array_equal(data, expected[0][0]) and np.array_equal(masks, expected[0][1])


def test_torch_output_shares_the_slot(dataset: Path, expected: list) -> None:
    import torch

    with make_generator("shm_zerocopy", dataset, CFG, output="torch") as gen:
        data, _ = next(gen)
        assert isinstance(data, torch.Tensor) and data.dtype == torch.uint16
        assert np.shares_memory(data.numpy(), gen.slots[0][0]), "from_numpy on the view: still no copy"
        assert np.array_equal(data.numpy(), expected[0][0])


@pytest.mark.parametrize(
    ("workers", "prefetch", "max_tiles", "batch", "slots"), [(1, 1, 20, 7, 5), (2, 2, 140, 32, 20)]
)
def test_slot_count_covers_the_window(workers: int, prefetch: int, max_tiles: int, batch: int, slots: int) -> None:
    assert n_batch_slots(workers, prefetch, max_tiles, batch) == slots


def _job(first_tile: int, n_tiles: int) -> ImageJob:
    tiles = np.zeros((n_tiles, 2), np.int32)
    return ImageJob(0, 0, tiles, np.zeros(n_tiles, np.uint8), first_tile=first_tile)


@pytest.mark.parametrize(("workers", "prefetch", "max_tiles", "batch"), [(1, 1, 20, 7), (2, 2, 9, 4), (3, 2, 5, 8)])
def test_the_window_never_writes_the_held_batchs_slot_and_never_narrows(
    workers: int, prefetch: int, max_tiles: int, batch: int
) -> None:
    """Deterministic, every alignment: the guard and the slot count, without timing.

    A job is dispatched only if none of its batches but the held one maps to the held
    batch's slot; and a full window of ``workers * prefetch`` images of the largest
    size, starting at any tile of the held batch, is dispatchable at once.
    """
    n_slots = n_batch_slots(workers, prefetch, max_tiles, batch)
    for held in range(3):
        for first in range(held * batch, (held + n_slots + 1) * batch):  # jobs from the held batch to past the ring
            for n_tiles in range(1, max_tiles + 1):
                job = _job(first, n_tiles)
                batches = range(first // batch, (job.end_tile - 1) // batch + 1)
                overwrites_held = any(b != held and b % n_slots == held % n_slots for b in batches)
                assert in_window(job, held, n_slots, batch) == (not overwrites_held), (held, first, n_tiles)
        for first in range(held * batch, (held + 1) * batch):  # a window whose first image starts in the held batch
            window = [_job(first + i * max_tiles, max_tiles) for i in range(workers * prefetch)]
            assert all(in_window(job, held, n_slots, batch) for job in window), (held, first)


def test_batch_runs_follow_the_epochs_tile_sequence() -> None:
    plan = make_plan([(70, 90)] * 5, seed=0, epoch=0, tile=16, batch_size=7)
    n_slots = 4
    seen: dict[tuple[int, int], int] = {}
    for job in plan.jobs:
        runs = batch_runs(job, 7, n_slots)
        # one run per batch the image touches, each inside its batch
        assert len(runs) == (job.end_tile - 1) // 7 - job.first_tile // 7 + 1
        rows = [(slot, row + offset) for slot, row, n in runs for offset in range(n)]
        assert all(row + n <= 7 for _, row, n in runs)
        assert len(rows) == job.n_tiles
        for j, (slot, row) in enumerate(rows, start=job.first_tile):
            assert (slot, row) == ((j // 7) % n_slots, j % 7)
            seen[(j // 7, row)] = j
    # every (batch, row) of the epoch written exactly once
    assert sorted(seen.values()) == list(range(plan.n_tiles))


def test_many_breaks_with_work_in_flight(dataset: Path, expected: list) -> None:
    # An abandoned epoch's images still being written must not land in the next epoch's slots.
    config = CFG.replace(workers=2, prefetch=2)
    with make_generator("shm_zerocopy", dataset, config) as gen:
        for limit in (1, 4, 2):
            for k, _ in enumerate(gen):
                if k + 1 == limit:
                    break
        epoch = [(np.array(d), np.array(m)) for d, m in gen]
    with make_generator("baseline", dataset, config.replace(epoch=3)) as gen:
        want = [(d.copy(), m.copy()) for d, m in gen]
    assert len(epoch) == len(want)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(epoch, want, strict=True))


def test_a_batch_of_one_tile_waits_for_its_own_tile(dataset: Path) -> None:
    """Batch k is handed out only once its tiles are written, down to a batch of one tile at the epoch's start."""
    config = CFG.replace(batch_size=1)
    with make_generator("baseline", dataset, config) as gen:
        want = [(d.copy(), m.copy()) for d, m in gen]
    with make_generator("shm_zerocopy", dataset, config) as gen:
        got = [(d.copy(), m.copy()) for d, m in gen]
    assert len(got) == len(want)
    for k, ((want_data, want_masks), (data, masks)) in enumerate(zip(want, got, strict=True)):
        np.testing.assert_array_equal(data, want_data, err_msg=f"batch {k}")
        np.testing.assert_array_equal(masks, want_masks, err_msg=f"batch {k}")


@pytest.mark.parametrize("drop_last", [False, True])
def test_the_next_epoch_begun_early_never_writes_a_held_batch(dataset: Path, drop_last: bool) -> None:
    """The ring of slots runs on across epochs: the next epoch's first images land past the held batch."""
    config = CFG.replace(workers=2, prefetch=2, drop_last=drop_last)
    with make_generator("baseline", dataset, config) as gen:
        want = [[(d.copy(), m.copy()) for d, m in gen] for _ in range(4)]
    with make_generator("shm_zerocopy", dataset, config.replace(prefetch_next_epoch=True)) as gen:
        assert gen.n_slots <= len(want[0]), "the ring must wrap by the next epoch for this test to mean anything"
        for epoch in range(4):
            for k, (data, masks) in enumerate(gen):
                time.sleep(0.005)  # the workers write whatever they may while the loop holds batch k
                np.testing.assert_array_equal(data, want[epoch][k][0], err_msg=f"epoch {epoch}, batch {k}")
                np.testing.assert_array_equal(masks, want[epoch][k][1], err_msg=f"epoch {epoch}, batch {k}")
                if epoch == 1 and k == len(want[1]) - 3:
                    break  # an early break with the next epoch's images already in flight
            if epoch == 0:
                time.sleep(0.05)
                np.testing.assert_array_equal(data, want[0][-1][0], err_msg="the last batch, held past the epoch")
                assert gen.in_flight > 0, "the next epoch's first images should be in flight"
