"""The online advertising procedure (Algorithm 1, Sec. 3.7) against the journey simulator.

Channel-level allocation: explicit ratio P_j = CTR_j / Σ CTR from the logs, implicit ratio
P̂_j = CTR^_j / Σ CTR^ with CTR^_j = Σ 1(r̂_t > τ | a_t = j) / N_j, P_initial = (1-α)P + αP̂ (Eq. 17).
Exploration: every user gets ``explore_steps`` exposures drawn from P_initial. Exploitation: each
round ranks users by predicted reward R_u, takes the top N, recommends from η·P_u + (1-η)·P_initial,
observes, updates the user's journey memory (last n steps) and re-predicts, spending budget W
until it runs out or K rounds pass. Ablations: w/o CA (P_initial uniform), w/o UA (N users drawn at
random). Baselines share the loop: logged (behaviour policy, random users), random (uniform
channels, random users), bc (BC policy, explicit P_initial, random users: BC has no reward head).
Averages are per exposure, all methods spending the same budget W on the same simulated users.
Rounds count exploitation rounds (the pseudo-code's k is incremented per user; K is "total rounds").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from workloads.mtorl.model import choose, predict
from workloads.mtorl.sim import JourneySim


def channel_sums(probs_reward: np.ndarray, arrays: dict[str, np.ndarray], tau: float, m: int) -> np.ndarray:
    """(3, m): per channel j, over the valid steps of these windows, N_j, Σ r_t and Σ 1(r̂_t > τ)
    (predicted rewards (N, T)). Sums: those of a split's batches add up to the split's, which is
    all :func:`channel_ratios` needs of it."""
    valid = arrays["mask"] > 0
    a, g = arrays["action"][valid], arrays["reward"][valid]
    return np.stack([np.bincount(a, minlength=m).astype(float), np.bincount(a, weights=g, minlength=m),
                     np.bincount(a, weights=(probs_reward[valid] > tau).astype(float), minlength=m)])


def ratios_of_sums(sums: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P explicit, P̂ implicit, P_initial) from :func:`channel_sums` (Eq. 17)."""
    n_j, clicks, hits = sums
    m = len(n_j)
    ctr, hat = clicks / np.maximum(n_j, 1.0), hits / np.maximum(n_j, 1.0)
    def norm(x: np.ndarray) -> np.ndarray:
        return x / x.sum() if x.sum() > 0 else np.full(m, 1.0 / m)
    p, p_hat = norm(ctr), norm(hat)
    return p, p_hat, (1 - alpha) * p + alpha * p_hat


def channel_ratios(probs_reward: np.ndarray, arrays: dict[str, np.ndarray], tau: float, alpha: float,
                   m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P explicit, P̂ implicit, P_initial) from logged windows and predicted rewards (N, T)."""
    return ratios_of_sums(channel_sums(probs_reward, arrays, tau, m), alpha)


class Memory:
    """Journey memory J_u of every user: the last n-1 exposures plus the pending (next) state."""

    def __init__(self, num_users: int, n: int, state_dim: int) -> None:
        self.n = n
        self.action = np.zeros((num_users, n), np.int64)
        self.reward = np.zeros((num_users, n), np.float32)
        self.state = np.zeros((num_users, n, state_dim), np.float32)
        self.count = np.zeros(num_users, np.int64)  # past exposures kept (<= n-1)

    def set_pending(self, users: np.ndarray, state: np.ndarray) -> None:
        self.state[users, self.count[users]] = state

    def push(self, users: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Record the exposure at the pending position; drop the oldest when full."""
        full = users[self.count[users] == self.n - 1]
        for arr in (self.action, self.reward, self.state):
            arr[full] = np.roll(arr[full], -1, axis=1)
        self.count[full] -= 1
        pos = self.count[users]
        self.action[users, pos] = actions
        self.reward[users, pos] = rewards
        self.count[users] += 1

    def batch(self, users: np.ndarray) -> dict[str, torch.Tensor]:
        c = self.count[users]
        mask = (np.arange(self.n)[None, :] <= c[:, None]).astype(np.float32)
        return {"action": torch.from_numpy(self.action[users]), "reward": torch.from_numpy(self.reward[users]),
                "state": torch.from_numpy(self.state[users]), "mask": torch.from_numpy(mask)}


@torch.no_grad()
def model_step(model: Any, mem: Memory, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P_u (len, m) and R_u (len,) at each user's pending step (only the last prediction is used)."""
    b = mem.batch(users)
    probs, r = predict(model, b["action"], b["reward"], b["state"], b["mask"])
    idx = torch.from_numpy(mem.count[users])
    rows = torch.arange(len(users))
    r_u = r[rows, idx].numpy() if r is not None else np.zeros(len(users))
    return probs[rows, idx].numpy(), r_u


def run_procedure(
    cfg: Any, model: Any | None, p_initial: np.ndarray, *, rank_users: bool, channel: str,
    reward_minmax: tuple[float, float], static_dim: int,
) -> dict[str, float]:
    """One run of Algorithm 1 (or a baseline sharing its loop).

    Args:
        channel: "model" (η·P_u + (1-η)·P_initial), "logged" (behaviour policy) or "random".
        rank_users: top-N by predicted reward (user-level allocation) or N random users.
    """
    oc, m = cfg.online, cfg.sim.num_channels
    sim = JourneySim(cfg.sim, oc.num_users, oc.seed)
    rng = np.random.default_rng(oc.seed + 1)
    lo, hi = reward_minmax
    mem = Memory(oc.num_users, cfg.n, m + 1 + static_dim)
    users_all = np.arange(oc.num_users)
    budget, gains_sum, pen_sum, exposures = oc.budget, 0.0, 0.0, 0

    def observe(users: np.ndarray) -> np.ndarray:
        q = sim.observe(users)
        mem.set_pending(users, np.concatenate([q, sim.f[users]], 1).astype(np.float32))
        return q

    def expose(users: np.ndarray, actions: np.ndarray) -> None:
        nonlocal budget, gains_sum, pen_sum, exposures
        costs = sim.costs[actions]
        ok = np.cumsum(costs) <= budget  # never overspend W
        users, actions = users[ok], actions[ok]
        if len(users) == 0:
            budget = 0.0
            return
        g, w = sim.step(users, actions)
        budget -= float(w.sum())
        gains_sum += float(g.sum())
        pen_sum += float((g - cfg.penalty_s * w).sum())
        exposures += len(users)
        mem.push(users, actions, np.clip((g - cfg.penalty_s * w - lo) / max(hi - lo, 1e-12), 0, 1))

    pick: Callable[[np.ndarray, np.ndarray], np.ndarray]
    if channel == "logged":
        def pick(users: np.ndarray, q: np.ndarray) -> np.ndarray:
            return sim.logging_policy(q)
    elif channel == "random":
        def pick(users: np.ndarray, q: np.ndarray) -> np.ndarray:
            return rng.integers(0, m, len(users))
    else:
        def pick(users: np.ndarray, q: np.ndarray) -> np.ndarray:
            p_u, _ = model_step(model, mem, users)
            mix = oc.eta * p_u + (1 - oc.eta) * p_initial  # Algorithm 1, line 12
            return choose(mix, cfg.policy == "stochastic", rng)

    for _ in range(oc.explore_steps):  # exploration with P_initial (baselines: their own policy)
        q = observe(users_all)
        acts = choose(np.tile(p_initial, (oc.num_users, 1)), True, rng) if channel == "model" else pick(users_all, q)
        expose(users_all, acts)
    q_all = observe(users_all)
    r_u = model_step(model, mem, users_all)[1] if rank_users else np.zeros(oc.num_users)
    for _ in range(oc.rounds):  # exploitation
        if budget <= 0:
            break
        top = np.argsort(-r_u, kind="stable")[: oc.top_n] if rank_users else rng.choice(oc.num_users, oc.top_n, replace=False)
        expose(top, pick(top, q_all[top]))
        q_all[top] = observe(top)
        if rank_users:
            r_u[top] = model_step(model, mem, top)[1]
    return {"avg_reward": gains_sum / max(exposures, 1), "avg_penalized_reward": pen_sum / max(exposures, 1),
            "total_gain": gains_sum, "exposures": float(exposures), "spent": oc.budget - budget}
