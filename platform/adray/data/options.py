"""Options of one importer: ``adray data import FORMAT FILE... --option KEY=VALUE``.

An importer is ``(files, out_dir, cfg, *, key=default, ...) -> None``. Its keyword-only parameters
are its options: what an import may do beyond taking the files as they are (simulate what the files
lack, map a column to tasks). They are not training settings, so they are not config fields; each
has a default that adds nothing, and the importer records in the manifest what an option made it do.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from adray.config import ConfigError

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def importer_options(importer: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The options an importer takes (its keyword-only parameters), by name."""
    try:
        sig = inspect.signature(importer, eval_str=True)
    except (NameError, TypeError):
        sig = inspect.signature(importer)
    return {n: p for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def describe_options(importer: Callable[..., Any]) -> str:
    opts = importer_options(importer)
    return ", ".join(f"{n} ({_type_name(p.annotation)}, default {p.default!r})" for n, p in opts.items()) or "none"


def parse_options(importer: Callable[..., Any], fmt: str, items: Sequence[str] | None) -> dict[str, Any]:
    """``["simulate_outcomes=true"]`` -> ``{"simulate_outcomes": True}``, typed by the importer's signature.

    Raises:
        ConfigError: an item without ``=``, a key the importer does not take (naming the ones it
            does), the same key twice, or a value of the wrong type.
    """
    opts = importer_options(importer)
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key not in opts:
            raise ConfigError(f"--option {item!r}: {fmt} has no option {key!r}; its options: {describe_options(importer)}")
        if key in out:
            raise ConfigError(f"--option {key}: given twice")
        out[key] = _coerce(raw, opts[key].annotation, f"--option {item!r}")
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(raw: str, tp: Any, where: str) -> Any:
    if tp is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"{where}: expected true or false")
    if tp in (int, float):
        try:
            value = tp(raw)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise ConfigError(f"{where}: expected {'an integer' if tp is int else 'a finite number'}")
        return value
    return raw
