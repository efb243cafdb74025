"""A real :class:`adray.pacing.Ledger` behind async calls that misbehave as Ray's may, and the
billing invariants every feed answer must keep (used by test_ledger_invariants and test_feed_graph).

:class:`SimLedger` queues each call under its caller (a replica) and runs one call at a time, as
the synchronous ledger actor does, picking the next caller at random. A call's *fault* says what
Ray does to it: ``ok``; ``slow`` (it holds the ledger a while before running, past the caller's
timeout: it still runs after the caller gave up); ``late`` (it reaches the ledger's queue only
after a while: with ``ordered=False`` a later call of the same caller, its void, may run first;
in order it blocks its caller's queue as Ray's sequence numbers do); ``fail_before`` (it never
reaches the ledger); ``fail_after`` (it runs, the reply is lost). ``ordered=False`` breaks the
order Ray guarantees for one caller of a synchronous actor (see adray.pacing): the ledger must
keep its promises anyway, through its tombstones.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from adray.pacing import Ledger

FAULTS = ("ok", "slow", "late", "fail_before", "fail_after")


class LedgerUnreachable(RuntimeError):
    """What the caller of a ``fail_before`` or ``fail_after`` call sees."""


@dataclass
class _Call:
    method: str
    args: tuple[Any, ...]
    fault: str
    future: asyncio.Future[Any]


@dataclass
class SimLedger:
    """The ledger actor as seen by several replicas (``client(name)``), over one asyncio loop.

    Args:
        ledger: the real ledger (``audit=True`` for :func:`check_billing`).
        faults: per method (``views``, ``settle``, ``void``), consumed one per call in submission
            order; once used up every call is ``ok`` (a void retried long enough lands, as on a
            ledger that comes back).
        rng: picks the next caller (and, unordered, the next call of that caller).
        ordered: one caller's calls run in submission order (Ray's guarantee).
        slow_s: how long a ``slow`` call holds the ledger before it runs.
    """

    ledger: Ledger
    faults: dict[str, list[str]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    ordered: bool = True
    slow_s: float = 0.02
    _queues: dict[str, list[_Call]] = field(default_factory=dict)
    _wake: asyncio.Event | None = None
    _runner: asyncio.Task[None] | None = None
    _running: bool = False
    _pending: int = 0
    ran: Counter[str] = field(default_factory=Counter)

    def client(self, caller: str) -> _Client:
        return _Client(self, caller)

    async def call(self, caller: str, method: str, *args: Any) -> Any:
        if self._runner is None:
            self._wake = asyncio.Event()
            self._runner = asyncio.get_running_loop().create_task(self._run())
        todo = self.faults.get(method)
        fault = todo.pop(0) if todo else "ok"
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even when nobody waits
        call = _Call(method, args, fault, fut)
        if fault == "late" and not self.ordered:
            self._pending += 1
            loop.call_later(self.slow_s, self._enqueue, caller, call, True)
        else:
            self._enqueue(caller, call)
        # shield: a caller that gives up (wait_for's timeout) does not take the call back, as with Ray
        return await asyncio.shield(fut)

    def _enqueue(self, caller: str, call: _Call, late: bool = False) -> None:
        self._queues.setdefault(caller, []).append(call)
        self._pending -= late
        self._wake.set()  # type: ignore[union-attr]

    async def _run(self) -> None:
        while True:
            callers = [c for c, q in self._queues.items() if q]
            if not callers:
                self._wake.clear()  # type: ignore[union-attr]
                await self._wake.wait()  # type: ignore[union-attr]
                continue
            for _ in range(self.rng.randrange(3)):  # let other callers' calls arrive: more interleavings
                await asyncio.sleep(0)
            callers = [c for c, q in self._queues.items() if q]
            q = self._queues[self.rng.choice(callers)]
            call = q.pop(0 if self.ordered else self.rng.randrange(len(q)))
            self._running = True
            try:
                await self._execute(call)
            finally:
                self._running = False

    async def _execute(self, call: _Call) -> None:
        if call.fault in ("slow", "late"):  # "late" in order: its caller's queue waited for it
            await asyncio.sleep(self.slow_s)  # the ledger is busy: every other call waits too
        if call.fault == "fail_before":
            result: Any = LedgerUnreachable(f"{call.method} never reached the ledger")
        else:
            try:
                result = getattr(self.ledger, call.method)(*call.args)
                self.ran[call.method] += 1
            except Exception as exc:  # noqa: BLE001 - the ledger's own errors reach the caller
                result = exc
            if call.fault == "fail_after":
                result = LedgerUnreachable(f"{call.method} ran; its reply was lost")
        if not call.future.done():
            if isinstance(result, BaseException):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)

    async def idle(self) -> None:
        """Wait until every queued call has run."""
        while self._running or self._pending or any(self._queues.values()):
            await asyncio.sleep(0.001)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()


class _Client:
    """One caller's view: the graph's LedgerClient."""

    def __init__(self, sim: SimLedger, caller: str) -> None:
        self.sim, self.caller = sim, caller

    async def views(self, specs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return await self.sim.call(self.caller, "views", specs)

    async def settle(self, events: list[dict[str, Any]], key: str | None = None) -> list[bool]:
        return await self.sim.call(self.caller, "settle", events, key)

    async def void(self, key: str) -> dict[str, Any]:
        return await self.sim.call(self.caller, "void", key)


# ------------------------------------------------------------------------------------ invariants
def _money(x: float) -> float:
    return round(float(x), 9)


def shown_auto(req: dict[str, Any], answer: dict[str, Any]) -> Counter[tuple[str, float]]:
    """(advertiser, price) of every auto-bidding ad the answer shows."""
    auto = {a["ad_id"] for a in req["ads"] if a["campaign"] == "auto"}
    return Counter((s["advertiser"], _money(s["price"])) for s in answer["feed"] if s["kind"] == "ad" and s["id"] in auto)


def billed_by_request(journal: dict[str, dict[str, Any]]) -> dict[str, Counter[tuple[str, float]]]:
    """The standing grants (not voided) of the audit journal per request id (the key's last part)."""
    out: dict[str, Counter[tuple[str, float]]] = {}
    for key, rec in journal.items():
        rid = key.split(":", 2)[2]
        c = out.setdefault(rid, Counter())
        if not rec["void"]:
            c.update((a, _money(p)) for a, p in rec["grants"])
    return out


def check_feed(req: dict[str, Any], answer: dict[str, Any], window: int) -> None:
    """The screen is well formed: positions 0..n-1, at most ``window``, each item once, organic
    items a prefix of the request's in order, every ad one of the request's."""
    feed = answer["feed"]
    assert [s["position"] for s in feed] == list(range(len(feed))), feed
    assert len(feed) <= window
    ids = [s["id"] for s in feed]
    assert len(set(ids)) == len(ids), ids
    organic = [s["id"] for s in feed if s["kind"] == "organic"]
    assert organic == [o["item_id"] for o in req["organic"][: len(organic)]], (organic, req["organic"])
    ads = {a["ad_id"]: a for a in req["ads"]}
    for s in feed:
        if s["kind"] == "ad":
            assert s["id"] in ads and ads[s["id"]]["advertiser"] == s["advertiser"]


def check_billing(pairs: Iterable[tuple[dict[str, Any], dict[str, Any] | None]], ledger: Ledger,
                  budgets: dict[str, float]) -> dict[str, int]:
    """The ledger's invariants over answered (and unanswered: None) requests, once every call ran.

    Every answer shows exactly the auto-bidding ads whose grants stand, once each; a request
    without an answer has none standing; per advertiser, spend is the sum of those bills and never
    passes the budget. Returns counts for the test's report.
    """
    billed = billed_by_request(ledger.journal())
    per_adv: dict[str, list[float]] = {}
    shown_n = 0
    seen = set()
    for req, answer in pairs:
        rid = req["request_id"]
        seen.add(rid)
        got = billed.get(rid, Counter())
        shown = shown_auto(req, answer) if answer is not None else Counter()
        assert shown == got, f"request {rid}: shown auto ads {dict(shown)} != standing grants {dict(got)}"
        for (adv, price), n in shown.items():
            per_adv.setdefault(adv, []).extend([price] * n)
        shown_n += sum(shown.values())
    stray = {rid: dict(c) for rid, c in billed.items() if rid not in seen and c}
    assert not stray, f"grants standing for requests never answered: {stray}"
    views = ledger.views([{"advertiser": a, "budget": b, "cpa_constraint": 1.0, "task": 0} for a, b in budgets.items()])
    for adv, budget in budgets.items():
        spent = views[adv]["spent"]
        assert spent <= budget + 1e-12, f"{adv}: spent {spent} > budget {budget}"
        assert math.isclose(spent, math.fsum(per_adv.get(adv, [])), abs_tol=1e-9), (adv, spent, per_adv.get(adv))
    return {"shown_auto": shown_n}
