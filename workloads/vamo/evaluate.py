"""Evaluation: every method bids in the same fresh simulated days against the same opponents.

The market is the training data's (same seed: the same advertisers); the days are the ones after
the logged validation and test days (never logged themselves), as the paper's test day follows
its validation day. Half of each task's advertisers (every second one) are bid for by
the method under test; the other half are opponents that bid with the AuctionNet baselines without
exploration, the same for every method. A method's metrics are the per-task means over its
advertisers and days (gmv, dir_gmv, cart: the task's value x CPA penalty; score: AuctionNet's score)
and, when STL is in the table, Delta m% = mean_k -(M_k - M_stl,k) / M_stl,k x 100 (lower is better).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from adray.data import read_dataset
from workloads.vamo.bidders import FixedAlpha, LpTable, OnlineLp, PidBudget, PidCpa
from workloads.vamo.config import TASKS, SimConfig, VamoConfig
from workloads.vamo.data import REFERENCE_DAY, lp_table, map_days
from workloads.vamo.policy import ModelBidder
from workloads.vamo.sim import Bidder, DayResult, simulate_day, task_metrics
from workloads.vamo.world import make_advertisers, rng_for

BASELINES = ("fixed", "pid_budget", "pid_cpa", "online_lp", "random")


class RandomAlpha:
    """Trivial baseline: alpha = CPA x a log-uniform draw in [1/4, 4] per advertiser and step."""

    def start(self, result: DayResult, idx: np.ndarray) -> None:
        self.rng = rng_for(result.seed, 99, result.day.index)
        self.cpa = result.day.cpa[idx]

    def act(self, t: int, result: DayResult, idx: np.ndarray) -> np.ndarray:
        return self.cpa * np.exp(self.rng.uniform(np.log(0.25), np.log(4.0), len(idx)))


def controlled(task: np.ndarray) -> np.ndarray:
    """Every second advertiser of each task (the method's); the others are opponents."""
    rank = np.concatenate([np.arange((task == k).sum()) for k in range(len(TASKS))])
    order = np.argsort(task, kind="stable")
    pos = np.empty(len(task), int)
    pos[order] = rank
    return np.flatnonzero(pos % 2 == 0)


def opponents(idx: np.ndarray, lp: LpTable) -> list[tuple[np.ndarray, Bidder]]:
    kinds: list[Callable[[], Bidder]] = [FixedAlpha, PidBudget, PidCpa, lambda: OnlineLp(lp)]
    out = []
    for k, make in enumerate(kinds):
        sel = idx[np.arange(len(idx)) % len(kinds) == k]
        if len(sel):
            out.append((sel, make()))
    return out


def baseline_bidder(name: str, lp: LpTable) -> Bidder:
    return {"fixed": FixedAlpha, "pid_budget": PidBudget, "pid_cpa": PidCpa, "random": RandomAlpha,
            "online_lp": lambda: OnlineLp(lp)}[name]()


def eval_day(sim: SimConfig, seed: int, day: int, make: Callable[[], Bidder], lp: LpTable) -> dict[str, float]:
    adv = make_advertisers(sim, seed)
    mine = controlled(adv.task)
    others = np.setdiff1d(np.arange(adv.n), mine)
    res = simulate_day(sim, seed, day, [(mine, make()), *opponents(others, lp)])
    return task_metrics(res.scores(), adv.task, mine)


def eval_days(cfg: VamoConfig) -> list[int]:
    """The evaluation days: right after the logged test day (data.make_data's day layout)."""
    first = REFERENCE_DAY + cfg.train_days + 3
    return list(range(first, first + cfg.eval_days))


def run_bidder(sim: SimConfig, seed: int, make: Callable[[], Bidder], days: list[int], lp: LpTable,
               ) -> dict[str, float]:
    """Mean metrics of a bidder over the days (in parallel under Ray)."""
    rows = map_days(eval_day, [(sim, seed, d, make, lp) for d in days])
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def delta_m(metrics: Mapping[str, float], stl: Mapping[str, float]) -> float:
    """Delta m% (the paper's Sec. 4.1): the mean relative drop against STL, x 100; lower is better."""
    return float(np.mean([-(metrics[t] - stl[t]) / stl[t] * 100 for t in TASKS]))


def market_of(cfg: VamoConfig, data_dir: Path) -> tuple[SimConfig, int]:
    """The simulator and seed that made the dataset (an imported dataset: the config's)."""
    manifest = read_dataset(data_dir).manifest
    meta = manifest.get("meta", {})
    if meta.get("origin") == "simulator":
        return SimConfig.from_dict(meta["sim"], f"{data_dir}/manifest.json"), int(manifest["seed"])
    return cfg.sim, cfg.seed


def evaluate_methods(cfg: VamoConfig, data_dir: Path, model: Any, others: Mapping[str, Any],
                     baselines: tuple[str, ...] = BASELINES) -> dict[str, dict[str, float]]:
    """``{method: {gmv, dir_gmv, cart, score[, delta_m]}}`` for the model (under the workload's name,
    ``vamo``, whatever its weighting: the platform's contract), each model of ``others`` under its
    label (``stl``, ``vanilla``, ... as benchmarks/vamo_table.py passes them) and the baselines."""
    sim, seed = market_of(cfg, Path(data_dir))
    lp = lp_table(sim, seed)
    table: dict[str, dict[str, float]] = {}
    models = {"vamo": model, **others} if model is not None else dict(others)
    for name, m in models.items():
        table[name] = run_bidder(sim, seed, lambda m=m: ModelBidder(m), eval_days(cfg), lp)
    for name in baselines:
        table[name] = run_bidder(sim, seed, lambda name=name: baseline_bidder(name, lp), eval_days(cfg), lp)
    if "stl" in table:
        for row in table.values():
            row["delta_m"] = delta_m(row, table["stl"])
    return table
