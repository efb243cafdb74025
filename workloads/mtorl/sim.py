"""Seeded journey simulator for the online procedure (our design; the paper's environment is private).

Each user u has a conversion tendency θ_u and channel preferences p_u ∈ R^m, both drifting by a
Gaussian random walk after every exposure of that user. An exposure on channel j costs w_j and
yields a click with probability

    P(g_t = 1) = sigmoid(θ_u + p_u[j] + κ·mean(g_{t-3:t-1}) - ρ·[j == c_{t-1}])

so gains depend on the recent journey (momentum κ of recent clicks, fatigue ρ when the same
channel repeats). Observed before each exposure: q_t = (p_u + noise, mean of the last 3 gains);
static f = (θ_u at arrival + noise). The logging (behaviour) policy picks a uniform channel with
probability ε, else samples softmax(2·observed preferences): actions are partly predictable from
the state, as in real logs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from workloads.mtorl.config import SimConfig
from workloads.mtorl.sequences import sequences_table

MOMENTUM = 1.0
FATIGUE = 0.5
HISTORY = 3


class JourneySim:
    """A population of simulated users, each with its own clock (vectorised over users)."""

    def __init__(self, cfg: SimConfig, num_users: int, seed: int | list[int]) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        m = cfg.num_channels
        self.costs = np.asarray(cfg.channel_costs, dtype=np.float64)  # (m,)
        self.theta = self.rng.normal(-1.6, 0.8, num_users)  # (U,)
        self.pref = self.rng.normal(0.0, 1.0, (num_users, m))  # (U, m)
        self.f = (self.theta + self.rng.normal(0.0, 0.3, num_users))[:, None]  # (U, 1)
        self.last_action = np.full(num_users, -1)
        self.recent = np.zeros((num_users, HISTORY))  # last gains, newest last
        self.steps = np.zeros(num_users, np.int64)

    @property
    def num_users(self) -> int:
        return len(self.theta)

    def observe(self, users: np.ndarray) -> np.ndarray:
        """q_t of ``users`` (before their next exposure): (len(users), m + 1)."""
        noisy = self.pref[users] + self.rng.normal(0.0, self.cfg.obs_noise, self.pref[users].shape)
        return np.concatenate([noisy, self.recent[users].mean(1, keepdims=True)], axis=1)

    def click_prob(self, users: np.ndarray, actions: np.ndarray) -> np.ndarray:
        logit = (self.theta[users] + self.pref[users, actions] + MOMENTUM * self.recent[users].mean(1)
                 - FATIGUE * (actions == self.last_action[users]))
        return 1.0 / (1.0 + np.exp(-logit))

    def step(self, users: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expose ``users`` (distinct ids) on ``actions``; returns (gains, costs) and advances them."""
        actions = np.asarray(actions, dtype=np.int64)
        if np.any((actions < 0) | (actions >= self.cfg.num_channels)):
            raise ValueError(f"actions must be channel ids in [0, {self.cfg.num_channels})")
        gains = (self.rng.random(len(users)) < self.click_prob(users, actions)).astype(np.float64)
        self.recent[users] = np.concatenate([self.recent[users, 1:], gains[:, None]], axis=1)
        self.last_action[users] = actions
        self.steps[users] += 1
        d = self.cfg.drift
        self.theta[users] += self.rng.normal(0.0, d, len(users))
        self.pref[users] += self.rng.normal(0.0, d, (len(users), self.cfg.num_channels))
        return gains, self.costs[actions]

    def logging_policy(self, q: np.ndarray) -> np.ndarray:
        """Behaviour policy on observed features q (N, m + 1) -> channel ids (N,)."""
        m = self.cfg.num_channels
        z = 2.0 * q[:, :m]
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        greedy = (p.cumsum(1) > self.rng.random((len(q), 1))).argmax(1)
        uniform = self.rng.integers(0, m, len(q))
        return np.where(self.rng.random(len(q)) < self.cfg.log_epsilon, uniform, greedy)


BLOCK_STEPS = 262_144
"""Logged steps simulated at once by :func:`simulate_logs` (memory: one block of users). A log of at
most this many steps is exactly the one-population simulation this generator always made."""


def simulate_logs(cfg: SimConfig, seed: int, block_steps: int = BLOCK_STEPS) -> Iterator[pa.Table]:
    """Logs of the behaviour policy: ``cfg.steps`` exposures for each of ``cfg.num_users`` users,
    in the per-user sequence layout of ``data.py`` (gain = click, cost = channel cost), in blocks of
    users (user ids 0..U-1 in order).

    Users never interact, so a block is a population of its own: up to ``block_steps`` steps in all,
    one population seeded ``seed`` (the same logs as ever); beyond, blocks of
    ``block_steps // cfg.steps`` users, block ``b`` seeded ``(seed, b)``.
    """
    per_block = max(1, block_steps // cfg.steps)
    blocks = [(0, cfg.num_users)] if cfg.num_users * cfg.steps <= block_steps else [
        (lo, min(lo + per_block, cfg.num_users)) for lo in range(0, cfg.num_users, per_block)]
    for b, (lo, hi) in enumerate(blocks):
        yield _simulate(cfg, np.arange(lo, hi), seed if len(blocks) == 1 else [seed, b])


def _simulate(cfg: SimConfig, user_ids: np.ndarray, seed: int | list[int]) -> pa.Table:
    n = len(user_ids)
    sim = JourneySim(cfg, n, seed)
    users = np.arange(n)
    qs, acts, gains, costs = [], [], [], []
    for _ in range(cfg.steps):
        q = sim.observe(users)
        a = sim.logging_policy(q)
        g, w = sim.step(users, a)
        qs.append(q)
        acts.append(a)
        gains.append(g)
        costs.append(w)
    # (T, U, ...) -> user-major rows ordered by user then time
    q = np.stack(qs, 1).reshape(n * cfg.steps, -1)
    a, g, w = (np.stack(x, 1).ravel() for x in (acts, gains, costs))
    user = np.repeat(user_ids, cfg.steps)
    f = np.repeat(sim.f, cfg.steps, axis=0)
    return sequences_table(user, a, g, g.astype(np.int64), w, q, f)


def log_meta(cfg: SimConfig) -> dict:
    """The manifest meta of :func:`simulate_logs`' dataset."""
    return {"num_channels": cfg.num_channels, "q_dim": cfg.num_channels + 1, "f_dim": 1,
            "gain": "click", "costs": list(cfg.channel_costs), "sim": cfg.to_dict()}
