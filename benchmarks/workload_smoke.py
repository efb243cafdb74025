"""The five workloads' smoke runs, end to end through the CLI, on one checkout or several (before and
after a change): for each workload ``adray train W --config smoke --json`` (the smoke config makes its
own dataset) and ``adray eval W --json``, each in a fresh process on an embedded local Ray, with its
own ``ADRAY_HOME``. Reports per checkout and workload the training and evaluation metrics and the wall
seconds, and per workload the largest difference between checkouts of every metric they share.

    python benchmarks/workload_smoke.py --json
    git worktree add /tmp/before a9688e6
    python benchmarks/workload_smoke.py --repo /tmp/before --repo . --json

A checkout is run with ``PYTHONPATH=<repo>/platform:<repo>`` and ``cwd=<repo>``: its own code, this
environment's packages. Last line with --json: ``{"runs": [{repo, workload, train, eval, train_s,
eval_s}], "diff": {workload: {metric: max abs difference}}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOADS = ("pwiser", "mtorl", "crossdqn", "drlput", "vamo")


def last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON line in the output:\n{text[-2000:]}")


def cli(repo: Path, home: Path, *args: str, timeout: float) -> tuple[dict, float]:
    env = dict(os.environ, ADRAY_HOME=str(home), PYTHONPATH=f"{repo / 'platform'}:{repo}", RAY_ADDRESS="")
    env.pop("RAY_ADDRESS")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "adray.cli", *args], cwd=repo, env=env, capture_output=True,
                         text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{repo}: adray {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-1500:]}"
                           f"\n{out.stderr[-3000:]}")
    return last_json(out.stdout), wall


def flat(payload: dict) -> dict[str, float]:
    """Numeric metrics of a train or eval answer, methods' as ``method/metric``."""
    got = {k: float(v) for k, v in (payload.get("metrics") or {}).items() if isinstance(v, int | float)}
    for method, metrics in (payload.get("methods") or {}).items():
        got |= {f"{method}/{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    return got


TIMING = ("_s", "per_s", "time", "samples", "iteration", "epoch")
"""Metric names that measure the machine, not the model (left out of the differences)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", action="append", default=[], help="a checkout (repeatable; default: this one)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    repos = [Path(r).resolve() for r in (args.repo or [Path(__file__).resolve().parents[1]])]
    runs = []
    for repo in repos:
        for wl in args.workloads.split(","):
            home = Path(tempfile.mkdtemp(prefix=f"adray-smoke-{wl}-"))
            train, train_s = cli(repo, home, "train", wl, "--config", "smoke", "--json", timeout=args.timeout)
            ev, eval_s = cli(repo, home, "eval", wl, "--config", "smoke", "--json", timeout=args.timeout)
            row = {"repo": str(repo), "workload": wl, "train": flat(train), "eval": flat(ev),
                   "train_s": round(train_s, 1), "eval_s": round(eval_s, 1)}
            runs.append(row)
            subprocess.run(["rm", "-rf", str(home)], check=False)
            print(f"{repo.name:>12} {wl:9} train {train_s:6.1f} s  eval {eval_s:6.1f} s  "
                  + "  ".join(f"{k}={v:.4f}" for k, v in sorted(row["eval"].items())
                              if not k.endswith(TIMING))[:400], file=sys.stderr, flush=True)
    diff: dict[str, dict[str, float]] = {}
    for wl in args.workloads.split(","):
        mine = [r for r in runs if r["workload"] == wl]
        for part in ("train", "eval"):
            shared = set.intersection(*(set(r[part]) for r in mine)) if mine else set()
            for k in sorted(shared):
                if k.endswith(TIMING):
                    continue
                vals = [r[part][k] for r in mine]
                diff.setdefault(wl, {})[f"{part}:{k}"] = round(max(vals) - min(vals), 6)
    for wl, d in diff.items():
        worst = sorted(d.items(), key=lambda kv: -abs(kv[1]) if kv[1] == kv[1] else 0)[:6]
        print(f"{wl:9} largest differences: {worst}", file=sys.stderr)
    if args.json:
        print(json.dumps({"runs": runs, "diff": diff}))


if __name__ == "__main__":
    main()
