"""make_generator and STRATEGIES: names resolve, overrides apply, every mistake is a clear ValueError."""

from __future__ import annotations

from pathlib import Path

import pytest

from strategies import STRATEGIES, BatchGenerator, LoaderConfig, make_generator, open_dataset
from strategies.baseline import BaselineGenerator


def test_strategies_registry() -> None:
    assert STRATEGIES["baseline"] is BaselineGenerator
    for name, cls in STRATEGIES.items():
        assert issubclass(cls, BatchGenerator)
        assert cls.name == name


def test_unknown_strategy_lists_choices(tiny_dataset: Path) -> None:
    with pytest.raises(ValueError) as info:
        make_generator("carrier-pigeon", tiny_dataset)
    message = str(info.value)
    assert "carrier-pigeon" in message
    for name in STRATEGIES:
        assert name in message


def test_unknown_strategy_checked_before_dataset(tmp_path: Path) -> None:
    # The name is the first mistake reported, even when the dataset is also wrong.
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        make_generator("nope", tmp_path / "missing")


def test_unknown_override_field(tiny_dataset: Path) -> None:
    with pytest.raises(ValueError) as info:
        make_generator("baseline", tiny_dataset, batchsize=4)
    message = str(info.value)
    assert "batchsize" in message and "batch_size" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 0),
        ("tile", -1),
        ("start_method", "threads"),
        ("output", "jax"),
        ("timeout", 0),
        ("workers", True),
    ],
)
def test_bad_override_value(tiny_dataset: Path, field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{field}="):
        make_generator("baseline", tiny_dataset, **{field: value})


def test_overrides_apply_over_config(tiny_dataset: Path) -> None:
    cfg = LoaderConfig(batch_size=4, tile=16, seed=9, drop_last=True)
    with make_generator("baseline", tiny_dataset, cfg, tile=8, epoch=2) as gen:
        assert gen.config == LoaderConfig(batch_size=4, tile=8, seed=9, drop_last=True, epoch=2)
    assert cfg.tile == 16 and cfg.epoch == 0  # the caller's config is not changed


def test_default_config_when_none(tiny_dataset: Path) -> None:
    with make_generator("baseline", tiny_dataset, None, tile=16) as gen:
        assert gen.config == LoaderConfig(tile=16)
    with make_generator("baseline", tiny_dataset, tile=16, batch_size=5) as gen:
        assert gen.config == LoaderConfig(tile=16, batch_size=5)


@pytest.mark.parametrize("kind", ["str", "path", "dataset"])
def test_dataset_as_path_or_dataset(tiny_dataset: Path, kind: str) -> None:
    dataset = {"str": str(tiny_dataset), "path": tiny_dataset, "dataset": open_dataset(tiny_dataset)}[kind]
    with make_generator("baseline", dataset, tile=16, batch_size=8) as gen:
        assert gen.dataset == open_dataset(tiny_dataset)
        data, masks = next(gen)
        assert data.shape == (8, 2, 16, 16) and masks.shape == (8, 16, 16)


def test_missing_dataset_is_dataset_error(tmp_path: Path) -> None:
    from strategies import DatasetError

    with pytest.raises(DatasetError, match="missing"):
        make_generator("baseline", tmp_path / "missing")


def test_world_size_larger_than_dataset(tiny_dataset: Path) -> None:
    with pytest.raises(ValueError, match=r"3 images, fewer than world_size=4"):
        make_generator("baseline", tiny_dataset, tile=16, world_size=4, rank=1)


class _AbsentPeer(BaselineGenerator):
    """A strategy wrapping a library that is not installed."""

    name = "absent_peer"
    requires = ("ipcbench_no_such_module", "no-such-loader==1.0")


@pytest.fixture
def absent_peer(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(STRATEGIES, _AbsentPeer.name, _AbsentPeer)
    return _AbsentPeer.name


def test_a_peer_whose_library_is_missing_says_what_to_install(absent_peer: str, tiny_dataset: Path) -> None:
    from strategies import StrategyUnavailableError, available_strategies, resolve_strategies

    assert absent_peer not in available_strategies()
    assert "baseline" in available_strategies()
    assert resolve_strategies() == available_strategies()
    for attempt in (lambda: make_generator(absent_peer, tiny_dataset), lambda: resolve_strategies([absent_peer])):
        with pytest.raises(StrategyUnavailableError, match=r"pip install 'no-such-loader==1.0'"):
            attempt()
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        resolve_strategies(["baseline", "nope"])


def test_the_cli_leaves_a_missing_peer_out_by_default_and_refuses_it_by_name(
    absent_peer: str, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main

    common = ["--dataset", str(tiny_dataset), "--tile", "64", "--batch-size", "4", "--quick"]
    assert main(["run", *common, "--strategies", f"baseline,{absent_peer}", "--out", str(tmp_path / "a")]) == 2
    assert "pip install 'no-such-loader==1.0'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main(["faults", "--strategies", absent_peer, "--out", str(tmp_path / "f")]) == 2
    assert "no-such-loader" in capsys.readouterr().err
    assert main(["soak", "--strategies", absent_peer, "--out", str(tmp_path / "s")]) == 2
    assert "no-such-loader" in capsys.readouterr().err


def test_a_default_run_says_which_peer_it_left_out(absent_peer: str) -> None:
    from harness.commands.run import unavailable_lines

    lines = unavailable_lines()
    assert [line for line in lines if absent_peer in line] == [f"not measured: {STRATEGIES[absent_peer].unavailable()}"]
    assert not [line for line in lines if "'baseline'" in line or "baseline strategy" in line]
