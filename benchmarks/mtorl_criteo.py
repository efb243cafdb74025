"""MTORL on the public Criteo journeys under the paper's protocol (Table 2, Criteo rows).

The released file (``data/samples/criteo_sequence.zip``) is imported as it comes with the
``criteo`` config (users split 80/10/10, journeys >= 10 steps, the last n = 20 steps per user,
μ = 0.04, λ = 1.4, gain = click + 10·conversion); the importer's leak guard drops ``cat8`` (a
one-to-one code of the channel). Then MTORL, BC, DT and the four ablations are trained in process
with the shipped epoch loop (adray.train_torch.fit_in_process), one run per method and seed, and
scored on the test users: macro F1 / precision / recall and accuracy of the next channel on the
valid steps, mean ± std over seeds, beside the paper's figures. Three model-free references use
the same steps: the train majority channel, the previous step's channel, and the most likely next
channel given the previous one (train transition counts); the first step of a window has no
previous channel and gets the majority.

Every finished run is appended to ``--runs`` (JSONL, keyed by the resolved config and the dataset
hash), so a long table is built over several invocations that each stay within ``--budget-min``:

    python benchmarks/mtorl_criteo.py --json out.json --epochs 30 --budget-min 9   # repeat until done
    python benchmarks/mtorl_criteo.py --json out.json --methods mtorl dt --set d_model=128
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from adray.config import load_config, parse_set
from adray.data import read_dataset
from adray.metrics import macro_prf
from adray.train_torch import fit_in_process
from workloads.mtorl import WORKLOAD
from workloads.mtorl.data import import_criteo, load_split

REPO = Path(__file__).resolve().parents[1]
METHODS: dict[str, dict] = {
    "mtorl": {},
    "bc": {"variant": "bc"},
    "dt": {"variant": "dt"},
    "w/o CausalState": {"use_tcn": False},
    "w/o CausalAttn": {"use_attention": False},
    "w/o Add&Norm": {"use_addnorm": False},
    "w/o DPO": {"lam": 0.0},
}
KEYS = ("f1_macro", "precision_macro", "recall_macro", "accuracy")
PAPER = {  # Table 2, Criteo: F1, precision, recall (accuracy not reported)
    "mtorl": (0.5002, 0.5424, 0.4893), "dt": (0.4303, 0.4922, 0.4101), "odt": (0.4168, 0.4738, 0.3918),
    "bc": (0.2850, 0.3311, 0.2659), "iql": (0.3834, 0.4230, 0.3655),
}


def prepare(cfg, file: Path) -> tuple[Path, dict]:
    """The imported dataset of ``cfg.data`` (imported from ``file`` when absent) and its leak guard."""
    data = Path(cfg.data)
    if not (data / "manifest.json").is_file():
        print(f"importing {file} -> {data}", flush=True)
        import_criteo([file], data, cfg)
    ds = read_dataset(data)
    if ds.manifest.get("source") != "criteo":
        raise SystemExit(f"{data}: not a criteo-sequence dataset (source={ds.manifest.get('source')!r})")
    return data, ds.manifest


def scores(y: np.ndarray, pred: np.ndarray, m: int) -> dict[str, float]:
    prf = macro_prf(y, pred, labels=list(range(m)))
    return {"f1_macro": prf["f1"], "precision_macro": prf["precision"], "recall_macro": prf["recall"],
            "accuracy": float(np.mean(y == pred))}


def trivial(data: Path, cfg, m: int) -> dict[str, dict[str, float]]:
    """Majority, repeat previous, most likely next given previous, on the test split's valid steps."""
    train, test = load_split(data, "train", cfg), load_split(data, "test", cfg)
    tv, sv = train["mask"] > 0, test["mask"] > 0
    majority = int(np.bincount(train["action"][tv], minlength=m).argmax())
    trans = np.zeros((m, m))
    both = tv[:, 1:] & tv[:, :-1]
    np.add.at(trans, (train["action"][:, :-1][both], train["action"][:, 1:][both]), 1)
    nxt = np.where(trans.sum(1) > 0, trans.argmax(1), majority)
    prev = np.concatenate([np.full((len(test["action"]), 1), -1), test["action"][:, :-1]], 1)[sv]
    y = test["action"][sv]
    return {
        "majority": scores(y, np.full(len(y), majority), m),
        "repeat previous": scores(y, np.where(prev < 0, majority, prev), m),
        "next given previous": scores(y, np.where(prev < 0, majority, nxt[np.maximum(prev, 0)]), m),
    }


def key(cfg, content_hash: str) -> str:
    return json.dumps({"cfg": cfg.to_dict(), "data": content_hash}, sort_keys=True, default=str)


def load_runs(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["key"]: r for r in rows}


def table_rows(runs: list[dict]) -> dict[str, dict]:
    return {k: {"mean": float(np.mean([r["test"][k] for r in runs])), "std": float(np.std([r["test"][k] for r in runs])),
                "runs": [r["test"][k] for r in runs]} for k in KEYS}


def print_table(summary: dict[str, dict], refs: dict[str, dict[str, float]]) -> None:
    head = f"{'method':22s} {'seeds':>5s} " + " ".join(f"{k:>17s}" for k in KEYS) + "   paper F1 / P / R"
    print("\n" + head + "\n" + "-" * len(head))
    for name, row in summary.items():
        cells = " ".join(f"{row['table'][k]['mean']:.4f} ± {row['table'][k]['std']:.4f}".rjust(17) for k in KEYS)
        paper = " / ".join(f"{v:.4f}" for v in PAPER[name]) if name in PAPER else ""
        print(f"{name:22s} {len(row['seeds']):>5d} {cells}   {paper}")
    for name, s in refs.items():
        print(f"{name:22s} {'-':>5s} " + " ".join(f"{s[k]:.4f}".rjust(17) for k in KEYS))
    for name in ("odt", "iql"):
        print(f"{name + ' (paper only)':22s} {'':>5s} " + " ".join(" " * 17 for _ in KEYS) + "   "
              + " / ".join(f"{v:.4f}" for v in PAPER[name]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", type=Path, default=REPO / "data" / "samples" / "criteo_sequence.zip")
    ap.add_argument("--config", default="criteo")
    ap.add_argument("--data", default="", help="dataset dir (default: the config's data)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
    ap.add_argument("--runs", type=Path, default=None, help="JSONL of finished runs (default: JSON.runs.jsonl)")
    ap.add_argument("--budget-min", type=float, default=0.0, help="start no new run after this many minutes")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = load_config(WORKLOAD.config_cls, args.config, WORKLOAD.configs_dir,
                       {"epochs": args.epochs, **parse_set(args.set), **({"data": args.data} if args.data else {})})
    data, manifest = prepare(base, args.file)
    guard = manifest["meta"].get("leak_guard", {})
    for col, info in guard.get("dropped", {}).items():
        print(f"leak guard dropped {col}: {info['reason']}")
    runs_path = args.runs or Path((args.json or "mtorl_criteo.json") + ".runs.jsonl")
    done = load_runs(runs_path)
    t0, summary, pending = time.perf_counter(), {}, 0
    for name in args.methods:
        mine = []
        for seed in args.seeds:
            cfg = base.override({**METHODS[name], "seed": seed})
            k = key(cfg, manifest["content_hash"])
            if k not in done:
                if args.budget_min and time.perf_counter() - t0 > 60 * args.budget_min:
                    pending += 1
                    continue
                out = fit_in_process(WORKLOAD.trainer.spec, cfg, data)
                done[k] = {"key": k, "method": name, "seed": seed, "test": out.test,
                           "best_epoch": out.val["best_epoch"], "val_f1_macro": out.val["val_f1_macro"],
                           "train_s": out.train_s}
                with runs_path.open("a") as f:
                    f.write(json.dumps(done[k]) + "\n")
                print(f"{name:22s} seed={seed} test_f1={out.test['f1_macro']:.4f} val_f1={out.val['val_f1_macro']:.4f} "
                      f"best_epoch={out.val['best_epoch']} ({out.train_s:.0f}s)", flush=True)
            mine.append(done[k])
        if mine:
            summary[name] = {"seeds": [r["seed"] for r in mine], "table": table_rows(mine),
                             "best_epoch": [r["best_epoch"] for r in mine],
                             "train_s": float(sum(r["train_s"] for r in mine))}
    m = int(manifest["meta"]["num_channels"])
    refs = trivial(data, base, m)
    print_table(summary, refs)
    if pending:
        print(f"\n{pending} run(s) not started (budget {args.budget_min} min): run the same command again")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "config": base.to_dict(), "dataset": str(data), "content_hash": manifest["content_hash"],
            "leak_guard": guard, "seeds": args.seeds, "table": summary, "trivial": refs,
            "paper": {k: dict(zip(("f1_macro", "precision_macro", "recall_macro"), v)) for k, v in PAPER.items()},
            "complete": pending == 0}, indent=2))


if __name__ == "__main__":
    main()
