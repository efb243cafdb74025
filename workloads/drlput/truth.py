"""Simulator truth: the exact expected reward of every action on every request, and the reference policies.

Because a request's randomness is drawn up front (sim.py), the true expected reward of action a
on request n is a number, ``table[n, a]``, computed from the true probabilities of the item that
a's utility shows. From it:

* ``uniform``: mean over actions (the value of the uniform behaviour policy);
* ``best_fixed``: the one action with the best mean on separate calibration requests (what manual
  tuning would pick, given a perfect A/B test);
* ``oracle``: the per-request best action (it knows the candidates and their true probabilities:
  an upper bound no policy of the state can reach);
* ``state_oracle``: per request, the action with the best mean over ``m`` redraws of the candidate
  ads for the same user and context, scored on the request's own ads: the best a policy that
  knows the user's *latent* propensities and the context could do (personalisation's ceiling).
"""

from __future__ import annotations

import numpy as np

from workloads.drlput import columns as C
from workloads.drlput.actions import ActionSpace
from workloads.drlput.config import DRLPUTConfig
from workloads.drlput.reward import reward
from workloads.drlput.sim import Requests, make_requests, outcomes, redraw_ads, shown_ads, shown_ads_all

CALIBRATION_SEED = 9_999_999
EVAL_SEED = 10_000_000
METRICS = ("reward", "ctr", "long_ctr", "cvr", "revenue")
"""Per request: true expected reward, click, long-click and conversion probabilities of the shown
item (organic items count for ctr/long_ctr; cvr is conversions per request), advertiser revenue."""


def reward_table(cfg: DRLPUTConfig, req: Requests, space: ActionSpace) -> np.ndarray:
    """True expected reward (N, A) of every action on every request."""
    return reward(outcomes(req, shown_ads_all(req, space.values), expected=True), cfg.reward)


def policy_metrics(cfg: DRLPUTConfig, req: Requests, space: ActionSpace, actions: np.ndarray) -> dict[str, float]:
    """Per-request means of METRICS (true expectations) when request n gets ``actions[n]``."""
    comp = outcomes(req, shown_ads(req, space.values[np.asarray(actions)]), expected=True)
    return {"reward": float(reward(comp, cfg.reward).mean()), "ctr": float(comp[C.CLICK].mean()),
            "long_ctr": float(comp[C.LONG_CLICK].mean()), "cvr": float(comp[C.CONV].mean()),
            "revenue": float(comp[C.REVENUE].mean())}


def uniform_metrics(cfg: DRLPUTConfig, req: Requests, space: ActionSpace) -> dict[str, float]:
    """METRICS of the uniform policy (exact: the mean over all actions)."""
    comp = outcomes(req, shown_ads_all(req, space.values), expected=True)
    return {"reward": float(reward(comp, cfg.reward).mean()), "ctr": float(comp[C.CLICK].mean()),
            "long_ctr": float(comp[C.LONG_CLICK].mean()), "cvr": float(comp[C.CONV].mean()),
            "revenue": float(comp[C.REVENUE].mean())}


def best_fixed_action(cfg: DRLPUTConfig, space: ActionSpace, n: int | None = None) -> int:
    """The action with the best true mean reward on calibration requests (not the evaluation's)."""
    req = make_requests(cfg.sim, n or cfg.eval_requests, CALIBRATION_SEED)
    return int(reward_table(cfg, req, space).mean(0).argmax())


def state_action_values(cfg: DRLPUTConfig, req: Requests, space: ActionSpace, m: int = 16,
                        seed: int = 0) -> np.ndarray:
    """Q(user, context, a) (N, A): each action's true reward averaged over ``m`` redraws of the ads."""
    q = np.zeros((len(req), space.size))
    for j in range(m):
        q += reward_table(cfg, redraw_ads(cfg.sim, req, seed * 1_000_003 + j + 1), space)
    return q / m


def state_oracle_actions(cfg: DRLPUTConfig, req: Requests, space: ActionSpace, m: int = 16, seed: int = 0,
                         allowed: np.ndarray | None = None, q: np.ndarray | None = None) -> np.ndarray:
    """Per request, the action with the best :func:`state_action_values` (N,); only among
    ``allowed`` (A,) bool actions when given (e.g. the reserve alone personalised)."""
    q = (state_action_values(cfg, req, space, m, seed) if q is None else q).copy()
    if allowed is not None:
        q[:, ~np.asarray(allowed)] = -np.inf
    return q.argmax(1)
