"""Open-loop load on the composed feed graph (``POST /v1/feed``), and the same graph in-process.

    python benchmarks/graph_load.py --rps 100 --seconds 30 --json
    python benchmarks/graph_load.py --rps 25,50,100,200 --seconds 20 --mode split --json

Models: the latest published ``pwiser``, ``vamo``, ``drlput``, ``crossdqn``, ``mtorl`` in the
registry ($ADRAY_HOME/registry unless --registry); those missing are trained first on their
``smoke`` config with generated data (``--train-missing``, default on). Requests: 50 candidate ads
(20 advertisers, every other one auto-bidding) and 20 organic items, assembled from each model's
dataset (``serve_apps.feed_requests``). If no app named ``--name`` is running, the graph is
deployed (``--mode``, ``--replicas``, ``--batch-wait-ms``; a running one is rolled to these options
unless ``--reuse``) on the local Ray (``adray serve`` starts one if needed). Requests go to the
graph replicas' own ports, round-robin, when the cluster runs Serve's direct ingress (clusters
adray starts do: ``adray.runtime.SERVE_FAST_PATH``), else, or with ``--path proxy``, to Serve's
HTTP port; the line's ``path`` says which: ``direct``, ``proxy`` (Serve's Python proxy) or
``haproxy`` (Serve's HAProxy ingress: start the cluster with ``ADRAY_SERVE_INGRESS=haproxy``).
Each replica first gets ``WARMUP`` requests, not counted. The client is a lean HTTP/1.1 one
(``benchmarks/http1.py``, 0.27-0.35 ms of CPU a request) or, with ``--client c``, the C generator
(``benchmarks/openloop.c``, built with the machine's ``cc`` into ``build/``), at the niceness of
Ray's workers: it shares the cores with the graph.

Load is open loop: request i is sent at t0 + i / rps whatever the answers before it did, so a
slow server shows as latency, not as a lower sending rate. Every request carries ``x-deadline-ms``
(``--deadline-ms``, 100). Per rate, one JSON line: ``rps`` (the rate asked), ``achieved_rps``
(answers per second), ``requests``, ``errors`` (failures other than deliberate shedding),
``p50_ms``, ``p90_ms``, ``p99_ms`` (of answered requests, client side, send to answer), ``shed``,
``shed_share``, ``shed_p99_ms`` (503s of the admission or Serve's bounded queue), ``goodput_rps``
(answers within the deadline per second), ``late_share``, ``deadline_ms``, ``stage_p50_ms`` (the
graph's own per-stage times, from the answers), ``fallback_share`` (answers with any stage fallen
back), ``deadline_fallback_share`` (with a stage not run for want of time), ``cpu_ms_per_request``
and ``cpu_cores`` (CPU seconds per request sent, and per second, of this host's graph replicas, the
pacing ledger, this client and the whole machine, from ``/proc``: ``benchmarks/proc_cpu.py``),
``replica_cpu_ms_per_answer`` (the replicas' CPU per answered request: how fast the host was,
between lines that saturate the replicas; below saturation their idle work is in it too),
``replica_shed`` (by reason: what the replicas' own admission shed; the rest of ``shed`` was shed
in front of them) and ``replica_waited`` (requests that waited for a slot,
``--admission-wait-ms``), from each replica's ``/v1/graph`` before and after. ``--recovery
OVER,NORMAL,SECONDS`` adds a line: OVER req/s for SECONDS then NORMAL req/s, and how many seconds
after the switch every 1 s window is back to normal latency. Then one line ``direct``: the same
requests through the same FeedGraph in this process (stages on the loop, an in-memory ledger: no
HTTP, no Serve, no actor hops), sequentially: its p50/p99 per request is the floor that Serve's
hops and queueing add to.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from typing import Any

import numpy as np

from serve_apps.feed_graph import DEADLINE

CLIENT_NICE = 15
"""The load generator's niceness: that of Ray's workers (see main)."""
WARMUP = 50
"""Requests sent one by one to each URL before the timed run: a fresh replica's first ~2 s of
requests are slow (torch's first calls, allocator growth; measured p99 1.4 s in the first 2.5 s at
100/s), and the figures are for the steady state."""


class Tally:
    """What an open-loop run counts, answer by answer: latencies of answered and of shed requests
    (a 503 that the admission, ``"shed"``, or Serve's bounded queue, ``backpressure``, answered),
    errors, fallbacks and the graph's own stage times."""

    def __init__(self, trace: list[tuple[float, float, dict[str, float]]] | None) -> None:
        self.trace = trace
        self.lat: list[float] = []
        self.shed_lat: list[float] = []
        self.stages: dict[str, list[float]] = {}
        self.errors = self.fallbacks = self.late_fallbacks = 0

    def add(self, t: float, ms: float, status: int, raw: bytes) -> None:
        """One answer: sent at ``t`` s after t0, ``ms`` to answer (status 0: none came)."""
        if status == 503 and (b'"shed"' in raw or b"backpressure" in raw):  # shed on purpose
            self.shed_lat.append(ms)
            if self.trace is not None:
                self.trace.append((round(t, 4), round(ms, 2), {"shed": 1.0}))
            return
        if status != 200:
            self.errors += 1
            return
        self.lat.append(ms)
        ans = json.loads(raw)
        if self.trace is not None:
            self.trace.append((round(t, 4), round(ms, 2), ans["latency_ms"]))
        self.fallbacks += bool(ans["fallbacks"])
        self.late_fallbacks += any(DEADLINE in v for v in ans["fallbacks"].values())
        for k, v in ans["latency_ms"].items():
            self.stages.setdefault(k, []).append(v)

    def result(self, rps: float, n: int, wall: float, deadline_ms: float,
               cpu: dict[str, float] | None) -> dict[str, Any]:
        lat, shed_lat = self.lat, self.shed_lat
        q = np.percentile(lat, [50, 90, 99]) if lat else [float("nan")] * 3
        in_time = sum(1 for x in lat if x <= deadline_ms)
        return {"rps": rps, "achieved_rps": round(len(lat) / wall, 2), "requests": n, "errors": self.errors,
                "p50_ms": round(float(q[0]), 2), "p90_ms": round(float(q[1]), 2), "p99_ms": round(float(q[2]), 2),
                "shed": len(shed_lat), "shed_share": round(len(shed_lat) / n, 4),
                "shed_p99_ms": round(float(np.percentile(shed_lat, 99)), 2) if shed_lat else None,
                "goodput_rps": round(in_time / wall, 2), "deadline_ms": deadline_ms,
                "late_share": round(1 - in_time / max(len(lat), 1), 4),
                "stage_p50_ms": {k: round(float(np.median(v)), 2) for k, v in sorted(self.stages.items())},
                "fallback_share": round(self.fallbacks / max(len(lat), 1), 4),
                "deadline_fallback_share": round(self.late_fallbacks / max(len(lat), 1), 4),
                "seconds": round(wall, 1),
                **({"cpu_ms_per_request": {k: round(v * 1e3 / n, 2) for k, v in cpu.items()},
                    "cpu_cores": {k: round(v / wall, 2) for k, v in cpu.items()},
                    # the host's speed at the time: at saturation the same answer costs the replicas 4 ms of CPU in a
                    # fast minute and 6-7 in a slow one on the development machine (README)
                    "replica_cpu_ms_per_answer": round(cpu["replicas"] * 1e3 / len(lat), 2) if lat and "replicas" in cpu
                    else None} if cpu is not None else {})}


async def open_loop(urls: list[str], requests: list[dict[str, Any]], rps: float, seconds: float,
                    trace: list[tuple[float, float, dict[str, float]]] | None = None,
                    deadline_ms: float = 100.0, warmup: bool = True,
                    sends: list[float] | None = None, meter: Any = None, client: str = "python") -> dict[str, Any]:
    """Request i goes to ``urls[i % len(urls)]`` at t0 + i / rps (or t0 + ``sends[i]``). Bodies are
    encoded once (the request id is spliced into the bytes) and sent by a lean HTTP/1.1 client: in
    this process (``client="python"``, ``benchmarks/http1.py``) or by the C generator
    (``client="c"``, ``benchmarks/openloop.c``: 0.06-0.10 ms of CPU a request against 0.14-0.28 for
    the Python one, measured side by side at 450-1800/s), so the client takes
    little of the CPU the graph needs. Warm-up requests go through the Python client either way."""
    from http1 import Http1Pool

    sends = sends if sends is not None else [i / rps for i in range(max(1, int(rps * seconds)))]
    n = len(sends)
    tally = Tally(trace)
    marker = "\u0000rid\u0000"
    templates = [tuple(json.dumps({**r, "request_id": marker}, separators=(",", ":")).encode().split(
        json.dumps(marker).encode())) for r in requests]
    headers = {"content-type": "application/json", "x-deadline-ms": f"{deadline_ms:g}"}
    pools = [Http1Pool(u) for u in urls]
    try:

        async def post(i: int, rid: str) -> tuple[int, bytes]:
            head, tail = templates[i % len(templates)]
            return await pools[i % len(pools)].post("/v1/feed", head + rid.encode() + tail, headers)

        for k in range(WARMUP * len(urls) if warmup else 0):  # open connections, warm the replicas; not counted
            await post(k, '"warmup"')
        if client == "c":
            from openloop_c import run as run_c

            for pool in pools:
                pool.close()
            if meter is not None:
                meter.start()
            answers, stats = await asyncio.to_thread(run_c, urls, templates, sends, f"load-{rps:g}-", deadline_ms)
            wall = stats["wall_s"]
            cpu = meter.stop() if meter is not None else None
            if cpu is not None:  # the generator is a child process: its CPU as it measured it
                cpu["client"] += stats["cpu_s"]
            for status, sent, ms, raw in answers:
                tally.add(sent, ms, status, raw)
            return tally.result(rps, n, wall, deadline_ms, cpu)
        t0 = time.perf_counter() + 0.5  # every request's coroutine exists before the first is due
        # The client's own cyclic GC would pause every request in flight (a full collection of this
        # process, with Ray and torch imported, takes ~100-250 ms) and show as server latency.
        gc.disable()
        if meter is not None:
            meter.start()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, t0 + sends[i] - time.perf_counter()))
            s = time.perf_counter()
            try:
                status, raw = await post(i, f'"load-{rps:g}-{i}"')
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                status, raw = 0, b""
            tally.add(s - t0, (time.perf_counter() - s) * 1e3, status, raw)

        try:
            await asyncio.gather(*(one(i) for i in range(n)))
        finally:
            gc.enable()
        wall = time.perf_counter() - t0
        cpu = meter.stop() if meter is not None else None
    finally:
        for pool in pools:
            pool.close()
    return tally.result(rps, n, wall, deadline_ms, cpu)


def port_ingress() -> str:
    """What answers on Serve's HTTP port: ``haproxy`` (Serve's HAProxy ingress, a cluster started with
    ``ADRAY_SERVE_INGRESS=haproxy``) or ``proxy`` (Serve's Python proxy)."""
    from ray.util.state import list_actors

    alive = list_actors(filters=[("class_name", "=", "HAProxyManager"), ("state", "=", "ALIVE")])
    return "haproxy" if alive else "proxy"


def recovery(urls: list[str], requests: list[dict[str, Any]], over: float, normal: float, seconds: float,
             deadline_ms: float, trace: list[tuple[float, float, dict[str, float]]],
             client: str = "python") -> dict[str, Any]:
    """``over`` req/s for ``seconds``, then ``normal`` req/s for 10 s, in one open loop. Normal latency
    is the p99 of the last 5 s at ``normal``; recovered: from the first 1 s window after the switch
    from which on every window's p99 is within 1.5x of it (and above nothing is shed)."""
    sends = [i / over for i in range(int(over * seconds))]
    sends += [seconds + i / normal for i in range(int(normal * 10))]
    out = asyncio.run(open_loop(urls, requests, over, seconds + 10, trace, deadline_ms=deadline_ms, warmup=False,
                                sends=sends, client=client))
    answered = [(t, ms) for t, ms, st in trace if "shed" not in st]
    tail = [ms for t, ms in answered if t >= seconds + 5]
    normal_p99 = float(np.percentile(tail, 99)) if tail else float("nan")
    windows = []
    for k in range(10):
        w = [(ms, "shed" in st) for t, ms, st in trace if seconds + k <= t < seconds + k + 1]
        lat = [ms for ms, shed in w if not shed]
        windows.append({"t": k, "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat else None,
                        "shed": sum(shed for _, shed in w)})
    ok = [w["p99_ms"] is not None and w["p99_ms"] <= 1.5 * normal_p99 and not w["shed"] for w in windows]
    rec = next((k for k in range(10) if all(ok[k:])), None)
    return {"recovery": True, "over_rps": over, "normal_rps": normal, "over_seconds": seconds,
            "normal_p99_ms": round(normal_p99, 2), "recovered_after_s": rec, "windows": windows,
            "requests": out["requests"], "shed": out["shed"], "errors": out["errors"]}


def cpu_meter(app: str) -> Any:
    """A meter of the CPU this host's graph replicas of ``app``, the pacing ledger, this client and
    the whole machine use during a timed run (``benchmarks/proc_cpu.py``); other nodes' processes
    are not seen."""
    import ray
    from proc_cpu import CpuMeter
    from ray.util.state import list_actors

    here = ray.get_runtime_context().get_node_id()
    alive = [a for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000) if a.node_id == here]
    return CpuMeter({"replicas": [a.pid for a in alive if a.class_name.startswith(f"ServeReplica:{app}:")],
                     "ledger": [a.pid for a in alive if a.class_name == "_PacingActor"], "client": [os.getpid()]})


def replica_counters(urls: list[str]) -> list[dict[str, Any]] | None:
    """Each replica's admission counters (``GET /v1/graph``), or None when one does not answer."""
    from adray.shed_proxy import replica_admission

    got = replica_admission(urls, timeout_s=10)
    return [got[u] for u in urls] if len(got) == len(urls) else None


def admission_delta(before: list[dict[str, Any]] | None, after: list[dict[str, Any]] | None) -> dict[str, Any]:
    """What the replicas themselves did during a run: ``replica_shed`` (by reason; the rest of
    ``shed`` was shed in front of them, by a proxy or Serve) and ``replica_waited`` (requests that
    waited for a slot, FeedArgs.admission_wait_ms). Empty when the counters cannot be read."""
    if not before or not after or len(before) != len(after):
        return {}
    pairs = list(zip(after, before, strict=True))
    shed = {r: sum(a["shed"][r] - b["shed"][r] for a, b in pairs) for r in after[0]["shed"]}
    waves = sum(a.get("waves", 0) - b.get("waves", 0) for a, b in pairs)
    started = sum(a.get("started", 0) - b.get("started", 0) for a, b in pairs)
    return {"replica_shed": shed, "replica_waited": sum(a.get("waited", 0) - b.get("waited", 0) for a, b in pairs),
            "replica_wave_mean": round(started / waves, 2) if waves else None}


def direct(refs: dict[str, str], registry: str, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """The same graph in this process: no HTTP, no Serve, an in-memory ledger."""
    import torch

    from adray.pacing import Ledger, LocalLedgerClient, PacingSettings
    from serve_apps.feed_batching import LocalStage
    from serve_apps.feed_graph import FeedGraph, GraphSettings

    torch.set_num_threads(1)
    stages = {role: LocalStage.load(ref, registry) for role, ref in refs.items()}
    window = int(stages["allocation"].handle.policy.meta["obs_layout"]["window"])
    pacing = PacingSettings(steps_per_day=int(stages["bidding"].handle.policy.meta.get("steps_per_day", 48)))
    ledger = LocalLedgerClient(Ledger(None, "bench", pacing))
    graph = FeedGraph(stages, ledger, GraphSettings(window=window, stage_timeout_s=10.0), pacing)
    gc.freeze()  # as FeedIngress does after loading its models
    lat = []
    for i, req in enumerate(requests * 3):
        s = time.perf_counter()
        asyncio.run(graph.decide({**req, "request_id": f"direct-{i}"}))
        lat.append((time.perf_counter() - s) * 1e3)
    lat = lat[len(requests):]  # first pass warms up
    q = np.percentile(lat, [50, 90, 99])
    return {"direct": True, "requests": len(lat), "p50_ms": round(float(q[0]), 2), "p90_ms": round(float(q[1]), 2),
            "p99_ms": round(float(q[2]), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rps", default="100", help="request rate(s), comma-separated")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--mode", choices=("fused", "split"), default="fused")
    ap.add_argument("--replicas", type=int, default=2, help="graph replicas (as `adray serve graph`)")
    ap.add_argument("--batch-wait-ms", type=float, default=0.0, help="fused: cross-request batching window")
    ap.add_argument("--deadline-ms", type=float, default=100.0, help="each request's deadline (x-deadline-ms)")
    ap.add_argument("--max-in-flight", type=int, default=None, help="FeedArgs.max_in_flight (default: FeedArgs')")
    ap.add_argument("--lag-target-ms", type=float, default=None, help="FeedArgs.lag_target_ms (default: FeedArgs')")
    ap.add_argument("--latency-target", type=float, default=None,
                    help="FeedArgs.latency_target: the admission limit falls while answers take longer than this "
                         "x their deadline (default: FeedArgs')")
    ap.add_argument("--admission-wait-ms", type=float, default=None,
                    help="FeedArgs.admission_wait_ms: a request over a replica's limit waits this long for a slot "
                         "(default: FeedArgs' 0, and with --path shed adray serve graph's SHED_ADMISSION_WAIT_MS)")
    ap.add_argument("--recovery", default=None, metavar="OVER,NORMAL,SECONDS",
                    help="overload then normal load, e.g. 800,100,10: OVER req/s for SECONDS, then NORMAL req/s "
                         "for 10 s; prints the time until every 1 s window is back to normal latency")
    ap.add_argument("--name", default="feed")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--registry", default=None)
    ap.add_argument("--train-missing", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--requests", type=int, default=64, help="distinct requests cycled through")
    ap.add_argument("--no-direct", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="use a running app as it is (default: deploy these options)")
    ap.add_argument("--url", default=None, help="send to this base URL as it is (no deploy)")
    ap.add_argument("--path", choices=("direct", "proxy", "shed"), default="direct",
                    help="direct: to the graph replicas' own ports, spread over them (Serve's direct ingress, "
                         "when the cluster runs it; else the proxy); proxy: through the Serve proxy; shed: "
                         "through adray's shedding HAProxy in front of the replicas' own ports (adray.shed_proxy)")
    ap.add_argument("--shed-per-replica", type=int, default=8,
                    help="shed: requests a replica takes at once (with --shed-agent-ms, at most)")
    ap.add_argument("--shed-queue-ms", type=float, default=3.0, help="shed: the longest a request waits for a replica")
    ap.add_argument("--shed-max-queue", type=int, default=16,
                    help="shed: requests that may wait in the proxy at once; more are shed on arrival")
    ap.add_argument("--shed-buffer-kb", type=int, default=64,
                    help="shed: HAProxy's buffer and body buffering (ShedSettings.buffer_kb; 0: off)")
    ap.add_argument("--shed-agent-ms", type=float, default=20.0,
                    help="shed: HAProxy asks each replica's admission limit this often and sends it no more "
                         "(ShedSettings.agent_inter_ms, FeedArgs.admission_agent; 0: off)")
    ap.add_argument("--shed-nice", type=int, default=0, help="shed: HAProxy's niceness (the replicas run at 15)")
    ap.add_argument("--trace", default=None, help="write each answered request's send time (s), latency (ms) "
                                                  "and the graph's own stage times to this JSON file (where the tail comes from)")
    ap.add_argument("--client-nice", type=int, default=CLIENT_NICE,
                    help="the load generator's niceness (15: Ray's workers'; 0: ahead of the server it loads, "
                         "as a client on another machine would be; needs root)")
    ap.add_argument("--client", choices=("python", "c"), default="python",
                    help="the load generator: python (benchmarks/http1.py in this process, 0.27-0.35 ms of CPU a "
                         "request) or c (benchmarks/openloop.c, built with the machine's cc into build/)")
    ap.add_argument("--json", action="store_true", help="only the JSON lines on stdout")
    args = ap.parse_args()

    import ray
    from ray import serve

    from adray.cli_serve import connect, direct_urls, http_url, serve_graph
    from adray.serving import default_registry
    from serve_apps.feed_app import FeedArgs
    from serve_apps.feed_requests import latest_models, model_sources, sample_feed_requests

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    registry = args.registry or default_registry()
    connect(None)
    refs = latest_models(registry, args.train_missing)
    requests = sample_feed_requests(model_sources(refs, registry), args.requests, n_ads=50, n_organic=20,
                                    n_advertisers=20, budget=1e9, seed=0)
    deployed: FeedArgs | None = None  # None: an app as it ran (--url, --reuse): its options are not known here
    if args.url:
        urls, path = [args.url.rstrip("/")], "url"
    else:
        status = serve.status().applications.get(args.name)
        if status is None or not str(status.status).endswith("RUNNING") or not args.reuse:
            from adray.cli_serve import gated_admission

            extra = {k: v for k, v in (("max_in_flight", args.max_in_flight), ("lag_target_ms", args.lag_target_ms),
                                       ("latency_target", args.latency_target),
                                       ("admission_wait_ms", args.admission_wait_ms)) if v is not None}
            if args.path == "shed":  # as `adray serve graph --shed-port` deploys it
                extra.update(gated_admission(args.admission_wait_ms, args.shed_agent_ms))
            deployed = FeedArgs(**refs, registry=registry, mode=args.mode, num_replicas=args.replicas,
                                batch_wait_s=args.batch_wait_ms / 1e3, serve_unpromoted=True,  # latest versions
                                **extra)
            serve_graph(deployed, port=args.port, name=args.name)
        urls = direct_urls(args.name) if args.path in ("direct", "shed") else []
        path = "direct" if urls else port_ingress()
        urls = urls or [http_url()]
        if args.path == "shed" and path != "direct":
            raise SystemExit("--path shed needs Serve's direct ingress (a cluster adray starts runs it)")
    meter = cpu_meter(args.name)
    replicas = list(urls) if path == "direct" else []  # the replicas' own ports (their admission counters)
    ray.shutdown()  # the load generator is no Ray driver: it would also receive every worker's log lines
    # Ray runs its workers, the graph's replicas among them, at niceness 15 (the raylet's
    # worker_niceness); a client at 0 on the same cores would take the CPU from the server it
    # measures whenever it wants it (28x a niced process's weight). Same niceness: a fair share.
    if args.client_nice != os.nice(0):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.client_nice)
        except OSError as exc:
            raise SystemExit(f"--client-nice {args.client_nice}: {exc} (lowering it needs root)") from None
    shed = None
    if args.path == "shed":  # as `adray serve graph --shed-port` runs it: HAProxy at --shed-nice
        from multinode import free_port  # benchmarks/ is on the path, as for http1

        from adray.shed_proxy import ShedProxy, ShedSettings

        shed = ShedProxy(ShedSettings(port=free_port(), host="127.0.0.1", per_replica=args.shed_per_replica,
                                      queue_ms=args.shed_queue_ms, max_queue=args.shed_max_queue,
                                      buffer_kb=args.shed_buffer_kb, agent_inter_ms=args.shed_agent_ms,
                                      nice=args.shed_nice))
        agents = {}
        if args.shed_agent_ms:
            from adray.shed_proxy import replica_agents

            agents = replica_agents(urls)  # this first request to a replica starts its agent
            if len(agents) != len(urls):
                raise SystemExit(f"--shed-agent-ms: {len(agents)} of {len(urls)} replicas report an agent port "
                                 "(deployed with --reuse without FeedArgs.admission_agent?)")
        shed.start(urls, agents=agents)
        urls, path = [f"http://127.0.0.1:{shed.settings.port}"], "shed"
    traces: dict[str, list[tuple[float, float, dict[str, float]]]] = {}
    head = {"path": path, "deployed": deployed is not None, "client": args.client, "client_nice": os.nice(0),
            **({"shed_per_replica": args.shed_per_replica, "shed_queue_ms": args.shed_queue_ms,
                "shed_max_queue": args.shed_max_queue, "shed_buffer_kb": args.shed_buffer_kb,
                "shed_agent_ms": args.shed_agent_ms,
                "shed_nice": shed.nice}
               if shed else {}),
            **({"mode": deployed.mode, "replicas": deployed.num_replicas, "batch_wait_ms": deployed.batch_wait_s * 1e3,
                "max_in_flight": deployed.max_in_flight, "lag_target_ms": deployed.lag_target_ms,
                "latency_target": deployed.latency_target, "admission_wait_ms": deployed.admission_wait_ms}
               if deployed is not None else {})}
    for rps in (float(r) for r in args.rps.split(",")):
        before = replica_counters(replicas)
        out = asyncio.run(open_loop(urls, requests, rps, args.seconds, traces.setdefault(f"{rps:g}", []),
                                    deadline_ms=args.deadline_ms, meter=meter, client=args.client))
        print(json.dumps({**head, **out, **admission_delta(before, replica_counters(replicas))}), flush=True)
    if args.recovery:
        over, normal, secs = (float(x) for x in args.recovery.split(","))
        print(json.dumps({**head, **recovery(urls, requests, over, normal, secs, args.deadline_ms,
                                             traces.setdefault("recovery", []), args.client)}), flush=True)
    if shed is not None:
        shed.stop()
    if args.trace:
        with open(args.trace, "w") as f:
            json.dump(traces, f)
    if not args.no_direct:
        print(json.dumps(direct(refs, registry, requests)), flush=True)


if __name__ == "__main__":
    main()
