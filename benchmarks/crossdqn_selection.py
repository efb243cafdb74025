"""Which held-out-log estimate ranks Cross DQN models the way the simulator does.

    python benchmarks/crossdqn_selection.py --dir KEEP [--config smoke] [--set n_requests=10000] [--json out.json]

An evaluation of the *selection objective* (workloads/crossdqn/selection.py), not of a model: on one
logged dataset it trains ten variants (λ, τ, lr, seeds, -sacu, one iteration) with the shipped
trainer (the held-out episodes never trained on), values each on the held-out logs -- WDR (the
objective), WPDIS, first-screen SNIPS, and FQE (a critic fitted on the held-out transitions,
defined here only to compare) -- and sets them against the truth, its simulator rollout at the PAE
target on fresh requests (reward per request, undiscounted). Prints each variant and the Spearman
rank correlation of each estimate with the truth. ``KEEP`` keeps the data and modules (rerunning
reuses them).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from adray import ope, rl
from adray.config import load_config, parse_set
from adray.runtime import ensure_ray, torch_threads
from workloads.crossdqn import WORKLOAD
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import check_dataset, make_data
from workloads.crossdqn.rollout import EVAL_SEED, match_pae, q_policy, rollout
from workloads.crossdqn.selection import HeldOut, greedy_actions, match_offset, net_scores
from workloads.crossdqn.train import MODULE_DIR, train_module

VARIANTS = {"lam0.01_s0": {}, "lam0.01_s1": {"seed": 1}, "lam0_s0": {"lam": 0.0}, "lam0_s1": {"lam": 0.0, "seed": 1},
            "lam0.1": {"lam": 0.1}, "lam1": {"lam": 1.0}, "nosacu": {"lam": 0.0, "use_sacu": False},
            "iter1": {"iterations": 1}, "tau0.001": {"tau": 0.001}, "lr1e-4": {"lr": 1e-4}}


def fqe(held: HeldOut, policy_next: np.ndarray, obs0: np.ndarray, act0: np.ndarray, n_actions: int,
        steps: int = 1500, seed: int = 0) -> float:
    """Fitted Q evaluation (Le et al. 2019), undiscounted: an MLP critic fitted to
    ``r + (1 - done) Q_target(s', π(s'))`` on the held-out transitions; mean Q(s0, π(s0))."""
    from torch import nn

    torch.manual_seed(seed)
    q = nn.Sequential(nn.Linear(held.obs.shape[1], 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, n_actions))
    target, opt = copy.deepcopy(q), torch.optim.Adam(q.parameters(), lr=1e-3)
    obs, new_obs = torch.as_tensor(held.obs), torch.as_tensor(held.new_obs)
    act, nxt = torch.as_tensor(held.actions), torch.as_tensor(policy_next)
    rew, cont = torch.as_tensor(held.rewards, dtype=torch.float32), torch.as_tensor(~held.terminateds, dtype=torch.float32)
    rng = np.random.default_rng(seed)
    with torch.enable_grad():
        for i in range(steps):
            idx = torch.as_tensor(rng.integers(0, len(held), 256))
            with torch.no_grad():
                y = rew[idx] + cont[idx] * target(new_obs[idx]).gather(1, nxt[idx, None]).squeeze(1)
            loss = torch.nn.functional.mse_loss(q(obs[idx]).gather(1, act[idx, None]).squeeze(1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (i + 1) % 50 == 0:
                target.load_state_dict(q.state_dict())
    with torch.no_grad():
        return float(q(torch.as_tensor(obs0)).gather(1, torch.as_tensor(act0)[:, None]).mean())


def estimates(cfg: CrossDQNConfig, held: HeldOut, net: torch.nn.Module) -> dict[str, float]:
    """The objective (``HeldOut.metrics``) and the other candidates, all at the PAE target on the held-out logs."""
    out = held.metrics(net, cfg.pae_target)
    served, served_next = net_scores(net, held.obs), net_scores(net, held.new_obs)
    pae = net.action_pae.numpy().astype(np.float64)
    mu = match_offset(served, pae, cfg.pae_target)
    chosen = greedy_actions(served, pae, mu)
    pi, first = (chosen == held.actions).astype(np.float64), held.t == 0
    traj = ope.Trajectories.from_rows(held.eps_id, held.t, held.rewards, pi, held.action_prob, 1.0)
    out["wpdis"] = ope.wpdis(traj).value
    out["snips_first"] = ope.snips(held.rewards[first], pi[first], held.action_prob[first]).value
    out["fqe"] = fqe(held, greedy_actions(served_next, pae, mu), held.obs[first], chosen[first], cfg.num_actions)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--config", default="smoke")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    base = load_config(CrossDQNConfig, args.config, WORKLOAD.configs_dir, parse_set(args.set))
    ensure_ray()
    torch.set_num_threads(torch_threads())
    data = args.dir / "data"
    if not (data / "manifest.json").is_file():
        make_data(base, data)
    held = HeldOut.load(base, check_dataset(base, data))
    print(f"held-out: {len(held)} screens of {len(np.unique(held.eps_id))} requests; truth: simulator reward at PAE "
          f"{base.pae_target} on {base.eval_seeds}x{base.eval_requests} fresh requests")
    rows = []
    for name, over in VARIANTS.items():
        cfg = base.override(over)
        out = args.dir / name
        if not (out / MODULE_DIR).is_dir():
            train_module(cfg, data, out, validate=False)
        module = rl.load_module(out / MODULE_DIR)
        with torch.no_grad():
            est = estimates(cfg, held, module.net)
            policy = q_policy(module)
            mu = match_pae(cfg, policy, cfg.pae_target, max(100, cfg.eval_requests // 2))
            truth = float(np.mean([rollout(cfg, policy, cfg.eval_requests, EVAL_SEED + s, mu)["reward"]
                                   for s in range(cfg.eval_seeds)]))
        rows.append({"name": name, "truth": truth, **est})
        print(f"{name:12s} truth {truth:.3f}  wdr {est['reward_wdr']:.3f} ± {est['reward_wdr_se']:.3f}  "
              f"wpdis {est['wpdis']:.3f}  snips_first {est['snips_first']:.3f}  fqe {est['fqe']:.3f}  "
              f"agree {est['agree']:.3f}", flush=True)
    truth = [r["truth"] for r in rows]
    corr = {k: float(spearmanr([r[k] for r in rows], truth)[0]) for k in ("reward_wdr", "wpdis", "snips_first", "fqe")}
    print("Spearman with the truth: " + "  ".join(f"{k} {v:+.2f}" for k, v in corr.items()))
    if args.json:
        args.json.write_text(json.dumps({"config": args.config, "set": args.set, "variants": rows, "spearman": corr},
                                        indent=2))


if __name__ == "__main__":
    main()
