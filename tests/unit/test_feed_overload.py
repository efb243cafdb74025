"""The feed graph under load: admission (deadline, in-flight limit, 503 + Retry-After), waves that
batch the stage calls of concurrent requests, settles coalesced into one ledger call, and a graph
that starts no work past a request's deadline and bills nothing for it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from adray.pacing import _PacingActor
from serve_apps.feed_admission import DEADLINE_KEY, STEP, Admission
from serve_apps.feed_batching import LocalStage, Waves
from serve_apps.feed_graph import DEADLINE
from serve_apps.feed_ingress import ActorLedger, parse_feed
from tests.unit import feed_world as W


# ------------------------------------------------------------------ admission
class Inner:
    """An ASGI app that records each request's deadline and waits until released."""

    def __init__(self) -> None:
        self.deadlines: list[float] = []
        self.release = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/v1/feed":
            self.deadlines.append(scope["state"][DEADLINE_KEY])
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def call(app: Any, headers: dict[str, str] | None = None, path: str = "/v1/feed") -> dict[str, Any]:
    """One request through ``app``: ``{"status", "headers", "body"}``."""
    out: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"], out["headers"] = msg["status"], dict(msg["headers"])
        else:
            out["body"] = msg["body"]

    scope = {"type": "http", "path": path, "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()]}
    await app(scope, receive, send)
    return out


def test_an_admitted_request_carries_its_deadline_default_or_from_its_header() -> None:
    async def run() -> list[float]:
        inner = Inner()
        inner.release.set()
        app = Admission(inner, deadline_ms=100.0)
        t0 = time.perf_counter()
        await call(app)
        await call(app, {"x-deadline-ms": "250"})
        return [d - t0 for d in inner.deadlines]

    first, second = asyncio.run(run())
    assert 0.09 < first <= 0.101 and 0.24 < second <= 0.251


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "10001"])
def test_a_deadline_header_that_is_not_a_number_of_ms_is_a_422_naming_it(value: str) -> None:
    inner = Inner()
    out = asyncio.run(call(Admission(inner), {"x-deadline-ms": value}))
    assert out["status"] == 422 and inner.deadlines == []
    detail = json.loads(out["body"])["detail"][0]
    assert detail["loc"] == ["header", "x-deadline-ms"] and "milliseconds" in detail["msg"]


def test_a_request_whose_deadline_passed_upstream_is_shed_at_once_with_retry_after() -> None:
    reasons: list[str] = []
    inner = Inner()
    app = Admission(inner, deadline_ms=100.0, retry_after_s=2, on_shed=reasons.append)
    stamped = f"t={(time.time() - 0.2) * 1e3:.0f}"  # ms, as HAProxy stamps it: queued 200 ms upstream
    t0 = time.perf_counter()
    out = asyncio.run(call(app, {"x-request-start": stamped}))
    assert time.perf_counter() - t0 < 0.05
    assert out["status"] == 503 and out["headers"][b"retry-after"] == b"2"
    assert json.loads(out["body"])["shed"] == "deadline" and reasons == ["deadline"] and inner.deadlines == []
    free = Inner()
    free.release.set()
    fresh = asyncio.run(call(Admission(free, 100.0), {"x-request-start": "garbage"}))
    assert fresh["status"] == 200  # an unreadable stamp is no reason to refuse a request


def test_requests_past_the_in_flight_limit_are_shed_and_the_rest_answered() -> None:
    async def run() -> tuple[list[int], dict[str, int], int]:
        inner = Inner()
        app = Admission(inner, max_in_flight=2)
        held = [asyncio.ensure_future(call(app)) for _ in range(2)]
        await asyncio.sleep(0.01)
        over = await call(app)
        health = await call(app, path="/healthz")  # other routes are never shed
        inner.release.set()
        done = await asyncio.gather(*held)
        after = await call(app)
        return [o["status"] for o in [*done, over, after]], app.shed, health["status"]

    statuses, shed, health = asyncio.run(run())
    assert statuses == [200, 200, 503, 200] and shed == {"deadline": 0, "overload": 1} and health == 200


def test_with_a_wait_requests_over_the_limit_take_freed_slots_in_arrival_order() -> None:
    """Behind a gate (admission_wait_ms): over the limit, a request waits for a slot instead of being
    shed; slots go first come first served, and one that arrives meanwhile cannot jump the queue."""
    async def run() -> tuple[list[int], list[str], dict[str, int], int, int]:
        order: list[str] = []

        class Named(Inner):
            async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
                order.append(dict(scope["headers"])[b"x-name"].decode())
                await super().__call__(scope, receive, send)

        inner = Named()
        app = Admission(inner, max_in_flight=1, wait_ms=500.0)
        first = asyncio.ensure_future(call(app, {"x-name": "a"}))
        await asyncio.sleep(0.01)
        waiting = [asyncio.ensure_future(call(app, {"x-name": n})) for n in ("b", "c")]
        await asyncio.sleep(0.01)
        held = (app.in_flight, app.waiting)
        inner.release.set()  # a finishes; b is given its slot before anything else runs
        late = asyncio.ensure_future(call(app, {"x-name": "d"}))
        done = await asyncio.gather(first, *waiting, late)
        return [o["status"] for o in done], order, app.shed, app.waited, held

    statuses, order, shed, waited, held = asyncio.run(run())
    assert statuses == [200, 200, 200, 200] and order == ["a", "b", "c", "d"]
    assert shed == {"deadline": 0, "overload": 0} and waited == 3 and held == (1, 2)  # b, c and d


def test_a_request_that_waits_longer_than_the_wait_or_its_deadline_is_shed_overload() -> None:
    async def run() -> tuple[list[int], list[float], dict[str, int], int, int]:
        inner = Inner()
        app = Admission(inner, deadline_ms=100.0, max_in_flight=1, wait_ms=30.0)
        held = asyncio.ensure_future(call(app))
        await asyncio.sleep(0.01)
        took = []
        for headers in ({}, {"x-deadline-ms": "10"}):  # the wait (30 ms), then the deadline (10 ms) ends it
            t0 = time.perf_counter()
            out = await call(app, headers)
            took.append(time.perf_counter() - t0)
            assert out["status"] == 503 and json.loads(out["body"])["shed"] == "overload"
        inner.release.set()
        await held
        return [(await held)["status"]], took, app.shed, app.in_flight, app.waiting

    statuses, took, shed, in_flight, waiting = asyncio.run(run())
    assert statuses == [200] and shed == {"deadline": 0, "overload": 2} and (in_flight, waiting) == (0, 0)
    assert 0.025 < took[0] < 0.2 and 0.005 < took[1] < 0.025


def test_a_waiting_request_that_goes_away_gives_back_the_slot_it_was_given() -> None:
    async def run() -> tuple[int, int, int]:
        inner = Inner()
        app = Admission(inner, max_in_flight=1, wait_ms=500.0)
        first = asyncio.ensure_future(call(app))
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(call(app))
        await asyncio.sleep(0.01)
        app.limit = 2.0
        app._wake()  # a slot is given to `gone` (counted in in_flight) ...
        gone.cancel()  # ... which goes away before it runs again
        with pytest.raises(asyncio.CancelledError):
            await gone
        in_flight = app.in_flight
        inner.release.set()
        await first
        return in_flight, app.in_flight, app.waiting

    during, after, waiting = asyncio.run(run())
    assert (during, after, waiting) == (1, 0, 0)


def test_the_limit_falls_when_answers_run_late_and_climbs_back_when_they_are_in_time() -> None:
    async def run() -> list[float]:
        app = Admission(Inner(), deadline_ms=100.0, max_in_flight=8, latency_target=0.3)
        seen = [app.limit]
        app._slowest = 0.5  # an answer took half its deadline: over the 0.3 target
        app._tick(time.perf_counter())
        seen.append(app.limit)
        app._tick(time.perf_counter())  # answers in time again
        seen.append(app.limit)
        return seen

    start, fallen, climbed = asyncio.run(run())
    assert start == 8 and fallen == pytest.approx(6.4) and climbed == pytest.approx(6.4 + STEP)


# ------------------------------------------------------------------ waves and stage batches
class Recorder:
    ref = "m@v1"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def decide(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.batches.append(len(requests))
        return [{"i": r["i"]} for r in requests]


def test_requests_that_wait_for_a_wave_reach_each_stage_in_one_batch() -> None:
    rec = Recorder()
    stage = LocalStage(rec)

    async def request(i: int) -> Any:
        first = await stage.decide([{"i": i}])
        await asyncio.sleep(0.01)  # the ledger's round trip: the next requests arrive meanwhile
        return first[0]["i"]

    async def run() -> list[Any]:
        waves = Waves(max_wave=8)
        first = asyncio.ensure_future(waves.run(lambda: request(0)))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(waves.run(lambda i=i: request(i))) for i in range(1, 5)]
        return await asyncio.gather(first, *rest)

    assert asyncio.run(run()) == [0, 1, 2, 3, 4]
    assert rec.batches == [1, 4]  # the idle graph starts one at once; the four that waited go together


def test_a_call_cancelled_before_its_batch_is_never_decided() -> None:
    rec = Recorder()
    stage = LocalStage(rec)

    async def run() -> None:
        doomed = asyncio.ensure_future(stage.decide([{"i": 1}]))
        kept = asyncio.ensure_future(stage.decide([{"i": 2}]))
        await asyncio.sleep(0)  # both queued, the batch not run yet
        doomed.cancel()
        assert await kept == [{"i": 2}]

    asyncio.run(run())
    assert rec.batches == [1]


# ------------------------------------------------------------------ settles coalesced
class Method:
    def __init__(self, fn: Any, calls: list[Any]) -> None:
        self.fn, self.calls = fn, calls

    def remote(self, *args: Any) -> Any:
        self.calls.append(args)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(self.fn(*args))
        return fut


class FakeActor:
    def __init__(self, many: bool = True) -> None:
        self.calls: list[Any] = []

        def settle_many(calls: list[tuple[list[dict[str, Any]], str]]) -> list[Any]:
            return [f"ValueError: bad {key}" if key == "k-bad" else [True] * len(ev) for ev, key in calls]

        self.settle = Method(lambda ev, key: [True] * len(ev), self.calls)
        if many:
            self.settle_many = Method(settle_many, self.calls)


def test_the_settles_of_one_loop_turn_go_in_one_ledger_call_each_answered_alone() -> None:
    actor = FakeActor()
    led = ActorLedger(actor)

    async def run() -> list[Any]:
        doomed = asyncio.ensure_future(led.settle([{"a": 0}], "k-gone"))
        calls = [asyncio.ensure_future(led.settle([{"a": i}] * i, f"k{i}")) for i in (1, 2)]
        bad = asyncio.ensure_future(led.settle([{"a": 9}], "k-bad"))
        await asyncio.sleep(0)
        doomed.cancel()  # its caller gave up before the call went: it is not sent
        return await asyncio.gather(*calls, bad, return_exceptions=True)

    one, two, bad = asyncio.run(run())
    assert one == [True] and two == [True, True]
    assert isinstance(bad, RuntimeError) and "k-bad" in str(bad)
    assert len(actor.calls) == 1 and [key for _, key in actor.calls[0][0]] == ["k1", "k2", "k-bad"]


def test_a_ledger_actor_without_settle_many_is_called_settle_by_settle() -> None:
    actor = FakeActor(many=False)
    led = ActorLedger(actor)

    async def run() -> list[Any]:
        return await asyncio.gather(led.settle([{"a": 1}], "k1"), led.settle([{"a": 2}], "k2"))

    assert asyncio.run(run()) == [[True], [True]] and len(actor.calls) == 2


def test_settle_many_is_settle_call_by_call_and_an_error_stays_its_callers() -> None:
    many = _PacingActor(None, "t", W.PACING)
    one = _PacingActor(None, "t", W.PACING)
    for actor in (many, one):
        actor.ledger.clock = lambda: W.CLOCK
        actor.views([{"advertiser": "a", "budget": 1.0, "cpa_constraint": 2.0, "task": 0}])
    ev = {"advertiser": "a", "alpha": 1.0, "bid": 1.0, "pvalue": 0.1, "won": True, "price": 0.6, "lwc": 0.6,
          "conversions": 0.1}
    stranger = {**ev, "advertiser": "nobody"}
    got = many.settle_many([([ev], "k1"), ([stranger], "k2"), ([ev], "k3")])
    assert got[0] == [True] and "not registered" in got[1] and got[2] == [False]  # 0.6 + 0.6 > budget 1.0
    assert [one.settle([ev], "k1"), one.settle([ev], "k3")] == [got[0], got[2]]


# ------------------------------------------------------------------ the graph and the deadline
def test_past_its_deadline_no_stage_starts_and_nothing_is_billed() -> None:
    led = W.ledger()
    g = W.graph(led)
    req, _ = parse_feed(W.feed_request(), json.dumps(W.body()), W.metas()["allocation"]["obs_layout"]["item_dim"])
    out = asyncio.run(g.decide(req, deadline=time.perf_counter() - 0.001))
    fb = out.answer["fallbacks"]
    for role in ("ranking", "utility", "channel", "allocation"):
        assert fb[role].startswith(DEADLINE) and fb[role].endswith("not started"), fb
    assert not [i for i in out.answer["feed"] if i["kind"] == "ad" and i["advertiser"] in out.answer["bids"]]
    assert led.journal() == {} and g.counters["settles"] == 0


def test_with_time_left_the_same_request_is_answered_in_full() -> None:
    g = W.graph(W.ledger())
    req, _ = parse_feed(W.feed_request(), json.dumps(W.body()), W.metas()["allocation"]["obs_layout"]["item_dim"])
    out = asyncio.run(g.decide(req, deadline=time.perf_counter() + 5.0))
    assert not [k for k, v in out.answer["fallbacks"].items() if DEADLINE in v]
