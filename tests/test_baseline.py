"""The baseline generator and, through it, the BatchGenerator contract (docs/design.md section 2).

Shapes and dtypes, ``len()`` against what is yielded, epochs and their determinism,
batches that span images, torch output, and the lifetime rules (close, context
manager, next() without iter(), StopIteration that stays raised).
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import write_dataset

from strategies import LoaderClosedError, LoaderConfig, base, make_generator, open_dataset
from strategies.work import ImageProcessor

# write_dataset's default: 3 images of 2 x 70 x 90; tile 16 gives 4 x 5 = 20 tiles
# an image, 60 an epoch; batches of 7: 8 full ones and a last one of 4.
CFG = LoaderConfig(batch_size=7, tile=16, workers=1, prefetch=1, seed=0)
TILES_PER_IMAGE = 20


def batches(gen) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(d.copy(), m.copy()) for d, m in gen]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(da, db) and np.array_equal(ma, mb) for (da, ma), (db, mb) in zip(a, b, strict=True)
    )


def test_shapes_and_dtypes(tiny_dataset: Path) -> None:
    with make_generator("baseline", tiny_dataset, CFG) as gen:
        out = batches(gen)
    assert len(out) == 9
    for i, (data, masks) in enumerate(out):
        size = 7 if i < 8 else 4
        assert data.shape == (size, 2, 16, 16) and data.dtype == np.uint16 and data.flags.c_contiguous
        assert masks.shape == (size, 16, 16) and masks.dtype == np.uint8 and masks.flags.c_contiguous
        assert set(np.unique(masks).tolist()) <= {0, 1}  # no classes.csv: labelled = 1


def test_batches_are_fresh_arrays(tiny_dataset: Path) -> None:
    # The caller may keep a batch: the next one must not overwrite it.
    with make_generator("baseline", tiny_dataset, CFG) as gen:
        kept = list(gen)
    with make_generator("baseline", tiny_dataset, CFG) as gen:
        copied = batches(gen)
    assert same_batches(kept, copied)


@pytest.mark.parametrize(("drop_last", "expected", "last"), [(False, 9, 4), (True, 8, 7)])
def test_len_matches_batches_yielded(tiny_dataset: Path, drop_last: bool, expected: int, last: int) -> None:
    with make_generator("baseline", tiny_dataset, CFG, drop_last=drop_last) as gen:
        assert len(gen) == expected  # before the first epoch
        out = [next(iter(gen))]
        assert len(gen) == expected  # during it
        while True:  # next(), not a for loop: iter() would start another epoch
            try:
                out.append(next(gen))
            except StopIteration:
                break
        assert len(out) == expected == len(gen)
        assert len(out[-1][0]) == last and all(len(d) == 7 for d, _ in out[:-1])
        for _ in range(2):  # later epochs too
            assert len(list(gen)) == len(gen) == expected


def test_drop_last_with_too_few_tiles_yields_nothing(tiny_dataset: Path) -> None:
    with make_generator("baseline", tiny_dataset, CFG, batch_size=61, drop_last=True) as gen:
        assert len(gen) == 0 and list(gen) == []
    with make_generator("baseline", tiny_dataset, CFG, batch_size=61) as gen:
        ((data, _),) = list(gen)
        assert len(data) == 60


def test_each_iter_starts_the_next_epoch(tiny_dataset: Path) -> None:
    with make_generator("baseline", tiny_dataset, CFG) as gen:
        assert gen.epoch is None
        epochs = []
        for expected_epoch in range(3):
            epochs.append(batches(gen))
            assert gen.epoch == expected_epoch
    assert not same_batches(epochs[0], epochs[1]) and not same_batches(epochs[1], epochs[2])
    with make_generator("baseline", tiny_dataset, CFG) as fresh:
        assert all(same_batches(batches(fresh), e) for e in epochs)
    with make_generator("baseline", tiny_dataset, CFG, seed=1) as other:
        assert not same_batches(batches(other), epochs[0])


def test_early_break_then_next_epoch(tiny_dataset: Path) -> None:
    with make_generator("baseline", tiny_dataset, CFG) as gen:
        for i, _ in enumerate(gen):
            if i == 3:  # mid-image: tiles 21..27 of 60
                break
        second = batches(gen)
        assert gen.epoch == 1
    with make_generator("baseline", tiny_dataset, CFG, epoch=1) as fresh:
        assert same_batches(second, batches(fresh))


def test_batches_span_images_in_plan_order(tiny_dataset: Path) -> None:
    with make_generator("baseline", tiny_dataset, CFG) as gen:
        plan = gen.plan_for(0)
        out = batches(gen)
    processor = ImageProcessor(open_dataset(tiny_dataset), 16)
    images = [processor.process(job) for job in plan.jobs]
    assert [im.n_tiles for im in images] == [TILES_PER_IMAGE] * 3
    np.testing.assert_array_equal(np.concatenate([d for d, _ in out]), np.concatenate([im.data for im in images]))
    np.testing.assert_array_equal(np.concatenate([m for _, m in out]), np.concatenate([im.masks for im in images]))
    # Batch 2 holds tiles 14..20: the last six of the first image and the first of the second.
    np.testing.assert_array_equal(out[2][0][:6], images[0].data[14:])
    np.testing.assert_array_equal(out[2][0][6:], images[1].data[:1])


def test_the_plan_asked_for_before_an_epoch_is_the_one_it_runs_made_once(
    tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness asks for each epoch's plan just before it runs it: that must cost the loop nothing more."""
    made: list[int] = []
    make = base.config_plan
    monkeypatch.setattr(
        base, "config_plan", lambda dataset, config, epoch: made.append(epoch) or make(dataset, config, epoch)
    )
    with make_generator("baseline", tiny_dataset, CFG) as gen:
        plan = gen.plan_for(0)
        assert gen.plan_for(0) is plan and len(gen) == plan.n_batches
        out = batches(gen)
        assert made == [0]
        assert gen.plan_for(5).epoch == 5 and gen.plan_for(5) is not gen.plan_for(5)  # any other: made on demand
        assert gen.plan_for(1) is gen.plan_for(1)
        batches(gen)
    assert made == [0, 5, 5, 5, 1]
    assert len(out) == plan.n_batches


def test_workers_and_prefetch_do_not_change_batches(tiny_dataset: Path) -> None:
    with (
        make_generator("baseline", tiny_dataset, CFG) as a,
        make_generator("baseline", tiny_dataset, CFG, workers=3, prefetch=4, start_method="spawn") as b,
    ):
        assert same_batches(batches(a), batches(b))


def test_torch_output_is_zero_copy(tiny_dataset: Path) -> None:
    import torch

    with make_generator("baseline", tiny_dataset, CFG) as gen:
        expected = batches(gen)
    with make_generator("baseline", tiny_dataset, CFG, output="torch") as gen:
        assembled = []
        assemble = gen._assemble

        def spy(size: int):
            assembled.append(assemble(size))
            return assembled[-1]

        gen._assemble = spy  # see the arrays before they are wrapped
        out = list(gen)
    assert len(out) == len(expected) == len(assembled)
    for (data, masks), (d_np, m_np), (d_exp, m_exp) in zip(out, assembled, expected, strict=True):
        assert isinstance(data, torch.Tensor) and isinstance(masks, torch.Tensor)
        assert data.dtype == torch.uint16 and masks.dtype == torch.uint8
        assert data.data_ptr() == d_np.ctypes.data and masks.data_ptr() == m_np.ctypes.data
        np.testing.assert_array_equal(data.numpy(), d_exp)
        np.testing.assert_array_equal(masks.numpy(), m_exp)


def test_close_is_idempotent_and_final(tiny_dataset: Path) -> None:
    gen = make_generator("baseline", tiny_dataset, CFG)
    next(gen)
    gen.close()
    gen.close()
    assert gen.closed
    with pytest.raises(LoaderClosedError):
        next(gen)
    with pytest.raises(LoaderClosedError):
        iter(gen)
    with pytest.raises(LoaderClosedError):
        for _ in gen:
            pass
    assert "closed" in repr(gen)


def test_context_manager_closes(tiny_dataset: Path) -> None:
    with make_generator("baseline", tiny_dataset, CFG) as gen:
        assert not gen.closed
        next(iter(gen))
    assert gen.closed
    with pytest.raises(RuntimeError, match="boom"), make_generator("baseline", tiny_dataset, CFG) as failing:
        next(failing)
        raise RuntimeError("boom")
    assert failing.closed


def test_next_without_iter_starts_an_epoch(tiny_dataset: Path) -> None:
    with make_generator("baseline", tiny_dataset, CFG) as fresh:
        expected = batches(fresh)
    with make_generator("baseline", tiny_dataset, CFG) as gen:
        data, masks = next(gen)
        assert gen.epoch == 0
        np.testing.assert_array_equal(data, expected[0][0])
        np.testing.assert_array_equal(masks, expected[0][1])
        rest = batches(gen)  # iter() now starts epoch 1, it does not continue epoch 0
        assert gen.epoch == 1 and len(rest) == len(expected)


def test_stop_iteration_stays_until_iter(tiny_dataset: Path) -> None:
    with make_generator("baseline", tiny_dataset, CFG) as gen:
        seen = 0
        with pytest.raises(StopIteration):
            while True:
                next(gen)
                seen += 1
        assert seen == len(gen) == 9
        for _ in range(3):
            with pytest.raises(StopIteration):
                next(gen)
        assert gen.epoch == 0
        data, _ = next(iter(gen))
        assert gen.epoch == 1
    with make_generator("baseline", tiny_dataset, CFG, epoch=1) as fresh:
        np.testing.assert_array_equal(data, next(fresh)[0])


def test_one_channel_images(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "one", channels=1, images=2)
    ds = open_dataset(root)
    with make_generator("baseline", ds, CFG, shuffle=False, augment=False) as gen:
        data, masks = next(gen)
    assert data.shape == (7, 1, 16, 16) and masks.shape == (7, 16, 16)
    image = tifffile.imread(ds.entries[0].image_path)
    labels = tifffile.imread(ds.entries[0].label_path)
    # No shuffle, no augmentation: row-major tiles from (0, 0), pixels as in the file.
    for i in range(5):
        np.testing.assert_array_equal(data[i, 0], image[0:16, 16 * i : 16 * i + 16])
        np.testing.assert_array_equal(masks[i], labels[0:16, 16 * i : 16 * i + 16] != 0)
    np.testing.assert_array_equal(data[5, 0], image[16:32, 0:16])


def test_ranks_yield_equal_counts(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", images=5)
    counts = []
    for rank in range(2):
        with make_generator("baseline", root, CFG, rank=rank, world_size=2) as gen:
            counts.append((len(gen), len(list(gen))))
    assert counts[0] == counts[1] == (6, 6)  # 2 images (40 tiles) a rank, 6 batches of 7 (last 5)


def test_dropped_generator_is_collected(tiny_dataset: Path) -> None:
    # Nothing (no cycle, no global registry) keeps a generator alive once the caller drops it.
    gen = make_generator("baseline", tiny_dataset, CFG)
    next(gen)
    ref = weakref.ref(gen)
    del gen
    gc.collect()
    assert ref() is None
