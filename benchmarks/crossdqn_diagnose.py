"""Why does a Q-policy win or lose? Q accuracy on held-out logs and personalisation by tolerance.

    python benchmarks/crossdqn_diagnose.py --dir KEEP --config default

``KEEP`` is a directory written by ``crossdqn_eval.py --keep KEEP`` (``main/module`` and
``ablations/<name>/module``). For each Q-network, on fresh logs of the exploratory policy (not
trained on): the mean of Q(s, a_logged) against the discounted Monte-Carlo return G of the logged
episode and their correlation (Q(s, a) is the return of a *then the greedy policy*, so it should
exceed G of the exploratory policy: the difference is not a bias); then the over-estimation proper:
mean max_a Q(s0, a) over fresh first screens against the discounted return the greedy-on-Q policy
really earns on those requests. Then every policy (and the oracle) is rolled out at the PAE target
(mu by bisection) and the ads per screen shown to the least / middle / most ad-tolerant third of
users is printed: a policy that personalises shows more ads to tolerant users.
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
from workloads.crossdqn.evaluate import value_accuracy
from workloads.crossdqn.policies import OraclePolicy, fixed_policy
from workloads.crossdqn.rollout import EVAL_SEED, match_pae, q_policy
from workloads.crossdqn.sim import FeedSim, make_requests
from workloads.crossdqn.train import ABLATIONS


def mc_returns(df, gamma: float, eta: float) -> np.ndarray:
    """Discounted return from each logged screen to the end of its episode (rows sorted by eps, t)."""
    r = (df.r_ad + df.r_fee + eta * df.r_ex).to_numpy()
    eps = df.eps_id.to_numpy()
    g = np.zeros(len(r))
    for i in range(len(r) - 1, -1, -1):
        g[i] = r[i] + (gamma * g[i + 1] if i + 1 < len(r) and eps[i + 1] == eps[i] else 0.0)
    return g


def q_accuracy(net, df, g: np.ndarray) -> dict[str, float]:
    with torch.no_grad():
        q = net(torch.as_tensor(np.stack(df.obs.to_numpy()).astype(np.float32))).numpy()
    q_logged = q[np.arange(len(q)), df.actions.to_numpy()]
    return {"q_logged": float(q_logged.mean()), "mc_return": float(g.mean()),
            "bias": float((q_logged - g).mean()), "corr": float(np.corrcoef(q_logged, g)[0, 1]),
            "max_q": float(q.max(1).mean())}


def ads_by_tolerance(cfg: CrossDQNConfig, policy, n: int, mu: float) -> dict[str, float]:
    sim = FeedSim(cfg.sim, make_requests(cfg.sim, n, EVAL_SEED))
    reward = np.zeros(n)
    while sim.alive.any():
        idx = np.flatnonzero(sim.alive)
        act_sim = getattr(policy, "act_sim", None)
        out = sim.step(idx, act_sim(sim, idx, mu) if act_sim else policy(sim.observe(idx), mu))
        reward[idx] += out["reward"]
    ads_per_screen = sim.ads_shown / np.maximum(sim.screen, 1)
    third = np.quantile(sim.req.tol, [1 / 3, 2 / 3])
    groups = np.digitize(sim.req.tol, third)
    out = {}
    for g, name in enumerate(("low_tol", "mid_tol", "high_tol")):
        out[f"ads_{name}"] = float(ads_per_screen[groups == g].mean())
        out[f"screens_{name}"] = float(sim.screen[groups == g].mean())
        out[f"reward_{name}"] = float(reward[groups == g].mean())
    out["pae"] = float(sim.ads_shown.sum() / sim.slots_shown.sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--config", default="default")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cfg = load_config(CrossDQNConfig, args.config, WORKLOAD.configs_dir, parse_set(args.set))
    torch.set_num_threads(torch_threads())
    nets = {"crossdqn": rl.load_module(args.dir / "main" / "module").net}
    for name in ABLATIONS:
        path = args.dir / "ablations" / name / "module"
        if path.is_dir():
            nets[name] = rl.load_module(path).net
    df = simulate_logs(cfg, 2000, seed=cfg.seed + 12345)  # held out: a seed the training logs never use
    g = mc_returns(df, cfg.gamma, cfg.sim.eta)
    report: dict = {"q": {}, "personalisation": {}}
    print(f"{'net':18s}{'Q(s,a_log)':>11s}{'MC G_log':>9s}{'diff':>7s}{'corr':>7s}{'max_a Q(s0)':>12s}"
          f"{'greedy G':>9s}{'over-est.':>10s}")
    for name, net in nets.items():
        row = report["q"][name] = {**q_accuracy(net, df, g), **value_accuracy(cfg, net, cfg.eval_requests)}
        print(f"{name:18s}{row['q_logged']:>11.3f}{row['mc_return']:>9.3f}{row['bias']:>7.3f}{row['corr']:>7.3f}"
              f"{row['v_pred']:>12.3f}{row['v_true']:>9.3f}{row['v_bias']:>+10.3f}")
    n = cfg.eval_requests
    policies = {"fixed": fixed_policy(cfg), "oracle": OraclePolicy(cfg.sim),
                **{name: q_policy(net) for name, net in nets.items()}}
    print(f"{'policy':18s}" + "".join(f"{c:>12s}" for c in ("ads low_tol", "mid_tol", "high_tol", "screens lo",
                                                             "screens hi", "reward lo", "reward hi", "pae")))
    for name, pol in policies.items():
        mu = 0.0 if name == "fixed" else match_pae(cfg, pol, cfg.pae_target, max(100, n // 2))
        row = report["personalisation"][name] = ads_by_tolerance(cfg, pol, n, mu)
        print(f"{name:18s}" + "".join(f"{row[k]:>12.3f}" for k in (
            "ads_low_tol", "ads_mid_tol", "ads_high_tol", "screens_low_tol", "screens_high_tol",
            "reward_low_tol", "reward_high_tol", "pae")), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
