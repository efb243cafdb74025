"""Baseline bidders of the AuctionNet baselines, vectorised over the advertisers they control.

* :class:`FixedAlpha`: alpha = scale x CPA constraint (scale 1 bids the CPA: the truthful bid).
* :class:`PidBudget`: PID pacing of spend: alpha starts at the CPA and is multiplied by
  ``exp(clip(PID(e)))`` where e = +1 when the spend projected from the last step would leave more
  than 30% of the budget unspent, -1 when it would overspend by more than 10%; the projection
  scales the last step's spend by the traffic profile of the steps left (the AuctionNet baseline's
  gains 0.01, 2.6e-6, 1.3e-4 move alpha by ~1% a step; ours are larger: see the defaults).
* :class:`PidCpa`: PID on the realised CPA: e = (CPA - realised CPA) / CPA weighted by the last
  step's conversions, step divided by the cumulative conversions (as the AuctionNet baseline).
* :class:`OnlineLp`: AuctionNet's online LP: from a previous day's market sample of the advertiser's
  category, the impressions of the remaining steps sorted by cost-efficiency (leastWinningCost /
  pValue); alpha = the efficiency at which their cumulative cost reaches the remaining budget,
  at most 1.5 x CPA.
* :class:`Explore`: multiplies another bidder's alpha by a per-advertiser-day scale and per-step
  noise (log-normal): the logging policy of the training data (diverse trajectory quality).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workloads.vamo.sim import Bidder, DayResult
from workloads.vamo.world import LOGGING, rng_for, traffic_profile


class FixedAlpha:
    def __init__(self, scale: float | np.ndarray = 1.0) -> None:
        self.scale = scale

    def start(self, result: DayResult, idx: np.ndarray) -> None:
        self.alpha = np.broadcast_to(self.scale, idx.shape) * result.day.cpa[idx]

    def act(self, t: int, result: DayResult, idx: np.ndarray) -> np.ndarray:
        return self.alpha


class _Pid:
    def __init__(self, kp: float, ki: float, kd: float, clip: float) -> None:
        self.gains, self.clip = (kp, ki, kd), clip

    def start(self, result: DayResult, idx: np.ndarray) -> None:
        self.alpha = result.day.cpa[idx].astype(float).copy()
        self.integral = np.zeros(len(idx))
        self.last = np.zeros(len(idx))

    def _update(self, error: np.ndarray) -> np.ndarray:
        kp, ki, kd = self.gains
        self.integral += error
        delta = kp * error + ki * self.integral + kd * (error - self.last)
        self.last = error
        return np.clip(delta, -self.clip, self.clip)


class PidBudget(_Pid):
    def __init__(self, kp: float = 0.05, ki: float = 0.002, kd: float = 0.01, clip: float = 1.5) -> None:
        super().__init__(kp, ki, kd, clip)

    def start(self, result: DayResult, idx: np.ndarray) -> None:
        super().start(result, idx)
        self.share = traffic_profile(result.cfg)  # expected share of the spend in each step

    def act(self, t: int, result: DayResult, idx: np.ndarray) -> np.ndarray:
        if t == 0:
            return self.alpha
        remaining = np.maximum(result.log.remaining[t, idx], 1e-9)
        projected = result.log.cost[t - 1, idx] / self.share[t - 1] * self.share[t:].sum() / remaining
        error = np.select([projected < 0.7, projected > 1.1], [1.0, -1.0], 0.0)
        self.alpha = np.maximum(0.01, self.alpha * np.exp(self._update(error)))
        return self.alpha


class PidCpa(_Pid):
    def __init__(self, kp: float = 0.4, ki: float = 0.001, kd: float = 0.05, clip: float = 2.0) -> None:
        super().__init__(kp, ki, kd, clip)

    def act(self, t: int, result: DayResult, idx: np.ndarray) -> np.ndarray:
        if t == 0:
            return self.alpha
        log, cpa = result.log, result.day.cpa[idx]
        conv = log.conversions[:t, idx].sum(0)
        cost = log.cost[:t, idx].sum(0)
        real = np.divide(cost, conv, out=np.full(len(idx), np.nan), where=conv > 0)
        error = np.nan_to_num((cpa - real) / cpa) * log.conversions[t - 1, idx]
        delta = np.divide(self._update(error), conv, out=np.zeros(len(idx)), where=conv > 0)
        self.alpha = np.maximum(0.01, self.alpha * np.exp(delta))
        return self.alpha


class LpTable:
    """Per category and step t: the impressions of steps >= t of a reference day sorted by
    cost-efficiency, with their cumulative cost (what :class:`OnlineLp` looks up)."""

    def __init__(self, market: dict[str, np.ndarray], steps: int, stride: int) -> None:
        self.curves: list[list[tuple[np.ndarray, np.ndarray]]] = []
        step, lwc = market["step"], market["lwc"].astype(np.float64)
        for c in range(market["pvalue"].shape[1]):
            p = market["pvalue"][:, c].astype(np.float64)
            keep = (p > 0) & (lwc > 1e-4)
            eff = lwc[keep] / (p[keep] + 1e-4)  # AuctionNet's realCPA
            st, lw = step[keep], lwc[keep]
            order = np.argsort(eff, kind="stable")
            eff, st, lw = eff[order], st[order], lw[order]
            per_t = []
            for t in range(steps):
                m = st >= t
                per_t.append((eff[m], np.cumsum(lw[m]) * stride))
            self.curves.append(per_t)

    def alpha(self, category: int, t: int, budget_left: float) -> float | None:
        eff, cum = self.curves[category][t]
        i = int(np.searchsorted(cum, budget_left, side="right"))
        return float(eff[i]) if i < len(eff) else None


class OnlineLp:
    def __init__(self, table: LpTable, cap: float = 1.5) -> None:
        self.table, self.cap = table, cap

    def start(self, result: DayResult, idx: np.ndarray) -> None:
        self.category = result.adv.category[idx]
        self.cpa = result.day.cpa[idx]

    def act(self, t: int, result: DayResult, idx: np.ndarray) -> np.ndarray:
        out = self.cpa.copy()
        for i, (c, left) in enumerate(zip(self.category, result.log.remaining[t, idx])):
            a = self.table.alpha(int(c), t, float(left))
            if a is not None:
                out[i] = a
        return np.minimum(out, self.cap * self.cpa)


class Explore:
    """``inner``'s alpha x exp(sd x N(0,1)) per advertiser-day x exp(sd/2 x N(0,1)) per step."""

    def __init__(self, inner: Bidder, sd: float, key: int) -> None:
        self.inner, self.sd, self.key = inner, sd, key

    def start(self, result: DayResult, idx: np.ndarray) -> None:
        self.inner.start(result, idx)
        self.rng = rng_for(result.seed, LOGGING, result.day.index, self.key)
        self.scale = np.exp(self.sd * self.rng.standard_normal(len(idx)))

    def act(self, t: int, result: DayResult, idx: np.ndarray) -> np.ndarray:
        noise = np.exp(0.5 * self.sd * self.rng.standard_normal(len(idx)))
        return self.inner.act(t, result, idx) * self.scale * noise


BASELINES = ("fixed", "pid_budget", "pid_cpa", "online_lp")


def make_bidder(name: str, lp: LpTable | None = None) -> Bidder:
    if name == "fixed":
        return FixedAlpha()
    if name == "pid_budget":
        return PidBudget()
    if name == "pid_cpa":
        return PidCpa()
    if name == "online_lp":
        if lp is None:
            raise ValueError("online_lp needs an LpTable (a market sample of a reference day)")
        return OnlineLp(lp)
    raise ValueError(f"unknown bidder {name!r}; expected one of {BASELINES}")


def logging_market(n: int, seed: int, day: int, sd: float, lp: LpTable | None,
                   kinds: Sequence[str] = BASELINES) -> list[tuple[np.ndarray, Bidder]]:
    """The logging policy of a training day: each advertiser gets a random baseline (its kind drawn
    per advertiser-day) wrapped in :class:`Explore`."""
    kinds = [k for k in kinds if k != "online_lp" or lp is not None]
    pick = rng_for(seed, LOGGING, day, 10**6).integers(0, len(kinds), n)
    out: list[tuple[np.ndarray, Bidder]] = []
    for k, name in enumerate(kinds):
        idx = np.flatnonzero(pick == k)
        if len(idx):
            out.append((idx, Explore(make_bidder(name, lp), sd, key=k)))
    return out
