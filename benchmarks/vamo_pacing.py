"""Where the auto-bidders' score is lost (issue 22): budget pacing, CPA and alpha per step.

    python benchmarks/vamo_pacing.py --models stl=vamo-stl-s0@latest,vamo=vamo-vamo-s0@latest \
        [--baselines pid_budget] [--days eval|val] [--target-returns 0.5,1,1.5,2] [--out results/vamo]

Every bidder bids for the same advertisers (evaluate.controlled: every second one of each task) in
the same simulated days against the same opponents (evaluate.eval_day's protocol), and for those
advertisers this records, per step: the share of the day's budget spent so far, alpha / CPA
constraint, and at the end of the day the realised CPA against the constraint, conversions, the
CPA penalty and AuctionNet's score (conversions x min(1, (CPA / realised CPA)^2)).

``--days eval`` uses the evaluation days (what the README's table reports; here only to explain
it: nothing is chosen on them); ``--days val`` the dataset's held-out validation day (the selection
signal issue 22 allows), bid ``eval_seeds`` times. ``--target-returns`` also bids each learned
model at these multiples of its return target (``target_return`` x the 90th percentile of the task's
logged returns: policy.rtg_start), the return-to-go study.

Writes ``pacing.png`` (spend share, alpha / CPA by step; CPA ratio) and ``pacing.json`` under
``--out``; the last stdout line is the JSON summary per bidder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LATE_STEP = 0.9
"""An advertiser "ran out early" when under 1% of its budget is left before this share of the day."""


def bid_days(sim: Any, seed: int, days: list[int], make: Any, lp: Any, opponent_seeds: int) -> dict[str, Any]:
    """Per-step curves and end-of-day figures of the controlled advertisers, over days x seeds."""
    from workloads.vamo.evaluate import OPPONENT_STREAM, controlled, opponents
    from workloads.vamo.sim import simulate_day
    from workloads.vamo.world import make_advertisers, rng_for

    adv = make_advertisers(sim, seed)
    mine = controlled(adv.task)
    others = np.setdiff1d(np.arange(adv.n), mine)
    spend, ratio, rows = [], [], []
    for j in range(opponent_seeds):
        for d in days:
            res = simulate_day(sim, seed, d, [(mine, make()), *opponents(others, lp, rng_for(seed, OPPONENT_STREAM, d, j))])
            budget = res.day.budget[mine].astype(float)
            cum = np.cumsum(res.log.cost[:, mine], 0) / budget  # (T, n) share of budget spent by the step's end
            spend.append(cum)
            ratio.append(res.log.alpha[:, mine] / res.day.cpa[mine])
            s = res.scores()
            steps = cum.shape[0]
            out_at = np.argmax(cum >= 0.99, 0).astype(float)
            out_at[cum[-1] < 0.99] = np.nan
            rows.append({"spent": cum[-1], "cpa_ratio": s["cpa_real"][mine] / res.day.cpa[mine],
                         "penalty": s["penalty"][mine], "conversions": s["conversions"][mine],
                         "score": s["score"][mine], "out_early": np.nan_to_num(out_at, nan=steps) < LATE_STEP * steps})
    spend_a, ratio_a = np.concatenate(spend, 1), np.concatenate(ratio, 1)
    cat = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    converted = cat["conversions"] > 0
    return {
        "score": float(cat["score"].mean()), "conversions": float(cat["conversions"].mean()),
        "penalty": float(cat["penalty"].mean()), "spent_share": float(cat["spent"].mean()),
        "out_early_share": float(cat["out_early"].mean()),
        "cpa_over_share": float((cat["cpa_ratio"][converted] > 1.0).mean()),
        "cpa_ratio_median": float(np.median(cat["cpa_ratio"][converted])),
        "alpha_ratio_median": float(np.median(ratio_a[ratio_a > 0])) if (ratio_a > 0).any() else 0.0,
        "spend_curve": np.mean(spend_a, 1).round(4).tolist(),
        "alpha_curve": [float(np.median(r[r > 0])) if (r > 0).any() else 0.0 for r in ratio_a],
        "cpa_ratios": np.sort(cat["cpa_ratio"][converted]).round(3).tolist(),
        "advertiser_days": int(len(cat["score"])),
    }


def capacity_efficiency(data_dir: Path) -> np.ndarray:
    """(K,) per task: the 90th percentile over the logged training trajectories of score / capacity,
    capacity = budget / CPA constraint (the conversions the budget buys at the constraint). From the
    logs only, as the model's own ``rtg_target`` is."""
    import pandas as pd

    from adray.data import read_dataset
    from workloads.vamo.config import TASKS

    d = read_dataset(data_dir).read("train", columns=["period", "advertiser", "task", "budget", "cpa", "step", "rtg"])
    first = d.sort_values("step").groupby(["period", "advertiser"]).first()
    eff = pd.Series(first["rtg"].to_numpy() * first["cpa"].to_numpy() / first["budget"].to_numpy(), index=first.index)
    task = first["task"].to_numpy()
    return np.array([float(np.quantile(eff[task == k], 0.9)) for k in range(len(TASKS))])


def capacity_bidder(model: Any, eff: np.ndarray, multiple: float) -> Any:
    """Experimental (inference only, the network unchanged): a ModelBidder whose starting
    return-to-go is per advertiser, ``multiple`` x eff[task] x budget / CPA, instead of the model's
    one target per task."""
    from workloads.vamo.policy import ModelBidder

    class CapacityBidder(ModelBidder):
        def start(self, result: Any, idx: np.ndarray) -> None:
            cap = result.day.budget[idx] / result.day.cpa[idx]
            self.rtg0 = multiple * eff[result.adv.task[idx]] * cap

    return CapacityBidder(model)


def plot(results: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 4.6))
    for a in ax:  # up to 20 bidders, each its own colour
        a.set_prop_cycle(color=plt.cm.tab20.colors[: max(1, len(results))])
    for name, r in results.items():
        steps = np.arange(1, len(r["spend_curve"]) + 1)
        ax[0].plot(steps, r["spend_curve"], label=f"{name} ({r['score']:.0f})")
        ax[1].plot(steps, r["alpha_curve"], label=name)
        q = np.asarray(r["cpa_ratios"])
        ax[2].plot(q, np.linspace(0, 1, len(q)), label=name)
    n = len(next(iter(results.values()))["spend_curve"])
    ax[0].plot([0, n], [0, 1], "k--", lw=0.8, label="even pacing")
    ax[0].set(xlabel="step", ylabel="share of budget spent (mean)", title="budget pacing")
    ax[1].set(xlabel="step", ylabel="alpha / CPA constraint (median)", title="bid coefficient", yscale="log")
    ax[2].axvline(1.0, color="k", lw=0.8, ls="--")
    ax[2].set(xlabel="realised CPA / constraint", ylabel="share of advertiser-days", title="CPA (CDF)",
              xlim=(0, 3))
    ax[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="stl=vamo-stl-s0@latest,vamo=vamo-vamo-s0@latest",
                    help="LABEL=REF,... published models (registry: --out/home/registry)")
    ap.add_argument("--baselines", default="pid_budget,pid_cpa,online_lp")
    ap.add_argument("--days", choices=("eval", "val"), default="eval")
    ap.add_argument("--target-returns", default="", help="also bid each model at these target_return values")
    ap.add_argument("--capacity-targets", default="",
                    help="experimental: also bid each model with a per-advertiser return target, these multiples "
                         "of the logs' 90th-percentile score per unit of budget / CPA (capacity_bidder)")
    ap.add_argument("--out", default=str(REPO / "results" / "vamo"))
    ap.add_argument("--replot", default="", help="only redraw the PNG of a pacing*.json written before")
    args = ap.parse_args()
    out = Path(args.out)
    if args.replot:
        src = Path(args.replot)
        plot(json.loads(src.read_text()), src.with_suffix(".png"), src.stem)
        return
    os.environ.setdefault("ADRAY_REGISTRY", str(out / "home" / "registry"))

    from adray.models import load_model
    from workloads.vamo.data import lp_table
    from workloads.vamo.evaluate import at_target, baseline_bidder, eval_days, market_of, validation_day
    from workloads.vamo.policy import ModelBidder

    models = {label: load_model(ref).model for label, ref in (kv.split("=", 1) for kv in args.models.split(",") if kv)}
    cfg = next(iter(models.values())).cfg
    sim, seed = market_of(cfg, out / "data")
    lp = lp_table(sim, seed)
    days = eval_days(cfg) if args.days == "eval" else [validation_day(cfg)]
    seeds = cfg.eval_seeds
    results: dict[str, dict[str, Any]] = {}
    for name in [b for b in args.baselines.split(",") if b]:
        results[name] = bid_days(sim, seed, days, lambda name=name: baseline_bidder(name, lp), lp, seeds)
        print(f"{name:>22}: score {results[name]['score']:7.1f}", file=sys.stderr, flush=True)
    for label, m in models.items():
        targets = [float(t) for t in args.target_returns.split(",") if t] or [m.cfg.target_return]
        for t in targets:
            name = label if t == m.cfg.target_return and len(targets) == 1 else f"{label}@rtg{t:g}"
            results[name] = bid_days(sim, seed, days, lambda m=at_target(m, t): ModelBidder(m), lp, seeds)
            print(f"{name:>22}: score {results[name]['score']:7.1f}", file=sys.stderr, flush=True)
        for c in [float(t) for t in args.capacity_targets.split(",") if t]:
            eff = capacity_efficiency(out / "data")
            name = f"{label}@cap{c:g}"
            results[name] = bid_days(sim, seed, days, lambda m=m, c=c, eff=eff: capacity_bidder(m, eff, c), lp, seeds)
            print(f"{name:>22}: score {results[name]['score']:7.1f}", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    tag = "" if args.days == "eval" and not (args.target_returns or args.capacity_targets) else (
        f"_{args.days}" + ("_rtg" if args.target_returns else "") + ("_cap" if args.capacity_targets else ""))
    plot(results, out / f"pacing{tag}.png", f"{args.days} days {days}, {seeds} opponent seeds; score in the legend")
    (out / f"pacing{tag}.json").write_text(json.dumps(results))
    summary = {k: {f: v for f, v in r.items() if not isinstance(v, list)} for k, r in results.items()}
    for k, r in summary.items():
        print(f"{k:>22}: score {r['score']:7.1f}  conv {r['conversions']:6.1f}  penalty {r['penalty']:.3f}  "
              f"spent {r['spent_share']:.2f}  out early {r['out_early_share']:.2f}  CPA>limit {r['cpa_over_share']:.2f}  "
              f"median CPA/limit {r['cpa_ratio_median']:.2f}  median alpha/CPA {r['alpha_ratio_median']:.2f}",
              file=sys.stderr)
    print(json.dumps({"days": days, "opponent_seeds": seeds, "bidders": summary}))


if __name__ == "__main__":
    main()
