"""MTORL on the shared KuaiRand sequences: macro F1 / precision / recall of next-channel prediction,
mean ± std over seeds, for MTORL, BC, DT and the four ablations, under the paper's user-split
protocol (``--config kuairand``) and the public reference's window protocol (``kuairand-reference``).

Trains in-process with the epoch loop that ships (adray.train_torch.fit_in_process), not through
run_training: 24+ short runs on 2 CPUs would mostly wait on Ray actor start-up.

    python benchmarks/mtorl_kuairand.py [--seeds 0 1 2] [--epochs 8] [--set d_model=32] [--json out.json]
    python benchmarks/mtorl_kuairand.py --config default --methods mtorl bc dt ...   # simulator logs

``--leakage`` instead trains MTORL with a memorising budget on the reference protocol and splits
its test windows into (a) identical to a training window, (b) user seen in train but window new,
(c) user unseen; then the same model/budget under the user-split protocol:

    python benchmarks/mtorl_kuairand.py --leakage --epochs 60 --set d_model=128 dropout=0.0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from adray.config import load_config, parse_set
from adray.metrics import macro_prf
from adray.train import prepare_data
from adray.train_torch import fit_in_process
from workloads.mtorl import WORKLOAD
from workloads.mtorl.data import read_sequences, reference_windows
from workloads.mtorl.evaluate import outputs

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


def action_statistics(data: Path, cfg) -> dict:
    """Is the next channel predictable at all in this data? Under i.i.d. uniform channels the
    per-user chi-square of channel counts has mean m-1, every row of the transition matrix is
    1/m, and the previous channel repeats 1/m of the time."""
    seqs = pd.concat([read_sequences(data, s, cfg)[0] for s in ("train", "val", "test")], ignore_index=True)
    m = int(max(a.max() for a in seqs["action"])) + 1
    chi = []
    trans = np.zeros((m, m))
    for acts in seqs["action"]:
        acts = np.asarray(acts)
        cnt = np.bincount(acts, minlength=m)
        chi.append(float((((cnt - len(acts) / m) ** 2) / (len(acts) / m)).sum()))
        np.add.at(trans, (acts[:-1], acts[1:]), 1)
    return {"users": len(seqs), "steps": int(seqs["length"].sum()), "channels": m,
            "channel_shares": (trans.sum(0) / trans.sum()).round(4).tolist(),
            "per_user_chi2_mean": float(np.mean(chi)), "per_user_chi2_expected_iid": m - 1,
            "repeat_previous_channel": float(np.trace(trans) / trans.sum()),
            "transition_matrix": (trans / trans.sum(1, keepdims=True)).round(4).tolist()}


def step_keys(arr: dict[str, np.ndarray]) -> tuple[list[bytes], np.ndarray]:
    """One hashable key per valid step from exactly what the model's token x_t sees (Eq. 3):
    the state s_t = (q_t, f) and the previous step's action and reward."""
    prev_a = np.concatenate([np.full((len(arr["action"]), 1), -1), arr["action"][:, :-1]], axis=1)
    prev_r = np.concatenate([np.zeros((len(arr["reward"]), 1), np.float32), arr["reward"][:, :-1]], axis=1)
    valid = arr["mask"] > 0
    feats = np.concatenate([arr["state"], prev_a[..., None], prev_r[..., None]], axis=-1)[valid]
    return [row.tobytes() for row in feats.astype(np.float32)], arr["action"][valid]


def memoriser(train: dict[str, np.ndarray], test: dict[str, np.ndarray], m: int) -> dict[str, float]:
    """A lookup table over the model's step inputs: a test step whose inputs occur in train gets
    the action recorded there; any other step gets the train majority channel. It learns nothing
    that generalises, so any score above chance is the split leaking events from train into test."""
    keys, actions = step_keys(train)
    table: dict[bytes, int] = {}
    for k, a in zip(keys, actions.tolist()):
        table.setdefault(k, a)
    majority = int(np.bincount(actions, minlength=m).argmax())
    t_keys, y = step_keys(test)
    hit = np.array([k in table for k in t_keys])
    pred = np.array([table.get(k, majority) for k in t_keys])
    return {"windows": int(len(test["action"])), **scores(y, pred, m), "steps_seen_in_train": float(hit.mean())}


def leakage(base, data: Path, seed: int) -> dict:
    """Reference-protocol MTORL, test scores per leakage group, and the user protocol beside it."""
    spec = WORKLOAD.trainer.spec
    ref = base.override({"protocol": "reference", "seed": seed})
    arrays = {s: spec.load_split(data, s, ref) for s in ("train", "val", "test")}
    out = fit_in_process(spec, ref, data, arrays=arrays)
    seqs, _, rows, starts, take = reference_windows(data, ref)
    users = seqs["user_id"].to_numpy()
    train_pairs = set(zip(rows[take["train"]].tolist(), starts[take["train"]].tolist()))
    train_users = set(users[rows[take["train"]]].tolist())
    t_rows, t_starts = rows[take["test"]], starts[take["test"]]
    same = np.array([(r, s) in train_pairs for r, s in zip(t_rows.tolist(), t_starts.tolist())])
    seen = np.isin(users[t_rows], list(train_users))
    groups = {"(a) identical to a train window": same, "(b) user in train, new window": seen & ~same,
              "(c) unseen user": ~seen, "all test windows": np.ones(len(same), bool)}
    probs, _ = outputs(out.model, arrays["test"])
    m = probs.shape[-1]
    res: dict = {"reference": {}}
    for name, g in groups.items():
        valid = arrays["test"]["mask"][g] > 0
        y, pred = arrays["test"]["action"][g][valid], probs[g].argmax(-1)[valid]
        res["reference"][name] = {"windows": int(g.sum()), **scores(y, pred, m)}
    tp, _ = outputs(out.model, arrays["train"])
    tv = arrays["train"]["mask"] > 0
    res["reference"]["train windows (fit)"] = {"windows": int(len(tv)),
                                               **scores(arrays["train"]["action"][tv], tp.argmax(-1)[tv], m)}
    res["reference_best_epoch"] = out.val["best_epoch"]
    res["reference"]["memoriser (lookup of step inputs)"] = memoriser(arrays["train"], arrays["test"], m)
    user_cfg = base.override({"protocol": "user", "seed": seed})
    user_arrays = {s: spec.load_split(data, s, user_cfg) for s in ("train", "val", "test")}
    usr = fit_in_process(spec, user_cfg, data, arrays=user_arrays)
    res["user"] = {"test (users disjoint)": {"windows": len(user_arrays["test"]["action"]),
                                             **{k: usr.test[k] for k in ("f1_macro", "accuracy")}},
                   "memoriser (lookup of step inputs)": memoriser(user_arrays["train"], user_arrays["test"], m)}
    res["user_best_epoch"] = usr.val["best_epoch"]
    res["train_s"] = out.train_s + usr.train_s
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
    ap.add_argument("--config", default="kuairand", help="base config (default: simulator logs, where the channel is predictable)")
    ap.add_argument("--data", default="", help="dataset dir (default: the config's data)")
    ap.add_argument("--json", default="")
    ap.add_argument("--data-stats", action="store_true", help="is the next channel predictable at all? (no training)")
    ap.add_argument("--leakage", action="store_true", help="split reference-protocol test scores by leakage group")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = load_config(WORKLOAD.config_cls, args.config, WORKLOAD.configs_dir,
                       {"epochs": args.epochs, **parse_set(args.set), **({"data": args.data} if args.data else {})})
    data = prepare_data(WORKLOAD, base)  # the config's dataset (data: generate makes it once)
    if args.data_stats:
        print(json.dumps(action_statistics(data, base), indent=1))
        return
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
            out = fit_in_process(WORKLOAD.trainer.spec, cfg, data)
            row = table.setdefault(name, {k: [] for k in KEYS})
            for k in KEYS:
                row[k].append(out.test[k])
            print(f"{name:28s} seed={seed} test_f1={out.test['f1_macro']:.4f} "
                  f"best_epoch={out.val['best_epoch']} ({out.train_s:.0f}s)", flush=True)
    print(f"\n{'method':28s} " + " ".join(f"{k:>18s}" for k in KEYS))
    summary = {}
    for name, row in table.items():
        summary[name] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": v} for k, v in row.items()}
        print(f"{name:28s} " + " ".join(f"{np.mean(v):.4f} ± {np.std(v):.4f}".rjust(18) for v in row.values()))
    if args.json:
        Path(args.json).write_text(json.dumps({"config": base.to_dict(), "seeds": args.seeds, "table": summary}, indent=2))


if __name__ == "__main__":
    main()
