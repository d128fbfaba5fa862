"""LoaderConfig: the defaults docs/design.md section 2 promises, frozen, and every bad value refused by name."""

from __future__ import annotations

import dataclasses
import math

import pytest

from strategies import LoaderConfig
from strategies.config import OUTPUTS, START_METHODS

DESIGN_FIELDS = {
    "batch_size",
    "tile",
    "workers",
    "prefetch",
    "seed",
    "epoch",
    "start_method",
    "timeout",
    "shuffle",
    "augment",
    "drop_last",
    "rank",
    "world_size",
    "output",
}


def test_defaults() -> None:
    cfg = LoaderConfig()
    assert cfg.as_dict() == {
        "batch_size": 32,
        "tile": 256,
        "workers": 2,
        "prefetch": 2,
        "seed": 0,
        "epoch": 0,
        "start_method": "forkserver",
        "timeout": 30.0,
        "shuffle": True,
        "augment": True,
        "drop_last": False,
        "rank": 0,
        "world_size": 1,
        "output": "numpy",
        "workload": "full",
        "zero_copy": False,
        "pin_memory": False,
        "device": None,
        "dtype": "uint16",
        "scale": None,
        "decode_threads": None,
        "trace_dir": None,
        "prefetch_next_epoch": False,
        "background_start": False,
    }
    assert {f.name for f in dataclasses.fields(LoaderConfig)} >= DESIGN_FIELDS
    assert set(START_METHODS) == {"fork", "spawn", "forkserver"}
    assert set(OUTPUTS) == {"numpy", "torch"}


def test_frozen_slotted_keyword_only() -> None:
    cfg = LoaderConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.batch_size = 8  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        cfg.extra = 1  # type: ignore[attr-defined]
    assert not hasattr(cfg, "__dict__")
    with pytest.raises(TypeError):
        LoaderConfig(8)  # type: ignore[misc]
    # Frozen and equal by value, so it can key caches and be compared across runs.
    assert LoaderConfig(batch_size=8) == LoaderConfig(batch_size=8)
    assert hash(LoaderConfig(batch_size=8)) == hash(LoaderConfig(batch_size=8))


def test_valid_extremes_accepted() -> None:
    cfg = LoaderConfig(
        batch_size=1,
        tile=1,
        workers=1,
        prefetch=1,
        seed=2**40,
        epoch=7,
        timeout=0.001,
        rank=2,
        world_size=3,
        start_method="spawn",
        output="torch",
        shuffle=False,
        augment=False,
        drop_last=True,
        dtype="float32",
        scale=1 / 65535,
    )
    assert (cfg.rank, cfg.world_size, cfg.timeout) == (2, 3, 0.001)
    assert LoaderConfig(timeout=5).timeout == 5  # an int number of seconds is fine


@pytest.mark.parametrize(
    ("field", "value", "extra"),
    [
        ("batch_size", 0, {}),
        ("batch_size", -1, {}),
        ("tile", 0, {}),
        ("tile", -256, {}),
        ("workers", 0, {}),
        ("workers", -2, {}),
        ("prefetch", 0, {}),
        ("seed", -1, {}),
        ("epoch", -1, {}),
        ("world_size", 0, {}),
        ("rank", 1, {}),  # rank == world_size (1)
        ("rank", 3, {"world_size": 2}),
        ("rank", -1, {}),
        ("start_method", "threads", {}),
        ("start_method", "Fork", {}),
        ("output", "jax", {}),
        ("output", None, {}),
        ("timeout", 0, {}),
        ("timeout", 0.0, {}),
        ("timeout", -1.5, {}),
        ("timeout", math.nan, {}),
        ("timeout", "30", {}),
        ("timeout", True, {}),
        # bool is an int subclass: refused where an int is meant.
        ("batch_size", True, {}),
        ("tile", False, {}),
        ("workers", True, {}),
        ("seed", False, {}),
        ("world_size", True, {}),
        # neither are floats or strings
        ("batch_size", 32.0, {}),
        ("tile", "256", {}),
        # and bool fields want a real bool
        ("shuffle", 1, {}),
        ("augment", "yes", {}),
        ("drop_last", None, {}),
        ("zero_copy", 1, {}),
        ("pin_memory", "yes", {}),
        ("workload", "decode", {}),
        ("workload", None, {}),
        ("device", "", {"output": "torch"}),
        ("device", 0, {"output": "torch"}),
        # pinned memory and devices are torch notions: NumPy output refuses them
        ("pin_memory", True, {}),
        ("device", "cuda", {}),
        ("dtype", "float64", {}),
        ("dtype", "uint8", {}),
        ("dtype", None, {}),
        # a scale only means something for float32: an integer dtype would round it away
        ("scale", 0.5, {}),
        ("scale", 0.5, {"dtype": "int32"}),
        ("scale", 0, {"dtype": "float32"}),
        ("scale", -1.0, {"dtype": "float32"}),
        ("scale", math.inf, {"dtype": "float32"}),
        ("scale", math.nan, {"dtype": "float32"}),
        ("scale", "1/65535", {"dtype": "float32"}),
        ("scale", True, {"dtype": "float32"}),
        ("decode_threads", 0, {}),
        ("decode_threads", -2, {}),
        ("decode_threads", 1.5, {}),
        ("decode_threads", True, {}),
        ("decode_threads", "auto", {}),
    ],
)
def test_invalid_value_names_field_and_value(field: str, value: object, extra: dict) -> None:
    with pytest.raises(ValueError) as info:
        LoaderConfig(**{field: value}, **extra)
    message = str(info.value)
    assert f"{field}=" in message, message
    assert repr(value) in message or str(value) in message, message


def test_replace_returns_validated_copy() -> None:
    cfg = LoaderConfig(batch_size=8)
    new = cfg.replace(tile=64, seed=3)
    assert (new.batch_size, new.tile, new.seed) == (8, 64, 3)
    assert (cfg.tile, cfg.seed) == (256, 0)  # the original is untouched
    assert cfg.replace() == cfg
    with pytest.raises(ValueError, match="prefetch=0"):
        cfg.replace(prefetch=0)


def test_replace_unknown_field_lists_known_fields() -> None:
    with pytest.raises(ValueError) as info:
        LoaderConfig().replace(batchsize=8, tiles=2)
    message = str(info.value)
    assert "batchsize" in message and "tiles" in message
    for name in DESIGN_FIELDS:
        assert name in message, f"{name} missing from {message}"


def test_as_dict_round_trips() -> None:
    cfg = LoaderConfig(batch_size=3, tile=17, start_method="fork", output="torch", drop_last=True)
    assert LoaderConfig(**cfg.as_dict()) == cfg


@pytest.mark.parametrize("value", ["", 3, b"dir"])
def test_a_trace_dir_that_is_no_path_is_refused_by_name(value: object) -> None:
    with pytest.raises(ValueError, match=rf"LoaderConfig.trace_dir={value!r} must be None or a folder's path"):
        LoaderConfig(trace_dir=value)
