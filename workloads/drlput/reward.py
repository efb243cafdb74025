"""The reward (Eq. 3.2-3.4), its variants R0-R4 (Sec. 6.2.3), and per-batch min-max normalisation.

    R       = R_revenue + R_user                                                   (3.2)
    R_rev   = s_c · bid · {click, conversion, 1} for campaign c = {click, conversion, impression}  (3.3)
    R_user  = α_c·click + β_c·long_click + γ_c·conv                                 (3.4)

The per-campaign coefficients (α_c, β_c, γ_c) and revenue scales s_c of each variant:

    R0  (α, β, γ) per campaign from the config; s = 1
    R1  R_user = 0 (revenue only)
    R2  α_c = shared_alpha, β_c = shared_beta, γ_c = 0 for every campaign
    R3  R2, but impression campaigns: α = β = 0 and s = impression_scale
    R4  R3, but conversion campaigns: α = β = 0, γ = conv_gamma

An organic item (no ad cleared the reserve) earns no revenue; its user value uses the click
campaign's (α, β) times ``organic`` (R1: nothing).

The paper computes R_user from the ranking models' *estimated* probabilities, each min-max
normalised within the training batch (``signal="predicted"``, :func:`minmax`). Our default feeds
the realised events (``signal="events"``): then E[R | s, a] is the true expected reward the
evaluation reports, whereas predicted probabilities carry the models' biases into the objective.
"""

from __future__ import annotations

import numpy as np

from workloads.drlput import columns as C
from workloads.drlput.config import RewardConfig


def coefficients(cfg: RewardConfig) -> tuple[np.ndarray, np.ndarray]:
    """(coef (4, 3), scale (4,)): rows click, conversion, impression, organic; columns α, β, γ."""
    v = cfg.variant
    if v == "R0":
        coef = np.stack([cfg.alpha, cfg.beta, cfg.gamma], axis=1).astype(np.float64)  # (3, 3)
    elif v == "R1":
        coef = np.zeros((3, 3))
    else:
        coef = np.tile([cfg.shared_alpha, cfg.shared_beta, 0.0], (3, 1))
        if v in ("R3", "R4"):
            coef[2] = 0.0
        if v == "R4":
            coef[1] = [0.0, 0.0, cfg.conv_gamma]
    scale = np.ones(4)
    if v in ("R3", "R4"):
        scale[2] = cfg.impression_scale
    organic = cfg.organic * np.array([coef[0, 0], coef[0, 1], 0.0])
    return np.vstack([coef, organic]), scale


def reward_parts(comp: dict[str, np.ndarray], cfg: RewardConfig,
                 user_signal: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(R_rev, R_user) of reward components (any shape). ``user_signal`` replaces the events
    (click, long_click, conv) in Eq. 3.4, e.g. by normalised predictions."""
    coef, scale = coefficients(cfg)
    row = np.where(comp[C.CAMPAIGN] < 0, 3, comp[C.CAMPAIGN]).astype(np.int64)  # organic -> row 3
    sig = user_signal or (comp[C.CLICK], comp[C.LONG_CLICK], comp[C.CONV])
    r_rev = scale[row] * comp[C.REVENUE]  # Eq. 3.3
    r_user = coef[row, 0] * sig[0] + coef[row, 1] * sig[1] + coef[row, 2] * sig[2]  # Eq. 3.4
    return r_rev, r_user


def reward(comp: dict[str, np.ndarray], cfg: RewardConfig) -> np.ndarray:
    """R = R_rev + R_user (Eq. 3.2) from the events (or, from ``outcomes(expected=True)``, its expectation)."""
    r_rev, r_user = reward_parts(comp, cfg)
    return r_rev + r_user


def minmax(x: np.ndarray) -> np.ndarray:
    """(x - min) / (max - min) over the batch; a constant batch maps to 0."""
    lo, span = x.min(), x.max() - x.min()
    return (x - lo) / span if span > 0 else np.zeros_like(x)


def training_reward(comp: dict[str, np.ndarray], cfg: RewardConfig, signal: str, normalise: bool) -> np.ndarray:
    """The reward one training batch learns from.

    ``signal="predicted"`` (the paper): Eq. 3.4 on the shown ad's predicted probabilities, each
    min-max normalised within the batch. ``signal="events"``: on the realised events. With
    ``normalise``, the batch's total reward is min-max normalised too (a positive affine map per
    batch: it keeps every per-state ranking of actions and bounds the gradient scale).
    """
    if signal == "predicted":
        preds = (comp[C.PRED_CLICK], comp[C.PRED_LONG], comp[C.PRED_CONV])
        r_rev, r_user = reward_parts(comp, cfg, tuple(minmax(np.asarray(p, np.float64)) for p in preds))
    elif signal == "events":
        r_rev, r_user = reward_parts(comp, cfg)
    else:
        raise ValueError(f"reward signal {signal!r}: expected 'events' or 'predicted'")
    r = r_rev + r_user
    return minmax(r) if normalise else r
