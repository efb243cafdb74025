"""The ad-request simulator: users, context, candidate ads, ranking-model errors, the utility, events.

A request comes from a user with a profile (age, gender, metro) and an activity history (past ad
impressions, historical CTR, long-click rate, CVR, spend per impression) in a context (hour, day
of week, surface). It has ``n_ads`` candidate ads, each of a campaign type (click, conversion,
impression) with a bid for its optimised action, true probabilities of click, long click and
conversion, and the ranking models' predictions of them. The action sets the utility (Eq. 3.1)

    U_i = bid_i·p̂_opt,i + w_click·p̂_click,i + w_long·p̂_long,i + w_conv·p̂_conv,i
    shown = argmax_i U_i over the ads with bid_i·p̂_opt,i >= reserve  (none: an organic item)

(p̂_opt = p̂_click, p̂_conv or 1 for click, conversion, impression campaigns) and the shown item's
events are drawn from the TRUE probabilities. True logits (σ = sigmoid, z_u user propensities,
q_i ad qualities, h the hour):

    click:          logit(base_ctr) + z_click + q_click + surface
    long | click:   logit(base_long) + z_long + q_long + night_long_lift·night(h)
    conv | click:   logit(base_cvr) + z_conv + q_conv + evening_cvr_lift·evening(h)

The mechanisms that make the best action depend on the request (``benchmarks/drlput_oracle.py``
measures what they are worth):

* personalisation: users come from segments (``PERSONAS``: casual, browser, shopper, clicker)
  with different click / dwell / conversion propensities, which their history features reveal
  (noisily for light users); the CTR, long-click and CVR models regress users to the mean (they
  miss ``ctr_shrink``, ``long_shrink``, ``cvr_shrink`` of the propensities) and over-predict
  clicks of light users (cold start, ``light_user_bias``); the organic item shown when no ad
  clears the reserve is engaging in proportion to the user's dwell propensity (``organic_user``),
  so it beats the ads for dwellers who rarely click or convert on ads;
* seasonality: long clicks are likelier at night and conversions in the evening, and the
  long-click and CVR models (trained on daytime traffic) miss ``night_long_bias`` and
  ``evening_cvr_bias`` of those lifts.

Measured (default config): almost all of what personalisation earns comes through the reserve
(the best reserve per user and hour); the per-segment best weights differ (e.g. dwellers want
higher weights on clicks and long clicks) but the reward is flat in the weights around their
optimum, so personalising the weights alone is worth < 1 % here.

All randomness of a request (user, ads, prediction noise and the uniforms behind its events) is
drawn up front from its seed, so every action meets the same request (common random numbers):
the per-request table of every action's true expected reward is exact. :func:`make_requests` and
:func:`outcomes` are vectorised over requests; :class:`AdRequestEnv` is the one-request gymnasium
environment (episodes of one step, for RLlib's online sampling).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np

from workloads.drlput import columns as C
from workloads.drlput.actions import ActionSpace
from workloads.drlput.config import DRLPUTConfig, SimConfig
from workloads.drlput.reward import reward

SURFACE_MIX = ((0.0, 0.0, 0.0), (-0.15, 0.15, 0.0), (0.0, -0.15, 0.15))
"""Shift of the campaign mix per surface (home, search, related): search shows more conversion
campaigns, related pins more impression campaigns."""
PERSONAS = ((0.0, 0.0, 0.0), (-0.3, 1.5, -0.8), (0.2, -0.5, 1.5), (1.2, -0.8, -0.3))
"""Mean (click, long click, conversion) propensities of the user segments casual, browser (dwells,
rarely converts), shopper (converts) and clicker (clicks, short visits), logit scale."""
SURFACE_CTR = (0.0, 0.3, -0.2)
"""Click logit offset per surface."""
BID_MEDIAN = (0.5, 4.8, 0.04)
"""Median bid of click (per click), conversion (per conversion), impression (per impression) campaigns."""
CAMPAIGN_QUALITY = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.8), (-0.3, 0.0, 0.0))
"""Logit offsets (click, long, conv) of each campaign type's ads: conversion campaigns target
converters, brand (impression) ads are clicked less."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def night(hour: np.ndarray) -> np.ndarray:
    """1 at 2 am, 0 at 2 pm (cosine)."""
    return 0.5 * (1.0 + np.cos(2 * np.pi * (hour - 2) / 24))


def evening(hour: np.ndarray) -> np.ndarray:
    """Gaussian bump around 8 pm, 3 h wide (on the circle of hours)."""
    d = (hour - 20 + 12) % 24 - 12
    return np.exp(-0.5 * (d / 3.0) ** 2)


@dataclasses.dataclass
class Requests:
    """N requests: the state (observable), the latent user, the candidate ads and event uniforms."""

    state: dict[str, np.ndarray]  # columns.STATE -> (N,)
    activity: np.ndarray  # (N,) in [0, 1]
    z: np.ndarray  # (N, 3) user propensities (click, long, conv), logit scale
    campaign: np.ndarray  # (N, K) 0 click, 1 conversion, 2 impression
    bid: np.ndarray  # (N, K)
    p: np.ndarray  # (N, K, 3) true P(click), P(long click), P(conversion) (unconditional)
    pred: np.ndarray  # (N, K, 3) the ranking models' predictions of the same
    p_org: np.ndarray  # (N, 3) true probabilities of the organic item (conv = 0)
    u: np.ndarray  # (N, K + 1, 3) uniforms of click, long|click, conv|click (last = organic)

    def __len__(self) -> int:
        return len(self.activity)

    @property
    def value(self) -> np.ndarray:
        """bid·p̂_opt (N, K): the predicted value term of Eq. 3.1 that the reserve applies to."""
        p_opt = np.where(self.campaign == 0, self.pred[..., 0],
                         np.where(self.campaign == 1, self.pred[..., 2], 1.0))
        return self.bid * p_opt


def draw_users(cfg: SimConfig, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Users and contexts: latent propensities and the observable state (history from past impressions)."""
    age = rng.choice(6, n, p=[0.12, 0.25, 0.25, 0.18, 0.12, 0.08])
    gender = rng.choice(3, n, p=[0.6, 0.35, 0.05])
    metro = rng.integers(0, 8, n)
    hour_w = 1.0 + 0.6 * np.sin(2 * np.pi * (np.arange(24) - 9) / 24)  # diurnal traffic
    hour = rng.choice(24, n, p=hour_w / hour_w.sum())
    dow = rng.integers(0, 7, n)
    surface = rng.choice(3, n, p=[0.55, 0.3, 0.15])
    s = cfg.user_spread
    persona = rng.choice(len(PERSONAS), n, p=cfg.persona_mix)
    profile = np.stack([np.linspace(0.3, -0.3, 6)[age], np.array([0.1, -0.1, 0.0])[gender],
                        np.linspace(-0.3, 0.3, 8)[metro]], axis=1)  # (N, 3) what the profile says
    z = profile + cfg.persona_strength * np.asarray(PERSONAS)[persona] + rng.normal(0, s, (n, 3))  # (N, 3)
    activity = rng.beta(1.5, 1.5, n)
    m = np.rint(10 * (cfg.max_history / 10) ** activity).astype(np.int64)  # past ad impressions
    ctr = sigmoid(logit(cfg.base_ctr) + z[:, 0])
    clicks = rng.binomial(m, ctr)
    longs = rng.binomial(clicks, sigmoid(logit(cfg.base_long) + z[:, 1]))
    convs = rng.binomial(clicks, sigmoid(logit(cfg.base_cvr) + z[:, 2]))
    prior = 5.0  # smoothed rates: a user without clicks shows the population rate
    spend = (0.45 * BID_MEDIAN[0] * clicks + 0.3 * BID_MEDIAN[2] * m + 0.25 * BID_MEDIAN[1] * convs) / m
    state = {
        "age": age, "gender": gender, "metro": metro, "hour": hour, "dow": dow, "surface": surface,
        "hist_ctr": clicks / m,
        "hist_long": (longs + prior * cfg.base_long) / (clicks + prior),
        "hist_cvr": (convs + prior * cfg.base_cvr) / (clicks + prior),
        "hist_spend": spend,
        "activity": np.log(m) / np.log(cfg.max_history),
    }
    state = {k: (v.astype(np.int64) if k in C.CAT_FEATURES else v.astype(np.float32)) for k, v in state.items()}
    return {"state": state, "activity": activity, "z": z}


def draw_ads(cfg: SimConfig, users: dict[str, Any], rng: np.random.Generator) -> Requests:
    """Candidate ads of each user's request: types, bids, true probabilities, predictions, uniforms."""
    st, z, act = users["state"], users["z"], users["activity"]
    n, k = len(act), cfg.n_ads
    mix = np.asarray(cfg.campaign_mix)[None, :] + np.asarray(SURFACE_MIX)[st["surface"]]  # (N, 3)
    mix = np.clip(mix, 0, None)
    mix /= mix.sum(1, keepdims=True)
    campaign = (rng.uniform(size=(n, k, 1)) > np.cumsum(mix, 1)[:, None, :]).sum(-1)  # (N, K)
    campaign = np.minimum(campaign, 2)
    bid_z = rng.normal(0, 1, (n, k))
    bid = np.asarray(BID_MEDIAN)[campaign] * np.exp(cfg.bid_spread * bid_z)
    q = rng.normal(0, 1, (n, k, 3))
    rho = cfg.bid_quality_corr  # long-click quality falls with the bid
    q[..., 1] = -rho * bid_z + np.sqrt(1 - rho**2) * q[..., 1]
    q = np.asarray(cfg.ad_spread) * q + np.asarray(CAMPAIGN_QUALITY)[campaign]  # (N, K, 3)
    hour = st["hour"].astype(np.float64)
    base = np.array([logit(cfg.base_ctr), logit(cfg.base_long), logit(cfg.base_cvr)])
    season = np.stack([np.asarray(SURFACE_CTR)[st["surface"]], cfg.night_long_lift * night(hour),
                       cfg.evening_cvr_lift * evening(hour)], axis=1)  # (N, 3)
    true_logit = base + z[:, None, :] + q + season[:, None, :]  # (N, K, 3) click, long|click, conv|click
    # the ranking models: shrink users to the mean, cold-start bias, daytime-trained long-click model
    err = np.stack([-cfg.ctr_shrink * z[:, 0] + cfg.light_user_bias * (1 - 2 * act),
                    -cfg.long_shrink * z[:, 1] - cfg.night_long_bias * cfg.night_long_lift * night(hour),
                    -cfg.cvr_shrink * z[:, 2] - cfg.evening_cvr_bias * cfg.evening_cvr_lift * evening(hour)],
                   axis=1)  # (N, 3)
    pred_logit = true_logit + err[:, None, :] + rng.normal(0, cfg.pred_noise, (n, k, 3))
    p, pred = _unconditional(sigmoid(true_logit)), _unconditional(sigmoid(pred_logit))
    # the organic item does not depend on the user's ad propensities: it is worth more than an ad
    # to users who rarely engage with ads, and more at night (long visits)
    org_click = sigmoid(base[0] + cfg.organic_lift + cfg.organic_user * z[:, 1])
    org = np.stack([org_click, sigmoid(base[1] + cfg.organic_user * z[:, 1] + season[:, 1])], 1)  # (N, 2)
    p_org = np.stack([org[:, 0], org[:, 0] * org[:, 1], np.zeros(n)], axis=1)
    u = rng.uniform(size=(n, k + 1, 3))
    return Requests(state=st, activity=act, z=z, campaign=campaign, bid=bid, p=p, pred=pred, p_org=p_org, u=u)


def _unconditional(cond: np.ndarray) -> np.ndarray:
    """(click, long|click, conv|click) -> (click, long, conv) probabilities (..., 3)."""
    return np.stack([cond[..., 0], cond[..., 0] * cond[..., 1], cond[..., 0] * cond[..., 2]], axis=-1)


def make_requests(cfg: SimConfig, n: int, seed: int) -> Requests:
    """``n`` fresh requests; the same seed gives the same requests."""
    rng = np.random.default_rng(seed)
    return draw_ads(cfg, draw_users(cfg, n, rng), rng)


def redraw_ads(cfg: SimConfig, req: Requests, seed: int) -> Requests:
    """The same users and contexts with new candidate ads (for the per-state oracle)."""
    users = {"state": req.state, "activity": req.activity, "z": req.z}
    return draw_ads(cfg, users, np.random.default_rng(seed))


# ------------------------------------------------------------------------------------- the utility
def eligible(req: Requests, reserve: np.ndarray) -> np.ndarray:
    """(N, K) ads whose value term clears the reserve (N,) (Eq. 3.1's indicator)."""
    return req.value >= np.asarray(reserve)[:, None]


def shown_ads(req: Requests, params: np.ndarray) -> np.ndarray:
    """Index of the shown ad (N,) (-1: none eligible, an organic item) for per-request params (N, 4)
    in PARAMS order (w_click, w_long, w_conv, reserve). Eq. 3.1."""
    util = req.value + np.einsum("nkm,nm->nk", req.pred, params[:, :3])  # (N, K)
    ok = eligible(req, params[:, 3])
    util = np.where(ok, util, -np.inf)
    return np.where(ok.any(1), util.argmax(1), -1)


def shown_ads_all(req: Requests, table: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Shown ad of every request under every action (N, A) for an action table (A, 4)."""
    n, out = len(req), np.empty((len(req), len(table)), np.int64)
    for lo in range(0, n, chunk):
        sl = slice(lo, min(n, lo + chunk))
        value = req.value[sl]  # (n, K)
        util = value[:, None, :] + np.einsum("nkm,am->nak", req.pred[sl], table[:, :3])  # (n, A, K)
        ok = value[:, None, :] >= table[None, :, 3, None]  # (n, A, K)
        util = np.where(ok, util, -np.inf)
        out[sl] = np.where(ok.any(2), util.argmax(2), -1)
    return out


# ------------------------------------------------------------------------------------- outcomes
def outcomes(req: Requests, shown: np.ndarray, expected: bool = False) -> dict[str, np.ndarray]:
    """Reward components of the shown items (columns.OUTCOME; shapes of ``shown``).

    ``expected=False``: the realised events (0/1) from the request's uniforms. ``expected=True``: their
    true expectations (click, long, conv probabilities; revenue = bid · P(optimised action)).
    Revenue is Eq. 3.3: bid x click (click campaigns), x conversion (conversion), x 1 (impression).
    """
    n = len(req)
    rows = np.arange(n).reshape((n,) + (1,) * (shown.ndim - 1))
    is_ad = shown >= 0
    k = np.where(is_ad, shown, 0)
    p = np.where(is_ad[..., None], req.p[rows, k], req.p_org[rows.reshape(-1)].reshape(*rows.shape, 3))
    pred = np.where(is_ad[..., None], req.pred[rows, k], 0.0)
    campaign = np.where(is_ad, req.campaign[rows, k], -1)
    bid = np.where(is_ad, req.bid[rows, k], 0.0)
    if expected:
        ev = p
    else:
        u = np.where(is_ad[..., None], req.u[rows, k], req.u[rows, -1])  # (…, 3)
        click = u[..., 0] < p[..., 0]
        cond = np.divide(p[..., 1:], p[..., :1], out=np.zeros_like(p[..., 1:]), where=p[..., :1] > 0)
        ev = np.stack([click, click & (u[..., 1] < cond[..., 0]), click & (u[..., 2] < cond[..., 1])],
                      axis=-1).astype(np.float64)
    opt = np.where(campaign == 0, ev[..., 0], np.where(campaign == 1, ev[..., 2], 1.0))
    return {C.CAMPAIGN: campaign, C.BID: bid, C.REVENUE: np.where(is_ad, bid * opt, 0.0),
            C.CLICK: ev[..., 0], C.LONG_CLICK: ev[..., 1], C.CONV: ev[..., 2],
            C.PRED_CLICK: pred[..., 0], C.PRED_LONG: pred[..., 1], C.PRED_CONV: pred[..., 2]}


def observe(req: Requests) -> np.ndarray:
    """The flat observation (N, len(STATE)) float32: categorical codes then numerical features."""
    return np.stack([req.state[c].astype(np.float32) for c in C.STATE], axis=1)


class AdRequestEnv(gym.Env):
    """One ad request per episode (one step): observe the state, choose an action, get the reward.

    ``env_config``: ``{"cfg": DRLPUTConfig dict}``; requests are drawn in chunks from the seed
    given to ``reset`` (or the config's seed). The reward is the configured variant from the events.
    """

    CHUNK = 1024

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        self.cfg = DRLPUTConfig.from_dict(dict((env_config or {}).get("cfg", {})))
        self.space = ActionSpace(self.cfg.action)
        lo = np.zeros(len(C.STATE), np.float32)
        num_hi = {"hist_spend": 1e3}  # rates and the activity share are in [0, 1]
        hi = np.array([C.CAT_FEATURES[c] - 1 for c in C.CAT_FEATURES] + [num_hi.get(c, 1.0) for c in C.NUM_FEATURES],
                      np.float32)
        self.observation_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(self.space.size)
        self._seed, self._req, self._obs, self._i = self.cfg.seed, None, None, 0

    def _next_chunk(self) -> None:
        self._req = make_requests(self.cfg.sim, self.CHUNK, self._seed)
        self._obs, self._i, self._seed = observe(self._req), 0, self._seed + 1

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None or self._req is None or self._i >= self.CHUNK - 1:
            if seed is not None:
                self._seed = seed * 7919
            self._next_chunk()
        else:
            self._i += 1
        return self._obs[self._i], {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        req, i = self._req, self._i
        one = Requests(**{f.name: _take(getattr(req, f.name), i) for f in dataclasses.fields(Requests)})
        shown = shown_ads(one, self.space.values[[int(action)]])
        comp = outcomes(one, shown)
        r = float(reward(comp, self.cfg.reward)[0])
        return self._obs[i], r, True, False, {k: float(v[0]) for k, v in comp.items()}


def _take(x: Any, i: int) -> Any:
    if isinstance(x, dict):
        return {k: v[i : i + 1] for k, v in x.items()}
    return x[i : i + 1]
