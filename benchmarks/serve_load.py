"""Open-loop load on the ranking endpoint: p50/p99 latency and error rate vs request rate.

    python benchmarks/serve_load.py                       # default option sets, 1 and 2 replicas
    python benchmarks/serve_load.py --options base --replicas 1 --rates 25 50 --json
    RAY_SERVE_THROUGHPUT_OPTIMIZED=1 python benchmarks/serve_load.py --options base --label tput

Open loop: request i is *scheduled* at t0 + i / rate whether or not earlier ones have returned,
and its latency is measured from that scheduled time (no coordinated omission). Every request
carries 50 candidate ads drawn from the pwiser generator's test split; the model is the pwiser
default config (PLE) with untrained weights unless ``--model`` names a published one (latency
does not depend on the weights). The in-process figure is the same policy ``decide`` on the same 50
candidates without Serve or HTTP; the overhead ratio is HTTP p50 / in-process p50.
Ray Serve environment options (RAY_SERVE_*) are read when Ray starts: run one process per value.
The load generator runs on the same machine as Serve and takes CPU from it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

OPTION_SETS: dict[str, dict[str, Any]] = {
    "base": {"max_batch_size": 8, "batch_wait_timeout_s": 0.002},
    "nobatch": {"max_batch_size": 1, "batch_wait_timeout_s": 0.0},
    "batch32": {"max_batch_size": 32, "batch_wait_timeout_s": 0.01},
    "concat": {"max_batch_size": 8, "batch_wait_timeout_s": 0.002, "concat_batches": True},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(model: str | None, registry: str | None, work: Path) -> tuple[str, str, list[dict]]:
    """(model ref, registry dir, candidate rows) — publishes an untrained default pwiser if needed."""
    import torch

    from adray.data import read_dataset
    from adray.models import write_model_dir
    from adray.registry import Registry
    from adray.workload import get_workload

    wl = get_workload("pwiser")
    cfg = wl.config_cls(rows=5000)
    data = work / "data"
    wl.make_data(cfg, data)
    meta = wl.trainer.spec.model_meta(data, cfg)
    registry = registry or str(work / "registry")
    if model is None:
        torch.manual_seed(0)
        write_model_dir(work / "ckpt", {"model.pt": wl.trainer.spec.build_model(cfg, meta).state_dict()}, cfg, meta)
        model = Registry(registry).publish("pwiser", work / "ckpt", {"workload": "pwiser", "config": cfg.to_dict()}).ref
    df = read_dataset(data).read("test")
    rows = df.drop(columns=[c for c in ("click", "conversion", "noise_click") if c in df]).to_dict("records")
    for i, r in enumerate(rows):
        r["ad_id"] = f"ad{i}"
    return model, registry, rows


def in_process_ms(model: str, registry: str, rows: list[dict], n: int = 300) -> float:
    """p50 of the policy's decide on one validated request of 50 candidates (what a replica runs)."""
    import torch

    from adray.serving import PolicyHandle, validate_requests

    torch.set_num_threads(1)  # as in a replica
    handle = PolicyHandle(model, registry)
    req = validate_requests(type(handle.policy), handle.policy.meta, [{"candidates": rows[:50]}])
    times = []
    for _ in range(n):
        t = time.perf_counter()
        handle.decide(req)
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1e3)


async def open_loop(url: str, bodies: list[bytes], rate: float, duration_s: float) -> dict[str, float]:
    import httpx

    n = int(rate * duration_s)
    lat: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:

        async def one(i: int, scheduled: float) -> None:
            try:
                r = await client.post(url, content=bodies[i % len(bodies)],
                                      headers={"content-type": "application/json"})
                kind = "" if r.status_code == 200 else f"http_{r.status_code}"
            except httpx.HTTPError as exc:
                kind = type(exc).__name__
            if kind:
                errors[kind] = errors.get(kind, 0) + 1
            else:
                lat.append(time.perf_counter() - scheduled)

        t0 = time.perf_counter() + 0.1
        tasks = []
        for i in range(n):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        sent_s = time.perf_counter() - t0
        await asyncio.gather(*tasks)
    ms = np.array(lat) * 1e3 if lat else np.array([np.nan])
    return {"rate": rate, "sent_rate": n / sent_s, "requests": n, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "error_rate": sum(errors.values()) / n, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--options", nargs="+", default=["base", "nobatch", "concat"], choices=sorted(OPTION_SETS))
    ap.add_argument("--replicas", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rates", nargs="+", type=float, default=[25, 50, 100, 200])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of load per rate")
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--model", default=None, help="published name@version (default: untrained pwiser)")
    ap.add_argument("--registry", default=None)
    ap.add_argument("--label", default="", help="tag for this run (e.g. the RAY_SERVE_* env you set)")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    a = ap.parse_args()

    from ray import serve

    from adray.cli_serve import serve_up
    from adray.runtime import ensure_ray
    from serve_apps.app import AppArgs

    env = {k: v for k, v in os.environ.items() if k.startswith("RAY_SERVE_")}
    stdout = os.dup(1)
    if a.json:  # Ray's processes print to our stdout; keep it for the one JSON line
        os.dup2(2, 1)
    with tempfile.TemporaryDirectory() as tmp:
        model, registry, rows = setup(a.model, a.registry, Path(tmp))
        base_ms = in_process_ms(model, registry, rows)
        bodies = [json.dumps({"candidates": rows[i:i + a.candidates]}).encode()
                  for i in range(0, len(rows) - a.candidates, a.candidates)]
        ensure_ray(num_cpus=os.cpu_count() or 2)
        results = []
        try:
            for opt in a.options:
                for replicas in a.replicas:
                    args = AppArgs(model=model, registry=registry, num_replicas=replicas, **OPTION_SETS[opt])
                    url = serve_up(args, port=_free_port()) + "/v1/rank"
                    asyncio.run(open_loop(url, bodies, 20, 2.0))  # warm-up
                    for rate in a.rates:
                        r = asyncio.run(open_loop(url, bodies, rate, a.duration))
                        r.update(options=opt, replicas=replicas, overhead_x=r["p50_ms"] / base_ms,
                                 loadavg_1m=os.getloadavg()[0])  # other work on the machine
                        results.append(r)
                        if not a.json:
                            print(f"  {opt:<8} replicas={replicas} rate={rate:>5.0f}/s  p50={r['p50_ms']:7.1f} ms  "
                                  f"p99={r['p99_ms']:7.1f} ms  errors={r['error_rate']:.1%} {r['errors'] or ''}",
                                  file=sys.stderr)
        finally:
            serve.shutdown()
    out = {"label": a.label, "env": env, "model": model, "candidates": a.candidates, "cpus": os.cpu_count(),
           "in_process_p50_ms": base_ms, "results": results}
    if a.json:
        sys.stdout.flush()
        os.dup2(stdout, 1)
        print(json.dumps(out), flush=True)
        return
    print(f"\nin-process scoring of {a.candidates} candidates: p50 {base_ms:.2f} ms   "
          f"({os.cpu_count()} CPUs; env {env or 'default'})")
    print(f"{'options':<9}{'repl':>5}{'rate/s':>8}{'sent/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
          f"{'p50/inproc':>11}{'load1m':>8}")
    for r in results:
        print(f"{r['options']:<9}{r['replicas']:>5}{r['rate']:>8.0f}{r['sent_rate']:>8.1f}{r['p50_ms']:>9.1f}"
              f"{r['p99_ms']:>9.1f}{r['error_rate']:>8.1%}{r['overhead_x']:>11.1f}{r['loadavg_1m']:>8.1f}")


if __name__ == "__main__":
    main()
