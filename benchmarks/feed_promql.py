"""The feed graph's counters after an overload run, as a real Prometheus answers them (PromQL).

    python benchmarks/feed_promql.py --rps 400 --seconds 20 --json

Connects to the running local Ray (``adray serve``'s: a ``ray start --head`` one is started if none
runs) and starts Prometheus (``tests/prometheus.py``: Debian's package, installed when missing) in
a temporary folder, scraping every alive node's metrics endpoint every 1 s. Once every endpoint is
up and the graph's counters (``serve_apps/feed_metrics.py``; Prometheus names them
``ray_adray_feed_...``) have held still for longer than Ray's metrics export interval, their values
are the baseline. Then the overload: ``benchmarks/graph_load.py --rps RATE --seconds S --json
--no-direct --reuse`` (the app ``--name`` as it runs; deployed if none does), its JSON line printed
as it is. Once the counters hold still again, one line per PromQL query on the app's series
(``app="<name>"``): ``{"name", "query", "result": {labels: value}, "increase": {labels: after -
before}}``, labels written ``key=value,...`` (``total``: an unlabelled sum). Queries: requests by
outcome, shed by reason, fallbacks by stage and reason, refused charges, spend per advertiser,
remaining budget per advertiser (a gauge: ``increase`` is its change), decision-log rows written
and dropped, and p99 latency per stage (``histogram_quantile`` of the buckets' rate over the time
since Prometheus started, i.e. over the run: no ``increase``). The increases are differences of
sums, so a replica that restarted during the run (its series gone) makes them low.

The last line (``summary``) compares the generator's counts with Prometheus's increases:
``answered`` (ok + fallback) with the generator's answers (``requests - errors - shed``) plus its
warmup requests (``graph_load.WARMUP`` per URL, answered but not in its counts); ``shed`` (the
graph's ``adray_feed_shed_total``) with the generator's ``shed``, which also counts the 503s of
Serve's bounded queue (those never reach the graph); ``requests`` (every outcome) with all it sent.
A client timeout is a generator error that the graph may still count as answered or ``cancelled``.
Progress goes to stderr; without ``--json`` the lines are printed as text.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.prometheus import PrometheusServer

REPO = Path(__file__).resolve().parents[1]
SCRAPE_S = 1.0
"""Prometheus' scrape interval (``--scrape-s``). Each scrape costs Ray's metrics agent ~62 ms of CPU
(it renders ~740 KB of text for ~2,200 series; measured 2026-12-07), at niceness 0 above the
replicas: at 1 s that is 6% of a core in bursts every second, and the overload's goodput shows it;
Prometheus' default, 15 s, costs 0.4%."""
QUIET_MIN_S = 15.0
"""Counters unchanged this long (at least; 1.5 export intervals of Ray's metrics when longer) are final."""
COUNTERS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (  # (line name, aggregation, metric, by)
    ("requests", "sum", "adray_feed_requests_total", ("outcome",)),
    ("shed", "sum", "adray_feed_shed_total", ("reason",)),
    ("fallbacks", "sum", "adray_feed_fallbacks_total", ("stage", "reason")),
    ("refused_charges", "sum", "adray_feed_refused_charges_total", ()),
    ("spend", "sum", "adray_feed_spend_total", ("advertiser",)),
    ("budget_remaining", "max", "adray_feed_budget_remaining", ("advertiser",)),  # every replica sets the ledger's
    ("log_rows_written", "sum", "adray_feed_log_rows_written_total", ()),
    ("log_rows_dropped", "sum", "adray_feed_log_rows_dropped_total", ("reason",)),
)
Values = dict[str, float | None]


def note(msg: str) -> None:
    print(f"[feed_promql] {msg}", file=sys.stderr, flush=True)


def num(v: float) -> float | None:
    """JSON-safe: None for NaN/inf (a quantile without data), whole numbers as ints."""
    v = float(v)
    return None if not math.isfinite(v) else int(v) if v.is_integer() else round(v, 6)


def answer(prom: PrometheusServer, promql: str, by: tuple[str, ...]) -> Values:
    """``{"k=v,...": value}`` of ``promql``'s instant vector (``total`` for a series without labels)."""
    return {",".join(f"{k}={s['metric'].get(k, '')}" for k in by) or "total": num(float(s["value"][1]))
            for s in prom.query(promql)}


def promql(agg: str, metric: str, by: tuple[str, ...], sel: str) -> str:
    """``agg by (by) (ray_<metric>{sel})``."""
    grouping = f" by ({', '.join(by)}) " if by else ""
    return f"{agg}{grouping}(ray_{metric}{{{sel}}})"


def hold_still(prom: PrometheusServer, sel: str, targets: int, quiet_s: float, scrape_s: float,
               timeout_s: float = 300.0) -> None:
    """Return once all ``targets`` are up and the graph's counters have not changed for ``quiet_s``."""
    probe = f'sum by (__name__) ({{__name__=~"ray_adray_feed_.+_total|ray_adray_feed_latency_ms_count",{sel}}})'
    deadline = time.monotonic() + timeout_s
    last: Values | None = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        now = answer(prom, probe, ("__name__",)) if (prom.scalar('sum(up{job="ray"})') or 0) >= targets else None
        if now is None or now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(scrape_s)
    raise SystemExit(f"the feed counters did not hold still for {quiet_s:g} s within {timeout_s:g} s (last: {last})")


def overload(name: str, rps: float, seconds: float) -> dict[str, Any]:
    """``graph_load.py``'s JSON line for one open-loop run on the running app (its stderr passes through)."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "graph_load.py"), "--rps", f"{rps:g}", "--seconds",
           f"{seconds:g}", "--json", "--no-direct", "--reuse", "--name", name]
    note(" ".join(cmd[1:]))
    out = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not rows or "achieved_rps" not in rows[-1]:
        raise SystemExit(f"graph_load.py failed (exit {out.returncode}): {out.stdout[-2000:]}")
    return rows[-1]


def ingress_urls(name: str, path: str) -> int:
    """How many URLs the generator warmed up: the app's replicas on direct ingress, else Serve's one port."""
    if path != "direct":
        return 1
    import ray

    from adray.cli_serve import connect, direct_urls

    with contextlib.redirect_stdout(sys.stderr):  # connect's notes: stdout is for the JSON lines
        connect(None)
    try:
        return len(direct_urls(name))
    finally:
        ray.shutdown()


def show(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row), flush=True)
    elif "query" not in row:
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    else:
        print(f"{row['name']}: {row['query']}")
        inc = row.get("increase", {})
        for k in sorted(row["result"].keys() | inc.keys()):
            print(f"  {k:48s} {row['result'].get(k)!s:>14}" + (f"  increase {inc[k]}" if k in inc else ""), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rps", type=float, default=400.0, help="the overload's request rate")
    ap.add_argument("--seconds", type=float, default=20.0, help="the overload's length")
    ap.add_argument("--name", default="feed", help="the Serve app (deployed by graph_load.py if none runs)")
    ap.add_argument("--scrape-s", type=float, default=SCRAPE_S, help="Prometheus' scrape interval (see SCRAPE_S)")
    ap.add_argument("--json", action="store_true", help="JSON lines on stdout (default: text)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop Prometheus, remove its folder

    sys.path.insert(0, str(REPO))  # tests/
    import ray
    from graph_load import WARMUP  # benchmarks/ (this script's folder is on sys.path)

    from adray.cli_serve import connect
    from tests.helpers import free_port
    from tests.prometheus import PrometheusServer, ray_metrics_targets

    with contextlib.redirect_stdout(sys.stderr):
        connect(None)
    targets = ray_metrics_targets()
    quiet_s = max(QUIET_MIN_S, 1.5 * ray._config.metrics_report_interval_ms() / 1e3 + 2 * args.scrape_s)
    ray.shutdown()  # no driver during the load: it would also receive every worker's log lines
    sel = f'app="{args.name}"'
    with tempfile.TemporaryDirectory(prefix="adray-promql-") as tmp, \
            PrometheusServer(targets, Path(tmp) / "prometheus", free_port(), args.scrape_s) as prom:
        started = time.monotonic()
        note(f"prometheus {prom.url} scrapes {targets}; waiting for the counters to hold still {quiet_s:g} s")
        hold_still(prom, sel, len(targets), quiet_s, args.scrape_s)
        queries = {name: (promql(agg, metric, by, sel), by) for name, agg, metric, by in COUNTERS}
        before = {name: answer(prom, q, by) for name, (q, by) in queries.items()}
        load = overload(args.name, args.rps, args.seconds)
        show(load, args.json)
        note(f"waiting for the counters to hold still {quiet_s:g} s")
        hold_still(prom, sel, len(targets), quiet_s, args.scrape_s)
        increases: dict[str, Values] = {}
        for name, (q, by) in queries.items():
            after = answer(prom, q, by)
            increases[name] = {k: num((after.get(k) or 0.0) - (before[name].get(k) or 0.0))
                               for k in sorted(after.keys() | before[name].keys())}
            show({"name": name, "query": q, "result": after, "increase": increases[name]}, args.json)
        window = math.ceil(time.monotonic() - started + 2 * args.scrape_s)
        q = f"histogram_quantile(0.99, sum by (le, stage) (rate(ray_adray_feed_latency_ms_bucket{{{sel}}}[{window}s])))"
        show({"name": "latency_p99_ms", "query": q, "result": answer(prom, q, ("stage",))}, args.json)

    warmup = WARMUP * ingress_urls(args.name, load["path"])
    req = increases["requests"]
    answered = (req.get("outcome=ok") or 0) + (req.get("outcome=fallback") or 0)
    generator_answered = load["requests"] - load["errors"] - load["shed"]
    shed = sum(v or 0 for v in increases["shed"].values())
    show({"summary": True, "rps": load["rps"], "seconds": load["seconds"], "path": load["path"], "warmup": warmup,
          "answered": {"prometheus": answered, "generator": generator_answered,
                       "diff": num(answered - generator_answered - warmup)},
          "shed": {"prometheus": shed, "generator": load["shed"], "diff": num(shed - load["shed"])},
          "requests": {"prometheus": sum(v or 0 for v in req.values()), "generator": load["requests"] + warmup},
          "unanswered": {"prometheus": {k: v for k, v in req.items() if k not in ("outcome=ok", "outcome=fallback")},
                         "generator_errors": load["errors"]}}, args.json)


if __name__ == "__main__":
    main()
