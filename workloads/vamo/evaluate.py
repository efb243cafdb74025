"""Evaluation: every method bids in the same fresh simulated days against the same opponents.

The market is the training data's (same seed: the same advertisers); the days are the ones after
the logged validation and test days (never logged themselves), as the paper's test day follows
its validation day. Half of each task's advertisers (every second one) are bid for by
the method under test; the other half are opponents that bid with the AuctionNet baselines without
exploration, the same for every method. Each evaluation day is bid ``eval_seeds`` times, once per
opponent seed: the seed draws which of the four baselines (fixed alpha, PID on budget, PID on CPA,
online LP; a quarter of the opponents each) every opponent bids with, so the method meets
``eval_days x eval_seeds`` markets (every method the same ones). A method's metrics are the
per-task means over its advertisers, days and opponent seeds (gmv, dir_gmv, cart: the task's value
x CPA penalty; score: AuctionNet's score), each with ``<metric>_std``: the std over opponent seeds
of the per-seed means over days; and, when STL is in the table, Delta m% = mean_k -(M_k -
M_stl,k) / M_stl,k x 100 (lower is better). Every learned model also gets ``test_loss`` and
``test_loss_<task>``: its action error on the dataset's logged test day, what the trainer reports
(train.evaluate_windows; STL: each task's network on its own task's windows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adray.data import read_dataset
from workloads.vamo.bidders import FixedAlpha, LpTable, OnlineLp, PidBudget, PidCpa
from workloads.vamo.config import TASKS, SimConfig, VamoConfig
from workloads.vamo.data import REFERENCE_DAY, lp_table, map_days
from workloads.vamo.policy import ModelBidder
from workloads.vamo.sim import Bidder, DayResult, simulate_day, task_metrics
from workloads.vamo.train import evaluate_windows, load_windows, task_runs
from workloads.vamo.world import make_advertisers, rng_for

BASELINES = ("fixed", "pid_budget", "pid_cpa", "online_lp", "random")
OPPONENT_STREAM = 98
"""Stream tag of the opponents' draw (``rng_for(seed, OPPONENT_STREAM, day, opponent_seed)``);
world.py's tags are 0-5, RandomAlpha's 99."""


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


def opponents(idx: np.ndarray, lp: LpTable, rng: np.random.Generator | None = None,
              ) -> list[tuple[np.ndarray, Bidder]]:
    """The opponents ``idx`` in four equal groups (fixed alpha, PID budget, PID CPA, online LP):
    every fourth of them in a permutation drawn from ``rng`` (an opponent seed's; none: in order)."""
    kinds: list[Callable[[], Bidder]] = [FixedAlpha, PidBudget, PidCpa, lambda: OnlineLp(lp)]
    order = np.arange(len(idx)) if rng is None else rng.permutation(len(idx))
    out = []
    for k, make in enumerate(kinds):
        sel = np.sort(idx[order[k::len(kinds)]])
        if len(sel):
            out.append((sel, make()))
    return out


def baseline_bidder(name: str, lp: LpTable) -> Bidder:
    return {"fixed": FixedAlpha, "pid_budget": PidBudget, "pid_cpa": PidCpa, "random": RandomAlpha,
            "online_lp": lambda: OnlineLp(lp)}[name]()


def eval_day(sim: SimConfig, seed: int, day: int, make: Callable[[], Bidder], lp: LpTable,
             opponent_seed: int = 0) -> dict[str, float]:
    adv = make_advertisers(sim, seed)
    mine = controlled(adv.task)
    others = np.setdiff1d(np.arange(adv.n), mine)
    rng = rng_for(seed, OPPONENT_STREAM, day, opponent_seed)
    res = simulate_day(sim, seed, day, [(mine, make()), *opponents(others, lp, rng)])
    return task_metrics(res.scores(), adv.task, mine)


def eval_days(cfg: VamoConfig) -> list[int]:
    """The evaluation days: right after the logged test day (data.make_data's day layout)."""
    first = REFERENCE_DAY + cfg.train_days + 3
    return list(range(first, first + cfg.eval_days))


def validation_day(cfg: VamoConfig) -> int:
    """The held-out validation day: the day the dataset's ``val`` split was logged on (data.make_data's
    day layout), never an evaluation day."""
    return REFERENCE_DAY + cfg.train_days + 1


TARGET_GRID = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
"""The ``target_return`` values :func:`choose_target` bids by default."""


def at_target(model: Any, target: float | tuple[float, ...]) -> Any:
    """The same network bidding with another return target: one multiple for every task
    (``target_return``), or one per task (``task_targets``)."""
    if isinstance(target, tuple):  # a chosen target: no grid left to choose from
        cfg = dataclasses.replace(model.cfg, task_targets=tuple(float(t) for t in target), target_grid=())
    else:
        cfg = dataclasses.replace(model.cfg, target_return=float(target), task_targets=())
    return dataclasses.replace(model, cfg=cfg)


def bid_validation_day(cfg: VamoConfig, data_dir: Path | str, model: Any, lp: LpTable | None = None,
                       parallel: bool = True) -> dict[str, float]:
    """The model's per-task metrics and score on :func:`validation_day`, against ``cfg.eval_seeds``
    opponent seeds (the protocol of :func:`run_bidder`; ``lp``: the market's LpTable, made if None;
    ``parallel``: the days as Ray tasks, else in this process)."""
    sim, seed = market_of(cfg, data_dir)
    lp = lp if lp is not None else lp_table(sim, seed)
    r = run_bidder(sim, seed, lambda: ModelBidder(model), [validation_day(cfg)], lp, cfg.eval_seeds, parallel)
    return {k: r[k] for k in (*TASKS, "score")}


def choose_target(cfg: VamoConfig, data_dir: Path | str, model: Any, grid: Sequence[float] = TARGET_GRID,
                  lp: LpTable | None = None, parallel: bool = True,
                  ) -> tuple[tuple[float, ...], dict[float, dict[str, float]]]:
    """Each task's return target, chosen online on the held-out validation day (issue 22: the paper
    validates on a held-out day; the platform's training never bids it).

    The model bids :func:`validation_day` against ``cfg.eval_seeds`` opponent seeds at each
    ``target_return`` of ``grid``, every task at once (the protocol of :func:`run_bidder`); for
    each task the target under which that task's own metric (``TASKS``: its value x CPA penalty,
    what Table 1 reports) was highest wins, the smaller on a tie. One target for all tasks chosen
    on the total score let a task collapse (its advertisers outscored by the others' conversions).
    Returns the targets (``TASKS`` order, for ``task_targets``) and ``{target: {task metrics,
    score}}``. The evaluation days take no part. ``lp``: the market's LpTable, made if None;
    ``parallel``: as :func:`bid_validation_day`.
    """
    if not grid or any(not t > 0 for t in grid):
        raise ValueError(f"target grid {list(grid)}: expected one or more numbers > 0")
    lp = lp if lp is not None else lp_table(*market_of(cfg, data_dir))
    metrics = {float(t): bid_validation_day(cfg, data_dir, at_target(model, t), lp, parallel)
               for t in sorted(set(grid))}
    best = tuple(max(metrics, key=lambda t, k=k: (metrics[t][k], -t)) for k in TASKS)
    return best, metrics


def select_targets(cfg: VamoConfig, data_dir: Path | str, model: Any, grid: Sequence[float] = TARGET_GRID,
                   lp: LpTable | None = None, parallel: bool = True) -> dict[str, Any]:
    """:func:`choose_target`, then the model bids the validation day once more with the chosen
    per-task targets (their ``val_day`` metrics: the selection signal a sweep may optimise).

    Returns the record that ``vamo_table.py select`` and training's ``target_grid`` publish:
    ``task_targets`` (``TASKS`` order), ``validation_day``, ``opponent_seeds``, ``grid`` (``{multiple:
    {task metrics, score}}``) and ``val_day`` (the metrics at the chosen targets)."""
    lp = lp if lp is not None else lp_table(*market_of(cfg, data_dir))  # once, for every bid below
    best, metrics = choose_target(cfg, data_dir, model, grid, lp, parallel)
    chosen = at_target(model, best)
    val = bid_validation_day(chosen.cfg, data_dir, chosen, lp, parallel)
    return {"task_targets": list(best), "validation_day": validation_day(cfg), "opponent_seeds": cfg.eval_seeds,
            "grid": {f"{t:g}": m for t, m in metrics.items()}, "val_day": val}


def run_bidder(sim: SimConfig, seed: int, make: Callable[[], Bidder], days: list[int], lp: LpTable,
               opponent_seeds: int = 1, parallel: bool = True) -> dict[str, float]:
    """Mean metrics of a bidder over the days x opponent seeds (in parallel under Ray unless
    ``parallel`` is False), and ``<metric>_std``: the std over opponent seeds of the per-seed means
    over the days."""
    calls = [(sim, seed, d, make, lp, j) for j in range(opponent_seeds) for d in days]
    rows = map_days(eval_day, calls, parallel)
    out: dict[str, float] = {}
    for k in rows[0]:
        per_seed = np.array([r[k] for r in rows], float).reshape(opponent_seeds, len(days)).mean(1)
        out[k], out[f"{k}_std"] = float(per_seed.mean()), float(per_seed.std())
    return out


def logged_test_losses(data_dir: Path | str, model: Any) -> dict[str, float]:
    """``test_loss`` and ``test_loss_<task>`` of a trained model (under its own config) on the
    dataset's logged test day, as the trainer reports them: one network on every window, or for
    STL each task's network on its task's windows and ``test_loss`` their mean (workload._combine)."""
    cfg: VamoConfig = model.cfg
    runs = task_runs(cfg)
    if len(runs) == 1:
        m = evaluate_windows(model.nets[0], load_windows(data_dir, "test", cfg), cfg)
        return {f"test_{k}": v for k, v in m.items()}
    out: dict[str, float] = {}
    for k, tasks in enumerate(runs):
        m = evaluate_windows(model.nets[k], load_windows(data_dir, "test", cfg, tasks), cfg)
        out[f"test_loss_{TASKS[k]}"] = m[f"loss_{TASKS[k]}"]
    out["test_loss"] = float(np.mean(list(out.values())))
    return out


def delta_m(metrics: Mapping[str, float], stl: Mapping[str, float]) -> float:
    """Delta m% (the paper's Sec. 4.1): the mean relative drop against STL, x 100; lower is better."""
    return float(np.mean([-(metrics[t] - stl[t]) / stl[t] * 100 for t in TASKS]))


def market_of(cfg: VamoConfig, data_dir: Path | str) -> tuple[SimConfig, int]:
    """The simulator and seed that made the dataset (an imported dataset: the config's)."""
    manifest = read_dataset(data_dir).manifest
    meta = manifest.get("meta", {})
    if meta.get("origin") == "simulator":
        return SimConfig.from_dict(meta["sim"], f"{data_dir}/manifest.json"), int(manifest["seed"])
    return cfg.sim, cfg.seed


def evaluate_methods(cfg: VamoConfig, data_dir: Path, model: Any, others: Mapping[str, Any],
                     baselines: tuple[str, ...] = BASELINES) -> dict[str, dict[str, float]]:
    """``{method: {gmv, dir_gmv, cart, score, each with _std[, delta_m]}}`` (learned models also
    ``test_loss*``) for the model (under the workload's name, ``vamo``, whatever its weighting: the
    platform's contract), each model of ``others`` under its label (``stl``, ``vanilla``, ... as
    benchmarks/vamo_table.py passes them) and the baselines."""
    sim, seed = market_of(cfg, data_dir)
    lp = lp_table(sim, seed)
    table: dict[str, dict[str, float]] = {}
    models = {"vamo": model, **others} if model is not None else dict(others)
    days, n_opp = eval_days(cfg), cfg.eval_seeds
    for name, m in models.items():
        table[name] = {**run_bidder(sim, seed, lambda m=m: ModelBidder(m), days, lp, n_opp),
                       **logged_test_losses(data_dir, m)}
    for name in baselines:
        table[name] = run_bidder(sim, seed, lambda name=name: baseline_bidder(name, lp), days, lp, n_opp)
    if "stl" in table:
        for row in table.values():
            row["delta_m"] = delta_m(row, table["stl"])
    return table
