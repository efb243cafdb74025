"""Which offline validation metric ranks MTORL models the way Algorithm 1 in the simulator does.

    python benchmarks/mtorl_selection.py [--data data/mtorl-online] [--epochs 12] [--json out.json]

An evaluation of the *selection metric* of tune_spaces/mtorl.yaml, not of a model: on the simulator
logs of config ``online`` it trains 16 models (μ in {0, 0.04, 0.08, 0.2} x λ in {0, 1.4} x seeds
0, 1) with the shipped epoch loop (``fit_in_process``: best epoch on val_f1_macro), then sets each
model's offline validation metrics against its online reward (Algorithm 1 against the simulator,
``workloads.mtorl.evaluate.online_reward``, mean over online seeds 1-3, P_initial from the train
split). Prints each model and the Spearman rank correlation of each validation metric with the
online reward.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from adray.config import load_config
from adray.train_torch import fit_in_process
from workloads.mtorl import WORKLOAD
from workloads.mtorl.evaluate import online_reward

METRICS = ("val_f1_macro", "val_accuracy", "val_reward_auc", "val_reward_accuracy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/mtorl-online"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = load_config(WORKLOAD.config_cls, "online", WORKLOAD.configs_dir,
                       {"data": str(args.data), "epochs": args.epochs})
    if not (args.data / "manifest.json").is_file():
        WORKLOAD.make_data(base, args.data)
    spec = WORKLOAD.trainer.spec
    arrays = {s: spec.load_split(args.data, s, base) for s in ("train", "val", "test")}
    rows = []
    for mu in (0.0, 0.04, 0.08, 0.2):
        for lam in (0.0, 1.4):
            for seed in (0, 1):
                cfg = base.override({"mu": mu, "lam": lam, "seed": seed})
                out = fit_in_process(spec, cfg, args.data, arrays=arrays)
                online = float(np.mean([online_reward(out.model, arrays["train"], cfg.override({"online.seed": s}))
                                        for s in (1, 2, 3)]))
                rows.append({"mu": mu, "lam": lam, "seed": seed, **out.val, "online_reward": online})
                print(f"mu {mu:<5} lam {lam:<4} seed {seed}  " + "  ".join(f"{k} {out.val.get(k, np.nan):.4f}"
                      for k in METRICS) + f"  online_reward {online:.4f}", flush=True)
    truth = [r["online_reward"] for r in rows]
    corr = {k: float(spearmanr([r.get(k, np.nan) for r in rows], truth)[0]) for k in METRICS}
    print("Spearman with the online reward: " + "  ".join(f"{k} {v:+.2f}" for k, v in corr.items()))
    if args.json:
        args.json.write_text(json.dumps({"epochs": args.epochs, "models": rows, "spearman": corr}, indent=2))


if __name__ == "__main__":
    main()
