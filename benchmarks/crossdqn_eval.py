"""Cross DQN table (R_ad, R_fee, CVR, R_ex, PAE at equal PAE; mean ± std over seeds) + PAE vs target.

    python benchmarks/crossdqn_eval.py --config smoke [--targets 0.2 0.3 0.4 0.5] [--train-seeds 3]
        [--plot results/crossdqn_pae_vs_target.png] [--skip-table] [--json out.json]

Logs the exploratory policy (data make), trains Cross DQN offline with RLlib and the three
ablations (``train.train_ablations``: the config + the overrides of ``configs/no_aux*.yaml``) on the
same data, then runs ``evaluate`` on them (``--skip-table`` skips all of it; ``--reuse`` takes the
data and ablations of an earlier ``--keep`` directory). For each PAE target in ``--targets`` and each of ``--train-seeds`` training seeds it trains
Cross DQN and -aux (lam=0) with that target and measures their raw realised PAE (greedy, mu=0: no
matching offset), i.e. how well the batch-level loss alone holds PAE at its target. The PNG at
``--plot`` shows realised PAE against target: mean over training seeds, error bars = std over
training seeds (each seed's PAE is the mean over ``eval_seeds`` fresh-request seeds).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adray import rl
from adray.config import load_config, parse_set
from adray.runtime import ensure_ray, torch_threads
from workloads.crossdqn import WORKLOAD
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import make_data
from workloads.crossdqn.evaluate import evaluate, evaluate_policy
from workloads.crossdqn.rollout import EVAL_SEED, q_policy, rollout
from workloads.crossdqn.train import ABLATIONS, MODULE_DIR, ablation_overrides, train_ablations, train_module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="smoke")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--targets", nargs="*", type=float, default=[0.2, 0.3, 0.4, 0.5])
    ap.add_argument("--train-seeds", type=int, default=3, help="training seeds per (target, method)")
    ap.add_argument("--plot", type=Path, default=Path("results/crossdqn_pae_vs_target.png"))
    ap.add_argument("--skip-table", action="store_true", help="only the PAE-vs-target curve")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="keep the data and trained modules here (for diagnose)")
    ap.add_argument("--reuse", type=Path, help="a --keep directory of an earlier run with the same data and"
                    " ablation config: reuse its data and ablations (retrain only Cross DQN)")
    args = ap.parse_args()
    cfg = load_config(CrossDQNConfig, args.config, WORKLOAD.configs_dir, parse_set(args.set))
    ensure_ray()
    torch.set_num_threads(torch_threads())  # evaluation too: no oversubscribed shared CPUs
    report: dict = {"config": args.config, "pae_target": cfg.pae_target}
    with tempfile.TemporaryDirectory(prefix="crossdqn-bench-") as tmp:
        root = args.keep or Path(tmp)
        t0 = time.perf_counter()
        data = args.reuse / "data" if args.reuse else root / "data"
        if not args.reuse:
            make_data(cfg, data)
        report["data_s"] = time.perf_counter() - t0
        if not args.skip_table:
            train = train_module(cfg, data, root / "main", validate=False)
            report["train"] = {k: train[k] for k in ("iter_time_s", "train_transitions_per_s", "train_time_s")}
            model = rl.load_module(root / "main" / MODULE_DIR)
            t0 = time.perf_counter()
            ablations = ({name: rl.load_module(args.reuse / "ablations" / name / MODULE_DIR) for name in ABLATIONS}
                         if args.reuse else train_ablations(cfg, data, root / "ablations"))
            report["methods"] = evaluate(cfg, data, model, ablations)
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
        no_aux: dict[int, dict] = {}  # lam=0: the target does not enter training; one model per seed
        for target in args.targets:
            for name, over in (("crossdqn", {}), ("no_aux", ablation_overrides("no_aux"))):
                per_seed = []
                for k in range(args.train_seeds):
                    if name == "no_aux" and k in no_aux:
                        per_seed.append(no_aux[k])
                        continue
                    c = cfg.override({**over, "pae_target": target, "seed": cfg.seed + k})
                    out = root / f"t{target}-{name}-s{k}"
                    m = train_module(c, data, out, validate=False)
                    policy = q_policy(rl.load_module(out / MODULE_DIR))
                    per_seed.append(evaluate_policy(c, policy, matched=False))
                    if "pae_offset_trained" in m:  # the batch-level loss alone: β before calibration
                        shift = m["pae_offset_trained"] - m["pae_offset"]
                        per_seed[-1]["pae_loss_only"] = float(np.mean([
                            rollout(c, policy, c.eval_requests, EVAL_SEED + s, shift)["pae"]
                            for s in range(c.eval_seeds)]))
                    if name == "no_aux":
                        no_aux[k] = per_seed[-1]
                pae = np.array([r["pae_raw"] for r in per_seed])
                reward = np.array([r["reward"] for r in per_seed])
                loss_only = np.array([r.get("pae_loss_only", np.nan) for r in per_seed])
                curve.append({"target": target, "method": name, "pae": float(pae.mean()),
                              "pae_loss_only": float(loss_only.mean()), "pae_loss_only_std": float(loss_only.std()),
                              "pae_std": float(pae.std()), "pae_seeds": pae.tolist(),
                              "pae_eval_std": float(np.mean([r["pae_raw_std"] for r in per_seed])),
                              "reward": float(reward.mean()), "reward_std": float(reward.std())})
                print(f"PAE target {target:.2f} {name:10s} realised {pae.mean():.4f} ± {pae.std():.4f} "
                      f"(seeds {np.round(pae, 4).tolist()}) reward {reward.mean():.4f}; before calibration"
                      f" {loss_only.mean():.4f} ± {loss_only.std():.4f}", flush=True)
        report["pae_vs_target"] = curve
    if curve and args.plot:
        plot_pae_vs_target(curve, args.plot, f"{' '.join([args.config, *args.set])}, {args.train_seeds} training seeds")
        print(f"plot: {args.plot}")
    if "train" in report:
        print(f"iteration {report['train']['iter_time_s']:.2f}s, {report['train']['train_transitions_per_s']:.0f}"
              f" transitions/s offline, eval {report['eval_s']:.0f}s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def plot_pae_vs_target(curve: list[dict], path: Path, subtitle: str) -> None:
    """Realised (greedy, mu=0) PAE against the PAE target per method, error bars = seed std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    targets = sorted({r["target"] for r in curve})
    ax.plot(targets, targets, "k--", lw=1, label="realised = target")
    for i, (name, label) in enumerate((("crossdqn", "Cross DQN"), ("no_aux", "-aux (λ=0)"))):
        rows = sorted((r for r in curve if r["method"] == name), key=lambda r: r["target"])
        x = np.array([r["target"] for r in rows]) + (i - 0.5) * 0.006  # dodge overlapping bars
        ax.errorbar(x, [r["pae"] for r in rows], yerr=[r["pae_std"] for r in rows], marker="o", capsize=4,
                    label=label)
    rows = sorted((r for r in curve if r["method"] == "crossdqn" and np.isfinite(r.get("pae_loss_only", np.nan))),
                  key=lambda r: r["target"])
    if rows:  # β as the batch-level loss left it, before the calibration shift
        ax.errorbar(np.array([r["target"] for r in rows]) + 0.003, [r["pae_loss_only"] for r in rows],
                    yerr=[r["pae_loss_only_std"] for r in rows], marker="s", capsize=4, ls=":",
                    label="Cross DQN, loss only (before calibration)")
    ax.set_xlabel("PAE target (Eq. 21)")
    ax.set_ylabel("realised PAE (greedy, μ=0)")
    ax.set_title(f"Cross DQN: PAE vs target ({subtitle})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
