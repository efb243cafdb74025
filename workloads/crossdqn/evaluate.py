"""Evaluation: fresh simulator rollouts of every method on the same seeded requests, at equal PAE.

Metrics per request (paper, Sec. 5): R_ad (ads revenue), R_fee (platform fee), CVR (orders per
request), R_ex (experience score), PAE (ads shown / slots shown), plus the reward of Eq. 2.

How PAE is matched: every method has a knob ``mu`` (for Q-policies ``argmax_a Q(s,a) - mu·PAE(a)``,
for GEA an offset of the ad rank score) found by bisection on a separate calibration set of
requests so that the realised PAE equals ``pae_target``; Fixed shows round(target·K) ads per
screen. Both the matched numbers and the raw PAE (mu = 0) of each method are reported; the raw PAE
of ``crossdqn`` vs ``no_aux`` shows what the batch-level constraint does by itself.

Ablations are trained inside :func:`evaluate_methods` on the same data with the same config and
iteration count as the given model (``lam=0``; ``-mcau``; ``-mcau-sacu``), so one command produces
the whole table. Their training time is part of the command's run time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.policies import Policy, fixed_policy, gea_policy
from workloads.crossdqn.sim import FeedSim, make_requests

METRICS = ("r_ad", "r_fee", "cvr", "r_ex", "pae", "reward")
CALIBRATION_SEED = 9_999_999
EVAL_SEED = 10_000_000
ABLATIONS = {
    "no_aux": {"lam": 0.0},
    "no_aux_mcau": {"lam": 0.0, "use_mcau": False},
    "no_aux_mcau_sacu": {"lam": 0.0, "use_mcau": False, "use_sacu": False},
}


def q_policy(model: Any) -> Policy:
    """Greedy policy of a Q-network (CrossDQNNet, or an RLModule holding one as ``.net``)."""
    net = getattr(model, "net", model)
    action_pae = net.bits.mean(1)  # (A,)

    def policy(obs: np.ndarray, mu: float = 0.0) -> np.ndarray:
        with torch.no_grad():
            q = net(torch.as_tensor(obs))
        return (q - mu * action_pae).argmax(1).numpy()

    return policy


def rollout(cfg: CrossDQNConfig, policy: Policy, n: int, seed: int, mu: float = 0.0) -> dict[str, float]:
    """Run ``policy`` on ``n`` requests drawn with ``seed``; per-request means of the metrics
    (``return`` = the γ-discounted reward over screens, the value Q estimates; ``first_screen`` = the
    reward of the first screen alone)."""
    sim = FeedSim(cfg, make_requests(cfg, n, seed))
    tot = dict.fromkeys(("r_ad", "r_fee", "r_ex", "orders", "reward", "return", "first_screen"), 0.0)
    while sim.alive.any():
        idx = np.flatnonzero(sim.alive)
        discount, first = cfg.gamma ** sim.screen[idx], sim.screen[idx] == 0
        act_sim = getattr(policy, "act_sim", None)  # the oracle reads the simulator itself
        out = sim.step(idx, act_sim(sim, idx, mu) if act_sim else policy(sim.observe(idx), mu))
        out = {**out, "return": out["reward"] * discount, "first_screen": out["reward"] * first}
        for key in tot:
            tot[key] += float(out[key].sum())
    req_pae = sim.ads_shown / np.maximum(sim.slots_shown, 1)
    return {"r_ad": tot["r_ad"] / n, "r_fee": tot["r_fee"] / n, "cvr": tot["orders"] / n,
            "r_ex": tot["r_ex"] / n, "reward": tot["reward"] / n, "return": tot["return"] / n,
            "first_screen": tot["first_screen"] / n,
            "pae": float(sim.ads_shown.sum() / sim.slots_shown.sum()), "pae_req_std": float(req_pae.std())}


def match_pae(cfg: CrossDQNConfig, policy: Policy, target: float, n: int, steps: int = 16) -> float:
    """``mu`` with realised PAE ≈ ``target`` on calibration requests (PAE decreases with mu)."""
    lo, hi = -4.0, 4.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        if rollout(cfg, policy, n, CALIBRATION_SEED, mid)["pae"] > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def evaluate_policy(cfg: CrossDQNConfig, policy: Policy, matched: bool = True) -> dict[str, float]:
    """Mean ± std over ``eval_seeds`` seeds of the metrics, at matched PAE, plus raw (mu=0) PAE."""
    mu = match_pae(cfg, policy, cfg.pae_target, max(100, cfg.eval_requests // 2)) if matched else 0.0
    runs = [rollout(cfg, policy, cfg.eval_requests, EVAL_SEED + s, mu) for s in range(cfg.eval_seeds)]
    raw = runs if mu == 0.0 else [rollout(cfg, policy, cfg.eval_requests, EVAL_SEED + s) for s in range(cfg.eval_seeds)]
    out: dict[str, float] = {"pae_target": cfg.pae_target, "pae_mu": mu}
    for m in METRICS:
        vals = np.array([r[m] for r in runs])
        out[m], out[f"{m}_std"] = float(vals.mean()), float(vals.std())
    raw_pae = np.array([r["pae"] for r in raw])
    out.update({"pae_raw": float(raw_pae.mean()), "pae_raw_std": float(raw_pae.std()),
                "pae_raw_gap": float(abs(raw_pae.mean() - cfg.pae_target)),
                "pae_raw_req_std": float(np.mean([r["pae_req_std"] for r in raw]))})
    return out


def value_accuracy(cfg: CrossDQNConfig, net: Any, n: int, seed: int = EVAL_SEED) -> dict[str, float]:
    """Over-estimation, measured where it is defined: mean_s0 max_a Q(s0, a) on fresh requests
    against the γ-discounted return that the greedy-on-Q policy really earns on those requests.

    (Q(s, a_logged) against the logging policy's Monte-Carlo return is *not* a bias: Q estimates
    the return of a followed by the greedy policy, which beats the exploratory one.)"""
    sim = FeedSim(cfg, make_requests(cfg, n, seed))
    with torch.no_grad():
        v_pred = float(net.q_values(torch.as_tensor(sim.observe())).max(1).values.mean())

        def greedy(obs: np.ndarray, mu: float = 0.0) -> np.ndarray:
            return net.q_values(torch.as_tensor(obs)).argmax(1).numpy()

        v_true = rollout(cfg, greedy, n, seed)["return"]
    return {"v_pred": v_pred, "v_true": v_true, "v_bias": v_pred - v_true, "v_bias_rel": (v_pred - v_true) / v_true}


def off_policy_estimates(cfg: CrossDQNConfig, logs: pd.DataFrame, policy: Policy, mu: float = 0.0,
                         net: Any = None, gamma: float | None = None) -> dict[str, dict[str, float]]:
    """Value of a deterministic ``policy`` (at ``mu``) estimated from logs of the exploratory policy.

    π(a_logged | s) = 1 if the policy picks the logged action, else 0; the logs' ``action_prob`` is
    μ(a|s). Per request: PDIS, WPDIS, DR, WDR of the γ-discounted reward (Eq. 2 with the config's η;
    ``gamma`` defaults to the config's, the rollout's ``return``; 1 = its ``reward``). DR/WDR take
    q̂(s,a) = Q(s,a) and v̂(s) = Q(s, π(s)) from ``net`` (a CrossDQNNet; zeros without one, when DR
    = PDIS). Trajectory estimators: :mod:`adray.ope`. Also the one-step IPS/SNIPS/DR of the first
    screen's reward alone (``*_first``: no product of weights over screens, so far lower variance).
    """
    from adray import ope

    obs = np.stack(logs["obs"].to_numpy()).astype(np.float32)
    logged = logs["actions"].to_numpy()
    chosen = policy(obs, mu)
    q_logged = v_target = None
    if net is not None:
        with torch.no_grad():
            q = net.q_values(torch.as_tensor(obs)).numpy()  # (N, A)
        q_logged, v_target = q[np.arange(len(q)), logged], q[np.arange(len(q)), chosen]
    reward = (logs["r_ad"] + logs["r_fee"] + cfg.eta * logs["r_ex"]).to_numpy()
    pi, mu_log, steps = (chosen == logged).astype(np.float64), logs["action_prob"].to_numpy(), logs["t"].to_numpy()
    traj = ope.Trajectories.from_rows(logs["eps_id"].to_numpy(), steps, reward, pi, mu_log,
                                      cfg.gamma if gamma is None else gamma, q_logged, v_target)
    out = {name: est(traj).to_dict() for name, est in ope.TRAJECTORY_ESTIMATORS.items()}
    first = steps == 0
    reward, pi, mu_log = reward[first], pi[first], mu_log[first]
    out["ips_first"] = ope.ips(reward, pi, mu_log).to_dict()
    out["snips_first"] = ope.snips(reward, pi, mu_log).to_dict()
    if net is not None:
        out["dr_first"] = ope.dr(reward, pi, mu_log, q_logged[first], v_target[first]).to_dict()
    return out


def train_ablations(cfg: CrossDQNConfig, data_dir: Path, out_root: Path) -> dict[str, Any]:
    """Train each ablation with the same config and iteration count; returns loaded modules."""
    from adray import rl
    from adray.runtime import ensure_ray
    from workloads.crossdqn.train import MODULE_DIR, train_module

    ensure_ray()
    models = {}
    for name, overrides in ABLATIONS.items():
        out = out_root / name
        train_module(cfg.override(overrides), data_dir, out, validate=False)
        models[name] = rl.load_module(out / MODULE_DIR)
    return models


def evaluate_methods(cfg: CrossDQNConfig, data_dir: Path, model: Any,
                     ablations: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """The paper's table: {method: {metric: value}} for crossdqn, fixed, gea and the ablations."""
    policies: dict[str, Policy] = {"crossdqn": q_policy(model), "fixed": fixed_policy(cfg), "gea": gea_policy(cfg)}
    with tempfile.TemporaryDirectory(prefix="crossdqn-ablations-") as tmp:
        # train first: the ablations need gradients (evaluation below runs under no_grad)
        trained = ablations if ablations is not None else train_ablations(cfg, Path(data_dir), Path(tmp))
        policies.update({name: q_policy(m) for name, m in trained.items()})
        with torch.no_grad():
            return {name: evaluate_policy(cfg, p, matched=(name != "fixed")) for name, p in policies.items()}
