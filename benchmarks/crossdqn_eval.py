"""Cross DQN table (R_ad, R_fee, CVR, R_ex, PAE at equal PAE; mean ± std over seeds) + PAE vs target.

    python benchmarks/crossdqn_eval.py --config smoke [--targets 0.2 0.3 0.4 0.5] [--json out.json]

Logs the exploratory policy (data make), trains Cross DQN offline with RLlib, then runs
``evaluate_methods`` (which trains the three ablations on the same data). For each PAE target in
``--targets`` it trains Cross DQN and -aux with that target and reports their raw realised PAE
(no matching offset), i.e. how well the batch-level loss alone holds PAE at its target.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from adray import rl
from adray.config import load_config, parse_set
from adray.runtime import ensure_ray
from workloads.crossdqn import WORKLOAD
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import make_data
from workloads.crossdqn.evaluate import evaluate_methods, evaluate_policy, q_policy
from workloads.crossdqn.train import MODULE_DIR, train_module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="smoke")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--targets", nargs="*", type=float, default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cfg = load_config(CrossDQNConfig, args.config, WORKLOAD.configs_dir, parse_set(args.set))
    ensure_ray()
    report: dict = {"config": args.config, "pae_target": cfg.pae_target}
    with tempfile.TemporaryDirectory(prefix="crossdqn-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_data(cfg, root / "data")
        report["data_s"] = time.perf_counter() - t0
        train = train_module(cfg, root / "data", root / "main", validate=False)
        report["train"] = {k: train[k] for k in ("iter_time_s", "train_transitions_per_s", "train_time_s")}
        model = rl.load_module(root / "main" / MODULE_DIR)
        t0 = time.perf_counter()
        report["methods"] = evaluate_methods(cfg, root / "data", model)
        report["eval_s"] = time.perf_counter() - t0
        print(f"\nCross DQN table ({args.config}; PAE matched to {cfg.pae_target} by bisection on mu)")
        print(f"{'method':18s}" + "".join(f"{m:>18s}" for m in ("r_ad", "r_fee", "cvr", "r_ex", "pae", "reward")))
        for name, row in report["methods"].items():
            print(f"{name:18s}" + "".join(f"{row[m]:>10.4f} ±{row[m + '_std']:.4f}" for m in
                                          ("r_ad", "r_fee", "cvr", "r_ex", "pae", "reward")))
        print(f"{'method':18s}{'raw PAE (mu=0)':>22s}{'|gap|':>8s}{'per-request std':>17s}{'mu':>8s}")
        for name, row in report["methods"].items():
            print(f"{name:18s}{row['pae_raw']:>14.4f} ±{row['pae_raw_std']:.4f}{row['pae_raw_gap']:>8.4f}"
                  f"{row['pae_raw_req_std']:>17.4f}{row['pae_mu']:>8.3f}")
        curve = []
        for target in args.targets:
            for name, over in (("crossdqn", {}), ("no_aux", {"lam": 0.0})):
                c = cfg.override({**over, "pae_target": target})
                out = root / f"t{target}-{name}"
                train_module(c, root / "data", out, validate=False)
                row = evaluate_policy(c, q_policy(rl.load_module(out / MODULE_DIR)), matched=False)
                curve.append({"target": target, "method": name, "pae": row["pae_raw"],
                              "pae_std": row["pae_raw_std"], "reward": row["reward"]})
                print(f"PAE target {target:.2f} {name:10s} realised {row['pae_raw']:.4f} ± "
                      f"{row['pae_raw_std']:.4f} reward {row['reward']:.4f}", flush=True)
        report["pae_vs_target"] = curve
    print(f"iteration {report['train']['iter_time_s']:.2f}s, "
          f"{report['train']['train_transitions_per_s']:.0f} transitions/s offline, eval {report['eval_s']:.0f}s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
