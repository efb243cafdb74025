"""Rollouts of allocation policies in the simulator and PAE matching: evaluation only.

Used by the evaluation (evaluate.py) and the benchmarks, never by training or model selection
(issue 19: train.py calibrates β and reports its objective from held-out logs, selection.py).
Seeds of the request sets are fixed here: calibration (where ``mu`` is bisected) and evaluation
never share requests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.policies import ActFn
from workloads.crossdqn.sim import FeedSim, make_requests

CALIBRATION_SEED = 9_999_999
EVAL_SEED = 10_000_000


def q_policy(model: Any) -> ActFn:
    """Greedy policy of a Q-network's served scores (CrossDQNNet, or an RLModule holding one as
    ``.net``): ``argmax_a Q(s,a) - β·PAE(a) - mu·PAE(a)``, as ``forward_inference`` serves at mu=0."""
    import torch

    net = getattr(model, "net", model)
    action_pae = net.bits.mean(1)  # (A,), on the network's device

    def policy(obs: np.ndarray, mu: float = 0.0) -> np.ndarray:
        with torch.no_grad():
            q = net(torch.as_tensor(obs, device=action_pae.device))  # (n, A)
        return (q - mu * action_pae).argmax(1).cpu().numpy()

    return policy


def rollout(cfg: CrossDQNConfig, policy: ActFn, n: int, seed: int, mu: float = 0.0) -> dict[str, float]:
    """Run ``policy`` on ``n`` requests drawn with ``seed``; per-request means of the metrics
    (``return`` = the γ-discounted reward over screens, the value Q estimates; ``first_screen`` = the
    reward of the first screen alone)."""
    sim = FeedSim(cfg.sim, make_requests(cfg.sim, n, seed))
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


def match_pae(cfg: CrossDQNConfig, policy: ActFn, target: float, n: int, steps: int = 16) -> float:
    """``mu`` with realised PAE ≈ ``target`` on calibration requests (PAE decreases with mu)."""
    lo, hi = -4.0, 4.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        if rollout(cfg, policy, n, CALIBRATION_SEED, mid)["pae"] > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
