"""The feed graph's composition (no Ray): auction and GSP prices, fallbacks, pacing, channel gate, log row."""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa
import pytest

from adray.pacing import Ledger, LocalLedgerClient, PacingSettings
from serve_apps.feed_graph import FeedGraph, GraphSettings
from serve_apps.feed_log import log_schema
from tests.unit.ledger_sim import SimLedger
from workloads.drlput import columns as C
from workloads.drlput.policy import UtilityPolicy

LOG_SCHEMA_ = log_schema(UtilityPolicy)

K, D = 4, 2


class FakeStage:
    def __init__(self, ref: str, fn: Any, delay_s: float = 0.0) -> None:
        self.ref, self.fn, self.delay_s, self.calls = ref, fn, delay_s, 0

    async def decide(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return [self.fn(r) for r in requests]


class FakeLedger:
    """Budgets enforced as the real ledger does (tests/unit/test_pacing.py covers that one)."""

    def __init__(self, budget: float) -> None:
        self.budget, self.spent, self.events, self.keys, self.voids = budget, {}, [], [], []

    async def views(self, specs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        hist = {k: [0.0] for k in ("rows", "bid_sum", "pvalue_sum", "wins", "cost", "conversions", "lwc_sum", "alpha")}
        return {s["advertiser"]: {"day": 0, "step": 0, "steps": 8, "budget": self.budget,
                                  "spent": self.spent.get(s["advertiser"], 0.0),
                                  "remaining": self.budget - self.spent.get(s["advertiser"], 0.0),
                                  "cpa_constraint": s["cpa_constraint"], "task": s["task"], "history": hist}
                for s in specs}

    async def settle(self, events: list[dict[str, Any]], key: str | None = None) -> list[bool]:
        self.keys.append(key)
        out = []
        for e in events:
            self.events.append(e)
            spent = self.spent.get(e["advertiser"], 0.0)
            ok = not e["won"] or spent + e["price"] <= self.budget
            if e["won"] and ok:
                self.spent[e["advertiser"]] = spent + e["price"]
            out.append(ok)
        return out

    async def void(self, key: str) -> dict[str, Any]:
        self.voids.append(key)
        return {"key": key, "state": "tombstone", "refunded": 0.0}


def ranking(req: dict[str, Any]) -> dict[str, Any]:
    return {"request_id": req["request_id"], "model": "pwiser@v0001",
            "scores": [{"ad_id": c["ad_id"], "pctr": c["ctr"], "pcvr": 0.5, "pctcvr": c["ctr"] * 0.5}
                       for c in req["candidates"]]}


def utility(weights: tuple[float, ...]) -> Any:
    return lambda req: {"request_id": req["request_id"], "action": 3, "propensity": 0.9, "model": "drlput@v0001",
                        **dict(zip(("w_click", "w_long", "w_conv", "reserve"), weights, strict=True))}


def allocation(slots: list[bool]) -> Any:
    return lambda req: {"request_id": req["request_id"], "model": "crossdqn@v0001",
                        "action": sum(1 << i for i, b in enumerate(slots) if b), "ad_slots": slots, "q": []}


def bidding(req: dict[str, Any]) -> dict[str, Any]:
    return {"request_id": req["request_id"], "model": "vamo@v0001", "alpha": 2.0 * req["cpa_constraint"], "ratio": 2.0}


def request(ads: list[tuple[str, str, float | None, float]], organic: int = 4) -> dict[str, Any]:
    """ads: (ad_id, campaign, bid, ctr); auto ads get budget via the ledger, cpa 1."""
    state = {c: 0 for c in C.CAT_FEATURES} | {c: 0.1 for c in C.NUM_FEATURES}
    return {"request_id": "r1", "user": {"user_id": "u1", "utility_state": state, "journey": None,
                                         "profile": [1.0, 0.5, 0.1, 1.0], "history": [[0.1] * D]},
            "screen": [0.0, 1.0, 1.0, 0.0],
            "ads": [{"ad_id": a, "advertiser": f"adv-{a}", "campaign": camp, "bid": bid,
                     "auto": {"budget": 1.0, "cpa_constraint": 1.0, "task": 0} if camp == "auto" else None,
                     "features": {"ctr": ctr}, "content": [0.2] * D, "value": 2.0, "p_long": 0.0}
                    for a, camp, bid, ctr in ads],
            "organic": [{"item_id": f"o{i}", "content": [0.3] * D, "value": 1.0} for i in range(organic)]}


def graph(**stages: Any) -> FeedGraph:
    base = {"ranking": FakeStage("pwiser@v0001", ranking), "utility": FakeStage("drlput@v0001", utility((0, 0, 0, 0.01))),
            "allocation": FakeStage("crossdqn@v0001", allocation([True, False, True, True])),
            "bidding": FakeStage("vamo@v0001", bidding), "channel": None}
    ledger = stages.pop("ledger", FakeLedger(budget=10.0))
    settings = stages.pop("settings", GraphSettings(window=K, stage_timeout_s=0.5, manual_weights=(0, 0, 0, 0.05),
                                                    fixed_ad_slots=(1,)))
    clock = stages.pop("clock", lambda: 1000.0)
    return FeedGraph({**base, **stages}, ledger, settings, PacingSettings(steps_per_day=8, day_seconds=800.0), clock)


def decide(g: FeedGraph, req: dict[str, Any]) -> Any:
    return asyncio.run(g.decide(req))


def test_gsp_prices_on_hand_computed_utilities() -> None:
    # bids x ctr: a 1.0*0.2 = 0.20, b 2.0*0.05 = 0.10, c 0.5*0.1 = 0.05, d 0.1*0.05 = 0.005 (< reserve 0.01)
    g = graph(utility=FakeStage("drlput@v0001", utility((0.0, 0.0, 0.0, 0.01))))
    out = decide(g, request([("a", "fixed", 1.0, 0.2), ("b", "fixed", 2.0, 0.05), ("c", "fixed", 0.5, 0.1),
                             ("d", "fixed", 0.1, 0.05)]))
    ads = [s for s in out.answer["feed"] if s["kind"] == "ad"]
    assert [s["id"] for s in ads] == ["a", "b", "c"]  # slots 0, 2, 3 show ads; d is below the reserve
    # with zero weights U = ecpm, so GSP: each pays the next one's ecpm, the last the reserve
    assert [s["price"] for s in ads] == pytest.approx([0.10, 0.05, 0.01])
    assert [s["kind"] for s in out.answer["feed"]] == ["ad", "organic", "ad", "ad"]
    assert out.answer["fallbacks"] == {"channel": "not deployed"}


def test_price_with_weights_keeps_rank_and_stays_between_reserve_and_ecpm() -> None:
    g = graph(utility=FakeStage("drlput@v0001", utility((1.0, 0.0, 0.2, 0.01))))
    out = decide(g, request([("a", "fixed", 1.0, 0.2), ("b", "fixed", 2.0, 0.05), ("c", "fixed", 0.6, 0.1)]))
    ecpm = {"a": 0.2, "b": 0.1, "c": 0.06}
    u = {"a": 0.2 + 0.2 + 0.1, "b": 0.1 + 0.05 + 0.1, "c": 0.06 + 0.1 + 0.1}  # ecpm + w_click pctr + w_conv pcvr
    ads = [s for s in out.answer["feed"] if s["kind"] == "ad"]
    assert [s["id"] for s in ads] == ["a", "c", "b"]  # by U: a 0.5, c 0.26, b 0.25 (b has the higher ecpm)
    # a: ecpm - (U_a - U_c) = 0.2 - 0.24 < reserve -> 0.01; c: 0.06 - (0.26 - 0.25) = 0.05; b last: reserve
    assert [s["price"] for s in ads] == pytest.approx([0.01, 0.05, 0.01])
    assert ads[1]["price"] == pytest.approx(ecpm["c"] - (u["c"] - u["b"]))
    for s in ads:
        assert 0.01 - 1e-12 <= s["price"] <= ecpm[s["id"]] + 1e-12


def test_every_stage_failing_still_serves_the_defaults() -> None:
    def boom(req: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("model exploded")

    g = graph(ranking=FakeStage("pwiser@v0001", boom), utility=FakeStage("drlput@v0001", boom),
              allocation=FakeStage("crossdqn@v0001", boom), bidding=FakeStage("vamo@v0001", lambda r: boom(r)))
    out = decide(g, request([("a", "fixed", 10.0, 0.3), ("b", "auto", None, 0.3)]))
    fb = out.answer["fallbacks"]
    assert set(fb) == {"ranking", "utility", "allocation", "bidding", "channel"}
    assert "model exploded" in fb["ranking"]
    assert out.answer["utility"] == {"w_click": 0.0, "w_long": 0.0, "w_conv": 0.0, "reserve": 0.05}
    # fixed slot 1 only; pctr fallback 0.01: a 10*0.01 = 0.1 >= reserve; b alpha = 1 x cpa 1, 1*0.01*0.05 < reserve
    assert [(s["kind"], s["id"]) for s in out.answer["feed"]] == [("organic", "o0"), ("ad", "a"), ("organic", "o1"),
                                                                    ("organic", "o2")]
    assert out.answer["models"] == {}
    assert out.answer["bids"] == {"adv-b": 1.0}


def test_a_slow_stage_times_out_and_falls_back() -> None:
    g = graph(allocation=FakeStage("crossdqn@v0001", allocation([True] * K), delay_s=2.0))
    out = decide(g, request([("a", "fixed", 1.0, 0.2)]))
    assert out.answer["fallbacks"]["allocation"].startswith("timed out")
    assert [s["kind"] for s in out.answer["feed"]] == ["organic", "ad", "organic", "organic"]
    assert out.answer["latency_ms"]["allocation"] < 2000  # cut at the 0.5 s timeout, not the stage's 2 s


def test_budget_spent_ads_give_their_slot_to_organic_and_never_overspend() -> None:
    ledger = FakeLedger(budget=0.025)
    g = graph(ledger=ledger, allocation=FakeStage("crossdqn@v0001", allocation([True, True, False, False])))
    shown = []
    for _ in range(4):
        out = decide(g, request([("x", "auto", None, 0.4), ("y", "fixed", 1.0, 0.02)]))
        shown.append([s["id"] for s in out.answer["feed"]])
    # x: alpha 2 x pctcvr 0.2 = ecpm 0.4 > y's 0.02: first, priced at y's ecpm 0.02. One charge fits the
    # budget of 0.025; the second is refused (0.04 > 0.025): its slot shows organic, y keeps slot 1.
    assert shown[0] == ["x", "y", "o0", "o1"]
    assert shown[1] == ["o0", "y", "o1", "o2"]
    assert shown[2] == ["y", "o0", "o1", "o2"]  # x sits out the rest of the step: y is the top ad
    assert ledger.spent["adv-x"] == pytest.approx(0.02)
    assert all(e["price"] <= e["bid"] for e in ledger.events)


def test_alpha_is_decided_once_per_decision_step() -> None:
    now = [1000.0]  # day 1, step 2 of 8 (100 s a step)
    bid = FakeStage("vamo@v0001", bidding)
    g = graph(bidding=bid, clock=lambda: now[0])
    for _ in range(3):
        out = decide(g, request([("x", "auto", None, 0.4), ("y", "fixed", 1.0, 0.02)]))
        assert out.answer["bids"] == {"adv-x": 2.0}
    assert bid.calls == 1 and "pacing" not in out.answer["latency_ms"]  # later requests: no ledger view
    now[0] += 100.0  # the next step: the ledger is asked and the model decides again
    decide(g, request([("x", "auto", None, 0.4)]))
    assert bid.calls == 2


def test_concurrent_requests_at_a_step_start_share_one_decision() -> None:
    bid = FakeStage("vamo@v0001", bidding, delay_s=0.05)
    g = graph(bidding=bid)

    async def many() -> list[Any]:
        return await asyncio.gather(*(g.decide(request([("x", "auto", None, 0.4)])) for _ in range(5)))

    outs = asyncio.run(many())
    assert bid.calls == 1 and all(o.answer["bids"] == {"adv-x": 2.0} for o in outs)


def test_no_ledger_means_no_auto_bidding_ads() -> None:
    g = graph(ledger=None)
    out = decide(g, request([("x", "auto", None, 0.9), ("y", "fixed", 1.0, 0.2)]))
    assert [s["id"] for s in out.answer["feed"] if s["kind"] == "ad"] == ["y"]
    assert "auto-bidding ads not shown" in out.answer["fallbacks"]["pacing"]


def test_channel_gate_removes_ads_when_another_channel_is_chosen() -> None:
    chan = FakeStage("mtorl@v0001", lambda r: {"request_id": r["request_id"], "model": "mtorl@v0001", "channel": 2,
                                               "propensity": 0.7, "probs": [0.1, 0.2, 0.7], "predicted_reward": 0.0})
    req = request([("a", "fixed", 1.0, 0.2)])
    req["user"]["journey"] = {"states": [[0.0]], "channels": [], "gains": [], "costs": []}
    out = decide(graph(channel=chan, settings=GraphSettings(window=K, feed_channel=0, fixed_ad_slots=(1,))), req)
    assert all(s["kind"] == "organic" for s in out.answer["feed"])
    assert out.answer["decisions"]["channel"] == {"action": 2, "propensity": 0.7, "gated_ads": True}
    out = decide(graph(channel=chan), req)  # no gate configured: the decision is reported only
    assert any(s["kind"] == "ad" for s in out.answer["feed"])


def test_log_row_has_drlput_columns_and_fits_the_schema() -> None:
    out = decide(graph(), request([("a", "fixed", 1.0, 0.2), ("b", "auto", None, 0.3)]))
    table = pa.Table.from_pylist([out.row], schema=LOG_SCHEMA_)
    row = table.to_pylist()[0]
    assert row[C.ACTION] == 3 and row[C.PROPENSITY] == pytest.approx(0.9)
    assert row[C.POLICY_ID] == "drlput@v0001" and row[C.REVENUE] is None
    assert row["feed_ids"] == [s["id"] for s in out.answer["feed"]]
    assert len(row["alloc_obs"]) == 4 + D + 2 * K * (D + 3) + 4


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="fixed_ad_slots"):
        GraphSettings(window=3, fixed_ad_slots=(5,))
    with pytest.raises(ValueError, match="manual_weights"):
        GraphSettings(manual_weights=(1.0,))  # type: ignore[arg-type]


def test_local_stage_decides_concurrent_calls_in_one_batch() -> None:
    from serve_apps.feed_batching import LocalStage

    class Handle:
        ref = "m"
        calls: list[int] = []

        def decide(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
            self.calls.append(len(requests))
            return [{"echo": r["i"]} for r in requests]

    stage = LocalStage(Handle(), batch_wait_s=0.02, max_batch=16)

    async def many() -> list[Any]:
        return await asyncio.gather(*(stage.decide([{"i": i}, {"i": i + 100}]) for i in range(3)))

    assert asyncio.run(many()) == [[{"echo": i}, {"echo": i + 100}] for i in range(3)]
    assert Handle.calls == [6]  # three feed requests, one decide call


# ------------------------------------------------------------------ billing: what is shown is what is charged
def audited_ledger() -> Ledger:
    """The real ledger (in memory, audit journal on), on the graph's clock and pacing day."""
    return Ledger(None, "test", PacingSettings(steps_per_day=8, day_seconds=800.0), clock=lambda: 1000.0, audit=True)


def standing(ledger: Ledger) -> list[tuple[str, float]]:
    """Every grant that stands (not voided), sorted."""
    return sorted((a, round(p, 9)) for rec in ledger.journal().values() if not rec["void"] for a, p in rec["grants"])


FIVE_AUTO = [("x", "auto", None, 0.9), ("y", "auto", None, 0.8), ("z", "auto", None, 0.7), ("w", "auto", None, 0.6),
             ("v", "auto", None, 0.5)]  # ecpm = alpha 2 x pctcvr (ctr x 0.5) = ctr; GSP price = the next ecpm


@pytest.mark.parametrize(("organic", "feed"), [
    (0, ["y", "z", "w"]),  # the old re-mix filled x's position with v, never charged
    (1, ["o0", "y", "z"]),  # x, o0, y, z -> o0 moves up into x's position
    (2, ["o0", "o1", "y"]),  # x, o0, o1, y -> organic items move up into x's position, none left for o1's
])
def test_a_refused_ad_frees_its_position_for_organic_items_never_for_an_uncharged_ad(organic: int,
                                                                                      feed: list[str]) -> None:
    ledger = audited_ledger()
    g = graph(ledger=LocalLedgerClient(ledger), allocation=FakeStage("crossdqn@v0001", allocation([True, False, False, False])))
    req = request(FIVE_AUTO, organic=organic)
    req["ads"][0]["auto"]["budget"] = 0.5  # x's price 0.8 (y's ecpm) passes it: refused
    out = decide(g, req)
    assert [s["id"] for s in out.answer["feed"]] == feed
    assert [s["position"] for s in out.answer["feed"]] == list(range(len(feed)))
    shown = sorted((s["advertiser"], round(s["price"], 9)) for s in out.answer["feed"] if s["kind"] == "ad")
    assert shown == standing(ledger)  # exactly the charged ads, once each
    assert out.answer["decisions"]["allocation"]["ad_slots"] == [False, False, False, False]


@pytest.mark.parametrize(("fault", "ordered", "state"), [
    ("slow", True, "refunded"),  # ran after the graph gave up; the void (sent after it) refunds it
    ("late", False, "tombstone"),  # the void overtook it: it grants nothing when it comes
    ("fail_after", True, "refunded"),  # ran, the reply was lost
    ("fail_before", True, "tombstone"),  # never reached the ledger
])
def test_a_settle_without_an_answer_shows_no_ad_and_bills_none(fault: str, ordered: bool, state: str) -> None:
    ledger = audited_ledger()
    sim = SimLedger(ledger, faults={"settle": [fault]}, ordered=ordered, slow_s=0.2)
    g = graph(ledger=sim.client("replica"), settings=GraphSettings(window=K, stage_timeout_s=0.05, fixed_ad_slots=(1,),
                                                                   manual_weights=(0, 0, 0, 0.01)))

    async def run() -> tuple[Any, Any]:
        first = await g.decide(request([("x", "auto", None, 0.4), ("y", "fixed", 1.0, 0.02)], organic=1))
        await g.drain()
        await sim.idle()
        second = await g.decide({**request([("x", "auto", None, 0.4)], organic=1), "request_id": "r2"})
        await sim.idle()
        sim.close()
        return first.answer, second.answer

    first, second = asyncio.run(run())
    assert [s["id"] for s in first["feed"]] == ["o0", "y"]  # x's position: the organic item, then the fixed ad
    assert "settle failed" in first["fallbacks"]["pacing"]
    journal = ledger.journal()
    assert [rec for key, rec in journal.items() if key.endswith(":r1")] == [
        {"grants": [["adv-x", pytest.approx(0.02)]] if state == "refunded" else [], "void": True,
         "ran": state == "refunded", "day": 1}]
    assert ledger.stats()["voids" if state == "refunded" else "tombstones"] == 1
    # a failed settle is no refusal: x is not benched for the step, its next request is shown and billed
    assert [s["id"] for s in second["feed"] if s["kind"] == "ad"] == ["x"]
    assert standing(ledger) == [("adv-x", 0.01)] and ledger.accounts["adv-x"]["spent"] == pytest.approx(0.01)


def test_a_request_cancelled_during_its_settle_bills_nothing() -> None:
    ledger = audited_ledger()
    sim = SimLedger(ledger, faults={"settle": ["slow"]}, slow_s=0.1)
    g = graph(ledger=sim.client("replica"))

    async def run() -> None:
        task = asyncio.get_running_loop().create_task(g.decide(request([("x", "auto", None, 0.4)])))
        while not sim._running:  # the settle holds the ledger now
            await asyncio.sleep(0.001)
        task.cancel()  # the client went away: Serve cancels the request
        with pytest.raises(asyncio.CancelledError):
            await task
        await g.drain()
        await sim.idle()
        sim.close()

    asyncio.run(run())
    assert standing(ledger) == [] and ledger.stats()["voids"] == 1
    assert ledger.accounts["adv-x"]["spent"] == 0.0
