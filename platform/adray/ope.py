"""Off-policy estimators: the value of a target policy π from logs of a behaviour policy μ.

Logs carry, per decision, the reward r, the behaviour's propensity μ(a|s) of the logged action
and (computed by the caller) the target's probability π(a|s) of that same action; ρ = π/μ.

One-step (contextual bandit; every row is its own episode):

    IPS   = mean_i ρ_i r_i                                           (Horvitz-Thompson)
    SNIPS = Σ_i ρ_i r_i / Σ_i ρ_i                                    (self-normalised)
    DR    = mean_i [ v̂(s_i) + ρ_i (r_i - q̂(s_i, a_i)) ]              (Dudík et al. 2011)

Trajectories (episodes of decisions t = 0..T-1, discount γ; ρ_{0:t} = Π_{t'<=t} ρ_t', ρ_{0:-1} = 1):

    PDIS  = mean_e Σ_t γ^t ρ_{0:t} r_t                               (per-decision IS, Precup 2000)
    WPDIS = Σ_t γ^t Σ_e ρ_{0:t} r_t / Σ_e ρ_{0:t}                    (weighted per step)
    DR    = mean_e Σ_t γ^t [ ρ_{0:t} (r_t - q̂_t) + ρ_{0:t-1} v̂_t ]   (Jiang & Li 2016)
    WDR   = the same with ρ_{0:t} replaced by ρ_{0:t} / mean_e ρ_{0:t}  (Thomas & Brunskill 2016)

An episode that ended before step t sits in an absorbing state (reward 0, q̂ = v̂ = 0, ρ = 1), so
it adds 0 to the sums and its final cumulative weight to the normalisers of WPDIS/WDR at step t. q̂ (of the logged action) and v̂ = E_π q̂(s, ·) come from any model;
DR is unbiased whatever they are when the propensities are right, and has lower variance when
q̂ is close. Standard errors are from a seeded bootstrap over episodes; ``ess`` is the effective
sample size (Σρ)² / Σρ² of the final step's cumulative weights (Kish), a warning sign when small.
"""

from __future__ import annotations

import dataclasses

import numpy as np

BOOTSTRAP = 200


@dataclasses.dataclass(frozen=True)
class Estimate:
    """An off-policy value estimate: ``value`` ± ``std_err`` from ``n`` episodes; ``ess`` = Kish ESS."""

    value: float
    std_err: float
    ess: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def _column(values: object, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name}: expected {n} values (one per logged decision), got {len(arr)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: expected finite values, found NaN/inf at rows {np.flatnonzero(~np.isfinite(arr))[:5]}")
    return arr


def importance_weights(target_prob: object, logging_prob: object, n: int | None = None) -> np.ndarray:
    """ρ = π(a|s) / μ(a|s), after checking π in [0, 1] and μ in (0, 1]."""
    pi = _column(target_prob, "target_prob", n)
    mu = _column(logging_prob, "logging_prob", len(pi))
    if ((pi < 0) | (pi > 1)).any():
        raise ValueError(f"target_prob: expected probabilities in [0, 1], got min {pi.min()}, max {pi.max()}")
    if ((mu <= 0) | (mu > 1)).any():
        raise ValueError(f"logging_prob: expected propensities in (0, 1] (a logged action has mu > 0), "
                         f"got min {mu.min()}, max {mu.max()}")
    return pi / mu


def _kish(w: np.ndarray) -> float:
    s2 = float((w**2).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0


def _bootstrap(stat, n: int, seed: int) -> float:
    """Standard deviation of ``stat`` over BOOTSTRAP seeded resamples of the n rows.

    A resample on which the statistic is undefined (``stat`` returns NaN: e.g. SNIPS of a resample
    whose importance weights are all 0) is left out, not counted as 0: counting it as a value
    would pull the spread towards 0 and make the interval look tighter than the data allow. When
    more than half of the resamples are undefined the spread is unknown: ``inf``.
    """
    rng = np.random.default_rng(seed)
    values = np.array([stat(rng.integers(0, n, n)) for _ in range(BOOTSTRAP)])
    defined = values[np.isfinite(values)]
    if len(defined) * 2 < len(values) or len(defined) < 2:
        return float("inf")
    return float(np.std(defined))


# ------------------------------------------------------------------------------------ one step
def ips(rewards: object, target_prob: object, logging_prob: object) -> Estimate:
    """Horvitz-Thompson; s.e. in closed form."""
    r = _column(rewards, "rewards")
    w = importance_weights(target_prob, logging_prob, len(r))
    x = w * r
    return Estimate(float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan"),
                    _kish(w), len(r))


def snips(rewards: object, target_prob: object, logging_prob: object, seed: int = 0) -> Estimate:
    """Self-normalised IPS; s.e. by a seeded bootstrap (a ratio estimator).

    SNIPS is undefined where every importance weight is 0 (the target never takes a logged
    action): the value is then NaN, and bootstrap resamples with zero total weight are left out of
    the standard error (see :func:`_bootstrap`), not scored 0."""
    r = _column(rewards, "rewards")
    w = importance_weights(target_prob, logging_prob, len(r))

    def stat(idx: np.ndarray) -> float:
        total = w[idx].sum()
        return float((w[idx] * r[idx]).sum() / total) if total > 0 else float("nan")

    return Estimate(stat(np.arange(len(r))), _bootstrap(stat, len(r), seed), _kish(w), len(r))


def dr(rewards: object, target_prob: object, logging_prob: object, q_logged: object, v_target: object) -> Estimate:
    """Doubly robust, one step; s.e. in closed form."""
    r = _column(rewards, "rewards")
    w = importance_weights(target_prob, logging_prob, len(r))
    q, v = _column(q_logged, "q_logged", len(r)), _column(v_target, "v_target", len(r))
    x = v + w * (r - q)
    return Estimate(float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan"),
                    _kish(w), len(r))


# ------------------------------------------------------------------------------------ trajectories
@dataclasses.dataclass(frozen=True)
class Trajectories:
    """Logged decisions laid out as (episodes E, steps T) arrays; ``alive`` marks real decisions."""

    rewards: np.ndarray
    rho: np.ndarray
    q: np.ndarray
    v: np.ndarray
    alive: np.ndarray
    gamma: float

    @classmethod
    def from_rows(cls, episode_ids: object, steps: object, rewards: object, target_prob: object,
                  logging_prob: object, gamma: float, q_logged: object | None = None,
                  v_target: object | None = None) -> Trajectories:
        """Rows are decisions (any order); ``steps`` numbers each episode's decisions 0, 1, ... with no gaps."""
        r = _column(rewards, "rewards")
        n = len(r)
        rho = importance_weights(target_prob, logging_prob, n)
        eps = np.asarray(episode_ids)
        t = np.asarray(steps, dtype=np.int64)
        if eps.shape != (n,) or t.shape != (n,):
            raise ValueError(f"episode_ids, steps: expected {n} values each, got {eps.shape}, {t.shape}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma={gamma}: expected a discount in (0, 1]")
        q = np.zeros(n) if q_logged is None else _column(q_logged, "q_logged", n)
        v = np.zeros(n) if v_target is None else _column(v_target, "v_target", n)
        _, e = np.unique(eps, return_inverse=True)
        n_eps, horizon = int(e.max()) + 1 if n else 0, int(t.max()) + 1 if n else 0
        if n and (t < 0).any():
            raise ValueError("steps: expected step numbers >= 0")
        counts = np.bincount(e, minlength=n_eps)
        pairs = e.astype(np.int64) * max(horizon, 1) + t
        if len(np.unique(pairs)) != n or (np.bincount(e, weights=t, minlength=n_eps) != counts * (counts - 1) / 2).any():
            raise ValueError("steps: expected each episode's decisions numbered 0..len-1 exactly once")
        arrays = {}
        for name, col in (("rewards", r), ("rho", rho), ("q", q), ("v", v)):
            grid = np.zeros((n_eps, horizon))
            grid[e, t] = col
            arrays[name] = grid
        alive = np.zeros((n_eps, horizon), bool)
        alive[e, t] = True
        return cls(alive=alive, gamma=float(gamma), **arrays)

    def cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """ρ_{0:t} and ρ_{0:t-1} (E, T). After an episode ends it sits in an absorbing state with
        reward 0 where π = μ (ρ = 1), so its cumulative weight stays at its last value."""
        cum = np.cumprod(np.where(self.alive, self.rho, 1.0), axis=1)
        prev = np.concatenate([np.ones((len(cum), 1)), cum[:, :-1]], axis=1)
        return cum, prev


def _normalise(w: np.ndarray) -> np.ndarray:
    """w_{e,t} / mean_e w_{e,t} per step t (0 where every weight of a step is 0)."""
    mean = w.mean(0, keepdims=True)
    return np.divide(w, mean, out=np.zeros_like(w), where=mean > 0)


def _trajectory_estimate(traj: Trajectories, weighted: bool, doubly_robust: bool, seed: int) -> Estimate:
    cum, prev = traj.cumulative()
    disc = traj.gamma ** np.arange(traj.rewards.shape[1])  # (T,)
    r, q, v = (np.where(traj.alive, x, 0.0) for x in (traj.rewards, traj.q, traj.v))  # 0 once absorbed

    def stat(idx: np.ndarray) -> float:
        c, p = cum[idx], prev[idx]
        if weighted:
            c, p = _normalise(c), _normalise(p)
        terms = c * (r[idx] - q[idx]) + p * v[idx] if doubly_robust else c * r[idx]  # (E, T)
        return float((terms @ disc).mean())

    idx = np.arange(len(cum))
    return Estimate(stat(idx), _bootstrap(stat, len(idx), seed), _kish(cum[:, -1]), len(idx))


def pdis(traj: Trajectories, seed: int = 0) -> Estimate:
    return _trajectory_estimate(traj, weighted=False, doubly_robust=False, seed=seed)


def wpdis(traj: Trajectories, seed: int = 0) -> Estimate:
    return _trajectory_estimate(traj, weighted=True, doubly_robust=False, seed=seed)


def dr_trajectory(traj: Trajectories, seed: int = 0) -> Estimate:
    return _trajectory_estimate(traj, weighted=False, doubly_robust=True, seed=seed)


def wdr(traj: Trajectories, seed: int = 0) -> Estimate:
    return _trajectory_estimate(traj, weighted=True, doubly_robust=True, seed=seed)


TRAJECTORY_ESTIMATORS = {"pdis": pdis, "wpdis": wpdis, "dr": dr_trajectory, "wdr": wdr}
