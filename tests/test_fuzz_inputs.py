"""Bad inputs, generated: every one is a clear error naming the file or field, never a hang, crash or leak.

``test_dataset`` pins hand-picked cases (truncation at fixed fractions, each wrong
dtype, a 4-D image, a label of the wrong shape); here hypothesis draws the cases:
a cut at any byte, any tag of the TIFF header overwritten with a huge value, any
combination of image dtype, shape and label shape, empty images, any config value,
and a corrupt strip anywhere in an image that only a worker process decodes.

"Clear" means: :class:`DatasetError` (a ``ValueError``) whose message names the
offending file, or a ``ValueError`` naming the offending config field; from a worker, a
:class:`WorkerError` naming the file. "No leak": the /dev/shm fixture of conftest
holds for every test, and the process strategies' workers are gone afterwards.
Example counts are kept small (each example writes files; some start a worker).
"""

from __future__ import annotations

import dataclasses
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import write_dataset
from faults_helpers import wait_until_gone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from strategies import DatasetError, LoaderConfig, WorkerError, make_generator, open_dataset

pytestmark = pytest.mark.timeout(120)

# Few examples, no per-example deadline (file writes on a loaded machine); the /dev/shm
# fixture is function-scoped on purpose: it judges the whole test, every example included.
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TINY = {"batch_size": 4, "tile": 8, "workers": 1, "prefetch": 1, "timeout": 10.0}


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per example (pytest's tmp_path is one per test, shared by every example)."""
    with tempfile.TemporaryDirectory(prefix="ipcbench-fuzz-") as tmp:
        yield Path(tmp)


def dataset_error(root: Path) -> str | None:
    """The DatasetError message of opening ``root``, or None if it opens."""
    try:
        open_dataset(root)
    except DatasetError as exc:
        return str(exc)
    return None


def batches(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every batch of one baseline epoch (decodes every image in this process)."""
    with make_generator("baseline", root, LoaderConfig(**TINY)) as gen:
        return list(gen)


# -- dataset contents ------------------------------------------------------------------
@FUZZ
@given(
    which=st.sampled_from(["images", "labels"]),
    channels=st.sampled_from([1, 2, 5]),  # 3 and 4 would be written as RGB(A)
    compression=st.sampled_from([None, "zlib"]),
    keep=st.floats(0.0, 1.0, exclude_max=True),
)
def test_a_cut_at_any_byte_is_refused(which: str, channels: int, compression: str | None, keep: float) -> None:
    with scratch() as tmp:
        root = write_dataset(tmp / "ds", images=1, height=24, width=20, channels=channels)
        path = root / which / "img00.tif"
        if compression:
            tifffile.imwrite(path, tifffile.imread(path), compression=compression, rowsperstrip=4)
        intact = batches(root)
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * keep)])
        message = dataset_error(root)
        if message is not None:
            assert str(path) in message
        else:
            # Only a cut that spares every pixel may pass (e.g. one through the IFDs of
            # later pages, after contiguous data): then the batches are exactly as before.
            after = batches(root)
            assert len(after) == len(intact) and all(
                np.array_equal(a, b) for pair in zip(after, intact, strict=True) for a, b in zip(*pair, strict=True)
            ), f"{path} cut to {int(len(raw) * keep)} of {len(raw)} bytes was accepted with other pixels"


# Tags whose value sizes or places the pixel data; each may be overwritten with anything.
HEADER_TAGS = ("ImageWidth", "ImageLength", "RowsPerStrip", "StripByteCounts", "StripOffsets", "SamplesPerPixel")


@FUZZ
@given(
    which=st.sampled_from(["images", "labels"]),
    tag=st.sampled_from(HEADER_TAGS),
    value=st.one_of(st.integers(0, 2**16 - 1), st.integers(2**16, 2**32 - 1)),
)
def test_any_header_value_is_checked_before_allocating(which: str, tag: str, value: int) -> None:
    with scratch() as tmp:
        root = write_dataset(tmp / "ds", images=1, height=24, width=20, channels=2)
        path = root / which / "img00.tif"
        with tifffile.TiffFile(path) as tif:
            field = tif.pages[0].tags.get(tag)
            if field is None:
                return  # this file has no such tag (e.g. SamplesPerPixel of a 1-sample label)
            offset, code = field.valueoffset, {3: "H", 4: "I"}[field.dtype]
        if value >= 2 ** (8 * struct.calcsize(code)):
            value %= 2 ** (8 * struct.calcsize(code))
        raw = bytearray(path.read_bytes())
        raw[offset : offset + struct.calcsize(code)] = struct.pack("<" + code, value)
        path.write_bytes(bytes(raw))
        message = dataset_error(root)
        if message is not None:
            assert str(path) in message
            return
        # Accepted (the value changed nothing that matters, e.g. RowsPerStrip beyond the
        # height): then the pixels must still decode, or fail naming the file.
        try:
            batches(root)
        except DatasetError as exc:
            assert str(path) in str(exc)


IMAGE_DTYPES = [np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.float32]
LABEL_DTYPES = [np.uint8, np.uint16, np.int32, np.float32, np.bool_]


@FUZZ
@given(
    dtype=st.sampled_from(IMAGE_DTYPES),
    # Up to two leading axes over a plane of at least 2 x 2 (TIFF has no 1-D image); label images
    # likewise, with up to one. A plane of one row or column, or a trailing length-1 axis, is left
    # out: tifffile names such axes by rules of its own (it stores a (1, 2, 1) array as one row of
    # two, and a (3, 4, 1) one as 3 x 4), so this model could not say which are Y and X.
    shape=st.tuples(st.lists(st.integers(1, 12), max_size=2), st.integers(2, 12), st.integers(2, 12)).map(
        lambda parts: [*parts[0], parts[1], parts[2]]
    ),
    label_dtype=st.sampled_from(LABEL_DTYPES),
    label_shape=st.one_of(
        st.none(),
        st.tuples(st.lists(st.integers(1, 12), max_size=1), st.integers(2, 12), st.integers(2, 12)).map(
            lambda parts: [*parts[0], parts[1], parts[2]]
        ),
    ),
)
# tifffile names the axes of a 1 x 1 x 1 image XYX: the first X is a length-1 axis like any other
@example(dtype=np.uint16, shape=[1, 1, 1], label_dtype=np.uint8, label_shape=None)
def test_any_dtype_and_shape_is_accepted_only_when_valid(
    dtype: type, shape: list[int], label_dtype: type, label_shape: list[int] | None
) -> None:
    image = np.zeros(shape, dtype)
    height_width = tuple(shape[-2:])
    labels = np.zeros(height_width if label_shape is None else label_shape, label_dtype)
    # Axes of length 1 are ignored (docs/design.md section 4): an image is at most one
    # axis of pages (channels) over Y and X, a label image only Y and X.
    valid = (
        np.dtype(dtype) == np.uint16
        and sum(n > 1 for n in shape[:-2]) <= 1
        and np.dtype(label_dtype).kind in "iu"
        and labels.shape[-2:] == height_width
        and all(n == 1 for n in labels.shape[:-2])
    )
    with scratch() as tmp:
        for sub in ("images", "labels"):
            (tmp / sub).mkdir()
        tifffile.imwrite(tmp / "images" / "a.tif", image, photometric="minisblack")
        tifffile.imwrite(tmp / "labels" / "a.tif", labels, photometric="minisblack")
        message = dataset_error(tmp)
        if valid:
            assert message is None, message
            entry = open_dataset(tmp).entries[0]
            assert (entry.height, entry.width) == height_width
        else:
            assert message is not None, f"image {dtype.__name__} {shape}, labels {label_dtype.__name__} accepted"
            assert str(tmp / "images" / "a.tif") in message or str(tmp / "labels" / "a.tif") in message


@pytest.mark.parametrize("shape", [(0, 10), (10, 0), (0, 5, 5), (2, 0, 5), (2, 5, 0)])
@pytest.mark.parametrize("which", ["images", "labels"])
def test_an_empty_image_is_refused(tmp_path: Path, shape: tuple[int, ...], which: str) -> None:
    root = write_dataset(tmp_path / "ds", images=1, height=10, width=10)
    path = root / which / "img00.tif"
    with pytest.warns(UserWarning, match="zero-size"):  # tifffile writes it, calling it nonconformant
        tifffile.imwrite(path, np.zeros(shape, np.uint16), photometric="minisblack")
    message = dataset_error(root)
    assert message is not None and str(path) in message


@FEW
@given(
    strategy=st.sampled_from(["pipe", "queue", "shm"]),
    strip=st.integers(0, 5),
    fill=st.sampled_from([b"\x00", b"\xff", b"\x5a"]),
)
def test_a_strip_only_a_worker_decodes_fails_naming_the_file(strategy: str, strip: int, fill: bytes) -> None:
    with scratch() as tmp:
        root = write_dataset(tmp / "ds", images=2, height=24, width=20)
        path = root / "images" / "img01.tif"
        tifffile.imwrite(path, tifffile.imread(path), compression="zlib", rowsperstrip=4, photometric="minisblack")
        with tifffile.TiffFile(path) as tif:
            offsets, counts = tif.pages[0].dataoffsets, tif.pages[0].databytecounts
        raw = bytearray(path.read_bytes())
        at = strip % len(offsets)
        raw[offsets[at] : offsets[at] + counts[at]] = fill * counts[at]
        path.write_bytes(bytes(raw))
        assert dataset_error(root) is None  # headers intact: only decoding finds it
        gen = make_generator(strategy, root, LoaderConfig(**TINY, start_method="fork"))
        pids = gen.worker_pids()
        with pytest.raises(WorkerError) as info, gen:
            for _ in gen:
                pass
        assert str(path) in str(info.value)
        assert wait_until_gone(pids) == []


# -- configs ----------------------------------------------------------------------------
SIZE_FIELDS = ("batch_size", "tile", "workers", "prefetch")


@FUZZ
@given(field=st.sampled_from(SIZE_FIELDS), value=st.integers(-(2**40), 0))
def test_a_size_below_one_names_its_field(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field) as info:
        LoaderConfig(**{field: value})
    assert str(value) in str(info.value)


CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(LoaderConfig))
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.sampled_from(["fork", "spawn", "forkserver", "numpy", "torch", "full", "transfer", "cuda", "int32", "float32"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(CONFIG_FIELDS), value=ANY_VALUE)
def test_any_value_of_any_field_is_kept_or_refused_by_name(field: str, value: object) -> None:
    try:
        config = LoaderConfig().replace(**{field: value})
    except ValueError as exc:
        assert f"{field}={value!r}" in str(exc), str(exc)
    else:
        assert getattr(config, field) is value  # kept as given, never coerced


@FEW
@given(name=st.text(min_size=0, max_size=12))
def test_an_unknown_strategy_is_named_before_anything_starts(name: str) -> None:
    from strategies import STRATEGIES

    if name in STRATEGIES:
        return
    with pytest.raises(ValueError, match="unknown strategy") as info:
        make_generator(name, "/nonexistent", LoaderConfig())
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("strategy", ["baseline", "shm", "queue"])
def test_a_tile_larger_than_an_image_starts_nothing(tmp_path: Path, strategy: str) -> None:
    import psutil

    root = write_dataset(tmp_path / "ds", images=2, height=12, width=30)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(ValueError, match="tile=16 is larger than 2 of the 2 images") as info:
        make_generator(strategy, root, LoaderConfig(**{**TINY, "tile": 16}))
    assert str(root / "images") in str(info.value) and "img00.tif (12 x 30)" in str(info.value)
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()
