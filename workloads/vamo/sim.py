"""The auction simulator: one day of GSP auctions between budget- and CPA-constrained bidders.

Mechanics (AuctionNet's, listed so that they can be checked one by one; tests/unit/test_vamo_sim.py):

1. A day has T decision steps; step t brings ``day.step_impressions[t]`` impressions. Before the
   step, every advertiser sees its pValues for the step's impressions (their mean is a state
   feature) and its bidder sets one coefficient alpha; the bid on impression i is alpha x pValue_ij.
2. Each impression is a GSP auction for S slots (3): the S highest bids win the slots in order and
   slot k costs the (k+1)-th highest bid ("the next bid down"). A slot is sold only if that price is
   positive and at least ``reserve_price``. The (S+1)-th highest bid is the impression's
   leastWinningCost.
3. Exposure: one uniform u per impression; slot k is seen iff u < exposure[k] (exposure
   nonincreasing), so the marginal exposure probabilities are exactly (1, 0.8, 0.6) and a slot is
   seen only if the one above is. Cost is charged on exposure only.
4. Conversions only on exposure: the value is pValue + sigma x e (sigma = sigma_ratio x pValue, e a
   standard normal truncated at +- sigma_trunc) clipped to [0, 1], and the conversion is
   Bernoulli(value). A conversion of a GMV task is worth a log-normal order value; a cart counts 1.
5. Budgets within a step: impressions are processed in order; an advertiser whose cumulative cost
   would exceed its remaining budget has its bid cut to 0 from the first impression at which it
   would, and the auctions from that impression on are run again (others move up, prices change);
   the earliest such impression first, so every cut is decided on final earlier auctions, until
   no budget is exceeded. A cut is never undone within the step. An advertiser whose remaining
   budget is below ``min_remaining_budget`` does not bid any more.
6. Score (AuctionNet): ``conversions x min(1, (CPA_constraint / realised_CPA)^2)``; a task's metric
   is the same penalty applied to the task's value (GMV, direct GMV, cart count).

Speed: only pValues and bids exist per (impression, advertiser) pair, in chunks of ``chunk_rows``
impressions (float32, drawn straight into one buffer); the top S+1 bids come from S+1 argmax passes
(faster than argpartition on 48-wide rows); value noise, conversions and order values are drawn only
for the (at most S) exposed winners of an impression, per (impression, slot), from a stream of their
own. All randomness of a chunk is keyed by (seed, day, step, chunk): every policy meets the same
impressions and the same exposure and conversion draws (common random numbers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from scipy.special import ndtr, ndtri

from workloads.vamo.config import TASKS, SimConfig
from workloads.vamo.world import (
    OUTCOME,
    Advertisers,
    Day,
    chunk_bounds,
    draw_pvalues,
    make_advertisers,
    make_day,
    rng_for,
)

LOG_FIELDS = ("cost", "wins", "exposures", "conversions", "value", "reward_continuous", "bid_sum",
              "pvalue_sum")
LP_STRIDE = 4  # every 4th impression is kept in the market sample of the online-LP bidder


@dataclasses.dataclass
class DayLog:
    """Per (step, advertiser) totals of one day; (T, N) float64 unless noted."""

    cost: np.ndarray
    wins: np.ndarray  # slots won (AuctionNet's xi), exposed or not
    exposures: np.ndarray
    conversions: np.ndarray
    value: np.ndarray  # the task's value of the conversions (GMV or cart count)
    reward_continuous: np.ndarray  # sum of pValue over exposed impressions
    bid_sum: np.ndarray  # bids after budget cuts
    pvalue_sum: np.ndarray  # over all the step's impressions
    alpha: np.ndarray  # bid coefficient asked by the bidder (0 once out of budget)
    remaining: np.ndarray  # budget left before the step
    rows: np.ndarray  # (T,) impressions of the step
    lwc_sum: np.ndarray  # (T,) sum of leastWinningCost over the step's impressions

    @classmethod
    def empty(cls, steps: int, n: int) -> DayLog:
        z = {f: np.zeros((steps, n)) for f in (*LOG_FIELDS, "alpha", "remaining")}
        return cls(**z, rows=np.zeros(steps, np.int64), lwc_sum=np.zeros(steps))


@dataclasses.dataclass
class DayResult:
    cfg: SimConfig
    seed: int
    adv: Advertisers
    day: Day
    log: DayLog
    market: dict[str, np.ndarray] | None = None  # online-LP sample: step, pvalue (m, C), lwc (m,)

    def scores(self) -> dict[str, np.ndarray]:
        """Per advertiser: conversions, cost, value, realised CPA, penalty, score, task_score."""
        return score_table(self.log.conversions.sum(0), self.log.cost.sum(0), self.log.value.sum(0),
                           self.day.cpa)


class Bidder(Protocol):
    """Sets the bid coefficients of the advertisers ``idx`` it controls, once per step."""

    def start(self, result: DayResult, idx: np.ndarray) -> None: ...

    def act(self, t: int, result: DayResult, idx: np.ndarray) -> np.ndarray: ...


def score_table(conversions: np.ndarray, cost: np.ndarray, value: np.ndarray,
                cpa: np.ndarray) -> dict[str, np.ndarray]:
    """AuctionNet's score: ``conversions x min(1, (CPA / realised CPA)^2)``; realised CPA = cost /
    conversions (no conversion: no penalty, score 0). ``task_score`` applies the same penalty to the
    task's value."""
    conversions, cost, value = (np.asarray(a, dtype=float) for a in (conversions, cost, value))
    with np.errstate(divide="ignore", invalid="ignore"):
        cpa_real = np.where(conversions > 0, cost / np.maximum(conversions, 1e-12), 0.0)
        penalty = np.where(cpa_real > 0, np.minimum(1.0, (cpa / np.maximum(cpa_real, 1e-12)) ** 2), 1.0)
    return {"conversions": conversions, "cost": cost, "value": value, "cpa_real": cpa_real,
            "penalty": penalty, "score": conversions * penalty, "task_score": value * penalty}


def task_metrics(scores: dict[str, np.ndarray], task: np.ndarray, idx: np.ndarray | None = None,
                 ) -> dict[str, float]:
    """Mean task score per advertiser of each task (``gmv``, ``dir_gmv``, ``cart``) and mean score."""
    sel = np.ones(len(task), bool) if idx is None else np.isin(np.arange(len(task)), idx)
    out = {}
    for k, name in enumerate(TASKS):
        m = sel & (task == k)
        out[name] = float(scores["task_score"][m].mean()) if m.any() else float("nan")
    out["score"] = float(scores["score"][sel].mean())
    return out


def top_bids(bids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, k) indices and values of the k highest bids of each row, highest first (ties: lowest
    advertiser index first). Bids are >= 0."""
    work = bids.copy()
    r = np.arange(len(bids))
    idx = np.empty((len(bids), k), np.int64)
    val = np.empty((len(bids), k), bids.dtype)
    for s in range(k):
        i = work.argmax(1)
        idx[:, s] = i
        val[:, s] = work[r, i]
        work[r, i] = -1.0
    return idx, val


@dataclasses.dataclass
class Auction:
    """Outcome of the auctions of one chunk, (rows, S) per slot."""

    winner: np.ndarray  # advertiser in the slot; n_advertisers where the slot is unsold
    price: np.ndarray  # next bid down (0 if unsold)
    exposed: np.ndarray  # bool
    cost: np.ndarray  # float64 price x exposed
    lwc: np.ndarray  # (rows,) leastWinningCost: the (S+1)-th highest bid
    cuts: int  # budget cuts made


def _allocate(bids: np.ndarray, u: np.ndarray, exposure: np.ndarray, reserve: float, n: int,
              ) -> tuple[np.ndarray, ...]:
    s = len(exposure)
    idx, val = top_bids(bids, s + 1)
    nxt = val[:, 1:]
    sold = (val[:, :s] > 0) & (nxt > 0) & (nxt >= reserve)
    winner = np.where(sold, idx[:, :s], n)
    price = np.where(sold, nxt, 0).astype(np.float32)
    exposed = sold & (u[:, None] < exposure[None, :])
    cost = price.astype(np.float64) * exposed
    return winner, price, exposed, cost, val[:, s], idx


def _member(ids: np.ndarray, size: int) -> np.ndarray:
    """A lookup table: table[i] is True iff i in ids (faster than np.isin for a few ids)."""
    table = np.zeros(size, bool)
    table[ids] = True
    return table


def _first_crossing(winner: np.ndarray, cost: np.ndarray, remaining: np.ndarray, over: np.ndarray,
                    ) -> tuple[int, np.ndarray] | None:
    """The earliest impression at which an advertiser of ``over`` exceeds its remaining budget
    (cumulated exposed cost in impression order) and the advertisers that do there."""
    slots = winner.shape[1]
    flat = winner.ravel()
    sel = np.flatnonzero(_member(over, len(remaining) + 1)[flat])  # row-major: impression order
    who = flat[sel]
    if len(over) > 1:
        order = np.argsort(who, kind="stable")  # grouped by advertiser, impression order kept
        sel, who = sel[order], who[order]
    c = cost.ravel()[sel]
    starts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
    cum = np.cumsum(c)
    cum -= np.repeat(cum[starts] - c[starts], np.diff(np.r_[starts, len(c)]))  # per-advertiser cumsum
    crossed = cum > remaining[who]
    if not crossed.any():  # rounding between bincount and cumsum: nothing is over
        return None
    row = sel // slots
    first = int(row[crossed].min())
    return first, np.unique(who[crossed & (row == first)])


def run_auctions(bids: np.ndarray, u: np.ndarray, exposure: np.ndarray, remaining: np.ndarray,
                 reserve: float = 0.0) -> Auction:
    """GSP auctions of a chunk with in-step budget enforcement (mechanics 2, 3 and 5).

    ``bids`` (rows, N) float32 is modified in place: the cut bids become 0. Only the earliest
    crossing is cut per round (every auction before it is final; later crossings may move once
    these bids are gone), and only the later auctions in which a cut bid was among the top S+1
    are run again (removing a lower bid changes neither winners nor prices).
    """
    rows, n = bids.shape
    exposure = np.asarray(exposure, dtype=np.float64)
    winner, price, exposed, cost, lwc, top = _allocate(bids, u, exposure, reserve, n)
    cuts, start, before = 0, 0, np.zeros(n)  # auctions before ``start`` are final; ``before``: their spend

    def spend(a: int, b: int) -> np.ndarray:
        return np.bincount(winner[a:b].ravel(), weights=cost[a:b].ravel(), minlength=n + 1)[:n]

    while True:
        left = remaining - before
        over = np.flatnonzero(spend(start, rows) > left)
        hit = _first_crossing(winner[start:], cost[start:], left, over) if len(over) else None
        if hit is None:
            return Auction(winner, price, exposed, cost, lwc, cuts)
        first, cut = start + hit[0], hit[1]
        before += spend(start, first)
        start = first
        bids[first:, cut] = 0.0
        cuts += len(cut)
        redo = first + np.flatnonzero(_member(cut, n)[top[first:]].any(1))
        w, p, e, c, lw, tp = _allocate(bids[redo], u[redo], exposure, reserve, n)
        winner[redo], price[redo], exposed[redo], cost[redo], lwc[redo], top[redo] = w, p, e, c, lw, tp


def _outcomes(cfg: SimConfig, adv: Advertisers, pv: np.ndarray, auc: Auction,
              rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Conversions and their value for the exposed winners only (mechanic 4)."""
    rows, s = auc.winner.shape
    a = cfg.sigma_trunc
    lo = ndtr(-a)
    eps = ndtri(lo + rng.random((rows, s)) * (1 - 2 * lo))  # truncated standard normal
    u_conv = rng.random((rows, s))
    z_val = rng.standard_normal((rows, s))
    r, k = np.nonzero(auc.exposed)
    j = auc.winner[r, k]
    p = pv[r, j].astype(np.float64)
    value = np.clip(p + cfg.sigma_ratio * p * eps[r, k], 0.0, 1.0)
    conv = u_conv[r, k] < value
    task = adv.task[j]
    mean = np.asarray(cfg.task_order_value)[task]
    sd = np.where(np.asarray(TASKS)[task] == "cart", 0.0, cfg.order_value_sd)
    order = mean * np.exp(sd * z_val[r, k] - 0.5 * sd**2)
    return j, conv, conv * order, p


def simulate_day(cfg: SimConfig, seed: int, day_index: int,
                 bidders: Sequence[tuple[np.ndarray, Bidder]], *, market_sample: bool = False,
                 ) -> DayResult:
    """One day: every step draws pValues, asks the bidders for alphas, runs the auctions.

    ``bidders``: (advertiser indices, bidder) pairs covering every advertiser exactly once.
    ``market_sample``: also keep (pValue per category, leastWinningCost) of every LP_STRIDE-th
    impression, which is what the online-LP bidder learns from.
    """
    adv = make_advertisers(cfg, seed)
    day = make_day(cfg, seed, day_index, adv)
    n, steps = adv.n, cfg.steps
    covered = np.sort(np.concatenate([np.asarray(i) for i, _ in bidders])) if bidders else np.array([])
    if not np.array_equal(covered, np.arange(n)):
        raise ValueError(f"bidders must cover advertisers 0..{n - 1} exactly once")
    log = DayLog.empty(steps, n)
    result = DayResult(cfg, seed, adv, day, log)
    for idx, bidder in bidders:
        bidder.start(result, np.asarray(idx))
    exposure = np.asarray(cfg.exposure)
    remaining = day.budget.astype(np.float64).copy()
    members = [np.flatnonzero(adv.category == c) for c in range(cfg.n_categories)]
    sample: dict[str, list[np.ndarray]] = {"step": [], "pvalue": [], "lwc": []}
    for t in range(steps):
        rows = int(day.step_impressions[t])
        bounds = chunk_bounds(rows, cfg.chunk_rows)
        first = draw_pvalues(cfg, seed, day, adv, t, 0, bounds[0][1])
        psum = first.sum(0, dtype=np.float64)
        for c, (a, b) in enumerate(bounds[1:], start=1):  # pValues are seen before bidding
            psum += draw_pvalues(cfg, seed, day, adv, t, c, b - a).sum(0, dtype=np.float64)
        log.pvalue_sum[t], log.rows[t], log.remaining[t] = psum, rows, remaining
        alpha = np.zeros(n)
        for idx, bidder in bidders:
            alpha[idx] = bidder.act(t, result, np.asarray(idx))
        alpha = np.where(remaining >= cfg.min_remaining_budget, np.maximum(alpha, 0.0), 0.0)
        log.alpha[t] = alpha
        for c, (a, b) in enumerate(bounds):
            pv = first if c == 0 else draw_pvalues(cfg, seed, day, adv, t, c, b - a)
            rng = rng_for(seed, OUTCOME, day_index, t, c)
            u = rng.random(b - a)
            bids = pv * alpha.astype(np.float32)[None, :]
            auc = run_auctions(bids, u, exposure, remaining, cfg.reserve_price)
            j, conv, val, p = _outcomes(cfg, adv, pv, auc, rng)
            won = auc.winner.ravel()
            spent = np.bincount(won, weights=auc.cost.ravel(), minlength=n + 1)[:n]
            log.cost[t] += spent
            log.wins[t] += np.bincount(won, minlength=n + 1)[:n]
            log.exposures[t] += np.bincount(j, minlength=n)
            log.conversions[t] += np.bincount(j, weights=conv, minlength=n)
            log.value[t] += np.bincount(j, weights=val, minlength=n)
            log.reward_continuous[t] += np.bincount(j, weights=p, minlength=n)
            log.bid_sum[t] += bids.sum(0, dtype=np.float64)
            log.lwc_sum[t] += float(auc.lwc.sum(dtype=np.float64))
            remaining = np.maximum(remaining - spent, 0.0)
            if market_sample:
                keep = np.arange(0, b - a, LP_STRIDE)
                pick = np.stack([m[(a + keep) % len(m)] for m in members], 1)  # (m, C) one per category
                sample["step"].append(np.full(len(keep), t, np.int16))
                sample["pvalue"].append(np.take_along_axis(pv[keep], pick, 1))
                sample["lwc"].append(auc.lwc[keep])
    if market_sample:
        result.market = {k: np.concatenate(v) for k, v in sample.items()}
    return result
