"""MTORL on the shared KuaiRand sequences: macro F1 / precision / recall of next-channel prediction,
mean ± std over seeds, for MTORL, BC, DT and the four ablations, under the paper's user-split
protocol (``--config kuairand``) and the public reference's window protocol (``kuairand-reference``).

Trains in-process with the workload's TorchSpec pieces (benchmarks/mtorl_common.py), not through
run_training: 24+ short runs on 2 CPUs would mostly wait on Ray actor start-up.

    python benchmarks/mtorl_kuairand.py [--seeds 0 1 2] [--epochs 8] [--set d_model=32] [--json out.json]

``--leakage`` instead trains MTORL with a memorising budget on the reference protocol and splits
its test windows into (a) identical to a training window, (b) user seen in train but window new,
(c) user unseen; then the same model/budget under the user-split protocol:

    python benchmarks/mtorl_kuairand.py --leakage --epochs 60 --set d_model=128 dropout=0.0
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
from adray.metrics import macro_prf  # noqa: E402
from workloads.mtorl import WORKLOAD  # noqa: E402
from workloads.mtorl.data import reference_windows  # noqa: E402
from workloads.mtorl.evaluate import outputs  # noqa: E402

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


def scores(y: np.ndarray, pred: np.ndarray, m: int) -> dict[str, float]:
    prf = macro_prf(y, pred, labels=list(range(m)))
    return {"f1_macro": prf["f1"], "accuracy": float(np.mean(y == pred)) if len(y) else float("nan")}


def leakage(base, data: Path, seed: int) -> dict:
    """Reference-protocol MTORL, test scores per leakage group, and the user protocol beside it."""
    spec = WORKLOAD.torch
    ref = base.override({"protocol": "reference", "seed": seed})
    arrays = {s: spec.load_split(data, s, ref) for s in ("train", "val", "test")}
    out = fit(ref, data, arrays)
    seqs, _, rows, starts, take = reference_windows(data, ref)
    users = seqs["user_id"].to_numpy()
    train_pairs = set(zip(rows[take["train"]].tolist(), starts[take["train"]].tolist()))
    train_users = set(users[rows[take["train"]]].tolist())
    t_rows, t_starts = rows[take["test"]], starts[take["test"]]
    same = np.array([(r, s) in train_pairs for r, s in zip(t_rows.tolist(), t_starts.tolist())])
    seen = np.isin(users[t_rows], list(train_users))
    groups = {"(a) identical to a train window": same, "(b) user in train, new window": seen & ~same,
              "(c) unseen user": ~seen, "all test windows": np.ones(len(same), bool)}
    probs, _ = outputs(out["model"], arrays["test"])
    m = probs.shape[-1]
    res: dict = {"reference": {}}
    for name, g in groups.items():
        valid = arrays["test"]["mask"][g] > 0
        y, pred = arrays["test"]["action"][g][valid], probs[g].argmax(-1)[valid]
        res["reference"][name] = {"windows": int(g.sum()), **scores(y, pred, m)}
    tp, _ = outputs(out["model"], arrays["train"])
    tv = arrays["train"]["mask"] > 0
    res["reference"]["train windows (fit)"] = {"windows": int(len(tv)),
                                               **scores(arrays["train"]["action"][tv], tp.argmax(-1)[tv], m)}
    res["reference_best_epoch"] = out["val"]["epoch"]
    usr = fit(base.override({"protocol": "user", "seed": seed}), data)
    res["user"] = {"test (users disjoint)": {"windows": None, **{k: usr["test"][k] for k in ("f1_macro", "accuracy")}}}
    res["user_best_epoch"] = usr["val"]["epoch"]
    res["train_s"] = out["train_s"] + usr["train_s"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
    ap.add_argument("--data", default="data/mtorl-kuairand")
    ap.add_argument("--json", default="")
    ap.add_argument("--leakage", action="store_true", help="split reference-protocol test scores by leakage group")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data)
    base = load_config(WORKLOAD.config_cls, "kuairand", WORKLOAD.configs_dir,
                       {"data": str(data), "epochs": args.epochs, **parse_set(args.set)})
    if not (data / "manifest.json").is_file():
        WORKLOAD.make_data(base, data)
    if args.leakage:
        runs = {seed: leakage(base, data, seed) for seed in args.seeds}
        print(f"\n{'protocol / test group':40s} {'windows':>8s} {'f1_macro':>16s} {'accuracy':>16s}")
        for proto in ("reference", "user"):
            for name in runs[args.seeds[0]][proto]:
                vals = [runs[s][proto][name] for s in args.seeds]
                w = vals[0]["windows"]
                cells = " ".join(f"{np.mean([v[k] for v in vals]):.4f} ± {np.std([v[k] for v in vals]):.4f}".rjust(16)
                                 for k in ("f1_macro", "accuracy"))
                print(f"{proto + ': ' + name:40s} {'' if w is None else w:>8} {cells}")
        print(json.dumps({"leakage": runs, "seeds": args.seeds, "overrides": {"epochs": args.epochs, **parse_set(args.set)}}))
        if args.json:
            Path(args.json).write_text(json.dumps({"config": base.to_dict(), "leakage": runs}, indent=2))
        return
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
