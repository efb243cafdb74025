"""Fuzz of ``POST /v1/feed`` in process (issue 20): malformed and extreme bodies through the
ingress's own parsing (``parse_feed``: the FeedRequest of the five real policies' schemas, the
item_dim check) and, when they validate, the FeedGraph with the five real policies and the real
ledger (tests/unit/feed_world.py). Every body is answered: a 422 whose every error names its field
under ``body``, or an answer that is valid JSON (no NaN/Infinity), validates as a FeedResponse,
and whose decision-log row is finite and fits the log's schema; the last guard
(``repair_nonfinite``) never has anything to do; and a clean request after each one still gets
every model (a bad request leaves no state behind that breaks a later one).

Bodies: a valid request (1-6 ads over three advertisers, 0-4 organic items, with or without a
journey) with 0-4 mutations (a value anywhere set to an extreme float, int, string, null, list or
object, or to an ordinary value of its type; a key deleted or an unknown one added; a list item
duplicated), sometimes cut short as raw bytes. A second property skips the ingress and sends type-preserving extreme numbers
straight to the graph: the graph's own guards (stage answers checked, unusable advertisers kept
from the ledger, the last guard) keep answers and log rows finite there too.

Deterministic (``derandomize``): the same examples on every run. ``ADRAY_FUZZ_EXAMPLES=N`` runs
N random ones instead (a longer hunt).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from serve_apps.feed_ingress import parse_feed
from serve_apps.feed_log import log_schema
from serve_apps.feed_schema import FeedResponse
from tests.unit import feed_world as W
from workloads.drlput.policy import UtilityPolicy

LOG_SCHEMA_ = log_schema(UtilityPolicy)
HUNT = int(os.environ.get("ADRAY_FUZZ_EXAMPLES", "0"))
DOOR_EXAMPLES, GRAPH_EXAMPLES = (HUNT, HUNT // 2) if HUNT else (300, 100)
SETTINGS = {"deadline": None, "database": None, "derandomize": not HUNT,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


@st.composite
def raw_bodies(draw: Any) -> str:
    body = W.body(n_ads=draw(st.integers(1, 6)), n_organic=draw(st.integers(0, 4)), journey=draw(st.booleans()))
    return W.mutated(draw, body)


@st.composite
def graph_bodies(draw: Any) -> dict[str, Any]:
    """A validated body whose numbers (only) are then set to extremes of the same type. Not the
    utility state's categoricals: they are logged as int32 columns, and an id past int32 costs its
    log row (DecisionLog counts it as rejected); the door bounds them to their cardinality."""
    body, _ = _parse(json.dumps(W.body(n_ads=draw(st.integers(1, 6)), n_organic=draw(st.integers(0, 4)))))
    state = body["user"]["utility_state"]
    slots = [(p, k) for p, k in W.slots(body) if type(p[k]) in (int, float) and not (p is state and type(p[k]) is int)]
    for _ in range(draw(st.integers(1, 4))):
        parent, key = draw(st.sampled_from(slots))
        parent[key] = draw(st.sampled_from(W.EXTREME_INTS if type(parent[key]) is int else W.EXTREME_FLOATS))
    return body


def _parse(raw: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    return parse_feed(W.feed_request(), raw, W.metas()["allocation"]["obs_layout"]["item_dim"])


def _check_answer(out: Any) -> None:
    text = json.dumps(out.answer, allow_nan=False)  # raises on NaN / inf
    FeedResponse.model_validate_json(text)
    assert W.finite(out.row), out.row
    pa.Table.from_pylist([out.row], schema=LOG_SCHEMA_)


def test_every_feed_body_gets_a_named_422_or_a_finite_answer_and_log_row() -> None:
    graph = W.graph()  # one graph and ledger for every example: state carries over, as in serving
    clean, _ = _parse(json.dumps(W.body(n_ads=3, journey=False)))
    seen = {"examples": 0, "refused": 0}

    @settings(max_examples=DOOR_EXAMPLES, **SETTINGS)
    @given(raw_bodies())
    def door(raw: str) -> None:
        seen["examples"] += 1
        req, detail = _parse(raw)
        if req is None:
            seen["refused"] += 1
            assert detail and all(d["loc"][0] == "body" and isinstance(d["msg"], str) and d["msg"] for d in detail)
            json.dumps(detail, allow_nan=False)
            event(f"422 {detail[0]['type']}")
            return
        out = asyncio.run(graph.decide(req))
        _check_answer(out)
        for stage in out.answer["fallbacks"]:
            event(f"200 fallback {stage.split(':')[0]}")
        assert graph.counters["nonfinite_repaired"] == 0, out.row
        after = asyncio.run(graph.decide({**clean, "request_id": f"clean-{seen['examples']}"}))
        assert set(after.answer["fallbacks"]) <= {"channel"}, after.answer["fallbacks"]  # no journey: skipped

    door()
    print(f"feed fuzz: {seen['examples']} bodies, {seen['refused']} refused (422), "
          f"{seen['examples'] - seen['refused']} answered; counters {graph.counters}")
    assert 0 < seen["refused"] < seen["examples"]  # some bodies are refused at the door, some get through to the graph


def test_the_graph_alone_keeps_answers_and_log_rows_finite_for_extreme_numbers() -> None:
    graph = W.graph()

    @settings(max_examples=GRAPH_EXAMPLES, **SETTINGS)
    @given(graph_bodies())
    def past_the_door(body: dict[str, Any]) -> None:
        out = asyncio.run(graph.decide(body))
        _check_answer(out)

    past_the_door()
    print(f"graph fuzz: counters {graph.counters}")
