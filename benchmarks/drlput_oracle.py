"""Simulator check: does the best utility action depend on the request? Oracles vs the best fixed action.

    python benchmarks/drlput_oracle.py [--config default] [--set sim.long_shrink=0 ...] [--seeds 3] [--json]

In TRUE expected reward per request (simulator truth, ``workloads/drlput/truth.py``), on
``eval_requests`` fresh requests per seed (mean ± std over seeds):

* ``uniform``      the uniform behaviour policy (exact mean over all actions);
* ``production``   the action nearest the production values (``action.production``);
* ``best_fixed``   the best single action on calibration requests (manual tuning at its best);
* ``state_oracle`` per request the best action for its user's latent propensities and context
                   (averaged over redrawn candidate ads): what personalisation can earn at most;
                   ``_reserve`` / ``_weights``: the same with only the reserve (weights at the best
                   fixed action's) or only the weights (reserve at its) personalised;
* ``oracle``       the per-request best action (knows the candidates: no policy of the state can).

Plus the simulator's throughput: requests/s generated, decided (utility, Eq. 3.1) and answered
with events and reward, one action per request, on one thread.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from adray.config import load_config, parse_set
from workloads.drlput.actions import ActionSpace
from workloads.drlput.config import DRLPUTConfig
from workloads.drlput.reward import reward
from workloads.drlput.sim import make_requests, outcomes, shown_ads
from workloads.drlput.study import CONFIGS_DIR
from workloads.drlput.truth import (
    EVAL_SEED,
    METRICS,
    best_fixed_action,
    policy_metrics,
    reward_table,
    state_action_values,
    state_oracle_actions,
    uniform_metrics,
)

METHODS = ("uniform", "production", "best_fixed", "state_oracle_reserve", "state_oracle_weights", "state_oracle",
           "oracle")


def oracle_vs_fixed(cfg: DRLPUTConfig, seeds: int, redraws: int = 16) -> dict:
    space = ActionSpace(cfg.action)
    fixed = best_fixed_action(cfg, space)
    prod = space.nearest(cfg.action.production)
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    reserve = space.values[:, 3]
    same_weights = (space.values[:, :3] == space.values[fixed, :3]).all(1)  # personalise the reserve only
    same_reserve = reserve == reserve[fixed]  # personalise the weights only
    for s in range(seeds):
        req = make_requests(cfg.sim, cfg.eval_requests, EVAL_SEED + s)
        table = reward_table(cfg, req, space)
        n = len(req)
        rows["uniform"].append(uniform_metrics(cfg, req, space))
        rows["production"].append(policy_metrics(cfg, req, space, np.full(n, prod)))
        rows["best_fixed"].append(policy_metrics(cfg, req, space, np.full(n, fixed)))
        q = state_action_values(cfg, req, space, redraws, s)
        for name, allowed in (("state_oracle", None), ("state_oracle_reserve", same_weights),
                              ("state_oracle_weights", same_reserve)):
            acts = state_oracle_actions(cfg, req, space, allowed=allowed, q=q)
            rows[name].append(policy_metrics(cfg, req, space, acts))
        rows["oracle"].append(policy_metrics(cfg, req, space, table.argmax(1)))
    out: dict = {"num_actions": space.size, "best_fixed_action": fixed,
                 "best_fixed_params": dict(zip(("w_click", "w_long", "w_conv", "reserve"),
                                               space.values[fixed].round(4).tolist())),
                 "production_action": prod}
    for m, rs in rows.items():
        out[m] = {k: float(np.mean([r[k] for r in rs])) for k in METRICS}
        out[m].update({f"{k}_std": float(np.std([r[k] for r in rs])) for k in METRICS})
    base = out["best_fixed"]["reward"]
    out["oracle_gain"] = out["oracle"]["reward"] / base - 1
    for m in ("state_oracle", "state_oracle_reserve", "state_oracle_weights"):
        out[f"{m}_gain"] = out[m]["reward"] / base - 1
    out["best_fixed_gain_over_uniform"] = base / out["uniform"]["reward"] - 1
    return out


def throughput(cfg: DRLPUTConfig, n: int = 100_000, repeats: int = 3) -> float:
    """Requests/s: generate, decide (a random action each), draw events, compute the reward."""
    space = ActionSpace(cfg.action)
    rng = np.random.default_rng(0)
    best = float("inf")
    for r in range(repeats):
        t0 = time.perf_counter()
        req = make_requests(cfg.sim, n, 123 + r)
        comp = outcomes(req, shown_ads(req, space.values[rng.integers(0, space.size, n)]))
        reward(comp, cfg.reward)
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--redraws", type=int, default=16, help="candidate redraws of the state oracle")
    ap.add_argument("--json", action="store_true", help="print one JSON line of the figures")
    args = ap.parse_args()
    cfg = load_config(DRLPUTConfig, args.config, CONFIGS_DIR, parse_set(args.set))
    t0 = time.perf_counter()
    out = oracle_vs_fixed(cfg, args.seeds, args.redraws)
    out["sim_requests_per_s"] = throughput(cfg)
    out["elapsed_s"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"config": args.config, "set": args.set, "seeds": args.seeds,
                          "eval_requests": cfg.eval_requests, **out}))
        return
    print(f"|A| = {out['num_actions']}; best fixed action {out['best_fixed_action']} = {out['best_fixed_params']}; "
          f"{args.seeds} seeds x {cfg.eval_requests} requests, true expected values per request")
    print(f"{'method':22s}" + "".join(f"{m:>18s}" for m in METRICS))
    for m in METHODS:
        print(f"{m:22s}" + "".join(f"{out[m][k]:>10.4f} ±{out[m][k + '_std']:.4f}" for k in METRICS))
    print(f"vs best fixed: oracle {100 * out['oracle_gain']:+.1f}%, state oracle {100 * out['state_oracle_gain']:+.1f}% "
          f"(reserve only {100 * out['state_oracle_reserve_gain']:+.1f}%, weights only "
          f"{100 * out['state_oracle_weights_gain']:+.1f}%); best fixed vs uniform: "
          f"{100 * out['best_fixed_gain_over_uniform']:+.1f}%")
    print(f"simulator: {out['sim_requests_per_s']:,.0f} requests/s (one thread)  ({out['elapsed_s']:.0f}s)")


if __name__ == "__main__":
    main()
