"""Typed configs: YAML overrides, --set parsing, unknown keys and wrong types rejected by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from adray.config import Config, ConfigError, check, load_config, parse_set


@dataclasses.dataclass(frozen=True)
class Inner(Config):
    width: int = 8
    """Hidden width."""


@dataclasses.dataclass(frozen=True)
class Demo(Config):
    lr: float = 1e-3
    """Learning rate."""
    name: str = "a"
    """A name."""
    flag: bool = False
    """A flag."""
    sizes: tuple[int, ...] = (1, 2)
    """Sizes."""
    kind: str | None = None
    """Optional."""
    inner: Inner = dataclasses.field(default_factory=Inner)
    """Nested."""

    def __post_init__(self) -> None:
        check(self.lr > 0, f"lr={self.lr}: expected > 0")


def test_yaml_and_set_override_defaults(tmp_path: Path) -> None:
    (tmp_path / "small.yaml").write_text("lr: 0.01\ninner:\n  width: 4\n")
    (tmp_path / "child.yaml").write_text("base: small\nname: b\n")
    cfg = load_config(Demo, "child", tmp_path, parse_set(["flag=true", "sizes=[3,4]", "inner.width=16"]))
    assert cfg == Demo(lr=0.01, name="b", flag=True, sizes=(3, 4), inner=Inner(16))
    assert Demo.from_dict(cfg.to_dict()) == cfg  # round-trip


def test_unknown_key_names_key_and_valid_keys(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*'lrr'.*valid keys"):
        load_config(Demo, "bad", tmp_path)
    with pytest.raises(ConfigError, match=r"inner.depth"):
        Demo().override({"inner.depth": 3})


def test_wrong_types_and_validation() -> None:
    with pytest.raises(ConfigError, match=r"lr='fast'; expected a number"):
        Demo.from_dict({"lr": "fast"})
    with pytest.raises(ConfigError, match=r"flag=1; expected true or false"):
        Demo.from_dict({"flag": 1})
    with pytest.raises(ConfigError, match=r"lr=-1.0: expected > 0"):
        Demo.from_dict({"lr": -1})
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set(["oops"])


def test_unknown_named_config_lists_available(tmp_path: Path) -> None:
    (tmp_path / "smoke.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"unknown config 'nope'.*\['smoke'\]"):
        load_config(Demo, "nope", tmp_path)


def test_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Demo().lr = 2.0  # type: ignore[misc]


@dataclasses.dataclass(frozen=True)
class Pair(Config):
    split: tuple[float, int] = (0.5, 1)
    """A fixed-length, mixed-type tuple."""


def test_fixed_length_tuples_coerce_each_item_to_its_type() -> None:
    assert Pair.from_dict({"split": [1, 2]}).split == (1.0, 2)
    with pytest.raises(ConfigError, match="expected 2 items"):
        Pair.from_dict({"split": [1.0]})
    with pytest.raises(ConfigError, match=r"split\[1\]=0.5; expected an integer"):
        Pair.from_dict({"split": [1.0, 0.5]})


@dataclasses.dataclass(frozen=True)
class InnerLater(Config):
    """Inner as it is after a field was added to it."""

    width: int = 8
    shift: tuple[float, float] = (0.0, 0.0)
    KEY_OPTIONAL = ("shift",)


@dataclasses.dataclass(frozen=True)
class DemoLater(Demo):
    """Demo as it is after a field was added to it and to its nested config."""

    inner: InnerLater = dataclasses.field(default_factory=InnerLater)
    day: int = 0
    KEY_OPTIONAL = ("day",)


def test_fields_added_later_enter_the_key_only_when_set() -> None:
    """A field added to a config keeps the names hashed from it (a generated dataset's directory,
    a run's, a sweep's) for every config that leaves it at its default, nested or not."""
    before = Demo(lr=0.01, inner=Inner(width=4))
    after = DemoLater(lr=0.01, inner=InnerLater(width=4))
    assert after.key_dict() == before.key_dict() == before.to_dict()
    assert "day" in after.to_dict() and "shift" in after.to_dict()["inner"]  # the manifest keeps every field
    set_ = DemoLater(lr=0.01, day=3, inner=InnerLater(width=4, shift=(0.5, 0.0)))
    assert set_.key_dict()["day"] == 3 and set_.key_dict()["inner"]["shift"] == [0.5, 0.0]
