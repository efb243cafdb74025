"""AuctionNet trajectories: the 16 state features, the writer of the trajectory format, and the
conversion of parsed trajectories into the workload's dataset.

The trajectory format (AuctionNet's ``rl_data_generator``): one row per (delivery period,
advertiser, step) with the columns :data:`COLUMNS`; ``state`` and ``next_state`` are text tuples of
the 16 floats of :data:`STATE_FEATURES`; ``action`` = total bid / total pValue of the step (= alpha);
``reward`` = conversions on exposed impressions of the step; ``reward_continuous`` = their pValue
sum; ``done`` = 1 at the last step or once the budget is spent (then ``next_state`` is empty).
``realAllCost`` / ``realAllConversion`` are the advertiser's totals of the period. Our writer adds
``taskIndex`` (the advertiser's task); files without it are one task unless the import is given a
task mapping (importer.py): tasks are never invented.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from adray.data import DataError, write_dataset
from workloads.vamo.config import STATE_DIM, TASKS
from workloads.vamo.sim import DayLog, DayResult, score_table

COLUMNS = ("deliveryPeriodIndex", "advertiserNumber", "advertiserCategoryIndex", "budget",
           "CPAConstraint", "realAllCost", "realAllConversion", "timeStepIndex", "state", "action",
           "reward", "reward_continuous", "done", "next_state")
TASK_COLUMN = "taskIndex"
STATE_FEATURES = (
    "timeleft", "bgtleft", "avg_bid_all", "avg_bid_last_3", "avg_leastWinningCost_all",
    "avg_pValue_all", "avg_conversionAction_all", "avg_xi_all", "avg_leastWinningCost_last_3",
    "avg_pValue_last_3", "avg_conversionAction_last_3", "avg_xi_last_3", "pValue_agg",
    "timeStepIndex_volume_agg", "last_3_timeStepIndexs_volume", "historical_volume",
)
STATE_COLS = tuple(f"s{i}" for i in range(STATE_DIM))
assert len(STATE_FEATURES) == STATE_DIM


def _past_means(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of x over all earlier steps and over the last 3 earlier steps (0 at step 0): pandas'
    ``expanding().mean().shift(1)`` and ``rolling(3, min_periods=1).mean().shift(1)``."""
    steps = len(x)
    c = np.concatenate([np.zeros((1, *x.shape[1:])), np.cumsum(x, 0)])  # c[t] = sum of x[:t]
    t = np.arange(steps).reshape(-1, *([1] * (x.ndim - 1)))
    all_ = c[:-1] / np.maximum(t, 1)
    lo = np.maximum(t - 3, 0)
    last3 = (c[:-1] - np.take_along_axis(c, np.broadcast_to(lo, x.shape), 0)) / np.maximum(t - lo, 1)
    return all_, last3


def state_features(log: DayLog, budget: np.ndarray, upto: int | None = None) -> np.ndarray:
    """(t, N, 16) AuctionNet states of steps 0..upto (all steps if None), from the day's log.

    A state at step t uses the steps before t and, of step t itself, what is known before bidding:
    the mean pValue and the number of impressions.
    """
    steps = log.rows.shape[0] if upto is None else upto + 1
    rows = log.rows[:steps].astype(np.float64)
    per = rows[:, None]
    n = log.cost.shape[1]
    bid, pv = log.bid_sum[:steps] / per, log.pvalue_sum[:steps] / per
    conv, xi = log.conversions[:steps] / per, log.wins[:steps] / per
    lwc = np.broadcast_to((log.lwc_sum[:steps] / rows)[:, None], (steps, n))
    total = log.rows.shape[0]
    t = np.arange(steps)[:, None]
    out = np.empty((steps, n, STATE_DIM))
    out[..., 0] = (total - t) / total
    out[..., 1] = log.remaining[:steps] / np.maximum(budget, 1e-12)[None, :]
    (b_all, b_3), (l_all, l_3), (p_all, p_3), (c_all, c_3), (x_all, x_3) = (
        _past_means(a) for a in (bid, lwc, pv, conv, xi))
    out[..., 2], out[..., 3], out[..., 4], out[..., 5] = b_all, b_3, l_all, p_all
    out[..., 6], out[..., 7], out[..., 8], out[..., 9] = c_all, x_all, l_3, p_3
    out[..., 10], out[..., 11], out[..., 12] = c_3, x_3, pv
    vol_all, vol_3 = _past_means(rows)
    out[..., 13] = rows[:, None]
    out[..., 14] = (vol_3 * np.minimum(np.arange(steps), 3))[:, None]
    out[..., 15] = (vol_all * np.arange(steps))[:, None]
    return out


def format_state(x: np.ndarray) -> list[str]:
    """Rows of (R, 16) floats as AuctionNet's text tuples ``(0.97, 1.0, ...)``."""
    return ["(" + ", ".join(repr(float(v)) for v in row) + ")" for row in x]


def trajectory_frame(result: DayResult, idx: Sequence[int] | None = None) -> pd.DataFrame:
    """The day's trajectories in the AuctionNet format (+ ``taskIndex``), rows up to each
    advertiser's first ``done``."""
    log, day, adv, cfg = result.log, result.day, result.adv, result.cfg
    idx = np.arange(adv.n) if idx is None else np.asarray(idx)
    steps = cfg.steps
    states = state_features(log, day.budget)  # (T, N, 16)
    done = (log.remaining < cfg.min_remaining_budget) | (np.arange(steps)[:, None] == steps - 1)
    total_cost, total_conv = log.cost.sum(0), log.conversions.sum(0)
    parts = []
    for j in idx:
        last = int(np.argmax(done[:, j]))  # first done step
        t = np.arange(last + 1)
        text = format_state(states[t, j])
        nxt = text[1:] + [None]
        parts.append(pd.DataFrame({
            "deliveryPeriodIndex": day.index, "advertiserNumber": int(j),
            "advertiserCategoryIndex": int(adv.category[j]), "budget": day.budget[j],
            "CPAConstraint": day.cpa[j], "realAllCost": total_cost[j],
            "realAllConversion": total_conv[j], "timeStepIndex": t, "state": text,
            "action": log.alpha[t, j], "reward": log.conversions[t, j],
            "reward_continuous": log.reward_continuous[t, j], "done": done[t, j].astype(int),
            "next_state": nxt, TASK_COLUMN: int(adv.task[j]),
        }))
    return pd.concat(parts, ignore_index=True)


def write_trajectories_csv(frame: pd.DataFrame, path: Path | str) -> None:
    """The AuctionNet file as pandas writes it (empty ``next_state`` on done rows)."""
    frame.to_csv(path, index=False)


def to_dataset(frame: pd.DataFrame, states: np.ndarray, out_dir: Path | str, *, source: str,
               seed: int | None, meta: dict | None = None) -> None:
    """Validated rows (one per step, ``states`` (R, 16)) -> the workload's dataset: split ``train``
    (every period but the last two), ``val`` (the second last: the held-out day of Algorithm 1) and
    ``test`` (the last: the paper's test day, offline).

    Adds per trajectory its score (AuctionNet) and the return-to-go ``rtg`` = penalty x sum of the
    rewards from the step on (y(tau) of Eq. 2 / 11).
    """
    df = pd.DataFrame({
        "period": frame["deliveryPeriodIndex"].to_numpy(np.int64),
        "advertiser": frame["advertiserNumber"].to_numpy(np.int64),
        "category": frame["advertiserCategoryIndex"].to_numpy(np.int64),
        "task": frame[TASK_COLUMN].to_numpy(np.int64),
        "budget": frame["budget"].to_numpy(np.float64),
        "cpa": frame["CPAConstraint"].to_numpy(np.float64),
        "step": frame["timeStepIndex"].to_numpy(np.int64),
        "action": frame["action"].to_numpy(np.float32),
        "reward": frame["reward"].to_numpy(np.float32),
        "reward_continuous": frame["reward_continuous"].to_numpy(np.float32),
        "done": frame["done"].to_numpy(np.int8),
    })
    for i, c in enumerate(STATE_COLS):
        df[c] = states[:, i].astype(np.float32)
    df = df.sort_values(["period", "advertiser", "step"], kind="stable").reset_index(drop=True)
    key = ["period", "advertiser"]
    traj = (frame.groupby(["deliveryPeriodIndex", "advertiserNumber"])
            .agg(conv=("realAllConversion", "first"), cost=("realAllCost", "first"),
                 cpa=("CPAConstraint", "first")).reset_index())
    tab = score_table(traj["conv"].to_numpy(), traj["cost"].to_numpy(), traj["conv"].to_numpy(),
                      traj["cpa"].to_numpy())
    traj = pd.DataFrame({"period": traj["deliveryPeriodIndex"].to_numpy(np.int64),
                         "advertiser": traj["advertiserNumber"].to_numpy(np.int64),
                         "penalty": tab["penalty"].astype(np.float32)})
    df = df.merge(traj, on=key, how="left", validate="many_to_one")
    rev = df.iloc[::-1].groupby(key, sort=False)["reward"].cumsum().iloc[::-1]
    df["rtg"] = (rev.to_numpy() * df["penalty"].to_numpy()).astype(np.float32)
    periods = np.sort(df["period"].unique())
    if len(periods) < 3:
        raise DataError(f"{source}: {len(periods)} delivery period(s) ({periods.tolist()}); VAMO needs at least "
                        "three: training days, the held-out validation day and the test day (the last two)")
    train_df = df[df["period"] < periods[-2]].reset_index(drop=True)
    val_df = df[df["period"] == periods[-2]].reset_index(drop=True)
    test_df = df[df["period"] == periods[-1]].reset_index(drop=True)
    starts = train_df.loc[train_df["step"] == 0, "task"]
    if (meta or {}).get("task_mapping", {}).get("mode") == "single":
        counts = {"single task": len(starts)}
    else:
        counts = {TASKS[k]: int((starts == k).sum()) for k in range(len(TASKS))}
    scores = df.loc[df["step"] == 0, "rtg"]
    step, left = df["step"].to_numpy(), df["s0"].to_numpy(np.float64)  # s0 = timeleft = (T - t) / T
    known = (step > 0) & (left < 1)
    per_day = int(round(float(np.median(step[known] / (1 - left[known]))))) if known.any() else int(step.max()) + 1
    info = {"tasks": list(TASKS), "state_features": list(STATE_FEATURES), "train_trajectories": counts,
            "periods": periods.tolist(), "val_period": int(periods[-2]), "test_period": int(periods[-1]),
            "mean_score": float(scores.mean()), "steps_per_day": per_day,
            "max_steps": max(per_day, int(df["step"].max()) + 1),
            "state_mean": train_df[list(STATE_COLS)].mean().tolist(),
            "state_std": train_df[list(STATE_COLS)].std().fillna(1.0).tolist(), **(meta or {})}
    write_dataset(out_dir, {"train": train_df, "val": val_df, "test": test_df}, source=source, seed=seed,
                  meta=info)
