"""The VAMO dataset: simulated logs (``adray data make vamo``) or imported AuctionNet files, and the
trajectory arrays the trainer reads.

Days of a seed: day 0 is the reference day whose market sample fits the online-LP bidders; days
1..train_days are the training logs, day train_days + 1 the validation day (Algorithm 1, line 2),
day train_days + 2 the test day (offline test split); the evaluation days in which the models bid
come after (evaluate.eval_days), so no evaluated day is ever in the logs. Days are
simulated as Ray tasks when Ray is running (one CPU each), in order otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adray.data import DataError, read_dataset
from workloads.vamo.bidders import FixedAlpha, LpTable, logging_market
from workloads.vamo.config import STATE_DIM, TASKS, SimConfig, VamoConfig
from workloads.vamo.importer import parse_states
from workloads.vamo.sim import LP_STRIDE, simulate_day
from workloads.vamo.trajectory import STATE_COLS, period_rows, trajectory_frame, write_periods

REFERENCE_DAY = 0


DAY_TASK = {"num_cpus": 1, "scheduling_strategy": "DEFAULT"}
"""A simulated day as a Ray task: one CPU anywhere in the cluster. ``DEFAULT`` keeps it out of the
caller's placement group: inside a Tune trial (a 0.25-CPU bundle that captures its child tasks) a
1-CPU task is refused (``ValueError: Cannot schedule log_day with the placement group``: a trial
that generated its data)."""


def map_days(fn: Callable[..., Any], calls: Sequence[tuple], parallel: bool = True) -> list[Any]:
    """``[fn(*c) for c in calls]``, as Ray tasks (:data:`DAY_TASK`) when Ray is initialised."""
    import ray

    if parallel and ray.is_initialized() and len(calls) > 1:
        remote = ray.remote(**DAY_TASK)(fn)
        return ray.get([remote.remote(*c) for c in calls])
    return [fn(*c) for c in calls]


def lp_table(sim: SimConfig, seed: int) -> LpTable:
    """The online-LP bidders' table, from the reference day bid at alpha = CPA."""
    n = sim.n_advertisers
    ref = simulate_day(sim, seed, REFERENCE_DAY, [(np.arange(n), FixedAlpha())], market_sample=True)
    assert ref.market is not None
    return LpTable(ref.market, sim.steps, LP_STRIDE)


def log_day(sim: SimConfig, seed: int, day: int, explore: float, lp: LpTable | None) -> pd.DataFrame:
    """One day of the logging policy, as AuctionNet trajectory rows."""
    market = logging_market(sim.n_advertisers, seed, day, explore, lp)
    return trajectory_frame(simulate_day(sim, seed, day, market))


def iter_days(fn: Callable[..., Any], calls: Sequence[tuple], parallel: bool = True) -> Iterator[Any]:
    """``fn(*c) for c in calls``, in order: as Ray tasks (:data:`DAY_TASK`, as many in flight as the
    cluster has CPUs) when Ray is initialised, so that only the days in flight are held at once."""
    import ray

    if not (parallel and ray.is_initialized() and len(calls) > 1):
        yield from (fn(*c) for c in calls)
        return
    remote = ray.remote(**DAY_TASK)(fn)
    ahead = max(1, int(ray.cluster_resources().get("CPU", 1)))
    refs = [remote.remote(*c) for c in calls[:ahead]]
    for i in range(len(calls)):
        out = ray.get(refs[i])
        refs[i] = None  # its object can go
        if i + ahead < len(calls):
            refs.append(remote.remote(*calls[i + ahead]))
        yield out


def simulated_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One simulated day's trajectory rows -> the dataset's rows, through the importer's text path
    (the states written as AuctionNet's text tuples and parsed back)."""
    states = parse_states(frame["state"].tolist(), Path("<simulator>"), "state", False,
                          np.zeros(len(frame), bool))
    return period_rows(frame, states)


def make_data(cfg: VamoConfig, out_dir: Path | str) -> None:
    """Simulate the reference day, ``train_days`` training days, the validation and the test day;
    write them day by day (``trajectory.write_periods``: memory of one day, not the dataset)."""
    lp = lp_table(cfg.sim, cfg.seed)
    days = list(range(REFERENCE_DAY + 1, REFERENCE_DAY + cfg.train_days + 3))
    frames = iter_days(log_day, [(cfg.sim, cfg.seed, d, cfg.explore, lp) for d in days])
    write_periods(out_dir, days, (simulated_rows(f) for f in frames), source="vamo-simulator", seed=cfg.seed,
                  meta={"origin": "simulator", "sim": cfg.sim.to_dict(), "explore": cfg.explore})


@dataclasses.dataclass
class Trajectories:
    """A split as padded trajectories, (M, T) unless noted."""

    states: np.ndarray  # (M, T, 16) float32, raw
    action: np.ndarray  # float32 alpha / CPA constraint
    rtg: np.ndarray  # float32 return-to-go (penalised)
    valid: np.ndarray  # bool
    task: np.ndarray  # (M,) int64
    cpa: np.ndarray  # (M,) float64
    budget: np.ndarray  # (M,) float64
    length: np.ndarray  # (M,) int64

    def arrays(self) -> dict[str, np.ndarray]:
        return dataclasses.asdict(self)


def trajectories(df: pd.DataFrame, steps: int | None = None) -> Trajectories:
    """Rows (one per step) -> padded trajectories, one per (period, advertiser)."""
    key = df["period"].to_numpy() * 1_000_000 + df["advertiser"].to_numpy()
    uniq, inv = np.unique(key, return_inverse=True)
    step = df["step"].to_numpy()
    t_max = int(step.max()) + 1 if steps is None else steps
    m = len(uniq)
    out = Trajectories(
        states=np.zeros((m, t_max, STATE_DIM), np.float32), action=np.zeros((m, t_max), np.float32),
        rtg=np.zeros((m, t_max), np.float32), valid=np.zeros((m, t_max), bool),
        task=np.zeros(m, np.int64), cpa=np.zeros(m), budget=np.zeros(m), length=np.zeros(m, np.int64))
    out.states[inv, step] = df[list(STATE_COLS)].to_numpy(np.float32)
    cpa = df["cpa"].to_numpy()
    out.action[inv, step] = df["action"].to_numpy(np.float32) / cpa
    out.rtg[inv, step] = df["rtg"].to_numpy(np.float32)
    out.valid[inv, step] = True
    out.task[inv] = df["task"].to_numpy()
    out.cpa[inv], out.budget[inv] = cpa, df["budget"].to_numpy()
    out.length = out.valid.sum(1)
    return out


def check_tasks(data_dir: Path | str) -> None:
    """Raises DataError when the dataset is single-task (imported without a task column or mapping):
    every VAMO method (STL included: one model per task) trains the tasks of ``TASKS``."""
    ds = read_dataset(data_dir, check_files=False)
    tasks = ds.meta.get("task_mapping") or {}
    if tasks.get("mode") == "single":
        raise DataError(
            f"{data_dir}: a single-task dataset (manifest task_mapping: single; {ds.manifest.get('source')}): every "
            f"VAMO method, stl included, trains the {len(TASKS)} tasks {', '.join(TASKS)}, and these trajectories "
            "have one objective and no task. Re-import the files with a task mapping: `--option task_column=COLUMN` "
            "(a column of task indexes or names) or `--option task_column=advertiserCategoryIndex --option "
            "task_map=0:gmv,1:dir_gmv,...`")


def load_split(data_dir: Path | str, split: str) -> dict[str, np.ndarray]:
    """A split as trajectory arrays (TorchSpec.load_split).

    Raises:
        DataError: the dataset is single-task (:func:`check_tasks`).
    """
    check_tasks(data_dir)
    ds = read_dataset(data_dir)
    return trajectories(ds.read(split), ds.meta.get("max_steps")).arrays()
