"""Where a feed replica's CPU goes, part by part, in this process (no HTTP, no Serve, no Ray).

    python benchmarks/graph_profile.py [--requests 64] [--batches 1,4,16] [--json]

The same models and requests as ``benchmarks/graph_load.py`` (the latest published model of each
stage, 50 ads and 20 organic items a request), one torch thread as in a replica. Per request, CPU
time (``time.process_time``):

* ``parse_ms``: the body (JSON bytes) validated into the graph's input, as the replica's ingress
  does (``serve_apps.feed_ingress.parse_feed``);
* ``stage_ms[role][k]``: each stage's ``decide`` on a batch of k requests' stage inputs, per request;
* ``graph_ms[k]``: the whole graph (``FeedGraph.decide``, an in-memory ledger) on k concurrent
  requests, per request (their stage calls batch as in a replica);
* ``encode_ms``: the answer encoded to JSON bytes.

What is not here and a replica also pays: HTTP (uvicorn), Serve's per-request path, the ledger's
Ray actor call, the decision log's writer thread (``benchmarks/graph_load.py`` with ``py-spy``
on a replica shows those).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Any

import numpy as np


def cpu_per_call(fn: Any, reps: int) -> float:
    """CPU milliseconds per call of ``fn`` (median of 5 rounds of ``reps`` calls)."""
    fn()
    rounds = []
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(reps):
            fn()
        rounds.append((time.process_time() - t0) / reps * 1e3)
    return float(np.median(rounds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--registry", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from adray.pacing import Ledger, LocalLedgerClient, PacingSettings
    from adray.serving import default_registry
    from serve_apps.feed_batching import LocalStage
    from serve_apps.feed_graph import FeedGraph, GraphSettings
    from serve_apps.feed_ingress import parse_feed, stage_schemas
    from serve_apps.feed_requests import latest_models, model_sources, sample_feed_requests
    from serve_apps.feed_schema import feed_request_schema

    torch.set_num_threads(1)
    registry = args.registry or default_registry()
    refs = latest_models(registry, True)
    requests = sample_feed_requests(model_sources(refs, registry), args.requests, n_ads=50, n_organic=20,
                                    n_advertisers=20, budget=1e9, seed=0)
    stages = {role: LocalStage.load(ref, registry) for role, ref in refs.items()}
    metas = {role: st.handle.policy.meta for role, st in stages.items()}
    window = int(metas["allocation"]["obs_layout"]["window"])
    item_dim = int(metas["allocation"]["obs_layout"]["item_dim"])
    pacing = PacingSettings(steps_per_day=int(metas["bidding"].get("steps_per_day", 48)))
    graph = FeedGraph(stages, LocalLedgerClient(Ledger(None, "profile", pacing)),
                      GraphSettings(window=window, stage_timeout_s=10.0), pacing)
    schema = feed_request_schema(stage_schemas(metas, dict(refs), 500), 500)
    bodies = [json.dumps(r).encode() for r in requests]
    parsed = [parse_feed(schema, b, item_dim)[0] for b in bodies]
    gc.freeze()

    it = iter(range(10**9))
    parse_ms = cpu_per_call(lambda: parse_feed(schema, bodies[next(it) % len(bodies)], item_dim), 200)

    # each stage's input, as the graph builds it: recorded from one pass of the graph
    seen: dict[str, list[dict[str, Any]]] = {}
    for role, st in stages.items():
        orig = st.handle.decide

        def spy(reqs: Any, role: str = role, orig: Any = orig) -> Any:
            seen.setdefault(role, []).extend(reqs)
            return orig(reqs)

        st.handle.decide = spy  # type: ignore[method-assign]

    async def wave(reqs: list[dict[str, Any]]) -> list[Any]:
        return await asyncio.gather(*(graph.decide({**r, "request_id": f"p{i}"}) for i, r in enumerate(reqs)))

    outs = asyncio.run(wave(parsed[:8]))
    for st in stages.values():
        del st.handle.decide
    batches = [int(k) for k in args.batches.split(",")]
    stage_ms: dict[str, dict[int, float]] = {}
    for role, st in stages.items():
        pool = seen.get(role, [])
        if not pool:
            continue
        stage_ms[role] = {k: round(cpu_per_call(lambda k=k, st=st, pool=pool: st.handle.decide(
            [pool[i % len(pool)] for i in range(k)]), max(4, 64 // k)) / k, 3) for k in batches}
    graph_ms = {}
    for k in batches:
        start = iter(range(10**9))
        graph_ms[k] = round(cpu_per_call(lambda k=k, start=start: asyncio.run(wave(
            [parsed[(next(start) * k + j) % len(parsed)] for j in range(k)])), max(4, 64 // k)) / k, 3)
    answer = outs[0].answer
    encode_ms = cpu_per_call(lambda: json.dumps(answer, separators=(",", ":"), allow_nan=False).encode(), 500)
    out = {"requests": len(requests), "body_bytes": int(np.mean([len(b) for b in bodies])),
           "parse_ms": round(parse_ms, 3), "encode_ms": round(encode_ms, 3), "stage_ms": stage_ms,
           "graph_ms": graph_ms, "models": refs}
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
