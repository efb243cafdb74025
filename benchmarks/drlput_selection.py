"""How well DRL-PUT's model selection on held-out logs picks the iteration: selection rules vs truth.

    python benchmarks/drlput_selection.py [--config default] [--set k=v ...] [--train-seeds 3]
                                          [--algorithms reinforce actor_critic] [--json out.json]

One logged dataset; per training seed and algorithm, one training run (``train_module``). For
every iteration of the run this script records the served rule's greedy action on each ``val``
row and -- for this evaluation only, never given back to training -- the iteration's true
expected reward on the evaluation requests
(``eval_seeds`` x ``eval_requests``, as ``adray eval``). Each rule below then picks one iteration
from the ``val`` logs alone, and its pick is scored by that truth:

    truth        the iteration with the best true reward (what selection by simulator truth did
                 before: a reference no logged data can reach)
    argmax       the best SNIPS on val (``selection: argmax``)
    final        the last iteration (no selection)
    paired       the last iteration, unless an earlier one is better on val with confidence
                 (``selection: paired``, the default; workloads/drlput/selection.py)

Also per run: the standard error of one iteration's SNIPS, the rows its estimate rests on and the
spread of the iterations' true rewards: selection can only tell apart what the first resolves.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from workloads.drlput import train as drlput_train
from workloads.drlput.actions import ActionSpace
from workloads.drlput.data import read_split
from workloads.drlput.evaluate import action_probs, logged_reward, logged_weights
from workloads.drlput.selection import BOOTSTRAP, choose, snips_by_iteration
from workloads.drlput.sim import make_requests, observe
from workloads.drlput.study import config, ensure_data, mean_std, start_ray, write_json
from workloads.drlput.truth import EVAL_SEED, policy_metrics

RULES = ("truth", "argmax", "final", "paired")


def run(cfg: Any, data: Path, out: Path, val: Any, eval_reqs: list[Any]) -> dict[str, Any]:
    """Train once, recording each iteration's greedy actions on ``val`` and its true reward."""
    space = ActionSpace(cfg.action)
    greedy: list[np.ndarray] = []
    truth: list[float] = []
    real = drlput_train.greedy_actions

    def spy(module: Any, logs: Any) -> np.ndarray:  # the trainer calls it once per iteration, on val
        chosen = real(module, logs)
        greedy.append(chosen)
        truth.append(float(np.mean([policy_metrics(cfg, q, space, action_probs(module, observe(q)).argmax(1))
                                    ["reward"] for q in eval_reqs])))
        return chosen

    drlput_train.greedy_actions = spy
    try:
        metrics = drlput_train.train_module(cfg, data, out)
    finally:
        drlput_train.greedy_actions = real
    r = logged_reward(cfg, val)
    w = np.stack([logged_weights(cfg, g, val) for g in greedy])  # (T, N)
    t = np.array(truth)
    picks = {"truth": int(np.argmax(t)), "final": len(t) - 1,
             **{rule: choose(rule, w, r, cfg.seed) for rule in ("argmax", "paired")}}
    assert picks[cfg.selection] + 1 == metrics["best_iteration"], (picks, metrics["best_iteration"])
    rng = np.random.default_rng(0)
    se = np.nanstd([snips_by_iteration(w[:, i], r[i]) for i in (rng.integers(0, len(r), len(r))
                                                               for _ in range(BOOTSTRAP))], axis=0)
    return {"picks": {k: v + 1 for k, v in picks.items()}, "reward": {k: float(t[v]) for k, v in picks.items()},
            "truth_by_iteration": t.round(5).tolist(), "snips_by_iteration": snips_by_iteration(w, r).round(5).tolist(),
            "snips_se": float(np.mean(se)), "rows_valued": float((w > 0).sum(1).mean()),
            "truth_spread_last_half": float(np.ptp(t[len(t) // 2:]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--train-seeds", type=int, default=3)
    ap.add_argument("--algorithms", nargs="*", default=["reinforce", "actor_critic"])
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    base = config(args.config, args.set)
    work = Path(tempfile.mkdtemp(prefix="drlput-sel-"))
    data = ensure_data(base, args.data_root or work)
    val = read_split(base, data, "val")
    eval_reqs = [make_requests(base.sim, base.eval_requests, EVAL_SEED + s) for s in range(base.eval_seeds)]
    start_ray()
    runs = []
    for algo in args.algorithms:
        for s in range(args.train_seeds):
            cfg = base.override({"seed": base.seed + s, "algorithm": algo})
            res = {"algorithm": algo, "seed": cfg.seed, **run(cfg, data, work / f"{algo}-{s}", val, eval_reqs)}
            runs.append(res)
            print(f"{algo:12s} seed {cfg.seed}: picks {res['picks']}  true reward "
                  + " ".join(f"{k} {v:.4f}" for k, v in res["reward"].items())
                  + f"  (SNIPS s.e. {res['snips_se']:.3f} on ~{res['rows_valued']:.0f} rows; truth spread over the "
                    f"last half {res['truth_spread_last_half']:.3f})", flush=True)
    summary = {algo: mean_std([r["reward"] for r in runs if r["algorithm"] == algo]) for algo in args.algorithms}
    print(f"{'algorithm':13s}" + "".join(f"{k:>18s}" for k in RULES) + "   (true reward of the pick, mean ± std)")
    for algo, row in summary.items():
        print(f"{algo:13s}" + "".join(f"{row[k]:>10.4f} ±{row[k + '_std']:.4f}" for k in RULES))
    print(f"({time.perf_counter() - t0:.0f}s; logs {data})")
    if args.json:
        write_json(args.json, {"config": args.config, "set": args.set, "runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
