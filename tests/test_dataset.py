"""open_dataset: a valid folder is indexed; every bad input is a DatasetError that names the file.

Also the names (every dot but the final .tif/.tiff is part of one, in images/ and in
classes.csv), how a dataset of mixed sizes is described, the checks the generator makes
on top of the dataset (every image a tile does not fit, in one error; batch_size < 1),
and a corrupt compressed strip, which only decoding can find.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import write_dataset

from strategies import Dataset, DatasetError, ImageEntry, make_generator, open_dataset
from strategies.plan import ImageJob
from strategies.work import ImageProcessor


def write_pair(root: Path, stem: str, image: np.ndarray, labels: np.ndarray | None = None, **kwargs: object) -> Path:
    """Write images/<stem>.tif (and labels/<stem>.tif, zeros of the image's H x W unless given)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("photometric", "minisblack")  # (3, H, W) is channels, not RGB
    tifffile.imwrite(root / "images" / f"{stem}.tif", image, **kwargs)
    if labels is None:
        labels = np.zeros(image.shape[-2:], np.uint16)
    tifffile.imwrite(root / "labels" / f"{stem}.tif", labels)
    return root / "images" / f"{stem}.tif"


def error_of(root: Path) -> str:
    with pytest.raises(DatasetError) as info:
        open_dataset(root)
    return str(info.value)


# -- valid datasets -------------------------------------------------------------


def test_valid_dataset_indexed(tiny_dataset: Path) -> None:
    ds = open_dataset(tiny_dataset)
    assert isinstance(ds, Dataset) and len(ds) == 3 and ds.root == str(tiny_dataset)
    assert [e.stem for e in ds.entries] == ["img00", "img01", "img02"]
    assert ds.channels == 2
    assert ds.shapes == ((70, 90),) * 3
    entry = ds.entries[1]
    assert isinstance(entry, ImageEntry)
    assert entry.image_path == str(tiny_dataset / "images" / "img01.tif")
    assert entry.label_path == str(tiny_dataset / "labels" / "img01.tif")
    assert entry.shape == (2, 70, 90) and entry.classes is None
    # Small and picklable: it travels to every worker process.
    assert pickle.loads(pickle.dumps(ds)) == ds


def test_entries_sorted_and_one_channel(tmp_path: Path) -> None:
    for stem in ("b", "a", "c"):
        write_pair(tmp_path, stem, np.zeros((20, 30), np.uint16))
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    ds = open_dataset(tmp_path)
    assert [e.stem for e in ds.entries] == ["a", "b", "c"]
    assert ds.channels == 1 and ds.entries[0].shape == (1, 20, 30)


def test_tiff_suffix_and_wide_label_types(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tiff", np.zeros((3, 20, 30), np.uint16), photometric="minisblack")
    tifffile.imwrite(tmp_path / "labels" / "a.tiff", np.zeros((20, 30), np.int32))
    tifffile.imwrite(tmp_path / "images" / "b.tif", np.zeros((3, 20, 30), np.uint16), photometric="minisblack")
    tifffile.imwrite(tmp_path / "labels" / "b.tif", np.zeros((20, 30), np.uint32))
    ds = open_dataset(tmp_path)
    assert [Path(e.label_path).name for e in ds.entries] == ["a.tiff", "b.tif"]
    assert ds.channels == 3


def test_upper_case_suffix_pairs_with_its_label(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.TIF", np.zeros((20, 30), np.uint16))
    tifffile.imwrite(tmp_path / "labels" / "a.TIF", np.zeros((20, 30), np.uint16))
    (entry,) = open_dataset(tmp_path).entries
    assert entry.label_path == str(tmp_path / "labels" / "a.TIF")


def test_classes_table_read(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", images=3)
    (root / "classes.csv").write_text("image,label,class\nimg00.tif,1,3\nimg00,2,255\n img02 ,7,1\n")
    ds = open_dataset(root)
    assert ds.entries[0].classes == ((1, 3), (2, 255))
    assert ds.entries[1].classes == ()  # a table exists but lists nothing: every label is class 1
    assert ds.entries[2].classes == ((7, 1),)


def write_named(root: Path, image_name: str, label_name: str, height: int = 20, width: int = 30) -> None:
    """images/<image_name> and labels/<label_name>, file names given whole (any dots, any extension)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(root / "images" / image_name, np.zeros((height, width), np.uint16))
    tifffile.imwrite(root / "labels" / label_name, np.zeros((height, width), np.uint16))


@pytest.fixture
def dotted(tmp_path: Path) -> Path:
    """OME-style names: dots inside the name, .tif and .tiff, labels with the other extension."""
    write_named(tmp_path, "well_A01_field01.ome.tif", "well_A01_field01.ome.tiff")
    write_named(tmp_path, "plate1.A01.tiff", "plate1.A01.tif")
    write_named(tmp_path, "plate1.A02.TIF", "plate1.A02.tif")
    return tmp_path


def test_names_keep_every_dot_but_the_extension_and_pair_with_their_labels(dotted: Path) -> None:
    entries = {e.stem: e for e in open_dataset(dotted).entries}
    assert sorted(entries) == ["plate1.A01", "plate1.A02", "well_A01_field01.ome"]
    assert Path(entries["well_A01_field01.ome"].label_path).name == "well_A01_field01.ome.tiff"
    assert Path(entries["plate1.A01"].label_path).name == "plate1.A01.tif"
    assert Path(entries["plate1.A02"].label_path).name == "plate1.A02.tif"


def test_classes_csv_names_an_image_by_its_file_name_or_without_the_extension(dotted: Path) -> None:
    (dotted / "classes.csv").write_text(
        "image,label,class\n"
        "well_A01_field01.ome.tif,1,2\n"
        "well_A01_field01.ome,2,3\n"
        "plate1.A01.tiff,1,4\n"
        "plate1.A01,2,5\n"
        "plate1.A01.TIF,3,6\n"  # another case or extension than the file's: still only the extension goes
    )
    entries = {e.stem: e for e in open_dataset(dotted).entries}
    assert entries["well_A01_field01.ome"].classes == ((1, 2), (2, 3))
    assert entries["plate1.A01"].classes == ((1, 4), (2, 5), (3, 6))
    assert entries["plate1.A02"].classes == ()


def test_tiff_stem_strips_only_a_final_tiff_extension() -> None:
    from strategies.dataset import tiff_stem

    assert tiff_stem("well_A01_field01.ome.tif") == "well_A01_field01.ome"
    assert tiff_stem("plate1.A01.TIFF") == "plate1.A01"
    assert tiff_stem("plate1.A01") == "plate1.A01"
    assert tiff_stem("a.tif.tif") == "a.tif"


@pytest.mark.parametrize("given", ["well_A01_field01", "well_A01_field01.tif", "plate1.A03.tiff"])
def test_an_unknown_name_in_classes_csv_lists_names_and_both_spellings(dotted: Path, given: str) -> None:
    (dotted / "classes.csv").write_text(f"image,label,class\n{given},1,2\n")
    message = error_of(dotted)
    assert f"{dotted / 'classes.csv'} line 2: image {given!r} is not in images/" in message
    assert "plate1.A01.tiff, plate1.A02.TIF, well_A01_field01.ome.tif" in message  # the names it does know
    assert (
        "is named by its file name ('" in message and "') or by that name without its .tif/.tiff extension" in message
    )


def test_a_near_miss_in_classes_csv_gets_a_suggestion(dotted: Path) -> None:
    (dotted / "classes.csv").write_text("image,label,class\nwell_A01_field01,1,2\n")
    message = error_of(dotted)
    assert "did you mean 'well_A01_field01.ome'?" in message
    assert "('well_A01_field01.ome.tif') or by that name without its .tif/.tiff extension ('well_A01_field01.ome')" in (
        message
    )


def test_a_long_images_folder_is_listed_in_part(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", images=8, height=12, width=12, channels=1)
    (root / "classes.csv").write_text("image,label,class\nnothing_like_it,1,2\n")
    message = error_of(root)
    assert "img00.tif, img01.tif, img02.tif, img03.tif, img04.tif, ... (8 in all)" in message
    assert "img05.tif" not in message


def test_two_images_of_one_name(tmp_path: Path) -> None:
    write_named(tmp_path, "a.tif", "a.tif")
    write_named(tmp_path, "a.tiff", "b.tif")
    message = error_of(tmp_path)
    assert "a.tif and a.tiff" in message and "keep one" in message


def test_an_image_with_two_label_files(tmp_path: Path) -> None:
    write_named(tmp_path, "a.ome.TIF", "a.ome.tif")
    tifffile.imwrite(tmp_path / "labels" / "a.ome.tiff", np.zeros((20, 30), np.uint16))
    message = error_of(tmp_path)
    assert str(tmp_path / "labels" / "a.ome.tif") in message and str(tmp_path / "labels" / "a.ome.tiff") in message


def test_describe_uniform_and_mixed_sizes(tmp_path: Path) -> None:
    uniform = write_dataset(tmp_path / "u", images=3, height=27, width=36, channels=1)
    assert open_dataset(uniform).describe() == "3 images, 1 x 27 x 36"
    mixed = tmp_path / "m"
    for stem, (height, width) in {"a": (60, 80), "b": (20, 30), "c": (60, 80), "d": (40, 20)}.items():
        write_pair(mixed, stem, np.zeros((2, height, width), np.uint16))
    ds = open_dataset(mixed)
    assert ds.describe() == "4 images, 3 sizes from 2 x 20 x 30 to 2 x 60 x 80"  # by pixel count
    assert ds.sizes == (((2, 20, 30), 1), ((2, 40, 20), 1), ((2, 60, 80), 2))
    assert ds.largest_tile == 20


# -- missing folders and files --------------------------------------------------


def test_missing_dataset_dir(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in message


def test_dataset_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert str(tmp_path / "file") in error_of(tmp_path / "file")


def test_no_images_folder(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    message = error_of(tmp_path)
    assert str(tmp_path) in message and "images/" in message


def test_empty_images_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "readme.md").write_text("no tiffs here")
    message = error_of(tmp_path)
    assert str(tmp_path / "images") in message and "no .tif or .tiff files" in message


def test_image_without_label(tiny_dataset: Path) -> None:
    (tiny_dataset / "labels" / "img01.tif").unlink()
    message = error_of(tiny_dataset)
    assert str(tiny_dataset / "labels" / "img01.tif") in message and "missing" in message
    assert "labels/img01.tif (or .tiff)" in message


def test_no_labels_folder(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", images=1)
    for path in (root / "labels").iterdir():
        path.unlink()
    (root / "labels").rmdir()
    assert str(root / "labels" / "img00.tif") in error_of(root)


# -- corrupt and wrong files ----------------------------------------------------


@pytest.mark.parametrize("which", ["images", "labels"])
@pytest.mark.parametrize("channels", [1, 2, 5])
@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("keep", [0.2, 0.5, 0.8, 0.97])
def test_truncated_tiff(tmp_path: Path, which: str, channels: int, compression: str | None, keep: float) -> None:
    root = write_dataset(tmp_path / "ds", images=2, channels=channels)
    if compression:  # rewrite with compressed strips
        for sub in ("images", "labels"):
            path = root / sub / "img01.tif"
            tifffile.imwrite(path, tifffile.imread(path), compression=compression, rowsperstrip=8)
    path = root / which / "img01.tif"
    raw = path.read_bytes()
    open_dataset(root)  # valid before the cut
    path.write_bytes(raw[: int(len(raw) * keep)])
    assert str(path) in error_of(root)


def test_multipage_compressed_image_cut_anywhere(tmp_path: Path) -> None:
    # tifffile opens a multi-page file cut among its pages: it may list fewer pages,
    # or fall back to a one-page (1-channel!) series. Every cut must still be refused.
    data = np.random.default_rng(0).integers(0, 4096, (5, 40, 50), dtype=np.uint16)
    path = write_pair(tmp_path, "a", data, np.zeros((40, 50), np.uint16), compression="zlib")
    raw = path.read_bytes()
    for end in range(16, len(raw) - 1, max(1, len(raw) // 97)):
        path.write_bytes(raw[:end])
        assert str(path) in error_of(tmp_path), f"cut at {end} of {len(raw)} bytes was accepted"


def test_garbage_with_tif_name(tiny_dataset: Path) -> None:
    path = tiny_dataset / "images" / "img02.tif"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    message = error_of(tiny_dataset)
    assert str(path) in message and "not a readable TIFF" in message


def test_empty_file_with_tif_name(tiny_dataset: Path) -> None:
    path = tiny_dataset / "labels" / "img00.tif"
    path.write_bytes(b"")
    assert str(path) in error_of(tiny_dataset)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.int16, np.uint32])
def test_image_not_16_bit(tmp_path: Path, dtype: type) -> None:
    write_pair(tmp_path, "a", np.zeros((20, 30), np.uint16))
    path = write_pair(tmp_path, "b", np.zeros((2, 20, 30), dtype))
    message = error_of(tmp_path)
    assert str(path) in message and np.dtype(dtype).name in message and "uint16" in message


def test_four_d_image(tmp_path: Path) -> None:
    path = write_pair(tmp_path, "a", np.zeros((2, 3, 20, 30), np.uint16))
    message = error_of(tmp_path)
    assert str(path) in message and "(2, 3, 20, 30)" in message


@pytest.mark.parametrize("shape", [(20, 31), (21, 30), (30, 20), (2, 20, 30)])
def test_label_shape_mismatch(tmp_path: Path, shape: tuple[int, ...]) -> None:
    write_pair(tmp_path, "a", np.zeros((2, 20, 30), np.uint16), np.zeros(shape, np.uint16))
    message = error_of(tmp_path)
    assert str(tmp_path / "labels" / "a.tif") in message and str(tmp_path / "images" / "a.tif") in message


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_])
def test_non_integer_labels(tmp_path: Path, dtype: type) -> None:
    write_pair(tmp_path, "a", np.zeros((20, 30), np.uint16), np.zeros((20, 30), dtype))
    message = error_of(tmp_path)
    assert str(tmp_path / "labels" / "a.tif") in message and "integer" in message


def test_mixed_channel_counts(tmp_path: Path) -> None:
    one = write_pair(tmp_path, "a", np.zeros((20, 30), np.uint16))
    two = write_pair(tmp_path, "b", np.zeros((2, 20, 30), np.uint16))
    write_pair(tmp_path, "c", np.zeros((2, 20, 30), np.uint16))
    message = error_of(tmp_path)
    assert str(one) in message and str(two) in message and "channel" in message


# -- axes: what a multi-dimensional TIFF's first series is read as ------------------

H, W = 24, 32  # small planes; 8 x 8 tiles cover them in 3 x 4


def write_axes(root: Path, stem: str, array: np.ndarray, labels: np.ndarray | None = None, **kwargs: object) -> Path:
    """images/<stem>.tif written with tifffile's ``kwargs`` as given (OME, ImageJ, RGB), labels/<stem>.tif YX."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    path = root / "images" / f"{stem}.tif"
    tifffile.imwrite(path, array, **kwargs)
    tifffile.imwrite(root / "labels" / f"{stem}.tif", np.zeros((H, W), np.uint16) if labels is None else labels)
    return path


def pixels_read(root: Path) -> np.ndarray:
    """Image 0 of the dataset as the per-image work reads it, (C, H, W), put back together from 8 x 8 tiles."""
    dataset = open_dataset(root)
    entry = dataset.entries[0]
    corners = np.array([(y, x) for y in range(0, entry.height, 8) for x in range(0, entry.width, 8)], np.int32)
    job = ImageJob(0, 0, corners, np.zeros(len(corners), np.uint8))
    tiles = ImageProcessor(dataset, 8).process(job).data
    image = np.empty(entry.shape, np.uint16)
    for (y, x), tile in zip(corners.tolist(), tiles, strict=True):
        image[:, y : y + 8, x : x + 8] = tile
    return image


def planes(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4096, (*shape, H, W), dtype=np.uint16)


@pytest.mark.parametrize(
    ("lead", "axes", "kind"),
    [
        ((3,), "ZYX", "ome"),
        ((3,), "ZYX", "imagej"),
        ((3,), "ZYX", "shaped"),
        ((4,), "TYX", "imagej"),
        ((3, 2), "TCYX", "ome"),
        ((2, 3), "CZYX", "ome"),
        ((2, 3, 2), "TZCYX", "imagej"),
    ],
)
def test_a_z_or_t_axis_is_refused_naming_file_axes_and_what_to_do(
    tmp_path: Path, lead: tuple[int, ...], axes: str, kind: str
) -> None:
    kwargs = {"ome": {"ome": True}, "imagej": {"imagej": True}, "shaped": {"photometric": "minisblack"}}[kind]
    path = write_axes(tmp_path, "stack", planes(*lead), metadata={"axes": axes}, **kwargs)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == axes  # the file says what it is
    message = error_of(tmp_path)
    assert str(path) in message and repr(axes) in message and str((*lead, H, W)) in message
    if "Z" in axes:
        assert "Z (depth) axis" in message and "project the Z planes" in message
    if "T" in axes:
        assert "T (time) axis" in message and "split the time points" in message
    assert "CYX" in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ome": True, "metadata": {"axes": "CYX"}},
        {"imagej": True, "metadata": {"axes": "CYX"}},
        {"photometric": "minisblack", "metadata": {"axes": "CYX"}},
    ],
    ids=["ome", "imagej", "shaped"],
)
def test_a_two_channel_cyx_image_opens_and_reads_as_written(tmp_path: Path, kwargs: dict) -> None:
    array = planes(2)
    write_axes(tmp_path, "two", array, **kwargs)
    dataset = open_dataset(tmp_path)
    assert dataset.channels == 2 and dataset.shapes == ((H, W),)
    assert np.array_equal(pixels_read(tmp_path), array)


@pytest.mark.parametrize("kind", ["ome", "imagej", "shaped"])
def test_a_singleton_z_is_dropped(tmp_path: Path, kind: str) -> None:
    # OME and ImageJ files come from tifffile without the Z of length 1; its own shaped
    # files keep it ((1, 2, H, W), axes ZCYX), and open_dataset drops it.
    array = planes(1, 2)
    kwargs = {"ome": {"ome": True}, "imagej": {"imagej": True}, "shaped": {"photometric": "minisblack"}}[kind]
    path = write_axes(tmp_path, "z1", array, metadata={"axes": "ZCYX"}, **kwargs)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == ("ZCYX" if kind == "shaped" else "CYX")
    dataset = open_dataset(tmp_path)
    assert dataset.channels == 2 and dataset.entries[0].shape == (2, H, W)
    assert np.array_equal(pixels_read(tmp_path), array[0])


@pytest.mark.parametrize("samples", [3, 2])
def test_interleaved_samples_are_refused(tmp_path: Path, samples: int) -> None:
    array = np.zeros((H, W, samples), np.uint16)
    kwargs = {"photometric": "rgb"} if samples == 3 else {"photometric": "minisblack", "extrasamples": [0]}
    path = write_axes(tmp_path, "rgb", array, planarconfig="contig", **kwargs)
    message = error_of(tmp_path)
    assert str(path) in message and "'YXS'" in message and str((H, W, samples)) in message
    assert "interleaved" in message and "planar" in message


def test_planar_samples_and_plain_pages_are_channels(tmp_path: Path) -> None:
    # S first (planar RGB, one plane per sample) and a multi-page TIFF without metadata
    # (tifffile: axes IYX): each plane is a channel, as it always was.
    rgb = planes(3)
    write_axes(tmp_path / "planar", "a", rgb, photometric="rgb", planarconfig="separate")
    pages = planes(3)
    (tmp_path / "pages" / "images").mkdir(parents=True)
    with tifffile.TiffWriter(tmp_path / "pages" / "images" / "a.tif") as tif:
        for page in pages:
            tif.write(page, photometric="minisblack", metadata=None)
    (tmp_path / "pages" / "labels").mkdir()
    tifffile.imwrite(tmp_path / "pages" / "labels" / "a.tif", np.zeros((H, W), np.uint16))
    for name, array, axes in (("planar", rgb, "SYX"), ("pages", pages, "IYX")):
        with tifffile.TiffFile(tmp_path / name / "images" / "a.tif") as tif:
            assert tif.series[0].axes == axes
        assert open_dataset(tmp_path / name).channels == 3
        assert np.array_equal(pixels_read(tmp_path / name), array)


def test_a_label_image_with_a_z_axis_is_refused(tmp_path: Path) -> None:
    labels = tmp_path / "labels" / "a.tif"
    write_axes(tmp_path, "a", planes(2), metadata={"axes": "CYX"}, photometric="minisblack")
    tifffile.imwrite(labels, np.zeros((3, H, W), np.uint16), ome=True, metadata={"axes": "ZYX"})
    message = error_of(tmp_path)
    assert str(labels) in message and "'ZYX'" in message and "YX" in message


def test_an_image_replaced_by_a_z_stack_after_open_fails_in_the_work(tmp_path: Path) -> None:
    # Same number of values, other axes: the per-image work applies the same rule.
    path = write_axes(tmp_path, "a", planes(2), metadata={"axes": "CYX"}, photometric="minisblack")
    dataset = open_dataset(tmp_path)
    tifffile.imwrite(path, planes(2), ome=True, metadata={"axes": "ZYX"})
    job = ImageJob(0, 0, np.zeros((1, 2), np.int32), np.zeros(1, np.uint8))
    with pytest.raises(DatasetError, match="ZYX") as info:
        ImageProcessor(dataset, 8).process(job)
    assert str(path) in str(info.value)


# -- classes.csv ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("img,label,class\nimg00,1,2\n", "header"),
        ("image;label;class\nimg00;1;2\n", "header"),
        ("", "header"),
        ("image,label,class\nimg00,one,2\n", "line 2"),
        ("image,label,class\nimg00,1,2\nimg00,2,x\n", "line 3"),
        ("image,label,class\nimg00,1.5,2\n", "integers"),
        ("image,label,class\nimg00,1\n", "line 2"),
        ("label,class,image\n1,2\n", "line 2"),  # a short row leaves 'image' empty
        ("image,label,class\nimg00,1,0\n", "class 0"),
        ("image,label,class\nimg00,1,256\n", "class 256"),
        ("image,label,class\nimg00,1,-3\n", "class -3"),
        ("image,label,class\nimg99,1,2\n", "'img99'"),
        ("image,label,class\nimg00,0,2\n", "label 0"),
        ("image,label,class\nimg00,-1,2\n", "label -1"),
    ],
)
def test_bad_classes_csv(tiny_dataset: Path, text: str, expected: str) -> None:
    (tiny_dataset / "classes.csv").write_text(text)
    message = error_of(tiny_dataset)
    assert str(tiny_dataset / "classes.csv") in message and expected in message, message


def test_classes_csv_not_text(tiny_dataset: Path) -> None:
    (tiny_dataset / "classes.csv").write_bytes(b"\xff\xfe\x00\x81garbage\x90\n")
    assert str(tiny_dataset / "classes.csv") in error_of(tiny_dataset)


# -- checks the generator adds --------------------------------------------------


def test_tile_larger_than_an_image(tmp_path: Path) -> None:
    write_pair(tmp_path, "big", np.zeros((64, 64), np.uint16))
    write_pair(tmp_path, "small", np.zeros((64, 40), np.uint16))
    with make_generator("baseline", tmp_path, tile=40, batch_size=2) as gen:
        assert len(gen) > 0  # exactly fits
    with pytest.raises(ValueError) as info:
        make_generator("baseline", tmp_path, tile=41)
    assert "small.tif (64 x 40)" in str(info.value) and "tile=41" in str(info.value)


def test_every_image_too_small_for_the_tile_is_named_in_one_error(tmp_path: Path) -> None:
    from strategies.dataset import check_tile

    write_pair(tmp_path, "big", np.zeros((300, 400), np.uint16))
    write_pair(tmp_path, "thin", np.zeros((300, 90), np.uint16))
    write_pair(tmp_path, "flat.ome", np.zeros((50, 400), np.uint16))
    write_pair(tmp_path, "tiny", np.zeros((64, 64), np.uint16))
    with pytest.raises(ValueError) as info:
        make_generator("baseline", tmp_path, tile=256)
    message = str(info.value)
    assert message.startswith(f"tile=256 is larger than 3 of the 4 images in {tmp_path / 'images'}")
    assert "flat.ome.tif (50 x 400), thin.tif (300 x 90), tiny.tif (64 x 64)" in message
    assert "big.tif" not in message
    assert message.endswith("the largest tile that fits every image is 50")
    check_tile(open_dataset(tmp_path), 50)  # the tile it names fits: no error


@pytest.mark.parametrize("batch_size", [0, -4])
def test_batch_size_below_one(tiny_dataset: Path, batch_size: int) -> None:
    with pytest.raises(ValueError, match=f"batch_size={batch_size}"):
        make_generator("baseline", tiny_dataset, tile=16, batch_size=batch_size)


def test_corrupt_compressed_strip_found_while_decoding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_pair(tmp_path, "a", rng.integers(0, 4096, (2, 48, 48), dtype=np.uint16), compression="zlib", rowsperstrip=8)
    bad = write_pair(
        tmp_path, "b", rng.integers(0, 4096, (2, 48, 48), dtype=np.uint16), compression="zlib", rowsperstrip=8
    )
    with tifffile.TiffFile(bad) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[2], page.databytecounts[2]
    raw = bytearray(bad.read_bytes())
    size = len(raw)
    raw[offset : offset + count] = bytes(count)  # same byte count: the header still checks out
    bad.write_bytes(bytes(raw))
    assert bad.stat().st_size == size

    open_dataset(tmp_path)  # headers are fine
    with make_generator("baseline", tmp_path, tile=16, batch_size=4, shuffle=False) as gen:
        with pytest.raises(DatasetError) as info:
            for _ in gen:
                pass
        assert gen.closed  # an error mid-epoch closes the generator
    assert str(bad) in str(info.value)
