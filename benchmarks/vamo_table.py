"""VAMO against its baselines in the simulator: the shapes of the paper's Table 1, Table 3 and Fig. 4.

    python benchmarks/vamo_table.py --config default --seeds 3 [--lambdas 0.01,0.1,1,10,100]
                                    [--out results/vamo] [--json results/vamo/table.json]

One simulated dataset (the config's seed); every method is trained on it with each training seed
(``seed`` = 0, 1, ...), then every trained model bids in the same evaluation days against the same
opponents (evaluate.py). Per method: each task's metric (mean +- std over seeds) and Delta m%
against the STL models of the same seed (lower is better). Rows:

* Table 1: stl, vanilla, dwa, famo, pcgrad, fairgrad, vamo, and the AuctionNet baselines
  (pid_budget, pid_cpa, online_lp, fixed: no training, their AuctionNet score beside the learned
  bidders'; STL is the single-task decision-transformer baseline);
* Table 3 / Fig. 3: vamo without the held-out validation (``vamo_train``), without TimesNet
  (``temporal=none``) and with an LSTM in its place;
* Fig. 4: Delta m% of VAMO over lambda (``--lambdas``), written as ``lambda.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from adray.config import load_config, parse_set
from workloads.vamo import WORKLOAD
from workloads.vamo.config import TASKS, VamoConfig
from workloads.vamo.data import make_data
from workloads.vamo.evaluate import evaluate_methods
from workloads.vamo.train import fit

METHODS = {"stl": {"weighting": "stl"}, "vanilla": {"weighting": "vanilla"}, "dwa": {"weighting": "dwa"},
           "famo": {"weighting": "famo"}, "pcgrad": {"weighting": "pcgrad"},
           "fairgrad": {"weighting": "fairgrad"}, "vamo": {"weighting": "vamo"},
           "vamo_no_val": {"weighting": "vamo_train"}, "vamo_no_timesnet": {"temporal": "none"},
           "vamo_lstm": {"temporal": "lstm"}}
BASELINES = ("pid_budget", "pid_cpa", "online_lp", "fixed")


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in per_seed[0]:
        for k in per_seed[0][name]:
            vals = [t[name][k] for t in per_seed]
            out.setdefault(name, {})[k] = float(np.mean(vals))
            out[name][f"{k}_std"] = float(np.std(vals))
    return out


def show(title: str, table: dict[str, dict[str, float]], rows: list[str]) -> None:
    print(f"\n{title}\n{'method':18s}" + "".join(f"{c:>20s}" for c in (*TASKS, "score", "delta_m")))
    for r in rows:
        if r in table:
            cells = [f"{table[r].get(c, float('nan')):9.2f} +- {table[r].get(c + '_std', 0):6.2f}"
                     for c in (*TASKS, "score", "delta_m")]
            print(f"{r:18s}" + "".join(f"{c:>20s}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--lambdas", default="0.01,0.1,1,10,100")
    ap.add_argument("--out", default="results/vamo")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    cfg = load_config(VamoConfig, args.config, WORKLOAD.configs_dir, parse_set(args.set))
    out = Path(args.out)
    data = out / "data"
    t0 = time.perf_counter()
    make_data(cfg, data)
    print(f"data: {time.perf_counter() - t0:.1f} s")
    variants = {m: METHODS[m] for m in args.methods.split(",") if m}
    lambdas = [float(x) for x in args.lambdas.split(",") if x]
    variants.update({f"lambda_{lam:g}": {"weighting": "vamo", "lam": lam} for lam in lambdas})
    per_seed, train_s = [], {}
    for seed in range(args.seeds):
        models = {}
        for name, over in variants.items():
            t1 = time.perf_counter()
            models[name], _ = fit(cfg.override({**over, "seed": seed}), data)
            train_s[name] = train_s.get(name, 0.0) + time.perf_counter() - t1
            print(f"seed {seed} {name}: trained in {time.perf_counter() - t1:.1f} s", flush=True)
        per_seed.append(evaluate_methods(cfg, data, None, models, baselines=BASELINES))
    table = summarise(per_seed)
    show("Table 1 (per-task metric, AuctionNet score, Delta m% vs STL; mean +- std over seeds)", table,
         [m for m in ("stl", "vanilla", "dwa", "famo", "pcgrad", "fairgrad", "vamo") if m in table] + list(BASELINES))
    show("Table 3 / Fig. 3 (ablations)", table, ["vamo_no_val", "vamo_no_timesnet", "vamo_lstm", "vamo"])
    show("Fig. 4 (lambda)", table, [f"lambda_{lam:g}" for lam in lambdas])
    if lambdas and "stl" in table:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        y = [table[f"lambda_{lam:g}"]["delta_m"] for lam in lambdas]
        e = [table[f"lambda_{lam:g}"]["delta_m_std"] for lam in lambdas]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.errorbar(lambdas, y, yerr=e, marker="o", capsize=3)
        ax.set_xscale("log")
        ax.set_xlabel("lambda (temperature)")
        ax.set_ylabel("Delta m% vs STL (lower is better)")
        fig.tight_layout()
        fig.savefig(out / "lambda.png", dpi=120)
        print(f"wrote {out / 'lambda.png'}")
    result = {"config": args.config, "seeds": args.seeds, "methods": table,
              "train_s": {k: v / args.seeds for k, v in train_s.items()}}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
