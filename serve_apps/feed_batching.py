"""A stage's policy inside a feed replica: decided on the event loop, concurrent calls batched.

Two measurements decide the design (``benchmarks/graph_profile.py``, 2-core machine, one thread
for torch, the five smoke models, 50 ads and 20 organic items a request):

* **No threads.** The whole graph decided in-process costs 4.2 ms of CPU per request when the
  stages run on the event loop and 9.4 ms when each stage call goes to a worker thread
  (``asyncio.to_thread``, as the replica did before): the GIL hand-offs between the loop and
  five stage threads cost more than the models. A thread cannot be stopped either, so a timed-out
  call went on burning the CPU the next requests needed.
* **Batches.** A forward pass is mostly fixed cost: ranking takes 0.59 ms of CPU for one request
  and 0.27 ms a request in a batch of 16; allocation 0.35 and 0.035 ms; the whole graph 3.1 ms a
  request alone, 1.7 ms in batches of 4 (2026-12-07).

So a call is queued, and the stage decides everything queued in one batch (up to ``max_batch``
requests) from a callback of the loop: the calls made in one turn of the loop (every request in
flight reaching the stage) go together. Idle, a call is decided on the next turn (no added wait);
under load the batches grow by themselves and the CPU a request costs falls as the rate rises.
``batch_wait_s`` > 0 holds the first call that long for company instead (more batching at low
rates, for that much latency).

A call cancelled while it waits (its request's deadline or the stage timeout fired, ``FeedGraph``)
is dropped before its batch starts: work nobody waits for is never started. A running batch is not
interrupted: the loop is busy for its length (inputs are bounded by the ingress: ``max_candidates``).
A batch that raises is decided again call by call, so one caller's bad request fails only itself.

A float32 answer decided in a batch can differ from the same request decided alone in the last
bits (BLAS picks kernels by size), as with ``concat_batches`` of the single-model app.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Decider(Protocol):
    """What decides a batch of one stage's requests (``adray.serving.PolicyHandle``)."""

    ref: str

    def decide(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]: ...


Call = tuple[list[dict[str, Any]], "asyncio.Future[list[dict[str, Any]]]"]


class LocalStage:
    """``handle`` decided on the event loop, the calls of one loop turn in one batch (module doc)."""

    def __init__(self, handle: Decider, batch_wait_s: float = 0.0, max_batch: int = 32) -> None:
        if batch_wait_s < 0 or max_batch < 1:
            raise ValueError(f"batch_wait_s={batch_wait_s} (expected >= 0), max_batch={max_batch} (expected >= 1)")
        self.handle, self.ref = handle, handle.ref
        self.batch_wait_s, self.max_batch = batch_wait_s, max_batch
        self._queue: list[Call] = []
        self._pending: asyncio.Handle | asyncio.TimerHandle | None = None
        self.batches = self.decided = 0
        """Batches run and calls decided since the start (mean batch = decided / batches)."""

    @classmethod
    def load(cls, ref: str, registry: str, batch_wait_s: float = 0.0, max_batch: int = 32) -> LocalStage:
        """The published model ``ref``'s policy, loaded in this process."""
        from adray.serving import PolicyHandle

        return cls(PolicyHandle(ref, registry), batch_wait_s, max_batch)

    async def decide(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[dict[str, Any]]] = loop.create_future()
        self._queue.append((requests, fut))
        if self._pending is None:
            self._pending = (loop.call_later(self.batch_wait_s, self._run) if self.batch_wait_s > 0
                             else loop.call_soon(self._run))
        return await fut

    def _run(self) -> None:
        """Decide what is queued, ``max_batch`` requests a batch."""
        self._pending = None
        queue, self._queue = [c for c in self._queue if not c[1].done()], []  # cancelled: never started
        while queue:
            batch = [queue.pop(0)]
            size = len(batch[0][0])
            while queue and size + len(queue[0][0]) <= self.max_batch:
                size += len(queue[0][0])
                batch.append(queue.pop(0))
            self._decide(batch)

    def _decide(self, batch: list[Call]) -> None:
        self.batches += 1
        self.decided += len(batch)
        try:
            answers = self.handle.decide([r for reqs, _ in batch for r in reqs])
        except Exception as exc:  # noqa: BLE001 - handed to the caller(s)
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
            else:  # whose request failed it? each call on its own
                for call in batch:
                    self._decide([call])
            return
        start = 0
        for reqs, fut in batch:
            if not fut.done():
                fut.set_result(answers[start:start + len(reqs)])
            start += len(reqs)


class Waves:
    """Starts the feed requests in waves, so that their stage calls meet in one batch.

    Each request's graph runs as its own coroutine; started one by one (as requests arrive), they
    reach each stage in different turns of the loop and :class:`LocalStage` sees batches of one
    (measured: 1.02 calls a batch at 200 req/s). Here a request waits while a wave runs, and the
    requests that waited start together when it ends (up to ``max_wave``): their ranking, utility,
    channel and bidding calls land in one loop turn, so each stage decides them in one batch. An
    idle graph starts a request at once; a wave lasts about one request's time, so a request waits
    for at most one wave before its own.
    """

    def __init__(self, max_wave: int = 32) -> None:
        if max_wave < 1:
            raise ValueError(f"max_wave={max_wave}: expected >= 1")
        self.max_wave = max_wave
        self._queue: list[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]]] = []
        self._running = 0
        self.waves = self.started = 0
        """Waves started and requests started in them (mean wave = started / waves)."""

    async def run(self, start: Callable[[], Awaitable[T]]) -> T:
        """``await start()``, begun with the next wave."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((start, fut))
        if not self._running:
            self._next()
        return await fut

    def _next(self) -> None:
        self._queue = [q for q in self._queue if not q[1].done()]  # cancelled (client gone): not started
        wave, self._queue = self._queue[:self.max_wave], self._queue[self.max_wave:]
        if not wave:
            return
        self.waves += 1
        self.started += len(wave)
        self._running = len(wave)
        for start, fut in wave:
            task = asyncio.ensure_future(start())
            task.add_done_callback(functools.partial(self._done, fut))
            fut.add_done_callback(lambda f, t=task: t.cancel() if f.cancelled() else None)  # caller gone: so is it

    def _done(self, fut: asyncio.Future[Any], task: asyncio.Future[Any]) -> None:
        if not fut.done():
            if task.cancelled():
                fut.cancel()
            elif task.exception() is not None:
                fut.set_exception(task.exception())  # type: ignore[arg-type]
            else:
                fut.set_result(task.result())
        self._running -= 1
        if not self._running:
            self._next()
