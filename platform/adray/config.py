"""Frozen, typed configs: YAML only overrides defaults, unknown keys are an error.

Every workload declares one ``@dataclass(frozen=True)`` subclass of :class:`Config` with a
docstring line per field and validation in ``__post_init__``. This module turns YAML files and
``--set key=value`` overrides into such an instance, checking names and types, and back into a
plain dict (saved beside every checkpoint).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import yaml


class ConfigError(ValueError):
    """A user-facing config mistake: names the source, the key and what was expected."""


T = TypeVar("T", bound="Config")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every workload config. Subclasses are frozen dataclasses with defaults."""

    KEY_OPTIONAL: ClassVar[tuple[str, ...]] = ()
    """Fields added after datasets, runs and sweeps were named by a hash of this config: at their
    default they are left out of :meth:`key_dict`, so what was made before they existed keeps its
    name (a generated dataset is found again, not made again). Set, they enter the key."""

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> Self:
        return _build(cls, data, source)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def key_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` less the :attr:`KEY_OPTIONAL` fields that are at their default (nested
        configs alike): what names are hashed from (data_dir_for, run and sweep names)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self.KEY_OPTIONAL and value == _default(f):
                continue
            out[f.name] = value.key_dict() if isinstance(value, Config) else _to_plain(value)
        return out

    def override(self, data: dict[str, Any], source: str = "<overrides>") -> Self:
        """A copy with ``data`` (possibly dotted keys for nested configs) applied on top."""
        merged = _deep_merge(self.to_dict(), _undot(data, source, type(self)))
        return type(self).from_dict(merged, source)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def check(cond: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``cond`` (for ``__post_init__``)."""
    if not cond:
        raise ConfigError(message)


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """Parse ``["a.b=1", "c=[1,2]"]`` from ``--set`` into ``{"a.b": 1, "c": [1, 2]}`` (YAML values)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: invalid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of field: value at top level")
    return data


def load_config(
    cls: type[T],
    name_or_file: str | None,
    configs_dir: Path,
    overrides: dict[str, Any] | None = None,
) -> T:
    """Resolve a config: defaults <- ``configs_dir/NAME.yaml`` (or a YAML file path) <- overrides.

    A named config may start with ``base: OTHER`` to inherit another named config.
    """
    cfg = cls()
    if name_or_file:
        data, source = _read_named(name_or_file, configs_dir)
        cfg = cfg.override(data, source)
    if overrides:
        cfg = cfg.override(overrides, "--set")
    return cfg


def available_configs(configs_dir: Path) -> list[str]:
    return sorted(p.stem for p in configs_dir.glob("*.yaml"))


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------- internals


def _read_named(name_or_file: str, configs_dir: Path, depth: int = 0) -> tuple[dict[str, Any], str]:
    path = Path(name_or_file)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = configs_dir / f"{name_or_file}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown config {name_or_file!r}: not a YAML file and not one of "
                f"{available_configs(configs_dir)} in {configs_dir}"
            )
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is not None:
        if depth > 5:
            raise ConfigError(f"config {path}: 'base' chain too deep")
        base_data, _ = _read_named(str(base), configs_dir, depth + 1)
        data = _deep_merge(base_data, data)
    return data, str(path)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _undot(data: dict[str, Any], source: str, cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: key {key!r} conflicts with another override")
        node[parts[-1]] = value
    return out


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type[T], data: dict[str, Any], source: str, prefix: str = "") -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    names = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {[prefix + k for k in unknown]} for {cls.__name__}; "
            f"valid keys: {sorted(names)}"
        )
    hints = _hints(cls)
    kwargs = {k: _coerce(v, hints[k], source, prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        return _build(tp, value, source, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, source, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{source}: {key}={value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key}={value!r}; expected one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key}={value!r}; expected a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{source}: {key}={value!r}; expected {len(args)} items")
            return tuple(_coerce(v, a, source, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}={value!r}; expected a mapping")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key}={value!r}; expected true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{source}: {key}={value!r}; expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key}={value!r}; expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key}={value!r}; expected a string")
        return value
    return value


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj
