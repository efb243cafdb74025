"""Admission of feed requests: each gets a deadline, and what cannot be served is shed at once.

An ad request answered after its deadline is worth nothing (the exchange has moved on), and a
replica that takes every request while more arrive than it can serve answers all of them late:
before this, 200 req/s on 2 cores gave p50 3.9 s and 400 req/s p50 31 s (``benchmarks/graph_load.py``).
So the ingress decides, the moment a request arrives and before its body is read:

* **deadline**: the ``x-deadline-ms`` header (a number in (0, 10000]), else the deployment's
  ``deadline_ms``. It counts from ``x-request-start`` when the ingress in front stamps one
  (``t=<epoch seconds, ms or us>``, as HAProxy and nginx set it: the time queued before this
  replica counts too), else from arrival here. A request whose deadline has passed on arrival is
  shed, reason ``deadline``.
* **in flight**: at most ``limit`` requests of this replica are being decided; one more is shed,
  reason ``overload``. The limit adapts (AIMD) between 1 and ``max_in_flight`` to what the CPU
  gives. Every :data:`TICK_S` it falls by a fifth if the requests answered since the last tick
  took longer than ``latency_target`` x their deadline here (the slowest of them), or a timer
  finds the event loop later than ``lag_target_ms`` (the loop is behind: requests wait unseen in
  the socket before anyone can shed or answer them); else it rises by :data:`STEP` (back to the
  most within half a second of calm). Measured on 2 cores at 400 req/s (``benchmarks/graph_load.py``): a fixed
  limit of 6 per replica kept the loop so busy that answered requests took p99 158 ms and shed
  ones 51 ms; 3 gave 77 and 21 ms for the same goodput. The graph batches the stage calls of the
  requests in flight (``serve_apps.feed_batching``), so a few in flight keep the CPU busy.

Behind a gate that bounds the requests each replica holds (adray's shedding HAProxy,
``adray.shed_proxy``: ``per_replica`` at once), a request over the limit may instead wait here for a
slot, at most ``wait_ms`` and never past its deadline, then is shed ``overload`` if none freed. Shed
at once, a request over the limit frees the gate's slot in a fraction of a millisecond, and the gate
sends the next one straight in: at 4x overload through the gate (1800 req/s, 8 a replica) the
replicas, not HAProxy, shed 45,242 of 46,851 requests, each after Python took in its headers and
47 KB body. Waiting keeps the gate's slots full, so the excess waits and is shed by HAProxy, where a
shed request costs 0.03 ms (``benchmarks/shed_deny_cost.py``). Sent straight to the replicas with no
gate, waiting would only hold more connections: ``wait_ms`` is 0 there.

A shed request is answered ``503`` with ``Retry-After`` and ``{"detail": ..., "shed": reason}``,
and nothing of it reaches the graph: no ledger call (nothing billed), no decision-log row. An
admitted request carries its deadline (``time.perf_counter()``) in ``scope["state"]``
(:data:`DEADLINE_KEY`); the graph cuts each stage's wait to it (``FeedGraph.decide``), so an admitted
request is answered by its deadline, degraded (named fallbacks) if it must be.

Serve's own bound stays behind this one (``FeedArgs.max_queued_requests``): a replica's event loop
that cannot even run this check (CPU starved) still sheds with Serve's 503.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

DEADLINE_KEY = "adray_deadline"
MAX_DEADLINE_MS = 10_000.0
TICK_S = 0.02
"""How often the event loop's lag is measured and the limit adapted."""
STEP = 0.25
"""How much the limit rises a tick while answers are in time and the loop keeps up."""


class Admission:
    """ASGI middleware in front of the feed app (module docstring).

    Args:
        app: the ASGI app admitted requests go to.
        deadline_ms: the default deadline.
        max_in_flight: requests decided at once; more are shed.
        retry_after_s: the ``Retry-After`` of a shed answer (whole seconds).
        paths: the paths admission applies to (others, e.g. ``/healthz``, always pass).
        on_shed: called with the reason of each shed request (metrics).
        wait_ms: the longest a request over the limit waits for a slot before it is shed (0: shed
            at once; module docstring).
        agent: also answer HAProxy's agent check (``agent-check``) on a port of this host with the
            limit in force, ``maxconn:<n>``: the gate then sends this replica no more than it
            admits now (``agent_port`` once started, with the first request).
    """

    def __init__(self, app: Any, deadline_ms: float = 100.0, max_in_flight: int = 8, retry_after_s: int = 1,
                 lag_target_ms: float = 10.0, latency_target: float = 0.5, paths: tuple[str, ...] = ("/v1/feed",),
                 on_shed: Callable[[str], None] | None = None, wait_ms: float = 0.0, agent: bool = False) -> None:
        if not 0 < deadline_ms <= MAX_DEADLINE_MS:
            raise ValueError(f"deadline_ms={deadline_ms}: expected a number in (0, {MAX_DEADLINE_MS:g}]")
        if max_in_flight < 1 or retry_after_s < 0 or not lag_target_ms > 0 or not 0 <= wait_ms <= MAX_DEADLINE_MS:
            raise ValueError(f"max_in_flight={max_in_flight} (expected >= 1), retry_after_s={retry_after_s} "
                             f"(expected >= 0), lag_target_ms={lag_target_ms} (expected > 0), wait_ms={wait_ms} "
                             f"(expected in [0, {MAX_DEADLINE_MS:g}])")
        self.app, self.deadline_ms, self.max_in_flight = app, deadline_ms, max_in_flight
        self.retry_after = str(int(math.ceil(retry_after_s))).encode()
        self.lag_target_s, self.latency_target = lag_target_ms / 1e3, latency_target
        self._slowest = 0.0
        """The largest (time taken / deadline) of the requests answered since the last tick."""
        self.paths, self.on_shed = paths, on_shed
        self.in_flight = 0
        self.limit = float(max_in_flight)
        self.lag_s = 0.0
        """The event loop's lag at the last tick."""
        self.shed = {"deadline": 0, "overload": 0}
        self._ticking = False
        self.wait_s = wait_ms / 1e3
        self._waiting: collections.deque[asyncio.Future[bool]] = collections.deque()
        """Requests over the limit waiting for a slot, first come first served."""
        self.waited = 0
        """Requests that waited for a slot and were then admitted."""
        self.agent, self.agent_port = agent, None
        self._agent: asyncio.AbstractServer | None = None
        self._agent_tried = False

    def _tick(self, due: float) -> None:
        """Measure the loop's lag; adapt the limit (module docstring); schedule the next tick."""
        now = time.perf_counter()
        self.lag_s = now - due
        slowest, self._slowest = self._slowest, 0.0
        if self.lag_s > self.lag_target_s or slowest > self.latency_target:
            self.limit = max(1.0, self.limit * 0.8)
        else:
            self.limit = min(float(self.max_in_flight), self.limit + STEP)
        self._wake()
        asyncio.get_running_loop().call_at(self._loop_time(now + TICK_S), self._tick, now + TICK_S)

    @staticmethod
    def _loop_time(at: float) -> float:
        """``at`` (perf_counter) on the running loop's clock."""
        return asyncio.get_running_loop().time() + (at - time.perf_counter())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.agent and not self._agent_tried and scope["type"] == "http":  # any first request starts it
            self._agent_tried = True  # before the await: requests arriving meanwhile do not start another
            await self._start_agent()
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            return await self.app(scope, receive, send)
        now = time.perf_counter()
        if not self._ticking:
            self._ticking = True
            asyncio.get_running_loop().call_at(self._loop_time(now + TICK_S), self._tick, now + TICK_S)
        headers = dict(scope.get("headers") or [])
        try:
            budget_ms = _deadline_ms(headers.get(b"x-deadline-ms"), self.deadline_ms)
        except ValueError as exc:
            return await _answer(send, 422, {"detail": [{"type": "value_error", "loc": ["header", "x-deadline-ms"],
                                                         "msg": str(exc)}]})
        deadline = now + budget_ms / 1e3 - _queued_s(headers.get(b"x-request-start"))
        if deadline <= now:
            return await self._shed(send, "deadline", f"the request's deadline ({budget_ms:g} ms) passed before "
                                                      "it reached a replica")
        if self.in_flight < int(self.limit):
            self.in_flight += 1
        elif not await self._slot(min(now + self.wait_s, deadline)):  # True: _wake took the slot for it
            return await self._shed(send, "overload", f"the replica is deciding {self.in_flight} requests, its "
                                                      f"limit now (at most max_in_flight); retry later or elsewhere")
        start = time.perf_counter()
        scope.setdefault("state", {})[DEADLINE_KEY] = deadline
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            # the time the replica took from admission: a wait for a slot is the gate's queue, not slowness
            self._slowest = max(self._slowest, (time.perf_counter() - start) / max(deadline - start, 1e-3))
            self._wake()

    async def _slot(self, until: float) -> bool:
        """Wait for a slot until ``until`` (perf_counter): True when ``_wake`` gave one (already
        counted in ``in_flight``), False when the time ran out first. Slots go in arrival order."""
        if self.wait_s <= 0 or until <= time.perf_counter():
            return False
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        timer = asyncio.get_running_loop().call_at(self._loop_time(until), _settle, fut, False)
        self._waiting.append(fut)
        try:
            got = await fut
        except asyncio.CancelledError:  # the request went away while it waited: give back a slot given to it
            if fut.done() and not fut.cancelled() and fut.result():
                self.in_flight -= 1
                self._wake()
            raise
        finally:
            timer.cancel()
        if got:
            self.waited += 1
        return got

    def _wake(self) -> None:
        """Give the free slots to the longest waiting requests: each is counted in ``in_flight`` here,
        so no request arriving before the waiter resumes can take it."""
        while self.in_flight < int(self.limit) and self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(True)

    async def _start_agent(self) -> None:
        """HAProxy's agent check: each connection gets ``maxconn:<the limit now>`` and is closed."""
        async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(f"maxconn:{max(1, int(self.limit))}\n".encode())
            try:
                await writer.drain()
            finally:
                writer.close()

        try:
            self._agent = await asyncio.start_server(answer, "0.0.0.0", 0)
        except OSError as exc:  # no agent: the gate keeps its per_replica; the request is served all the same
            logging.getLogger(__name__).warning("admission agent not started: %s", exc)
            return
        self.agent_port = self._agent.sockets[0].getsockname()[1]

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot now."""
        return sum(not f.done() for f in self._waiting)

    async def _shed(self, send: Any, reason: str, detail: str) -> None:
        self.shed[reason] += 1
        if self.on_shed is not None:
            self.on_shed(reason)
        await _answer(send, 503, {"detail": detail, "shed": reason}, [(b"retry-after", self.retry_after)])


def _settle(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


def _deadline_ms(raw: bytes | None, default: float) -> float:
    if raw is None:
        return default
    try:
        ms = float(raw)
    except ValueError:
        ms = math.nan
    if not 0 < ms <= MAX_DEADLINE_MS:
        raise ValueError(f"expected a number of milliseconds in (0, {MAX_DEADLINE_MS:g}], got {raw[:40]!r}")
    return ms


def _queued_s(raw: bytes | None) -> float:
    """Seconds since ``x-request-start`` (``t=`` epoch seconds, ms or us; 0 when absent or unreadable:
    an ingress's header is a hint, never a reason to refuse a request)."""
    if not raw:
        return 0.0
    try:
        t = float(raw[2:] if raw.startswith(b"t=") else raw)
    except ValueError:
        return 0.0
    t = t / 1e6 if t > 1e14 else t / 1e3 if t > 1e11 else t
    return min(max(time.time() - t, 0.0), 3600.0) if math.isfinite(t) else 0.0


async def _answer(send: Any, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] = ()) -> None:
    raw = json.dumps(body, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": raw})
