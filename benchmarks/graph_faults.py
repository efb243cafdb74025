"""A stage replica killed under steady load: failed requests, fallbacks, time back to full capacity.

    python benchmarks/graph_faults.py --rps 20 --seconds 30 --stage ranking --json

Deploys the feed graph in split mode (one deployment per stage) with ``--stage-replicas`` (2)
replicas per stage under the name ``feed-faults``, sends open-loop load (``graph_load.open_loop``'s
requests) and, ``--kill-at`` seconds in, kills one replica of ``--stage`` with ``ray.kill`` (as a
crashed process would die: no graceful drain). Prints one JSON line: requests, ``errors`` (non-200
answers or client failures: the goal is 0, every stage falls back), ``fallbacks`` (answers where
the killed stage fell back), ``p50_ms``/``p99_ms`` before and after the kill, and
``recovery_s`` (from the kill until Serve, having seen the replica gone, reports the stage's
replicas all RUNNING again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

import numpy as np


def _replicas(app: str, deployment: str) -> dict[str, int]:
    from ray import serve

    st = serve.status().applications[app].deployments[deployment]
    return {str(k): int(v) for k, v in st.replica_states.items()}


def _kill_one(app: str, deployment: str) -> str:
    import ray
    from ray.util import list_named_actors

    names = [a for a in list_named_actors(all_namespaces=True)
             if a["namespace"] == "serve" and f"{app}#{deployment}#" in a["name"]]
    if not names:
        raise SystemExit(f"no replica actor of {app}/{deployment} found")
    ray.kill(ray.get_actor(names[0]["name"], namespace="serve"), no_restart=True)
    return names[0]["name"]


async def run(url: str, requests: list[dict[str, Any]], rps: float, seconds: float, kill_at: float, app: str,
              deployment: str, stage: str, want: int) -> dict[str, Any]:
    import httpx

    n = int(rps * seconds)
    rows: list[tuple[float, float, bool, bool]] = []  # (sent at, latency ms, ok, fell back)
    killed: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        t0 = time.perf_counter()

        async def one(i: int) -> None:
            at = i / rps
            await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
            s = time.perf_counter()
            try:
                r = await client.post("/v1/feed", json={**requests[i % len(requests)], "request_id": f"fault-{i}"})
                ok = r.status_code == 200
                fb = ok and stage in r.json()["fallbacks"]
            except httpx.HTTPError:
                ok, fb = False, False
            rows.append((at, (time.perf_counter() - s) * 1e3, ok, fb))

        async def killer() -> None:
            await asyncio.sleep(kill_at)
            killed["at"] = time.perf_counter() - t0
            killed["name"] = await asyncio.to_thread(_kill_one, app, deployment)
            seen_down = False
            while True:  # the controller notices the loss, then the stage is back to full capacity
                await asyncio.sleep(0.25)
                states = await asyncio.to_thread(_replicas, app, deployment)
                full = states.get("RUNNING", 0) >= want and sum(states.values()) == states.get("RUNNING", 0)
                seen_down = seen_down or not full
                if seen_down and full:
                    killed["recovered"] = time.perf_counter() - t0
                    return
                if time.perf_counter() - t0 > kill_at + 120:
                    return

        await asyncio.gather(killer(), *(one(i) for i in range(n)))
    before = [lat for at, lat, ok, _ in rows if ok and at < killed["at"]]
    after = [lat for at, lat, ok, _ in rows if ok and at >= killed["at"]]

    def q(x: list[float], p: float) -> float:
        return round(float(np.percentile(x, p)), 2) if x else float("nan")

    return {"rps": rps, "requests": n, "errors": sum(not ok for *_, ok, _ in rows),
            "fallbacks": sum(fb for *_, fb in rows), "killed": killed["name"], "kill_at_s": round(killed["at"], 2),
            "recovery_s": round(killed.get("recovered", float("nan")) - killed["at"], 2),
            "p50_ms_before": q(before, 50), "p99_ms_before": q(before, 99),
            "p50_ms_after": q(after, 50), "p99_ms_after": q(after, 99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rps", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--kill-at", type=float, default=10.0)
    ap.add_argument("--stage", default="ranking")
    ap.add_argument("--stage-replicas", type=int, default=2)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--registry", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from ray import serve

    from adray.cli_serve import connect, serve_graph
    from adray.serving import default_registry
    from serve_apps.feed_app import FeedArgs
    from serve_apps.feed_requests import latest_models, model_sources, sample_feed_requests

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    registry = args.registry or default_registry()
    connect(None)
    refs = latest_models(registry, True)
    requests = sample_feed_requests(model_sources(refs, registry), 64, seed=1, budget=1e9)
    app = "feed-faults"
    url = serve_graph(FeedArgs(**refs, registry=registry, mode="split", stage_replicas=args.stage_replicas,
                               stage_cpus=0.1, replica_cpus=0.25, ledger_name="pacing-faults",
                               serve_unpromoted=True),  # the latest versions, unpromoted
                      port=args.port, name=app, route_prefix=f"/{app}")
    try:
        out = asyncio.run(run(f"{url}/{app}", requests, args.rps, args.seconds, args.kill_at, app,
                              f"stage-{args.stage}", args.stage, args.stage_replicas))
    finally:
        serve.delete(app)
    print(json.dumps({"stage": args.stage, "stage_replicas": args.stage_replicas, **out}), flush=True)


if __name__ == "__main__":
    main()
