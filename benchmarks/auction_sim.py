"""Speed of the VAMO auction simulator: one AuctionNet-sized day and many days as Ray tasks.

    python benchmarks/auction_sim.py [--repeats 5] [--ray-days 8] [--json]

The day is AuctionNet's: 48 advertisers (20/20/8 over the three tasks), 48 steps, 500,000
impressions (traffic shift off so the count is exact), every advertiser bidding alpha = CPA
(``--bidders logging`` uses the logging market of the training data: PID, online LP, exploration).

* seconds per day: ``--repeats`` days in this process (one core: run with OMP_NUM_THREADS=1), best
  and median; impression x advertiser pairs per second from the best;
* peak memory: one day in a fresh child process, its ``ru_maxrss`` (the whole Python process:
  interpreter, NumPy, SciPy) and the tracemalloc peak of the day's allocations alone;
* days/s of Ray tasks: a new local Ray of 2 CPUs (``adray.runtime.ensure_ray``), ``--ray-days``
  days with 1 worker (tasks that each reserve 2 CPUs, so one runs at a time) and with 2 workers
  (1 CPU each), after a warm-up round that starts the worker processes;
* the 1-minute load average (/proc/loadavg) before and after: the machine is shared.

The anchor: the public AuctionNet simulator takes ~52 s and 2.35 GB for the same day on one core of
the development machine (measured for issue 13).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from workloads.vamo.bidders import FixedAlpha, logging_market
from workloads.vamo.config import SimConfig
from workloads.vamo.sim import simulate_day

ANCHOR = {"seconds_per_day": 52.0, "peak_mb": 2350.0}
CFG = SimConfig(task_advertisers=(20, 20, 8), impressions=500_000, steps=48, shift_traffic=0.0)


def one_day(day: int, bidders: str = "fixed") -> float:
    """Seconds of one simulated day."""
    n = CFG.n_advertisers
    market = ([(np.arange(n), FixedAlpha())] if bidders == "fixed"
              else logging_market(n, 0, day, 0.3, None))
    t0 = time.perf_counter()
    simulate_day(CFG, 0, day, market)
    return time.perf_counter() - t0


def _child(bidders: str) -> None:
    import resource

    tracemalloc.start()
    one_day(1, bidders)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"tracemalloc_mb": peak / 1e6, "maxrss_mb": rss}))


def peak_memory(bidders: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", "--bidders", bidders], check=True,
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def ray_days_per_s(days: int, bidders: str) -> dict[str, float]:
    import ray

    from adray.runtime import ensure_ray

    ensure_ray(num_cpus=2, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})  # a new local Ray, never a running one
    try:
        one, two = ray.remote(num_cpus=2)(one_day), ray.remote(num_cpus=1)(one_day)
        ray.get([two.remote(100 + i, bidders) for i in range(2)])  # warm-up: both workers import
        out = {}
        for name, task in (("ray_1_worker", one), ("ray_2_workers", two)):
            t0 = time.perf_counter()
            ray.get([task.remote(200 + i, bidders) for i in range(days)])
            out[f"{name}_days_per_s"] = days / (time.perf_counter() - t0)
        return out
    finally:
        ray.shutdown()


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ray-days", type=int, default=8)
    ap.add_argument("--bidders", choices=("fixed", "logging"), default="fixed")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.bidders)
        return
    load0 = loadavg()
    one_day(0, args.bidders)  # warm-up (imports, page faults)
    secs = sorted(one_day(1 + i, args.bidders) for i in range(args.repeats))
    pairs = CFG.impressions * CFG.n_advertisers
    res: dict[str, float | str] = {
        "advertisers": CFG.n_advertisers, "steps": CFG.steps, "impressions": CFG.impressions,
        "bidders": args.bidders, "seconds_per_day_best": secs[0],
        "seconds_per_day_median": float(np.median(secs)), "pairs_per_s": pairs / secs[0],
        **peak_memory(args.bidders),
    }
    if not args.no_ray:
        res.update(ray_days_per_s(args.ray_days, args.bidders))
    res.update({"loadavg_1m_before": load0, "loadavg_1m_after": loadavg(),
                "anchor_auctionnet_seconds_per_day": ANCHOR["seconds_per_day"],
                "anchor_auctionnet_peak_mb": ANCHOR["peak_mb"]})
    if args.json:
        print(json.dumps(res))
        return
    for k, v in res.items():
        print(f"{k:34s} {v:,.3f}" if isinstance(v, float) else f"{k:34s} {v}")


if __name__ == "__main__":
    main()
