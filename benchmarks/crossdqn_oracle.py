"""Simulator check: an oracle personalised policy vs the best fixed slot pattern at equal PAE.

    python benchmarks/crossdqn_oracle.py --config default [--set sim.tol_concentration=2 ...] [--json out.json]

Best fixed: every constant pattern with round(pae_target·K) ads is rolled out on calibration
requests; the best one (reward per request) is evaluated on the eval seeds. Oracle
(``policies.OraclePolicy``: exact DP on each user's true tolerance and items): its PAE knob ``mu``
is bisected on calibration requests to the best fixed pattern's realised PAE, and it is evaluated
on the same eval seeds. The non-personal oracle (every user at tolerance
0.5) separates what personalisation earns from what item/arrangement knowledge earns; the
count-only oracle (personal, but one fixed slot pattern per ad count) separates what choosing *how
many* ads per user and screen earns from choosing *where* they go -- the part that SACU/MCAU model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from adray.config import load_config, parse_set
from workloads.crossdqn import WORKLOAD
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.evaluate import evaluate_policy
from workloads.crossdqn.policies import OraclePolicy, constant_policy, fixed_policy, patterns_with
from workloads.crossdqn.rollout import CALIBRATION_SEED, rollout

METRICS = ("r_ad", "r_fee", "cvr", "r_ex", "pae", "reward")


def oracle_vs_fixed(cfg: CrossDQNConfig) -> dict:
    n_cal = max(100, cfg.eval_requests // 2)
    k = cfg.sim.slots
    cands = patterns_with(k, int(round(cfg.pae_target * k)))
    cal = {a: rollout(cfg, constant_policy(a), n_cal, CALIBRATION_SEED)["reward"] for a in cands}
    best = max(cal, key=cal.get)
    out = {"best_fixed_action": best, "best_fixed_slots": [j for j in range(k) if best >> j & 1],
           "fixed_calibration_rewards": {format(a, f"0{k}b")[::-1]: v for a, v in cal.items()}}
    out["best_fixed"] = evaluate_policy(cfg, constant_policy(best), matched=False)
    out["fixed"] = evaluate_policy(cfg, fixed_policy(cfg), matched=False)
    pae = out["best_fixed"]["pae"]
    mcfg = cfg.override({"pae_target": round(pae, 4)})  # everyone at the best fixed pattern's PAE
    for name, personal in (("oracle", True), ("oracle_nonpersonal", False)):
        out[name] = evaluate_policy(mcfg, OraclePolicy(mcfg.sim, personal))
    # one pattern per ad count (the best constant pattern of that count on calibration requests):
    # the DP then chooses only how many ads each user sees per screen, not where they go
    per_count = []
    for count in range(k + 1):
        pats = patterns_with(k, count)
        rewards = {a: rollout(cfg, constant_policy(a), n_cal, CALIBRATION_SEED)["reward"] for a in pats}
        per_count.append(max(rewards, key=rewards.get))
    out["count_only_patterns"] = [format(a, f"0{k}b")[::-1] for a in per_count]
    out["oracle_count_only"] = evaluate_policy(mcfg, OraclePolicy(mcfg.sim, True, per_count))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cfg = load_config(CrossDQNConfig, args.config, WORKLOAD.configs_dir, parse_set(args.set))
    t0 = time.perf_counter()
    out = oracle_vs_fixed(cfg)
    print(f"best fixed pattern slots {out['best_fixed_slots']} (calibration rewards "
          f"{ {k: round(v, 3) for k, v in out['fixed_calibration_rewards'].items()} })")
    print(f"{'method':20s}" + "".join(f"{m:>17s}" for m in METRICS))
    for name in ("fixed", "best_fixed", "oracle", "oracle_nonpersonal", "oracle_count_only"):
        row = out[name]
        print(f"{name:20s}" + "".join(f"{row[m]:>9.4f} ±{row[m + '_std']:.4f}" for m in METRICS))
    gap = out["oracle"]["reward"] - out["best_fixed"]["reward"]
    print(f"oracle - best fixed: {gap:+.4f} reward/request ({100 * gap / out['best_fixed']['reward']:+.1f}%); "
          f"non-personal oracle - best fixed: {out['oracle_nonpersonal']['reward'] - out['best_fixed']['reward']:+.4f}"
          f"  ({time.perf_counter() - t0:.0f}s)")
    print(f"count-only oracle (patterns {out['count_only_patterns']}) - best fixed: "
          f"{out['oracle_count_only']['reward'] - out['best_fixed']['reward']:+.4f}; full oracle - count-only: "
          f"{out['oracle']['reward'] - out['oracle_count_only']['reward']:+.4f} (what placement adds)")
    out["gap"] = gap
    if args.json:
        args.json.write_text(json.dumps({"config": args.config, "set": args.set, **out}, indent=2))


if __name__ == "__main__":
    main()
