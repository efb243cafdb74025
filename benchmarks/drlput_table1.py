"""The paper's Table 1 regenerated: action space x behaviour logging x training algorithm.

    python benchmarks/drlput_table1.py [--config default] [--set k=v ...] [--train-seeds 3] [--json out.json]

Six configurations (the paper's cells were lost in the text; these are ours): the action space is
``ungrouped`` (one group per parameter: |A| = n^4) or ``grouped`` (the config's groups: n^3), the
logs come from the ``gaussian`` behaviour policy around the production values or the ``uniform``
one, and the policy is trained by ``actor_critic`` or ``reinforce`` (importance weights: the
config's, ``none`` by default = Eq. 4.1 as printed). For each, over training seeds on one logged
dataset per (space, logging): Diversity (Eq. 6.1, fails below δ) and Relative_Gain (Eq. 6.2, fails
at <= 0) on the held-out ``test`` logs (each model is the iteration its trainer chose by SNIPS on
the ``val`` logs), pass/fail by the majority of seeds, and -- what the paper could not measure --
the policy's true simulated reward relative to the uniform policy (evaluation only).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from workloads.drlput.actions import ActionSpace
from workloads.drlput.config import PARAMS
from workloads.drlput.data import read_split
from workloads.drlput.evaluate import offline_metrics, true_metrics
from workloads.drlput.sim import make_requests
from workloads.drlput.study import config, ensure_data, mean_std, train, write_json
from workloads.drlput.truth import EVAL_SEED, uniform_metrics

CONFIGURATIONS = (
    ("ungrouped", "gaussian", "actor_critic"),
    ("ungrouped", "gaussian", "reinforce"),
    ("ungrouped", "uniform", "reinforce"),
    ("grouped", "gaussian", "actor_critic"),
    ("grouped", "uniform", "actor_critic"),
    ("grouped", "uniform", "reinforce"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--train-seeds", type=int, default=3)
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the table as one JSON line to this file")
    args = ap.parse_args()
    t0 = time.perf_counter()
    base = config(args.config, args.set)
    work = Path(tempfile.mkdtemp(prefix="drlput-t1-"))
    root = args.data_root or work
    rows = []
    for i, (space_kind, logging, algo) in enumerate(CONFIGURATIONS, 1):
        groups = [[p] for p in PARAMS] if space_kind == "ungrouped" else [list(g) for g in base.action.groups]
        cfg = base.override({"action.groups": groups, "behaviour.policy": logging, "algorithm": algo})
        data = ensure_data(cfg, root)
        logs = read_split(cfg, data, "test")
        req = make_requests(cfg.sim, cfg.eval_requests, EVAL_SEED)
        uniform = uniform_metrics(cfg, req, ActionSpace(cfg.action))["reward"]
        per_seed = []
        for s in range(args.train_seeds):
            model, _ = train(cfg.override({"seed": base.seed + s}), data, work / f"c{i}-s{s}")
            off = offline_metrics(cfg, model, logs)
            true = true_metrics(cfg, model, cfg.eval_requests, EVAL_SEED)
            per_seed.append({"diversity": off["diversity"], "diversity_pass": off["diversity_pass"],
                             "relative_gain": off["relative_gain"], "relative_gain_pass": off["relative_gain_pass"],
                             "reward": true["reward"], "gain_over_uniform": true["reward"] / uniform - 1})
        row = {"configuration": i, "action_space": space_kind, "num_actions": cfg.action.num_actions,
               "logging": logging, "algorithm": algo, **mean_std(per_seed),
               "passes": bool(np.mean([r["diversity_pass"] * r["relative_gain_pass"] for r in per_seed]) > 0.5)}
        rows.append(row)
        print(f"{i} {space_kind:9s} |A|={row['num_actions']:<4d} {logging:8s} {algo:12s} "
              f"Diversity {row['diversity']:.3f}±{row['diversity_std']:.3f}  "
              f"Relative_Gain {row['relative_gain']:+.3f}±{row['relative_gain_std']:.3f}  "
              f"true reward vs uniform {100 * row['gain_over_uniform']:+.1f}%±{100 * row['gain_over_uniform_std']:.1f}  "
              f"{'PASS' if row['passes'] else 'FAIL'}", flush=True)
    print(f"({time.perf_counter() - t0:.0f}s; δ = {base.diversity_threshold})")
    if args.json:
        write_json(args.json, {"config": args.config, "set": args.set, "train_seeds": args.train_seeds, "rows": rows})


if __name__ == "__main__":
    main()
