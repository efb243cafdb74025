"""AuctionNet trajectories: the 16 state features, the writer of the trajectory format, and the
workload's dataset written from parsed trajectories a period at a time (:func:`write_periods`).

The trajectory format (AuctionNet's ``rl_data_generator``): one row per (delivery period,
advertiser, step) with the columns :data:`COLUMNS`; ``state`` and ``next_state`` are text tuples of
the 16 floats of :data:`STATE_FEATURES`; ``action`` = total bid / total pValue of the step (= alpha);
``reward`` = conversions on exposed impressions of the step; ``reward_continuous`` = their pValue
sum; ``done`` = 1 at the last step or once the budget is spent (then ``next_state`` is empty).
``realAllCost`` / ``realAllConversion`` are the advertiser's totals of the period. Our writer adds
``taskIndex`` (the advertiser's task); files without it are one task unless the import is given a
task mapping (importer.py): tasks are never invented.

The dataset's rows (one per step, :func:`period_rows`) are stored sorted by (period, advertiser,
step), each trajectory's rows together and ending with its ``done`` row: what the streaming read
(stream.py) relies on to find whole trajectories in any row group.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adray.data import DataError, DatasetWriter
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


def period_rows(frame: pd.DataFrame, states: np.ndarray) -> pd.DataFrame:
    """Validated rows of whole trajectories (in the importer's columns, ``states`` (R, 16)) -> the
    dataset's rows, sorted by (period, advertiser, step), with each trajectory's score penalty
    (AuctionNet) and the return-to-go ``rtg`` = penalty x sum of the rewards from the step on
    (y(tau) of Eq. 2 / 11). Everything here is per trajectory: a period at a time gives the rows
    the whole data would."""
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
    return df


class _Summary:
    """What the manifest records about the rows, kept as they are written (bounded: a few numbers
    per period, 4 bytes per trajectory for the mean score, one count per distinct day-length reading).

    ``state_mean`` / ``state_std`` of the training rows: Chan's parallel update of the mean and the
    squared deviations in float64. ``state_std`` = sqrt of the variance rounded to float32, as pandas
    took it from the whole frame before (the same values). ``state_mean`` is the float64 mean rounded
    to float32, where pandas summed the float32 column in float32: it may differ from the
    whole-frame value in the last float32 digit (measured: 6 of 16 features, at most 1.1e-7
    relative, on the smoke data), so a model trained on a re-made dataset may differ in the last
    digits too.
    """

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, np.zeros(STATE_DIM), np.zeros(STATE_DIM)
        self.starts: list[np.ndarray] = []  # tasks of the training trajectories, per block
        self.scores: list[np.ndarray] = []  # rtg at step 0 of every trajectory, in written order
        self.day: dict[float, int] = {}  # step / (1 - timeleft) -> rows (the day length, read per row)
        self.max_step = 0
        self.lengths: dict[str, dict[tuple[int, int], int]] = {}  # split -> (task, length) -> trajectories

    def add(self, split: str, rows: pd.DataFrame) -> None:
        step, first = rows["step"].to_numpy(), rows["step"].to_numpy() == 0
        self.scores.append(rows["rtg"].to_numpy()[first])
        left = rows["s0"].to_numpy(np.float64)  # s0 = timeleft = (T - t) / T
        known = (step > 0) & (left < 1)
        for v, c in zip(*np.unique(step[known] / (1 - left[known]), return_counts=True)):
            self.day[float(v)] = self.day.get(float(v), 0) + int(c)
        self.max_step = max(self.max_step, int(step.max()))
        ends = rows["done"].to_numpy() == 1  # a trajectory's last row (checked at import)
        per = self.lengths.setdefault(split, {})
        pairs, counts = np.unique(np.stack([rows["task"].to_numpy()[ends], step[ends] + 1], 1), axis=0,
                                  return_counts=True)
        for (k, length), c in zip(pairs.tolist(), counts.tolist()):
            per[(k, length)] = per.get((k, length), 0) + c
        if split != "train":
            return
        self.starts.append(rows["task"].to_numpy()[first])
        x = rows[list(STATE_COLS)].to_numpy(np.float64)
        nb, mb = len(x), x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * nb / n
        self.m2 = self.m2 + m2b + delta**2 * self.n * nb / n
        self.n = n

    def steps_per_day(self) -> int:
        """``round(median(step / (1 - timeleft)))`` over the rows with step > 0 (np.median's value)."""
        if not self.day:
            return self.max_step + 1
        values = np.array(sorted(self.day))
        ends = np.cumsum([self.day[v] for v in values])
        total = int(ends[-1])

        def nth(i: int) -> float:
            return float(values[int(np.searchsorted(ends, i, side="right"))])

        mid = nth(total // 2) if total % 2 else (nth(total // 2 - 1) + nth(total // 2)) / 2
        return int(round(mid))

    def meta(self, periods: list[int], single: bool) -> dict[str, Any]:
        starts = np.concatenate(self.starts)
        counts = ({"single task": len(starts)} if single
                  else {TASKS[k]: int((starts == k).sum()) for k in range(len(TASKS))})
        per_day = self.steps_per_day()
        var = (self.m2 / (self.n - 1)).astype(np.float32) if self.n > 1 else np.full(STATE_DIM, np.nan, np.float32)
        std = np.where(np.isfinite(var), np.sqrt(var), 1.0)
        return {"tasks": list(TASKS), "state_features": list(STATE_FEATURES), "train_trajectories": counts,
                "periods": periods, "val_period": periods[-2], "test_period": periods[-1],
                "mean_score": float(pd.Series(np.concatenate(self.scores)).mean()), "steps_per_day": per_day,
                "max_steps": max(per_day, self.max_step + 1),
                "state_mean": [float(v) for v in self.mean.astype(np.float32)],
                "state_std": [float(v) for v in std],
                "trajectory_lengths": {s: sorted([k, length, c] for (k, length), c in per.items())
                                       for s, per in self.lengths.items()}}


class _RowGroups:
    """Blocks of a split held back until they fill whole row groups, so that the part files are
    those of one whole-frame write (memory: less than a row group per split, plus one block)."""

    def __init__(self, writer: DatasetWriter) -> None:
        self.writer, self.pending, self.rows = writer, {}, {}

    def add(self, split: str, rows: pd.DataFrame) -> None:
        self.pending.setdefault(split, []).append(rows)
        self.rows[split] = self.rows.get(split, 0) + len(rows)
        size = self.writer.row_group_rows
        if self.rows[split] >= size:
            block = pd.concat(self.pending[split], ignore_index=True)
            cut = len(block) // size * size
            self.writer.write(split, block.iloc[:cut])
            self.pending[split], self.rows[split] = [block.iloc[cut:]], len(block) - cut

    def flush(self) -> None:
        for split, blocks in self.pending.items():
            if self.rows[split]:
                self.writer.write(split, pd.concat(blocks, ignore_index=True))


def write_periods(out_dir: Path | str, periods: Sequence[int], blocks: Iterable[pd.DataFrame], *, source: str,
                  seed: int | None, meta: dict | None = None) -> None:
    """The workload's dataset from the rows of each period (:func:`period_rows`), given in the order
    of ``periods`` (sorted), streamed through ``DatasetWriter``: split ``train`` (every period but
    the last two), ``val`` (the second last: the held-out day of Algorithm 1) and ``test`` (the
    last: the paper's test day, offline). Memory: one period's rows and less than a row group per
    split; the manifest's statistics are kept as the rows go by (:class:`_Summary`).

    Raises:
        DataError: fewer than three periods (nothing is written).
    """
    periods = [int(p) for p in periods]
    if len(periods) < 3:
        raise DataError(f"{source}: {len(periods)} delivery period(s) ({periods}); VAMO needs at least "
                        "three: training days, the held-out validation day and the test day (the last two)")
    if periods != sorted(set(periods)):
        raise ValueError(f"write_periods: periods {periods} are not sorted and distinct")
    split_of = {p: "train" for p in periods[:-2]} | {periods[-2]: "val", periods[-1]: "test"}
    summary = _Summary()
    with DatasetWriter(out_dir, source=source, seed=seed, overwrite=True) as writer:
        groups = _RowGroups(writer)
        for p, rows in zip(periods, blocks, strict=True):
            if len(rows) == 0 or (rows["period"].to_numpy() != p).any():
                raise ValueError(f"write_periods: the block of period {p} has rows of another period or none")
            summary.add(split_of[p], rows)
            groups.add(split_of[p], rows)
        groups.flush()
        single = (meta or {}).get("task_mapping", {}).get("mode") == "single"
        writer.close({**summary.meta(periods, single), **(meta or {})})
