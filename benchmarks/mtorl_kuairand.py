"""MTORL on the shared KuaiRand sequences: macro F1 / precision / recall of next-channel prediction,
mean ± std over seeds, for MTORL, BC, DT and the four ablations, under the paper's user-split
protocol (``--config kuairand``) and the public reference's window protocol (``kuairand-reference``).

Trains in-process with the workload's TorchSpec pieces (benchmarks/mtorl_common.py), not through
run_training: 24+ short runs on 2 CPUs would mostly wait on Ray actor start-up.

    python benchmarks/mtorl_kuairand.py [--seeds 0 1 2] [--epochs 8] [--set d_model=32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from mtorl_common import fit  # noqa: E402

from adray.config import load_config, parse_set  # noqa: E402
from workloads.mtorl import WORKLOAD  # noqa: E402

METHODS = {
    "mtorl": {},
    "bc": {"variant": "bc"},
    "dt": {"variant": "dt"},
    "w/o CausalState": {"use_tcn": False},
    "w/o CausalAttn": {"use_attention": False},
    "w/o Add&Norm": {"use_addnorm": False},
    "w/o DPO": {"lam": 0.0},
    "mtorl (reference protocol)": {"protocol": "reference"},
}
KEYS = ("f1_macro", "precision_macro", "recall_macro", "accuracy")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
    ap.add_argument("--data", default="data/mtorl-kuairand")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data)
    base = load_config(WORKLOAD.config_cls, "kuairand", WORKLOAD.configs_dir,
                       {"data": str(data), "epochs": args.epochs, **parse_set(args.set)})
    if not (data / "manifest.json").is_file():
        WORKLOAD.make_data(base, data)
    table: dict[str, dict[str, list[float]]] = {}
    for name in args.methods:
        for seed in args.seeds:
            cfg = base.override({**METHODS[name], "seed": seed})
            out = fit(cfg, data)
            row = table.setdefault(name, {k: [] for k in KEYS})
            for k in KEYS:
                row[k].append(out["test"][k])
            print(f"{name:28s} seed={seed} test_f1={out['test']['f1_macro']:.4f} "
                  f"best_epoch={out['val']['epoch']} ({out['train_s']:.0f}s)", flush=True)
    print(f"\n{'method':28s} " + " ".join(f"{k:>18s}" for k in KEYS))
    summary = {}
    for name, row in table.items():
        summary[name] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": v} for k, v in row.items()}
        print(f"{name:28s} " + " ".join(f"{np.mean(v):.4f} ± {np.std(v):.4f}".rjust(18) for v in row.values()))
    if args.json:
        Path(args.json).write_text(json.dumps({"config": base.to_dict(), "seeds": args.seeds, "table": summary}, indent=2))


if __name__ == "__main__":
    main()
