"""The feed door (issue 20): what cannot be true is a 422 naming the field; what the models map
without refusing is counted; one advertiser's state never breaks another's decision; no non-finite
number reaches an answer or the decision log. No Ray: the five real policies in process
(tests/unit/feed_world.py), the ingress's own parsing (``parse_feed``) and the real ledger."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from adray.bounds import MAX_BID, MAX_BUDGET, MAX_CPA
from serve_apps.feed_graph import FeedGraph
from serve_apps.feed_ingress import parse_feed
from serve_apps.feed_log import log_schema, repair_nonfinite
from serve_apps.feed_schema import FeedResponse
from tests.unit import feed_world as W
from workloads.drlput.policy import UtilityPolicy

LOG_SCHEMA_ = log_schema(UtilityPolicy)


def at(*path: Any) -> Callable[[Any], Callable[[dict[str, Any]], None]]:
    """A mutation setting ``body[path...] = value``."""
    def with_value(value: Any) -> Callable[[dict[str, Any]], None]:
        def mutate(body: dict[str, Any]) -> None:
            node = body
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
        return mutate
    return with_value


def every_auto(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        for ad in body["ads"]:
            if ad["auto"] is not None:
                ad["auto"][name] = value
    return mutate


def parse(body: dict[str, Any] | str) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    raw = body if isinstance(body, str) else json.dumps(body)
    return parse_feed(W.feed_request(), raw, W.metas()["allocation"]["obs_layout"]["item_dim"])


def decide(g: FeedGraph, req: dict[str, Any]) -> Any:
    return asyncio.run(g.decide(req))


# (case, mutation of a valid body, the 422's loc, a fragment of its message)
REFUSED = [
    ("fixed bid 1e308", at("ads", 0, "bid")(1e308), ["ads", 0, "bid"], f"less than or equal to {MAX_BID:g}"),
    ("fixed bid inf", at("ads", 0, "bid")(math.inf), ["ads", 0, "bid"], "finite number"),
    ("fixed bid NaN", at("ads", 0, "bid")(math.nan), ["ads", 0, "bid"], "finite number"),
    ("fixed bid 0", at("ads", 0, "bid")(0.0), ["ads", 0, "bid"], "greater than 0"),
    ("budget 1e308", at("ads", 1, "auto", "budget")(1e308), ["ads", 1, "auto", "budget"],
     f"less than or equal to {MAX_BUDGET:.0f}"),
    ("CPA 1e308", at("ads", 1, "auto", "cpa_constraint")(1e308), ["ads", 1, "auto", "cpa_constraint"],
     f"less than or equal to {MAX_CPA:.0f}"),
    ("CPA -inf", at("ads", 1, "auto", "cpa_constraint")(-math.inf), ["ads", 1, "auto", "cpa_constraint"],
     "finite number"),
    ("task 3", every_auto("task", 3), ["ads", 1, "auto", "task"],
     "task 3 is outside the bidding model's tasks 0..2 (0 = gmv, 1 = dir_gmv, 2 = cart)"),
    ("task 10**12", every_auto("task", 10**12), ["ads", 1, "auto", "task"],
     "task 1000000000000 is outside the bidding model's tasks 0..2"),
    ("task -1", every_auto("task", -1), ["ads", 1, "auto", "task"], "outside the bidding model's tasks 0..2"),
    ("ranking categorical 10**30", at("ads", 0, "features", "user_id")(10**30), ["ads", 0, "features", "user_id"],
     "is not a 64-bit integer id"),
    ("ranking categorical -10**30", at("ads", 2, "features", "item_id")(-10**30), ["ads", 2, "features", "item_id"],
     "is not a 64-bit integer id"),
    ("ranking numeric 1e39", at("ads", 0, "features", "price")(1e39), ["ads", 0, "features", "price"],
     "past float32"),
    ("utility categorical 10**30", at("user", "utility_state", "hour")(10**30), ["user", "utility_state", "hour"],
     "less than 24"),
    ("utility spend 1e308", at("user", "utility_state", "hist_spend")(1e308), ["user", "utility_state", "hist_spend"],
     "less than or equal to 1000000000"),
    ("journey channel 10**30", at("user", "journey", "channels", 0)(10**30), ["user", "journey", "channels", 0],
     "less than 3"),
    ("journey cost 1e308", at("user", "journey", "costs", 0)(1e308), ["user", "journey", "costs", 0],
     "less than or equal to 1000000000"),
    ("content 1e39", at("ads", 0, "content", 1)(1e39), ["ads", 0, "content", 1], "past float32"),
    ("value 1e308", at("organic", 0, "value")(1e308), ["organic", 0, "value"], "past float32"),
    ("duplicate ad_id", at("ads", 3, "ad_id")("a1"), ["ads"], "ads[3].ad_id 'a1' repeats ads[1]"),
    ("duplicate item_id", at("organic", 2, "item_id")("o0"), ["organic"], "organic[2].item_id 'o0' repeats organic[0]"),
    ("fixed ad with auto", at("ads", 0, "auto")({"budget": 5.0, "cpa_constraint": 1.0, "task": 0}), ["ads", 0],
     "a fixed-bid ad carries auto"),
    ("auto ad with bid", at("ads", 1, "bid")(1.0), ["ads", 1], "an auto-bidding ad carries bid"),
    ("two budgets", at("ads", 4, "auto", "budget")(20.0), ["ads"],
     "ads[4].auto.budget 20.0 differs from ads[1].auto.budget 50.0 of the same advertiser 'adv1'"),
    ("two CPAs", at("ads", 4, "auto", "cpa_constraint")(3.0), ["ads"],
     "ads[4].auto.cpa_constraint 3.0 differs from ads[1].auto.cpa_constraint 2.0"),
    ("two tasks", at("ads", 4, "auto", "task")(2), ["ads"], "ads[4].auto.task 2 differs from ads[1].auto.task 1"),
]


@pytest.mark.parametrize(("case", "mutate", "loc", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_what_cannot_be_true_is_a_422_naming_the_field(case: str, mutate: Any, loc: list[Any], message: str) -> None:
    body = W.body()
    mutate(body)
    raw = json.dumps(body)  # inf and NaN as the JSON tokens Infinity and NaN, which the parser reads
    req, detail = parse(raw)
    assert req is None, case
    assert ["body", *loc] in [d["loc"] for d in detail], detail
    assert any(message in d["msg"] for d in detail if d["loc"] == ["body", *loc]), detail


def test_the_bounds_are_inclusive_and_stated_in_the_schema() -> None:
    body = W.body()
    body["ads"][0]["bid"] = MAX_BID
    for ad in body["ads"]:
        if ad["auto"]:
            ad["auto"].update(budget=MAX_BUDGET, cpa_constraint=MAX_CPA, task=2)
    req, detail = parse(body)
    assert detail is None and req is not None
    schema = W.feed_request().model_json_schema()
    defs = schema["$defs"]
    assert defs["FeedAd"]["properties"]["bid"]["anyOf"][0]["maximum"] == MAX_BID
    assert defs["AutoBidding"]["properties"]["budget"]["maximum"] == MAX_BUDGET
    assert defs["AutoBidding"]["properties"]["cpa_constraint"]["maximum"] == MAX_CPA
    assert defs["AutoBidding"]["properties"]["task"]["maximum"] == 2
    assert "ledger currency units" in defs["AutoBidding"]["properties"]["budget"]["description"]


def test_out_of_vocabulary_ids_are_served_as_unknown_and_counted_per_column() -> None:
    body = W.body(n_ads=4)
    body["ads"][0]["features"]["user_id"] = -7  # negative
    body["ads"][1]["features"]["user_id"] = 50  # vocab_size 50: ids 0..49
    body["ads"][2]["features"]["item_id"] = 2**63 - 1
    req, _ = parse(body)
    g = W.graph()
    out = decide(g, req)
    want = {"out_of_vocab": {"ranking": {"user_id": 2, "item_id": 1}}}
    assert out.answer["diagnostics"] == want and "ranking" not in out.answer["fallbacks"]
    assert json.loads(out.row["diagnostics"]) == want
    pa.Table.from_pylist([out.row], schema=LOG_SCHEMA_)
    assert g.out_of_vocab == {"ranking.user_id": 2, "ranking.item_id": 1} and g.counters["out_of_vocab"] == 3
    # scored exactly as the unknown id 0
    same = W.body(n_ads=4)
    same["ads"][0]["features"]["user_id"] = same["ads"][1]["features"]["user_id"] = 0
    same["ads"][2]["features"]["item_id"] = 0
    clean = decide(W.graph(), parse(same)[0])
    assert clean.answer["diagnostics"] == {} and clean.row["diagnostics"] is None
    assert [s.get("pctr") for s in out.answer["feed"]] == [s.get("pctr") for s in clean.answer["feed"]]


def two_auto_advertisers() -> dict[str, Any]:
    """adv1 (task 1) and adv2 (task 0) bid automatically; adv0 fixed."""
    body = W.body(n_ads=6)
    for ad in body["ads"]:
        if ad["advertiser"] == "adv2":
            ad.update(campaign="auto", bid=None, auto={"budget": 40.0, "cpa_constraint": 1.5, "task": 0})
    return body


def test_a_bad_task_held_by_the_ledger_costs_only_its_advertiser_the_model() -> None:
    """The issue's case: the ledger holds task 7 for adv1 today (registered under another model);
    every later request used to lose the bidding model for all its advertisers (IndexError)."""
    led = W.ledger()
    led.views([{"advertiser": "adv1", "budget": 50.0, "cpa_constraint": 2.0, "task": 7}])
    req, _ = parse(two_auto_advertisers())
    for _ in range(2):  # and again: nothing is poisoned for later requests
        g = W.graph(led)
        out = decide(g, req)
        fb = out.answer["fallbacks"]
        assert "bidding" not in fb and out.answer["models"]["bidding"] == "vamo@v0001", fb
        assert "bidding:adv1" in fb and "task 7" in fb["bidding:adv1"] and "0..2" in fb["bidding:adv1"]
        assert out.answer["bids"]["adv1"] == 1.0 * 2.0  # fallback alpha = ratio x CPA
        alone = W.world()["bidding"][0].decide([g.bid_request(
            led.views([{"advertiser": "adv2", "budget": 40.0, "cpa_constraint": 1.5, "task": 0}])["adv2"]["history"],
            40.0, 1.5, 0, W.STEPS)])[0]["alpha"]
        assert out.answer["bids"]["adv2"] == pytest.approx(alone)  # the model's own alpha
        assert g.counters["advertiser_fallbacks"] == 1


def test_the_graph_never_registers_a_task_the_model_cannot_use() -> None:
    """A caller that skips the ingress: the advertiser is not sent to the ledger, its ads are not
    shown, and the other advertiser is decided by the model."""
    led = W.ledger()
    req, _ = parse(two_auto_advertisers())
    for ad in req["ads"]:
        if ad["advertiser"] == "adv1":
            ad["auto"]["task"] = 3
    out = decide(W.graph(led), req)
    fb = out.answer["fallbacks"]
    assert "task 3 is outside the bidding model's tasks 0..2" in fb["pacing:adv1"] and "bidding" not in fb
    assert "adv1" not in led.accounts and "adv1" not in out.answer["bids"]
    assert "adv2" in led.accounts and "adv2" in out.answer["bids"]
    assert all(s.get("advertiser") != "adv1" for s in out.answer["feed"])


def test_one_advertiser_whose_bidding_call_raises_falls_back_alone() -> None:
    policy = W.world()["bidding"][0]

    class Picky:
        ref, calls = "vamo@v0001", []

        async def decide(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
            self.calls.append(len(requests))
            if any(r["request_id"].endswith(":adv1") for r in requests):
                raise IndexError("index 7 is out of range")
            return policy.decide(requests)

    stage = Picky()
    req, _ = parse(two_auto_advertisers())
    out = decide(W.graph(bidding=stage), req)
    fb = out.answer["fallbacks"]
    assert fb.get("bidding:adv1") == "IndexError: index 7 is out of range" and "bidding" not in fb
    assert stage.calls == [2, 1, 1]  # the batch, then each advertiser alone
    assert out.answer["bids"]["adv1"] == 2.0 and out.answer["models"]["bidding"] == "vamo@v0001"


def test_one_request_that_breaks_a_batched_stage_fails_only_itself() -> None:
    """Ranking micro-batched across concurrent feed requests (batch_wait_s > 0): a request the
    policy cannot encode (an id past int64, given past the ingress) fails the batch; the others
    are decided again alone and keep the model."""
    stage = W.local_stage(W.world()["ranking"][0], batch_wait_s=0.05)
    g = W.graph(ranking=stage)
    good, _ = parse(W.body())
    bad = json.loads(json.dumps(good))
    bad["request_id"], bad["ads"][0]["features"]["user_id"] = "feed-bad", 10**30

    async def both() -> list[Any]:
        return await asyncio.gather(g.decide(good), g.decide(bad))

    ok, broken = asyncio.run(both())
    assert "ranking" not in ok.answer["fallbacks"] and ok.answer["models"]["ranking"] == "pwiser@v0001"
    assert broken.answer["fallbacks"]["ranking"].startswith("OverflowError")


@pytest.mark.parametrize("role", ["ranking", "utility", "allocation", "channel", "bidding"])
def test_a_stage_answering_a_non_finite_number_falls_back(role: str) -> None:
    policy = W.world()[role][0]
    spoil = {"ranking": lambda a: a["scores"][0].update(pctr=math.nan),
             "utility": lambda a: a.update(reserve=math.inf),
             "allocation": lambda a: a["q"].__setitem__(0, math.nan),
             "channel": lambda a: a.update(propensity=math.nan),
             "bidding": lambda a: a.update(alpha=math.inf) if a["request_id"].endswith(":adv1") else None}[role]

    class Spoilt:
        ref = policy.ref

        async def decide(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
            answers = policy.decide(requests)
            for a in answers:
                spoil(a)
            return answers

    req, _ = parse(two_auto_advertisers())
    g = W.graph(**{role: Spoilt()})
    out = decide(g, req)
    key = "bidding:adv1" if role == "bidding" else role
    assert out.answer["fallbacks"][key].startswith("non-finite answer"), out.answer["fallbacks"]
    assert W.finite(out.answer) and W.finite(out.row)
    json.dumps(out.answer, allow_nan=False)
    FeedResponse.model_validate(out.answer)
    pa.Table.from_pylist([out.row], schema=LOG_SCHEMA_)
    assert g.counters["nonfinite_repaired"] == 0  # the stage check caught it; the last guard had nothing to do


def test_the_last_guard_writes_a_non_finite_value_as_null_and_names_it() -> None:
    row = {"bid": math.inf, "feed_prices": [0.1, math.nan], "x": {"y": -math.inf}, "n": 3, "s": "inf"}
    assert repair_nonfinite(row) == ["bid", "feed_prices[1]", "x.y"]
    assert row == {"bid": None, "feed_prices": [0.1, None], "x": {"y": None}, "n": 3, "s": "inf"}
    # in the graph: a body past the ingress with bids of 1e308 puts ecpm = 1e308 x pCTR into the
    # allocation model's float32 observation (inf), which the log row would hold
    req, _ = parse(W.body())
    req["ads"][0]["bid"] = req["ads"][2]["bid"] = 1e308
    g = W.graph()
    out = decide(g, req)
    assert W.finite(out.answer) and W.finite(out.row)
    json.dumps(out.answer, allow_nan=False)
    pa.Table.from_pylist([out.row], schema=LOG_SCHEMA_)
    repaired = json.loads(out.row["diagnostics"])["nonfinite"]
    assert repaired and all(p.startswith("alloc_obs[") for p in repaired)
    assert g.counters["nonfinite_repaired"] == len(repaired)
