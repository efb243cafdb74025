"""Who bids and what a day looks like: advertisers, budgets, CPA constraints, traffic, value, shift.

Everything here is a pure function of ``(SimConfig, seed, day)``, drawn from its own seeded streams,
so every bidding policy meets the same advertisers, the same impressions and the same pValues.

* Advertisers (fixed for a seed): advertiser ``i`` runs task ``task[i]`` (the first
  ``task_advertisers[0]`` run gmv, ...), is in category ``i mod n_categories`` and has a log pValue
  level ``level[i] ~ N(0, pvalue_sd_advertiser)``.
* A day ``d``: budgets ``U(budget_range) x impressions / 500,000``; CPA constraints
  ``task_cpa[task] x U(1 - cpa_spread, 1 + cpa_spread)``; the traffic level ``exp(shift_traffic z_d)``;
  task and category value levels that follow mean-reverting walks over days (``shift_value``,
  ``shift_category``: the competitor mix and the value of each task drift, so a held-out day differs
  from the training days); impressions per step from the diurnal traffic profile; a diurnal value
  profile per task (peak hours differ by task); from ``regime_day`` on, each task's value level and
  peak hour move by its own amount and stay there (the abrupt, task-specific shift).
* pValue of impression ``i`` for advertiser ``j`` at step ``t`` (log-normal, clipped to 1)::

      log p_ij = log_value[j] + step_value[t, task_j] + sd_imp z_i + sd_cat c_{i,cat_j} + sd_pair e_ij
"""

from __future__ import annotations

import dataclasses

import numpy as np

from workloads.vamo.config import SimConfig

REFERENCE_IMPRESSIONS = 500_000  # budget_range is stated for a day of this many impressions
_TASK_PEAK_HOUR = (21.0, 20.0, 14.0)
SHIFT_PERSISTENCE = 0.8  # day-to-day persistence of the value and competitor-mix shifts  # value peaks: evening shopping for GMV, afternoon for carts


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """An independent stream for ``(seed, *key)`` (NumPy SeedSequence spawning by entropy tuple)."""
    return np.random.default_rng([seed, *key])


# stream tags: the second element of every key, so that no two purposes share a stream
ADVERTISERS, DAY, SHIFT, PVALUE, OUTCOME, LOGGING = range(6)


@dataclasses.dataclass(frozen=True)
class Advertisers:
    task: np.ndarray  # (N,) int
    category: np.ndarray  # (N,) int
    level: np.ndarray  # (N,) float log pValue offset

    @property
    def n(self) -> int:
        return len(self.task)


@dataclasses.dataclass(frozen=True)
class Day:
    """The parameters of one simulated day (see the module docstring)."""

    index: int
    budget: np.ndarray  # (N,) float64
    cpa: np.ndarray  # (N,) float64 CPA constraint
    log_value: np.ndarray  # (N,) float32 base log pValue of the day
    step_value: np.ndarray  # (T, K) float32 diurnal log pValue offset per task
    step_impressions: np.ndarray  # (T,) int64
    traffic_level: float

    @property
    def impressions(self) -> int:
        return int(self.step_impressions.sum())


def make_advertisers(cfg: SimConfig, seed: int) -> Advertisers:
    task = np.repeat(np.arange(len(cfg.task_advertisers)), cfg.task_advertisers)
    category = np.arange(len(task)) % cfg.n_categories
    level = rng_for(seed, ADVERTISERS).normal(0.0, cfg.pvalue_sd_advertiser, len(task))
    return Advertisers(task=task, category=category, level=level)


def hours(steps: int) -> np.ndarray:
    """Hour of day at the middle of each step."""
    return 24.0 * (np.arange(steps) + 0.5) / steps


def traffic_profile(cfg: SimConfig) -> np.ndarray:
    """(T,) share of the day's impressions in each step: a daily cycle (night low, noon and evening
    highs), sums to 1."""
    h = hours(cfg.steps)
    shape = 0.65 * np.cos(2 * np.pi * (h - 20.5) / 24) + 0.35 * np.cos(4 * np.pi * (h - 12.0) / 24)
    profile = 1.0 + cfg.traffic_amplitude * shape
    return profile / profile.sum()


def _split(total: int, shares: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total`` in proportion to ``shares`` (largest remainders)."""
    raw = total * shares
    counts = np.floor(raw).astype(np.int64)
    rest = total - counts.sum()
    counts[np.argsort(counts - raw)[:rest]] += 1
    return counts


def _walk(cfg: SimConfig, seed: int, day: int, width: int, sd: float, tag: int) -> np.ndarray:
    """Day ``day``'s value of a mean-reverting walk over days, x_d = 0.8 x_{d-1} + N(0, sd), x_0 = 0:
    neighbouring days are alike, far days differ, and no day drifts without bound."""
    steps = rng_for(seed, SHIFT, tag).normal(0.0, sd, (day + 1, width))
    x = np.zeros(width)
    for e in steps[1:]:
        x = SHIFT_PERSISTENCE * x + e
    return x


def make_day(cfg: SimConfig, seed: int, day: int, adv: Advertisers) -> Day:
    rng = rng_for(seed, DAY, day)
    n, k = adv.n, len(cfg.task_advertisers)
    scale = cfg.impressions / REFERENCE_IMPRESSIONS
    budget = rng.uniform(*cfg.budget_range, n) * scale
    cpa = np.asarray(cfg.task_cpa)[adv.task] * rng.uniform(1 - cfg.cpa_spread, 1 + cfg.cpa_spread, n)
    level = float(np.exp(cfg.shift_traffic * rng.standard_normal()))
    task_shift = _walk(cfg, seed, day, k, cfg.shift_value, 0)
    cat_shift = _walk(cfg, seed, day, cfg.n_categories, cfg.shift_category, 1)
    shifted = 0 < cfg.regime_day <= day  # the abrupt, task-specific regime (config.regime_day)
    task_shift = task_shift + (np.asarray(cfg.regime_value[:k]) if shifted else 0.0)
    peak = np.asarray(_TASK_PEAK_HOUR[:k]) + (np.asarray(cfg.regime_peak_hours[:k]) if shifted else 0.0)
    log_value = (np.log(np.asarray(cfg.task_pvalue))[adv.task] + adv.level + task_shift[adv.task]
                 + cat_shift[adv.category])
    h = hours(cfg.steps)[:, None]
    step_value = cfg.value_amplitude * np.cos(2 * np.pi * (h - peak) / 24)
    total = max(cfg.steps, int(round(cfg.impressions * level)))
    return Day(
        index=day,
        budget=budget,
        cpa=cpa,
        log_value=log_value.astype(np.float32),
        step_value=step_value.astype(np.float32),
        step_impressions=_split(total, traffic_profile(cfg)),
        traffic_level=level,
    )


def draw_pvalues(cfg: SimConfig, seed: int, day: Day, adv: Advertisers, step: int, chunk: int,
                 rows: int) -> np.ndarray:
    """(rows, N) float32 pValues of chunk ``chunk`` of step ``step`` (its own stream: a chunk can be
    drawn again bit for bit). The only array of the simulator that has a value per (impression,
    advertiser) pair besides the bids."""
    rng = rng_for(seed, PVALUE, day.index, step, chunk)
    out = rng.standard_normal((rows, adv.n), dtype=np.float32)
    out *= np.float32(cfg.pvalue_sd_pair)
    cat = rng.standard_normal((rows, cfg.n_categories), dtype=np.float32)
    cat *= np.float32(cfg.pvalue_sd_category)
    out += cat[:, adv.category]
    imp = rng.standard_normal(rows, dtype=np.float32)
    imp *= np.float32(cfg.pvalue_sd_impression)
    out += imp[:, None]
    out += (day.log_value + day.step_value[step, adv.task])[None, :]
    np.exp(out, out=out)
    np.minimum(out, np.float32(1.0), out=out)
    return out


def chunk_bounds(rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    """Equal chunks of at most ``chunk_rows`` covering ``rows``."""
    n_chunks = max(1, -(-rows // chunk_rows))
    edges = np.linspace(0, rows, n_chunks + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))
