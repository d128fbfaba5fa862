"""The epoch plan: a pure function of its arguments (docs/design.md section 3), and a correct one.

Pure: same arguments, identical arrays; a different seed or epoch, a different plan.
Correct: tiles lie inside their image on a shifted grid, each grid tile once; counts
and batch sizes add up for drop_last either way; shards are disjoint, equal, and give
every rank the same number of batches.
"""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.plan import (
    N_AUGMENTATIONS,
    EpochPlan,
    grid_shape,
    image_tiles,
    make_plan,
    shard_order,
    tiles_per_image,
)

SHAPES = [(70, 90), (64, 64), (100, 50), (33, 47), (80, 80), (48, 96), (65, 65)]
TILE = 16
FAST = settings(max_examples=60, deadline=None, database=None, derandomize=True)


def plan(shapes=SHAPES, **kwargs) -> EpochPlan:
    args = {"seed": 0, "epoch": 0, "tile": TILE, "batch_size": 10} | kwargs
    return make_plan(shapes, **args)


def as_key(p: EpochPlan) -> tuple:
    """Everything a plan says, as comparable bytes."""
    return (
        p.epoch,
        p.batch_size,
        p.tile,
        p.n_tiles,
        p.n_batches,
        tuple((j.position, j.image_index, j.tiles.tobytes(), j.augmentations.tobytes()) for j in p.jobs),
    )


def image_order(p: EpochPlan) -> list[int]:
    return [j.image_index for j in p.jobs]


def test_same_arguments_same_plan() -> None:
    a, b = plan(seed=3, epoch=5), plan(seed=3, epoch=5)
    assert a is not b and as_key(a) == as_key(b)
    for ja, jb in zip(a.jobs, b.jobs, strict=True):
        np.testing.assert_array_equal(ja.tiles, jb.tiles)
        np.testing.assert_array_equal(ja.augmentations, jb.augmentations)
        assert ja.tiles.dtype == np.int32 and ja.tiles.shape == (ja.n_tiles, 2)
        assert ja.augmentations.dtype == np.uint8 and ja.augmentations.shape == (ja.n_tiles,)


def test_plan_does_not_depend_on_global_random_state() -> None:
    np.random.seed(1)
    a = plan(seed=4)
    np.random.seed(2)
    np.random.random(100)
    assert as_key(plan(seed=4)) == as_key(a)


def tile_offsets(p: EpochPlan) -> dict[int, tuple[int, int]]:
    return {j.image_index: (int(j.tiles[:, 0].min()), int(j.tiles[:, 1].min())) for j in p.jobs}


def test_different_epoch_different_order_and_offsets() -> None:
    e0, e1 = plan(epoch=0), plan(epoch=1)
    assert image_order(e0) != image_order(e1)
    assert sorted(image_order(e0)) == sorted(image_order(e1)) == list(range(len(SHAPES)))
    assert tile_offsets(e0) != tile_offsets(e1)
    # Visiting order inside an image changes too.
    t0 = {j.image_index: j.tiles.tobytes() for j in e0.jobs}
    t1 = {j.image_index: j.tiles.tobytes() for j in e1.jobs}
    assert all(t0[i] != t1[i] for i in t0 if tiles_per_image(*SHAPES[i], TILE) > 2)


def test_different_seed_different_plan() -> None:
    s0, s1 = plan(seed=0), plan(seed=1)
    assert image_order(s0) != image_order(s1)
    assert tile_offsets(s0) != tile_offsets(s1)
    aug0 = np.concatenate([j.augmentations for j in sorted(s0.jobs, key=lambda j: j.image_index)])
    aug1 = np.concatenate([j.augmentations for j in sorted(s1.jobs, key=lambda j: j.image_index)])
    assert not np.array_equal(aug0, aug1)


def test_no_shuffle_identity_order_row_major_grid() -> None:
    p = plan(shuffle=False, seed=7, epoch=3)
    assert image_order(p) == list(range(len(SHAPES)))
    for job in p.jobs:
        height, width = SHAPES[job.image_index]
        expected = [(y, x) for y in range(0, height // TILE * TILE, TILE) for x in range(0, width // TILE * TILE, TILE)]
        assert job.tiles.tolist() == [list(t) for t in expected]
    # The epoch no longer changes the order or positions (only augmentations).
    assert [j.tiles.tobytes() for j in plan(shuffle=False, seed=7, epoch=4).jobs] == [j.tiles.tobytes() for j in p.jobs]


def check_grid(tiles: np.ndarray, height: int, width: int, tile: int) -> None:
    rows, cols = grid_shape(height, width, tile)
    assert len(tiles) == rows * cols
    ys, xs = tiles[:, 0], tiles[:, 1]
    assert (ys >= 0).all() and (xs >= 0).all()
    assert (ys + tile <= height).all() and (xs + tile <= width).all()
    oy, ox = int(ys.min()), int(xs.min())
    assert 0 <= oy <= height - rows * tile and 0 <= ox <= width - cols * tile
    # A grid of step `tile` from (oy, ox), every position exactly once.
    expected = {(oy + tile * r, ox + tile * c) for r in range(rows) for c in range(cols)}
    seen = [tuple(t) for t in tiles.tolist()]
    assert len(set(seen)) == len(seen) and set(seen) == expected


@FAST
@given(height=st.integers(1, 200), width=st.integers(1, 200), tile=st.integers(1, 64), seed=st.integers(0, 2**32))
def test_image_tiles_on_shifted_grid(height: int, width: int, tile: int, seed: int) -> None:
    if tile > min(height, width):
        assert len(image_tiles(height, width, tile, np.random.default_rng(seed))) == 0
        return
    check_grid(image_tiles(height, width, tile, np.random.default_rng(seed)), height, width, tile)
    check_grid(image_tiles(height, width, tile, None), height, width, tile)


def test_offsets_use_the_margin() -> None:
    # Over many epochs the random offset takes more than one value in each axis.
    offsets = {tile_offsets(plan(epoch=e))[0] for e in range(20)}
    assert len({y for y, _ in offsets}) > 1 and len({x for _, x in offsets}) > 1
    for epoch in range(5):
        for job in plan(epoch=epoch).jobs:
            check_grid(job.tiles, *SHAPES[job.image_index], TILE)


def test_augment_false_all_identity() -> None:
    p = plan(augment=False, seed=5)
    codes = np.concatenate([j.augmentations for j in p.jobs])
    assert len(codes) == p.n_tiles and not codes.any()
    # augment only changes the codes, never the tiles
    assert [j.tiles.tobytes() for j in p.jobs] == [j.tiles.tobytes() for j in plan(augment=True, seed=5).jobs]


def test_augmentation_codes_in_range_and_all_used() -> None:
    codes = np.concatenate([j.augmentations for e in range(3) for j in plan(epoch=e).jobs])
    assert codes.min() >= 0 and codes.max() < N_AUGMENTATIONS == 8
    assert set(codes.tolist()) == set(range(8))


# Three 32 x 32 images with tile 16: 4 tiles each, 12 in the epoch.
SQUARES = [(32, 32)] * 3


@pytest.mark.parametrize(
    ("batch_size", "drop_last", "n_tiles", "n_batches", "last"),
    [
        (5, False, 12, 3, 2),
        (5, True, 10, 2, 5),
        (4, False, 12, 3, 4),  # divides exactly
        (4, True, 12, 3, 4),
        (6, True, 12, 2, 6),
        (12, False, 12, 1, 12),
        (12, True, 12, 1, 12),
        (20, False, 12, 1, 12),  # fewer tiles than one batch
        (20, True, 0, 0, None),
        (1, False, 12, 12, 1),
        (1, True, 12, 12, 1),
    ],
)
def test_counts(batch_size: int, drop_last: bool, n_tiles: int, n_batches: int, last: int | None) -> None:
    p = make_plan(SQUARES, seed=0, epoch=0, tile=16, batch_size=batch_size, drop_last=drop_last)
    assert (p.n_tiles, p.n_batches, p.batch_size, p.tile) == (n_tiles, n_batches, batch_size, 16)
    assert sum(j.n_tiles for j in p.jobs) == n_tiles
    assert [j.position for j in p.jobs] == list(range(len(p.jobs)))
    sizes = [p.batch_size_at(i) for i in range(n_batches)]
    assert sum(sizes) == n_tiles
    assert all(s == batch_size for s in sizes[:-1])
    if last is not None:
        assert sizes[-1] == last
    else:
        assert p.jobs == ()


@FAST
@given(
    shapes=st.lists(st.tuples(st.integers(16, 120), st.integers(16, 120)), min_size=1, max_size=8),
    batch_size=st.integers(1, 40),
    drop_last=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_counts_add_up(shapes: list[tuple[int, int]], batch_size: int, drop_last: bool, seed: int) -> None:
    p = make_plan(shapes, seed=seed, epoch=1, tile=16, batch_size=batch_size, drop_last=drop_last)
    total = sum(tiles_per_image(h, w, 16) for h, w in shapes)
    assert p.n_tiles == (total - total % batch_size if drop_last else total)
    assert p.n_batches == -(-p.n_tiles // batch_size)
    assert sum(j.n_tiles for j in p.jobs) == p.n_tiles
    assert sum(p.batch_size_at(i) for i in range(p.n_batches)) == p.n_tiles
    if drop_last:
        assert all(p.batch_size_at(i) == batch_size for i in range(p.n_batches))


def test_grid_helpers() -> None:
    assert grid_shape(70, 90, 16) == (4, 5)
    assert tiles_per_image(70, 90, 16) == 20
    assert tiles_per_image(15, 90, 16) == 0
    assert tiles_per_image(16, 16, 16) == 1


# -- sharding -------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("epoch", [0, 1, 2])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_disjoint_equal_and_balanced(world_size: int, epoch: int, drop_last: bool) -> None:
    n = len(SHAPES)
    usable = n - n % world_size
    shards = [
        shard_order(n, seed=0, epoch=epoch, shuffle=True, rank=r, world_size=world_size) for r in range(world_size)
    ]
    assert all(len(s) == usable // world_size for s in shards)
    union = set().union(*map(set, shards))
    assert len(union) == usable  # disjoint
    # The shards together are the unsharded epoch's order minus its remainder.
    assert union == set(image_order(plan(epoch=epoch))[:usable])

    plans = [
        plan(epoch=epoch, rank=r, world_size=world_size, drop_last=drop_last, batch_size=7) for r in range(world_size)
    ]
    for r, p in enumerate(plans):
        assert set(image_order(p)) <= set(shards[r].tolist())
        assert image_order(p) == shards[r].tolist()[: len(p.jobs)]
    # Images differ in size, yet every rank yields the same number of tiles and batches.
    assert len({p.n_batches for p in plans}) == 1 and len({p.n_tiles for p in plans}) == 1
    assert all(sum(j.n_tiles for j in p.jobs) == p.n_tiles for p in plans)
    sizes = {tiles_per_image(*SHAPES[i], TILE) for s in shards for i in s}
    assert len(sizes) > 1  # the test means something only if shard sizes could differ
    full = {j.image_index: j.tiles for j in plan(epoch=epoch).jobs}
    for p in plans:
        for job in p.jobs:  # an image's tiles do not depend on the rank that draws it
            np.testing.assert_array_equal(job.tiles, full[job.image_index][: job.n_tiles])


def test_sharding_without_shuffle() -> None:
    shards = [shard_order(7, seed=0, epoch=0, shuffle=False, rank=r, world_size=3).tolist() for r in range(3)]
    assert shards == [[0, 3], [1, 4], [2, 5]]


def test_fewer_images_than_ranks() -> None:
    with pytest.raises(ValueError, match="2 images"):
        make_plan(SHAPES[:2], seed=0, epoch=0, tile=TILE, batch_size=4, rank=0, world_size=3)


@pytest.mark.parametrize(
    "kwargs", [{"tile": 0}, {"batch_size": 0}, {"rank": 2, "world_size": 2}, {"rank": -1, "world_size": 2}]
)
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        plan(**kwargs)


def test_batch_size_at() -> None:
    p = make_plan(SQUARES, seed=0, epoch=0, tile=16, batch_size=5)
    assert [p.batch_size_at(i) for i in range(3)] == [5, 5, 2]


@pytest.mark.parametrize("world_size", [1, 2])
def test_first_tile_places_each_image_in_the_epochs_tile_sequence(world_size: int) -> None:
    plan = make_plan(
        [(70, 90), (50, 40), (64, 64), (33, 90)], seed=4, epoch=1, tile=16, batch_size=5, world_size=world_size
    )
    starts = [job.first_tile for job in plan.jobs]
    assert starts == list(np.cumsum([0] + [job.n_tiles for job in plan.jobs[:-1]]))
    assert plan.jobs[-1].end_tile == plan.n_tiles


def plan_digest(p: EpochPlan) -> str:
    """A fingerprint of everything a plan says, independent of pickle or Python version."""
    digest = hashlib.sha256(f"{p.epoch} {p.batch_size} {p.tile} {p.n_tiles} {p.n_batches}".encode())
    for job in p.jobs:
        digest.update(f"|{job.position} {job.image_index} {job.first_tile}|".encode())
        digest.update(job.tiles.astype("<i4").tobytes() + job.augmentations.astype("u1").tobytes())
    return digest.hexdigest()[:16]


def test_a_seed_draws_the_same_plan_in_every_version() -> None:
    """Runs compare their batches by checksum across versions: the draws for a seed never change.

    Fingerprints of plans drawn by this implementation; a change of the random
    streams (their keys, their draws) changes every batch of every committed run.
    """
    assert plan_digest(plan(seed=7, epoch=3)) == "93fe7c5d93e353ab"
    assert plan_digest(plan(seed=7, epoch=3, rank=1, world_size=2)) == "701de32f30cf3126"


def test_codes_are_uint8_with_and_without_augmentation() -> None:
    for augment in (True, False):
        assert {j.augmentations.dtype for j in plan(augment=augment).jobs} == {np.dtype(np.uint8)}


def test_a_tile_of_one_pixel_is_allowed() -> None:
    p = make_plan([(3, 4)], seed=0, epoch=0, tile=1, batch_size=5)
    assert p.n_tiles == 12 and p.n_batches == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile": 0}, r"tile=0 and batch_size=10 must be >= 1"),
        ({"batch_size": 0}, r"tile=16 and batch_size=0 must be >= 1"),
        ({"rank": 2, "world_size": 2}, r"rank=2 must be in \[0, world_size=2\)"),
    ],
)
def test_bad_arguments_say_which_and_why(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(**kwargs)


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_every_rank_keeps_the_tiles_of_the_smallest_shuffled_shard(epoch: int) -> None:
    shards = [shard_order(len(SHAPES), seed=0, epoch=epoch, shuffle=True, rank=r, world_size=3) for r in range(3)]
    smallest = min(sum(tiles_per_image(*SHAPES[i], TILE) for i in shard) for shard in shards)
    assert {plan(epoch=epoch, rank=r, world_size=3).n_tiles for r in range(3)} == {smallest}
    assert plan(epoch=epoch).epoch == epoch


def test_a_job_crosses_to_a_worker_as_its_draw_not_its_arrays() -> None:
    job = plan(shapes=[(2700, 3600), (2700, 3600)]).jobs[1]  # not the first: position and first_tile > 0
    assert job.draw is not None and job.tiles.nbytes + job.augmentations.nbytes > 1000
    assert len(pickle.dumps(job)) < 400  # a few dozen bytes of draw, whatever the tile count
    again = pickle.loads(pickle.dumps(job))
    assert (again.position, again.image_index, again.first_tile) == (job.position, job.image_index, job.first_tile)
    assert again.draw == job.draw and len(pickle.dumps(again)) < 400  # and it crosses on as small
    np.testing.assert_array_equal(again.tiles, job.tiles)
    np.testing.assert_array_equal(again.augmentations, job.augmentations)
