"""Algorithm 1 against the journey simulator: average reward (clicks per exposure) at equal budget W
for MTORL, its ablations w/o channel-level (CA) and w/o user-level (UA) allocation, BC, the logged
(behaviour) policy and a random policy. MTORL and BC are trained in-process on simulator logs
(make_data with source: simulator) with the epoch loop that ships (adray.train_torch.fit_in_process).

    python benchmarks/mtorl_online.py [--epochs 8] [--seeds 1 2 3] [--set key=value ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from adray.config import load_config, parse_set
from adray.train_torch import fit_in_process
from workloads.mtorl import WORKLOAD
from workloads.mtorl.data import reward_range
from workloads.mtorl.evaluate import outputs
from workloads.mtorl.online import channel_ratios, run_procedure


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="online simulator seeds")
    ap.add_argument("--data", default="data/mtorl-sim")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data)
    cfg = load_config(WORKLOAD.config_cls, "default", WORKLOAD.configs_dir,
                      {"data": str(data), "epochs": args.epochs, **parse_set(args.set)})
    if not (data / "manifest.json").is_file():
        WORKLOAD.make_data(cfg, data)
    spec = WORKLOAD.trainer.spec
    arrays = {s: spec.load_split(data, s, cfg) for s in ("train", "val", "test")}
    mt = fit_in_process(spec, cfg, data, arrays=arrays)
    bc = fit_in_process(spec, cfg.override({"variant": "bc"}), data, arrays=arrays)
    print(f"offline test f1: mtorl {mt.test['f1_macro']:.4f}  bc {bc.test['f1_macro']:.4f}  "
          f"reward_auc {mt.test.get('reward_auc', float('nan')):.4f}")
    m = cfg.sim.num_channels
    _, r_hat = outputs(mt.model, arrays["train"])
    p, p_hat, p0 = channel_ratios(r_hat, arrays["train"], cfg.online.tau, cfg.online.alpha, m)
    print("P (explicit CTR ratio)", np.round(p, 3), " P^ (implicit)", np.round(p_hat, 3), " P_initial", np.round(p0, 3))
    rng_mm, sd = reward_range(data, cfg), 1
    uniform = np.full(m, 1.0 / m)
    methods = {
        "mtorl (Algorithm 1)": (mt.model, p0, True, "model"),
        "mtorl w/o CA": (mt.model, uniform, True, "model"),
        "mtorl w/o UA": (mt.model, p0, False, "model"),
        "bc": (bc.model, p, False, "model"),
        "logged policy": (None, uniform, False, "logged"),
        "random": (None, uniform, False, "random"),
    }
    table: dict[str, dict[str, list[float]]] = {}
    for seed in args.seeds:
        c = cfg.override({"online.seed": seed})
        for name, (model, pinit, rank, ch) in methods.items():
            out = run_procedure(c, model, pinit, rank_users=rank, channel=ch, reward_minmax=rng_mm, static_dim=sd)
            row = table.setdefault(name, {})
            for k, v in out.items():
                row.setdefault(k, []).append(v)
    keys = ("avg_reward", "avg_penalized_reward", "total_gain", "exposures", "spent")
    print(f"\nbudget W={cfg.online.budget}, {cfg.online.num_users} users, seeds {args.seeds}")
    print(f"{'method':22s} " + " ".join(f"{k:>22s}" for k in keys))
    for name, row in table.items():
        print(f"{name:22s} " + " ".join(f"{np.mean(row[k]):.4f} ± {np.std(row[k]):.4f}".rjust(22) for k in keys))
    if args.json:
        Path(args.json).write_text(json.dumps({"config": cfg.to_dict(), "table": table,
                                               "offline": {"mtorl": mt.test, "bc": bc.test}}, indent=2))


if __name__ == "__main__":
    main()
