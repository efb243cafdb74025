"""Off-policy evaluation of Cross DQN policies from exploratory logs, against simulator truth.

    python benchmarks/crossdqn_ope.py --dir KEEP --config default [--logs 10000] [--json out.json]

``KEEP`` is a directory of ``crossdqn_eval.py --keep`` or ``crossdqn_variants.py`` (every
``*/module`` and ``*/*/module`` below it is a trained Q-network). On fresh logs of the exploratory policy (a seed no
training run used) every policy -- Fixed, GEA and each Q-network, each at its PAE-matching mu --
is valued by PDIS, WPDIS, DR and WDR (``adray.ope``; DR/WDR with the policy's own Q as q̂), and the
truth is its simulator rollout on fresh requests (γ-discounted reward per request, mean over the
config's eval seeds). Output: estimate ± bootstrap s.e., truth, error, effective sample size, and
the fraction of logged screens on which the policy agrees with the log; then the same for the
first screen's reward alone (one-step IPS / SNIPS / DR, against the rollout's first-screen reward).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from adray import rl
from adray.config import load_config, parse_set
from adray.runtime import torch_threads
from workloads.crossdqn import WORKLOAD
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import simulate_logs
from workloads.crossdqn.evaluate import off_policy_estimates
from workloads.crossdqn.policies import fixed_policy, gea_policy
from workloads.crossdqn.rollout import EVAL_SEED, match_pae, q_policy, rollout

OPE_LOG_SEED = 54_321
TRAJ = ("pdis", "wpdis", "dr", "wdr")
FIRST = ("ips_first", "snips_first", "dr_first")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--config", default="default")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--logs", type=int, default=10_000, help="logged requests for the estimates")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cfg = load_config(CrossDQNConfig, args.config, WORKLOAD.configs_dir, parse_set(args.set))
    torch.set_num_threads(torch_threads())
    logs = simulate_logs(cfg, args.logs, seed=cfg.seed + OPE_LOG_SEED)
    obs = np.stack(logs["obs"].to_numpy()).astype(np.float32)
    candidates: dict[str, tuple] = {"fixed": (fixed_policy(cfg), None), "gea": (gea_policy(cfg.sim), None)}
    for path in sorted({p for pattern in ("*/module", "*/*/module") for p in args.dir.glob(pattern)}):  # follows links
        net = rl.load_module(path).net
        candidates[str(path.parent.relative_to(args.dir))] = (q_policy(net), net)
    n = cfg.eval_requests
    report: dict = {"config": args.config, "logs_requests": args.logs, "logged_screens": len(logs), "policies": {}}
    print(f"{len(logs)} logged screens of {args.logs} requests; γ = {cfg.gamma}; truth = rollout on "
          f"{cfg.eval_seeds}×{n} fresh requests")
    print(f"{'policy':28s}{'truth':>8s}{'agree':>7s}" + "".join(f"{e:>22s}" for e in TRAJ))
    print(f"{'':43s}" + "".join(f"{e:>22s}" for e in FIRST) + "   (value ± s.e. (ESS))")
    with torch.no_grad():
        for name, (policy, net) in candidates.items():
            mu = 0.0 if name == "fixed" else match_pae(cfg, policy, cfg.pae_target, max(100, n // 2))
            runs = [rollout(cfg, policy, n, EVAL_SEED + s, mu) for s in range(cfg.eval_seeds)]
            truth = float(np.mean([r["return"] for r in runs]))
            truth_first = float(np.mean([r["first_screen"] for r in runs]))
            est = off_policy_estimates(cfg, logs, policy, mu, net)
            agree = float((policy(obs, mu) == logs["actions"].to_numpy()).mean())
            report["policies"][name] = {"mu": mu, "truth": truth, "truth_first_screen": truth_first, "agree": agree,
                                        "estimates": est}
            print(f"{name:28s}{truth:>8.3f}{agree:>7.3f}" + "".join(
                f"{est[e]['value']:>9.3f}±{est[e]['std_err']:.3f} ({est[e]['ess']:>4.0f})" for e in TRAJ), flush=True)
            print(f"{'  first screen only':28s}{truth_first:>8.3f}{'':>7s}" + "".join(
                f"{est[e]['value']:>9.3f}±{est[e]['std_err']:.3f} ({est[e]['ess']:>4.0f})" for e in FIRST if e in est))
    for e in (*TRAJ, *FIRST):
        key = "truth_first_screen" if e in FIRST else "truth"
        rows = [p for p in report["policies"].values() if e in p["estimates"]]
        errs = np.array([p["estimates"][e]["value"] - p[key] for p in rows])
        truths = np.array([p[key] for p in rows])
        ests = np.array([p["estimates"][e]["value"] for p in rows])
        rank = (float(np.corrcoef(np.argsort(np.argsort(truths)), np.argsort(np.argsort(ests)))[0, 1])
                if len(rows) >= 3 else float("nan"))
        report[e] = {"mean_abs_error": float(np.abs(errs).mean()), "rank_corr": rank}
        print(f"{e}: mean |estimate - truth| {np.abs(errs).mean():.3f}; Spearman rank corr with truth {rank:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
