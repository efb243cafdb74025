"""Cross DQN variants head to head: reward at matched PAE and Q accuracy, over training seeds.

    python benchmarks/crossdqn_variants.py --config default --root /tmp/cdqv \\
        --variant cross= --variant no_aux=lam=0 --variant cql=lam=0,cql_alpha=0.5 \\
        [--train-seeds 3] [--set k=v ...] [--jsonl out.jsonl]

Training seed k logs its own data (the exploratory policy, ``seed = base + k``; cached under
``ROOT/data-s<k>`` so several invocations, e.g. two at once on two cores, share it) and trains each
``--variant NAME=k=v,k=v`` (overrides on top of ``--config`` and ``--set``) with RLlib on it. Each
trained module is rolled out on the evaluation's fresh requests at matched PAE (``evaluate_policy``:
mu by bisection on separate calibration requests), and its value estimate max_a Q(s0, a) on fresh
first screens is set against the discounted return its greedy-on-Q policy really earns
(``evaluate.value_accuracy``: v_pred vs v_true, over-estimation = the difference). One JSON line per (variant,
seed) is appended to ``--jsonl`` as soon as it is done; the summary (mean ± std over seeds) prints at
the end. ``--summarize FILE`` only prints the summary of an existing JSONL (several runs merged).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from adray import rl
from adray.config import load_config, parse_set
from adray.runtime import ensure_ray, torch_threads
from workloads.crossdqn import WORKLOAD
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import make_data
from workloads.crossdqn.evaluate import evaluate_policy, value_accuracy
from workloads.crossdqn.rollout import q_policy
from workloads.crossdqn.train import MODULE_DIR, train_module

SUMMARY = ("reward", "pae", "pae_raw", "r_ad", "r_ex", "v_pred", "v_true")


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition("=")
    if not name:
        raise SystemExit(f"--variant {text!r}: expected NAME=k=v,k=v (or NAME= for no overrides)")
    return name, parse_set([kv for kv in rest.split(",") if kv])


def summarize(path: Path) -> None:
    rows: dict[str, list[dict]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["variant"]].append(row)
    print(f"{'variant':24s}{'seeds':>6s}" + "".join(f"{m:>17s}" for m in SUMMARY))
    for name, rs in rows.items():
        cells = []
        for m in SUMMARY:
            v = np.array([r.get(m, np.nan) for r in rs], dtype=float)
            cells.append(f"{v.mean():>9.4f} ±{v.std():.4f}")
        print(f"{name:24s}{len(rs):>6d}" + "".join(cells) + f"   seeds {sorted(r['seed'] for r in rs)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--variant", action="append", default=[], help="NAME=k=v,k=v")
    ap.add_argument("--train-seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0, help="training seeds first..first+n-1 (offset of cfg.seed)")
    ap.add_argument("--root", type=Path, default=Path("/tmp/crossdqn-variants"))
    ap.add_argument("--jsonl", type=Path)
    ap.add_argument("--summarize", type=Path, help="only print the summary of this JSONL")
    args = ap.parse_args()
    if args.summarize:
        return summarize(args.summarize)
    base = load_config(CrossDQNConfig, args.config, WORKLOAD.configs_dir, parse_set(args.set))
    variants = [parse_variant(v) for v in args.variant] or [("crossdqn", {})]
    jsonl = args.jsonl or args.root / "variants.jsonl"
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    ensure_ray()
    torch.set_num_threads(torch_threads())
    for k in range(args.first_seed, args.first_seed + args.train_seeds):
        seed = base.seed + k
        data = args.root / f"data-s{seed}"
        if not (data / "manifest.json").exists():
            make_data(base.override({"seed": seed}), data)
        for name, over in variants:
            cfg = base.override({**over, "seed": seed})
            out = args.root / f"{name}-s{seed}"
            train = train_module(cfg, data, out, validate=False)
            module = rl.load_module(out / MODULE_DIR)
            with torch.no_grad():
                row = evaluate_policy(cfg, q_policy(module), matched=True)
                q = value_accuracy(cfg, module.net, cfg.eval_requests)
            row.update({"variant": name, "seed": seed, "overrides": over, **q,
                        "iter_time_s": train["iter_time_s"], "transitions_per_s": train["train_transitions_per_s"]})
            with jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name} seed {seed}: reward {row['reward']:.4f} ± {row['reward_std']:.4f} at PAE {row['pae']:.3f}"
                  f" (raw {row['pae_raw']:.3f}); max_a Q(s0) {q['v_pred']:.3f} vs greedy return {q['v_true']:.3f}", flush=True)
    summarize(jsonl)


if __name__ == "__main__":
    main()
