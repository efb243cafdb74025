"""Every trial of a VAMO sweep bid on the evaluation days, beside what chose it (issue 22).

A sweep (``adray tune vamo --space tune_spaces/vamo-valday.yaml``) ranks its trials by the held-out
validation day's score and publishes the best; the evaluation days take no part. This script runs
afterwards, for the report only. It publishes each finished trial's model, under ``vamo-<sweep>-<trial>``
from the directory the trial uploaded. Then one ``adray eval vamo`` bids all of them and the
baselines on the configured evaluation days and opponent seeds. For each trial it prints the
parameters, ``val_loss`` (the logged-data signal), ``val_day_score`` (the sweep's objective) and
the evaluation score. It also gives Spearman's rho of the evaluation score against each signal.

    ADRAY_HOME=... python benchmarks/vamo_sweep_eval.py --sweep valday6 --json

Last line with --json: ``{"trials": [{trial, params, val_loss, val_day_score, score, ...}],
"baselines": {name: score}, "rho": {"val_day_score": r, "neg_val_loss": r}, "best": trial}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from vamo_table import spearman  # benchmarks/ is on the path when run as a script

from adray.data import read_manifest
from adray.paths import sweeps_storage
from adray.registry import Registry, RegistryError


def trials(sweep_dir: Path) -> list[dict]:
    """Each finished trial's last report (its final metrics) and parameters."""
    out = []
    for d in sorted(sweep_dir.glob("trial_*")):
        lines = (d / "result.json").read_text().splitlines() if (d / "result.json").is_file() else []
        if lines and (sweep_dir / "models" / d.name.removeprefix("trial_")).is_dir():
            r = json.loads(lines[-1])
            out.append({"trial": r["trial_id"], "params": r["config"], "val_loss": r.get("val_loss"),
                        "val_day_score": r.get("val_day_score"), "train_s": r.get("time_total_s")})
    return out


def publish(sweep: str, sweep_dir: Path, trial: str, reg: Registry) -> str:
    name = f"vamo-{sweep}-{trial}"
    try:
        return reg.get(f"{name}@latest").ref
    except RegistryError:
        pass
    src = sweep_dir / "models" / trial
    cfg = yaml.safe_load((src / "config.yaml").read_text())
    return reg.publish(name, src, {"workload": "vamo", "config": cfg, "dataset": cfg["data"],
                                   "dataset_hash": read_manifest(cfg["data"])["content_hash"], "sweep": sweep}).ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", required=True, help="the sweep's name (adray tune --name, or the printed one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sweep_dir = sweeps_storage().child(args.sweep).local_path()
    rows = trials(sweep_dir)
    if not rows:
        sys.exit(f"{sweep_dir}: no finished trial with an uploaded model")
    reg = Registry()
    refs = {r["trial"]: publish(args.sweep, sweep_dir, r["trial"], reg) for r in rows}
    adray = str(Path(sys.executable).with_name("adray"))
    first, *rest = rows
    cmd = [adray, "eval", "vamo", "--model", refs[first["trial"]], "--json"]
    for r in rest:
        cmd += ["--compare", f"t{r['trial']}={refs[r['trial']]}"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    methods = json.loads(out.stdout.strip().splitlines()[-1])["methods"]
    for r in rows:
        m = methods["vamo" if r is first else f"t{r['trial']}"]
        r.update({"ref": refs[r["trial"]], "score": m["score"], "score_std": m["score_std"],
                  **{k: m[k] for k in ("gmv", "dir_gmv", "cart")}})
    labels = {"vamo", *(f"t{r['trial']}" for r in rest)}
    baselines = {k: v["score"] for k, v in methods.items() if k not in labels}
    scores = [r["score"] for r in rows]
    rho = {"val_day_score": spearman(scores, [r["val_day_score"] for r in rows]),
           "neg_val_loss": spearman(scores, [-r["val_loss"] for r in rows])}
    best = max(rows, key=lambda r: r["val_day_score"])
    print(f"{'trial':10s} {'params':58s} {'val_loss':>9s} {'val day':>8s} {'eval score':>16s}")
    for r in sorted(rows, key=lambda r: -r["val_day_score"]):
        p = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        print(f"{r['trial']:10s} {p:58s} {r['val_loss']:9.4f} {r['val_day_score']:8.1f} "
              f"{r['score']:8.1f} +- {r['score_std']:5.1f}")
    print("baselines: " + ", ".join(f"{k} {v:.1f}" for k, v in baselines.items()))
    print(f"Spearman rho of the evaluation score with val_day_score {rho['val_day_score']:+.2f}, "
          f"with -val_loss {rho['neg_val_loss']:+.2f} ({len(rows)} trials); the sweep's best: {best['trial']} "
          f"(eval {time.perf_counter() - t0:.0f} s)")
    if args.json:
        print(json.dumps({"trials": rows, "baselines": baselines, "rho": rho, "best": best["trial"],
                          "command": " ".join(cmd[1:])}))


if __name__ == "__main__":
    main()
