"""Baseline allocation policies (no learning): Fixed slots, GEA, uniform random, and the oracle.

A policy (:data:`ActFn`) maps observations (n, obs_dim) and a PAE knob ``mu`` to actions (n,) in
[0, 2^K); ``mu`` is what evaluation tunes (bisection) so that every method shows the same PAE.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from workloads.crossdqn.config import CrossDQNConfig, FeedSimConfig
from workloads.crossdqn.sim import PROFILE_DIM, obs_layout

ActFn = Callable[[np.ndarray, float], np.ndarray]
"""An allocation policy: (observations (n, obs_dim), PAE knob mu) -> actions (n,)."""
MEAN_CVR = 0.28  # E[sigmoid(N(-1, 0.5))]: the order rate a rule-based ranker would assume


def fixed_slots(slots: int, pae: float) -> list[int]:
    """Evenly spaced ad slots for round(pae·K) ads, e.g. K=5, PAE 0.4 -> slots [1, 3]."""
    n_ads = int(round(pae * slots))
    return sorted({int((i + 0.5) * slots / n_ads) for i in range(n_ads)}) if n_ads else []


def fixed_policy(cfg: CrossDQNConfig) -> ActFn:
    """Fixed slots: the same ad positions on every screen (PAE = round(target·K)/K)."""
    action = sum(1 << k for k in fixed_slots(cfg.sim.slots, cfg.pae_target))
    return lambda obs, mu=0.0: np.full(len(obs), action, np.int64)


def random_policy(slots: int, p_ad: float, seed: int) -> ActFn:
    """Random slots at a given ad density: each slot of each screen shows an ad with probability
    ``p_ad`` (PAE = p_ad in expectation), ignoring ``mu``; the trivial baseline of the learning
    check, at the PAE target so that it is compared at the same ad load as the PAE-matched models.
    Seeded; the draws follow the calls, so equal call sequences give equal actions."""
    rng = np.random.default_rng(seed)
    weights = 1 << np.arange(slots)

    def act(obs: np.ndarray, mu: float = 0.0) -> np.ndarray:
        return ((rng.random((len(obs), slots)) < p_ad) * weights).sum(1).astype(np.int64)

    return act


def gea_policy(cfg: FeedSimConfig, interval_weight: float = 0.05) -> ActFn:
    """GEA (Yan et al. 2020): merge the two ranked lists by a joint rank score with an ad-interval term.

    Slot by slot, the next ad wins the slot when
    ``eCTR·(bid + takerate·cvr·value) + w·log(1 + interval) - mu > eCTR·takerate·cvr·value`` of the next
    organic item, with ``interval`` = slots since the last ad on the screen (K at the top) and eCTR
    from the item's similarity to the user's behaviour history. ``mu`` sets the PAE.
    """
    lo = obs_layout(cfg)
    k, f, d, t = cfg.slots, lo["feat"], cfg.item_dim, cfg.hist_len

    def policy(obs: np.ndarray, mu: float = 0.0) -> np.ndarray:
        n = len(obs)
        hist = obs[:, PROFILE_DIM:PROFILE_DIM + t * d].reshape(n, t, d).mean(1)  # (n, D)
        start = PROFILE_DIM + t * d
        ads = obs[:, start:start + k * f].reshape(n, k, f)
        org = obs[:, start + k * f:start + 2 * k * f].reshape(n, k, f)

        def score(items: np.ndarray, with_bid: bool) -> np.ndarray:  # (n, K)
            ectr = 1 / (1 + np.exp(-(cfg.base_ctr_logit + np.einsum("nkd,nd->nk", items[..., :d], hist))))
            fee = cfg.take_rate * MEAN_CVR * items[..., d] * 5.0
            value = ectr * (fee + (items[..., d + 1] if with_bid else 0.0))
            return np.where(items[..., -1] > 0, value, -np.inf)

        s_ad, s_org = score(ads, True), score(org, False)
        ia, io = np.zeros(n, np.int64), np.zeros(n, np.int64)
        interval = np.full(n, k)
        action = np.zeros(n, np.int64)
        rows = np.arange(n)
        for slot in range(k):
            ad_s = s_ad[rows, np.minimum(ia, k - 1)] + interval_weight * np.log1p(interval) - mu
            org_s = s_org[rows, np.minimum(io, k - 1)]
            take_ad = (ia < k) & (ad_s > org_s)
            action |= take_ad.astype(np.int64) << slot
            ia += take_ad
            io += ~take_ad
            interval = np.where(take_ad, 1, interval + 1)
        return action

    return policy


class OraclePolicy:
    """Personalised oracle: exact dynamic programming on each request's own user and items.

    It reads the simulator (the user's true tolerance, every item, every effect), so it is an upper
    reference for what personalisation can earn, not a deployable policy. Clicks and orders do not
    change what comes next -- only leaving does -- so the state of a request is the pair of list
    positions (ad_ptr, org_ptr), and the Lagrangian objective (undiscounted, as evaluated)

        V(i, j) = max_a  E[r_ad + r_fee + η·r_ex | i, j, a] - mu·#ads(a)
                         + (1 - p_leave(i, j, a))·V(i', j')    (V = 0 once the lists run out)

    is solved exactly by backward induction over screens; ``mu`` sets the PAE (bisection in
    ``rollout.match_pae``). ``personal=False``: the same DP with every user at tolerance 0.5
    (what knowing the items and arrangement effects earns without personalisation). ``actions``
    restricts the choice to a subset of slot patterns (e.g. one pattern per ad count: what choosing
    only *how many* ads, per user and screen, earns). ``rollout.rollout`` calls ``act_sim``.
    """

    def __init__(self, cfg: FeedSimConfig, personal: bool = True, actions: list[int] | None = None) -> None:
        self.cfg, self.personal = cfg, personal
        self.actions = np.arange(cfg.num_actions) if actions is None else np.asarray(sorted(actions), np.int64)
        self._key: tuple | None = None  # (the Requests object itself, mu): held, so never a reused id
        self._table: np.ndarray | None = None
        self.start_value: np.ndarray | None = None

    def __call__(self, obs: np.ndarray, mu: float = 0.0) -> np.ndarray:
        raise TypeError("OraclePolicy needs the simulator: call act_sim(sim, idx, mu)")

    def act_sim(self, sim: Any, idx: np.ndarray, mu: float = 0.0) -> np.ndarray:
        if self._key is None or self._key[0] is not sim.req or self._key[1] != mu:
            self._table, self._key = self._solve(sim, mu), (sim.req, mu)
        return self._table[idx, sim.screen[idx], sim.ad_ptr[idx]]

    def _solve(self, sim: Any, mu: float) -> np.ndarray:
        """Best action table (N, screens, n_ads + 1) by backward induction."""
        cfg = self.cfg
        if not self.personal:
            sim = copy.copy(sim)
            sim.req = dataclasses.replace(sim.req, tol=np.full_like(sim.req.tol, 0.5))
        r, n, k, n_act = sim.req, len(sim.req), cfg.slots, len(self.actions)
        n_screens = (cfg.n_ads + cfg.n_organic) // k + 1
        value = np.zeros((n, n_screens + 1, cfg.n_ads + 1))  # V(screen, ad_ptr); 0 past the end
        table = np.zeros((n, n_screens, cfg.n_ads + 1), np.int64)
        rows = np.repeat(np.arange(n), n_act)  # (n·A,): every action for every request
        acts = np.tile(self.actions, n)
        for s in range(n_screens - 1, -1, -1):
            for i in range(max(0, k * s - cfg.n_organic), min(cfg.n_ads, k * s) + 1):
                j = k * s - i  # organic position
                if cfg.n_organic - j < k or (cfg.n_ads - i) + (cfg.n_organic - j) < k:
                    continue  # unreachable: the episode ended before this screen
                is_ad, item, p, p_leave, ad_next, org_next = sim.arrange(
                    rows, acts, np.full(len(rows), i), np.full(len(rows), j))
                cvr, val = sim.gather(rows, r.cvr, is_ad, item), sim.gather(rows, r.value, is_ad, item)
                price = np.take_along_axis(r.price[rows], np.minimum(item, cfg.n_ads - 1), axis=1)
                stay = 1.0 - p_leave
                reward = ((p * is_ad * price).sum(1) + cfg.take_rate * (p * cvr * val).sum(1)
                          + cfg.eta * (stay + (p * cvr).sum(1)))
                ended = (cfg.n_organic - org_next < k) | ((cfg.n_ads - ad_next) + (cfg.n_organic - org_next) < k)
                future = np.where(ended, 0.0, value[rows, s + 1, ad_next])
                q = (reward - mu * is_ad.sum(1) + stay * future).reshape(n, n_act)
                table[:, s, i] = self.actions[q.argmax(1)]
                value[:, s, i] = q.max(1)
        self.start_value = value[:, 0, 0]  # (N,) V at the first screen: the expected objective
        return table


def constant_policy(action: int) -> ActFn:
    """The same slot pattern ``action`` on every screen."""
    return lambda obs, mu=0.0: np.full(len(obs), action, np.int64)


def patterns_with(slots: int, n_ads: int) -> list[int]:
    """All actions (slot patterns) with exactly ``n_ads`` ads."""
    return [a for a in range(2**slots) if bin(a).count("1") == n_ads]
