"""strategies.batch_memory: a batch's memory is taken again only once nothing references the batch.

The loop owns what ``next()`` returned: a batch it keeps, or any view of it it keeps (a
slice, a reshape, a torch tensor), must never be written by a later batch; a batch it
dropped should be, so that no batch lands on fresh pages.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dataset

from strategies import LoaderConfig, make_generator
from strategies.batch_memory import BatchMemory


def address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def test_a_dropped_batch_is_taken_again_and_a_kept_one_is_not() -> None:
    memory = BatchMemory((4, 3), np.uint16)
    first = memory.take(4)
    where = address(first)
    kept = memory.take(4)
    assert address(kept) != where and memory.waiting == 0
    del first
    assert memory.waiting == 1
    again = memory.take(2)
    assert memory.waiting == 0
    assert address(again) == where and again.shape == (2, 3) and type(again) is np.ndarray
    assert address(memory.take(4)) not in (where, address(kept))


@pytest.mark.parametrize(
    "keep",
    [
        lambda a: a[1:],
        lambda a: a.reshape(-1),
        lambda a: a.T,
        lambda a: np.asarray(a)[::2],
        lambda a: memoryview(a),
        lambda a: __import__("torch").from_numpy(a),
    ],
    ids=["slice", "reshape", "transpose", "asarray_step", "memoryview", "torch_tensor"],
)
def test_a_view_of_a_dropped_batch_keeps_its_memory(keep) -> None:
    memory = BatchMemory((4, 3), np.uint16)
    batch = memory.take(4)
    batch[...] = 7
    view = keep(batch)
    del batch
    gc.collect()
    for _ in range(4):  # every later batch is written all over
        memory.take(4)[...] = 0
    assert (np.asarray(view) == 7).all()


def test_a_batch_dropped_in_another_thread_comes_back() -> None:
    memory = BatchMemory((2, 2), np.uint8)
    box = [memory.take(2)]
    where = address(box[0])
    dropper = threading.Thread(target=box.clear)
    dropper.start()
    dropper.join()
    assert memory.waiting == 1
    assert address(memory.take(2)) == where


def test_close_frees_the_waiting_blocks_and_keeps_none_given_back_after() -> None:
    memory = BatchMemory((2, 2), np.uint8, keep=2)
    a, b, c = memory.take(2), memory.take(2), memory.take(2)
    del a, b
    assert memory.waiting == 2
    memory.close()
    assert memory.waiting == 0
    del c
    assert memory.waiting == 0


@pytest.mark.parametrize("name", ["baseline", "shm", "threads"])
def test_batches_the_loop_keeps_stay_as_they_were(name: str, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "ds", images=4)
    config = LoaderConfig(batch_size=5, tile=16, workers=2, start_method="fork", timeout=20.0)
    with make_generator(name, dataset, config) as gen:
        kept = [(d, m) for d, m in gen]  # epoch 0, every batch kept
        copies = [(d.copy(), m.copy()) for d, m in kept]
        views = [d[:2] for d, _ in gen]  # epoch 1: only a view of each batch kept
        view_copies = [v.copy() for v in views]
        for _ in range(3):  # more epochs, every batch dropped at once
            for _ in gen:
                pass
    for (d, m), (dc, mc) in zip(kept, copies, strict=True):
        np.testing.assert_array_equal(d, dc)
        np.testing.assert_array_equal(m, mc)
    for v, vc in zip(views, view_copies, strict=True):
        np.testing.assert_array_equal(v, vc)
