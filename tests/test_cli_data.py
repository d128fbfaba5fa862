"""``ipcbench data real|synth`` through ``harness.cli.main``: exit codes, output, progress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tifffile

from harness.cli import main
from strategies import open_dataset

SMALL = ["--images", "2", "--height", "120", "--width", "160"]


def test_synth_writes_the_folder_and_prints_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "s"
    assert main(["data", "synth", *SMALL, "--channels", "3", "--seed", "4", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert captured.err.count("wrote image") == 2  # one progress line per image, on stderr
    dataset = open_dataset(out)
    assert len(dataset) == 2 and dataset.channels == 3 and dataset.shapes[0] == (120, 160)
    assert json.loads((out / "dataset.json").read_text())["params"]["seed"] == 4


def test_default_out_is_under_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "synth", *SMALL]) == 0
    assert Path(capsys.readouterr().out.strip()) == tmp_path / "data" / "synth-n2-120x160"
    assert len(open_dataset(tmp_path / "data" / "synth-n2-120x160")) == 2


@pytest.mark.parametrize("compression, code", [("zstd", 50000), ("lzw", 5)])
def test_compression_and_layout_options(tmp_path: Path, compression: str, code: int):
    out = tmp_path / "s"
    assert main(["data", "synth", *SMALL, "--compression", compression, "--layout", "tiles", "--out", str(out)]) == 0
    with tifffile.TiffFile(out / "images" / "synth_000.tif") as tif:
        assert int(tif.pages[0].compression) == code and tif.pages[0].is_tiled


def test_real_with_source_and_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "r"
    assert main(["data", "real", "--source", "ecoli", "--images", "1", "--out", str(out)]) == 0
    (entry,) = open_dataset(out).entries
    assert entry.stem == "ecoli_000" and (entry.channels, entry.height, entry.width) == (1, 2700, 3600)
    assert "reading ecoli frames" in capsys.readouterr().err


def test_real_two_channels_with_lzw_in_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "real", "--source", "hela+ecoli", "--images", "1", "--compression", "lzw"]) == 0
    out = tmp_path / "data" / "real-hela+ecoli-n1-lzw"
    assert Path(capsys.readouterr().out.strip()) == out
    (entry,) = open_dataset(out).entries
    assert entry.stem == "hela+ecoli_000" and entry.shape == (2, 2700, 3600)
    with tifffile.TiffFile(entry.image_path) as tif:
        assert tif.series[0].axes == "CYX" and int(tif.pages[0].compression) == 5


def test_rerun_reuses_and_other_arguments_need_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = str(tmp_path / "s")
    assert main(["data", "synth", *SMALL, "--out", out]) == 0
    capsys.readouterr()
    assert main(["data", "synth", *SMALL, "--out", out]) == 0
    assert "reusing" in capsys.readouterr().err
    assert main(["data", "synth", *SMALL, "--seed", "1", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ipcbench: error:") and "--force" in err and "seed=1" in err
    assert main(["data", "synth", *SMALL, "--seed", "1", "--out", out, "--force"]) == 0
    assert json.loads((tmp_path / "s" / "dataset.json").read_text())["params"]["seed"] == 1


@pytest.mark.parametrize(
    "argv, word",
    [
        (["data", "synth", "--images", "0"], "images=0"),
        (["data", "synth", "--channels", "0"], "channels=0"),
        (["data", "synth", "--height", "5"], "height=5"),
        (["data", "real", "--images", "-1"], "images=-1"),
    ],
)
def test_bad_values_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv, word):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ipcbench: error:") and word in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "synth", "--compression", "jpeg"],
        ["data", "synth", "--layout", "planes"],
        ["data", "real", "--source", "yeast"],
        ["data", "synth", "--images", "many"],
        ["data", "mars"],
        ["data"],
    ],
)
def test_malformed_arguments_exit_2(argv, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err
