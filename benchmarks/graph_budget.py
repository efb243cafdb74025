"""The ledger bills exactly what the feed shows, under load, tiny budgets and a slow ledger.

    python benchmarks/graph_budget.py --json
    python benchmarks/graph_budget.py --requests 600 --rps 15 --slow-share 0.03 --json

Deploys the real feed graph on Ray Serve (``adray serve graph``'s app: fused mode, ``--replicas``
2, the latest model of each stage as ``benchmarks/graph_load.py`` takes them, trained on their
smoke configs if missing) on a private local Ray, under a unique app and ledger name and a
non-default HTTP port. Before the graph starts, the ledger actor is registered under the graph's
ledger name as a subclass whose ``settle`` sometimes sleeps past the graph's stage timeout
(``--slow-share``, ``--slow-s``: the call still runs, after the graph gave up and hid the ads) or
runs and then raises (``--fail-share``: the reply is lost), with its audit journal on (every
grant by settle key). Advertisers get budgets spread on a log scale from ``--min-budget`` to
``--max-budget`` (the smallest are spent after a charge or two, or cannot pay one), the pacing day
is short (``--day-s``: a step of 10 s, so views are asked again every step, also during stalls;
bills are then checked per day), and
``--empty-organic-share`` of the requests have no organic item (a refused ad's position has no
organic item to take).

Load is open loop (request i at t0 + i / rps) through the Serve proxy; every answer is kept. Once
the voids of the failed settles have landed, the answers are compared with the journal:
``shown_uncharged`` (auto-bidding ads an answer shows without a standing grant of its request),
``charged_unshown`` (standing grants no answer shows, unanswered requests included) and
``overspend`` (advertisers whose spend or bills pass the budget) must all be 0. The last line is
one JSON object with those, ``requests``, ``errors`` and the counts that show what happened
(refused charges, settle timeouts/failures seen by the graph, voids that refunded, voids that came
first, settles that ran after their void, injected stalls and failures, answers per kind).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from typing import Any

import numpy as np

from adray.pacing import ACTOR_OPTIONS, PacingSettings, _PacingActor


class SlowLedger(_PacingActor):
    """The pacing ledger actor with injected faults and its audit journal on (benchmark only)."""

    def __init__(self, storage_uri: str | None, prefix: str, settings: PacingSettings, slow_share: float,
                 slow_s: float, fail_share: float, seed: int) -> None:
        super().__init__(storage_uri, prefix, settings, audit=True)
        self.slow_share, self.slow_s, self.fail_share = slow_share, slow_s, fail_share
        self.rng, self.injected = random.Random(seed), Counter()

    def settle(self, events: list[dict[str, Any]], key: str | None = None) -> list[bool]:
        r = self.rng.random()
        if r < self.slow_share:  # the whole actor stalls: this settle and every call queued behind it wait
            self.injected["slow"] += 1
            time.sleep(self.slow_s)
        out = super().settle(events, key)
        if self.slow_share <= r < self.slow_share + self.fail_share:
            self.injected["fail"] += 1
            raise RuntimeError("injected fault: the settle ran and its reply is lost")
        return out

    def injected_counts(self) -> dict[str, int]:
        return dict(self.injected)


async def send(url: str, bodies: list[dict[str, Any]], rps: float) -> list[tuple[int, dict[str, Any] | None, float]]:
    """Open loop: body i posted at t0 + i / rps; (status, answer or None, latency ms) per body."""
    import aiohttp

    out: list[tuple[int, dict[str, Any] | None, float]] = [(0, None, 0.0)] * len(bodies)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        t0 = time.perf_counter() + 0.2

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, t0 + i / rps - time.perf_counter()))
            s = time.perf_counter()
            try:
                async with session.post(url + "/v1/feed", json=bodies[i]) as r:
                    raw = await r.read()
                    out[i] = (r.status, json.loads(raw) if r.status == 200 else None, (time.perf_counter() - s) * 1e3)
            except (TimeoutError, aiohttp.ClientError):
                out[i] = (-1, None, (time.perf_counter() - s) * 1e3)

        await asyncio.gather(*(one(i) for i in range(len(bodies))))
    return out


def screens(requests: list[dict[str, Any]], n: int, budgets: dict[str, float], empty_share: float,
            rng: random.Random) -> list[dict[str, Any]]:
    """``n`` request bodies cycled from ``requests``: unique ids, the budgets, some without organic items."""
    out = []
    for i in range(n):
        req = requests[i % len(requests)]
        ads = [{**a, "auto": {**a["auto"], "budget": budgets[a["advertiser"]]}} if a["campaign"] == "auto" else a
               for a in req["ads"]]
        r = rng.random()
        organic = [] if r < empty_share else req["organic"][: 2] if r < empty_share + 0.2 else req["organic"]
        out.append({**req, "request_id": f"budget-{i}", "ads": ads, "organic": organic})
    return out


def audit(bodies: list[dict[str, Any]], results: list[tuple[int, dict[str, Any] | None, float]],
          journal: dict[str, dict[str, Any]], spent: dict[str, float], today: int,
          budgets: dict[str, float]) -> dict[str, Any]:
    """Answers against the ledger's journal and final spend (see the module docstring). Bills are
    per pacing day (a short day may turn during the run): each day's must stay within the budget,
    and today's must be the ledger's spend."""
    money = lambda x: round(float(x), 9)  # noqa: E731
    billed: dict[str, Counter[tuple[str, float]]] = {}
    day_of: dict[str, int] = {}
    for key, rec in journal.items():
        rid = key.split(":", 2)[2]
        c = billed.setdefault(rid, Counter())
        day_of[rid] = rec["day"]
        if not rec["void"]:
            c.update((a, money(p)) for a, p in rec["grants"])
    shown_uncharged = charged_unshown = auto_shown = 0
    bills: dict[tuple[str, int], float] = {}
    sent = set()
    for body, (_, answer, _) in zip(bodies, results, strict=True):
        rid = body["request_id"]
        sent.add(rid)
        auto = {a["ad_id"] for a in body["ads"] if a["campaign"] == "auto"}
        shown = Counter((s["advertiser"], money(s["price"])) for s in (answer or {}).get("feed", [])
                        if s["kind"] == "ad" and s["id"] in auto)
        got = billed.get(rid, Counter())
        shown_uncharged += sum((shown - got).values())
        charged_unshown += sum((got - shown).values())
        auto_shown += sum(shown.values())
        for (adv, price), k in (got & shown).items():
            bills[adv, day_of[rid]] = bills.get((adv, day_of[rid]), 0.0) + price * k
    charged_unshown += sum(sum(c.values()) for rid, c in billed.items() if rid not in sent)
    overspend = (sum(spent.get(a, 0.0) > b + 1e-9 for a, b in budgets.items())
                 + sum(total > budgets[a] + 1e-9 for (a, _), total in bills.items()))
    mismatch = sum(not math.isclose(spent.get(a, 0.0), bills.get((a, today), 0.0), abs_tol=1e-6) for a in budgets)
    return {"shown_uncharged": shown_uncharged, "charged_unshown": charged_unshown, "overspend": overspend,
            "spend_mismatch": mismatch, "auto_ads_shown": auto_shown, "billed": round(sum(bills.values()), 6),
            "advertiser_days_spent_out": sum(total > 0.5 * budgets[a] for (a, _), total in bills.items()),
            "auto_advertisers": len(budgets), "days": len({d for _, d in bills})}


def wait_for_voids(actor: Any, failed_rids: set[str], wait_s: float) -> dict[str, dict[str, Any]]:
    """The journal once every settle the graph saw fail is voided in it (voids retry in the background)."""
    import ray

    deadline = time.monotonic() + wait_s
    while True:
        journal = ray.get(actor.journal.remote())
        voided = {k.split(":", 2)[2] for k, rec in journal.items() if rec["void"]}
        if failed_rids <= voided or time.monotonic() > deadline:
            return journal
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=600, help="requests sent")
    ap.add_argument("--rps", type=float, default=12.0)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--port", type=int, default=8347, help="HTTP port of this benchmark's own Serve")
    ap.add_argument("--stage-timeout-s", type=float, default=0.5)
    ap.add_argument("--slow-share", type=float, default=0.03, help="settles that stall the ledger")
    ap.add_argument("--slow-s", type=float, default=0.8, help="how long (past --stage-timeout-s)")
    ap.add_argument("--fail-share", type=float, default=0.03, help="settles that run, then lose their reply")
    ap.add_argument("--empty-organic-share", type=float, default=0.3)
    ap.add_argument("--min-budget", type=float, default=0.05, help="smallest advertiser budget")
    ap.add_argument("--max-budget", type=float, default=50.0, help="largest (budgets are spread on a log scale)")
    ap.add_argument("--day-s", type=float, default=480.0,
                    help="pacing day (48 steps): short, so that advertisers' views are asked again every step")
    ap.add_argument("--advertisers", type=int, default=16, help="half of them auto-bidding")
    ap.add_argument("--registry", default=None)
    ap.add_argument("--train-missing", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="only the JSON line on stdout")
    args = ap.parse_args()
    if not args.slow_s > args.stage_timeout_s:
        raise SystemExit(f"--slow-s {args.slow_s} must exceed --stage-timeout-s {args.stage_timeout_s}: a stall "
                         "that does not outlast the graph's timeout tests nothing")

    import ray
    from ray import serve

    from adray.cli_serve import http_url, serve_graph
    from adray.runtime import ensure_ray
    from adray.serving import default_registry
    from serve_apps.feed_app import FeedArgs
    from serve_apps.feed_requests import latest_models, model_sources, sample_feed_requests

    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    registry = args.registry or default_registry()
    ensure_ray(num_cpus=2)  # a private local Ray: other Serve apps on this host are not touched
    refs = latest_models(registry, args.train_missing)
    rng = random.Random(args.seed)
    budgets = {f"adv{j}": float(v) for j, v in enumerate(np.geomspace(args.min_budget, args.max_budget,
                                                                        args.advertisers))}
    base = sample_feed_requests(model_sources(refs, registry), 64, n_ads=24, n_organic=8,
                                n_advertisers=args.advertisers, budget=1.0, seed=args.seed)
    bodies = screens(base, args.requests, budgets, args.empty_organic_share, rng)
    budgets = {a: b for a, b in budgets.items() if any(x["advertiser"] == a and x["campaign"] == "auto"
                                                       for r in bodies for x in r["ads"])}  # the auto-bidding ones

    tag = uuid.uuid4().hex[:6]
    app, ledger_name, state = f"feed-budget-{tag}", f"pacing-budget-{tag}", tempfile.mkdtemp(prefix="graph_budget-")
    steps, day_s = 48, args.day_s
    pacing = PacingSettings(steps_per_day=steps, day_seconds=day_s)
    actor = ray.remote(**ACTOR_OPTIONS)(SlowLedger).options(name=ledger_name, namespace="adray", lifetime="detached") \
        .remote(state, "pacing/" + ledger_name, pacing, args.slow_share, args.slow_s, args.fail_share, args.seed)
    ray.get(actor.identity.remote())  # registered before the graph asks for its ledger by name
    try:
        log(f"[graph_budget] deploying {app} ({args.replicas} replicas, ledger {ledger_name}, port {args.port})")
        serve_graph(FeedArgs(**refs, registry=registry, num_replicas=args.replicas, ledger_name=ledger_name,
                             state_uri=state, steps_per_day=steps, day_seconds=day_s,
                             stage_timeout_s=args.stage_timeout_s, serve_unpromoted=True),  # the latest versions
                    port=args.port, name=app, route_prefix=f"/{app}")
        url = f"{http_url()}/{app}"
        log(f"[graph_budget] {args.requests} requests at {args.rps}/s to {url}")
        t0 = time.perf_counter()
        results = asyncio.run(send(url, bodies, args.rps))
        wall = time.perf_counter() - t0
        failed = {b["request_id"] for b, (_, ans, _) in zip(bodies, results, strict=True)
                  if ans is not None and "settle failed" in ans["fallbacks"].get("pacing", "")}
        journal = wait_for_voids(actor, failed, 90.0)
        specs = [{"advertiser": a, "budget": b, "cpa_constraint": 1.0, "task": 0} for a, b in budgets.items()]
        views = ray.get(actor.views.remote(specs))
        stats, injected = ray.get(actor.stats.remote()), ray.get(actor.injected_counts.remote())
    finally:
        try:
            serve.delete(app)
        finally:
            ray.kill(actor, no_restart=True)
    out = audit(bodies, results, journal, {a: v["spent"] for a, v in views.items()}, stats["day"], budgets)
    answered = [r for r in results if r[1] is not None]
    lat = [r[2] for r in answered]
    ledger_down = sum("ledger unavailable" in r[1]["fallbacks"].get("pacing", "") for r in answered)
    line = {**{k: out[k] for k in ("shown_uncharged", "charged_unshown", "overspend")},
            "requests": len(bodies), "errors": len(bodies) - len(answered), **out,
            "refused": stats["refused"], "settle_failures_seen": len(failed), "voids_refunded": stats["voids"],
            "refunded": round(stats["refunded"], 6), "voids_first": stats["tombstones"],
            "late_settles": stats["late_settles"], "injected": injected, "views_failed": ledger_down,
            "empty_organic_requests": sum(not b["organic"] for b in bodies),
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat else None,
            "achieved_rps": round(len(answered) / wall, 2), "replicas": args.replicas,
            "stage_timeout_s": args.stage_timeout_s, "slow_share": args.slow_share, "slow_s": args.slow_s,
            "fail_share": args.fail_share, "budgets": [args.min_budget, args.max_budget], "day_s": day_s}
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    main()
