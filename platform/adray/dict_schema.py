"""A pydantic model's twin that validates JSON straight into plain dicts.

A serving door validates a request against a generated ``BaseModel`` and hands the stages
``model_dump()``: pydantic builds a model instance per nested object, then a dict per instance
again. For the feed's 48 KB request (50 ads, 20 organic items, ~2,000 numbers) that was 0.59 ms a
request in process, ~20% of a feed replica's event-loop time under load (``py-spy --gil``).
:func:`dict_adapter` mirrors the model as ``TypedDict`` classes with the same fields, constraints,
defaults and config, so pydantic-core validates into dicts in one pass (the model itself stays what
FastAPI documents).

The twin keeps every check: field types and constraints (``Field``/``Annotated`` metadata), the
model config (``extra="forbid"``, ``allow_inf_nan``), defaults (filled, as ``model_dump`` has them),
and the model's ``after`` validators, model-level and field-level. A validator made by
:func:`on_dicts` runs its check on the validated dicts directly; any other runs on an attribute view
of them (``self.ads``, ``ad.auto.budget``: written for the model, ~5x slower per access). Twin
validators may only check (raise ``ValueError``); what they return is ignored. A model with
``before``/``wrap``/``plain`` validators or computed fields is refused (its twin would not be the same
validation). One difference in what an error says: a non-object where an object belongs is
``dict_type`` ("Input should be a valid dictionary"), where the model says ``model_type``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, NotRequired, Union

import pydantic
from pydantic.fields import FieldInfo
from typing_extensions import TypedDict


def dict_adapter(model: type[pydantic.BaseModel]) -> pydantic.TypeAdapter[Any]:
    """A TypeAdapter whose ``validate_json``/``validate_python`` return what
    ``model.model_validate_json(...).model_dump()`` returns, with the same errors."""
    return pydantic.TypeAdapter(_twin(model, {}))


def on_dicts(check: Callable[[Any], None]) -> Callable[[Any], Any]:
    """An ``after`` validator (model- or field-level) that runs ``check`` on the value as plain data
    (models dumped to dicts) and returns the value; the twin runs ``check`` on its dicts as they are."""

    def validator(value: Any) -> Any:
        check(_dump(value))
        return value

    validator.dict_check = check  # type: ignore[attr-defined]
    return validator


def _dump(v: Any) -> Any:
    if isinstance(v, pydantic.BaseModel):
        return v.model_dump()
    if isinstance(v, list):
        return [_dump(x) for x in v]
    return v


class AttrView:
    """Attribute access to a validated dict (nested dicts and lists of dicts viewed alike), for the
    model's validators."""

    __slots__ = ("_d",)

    def __init__(self, d: dict[str, Any]) -> None:
        self._d = d

    def __getattr__(self, name: str) -> Any:
        try:
            return _view(self._d[name])
        except KeyError:
            raise AttributeError(name) from None


def _view(v: Any) -> Any:
    if isinstance(v, dict):
        return AttrView(v)
    if isinstance(v, list) and v and isinstance(v[0], dict):
        return [_view(x) for x in v]
    return v


def _twin(model: type[pydantic.BaseModel], done: dict[type, Any]) -> Any:
    if model in done:
        return done[model]
    decorators = model.__pydantic_decorators__
    if decorators.computed_fields or decorators.root_validators or decorators.field_serializers or \
            decorators.model_serializers:
        raise TypeError(f"{model.__name__}: computed fields, root validators or serializers have no dict twin")
    field_checks: dict[str, list[Any]] = {}
    for dec in decorators.field_validators.values():
        if dec.info.mode != "after":
            raise TypeError(f"{model.__name__}: a {dec.info.mode!r} field validator has no dict twin")
        for name in dec.info.fields:
            field_checks.setdefault(name, []).append(_field_check(dec.func))
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        ann = Annotated[(_convert(info.annotation, done), *info.metadata, _plain(info),  # type: ignore[misc]
                         *field_checks.pop(name, []))]
        fields[name] = ann if info.is_required() else NotRequired[ann]  # type: ignore[valid-type]
    if field_checks:
        raise TypeError(f"{model.__name__}: validators of unknown fields {sorted(field_checks)}")
    td = TypedDict(model.__name__, fields)  # type: ignore[operator]
    td.__pydantic_config__ = model.model_config  # type: ignore[attr-defined]
    checks = []
    for dec in decorators.model_validators.values():
        if dec.info.mode != "after":
            raise TypeError(f"{model.__name__}: a {dec.info.mode!r} model validator has no dict twin")
        checks.append(_model_check(dec.func))
    out = Annotated[(td, *checks)] if checks else td  # type: ignore[valid-type]
    done[model] = out
    return out


def _plain(info: FieldInfo) -> FieldInfo:
    """The field's default, alias and description (its constraints travel as metadata)."""
    kw: dict[str, Any] = {"description": info.description}
    if info.default_factory is not None:
        kw["default_factory"] = info.default_factory
    elif not info.is_required():
        kw["default"] = info.default
    if info.alias is not None:
        kw["alias"] = info.alias
    return pydantic.Field(**kw)


def _convert(ann: Any, done: dict[type, Any]) -> Any:
    """``ann`` with every BaseModel inside it replaced by its twin."""
    if isinstance(ann, type) and issubclass(ann, pydantic.BaseModel):
        return _twin(ann, done)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is None or not args or origin is Literal:
        return ann
    if origin is Annotated:
        return Annotated[(_convert(args[0], done), *ann.__metadata__)]  # type: ignore[misc]
    conv = tuple(_convert(a, done) for a in args)
    if origin in (Union, types.UnionType):
        return Union[conv]  # noqa: UP007 - built from a tuple
    if origin in (list, tuple, dict, set, frozenset):
        return origin[conv]
    raise TypeError(f"{ann!r}: no dict twin for {origin!r}")


def _model_check(func: Any) -> Any:
    direct = getattr(func, "dict_check", None)

    def check(d: dict[str, Any]) -> dict[str, Any]:
        direct(d) if direct is not None else func(AttrView(d))
        return d

    return pydantic.AfterValidator(check)


def _field_check(func: Any) -> Any:
    import inspect

    call = getattr(func, "__func__", func)  # a classmethod's function: (cls, value) or (value)
    takes_cls = call is not func
    direct = getattr(call, "dict_check", None)
    if direct is None and len(inspect.signature(call).parameters) != 1 + takes_cls:
        raise TypeError(f"field validator {call.__qualname__}: only (value) or (cls, value) have a dict twin "
                        f"(one taking ValidationInfo does not)")

    def check(v: Any) -> Any:
        if direct is not None:
            direct(v)
        else:
            call(None, _view(v)) if takes_cls else call(_view(v))
        return v

    return pydantic.AfterValidator(check)
