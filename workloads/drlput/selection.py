"""Which training iteration DRL-PUT keeps: chosen on held-out logs, never by simulator truth.

After iteration t the trainer values its serving rule on the ``val`` logs: per logged row i the
weight w_ti = π_t(a_i|s_i) / μ(a_i|s_i) (evaluate.served_prob over the logged propensity) and the
config's reward r_i of the logged events, unnormalised, give

    SNIPS_t = Σ_i w_ti r_i / Σ_i w_ti                      (``adray.ope.snips``; ``val_snips``)

and the config's ``selection`` picks one of the T iterations:

    paired  the last iteration T, unless an earlier iteration is better with confidence: its
            lower bound  L_t = (SNIPS_t - SNIPS_T) - z · sd_B(SNIPS_t - SNIPS_T)  is above 0, where
            sd_B is the spread of the difference over B bootstrap resamples of the rows, the same
            resample for both (a paired comparison: rows on which t and T decide alike cancel),
            and z = Φ⁻¹(1 - LEVEL / (T - 1)) (Bonferroni over the T - 1 comparisons: when no earlier
            iteration is better, one is kept instead of T with probability <= LEVEL). Among those
            above 0, the highest L_t.
    argmax  the highest SNIPS_t.

Why ``paired`` is the default: SNIPS_t of a greedy policy rests on the rows whose logged action
is the one it would take, about n_val / |A| under uniform logging (240 of 30,000 at the default
scale, |A| = 125), so its standard error (~0.2 there) is several times the differences between
late iterations; the argmax of 20 such estimates picks the luckiest one, not the best policy
(``benchmarks/drlput_selection.py`` measures both rules against the truth they never see). The
last iteration is what the training objective, itself an off-policy estimate on the ``train``
logs, has improved longest; the held-out logs overrule it when they can tell, e.g. after
training diverged or overfitted.
"""

from __future__ import annotations

import warnings
from statistics import NormalDist

import numpy as np

LEVEL = 0.05
"""Family-wise rate at which ``paired`` keeps an earlier iteration when none is better."""
BOOTSTRAP = 200
"""Bootstrap resamples of the ``val`` rows (seeded)."""
RULES = ("paired", "argmax")


def snips_by_iteration(weights: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """SNIPS_t (T,) of weights (T, N) on rewards (N,); NaN where an iteration has no weight."""
    total = weights.sum(1)
    return np.where(total > 0, weights @ rewards / np.where(total > 0, total, 1.0), np.nan)


def paired_lower_bounds(weights: np.ndarray, rewards: np.ndarray, seed: int = 0) -> np.ndarray:
    """L_t (T,) of the module docstring (0 for the last iteration, -inf where undefined)."""
    t, n = weights.shape
    est = snips_by_iteration(weights, rewards)
    if t == 1:
        return np.zeros(1)
    rng = np.random.default_rng(seed)
    diffs = np.empty((BOOTSTRAP, t))
    for b in range(BOOTSTRAP):
        counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)  # (N,)
        total = weights @ counts  # (T,)
        s = np.where(total > 0, weights @ (counts * rewards) / np.where(total > 0, total, 1.0), np.nan)
        diffs[b] = s - s[-1]
    z = NormalDist().inv_cdf(1 - LEVEL / (t - 1))
    with warnings.catch_warnings():  # an iteration without weight in every resample: NaN, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(diffs, axis=0)
    lower = (est - est[-1]) - z * sd
    lower = np.where(np.isfinite(lower), lower, -np.inf)
    lower[-1] = 0.0
    return lower


def choose(rule: str, weights: np.ndarray, rewards: np.ndarray, seed: int = 0) -> int:
    """The kept iteration (0-based) under ``rule`` (module docstring). ``weights`` (T, N): each
    iteration's π/μ on the ``val`` rows; ``rewards`` (N,). Where no SNIPS is defined: the last."""
    weights, rewards = np.asarray(weights, np.float64), np.asarray(rewards, np.float64)
    if rule == "argmax":
        est = snips_by_iteration(weights, rewards)
        return int(np.nanargmax(est)) if np.isfinite(est).any() else len(est) - 1
    if rule == "paired":
        lower = paired_lower_bounds(weights, rewards, seed)
        return len(lower) - 1 if lower.max() <= 0 else int(np.argmax(lower))
    raise ValueError(f"selection {rule!r}: expected one of {RULES}")
