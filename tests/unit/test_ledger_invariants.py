"""Property tests (Hypothesis) of what the ledger bills: every feed answer shows exactly the
auto-bidding ads whose charges stand, once each, and no advertiser's spend passes its budget.

Random screens (0..K+1 organic items, 0..6 ads of three advertisers, any allocation), tiny budgets
(so any subset of charges is refused), ledger calls that are slow past the graph's timeout (and
run after it gave up), fail before running or lose their reply, in Ray's order or not, and two
graph replicas racing on the same advertisers, some requests cancelled mid-way. The ledger is the
real ``adray.pacing.Ledger`` behind ``tests.unit.ledger_sim.SimLedger``. Then a second property:
random settles, voids and crashes (reload from storage) never lose a bill nor pass a budget.

Examples: ``EXAMPLES`` per property in the default run (derandomized: the same examples each run);
``slow`` runs ``SLOW_EXAMPLES`` fresh random ones. Each test prints how many ran.
"""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from adray.pacing import Ledger, PacingSettings
from adray.storage import Storage
from serve_apps.feed_graph import FeedGraph, GraphSettings
from tests.unit.ledger_sim import FAULTS, SimLedger, check_billing, check_feed
from tests.unit.test_feed_graph import FakeStage, bidding, ranking, utility

K = 4
ADVERTISERS = ("a", "b", "c")
NOW = 1000.0
PACING = PacingSettings(steps_per_day=8, day_seconds=800.0, reserve_block=0.25)
TIMEOUT_S, SLOW_S = 0.004, 0.008
EXAMPLES, SLOW_EXAMPLES = 150, 3000
FAST = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=SLOW_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_ad = st.tuples(st.sampled_from(("auto", "auto", "fixed")), st.sampled_from(ADVERTISERS),
                st.sampled_from((0.02, 0.05, 0.1, 0.3, 0.6)), st.sampled_from((0.5, 1.0, 2.0)))
_screen = st.fixed_dictionaries({
    "ads": st.lists(_ad, max_size=6),
    "organic": st.integers(0, K + 1),
    "slots": st.lists(st.booleans(), min_size=K, max_size=K),
    "replica": st.integers(0, 1),
    "start_ms": st.sampled_from((0.0, 0.0, 1.0, 3.0)),
    "cancel_ms": st.sampled_from((None,) * 9 + (0.0, 2.0, 6.0)),
})
SCENARIOS = st.fixed_dictionaries({
    "screens": st.lists(_screen, min_size=1, max_size=6),
    "budgets": st.fixed_dictionaries({a: st.sampled_from((0.01, 0.04, 0.1, 0.25, 100.0)) for a in ADVERTISERS}),
    "faults": st.fixed_dictionaries({"views": st.lists(st.sampled_from(FAULTS), max_size=4),
                                     "settle": st.lists(st.sampled_from(FAULTS), max_size=8),
                                     "void": st.lists(st.sampled_from(FAULTS), max_size=3)}),
    "ordered": st.booleans(),
    "reserve": st.sampled_from((0.0, 0.01, 0.05)),
    "seed": st.integers(0, 2**16),
})


def feed_request(i: int, screen: dict[str, Any], budgets: dict[str, float]) -> dict[str, Any]:
    """Ranking sees ``ctr``; an auto ad's ecpm is alpha 2 x pctcvr (ctr x 0.5) = ctr, a fixed one's bid x ctr."""
    ads = [{"ad_id": f"ad{k}", "advertiser": adv, "campaign": camp, "bid": bid if camp == "fixed" else None,
            "auto": {"budget": budgets[adv], "cpa_constraint": 1.0, "task": 0} if camp == "auto" else None,
            "features": {"ctr": ctr}, "content": [0.2, 0.2], "value": 2.0, "p_long": 0.0}
           for k, (camp, adv, ctr, bid) in enumerate(screen["ads"])]
    return {"request_id": f"r{i}", "user": {"user_id": "u", "utility_state": {}, "journey": None,
                                            "profile": [1.0, 0.5, 0.1, 1.0], "history": [[0.1, 0.1]]},
            "screen": [0.0] * K, "ads": ads,
            "organic": [{"item_id": f"o{j}", "content": [0.3, 0.3], "value": 1.0} for j in range(screen["organic"])]}


def graphs(sim: SimLedger, slots: dict[str, list[bool]], reserve: float) -> list[FeedGraph]:
    def allocate(req: dict[str, Any]) -> dict[str, Any]:
        s = slots[req["request_id"]]
        return {"request_id": req["request_id"], "action": sum(1 << i for i, b in enumerate(s) if b), "ad_slots": s}

    settings_ = GraphSettings(window=K, stage_timeout_s=TIMEOUT_S, manual_weights=(0, 0, 0, reserve), fixed_ad_slots=(1,))
    out = []
    for i in range(2):  # two replicas: their own stages and alpha caches, one ledger
        stages = {"ranking": FakeStage("pwiser@v1", ranking), "utility": FakeStage("drlput@v1", utility((0, 0, 0, reserve))),
                  "allocation": FakeStage("crossdqn@v1", allocate), "bidding": FakeStage("vamo@v1", bidding),
                  "channel": None}
        out.append(FeedGraph(stages, sim.client(f"replica{i}"), settings_, PACING, clock=lambda: NOW, graph_id=f"g{i}"))
    return out


async def play(sc: dict[str, Any]) -> tuple[list[tuple[dict[str, Any], dict[str, Any] | None]], Ledger, SimLedger,
                                           list[FeedGraph]]:
    ledger = Ledger(None, "sim", PACING, clock=lambda: NOW, audit=True)
    sim = SimLedger(ledger, faults={m: list(f) for m, f in sc["faults"].items()}, rng=random.Random(sc["seed"]), ordered=sc["ordered"],
                    slow_s=SLOW_S)
    reqs = [feed_request(i, s, sc["budgets"]) for i, s in enumerate(sc["screens"])]
    slots = {r["request_id"]: s["slots"] for r, s in zip(reqs, sc["screens"], strict=True)}
    gs = graphs(sim, slots, sc["reserve"])

    async def one(screen: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(screen["start_ms"] / 1e3)
        return (await gs[screen["replica"]].decide(req)).answer

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(one(s, r)) for s, r in zip(sc["screens"], reqs, strict=True)]
    for s, t in zip(sc["screens"], tasks, strict=True):
        if s["cancel_ms"] is not None:  # the client went away: Serve cancels the request
            loop.call_later(s["start_ms"] / 1e3 + s["cancel_ms"] / 1e3, t.cancel)
    done = await asyncio.gather(*tasks, return_exceptions=True)
    for d in done:
        if isinstance(d, BaseException) and not isinstance(d, asyncio.CancelledError):
            raise d
    for _ in range(2):  # voids in flight, then every call still queued (late settles), then again
        for g in gs:
            await g.drain()
        await sim.idle()
    sim.close()
    pairs = [(r, d if isinstance(d, dict) else None) for r, d in zip(reqs, done, strict=True)]
    return pairs, ledger, sim, gs


RUNS: dict[str, int] = {}


def _scenario_holds(sc: dict[str, Any], counter: str) -> None:
    RUNS[counter] = RUNS.get(counter, 0) + 1
    pairs, ledger, sim, gs = asyncio.run(play(sc))
    for req, answer in pairs:
        if answer is not None:
            check_feed(req, answer, K)
    check_billing(pairs, ledger, dict(sc["budgets"]))
    assert all(g.counters["void_failures"] == 0 for g in gs)
    voided = sum(g.counters["voids"] for g in gs)
    assert voided == sum(g.counters["settle_failures"] for g in gs)  # every failed settle was voided
    assert voided == ledger.voids + ledger.tombstones
    # what the example exercised (pytest --hypothesis-show-statistics)
    for name, hit in (("a charge refused", ledger.refused > 0), ("a settle failed or timed out", voided > 0),
                      ("a voided settle refunded", ledger.refunded > 0), ("a void before its settle", ledger.tombstones > 0),
                      ("a settle ran after its void", ledger.late_settles > 0),
                      ("a request cancelled", any(a is None for _, a in pairs)),
                      ("a refusal on a screen without organic items",
                       ledger.refused > 0 and any(not r["organic"] for r, _ in pairs))):
        if hit:
            event(name)


@FAST
@given(SCENARIOS)
def test_every_answer_shows_exactly_the_ads_it_bills(sc: dict[str, Any]) -> None:
    _scenario_holds(sc, "graph")


@pytest.mark.slow
@SLOW
@given(SCENARIOS)
def test_every_answer_shows_exactly_the_ads_it_bills_many(sc: dict[str, Any]) -> None:
    _scenario_holds(sc, "graph-slow")


# ------------------------------------------------------------------ crashes and voids on storage
_OP = st.one_of(
    st.tuples(st.just("settle"), st.sampled_from(ADVERTISERS), st.lists(st.sampled_from((0.05, 0.2, 0.7, 1.5)),
                                                                         min_size=1, max_size=3)),
    st.tuples(st.just("void"), st.integers(0, 40)),
    st.tuples(st.just("void_unsent"), st.sampled_from(ADVERTISERS), st.lists(st.just(0.5), min_size=1, max_size=2)),
    st.tuples(st.just("crash")),
    st.tuples(st.just("tick"), st.sampled_from((0.3, 1.5))),
)


def _restarts_hold(ops: list[tuple[Any, ...]], budget: float, tmp: Path) -> None:
    RUNS["restarts"] = RUNS.get("restarts", 0) + 1
    clock = [NOW]
    settings_ = PacingSettings(steps_per_day=8, day_seconds=800.0, reserve_block=0.1, snapshot_every_s=1.0)

    def start() -> Ledger:
        led = Ledger(Storage(tmp), "pacing/prop", settings_, clock=lambda: clock[0], audit=True)
        led.views([{"advertiser": a, "budget": budget, "cpa_constraint": 1.0, "task": 0} for a in ADVERTISERS])
        return led

    led, life = start(), 0
    bills: list[tuple[str, float, str, int]] = []  # grants not voided: (advertiser, price, key, incarnation)
    keys: list[tuple[str, int]] = []
    refunded_since_start = {a: 0.0 for a in ADVERTISERS}
    for n, op in enumerate(ops):
        if op[0] == "settle" or op[0] == "void_unsent":
            key = f"k{n}"
            if op[0] == "void_unsent":  # the caller gave up before the ledger saw it: void first
                assert led.void(key)["state"] == "tombstone"
            events = [{"advertiser": op[1], "alpha": 1.0, "bid": p, "pvalue": 0.1, "won": True, "price": p,
                       "lwc": p, "conversions": 0.1} for p in op[2]]
            granted = led.settle(events, key)
            assert led.settle(events, key) == granted  # a repeat charges nothing more
            if op[0] == "void_unsent":
                assert not any(granted)
            bills += [(op[1], p, key, life) for p, ok in zip(op[2], granted, strict=True) if ok]
            keys.append((key, life))
        elif op[0] == "void" and keys:
            key, born = keys[op[1] % len(keys)]
            out = led.void(key)
            if born == life:  # same incarnation: its grants are refunded (once)
                refund = [b for b in bills if b[2] == key]
                assert out["refunded"] == pytest.approx(sum(b[1] for b in refund))
                for b in refund:
                    refunded_since_start[b[0]] += b[1]
            else:  # the old grant is inside the reservation the restart counted: nothing to refund
                assert out["refunded"] == 0.0
            bills = [b for b in bills if b[2] != key]
        elif op[0] == "crash":
            spent_before = {a: led.accounts[a]["spent"] for a in ADVERTISERS}
            led, life = start(), life + 1
            for a in ADVERTISERS:
                after = led.accounts[a]["spent"]
                # a reservation of at most one block (+ what was refunded since the last ceiling write)
                assert after <= spent_before[a] + settings_.reserve_block * budget + refunded_since_start[a] + 1e-9
            refunded_since_start = {a: 0.0 for a in ADVERTISERS}
        elif op[0] == "tick":
            clock[0] += op[1]
        for a in ADVERTISERS:
            billed = math.fsum(b[1] for b in bills if b[0] == a)
            spent = led.accounts[a]["spent"]
            assert billed <= spent + 1e-9, f"{a}: bills {billed} exceed the ledger's spend {spent}"
            assert spent <= budget + 1e-9, f"{a}: spend {spent} passes the budget {budget}"


@FAST
@given(ops=st.lists(_OP, max_size=40), budget=st.sampled_from((1.0, 3.0, 10.0)))
def test_settles_voids_and_crashes_never_lose_a_bill_nor_pass_a_budget(ops: list[tuple[Any, ...]], budget: float,
                                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    _restarts_hold(ops, budget, tmp_path_factory.mktemp("ledger"))


def test_report_examples_run() -> None:
    """Runs after the properties above (file order): prints how many examples they ran."""
    print(f"\n[ledger invariants] examples run: {RUNS}")
