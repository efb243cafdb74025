"""``adray demo``: the whole mission at smoke scale on an embedded local Ray.

1. data and training of every workload in ``WORKLOADS`` on its ``smoke`` config (generated data):
   pwiser, mtorl and vamo on Ray Train, crossdqn and drlput on RLlib; each model is published;
2. each model's headline metric against its trivial baseline (``Workload.headline``, the
   workload's own evaluation on its test data);
3. a short Optuna + ASHA sweep (pwiser's tune space: λ, m1, m2);
4. the composed feed graph on Ray Serve (``adray serve graph``: ranking, auto-bidding, utility,
   allocation, channel) and sample feed requests sent over HTTP: answers, fallbacks and latency;
5. a summary table. Everything ran on the embedded Ray, which stops with the demo (``adray serve
   graph`` deploys the same graph on a Ray that stays up).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from adray.config import load_config
from adray.runtime import ensure_ray
from adray.train import run_training
from adray.tune import load_space, run_sweep
from adray.workload import GENERATE, data_dir_for, get_workload, workload_names

SMOKE = "smoke"
GRAPH_ROLES = {"ranking": "pwiser", "bidding": "vamo", "utility": "drlput", "allocation": "crossdqn",
               "channel": "mtorl"}


def run_demo(workers: int = 2, trials: int = 4, address: str | None = None, requests: int = 30,
             port: int = 8000) -> None:
    console = Console(width=None if sys.stdout.isatty() else 150)  # a log file gets the whole table
    t0 = time.perf_counter()
    ensure_ray(address)
    names = workload_names()
    steps = len(names) + 3
    trained: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names, 1):
        wl = get_workload(name)
        cfg = load_config(wl.config_cls, SMOKE, wl.configs_dir, {"data": GENERATE})
        engine = "RLlib" if wl.trainer.loop_field == "iterations" else "Ray Train"
        console.rule(f"{i}/{steps}  {name} ({engine}): {wl.description}")
        t1 = time.perf_counter()
        n = workers if engine == "Ray Train" else 1
        out = run_training(wl, cfg, num_workers=n, progress=True)
        trained[name] = {"wl": wl, "cfg": cfg, "ref": out.model_ref, "train_s": time.perf_counter() - t1}
        trained[name].update(_headline(wl, cfg, out.model_ref))
    console.rule(f"{len(names) + 1}/{steps}  Optuna (TPE) + ASHA sweep over pwiser's λ, m1, m2: {trials} trials")
    space = load_space(Path(__file__).resolve().parents[2] / "tune_spaces" / "pwiser.yaml", "pwiser")
    sweep = run_sweep(space, trials=trials, config=SMOKE, overrides={"data": GENERATE}, progress=True)
    console.rule(f"{len(names) + 2}/{steps}  the feed graph on Ray Serve, {requests} requests")
    graph = _graph(trained, requests, port, console)
    console.rule(f"{steps}/{steps}  summary")
    table = Table(title="adray demo (smoke scale; each workload's own test data)")
    for col in ("workload", "model", "headline metric", "model", "baseline", "", "train s"):
        table.add_column(col, justify="left" if col in ("workload", "model", "headline metric") else "right")
    for name, t in trained.items():
        h = t["wl"].headline
        better = t["ours"] > t["base"] if h.mode == "max" else t["ours"] < t["base"]
        table.add_row(name, t["ref"], f"{h.metric} ({h.mode}) vs {h.baseline}", f"{t['ours']:.4f}",
                      f"{t['base']:.4f}", "beats" if better else "DOES NOT beat", f"{t['train_s']:.0f}")
    console.print(table)
    console.print(f"sweep: best {sweep.best_params} -> {sweep.best_metrics}; published {sweep.model_ref}")
    console.print(f"graph: {graph['url']}/v1/feed  {graph['ok']}/{graph['sent']} answered, p50 {graph['p50_ms']:.1f} ms, "
                  f"p99 {graph['p99_ms']:.1f} ms, ads shown {graph['ads']}, fallbacks {graph['fallbacks'] or 'none'}")
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s")


def _headline(wl: Any, cfg: Any, ref: str) -> dict[str, float]:
    from adray.models import load_model

    loaded = load_model(ref)
    table = wl.evaluate(cfg, data_dir_for(wl, cfg), loaded.model, {})
    h = wl.headline
    return {"ours": float(table[wl.name][h.metric]), "base": float(table[h.baseline][h.metric])}


def _graph(trained: dict[str, dict[str, Any]], n: int, port: int, console: Console) -> dict[str, Any]:
    import httpx
    import numpy as np

    from adray.cli_serve import serve_graph
    from serve_apps.feed_app import FeedArgs
    from serve_apps.feed_requests import sample_feed_requests

    refs = {role: trained[name]["ref"] for role, name in GRAPH_ROLES.items()}
    # its own ledger: a graph deployed with other pacing days (e.g. by benchmarks) keeps its state.
    # The demo serves the versions it just trained (serve_unpromoted: the demo opt-in); in production
    # the graph serves only versions moved to @serving by `adray models promote`.
    url = serve_graph(FeedArgs(**refs, day_seconds=600.0, ledger_name="adray-demo-pacing", serve_unpromoted=True),
                      port=port, name="feed")
    sources = {role: (trained[name]["wl"].policy, trained[name]["cfg"],
                      data_dir_for(trained[name]["wl"], trained[name]["cfg"])) for role, name in GRAPH_ROLES.items()}
    reqs = sample_feed_requests(sources, n, seed=int(time.time()) % 1000)
    lat, ok, ads, fallbacks = [], 0, 0, set()
    with httpx.Client(base_url=url, timeout=60) as client:
        for i, req in enumerate(reqs):
            s = time.perf_counter()
            r = client.post("/v1/feed", json=req)
            lat.append((time.perf_counter() - s) * 1e3)
            if r.status_code == 200:
                ok += 1
                ans = r.json()
                ads += sum(slot["kind"] == "ad" for slot in ans["feed"])
                fallbacks |= set(ans["fallbacks"])
                if i == 0:
                    console.print({k: ans[k] for k in ("feed", "utility", "bids", "models", "latency_ms")})
    return {"url": url, "sent": len(reqs), "ok": ok, "ads": ads, "fallbacks": sorted(fallbacks),
            "p50_ms": float(np.percentile(lat[1:], 50)), "p99_ms": float(np.percentile(lat[1:], 99))}
