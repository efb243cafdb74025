"""One feed decision through the five stages, each falling back to its safe default.

    ranking   pCTR, pCVR, pCTCVR of every candidate ad          (pwiser policy)
    bidding   alpha of each auto-bidding advertiser from its pacing state (vamo policy + ledger)
    utility   w_click, w_long, w_conv, reserve for the request  (drlput policy)
    channel   the user's next channel and its propensity         (mtorl policy; optional gate)
    -> auction: per-impression value ecpm_i = bid_i·pCTR_i (fixed CPC bid) or alpha·pCTCVR_i (auto),
       utility U_i = ecpm_i + w_click·pCTR_i + w_long·p_long_i + w_conv·pCVR_i (DRL-PUT Eq. 3.1),
       eligible when ecpm_i >= reserve, ranked by U; GSP price of rank k: the least ecpm that keeps
       U_k >= U_{k+1}, i.e. max(reserve, ecpm_k - (U_k - U_{k+1})) (reserve for the last), <= ecpm_k
    allocation which of the screen's K slots show ads             (crossdqn policy, on the top-K ranked
       ads and organic items)
    -> pacing: every shown auto-bidding ad is charged its price through the ledger, atomically; a
       refused charge (budget spent) gives the slot to the next organic item.

What is billed (the ledger's side is in ``adray.pacing``): an answer shows an auto-bidding ad if
and only if the ledger granted its charge, once, in the settle call of this answer. The screen is
mixed once; the auto-bidding ads on it (and only those) are settled in one call with a key unique
to the call (this graph's id, a sequence number, the request id). Then:

* refused charges (budget spent): the ad's position goes to the next organic item not yet on the
  screen (organic items keep their order), or, when none is left, is left out and the positions
  after it move up. Never to another ad: every other ad was either on the screen already (and
  settled) or never settled.
* a settle that fails, times out or is cancelled: no auto-bidding ad of the answer is shown (their
  positions are freed as above) and the graph sends ``void(key)`` in the background, retried until
  it lands (it is idempotent): the ledger refunds the call's grants if it ran, or makes sure it
  grants nothing if it runs later. Until the void lands the spend counts those grants: a budget
  may be under-used for that moment, never passed. ``drain()`` awaits the voids in flight.
* fixed-bid ads are not billed by the ledger (their price is CPC, on click); they keep their
  positions. Without a ledger (or when its view failed) no auto-bidding ad enters the auction.

Ranking, bidding, utility and channel run concurrently; allocation needs the ranked list. Each
stage call has a timeout (``stage_timeout_s``), cut to the request's deadline when it has one
(``decide(req, deadline)``; the ingress gives every request one, ``serve_apps.feed_admission``):
the first four stages get until :data:`PHASES` [0] of the time left at the start, allocation until
[1], the ledger's settle the rest. A stage whose share is spent is not started; a stage that is not deployed, raises, times out or answers a non-finite
number is replaced by its safe default (``GraphSettings``: constant pCTR/pCVR, alpha = ratio x CPA,
manual weights, fixed ad slots, no channel decision) and the answer's ``fallbacks`` names it.
Without a ledger, auto-bidding ads are not shown at all (a budget that cannot be checked is never
spent).

One advertiser's state never breaks another's decision. The bidding stage decides all advertisers
of a request in one call; if that call raises, each advertiser is decided alone, and only those
that fail (or answer a non-finite alpha) fall back to ratio x CPA, named ``bidding:<advertiser>``
in ``fallbacks``. An advertiser whose settings the ledger or the bidding model cannot use (a task
outside ``GraphSettings.bidding_tasks``, a budget or CPA that is not a finite number > 0) is never
sent to the ledger: its ads are not shown, named ``pacing:<advertiser>``; a task outside the range
that the ledger holds already (registered under another model earlier that day) costs that
advertiser the model, named ``bidding:<advertiser>``. The ingress refuses such requests with a 422
before they get here; these are the graph's own guarantees for any other caller.

``diagnostics`` of an answer counts what the stages mapped without refusing: ``out_of_vocab``
{stage: {feature: ids outside the model's vocabulary, scored as unknown}}, as the decision log's
``diagnostics`` column does (``feed_log``). ``counters`` totals them per replica.

The scales of the five models' worlds differ (they were trained on different simulators and
datasets); the graph combines their outputs as the formulas above say and does not rescale them,
except the allocation model's bid feature (``alloc_bid_scale``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from adray.pacing import PacingSettings, day_and_step
from serve_apps.feed_log import log_row, repair_nonfinite
from serve_apps.feed_schema import stage_workloads

PARAMS = ("w_click", "w_long", "w_conv", "reserve")
PHASES = (0.6, 0.8)
"""Shares of a request's time budget by which the concurrent stages, then allocation, must be done
(the settle gets the rest): a late ranking leaves allocation and billing their time."""
DEADLINE = "past the request's deadline"
"""How a fallback for want of time begins (``feed_metrics`` counts it as reason ``deadline``)."""
VOID_ATTEMPTS = 12
"""Tries of one void before it is given up (logged): backoff from 0.05 s doubling up to 5 s, ~26 s
of waiting in all (plus each try's timeout)."""

log = logging.getLogger(__name__)


class Stage(Protocol):
    """A stage's policy as the graph calls it (local PolicyHandle or Serve DeploymentHandle)."""

    ref: str

    async def decide(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]: ...


class LedgerClient(Protocol):
    """The pacing ledger as the graph calls it (``adray.pacing``: its actor, or a local Ledger)."""

    async def views(self, specs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]: ...

    async def settle(self, events: list[dict[str, Any]], key: str | None = None) -> list[bool]: ...

    async def void(self, key: str) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class GraphSettings:
    """The graph's safe defaults and knobs."""

    window: int = 5
    """Slots of a screen (the allocation model's K; set from its meta when it is deployed)."""
    stage_timeout_s: float = 1.0
    """Longest wait for one stage; past it the stage falls back."""
    manual_weights: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """Utility fallback: w_click, w_long, w_conv, reserve."""
    fixed_ad_slots: tuple[int, ...] = (1, 3)
    """Allocation fallback: the slots that show ads."""
    fallback_alpha_ratio: float = 1.0
    """Bidding fallback: alpha = ratio x the advertiser's CPA constraint."""
    fallback_pctr: float = 0.01
    fallback_pcvr: float = 0.05
    """Ranking fallback: every ad gets these."""
    feed_channel: int | None = None
    """Channel gate: when set and the channel stage picks another channel, no ads are shown."""
    alloc_bid_scale: float = 1.0
    """The allocation model's bid feature = ecpm x this."""
    bidding_tasks: int | None = None
    """Tasks the bidding model knows (0..n-1; the ingress sets it from the model's meta): an
    advertiser with another task never reaches the ledger or the model. None: not checked here."""

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window={self.window}: expected >= 1")
        if not self.stage_timeout_s > 0:
            raise ValueError(f"stage_timeout_s={self.stage_timeout_s}: expected > 0")
        if len(self.manual_weights) != 4:
            raise ValueError(f"manual_weights={self.manual_weights}: expected 4 values {PARAMS}")
        bad = [s for s in self.fixed_ad_slots if not 0 <= s < self.window]
        if bad:
            raise ValueError(f"fixed_ad_slots={self.fixed_ad_slots}: slots {bad} outside 0..{self.window - 1}")


@dataclasses.dataclass
class Outcome:
    """One answered feed request and the decision-log row that records it."""

    answer: dict[str, Any]
    row: dict[str, Any]


class FeedGraph:
    """Composes the stages (``None``: not deployed) and the pacing ledger into feed decisions.

    ``graph_id`` names this graph (one per replica) in its settle keys; unique by default.
    """

    def __init__(self, stages: dict[str, Stage | None], ledger: LedgerClient | None, settings: GraphSettings,
                 pacing: PacingSettings | None = None, clock: Callable[[], float] = time.time,
                 graph_id: str | None = None) -> None:
        self.stages, self.ledger, self.settings = stages, ledger, settings
        self.graph_id = graph_id or uuid.uuid4().hex[:12]
        self._seq = itertools.count()
        self._voiding: set[asyncio.Task[None]] = set()
        self.counters = {"settles": 0, "settle_failures": 0, "refused": 0, "voids": 0, "void_failures": 0,
                         "advertiser_fallbacks": 0, "out_of_vocab": 0, "nonfinite_repaired": 0}
        self.out_of_vocab: dict[str, int] = {}  # "stage.feature" -> ids counted since the start
        policies = stage_workloads()  # the stages' policy classes, found by route
        self.bid_request = policies["bidding"][1].pacing_request  # pacing history -> a bid request
        self.log_row = functools.partial(log_row, policies["utility"][1])
        self.pacing, self.clock = pacing or PacingSettings(), clock
        # per advertiser: (day, step, alpha) of the step's decision; (day, step) of a refused charge
        self._alpha: dict[str, tuple[int, int, float]] = {}
        self._refused: dict[str, tuple[int, int]] = {}
        # alphas being decided now: requests that need one of them wait for it instead of asking again
        self._deciding: dict[str, tuple[tuple[int, int], asyncio.Future[float | None]]] = {}

    def _timeout(self, until: float | None) -> tuple[float, str]:
        """The wait allowed for a call that must be done by ``until`` (perf_counter; None: no
        deadline), and what its fallback says if it runs out."""
        left = math.inf if until is None else until - time.perf_counter()
        if left < self.settings.stage_timeout_s:
            return left, f"{DEADLINE} ({max(left, 0) * 1e3:.1f} ms were left)"
        return self.settings.stage_timeout_s, f"timed out after {self.settings.stage_timeout_s} s"

    async def _call(self, role: str, requests: list[dict[str, Any]], timings: dict[str, float],
                    fallbacks: dict[str, str], until: float | None = None) -> list[dict[str, Any]] | None:
        stage = self.stages.get(role)
        if stage is None:
            fallbacks[role] = "not deployed"
            return None
        timeout, late = self._timeout(until)
        if timeout <= 0:
            fallbacks[role] = f"{late}: not started"
            return None
        t0 = time.perf_counter()
        try:
            answers = await asyncio.wait_for(stage.decide(requests), timeout)
            if (bad := _nonfinite(answers)) is not None:
                fallbacks[role] = f"non-finite answer ({bad})"
                return None
            return answers
        except TimeoutError:
            fallbacks[role] = late
        except Exception as exc:  # noqa: BLE001 - any stage failure is served by the fallback
            fallbacks[role] = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            timings[role] = round((time.perf_counter() - t0) * 1e3, 3)
        return None

    async def _call_each(self, role: str, requests: list[dict[str, Any]], names: list[str],
                         timings: dict[str, float], fallbacks: dict[str, str], until: float | None = None
                         ) -> list[dict[str, Any] | None] | None:
        """The stage's answer to each of ``requests`` (one per ``names``), a failure costing only its
        own: if the batch raises, each request is decided alone; one that raises, times out or answers
        a non-finite number is None, named ``role:name`` in ``fallbacks``. None: the whole stage fell
        back, named ``role`` (not deployed, the batch timed out, or no request was answered)."""
        stage = self.stages.get(role)
        if stage is None:
            fallbacks[role] = "not deployed"
            return None
        timeout, late = self._timeout(until)
        if timeout <= 0:
            fallbacks[role] = f"{late}: not started"
            return None
        t0 = time.perf_counter()
        try:
            try:
                got: list[Any] = list(await asyncio.wait_for(stage.decide(requests), timeout))
                if len(got) != len(requests):
                    raise ValueError(f"{len(got)} answers to {len(requests)} requests")
            except TimeoutError:
                fallbacks[role] = late
                return None
            except Exception as exc:  # noqa: BLE001 - decided again one by one: only the culprit falls back
                left = max(timeout - (time.perf_counter() - t0), 0.05)
                got = [exc] if len(requests) == 1 else list(await asyncio.gather(
                    *(asyncio.wait_for(stage.decide([r]), left) for r in requests), return_exceptions=True))
        finally:
            timings[role] = round((time.perf_counter() - t0) * 1e3, 3)
        out: list[dict[str, Any] | None] = []
        failed: dict[str, str] = {}
        for name, ans in zip(names, got, strict=True):
            if isinstance(ans, list):  # decided alone: its one answer
                ans = ans[0] if len(ans) == 1 else ValueError(f"{len(ans)} answers to 1 request")
            if isinstance(ans, BaseException):
                failed[name] = (late if isinstance(ans, TimeoutError)
                                else f"{type(ans).__name__}: {ans}")
            elif (bad := _nonfinite(ans)) is not None:
                failed[name] = f"non-finite answer ({bad})"
            out.append(None if name in failed else ans)
        if len(failed) == len(names):  # nothing answered: the stage fell back, not one advertiser
            fallbacks[role] = failed[names[0]][:300]
            return None
        for name, why in failed.items():
            fallbacks[f"{role}:{name}"] = why[:300]
            self.counters["advertiser_fallbacks"] += 1
        return out

    async def _bids(self, req: dict[str, Any], timings: dict[str, float], fallbacks: dict[str, str],
                    until: float | None = None) -> dict[str, float]:
        """alpha of each auto-bidding advertiser for the current decision step.

        AuctionNet bids once per step: an advertiser's alpha is decided at its first request of the
        step (ledger view -> AuctionNet state -> bidding model) and kept for the rest of the step
        (per replica); the ledger is asked again at the next step. An advertiser whose charge was
        refused (budget spent) sits out the rest of the step. None is shown without a ledger.
        """
        specs = {a["advertiser"]: {"advertiser": a["advertiser"], **a["auto"]} for a in req["ads"] if a["campaign"] == "auto"}
        for adv in list(specs):  # what the ledger or the model cannot use never reaches them
            if (why := self._unusable(specs[adv])) is not None:
                fallbacks[f"pacing:{adv}"] = f"{why}; its auto-bidding ads not shown"[:300]
                self.counters["advertiser_fallbacks"] += 1
                del specs[adv]
        if not specs:
            return {}
        if self.ledger is None:
            fallbacks["pacing"] = "no ledger: auto-bidding ads not shown"
            return {}
        now = day_and_step(self.clock(), self.pacing)
        out = {adv: c[2] for adv in specs if (c := self._alpha.get(adv)) is not None and c[:2] == now}
        waits = {adv: d[1] for adv in specs if adv not in out and (d := self._deciding.get(adv)) and d[0] == now}
        todo = [adv for adv in specs if adv not in out and adv not in waits and self._refused.get(adv) != now]
        if todo:
            loop = asyncio.get_running_loop()
            mine = {adv: loop.create_future() for adv in todo}
            self._deciding.update({adv: (now, f) for adv, f in mine.items()})
            try:
                out.update(await self._decide_alphas(req["request_id"], [specs[a] for a in todo], now, timings,
                                                     fallbacks, until))
            finally:
                for adv, f in mine.items():
                    if not f.done():
                        f.set_result(out.get(adv))
                    if self._deciding.get(adv, (None, f))[1] is f:
                        del self._deciding[adv]
        for adv, f in waits.items():  # shielded: a waiter cancelled (client gone) must not cancel it for all
            if (a := await asyncio.shield(f)) is not None:
                out[adv] = a
        return {adv: a for adv, a in out.items() if self._refused.get(adv) != now}

    async def _decide_alphas(self, rid: str, specs: list[dict[str, Any]], now: tuple[int, int],
                             timings: dict[str, float], fallbacks: dict[str, str], until: float | None = None
                             ) -> dict[str, float]:
        """Ledger views -> AuctionNet states -> the bidding model, for advertisers without an alpha."""
        t0 = time.perf_counter()
        try:
            timeout, late = self._timeout(until)
            if timeout <= 0:
                raise TimeoutError(late)
            views = await asyncio.wait_for(self.ledger.views(specs), timeout)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001
            fallbacks["pacing"] = f"ledger unavailable ({type(exc).__name__}: {exc}); auto-bidding ads not shown"[:300]
            return {}
        finally:
            timings["pacing"] = round((time.perf_counter() - t0) * 1e3, 3)
        live = {adv: v for adv, v in views.items() if v["remaining"] > 0}
        for adv in set(views) - set(live):
            self._refused[adv] = now
        # fallback alphas are not kept: the next request asks the model again
        out = {adv: self.settings.fallback_alpha_ratio * v["cpa_constraint"] for adv, v in live.items()}
        asked, requests = [], []
        for adv, v in live.items():
            try:
                if (n := self.settings.bidding_tasks) is not None and not 0 <= v["task"] < n:
                    raise ValueError(f"the ledger holds task {v['task']} for today; the bidding model knows 0..{n - 1}")
                requests.append(self.bid_request(v["history"], v["budget"], v["cpa_constraint"], v["task"], v["steps"],
                                                 request_id=f"{rid}:{adv}"))
                asked.append(adv)
            except Exception as exc:  # noqa: BLE001 - this advertiser's state: only it falls back
                fallbacks[f"bidding:{adv}"] = f"{type(exc).__name__}: {exc}"[:300]
                self.counters["advertiser_fallbacks"] += 1
        answers = await self._call_each("bidding", requests, asked, timings, fallbacks, until) if requests else None
        for adv, ans in zip(asked, answers or [None] * len(asked), strict=True):
            if ans is None:
                continue
            alpha = ans.get("alpha") if isinstance(ans, dict) else None
            if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha >= 0:
                fallbacks[f"bidding:{adv}"] = f"answered alpha {alpha!r}: expected a finite number >= 0"[:300]
                self.counters["advertiser_fallbacks"] += 1
                continue
            out[adv] = float(alpha)
            self._alpha[adv] = (*now, out[adv])
        return out

    def _unusable(self, spec: dict[str, Any]) -> str | None:
        """Why the ledger or the bidding model cannot take this advertiser's settings (None: they can)."""
        for name in ("budget", "cpa_constraint"):
            x = spec.get(name)
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x <= 0:
                return f"{name} {x!r} is not a finite number > 0"
        task, n = spec.get("task"), self.settings.bidding_tasks
        if isinstance(task, bool) or not isinstance(task, int) or task < 0 or (n is not None and task >= n):
            return f"task {task!r} is outside the bidding model's tasks 0..{n - 1 if n is not None else 'n'}"
        return None

    async def decide(self, req: dict[str, Any], deadline: float | None = None) -> Outcome:
        """``req``: a validated FeedRequest as a plain dict; ``deadline``: when the answer is due
        (``time.perf_counter()``; None: only the stages' own timeouts)."""
        t_start = time.perf_counter()
        until = (None, None) if deadline is None else tuple(t_start + p * (deadline - t_start) for p in PHASES)
        s, rid, user = self.settings, req["request_id"], req["user"]
        timings: dict[str, float] = {}
        fallbacks: dict[str, str] = {}
        rank_req = {"request_id": rid, "candidates": [{"ad_id": a["ad_id"], **a["features"]} for a in req["ads"]]}
        util_req = {**(user.get("utility_state") or {}), "request_id": rid}
        chan_req = {**user["journey"], "request_id": rid} if user.get("journey") else None
        rank, util, chan, alphas = await asyncio.gather(
            self._call("ranking", [rank_req], timings, fallbacks, until[0]),
            self._call("utility", [util_req], timings, fallbacks, until[0]),
            self._call("channel", [chan_req], timings, fallbacks, until[0]) if chan_req else _none(),
            self._bids(req, timings, fallbacks, until[0]),
        )
        if chan_req is None:
            fallbacks["channel"] = "not deployed" if self.stages.get("channel") is None else "no journey in the request"
        # ---- auction
        scores = rank[0]["scores"] if rank else [{"pctr": s.fallback_pctr, "pcvr": s.fallback_pcvr, "pctcvr": None}
                                                  for _ in req["ads"]]
        u = util[0] if util else dict(zip(PARAMS, s.manual_weights, strict=True))
        ads = []
        for a, sc in zip(req["ads"], scores, strict=True):
            pctr = float(sc["pctr"])
            pcvr = float(sc["pcvr"]) if sc.get("pcvr") is not None else s.fallback_pcvr
            pctcvr = float(sc["pctcvr"]) if sc.get("pctcvr") is not None else pctr * pcvr
            if a["campaign"] == "auto":
                if a["advertiser"] not in alphas:
                    continue  # no pacing (ledger down or budget spent): not in the auction
                ecpm = alphas[a["advertiser"]] * pctcvr
            else:
                ecpm = float(a["bid"]) * pctr
            util_value = ecpm + u["w_click"] * pctr + u["w_long"] * a["p_long"] + u["w_conv"] * pcvr
            ads.append({"ad": a, "pctr": pctr, "pcvr": pcvr, "pctcvr": pctcvr, "ecpm": ecpm, "u": util_value})
        ranked = sorted((x for x in ads if x["ecpm"] >= u["reserve"]), key=lambda x: -x["u"])
        for k, x in enumerate(ranked):
            nxt = ranked[k + 1]["u"] if k + 1 < len(ranked) else None
            x["price"] = u["reserve"] if nxt is None else min(max(u["reserve"], x["ecpm"] - (x["u"] - nxt)), x["ecpm"])
        # ---- allocation
        gate = s.feed_channel is not None and chan is not None and int(chan[0]["channel"]) != s.feed_channel
        alloc_req = self._alloc_request(req, ranked)
        alloc = None if gate else await self._call("allocation", [alloc_req], timings, fallbacks, until[1])
        if gate:
            slots = [False] * s.window
        elif alloc:
            slots = list(alloc[0]["ad_slots"])
        else:
            slots = [k in s.fixed_ad_slots for k in range(s.window)]
        feed, shown = self._mix(slots, ranked, req["organic"])
        refused = await self._charge(rid, feed, shown, ranked, alphas, timings, fallbacks, deadline)
        if refused:  # their positions go to organic items; no other ad: it was not charged
            slots = [want and not (pos < len(shown) and shown[pos] in refused) for pos, want in enumerate(slots)]
            feed = _unshow(feed, shown, refused, req["organic"])
        models = {role: st.ref for role, st in self.stages.items() if st is not None and role not in fallbacks}
        decisions: dict[str, dict[str, Any]] = {
            "utility": {"action": int(util[0]["action"]), "propensity": float(util[0]["propensity"])} if util
            else {"action": -1, "propensity": 1.0},
            "allocation": {"action": int(alloc[0]["action"]) if alloc else -1,
                           "propensity": float(alloc[0].get("propensity", 1.0)) if alloc else 1.0,
                           "ad_slots": [bool(b) for b in slots]},
        }
        if chan:
            decisions["channel"] = {"action": int(chan[0]["channel"]), "propensity": float(chan[0]["propensity"]),
                                    "gated_ads": bool(gate)}
        diagnostics: dict[str, Any] = {}
        oov = {k: int(n) for k, n in (rank[0].get("out_of_vocab") or {}).items() if n} if rank else {}
        if oov:
            diagnostics["out_of_vocab"] = {"ranking": oov}
            self.counters["out_of_vocab"] += sum(oov.values())
            for k, n in oov.items():
                self.out_of_vocab[f"ranking.{k}"] = self.out_of_vocab.get(f"ranking.{k}", 0) + n
        timings["total"] = round((time.perf_counter() - t_start) * 1e3, 3)
        answer = {"request_id": rid, "feed": feed, "utility": {p: float(u[p]) for p in PARAMS},
                  "decisions": decisions, "bids": {k: float(v) for k, v in alphas.items()}, "models": models,
                  "fallbacks": fallbacks, "diagnostics": diagnostics, "latency_ms": timings}
        if repaired := repair_nonfinite(answer):  # not from the ingress: its inputs are bounded, stages checked
            self._nonfinite(rid, "answer", repaired)
            diagnostics["nonfinite_answer"] = repaired
        row = self.log_row(req, answer, alloc_req, ranked, util is not None)
        if repaired := json.loads(row["diagnostics"] or "{}").get("nonfinite"):
            self._nonfinite(rid, "decision-log row", repaired)
        return Outcome(answer, row)

    def _nonfinite(self, rid: str, what: str, paths: list[str]) -> None:
        self.counters["nonfinite_repaired"] += len(paths)
        log.error("feed graph: request %s: non-finite value(s) in the %s at %s written as null (the ingress "
                  "bounds every input and every stage answer is checked: a request that skipped the ingress, "
                  "or a bug)", rid, what, ", ".join(paths[:10]))

    def _alloc_request(self, req: dict[str, Any], ranked: list[dict[str, Any]]) -> dict[str, Any]:
        """The allocation model's screen: top-K ranked ads and organic items as [content, value/5, bid, 1]."""
        k = self.settings.window

        def block(items: Sequence[tuple[dict[str, Any], float]]) -> list[list[float]]:
            rows = [[*map(float, it["content"]), float(it["value"]) / 5.0, bid, 1.0] for it, bid in items[:k]]
            width = len(rows[0]) if rows else len(req["user"].get("history", [[]])[0]) + 3
            return rows + [[0.0] * width for _ in range(k - len(rows))]

        return {"request_id": req["request_id"], "profile": req["user"].get("profile", []),
                "history": req["user"].get("history", []), "context": req.get("screen", []),
                "ads": block([(x["ad"], x["ecpm"] * self.settings.alloc_bid_scale) for x in ranked]),
                "organic": block([(o, 0.0) for o in req["organic"]])}

    def _mix(self, slots: list[bool], ranked: list[dict[str, Any]], organic: list[dict[str, Any]]
             ) -> tuple[list[dict[str, Any]], list[int]]:
        """The screen: ad slots take ranked ads in order, the others organic items; a list that runs
        out gives its slot to the other. Returns the feed and, per slot, the ranked index (-1 organic)."""
        feed, shown, ai, oi = [], [], 0, 0
        for want_ad in slots:
            if (want_ad and ai < len(ranked)) or (oi >= len(organic) and ai < len(ranked)):
                x = ranked[ai]
                feed.append({"position": len(feed), "kind": "ad", "id": x["ad"]["ad_id"],
                             "advertiser": x["ad"]["advertiser"], "price": float(x["price"]), "pctr": x["pctr"],
                             "pcvr": x["pcvr"]})
                shown.append(ai)
                ai += 1
            elif oi < len(organic):
                feed.append({"position": len(feed), "kind": "organic", "id": organic[oi]["item_id"]})
                shown.append(-1)
                oi += 1
        return feed, shown

    async def _charge(self, rid: str, feed: list[dict[str, Any]], shown: list[int], ranked: list[dict[str, Any]],
                      alphas: dict[str, float], timings: dict[str, float], fallbacks: dict[str, str],
                      until: float | None = None) -> set[int]:
        """Settle every auto-bidding ad of the auction with the ledger (the shown ones as won); the
        ranked indices of the shown ones not to show: refused, or all of them if the settle failed
        or there was no time left to start it."""
        if not alphas or self.ledger is None:
            return set()
        shown_at = {ai: pos for pos, ai in enumerate(shown) if ai >= 0}
        prices = [feed[p]["price"] for p in shown_at.values()]
        floor = min(prices) if prices else 0.0
        events, which = [], []
        for i, x in enumerate(ranked):
            if x["ad"]["campaign"] != "auto":
                continue
            won = i in shown_at
            events.append({"advertiser": x["ad"]["advertiser"], "alpha": alphas[x["ad"]["advertiser"]],
                           "bid": x["ecpm"], "pvalue": x["pctcvr"], "won": won, "price": x["price"] if won else 0.0,
                           "lwc": x["price"] if won else floor, "conversions": x["pctcvr"] if won else 0.0})
            which.append(i)
        if not events:
            return set()
        key = f"{self.graph_id}:{next(self._seq)}:{rid}"
        won = {i for i, ev in zip(which, events, strict=True) if ev["won"]}
        timeout, late = self._timeout(until)
        if timeout <= 0:  # never sent: nothing billed, nothing to void
            fallbacks["pacing"] = f"{late}: settle not started; auto-bidding ads removed"
            return won
        self.counters["settles"] += 1
        t0 = time.perf_counter()
        try:
            granted = await asyncio.wait_for(self.ledger.settle(events, key), timeout)
            if not isinstance(granted, list | tuple) or len(granted) != len(events):
                raise ValueError(f"the ledger answered {len(events)} events with {granted!r:.80}")
        except BaseException as exc:  # timeout, error, cancellation: it may have run all the same
            self.counters["settle_failures"] += 1
            self._void_soon(key)
            if not isinstance(exc, Exception):
                raise  # cancelled: nothing is shown; the void undoes what the settle may have done
            why = late if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            fallbacks["pacing"] = f"settle failed ({why}); auto-bidding ads removed"[:300]
            return won
        finally:
            timings["settle"] = round((time.perf_counter() - t0) * 1e3, 3)
        refused = {i for i, ok, ev in zip(which, granted, events, strict=True) if ev["won"] and not ok}
        self.counters["refused"] += len(refused)
        now = day_and_step(self.clock(), self.pacing)
        for i in refused:  # budget spent: the advertiser sits out the rest of the step
            self._refused[ranked[i]["ad"]["advertiser"]] = now
        return refused

    def _void_soon(self, key: str) -> None:
        """Void settle ``key`` in the background (see the module docstring)."""
        task = asyncio.get_running_loop().create_task(self._void(key))
        self._voiding.add(task)
        task.add_done_callback(self._voiding.discard)

    async def _void(self, key: str) -> None:
        delay = 0.05
        for attempt in range(VOID_ATTEMPTS):
            try:
                await asyncio.wait_for(self.ledger.void(key), max(1.0, 5 * self.settings.stage_timeout_s))  # type: ignore[union-attr]
                self.counters["voids"] += 1
                return
            except Exception as exc:  # noqa: BLE001 - a void is idempotent: try again
                if attempt == VOID_ATTEMPTS - 1:
                    self.counters["void_failures"] += 1
                    log.error("pacing: void of settle %s failed %d times (last: %s: %s); if that settle ran, "
                              "its charges stay counted as spent (ads not shown, budget under-used)",
                              key, VOID_ATTEMPTS, type(exc).__name__, exc)
                    return
            await asyncio.sleep(delay)
            delay = min(5.0, 2 * delay)

    async def drain(self) -> None:
        """Wait for the voids in flight (tests, benchmarks and shutdown)."""
        while self._voiding:
            await asyncio.gather(*list(self._voiding), return_exceptions=True)


def _unshow(feed: list[dict[str, Any]], shown: list[int], hidden: set[int], organic: list[dict[str, Any]]
            ) -> list[dict[str, Any]]:
    """``feed`` without the ads of ranked indices ``hidden``: their positions and the organic ones
    take the organic items in order; with none left a position is left out, the rest renumbered.
    Only ads already on ``feed`` remain (an ad not on it was not settled as shown)."""
    out: list[dict[str, Any]] = []
    oi = 0
    for item, ai in zip(feed, shown, strict=True):
        if ai >= 0 and ai not in hidden:
            out.append({**item, "position": len(out)})
        elif oi < len(organic):
            out.append({"position": len(out), "kind": "organic", "id": organic[oi]["item_id"]})
            oi += 1
    return out


async def _none() -> None:
    return None


def _nonfinite(obj: dict[str, Any] | list[Any] | tuple[Any, ...], path: str = "") -> str | None:
    """The path of the first non-finite float in a stage's answer (nested dicts and lists), or None."""
    named = isinstance(obj, dict)
    for k, v in obj.items() if named else enumerate(obj):
        if isinstance(v, float):
            if not math.isfinite(v):
                return f"{_where(path, k, named)} = {v}"
        elif isinstance(v, dict | list | tuple) and (bad := _nonfinite(v, _where(path, k, named))) is not None:
            return bad
    return None


def _where(path: str, key: Any, named: bool) -> str:
    return (f"{path}.{key}" if path else str(key)) if named else f"{path}[{key}]"
