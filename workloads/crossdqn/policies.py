"""Baseline allocation policies (no learning): Fixed slots and GEA.

A policy maps observations (n, obs_dim) and a PAE knob ``mu`` to actions (n,) in [0, 2^K);
``mu`` is what evaluation tunes (bisection) so that every method shows the same PAE.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.sim import PROFILE_DIM, obs_layout

Policy = Callable[[np.ndarray, float], np.ndarray]
MEAN_CVR = 0.28  # E[sigmoid(N(-1, 0.5))]: the order rate a rule-based ranker would assume


def fixed_slots(slots: int, pae: float) -> list[int]:
    """Evenly spaced ad slots for round(pae·K) ads, e.g. K=5, PAE 0.4 -> slots [1, 3]."""
    n_ads = int(round(pae * slots))
    return sorted({int((i + 0.5) * slots / n_ads) for i in range(n_ads)}) if n_ads else []


def fixed_policy(cfg: CrossDQNConfig) -> Policy:
    """Fixed slots: the same ad positions on every screen (PAE = round(target·K)/K)."""
    action = sum(1 << k for k in fixed_slots(cfg.slots, cfg.pae_target))
    return lambda obs, mu=0.0: np.full(len(obs), action, np.int64)


def gea_policy(cfg: CrossDQNConfig, interval_weight: float = 0.05) -> Policy:
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
