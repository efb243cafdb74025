"""The feed simulator: requests of ranked ads and organic items, a user who clicks, orders and leaves.

A request is shown screen by screen (K slots each). The action of a screen is ``a ∈ {0,1}^K``
(1 = the slot shows the next ad of the ranked ads list, 0 = the next organic item), encoded as the
integer ``Σ_k a_k 2^k``. The simulated user carries the effects the paper relies on:

* arrangement signal: an ad in the top slot or next to another ad is clicked less; an organic item
  next to an ad is clicked more (``top_ad_penalty``, ``adj_ad_penalty``, ``organic_lift``);
* personal ad tolerance ``tol ~ Beta(c, c)`` (``tol_concentration``): ads are clicked
  ``1 + tol_ctr_gain·(tol - 0.5)`` times as often, and each ad on a screen raises the leave
  probability by ``leave_per_ad·(1 - tol)``, so the best number of ads per screen differs by user;
  the observation shows ``tol`` with noise and a behaviour feature (past ad CTR over
  ``ad_history_len`` past ad impressions);
* arrangement x user: the top/adjacent penalties grow for users who mind ads
  (``arrangement_tol_gain``); item-dependent ad quality: irrelevant ads add more to leaving than
  relevant ones (``ad_leave_relevance``), so which ad lands on which screen matters;
* item-level arrangement (``neighbour_similarity`` w, default 1): an item's click logit
  falls by ``w·cos(x_i, x_j)`` for each adjacent item j (similar neighbours compete), so where each
  ad lands on the screen matters per request;
* after each screen the user leaves with ``p = leave_base + leave_per_ad·(1 - tol)·Σ_ads q_ad``
  (``q_ad`` = 1 without the relevance effect);
* clicks lead to orders (item-dependent conversion rate and value); ads are charged per click at
  the GSP price (the next bid in the ranked list, ``reserve_price`` for the last), the platform fee
  is ``take_rate·order value``, and the experience score is ``1[continues] + #orders``.

Reward (Eq. 2): ``r = r_ad + r_fee + η·r_ex``. The episode ends (``terminated``) when the user leaves
or the lists run out (fewer than K organic items remain: the
feed is organic-led; when the ads run out, ad slots show organic items and PAE counts what was shown). :class:`FeedSim` is vectorised over requests (data logging and
evaluation); :class:`FeedEnv` is the one-request gymnasium environment (RLlib online training).
All randomness of a request (items, user, and the uniforms behind clicks/orders/leaving, indexed by
screen and slot) is drawn up front from its seed, so different policies meet the same users.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np

from workloads.crossdqn.config import FeedSimConfig

PROFILE_DIM = 4  # [tolerance seen with noise, activity, past ad CTR (behaviour), 1]
CTX_DIM = 4  # [screen / max_screens, ads left, organic left, PAE so far]


def action_bits(slots: int) -> np.ndarray:
    """(2^K, K) 0/1 matrix: row a is the slot mask of action a (bit k = slot k shows an ad)."""
    a = np.arange(2**slots)[:, None]
    return ((a >> np.arange(slots)[None, :]) & 1).astype(np.int64)


def obs_layout(cfg: FeedSimConfig) -> dict[str, int]:
    """Sizes of the flat observation's blocks (the model splits the vector with them)."""
    layout = {
        "profile": PROFILE_DIM,
        "hist_len": cfg.hist_len,
        "item_dim": cfg.item_dim,
        "feat": cfg.item_dim + 3,  # [content, value / 5, bid, present]
        "window": cfg.slots,
        "ctx": CTX_DIM,
    }
    layout["obs_dim"] = (
        PROFILE_DIM + cfg.hist_len * cfg.item_dim + 2 * cfg.slots * layout["feat"] + CTX_DIM
    )
    return layout


def max_screens(cfg: FeedSimConfig) -> int:
    return (cfg.n_ads + cfg.n_organic) // cfg.slots


@dataclasses.dataclass
class Requests:
    """N requests: items, users and the pre-drawn uniforms of their behaviour."""

    pref: np.ndarray  # (N, D) latent taste (unit vectors)
    tol: np.ndarray  # (N,) ad tolerance
    profile: np.ndarray  # (N, PROFILE_DIM)
    hist: np.ndarray  # (N, T, D) content of items clicked before
    content: dict[str, np.ndarray]  # "ad"/"org": (N, L, D)
    value: dict[str, np.ndarray]  # (N, L) order value
    cvr: dict[str, np.ndarray]  # (N, L) P(order | click)
    logit: dict[str, np.ndarray]  # (N, L) click logit before position/arrangement effects
    rel_ad: np.ndarray  # (N, Na) relevance of each ad to the user
    bid: np.ndarray  # (N, Na) ranked descending
    price: np.ndarray  # (N, Na) GSP price per click
    u_click: np.ndarray  # (N, S, K)
    u_order: np.ndarray  # (N, S, K)
    u_leave: np.ndarray  # (N, S)

    def __len__(self) -> int:
        return len(self.tol)


def ad_ctr_factor(cfg: FeedSimConfig, tol: np.ndarray) -> np.ndarray:
    """Personal multiplier of ad click probabilities: ``max(0.05, 1 + tol_ctr_gain·(tol - 0.5))``."""
    return np.maximum(0.05, 1.0 + cfg.tol_ctr_gain * (tol - 0.5))


def make_requests(cfg: FeedSimConfig, n: int, seed: int) -> Requests:
    rng = np.random.default_rng(seed)
    d, t, na, no = cfg.item_dim, cfg.hist_len, cfg.n_ads, cfg.n_organic
    pref = rng.normal(size=(n, d))
    pref /= np.linalg.norm(pref, axis=1, keepdims=True)
    tol = rng.beta(cfg.tol_concentration, cfg.tol_concentration, size=n)
    activity = rng.uniform(0.0, 1.0, size=n)
    m = cfg.ad_history_len  # behaviour: past ad clicks of m impressions at 0.2x the user's ad factor
    past_ctr = rng.binomial(m, np.clip(0.2 * ad_ctr_factor(cfg, tol), 0, 1)) / (0.3 * m) if m else np.zeros(n)
    profile = np.stack(
        [np.clip(tol + rng.normal(0.0, cfg.tolerance_noise, n), 0, 1) if cfg.tolerance_noise else tol,
         activity, past_ctr, np.ones(n)], axis=1)
    hist = 0.8 * pref[:, None, :] + rng.normal(0.0, 0.6, size=(n, t, d))
    content, value, cvr, logit, rels = {}, {}, {}, {}, {}
    for kind, length in (("ad", na), ("org", no)):
        c = rng.normal(size=(n, length, d))
        rel = np.einsum("nld,nd->nl", c, pref)
        if kind == "org":  # the organic list is ranked by relevance
            order = np.argsort(-rel, axis=1)
            c = np.take_along_axis(c, order[..., None], axis=1)
            rel = np.take_along_axis(rel, order, axis=1)
        content[kind], rels[kind] = c, rel
        value[kind] = rng.lognormal(1.0, 0.4, size=(n, length))
        cvr[kind] = 1.0 / (1.0 + np.exp(-rng.normal(-1.0, 0.5, size=(n, length))))
        logit[kind] = cfg.base_ctr_logit + 0.5 * activity[:, None] + rel
    bid = -np.sort(-rng.lognormal(-0.8, 0.4, size=(n, na)), axis=1)
    price = np.concatenate([bid[:, 1:], np.full((n, 1), cfg.reserve_price)], axis=1)
    s, k = max_screens(cfg), cfg.slots
    return Requests(pref, tol, profile, hist, content, value, cvr, logit, rels["ad"], bid, price,
                    rng.uniform(size=(n, s, k)), rng.uniform(size=(n, s, k)), rng.uniform(size=(n, s)))


class FeedSim:
    """Vectorised simulator over a batch of requests; ``step`` acts on the requests still alive."""

    def __init__(self, cfg: FeedSimConfig, requests: Requests) -> None:
        self.cfg, self.req = cfg, requests
        self.bits = action_bits(cfg.slots)
        n = len(requests)
        self.ad_ptr = np.zeros(n, np.int64)
        self.org_ptr = np.zeros(n, np.int64)
        self.screen = np.zeros(n, np.int64)
        self.ads_shown = np.zeros(n, np.int64)
        self.slots_shown = np.zeros(n, np.int64)
        self.alive = np.ones(n, bool)

    def observe(self, idx: np.ndarray | None = None) -> np.ndarray:
        """(n, obs_dim) float32 observations of requests ``idx`` (default: all)."""
        cfg, r = self.cfg, self.req
        idx = np.arange(len(r)) if idx is None else idx
        k = cfg.slots
        blocks = [r.profile[idx], r.hist[idx].reshape(len(idx), -1)]
        for kind, ptr, length in (("ad", self.ad_ptr, cfg.n_ads), ("org", self.org_ptr, cfg.n_organic)):
            pos = ptr[idx, None] + np.arange(k)[None, :]  # (n, K)
            present = pos < length
            pos = np.minimum(pos, length - 1)
            take = lambda a, pos=pos: np.take_along_axis(a[idx], pos, axis=1)  # noqa: E731
            c = np.take_along_axis(r.content[kind][idx], pos[..., None], axis=1)
            bid = take(r.bid) if kind == "ad" else np.zeros_like(present, float)
            feats = np.concatenate(
                [c, take(r.value[kind])[..., None] / 5.0, bid[..., None], np.ones_like(bid)[..., None]], axis=2
            ) * present[..., None]
            blocks.append(feats.reshape(len(idx), -1))
        ctx = np.stack([
            self.screen[idx] / max_screens(cfg),
            (cfg.n_ads - self.ad_ptr[idx]) / cfg.n_ads,
            (cfg.n_organic - self.org_ptr[idx]) / cfg.n_organic,
            self.ads_shown[idx] / np.maximum(self.slots_shown[idx], 1),
        ], axis=1)
        blocks.append(ctx)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def arrange(self, idx: np.ndarray, actions: np.ndarray, ad_ptr: np.ndarray | None = None,
                org_ptr: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Mixed screen of ``actions`` for requests ``idx`` (no randomness, no state change).

        The lists' positions are the requests' current ones unless ``ad_ptr``/``org_ptr`` (n,) are
        given. Returns is_ad, item (n, K) (item index in its list), click probability p (n, K), the
        leave probability (n,), and the lists' positions after the screen (n,) x 2.
        """
        cfg, r = self.cfg, self.req
        k, n = cfg.slots, len(idx)
        want = self.bits[actions]  # (n, K)
        is_ad = np.zeros((n, k), bool)
        item = np.zeros((n, k), np.int64)
        ad_ptr = (self.ad_ptr[idx] if ad_ptr is None else ad_ptr).copy()
        org_ptr = (self.org_ptr[idx] if org_ptr is None else org_ptr).copy()
        for j in range(k):  # the mixed list keeps each list's ranking; a list that ran out yields
            has_ad, has_org = ad_ptr < cfg.n_ads, org_ptr < cfg.n_organic
            is_ad[:, j] = (want[:, j].astype(bool) & has_ad) | ~has_org
            item[:, j] = np.where(is_ad[:, j], ad_ptr, org_ptr)
            ad_ptr += is_ad[:, j]
            org_ptr += ~is_ad[:, j]
        logit = self.gather(idx, r.logit, is_ad, item) - cfg.position_decay * np.arange(k)[None, :]
        if cfg.neighbour_similarity:  # item-level arrangement: similar neighbours compete
            x = np.where(is_ad[..., None], self.req.content["ad"][idx[:, None], np.minimum(item, cfg.n_ads - 1)],
                         self.req.content["org"][idx[:, None], np.minimum(item, cfg.n_organic - 1)])  # (n, K, D)
            x = x / np.linalg.norm(x, axis=2, keepdims=True)
            cos = (x[:, 1:] * x[:, :-1]).sum(2)  # (n, K-1): slot j with slot j+1
            logit = logit - cfg.neighbour_similarity * (np.pad(cos, ((0, 0), (1, 0))) + np.pad(cos, ((0, 0), (0, 1))))
        p = 1.0 / (1.0 + np.exp(-logit))  # (n, K)
        tol = r.tol[idx, None]  # (n, 1)
        scale = np.maximum(0.0, 1.0 + cfg.arrangement_tol_gain * (0.5 - tol))  # arrangement x user
        adj, top = np.minimum(1.0, cfg.adj_ad_penalty * scale), np.minimum(1.0, cfg.top_ad_penalty * scale)
        left_ad = np.pad(is_ad[:, :-1], ((0, 0), (1, 0)))
        right_ad = np.pad(is_ad[:, 1:], ((0, 0), (0, 1)))
        ad_factor = ad_ctr_factor(cfg, tol) * (1 - adj) ** (left_ad.astype(int) + right_ad)
        ad_factor[:, 0] *= 1 - top[:, 0]
        org_factor = np.where(left_ad | right_ad, 1 + cfg.organic_lift, 1.0)
        p = np.clip(p * np.where(is_ad, ad_factor, org_factor), 0.0, 1.0)
        rel = np.take_along_axis(r.rel_ad[idx], np.minimum(item, cfg.n_ads - 1), axis=1)  # (n, K)
        annoy = np.maximum(0.0, 1.0 + cfg.ad_leave_relevance * (1.0 - 2.0 / (1.0 + np.exp(-rel))))
        weight = (is_ad * annoy).sum(1)  # ads on the screen, weighted by how much each annoys
        p_leave = np.clip(cfg.leave_base + cfg.leave_per_ad * weight * (1 - r.tol[idx]), 0.0, 1.0)
        return is_ad, item, p, p_leave, ad_ptr, org_ptr

    def gather(self, idx: np.ndarray, arrs: dict[str, np.ndarray], is_ad: np.ndarray,
               item: np.ndarray) -> np.ndarray:
        """Per-slot values (n, K) of ``arrs['ad']``/``arrs['org']`` for the shown items."""
        a = np.take_along_axis(arrs["ad"][idx], np.minimum(item, self.cfg.n_ads - 1), axis=1)
        o = np.take_along_axis(arrs["org"][idx], np.minimum(item, self.cfg.n_organic - 1), axis=1)
        return np.where(is_ad, a, o)

    def step(self, idx: np.ndarray, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Show one screen to requests ``idx`` (all alive) with ``actions`` (n,) in [0, 2^K).

        Returns per-request arrays: reward, r_ad, r_fee, r_ex, orders, clicks, ads (shown on the
        screen), ad_mask and click_mask (n, K), left, terminated.
        """
        cfg, r = self.cfg, self.req
        if not self.alive[idx].all():
            raise ValueError("FeedSim.step: some requests have already ended")
        k = cfg.slots
        is_ad, item, p, p_leave, ad_ptr, org_ptr = self.arrange(idx, actions)
        s = self.screen[idx]
        click = r.u_click[idx, s] < p  # (n, K)
        order = click & (r.u_order[idx, s] < self.gather(idx, r.cvr, is_ad, item))
        price = np.take_along_axis(r.price[idx], np.minimum(item, cfg.n_ads - 1), axis=1)
        r_ad = ((click & is_ad) * price).sum(1)  # GSP, charged per click
        r_fee = cfg.take_rate * (order * self.gather(idx, r.value, is_ad, item)).sum(1)
        n_ads = is_ad.sum(1)
        left = r.u_leave[idx, s] < p_leave
        orders = order.sum(1)
        r_ex = (~left).astype(float) + orders
        exhausted = (cfg.n_organic - org_ptr < k) | ((cfg.n_ads - ad_ptr) + (cfg.n_organic - org_ptr) < k)
        terminated = left | exhausted
        self.ad_ptr[idx], self.org_ptr[idx] = ad_ptr, org_ptr
        self.screen[idx] += 1
        self.ads_shown[idx] += n_ads
        self.slots_shown[idx] += k
        self.alive[idx] = ~terminated
        return {
            "reward": r_ad + r_fee + cfg.eta * r_ex, "r_ad": r_ad, "r_fee": r_fee, "r_ex": r_ex,
            "orders": orders, "clicks": click.sum(1), "ads": n_ads, "ad_mask": is_ad, "click_mask": click,
            "left": left, "terminated": terminated,
        }


class FeedEnv(gym.Env):
    """One request per episode (gymnasium API); ``env_config`` is a :class:`FeedSimConfig` or its dict."""

    def __init__(self, env_config: dict[str, Any] | FeedSimConfig | None = None) -> None:
        cfg = env_config if isinstance(env_config, FeedSimConfig) else FeedSimConfig.from_dict(
            dict(env_config or {}), "env_config")
        self.cfg = cfg
        layout = obs_layout(cfg)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (layout["obs_dim"],), np.float32)
        self.action_space = gym.spaces.Discrete(cfg.num_actions)
        self._sim: FeedSim | None = None
        self._zero = np.zeros(1, np.int64)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        req_seed = int(self.np_random.integers(2**31 - 1))
        self._sim = FeedSim(self.cfg, make_requests(self.cfg, 1, req_seed))
        return self._sim.observe(self._zero)[0], {"tolerance": float(self._sim.req.tol[0])}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._sim is None:
            raise RuntimeError("FeedEnv.step before reset")
        if not self._sim.alive[0]:
            raise RuntimeError("FeedEnv.step after the episode ended; call reset")
        out = self._sim.step(self._zero, np.asarray([int(action)]))
        info = {key: (v[0].copy() if isinstance(v, np.ndarray) else v) for key, v in out.items()}
        obs = self._sim.observe(self._zero)[0]
        return obs, float(out["reward"][0]), bool(out["terminated"][0]), False, info
