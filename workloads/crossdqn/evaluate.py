"""Evaluation: fresh simulator rollouts of every method on the same seeded requests, at equal PAE.

Metrics per request (paper, Sec. 5): R_ad (ads revenue), R_fee (platform fee), CVR (orders per
request), R_ex (experience score), PAE (ads shown / slots shown), plus the reward of Eq. 2.

How PAE is matched: every method has a knob ``mu`` (for Q-policies ``argmax_a Q(s,a) - mu·PAE(a)``,
for GEA an offset of the ad rank score) found by bisection on a separate calibration set of
requests so that the realised PAE equals ``pae_target``; Fixed shows round(target·K) ads per
screen; Random shows an ad in each slot with probability ``pae_target`` (random placement at the
target ad load, not matched further): the trivial baseline of the contract's learning check. Both the matched numbers and the raw PAE
(mu = 0) of each method are reported; the raw PAE of ``crossdqn`` vs ``no_aux`` shows what the
batch-level constraint does by itself.

:func:`evaluate` trains nothing: the ablations (``adray train crossdqn --config no_aux``,
``no_aux_mcau``, ``no_aux_mcau_sacu``, or ``train.train_ablations``) come in ``others``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adray.data import dataset_exists, read_dataset
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import SPLIT, check_dataset
from workloads.crossdqn.policies import ActFn, fixed_policy, gea_policy, random_policy
from workloads.crossdqn.rollout import EVAL_SEED, match_pae, q_policy, rollout
from workloads.crossdqn.selection import logged_test_metrics
from workloads.crossdqn.sim import FeedSim, make_requests

METRICS = ("r_ad", "r_fee", "cvr", "r_ex", "pae", "reward")
RANDOM_SEED = 424_242
"""Seed of the random baseline's slot draws."""
BASELINES = ("fixed", "gea", "random")


def evaluate_policy(cfg: CrossDQNConfig, policy: ActFn, matched: bool = True) -> dict[str, float]:
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
    import torch

    sim = FeedSim(cfg.sim, make_requests(cfg.sim, n, seed))
    with torch.no_grad():
        v_pred = float(net.q_values(torch.as_tensor(sim.observe())).max(1).values.mean())

        def greedy(obs: np.ndarray, mu: float = 0.0) -> np.ndarray:
            return net.q_values(torch.as_tensor(obs)).argmax(1).numpy()

        v_true = rollout(cfg, greedy, n, seed)["return"]
    return {"v_pred": v_pred, "v_true": v_true, "v_bias": v_pred - v_true, "v_bias_rel": (v_pred - v_true) / v_true}


def off_policy_estimates(cfg: CrossDQNConfig, logs: pd.DataFrame, policy: ActFn, mu: float = 0.0,
                         net: Any = None, gamma: float | None = None) -> dict[str, dict[str, float]]:
    """Value of a deterministic ``policy`` (at ``mu``) estimated from logs of the exploratory policy.

    π(a_logged | s) = 1 if the policy picks the logged action, else 0; the logs' ``action_prob`` is
    μ(a|s). Per request: PDIS, WPDIS, DR, WDR of the γ-discounted reward (Eq. 2 with the config's η;
    ``gamma`` defaults to the config's, the rollout's ``return``; 1 = its ``reward``). DR/WDR take
    q̂(s,a) = Q(s,a) and v̂(s) = Q(s, π(s)) from ``net`` (a CrossDQNNet; zeros without one, when DR
    = PDIS). Trajectory estimators: :mod:`adray.ope`. Also the one-step IPS/SNIPS/DR of the first
    screen's reward alone (``*_first``: no product of weights over screens, so far lower variance).
    """
    import torch

    from adray import ope

    obs = np.stack(logs["obs"].to_numpy()).astype(np.float32)
    logged = logs["actions"].to_numpy()
    chosen = policy(obs, mu)
    q_logged = v_target = None
    if net is not None:
        with torch.no_grad():
            q = net.q_values(torch.as_tensor(obs)).numpy()  # (N, A)
        q_logged, v_target = q[np.arange(len(q)), logged], q[np.arange(len(q)), chosen]
    reward = (logs["r_ad"] + logs["r_fee"] + cfg.sim.eta * logs["r_ex"]).to_numpy()
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


def evaluate(cfg: CrossDQNConfig, data_dir: Path, model: Any,
             others: Mapping[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """The paper's table, ``{method: {metric: value}}``: ``crossdqn`` (``model``), each model of
    ``others`` under its label (e.g. the ablations ``no_aux``, ``no_aux_mcau``, ``no_aux_mcau_sacu``),
    and the baselines ``fixed``, ``gea`` and ``random``.

    Every Q-network is evaluated as served (greedy on its scores) at matched PAE, GEA at matched
    PAE, Fixed and Random as they are: every method meets fresh requests of ``cfg.sim``'s simulator.
    Each Q-network's row also has its ``test_*`` estimates on the test logs of ``data_dir``
    (selection.logged_test_metrics: what training reports; none without a logged dataset).
    """
    import torch

    others = dict(others or {})
    taken = sorted(set(others) & {"crossdqn", *BASELINES})
    if taken:
        raise ValueError(f"others: label(s) {taken} are rows of the table already; choose other labels")
    policies: dict[str, ActFn] = {"crossdqn": q_policy(model)}
    policies.update({label: q_policy(m) for label, m in others.items()})
    policies.update({"fixed": fixed_policy(cfg), "gea": gea_policy(cfg.sim),
                     "random": random_policy(cfg.sim.slots, cfg.pae_target, RANDOM_SEED)})
    raw = {"fixed", "random"}  # not PAE-matched
    with torch.no_grad():
        table = {name: evaluate_policy(cfg, p, matched=name not in raw) for name, p in policies.items()}
    if dataset_exists(data_dir):  # a local folder or a storage URI
        check_dataset(cfg, data_dir)
        files = read_dataset(data_dir).split_files(SPLIT)  # streamed: HeldOut.load reads a bounded subset
        for label, m in {"crossdqn": model, **others}.items():
            table[label].update(logged_test_metrics(cfg, files, getattr(m, "net", m)))
    return table
