"""adray.dict_schema: a model's dict twin validates as the model does, straight into dicts.

The property that matters: for any body, the twin's answer is the model's ``model_dump()`` and its
errors are the model's (same type and location). Checked on a small model family that uses every
feature the twin mirrors, and on the feed's real FeedRequest (the five policies' schemas) with the
mutated bodies of the feed fuzz test.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adray.dict_schema import dict_adapter, on_dicts
from tests.unit import feed_world as W

STRICT = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)


class Auto(pydantic.BaseModel):
    model_config = STRICT
    budget: float = pydantic.Field(gt=0, le=100)
    task: int = 0


def _pair(self: Any) -> Any:  # written for the model: attribute access (the twin's AttrView path)
    if (self.kind == "auto") != (self.auto is not None):
        raise ValueError("auto goes with kind 'auto'")
    return self


def _distinct(items: list[dict[str, Any]]) -> None:
    ids = [i["id"] for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"ids repeat: {ids}")


class Item(pydantic.BaseModel):
    model_config = STRICT
    id: str = pydantic.Field(min_length=1)
    kind: Literal["fixed", "auto"]
    auto: Auto | None = None
    vec: list[Annotated[float, pydantic.Field(ge=-1e3, le=1e3)]] = pydantic.Field(default_factory=list)
    weight: float = 0.5

    _pair = pydantic.model_validator(mode="after")(_pair)


class Body(pydantic.BaseModel):
    model_config = STRICT
    request_id: str
    items: list[Item] = pydantic.Field(min_length=1, max_length=3)
    tags: dict[str, Any] | None = None
    grid: list[list[int]] = pydantic.Field(default_factory=list)

    _distinct = pydantic.field_validator("items")(on_dicts(_distinct))


SAME = {"model_type": "dict_type"}
"""A non-object where an object belongs: the model says model_type, the twin dict_type."""


def outcome(model: type[pydantic.BaseModel], raw: str) -> tuple[str, Any]:
    """("ok", dump) or ("error", [(type, loc)...]) from the model itself."""
    try:
        return "ok", model.model_validate_json(raw).model_dump()
    except pydantic.ValidationError as exc:
        return "error", [(SAME.get(e["type"], e["type"]), tuple(e["loc"])) for e in exc.errors()]


def twin_outcome(adapter: pydantic.TypeAdapter[Any], raw: str) -> tuple[str, Any]:
    try:
        return "ok", adapter.validate_json(raw)
    except pydantic.ValidationError as exc:
        return "error", [(e["type"], tuple(e["loc"])) for e in exc.errors()]


CASES = [
    {"request_id": "r", "items": [{"id": "a", "kind": "fixed"}]},
    {"request_id": "r", "items": [{"id": "a", "kind": "auto", "auto": {"budget": 5}, "vec": [1, 2.5]}],
     "tags": {"x": [1, {"y": None}]}, "grid": [[1, 2], []]},
    {"request_id": "r", "items": [{"id": "a", "kind": "auto"}]},  # model validator (AttrView)
    {"request_id": "r", "items": [{"id": "a", "kind": "fixed"}, {"id": "a", "kind": "fixed"}]},  # on_dicts
    {"request_id": "r", "items": [{"id": "a", "kind": "fixed", "extra": 1}]},  # extra forbidden
    {"request_id": "r", "items": [{"id": "", "kind": "other"}]},
    {"request_id": "r", "items": [{"id": "a", "kind": "auto", "auto": {"budget": 0}}]},
    {"request_id": "r", "items": [{"id": "a", "kind": "fixed", "vec": [1e4]}]},
    {"request_id": "r", "items": []},
    {"request_id": "r", "items": [{"id": "a", "kind": "fixed"}] * 4},
    {"items": [{"id": "a", "kind": "fixed", "weight": "x"}]},
    {"request_id": "r", "items": [{"id": "a", "kind": "fixed"}], "grid": [[1.5]]},
]


@pytest.mark.parametrize("body", CASES, ids=range(len(CASES)))
def test_the_twin_answers_what_the_model_dumps_and_refuses_what_it_refuses(body: dict[str, Any]) -> None:
    raw = json.dumps(body)
    assert twin_outcome(dict_adapter(Body), raw) == outcome(Body, raw)


def test_nan_and_broken_json_are_refused_alike() -> None:
    adapter = dict_adapter(Body)
    for raw in ('{"request_id": "r", "items": [{"id": "a", "kind": "fixed", "weight": NaN}]}', '{"request_id": ',
                "[]", "null"):
        assert twin_outcome(adapter, raw) == outcome(Body, raw), raw


def test_defaults_are_fresh_per_answer() -> None:
    adapter = dict_adapter(Body)
    a = adapter.validate_json('{"request_id": "r", "items": [{"id": "a", "kind": "fixed"}]}')
    a["grid"].append([1])
    b = adapter.validate_json('{"request_id": "r", "items": [{"id": "a", "kind": "fixed"}]}')
    assert b["grid"] == [] and b["items"][0]["vec"] == []


def test_validators_that_are_not_after_checks_are_refused() -> None:
    class Before(pydantic.BaseModel):
        x: int

        @pydantic.field_validator("x", mode="before")
        @classmethod
        def _strip(cls, v: Any) -> Any:
            return v

    with pytest.raises(TypeError, match="'before' field validator"):
        dict_adapter(Before)

    class WithInfo(pydantic.BaseModel):
        x: int

        @pydantic.field_validator("x")
        @classmethod
        def _check(cls, v: Any, info: pydantic.ValidationInfo) -> Any:
            return v

    with pytest.raises(TypeError, match="ValidationInfo"):
        dict_adapter(WithInfo)


@st.composite
def feed_bodies(draw: Any) -> str:
    body = W.body(n_ads=draw(st.integers(1, 6)), n_organic=draw(st.integers(0, 4)), journey=draw(st.booleans()))
    return W.mutated(draw, body)


@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=feed_bodies())
def test_the_feed_request_twin_agrees_with_the_model_on_mutated_bodies(raw: str) -> None:
    model = W.feed_request()
    assert twin_outcome(dict_adapter(model), raw) == outcome(model, raw)
