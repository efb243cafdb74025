"""VAMO's training rows streamed (``ingest=stream``): windows made from whole trajectories in Ray
Data's read tasks, before Ray Train splits the rows among the workers.

A training row is the window of ``context`` steps (plus ``history`` states) ending at one (trajectory,
step) (:func:`train.load_windows`): it needs its trajectory's earlier steps, so the stored rows (one
per step) cannot stream as they are. The way taken, and why:

* **A read task reads whole trajectories** (:func:`unit_rows`). A dataset's step rows are stored
  sorted by (period, advertiser, step), every trajectory's rows together and ending with its
  ``done`` row (trajectory.py writes them so; the importer refuses a trajectory that does not end
  so). The read's unit is one Parquet row group: its task takes the trajectories that *start* in
  the row group (a row with step 0), skips the rows of one begun in the row group before, and reads
  on into the next row group(s) or file to finish its last one (up to its ``done`` row). Every
  trajectory is read exactly once, whole, wherever the writer cut files and row groups, and no
  second copy of the data is needed: this works on every VAMO dataset already written (format 2).
* **The same task makes the windows** (``batches.Sampler`` / ``batches.window_arrays``, the in-memory
  path's code), in blocks of :data:`WINDOW_BLOCK` windows: the stream's rows are the windows, so Ray
  Train's equal split gives every worker the same number of windows and the epoch has the in-memory
  path's steps (``TorchSpec.stream_rows``: windows = step rows of the run's tasks). The cost: a
  window is (context + history) x 16 floats, about 20 times a step row's bytes, and it goes
  through the object store (bounded by ``adray.ingest.OBJECT_STORE_BYTES_PER_WORKER``).
* Not chosen: (a) one row per trajectory through Ray Data and the windows made in the worker
  (tried first: 20 times less object-store traffic, but Ray Train then splits trajectories, not
  windows, and trajectories differ in length: on 2 workers the smoke data's epoch had to stop at
  half the in-memory path's steps for every worker to have its batches); (b) a second,
  per-trajectory copy of every split written by the importer and the generator: twice the storage
  and a re-import of existing datasets; (c) a Ray Data ``groupby``: a shuffle of the whole split.

Shuffle: the units in a seeded order (the same every epoch), each unit's windows in a seeded random
order (seed, unit), then the worker's local shuffle buffer (``ingest_shuffle_buffer``; 0 = 8
batches, reseeded every epoch): windows are mixed within a row group's trajectories (~65,536 steps,
about 27 days of the paper's market) and across neighbouring units, not globally. Without shuffling,
the windows come in the in-memory path's order (trajectories by (period, advertiser), steps in
order): one worker then trains the same model on both paths (tests/integration/
test_vamo_streaming.py).

Bounded samples: validation and test (:func:`stream_eval`) are the windows of the first whole
trajectories within ``ingest_eval_max_rows`` step rows (0: all); the network's meta
(:func:`train_sample`) is computed from at most :data:`META_SAMPLE_ROWS` training rows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from adray.data import DataError, read_dataset
from adray.data.dataset import Dataset
from workloads.vamo.batches import BATCH_KEYS, Sampler, window_arrays
from workloads.vamo.config import TASKS, VamoConfig
from workloads.vamo.data import check_tasks, load_split, trajectories
from workloads.vamo.trajectory import STATE_COLS

READ_COLUMNS = ["period", "advertiser", "task", "budget", "cpa", "step", "action", "rtg", "done", *STATE_COLS]
"""The stored columns the trajectories are made of (``data.trajectories``)."""
META_SAMPLE_ROWS = 500_000
"""Training step rows the network's meta is computed from at most (whole trajectories of row groups
drawn at random, seeded); a training split of at most this many rows is read whole, as before."""
WINDOW_BLOCK = 4096
"""Windows a read task yields at once (one Ray Data block: ~10 MB at context 16 + history 16)."""
READ_TASK_CPUS = 0.25
"""CPUs a read task reserves (as ``adray.ingest.READ_TASK_CPUS``)."""

Unit = tuple[str, int]  # (file name relative to the dataset, row group)


def units(ds: Dataset, split: str) -> list[Unit]:
    """The row groups of ``split``'s files, in stored order (from the files' footers)."""
    return [(f["name"], g) for f in ds.file_stats(split) for g in range(f["row_groups"])]


def _row_group(ds: Dataset, unit: Unit, columns: list[str]) -> pd.DataFrame:
    name, group = unit
    try:
        pf = pq.ParquetFile(ds.storage.fs.open_input_file(ds.storage.path(name)))
        return pf.read_row_group(group, columns=columns).to_pandas()
    except (OSError, pa.ArrowException, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"{ds.storage.display(name)}: row group {group} cannot be read ({reason}); {ds.display}") from None


def unit_rows(ds: Dataset, all_units: list[Unit], i: int, columns: list[str] = READ_COLUMNS) -> pd.DataFrame:
    """The step rows of the trajectories that start in unit ``i`` (rows sorted by trajectory and step,
    each trajectory ending with its ``done`` row): the unit's rows from its first step 0 on, and the
    rows of the following units up to the end of its last trajectory.

    Raises:
        DataError: the split ends inside a trajectory (no ``done`` row after its last step).
    """
    rows = _row_group(ds, all_units[i], columns)
    starts = np.flatnonzero(rows["step"].to_numpy() == 0)
    if not len(starts):
        return rows.iloc[:0]
    rows = rows.iloc[starts[0]:]
    parts, j, whole = [rows], i + 1, rows["done"].to_numpy()[-1] == 1
    while not whole:
        if j == len(all_units):
            last = rows.iloc[-1]
            raise DataError(f"{ds.display}: the trajectory of period {int(last['period'])}, advertiser "
                            f"{int(last['advertiser'])} has no done row after its step {int(last['step'])} (the "
                            "split ends inside it); the dataset is cut short: write it again")
        more = _row_group(ds, all_units[j], columns)
        ends = np.flatnonzero(more["done"].to_numpy() == 1)
        whole = len(ends) > 0
        parts.append(more.iloc[: ends[0] + 1] if whole else more)
        j += 1
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else rows


def trajectory_arrays(rows: pd.DataFrame, steps: int, tasks: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """Step rows of whole trajectories -> one row per trajectory (``data.Trajectories``, padded to
    ``steps``), in their stored order; ``tasks``: only those tasks' trajectories."""
    arrays = trajectories(rows, steps).arrays()
    if tasks is not None:
        keep = np.isin(arrays["task"], tasks)
        arrays = {k: v[keep] for k, v in arrays.items()}
    return arrays


def _read_units(batch: dict[str, np.ndarray], *, ds: Dataset, all_units: list[Unit], steps: int, context: int,
                history: int, rtg_scale: float, tasks: tuple[int, ...] | None, seed: int | None,
                norm: str = "none") -> Iterator[dict[str, np.ndarray]]:
    """Ray Data UDF: unit indexes -> the windows of the trajectories that start there, in blocks of
    at most :data:`WINDOW_BLOCK` (``seed``: in a random order seeded by (seed, unit); None: in order)."""
    for i in batch["unit"]:
        rows = unit_rows(ds, all_units, int(i))
        if not len(rows):
            continue
        arrays = trajectory_arrays(rows, steps, tasks)
        if not len(arrays["task"]):
            continue
        m, t = Sampler(arrays, len(TASKS)).all_positions()
        if seed is not None:
            order = np.random.default_rng([seed, int(i)]).permutation(len(m))
            m, t = m[order], t[order]
        for a in range(0, len(m), WINDOW_BLOCK):
            yield window_arrays(arrays, m[a:a + WINDOW_BLOCK], t[a:a + WINDOW_BLOCK], context, history, rtg_scale, norm)


def read_windows(data: Any, split: str, cfg: VamoConfig, meta: dict[str, Any], *, seed: int, shuffle: bool,
                 readers: int = 1, tasks: tuple[int, ...] | None = None) -> Any:
    """TorchSpec.stream_read: a lazy ``ray.data.Dataset`` of the windows of ``split``'s trajectories
    (of ``tasks`` only: STL), the columns of ``batches.window_arrays``, made by at most ``readers``
    concurrent read tasks; with ``shuffle``, its row groups and each one's windows in seeded orders."""
    import ray.data

    ds = read_dataset(data, check_files=False)
    all_units = units(ds, split)
    order = np.arange(len(all_units))
    if shuffle:
        np.random.default_rng([seed, 0x7A0]).shuffle(order)
    fn = functools.partial(_read_units, ds=ds, all_units=all_units, steps=int(meta["max_steps"]),
                           context=cfg.context, history=cfg.history, rtg_scale=float(meta["rtg_scale"]),
                           tasks=tasks, seed=seed if shuffle else None, norm=cfg.rtg_norm)
    return ray.data.from_items([{"unit": int(i)} for i in order], override_num_blocks=max(1, len(order))).map_batches(
        fn, batch_size=1, batch_format="numpy", num_cpus=READ_TASK_CPUS,
        compute=ray.data.TaskPoolStrategy(size=max(1, readers)))


def stream_convert(batch: dict[str, np.ndarray], cfg: VamoConfig, meta: dict[str, Any], where: str,
                   ) -> dict[str, np.ndarray]:
    """TorchSpec.stream_convert: the read's windows are the training rows already (copied where Ray
    Data hands out read-only views: torch would share them)."""
    return {k: np.require(batch[k], requirements=["C", "W"]) for k in BATCH_KEYS}


def stream_columns(meta: dict[str, Any], cfg: VamoConfig) -> list[str]:
    """TorchSpec.stream_columns: the stored columns the trajectories are read from."""
    return list(READ_COLUMNS)


def stream_rows(data: Any, cfg: VamoConfig, meta: dict[str, Any], tasks: tuple[int, ...] | None = None) -> int:
    """TorchSpec.stream_rows: the training windows of ``tasks``, one per step row of their
    trajectories: from the manifest's ``trajectory_lengths`` or, for a dataset written before it was
    recorded, a scan of the task column."""
    ds = read_dataset(data, check_files=False)
    keep = list(range(len(TASKS)) if tasks is None else tasks)
    recorded = ds.meta.get("trajectory_lengths", {}).get("train")
    if recorded is not None:
        return int(sum(length * count for k, length, count in recorded if k in keep))
    return sum(int(np.isin(rb.column(0).to_numpy(), keep).sum()) for rb in ds.iter_batches("train", columns=["task"]))


def _first_trajectories(ds: Dataset, split: str, max_rows: int) -> pd.DataFrame:
    """The first whole trajectories of ``split`` within ``max_rows`` step rows (0: all), read batch
    by batch."""
    parts, n = [], 0
    for rb in ds.iter_batches(split, columns=READ_COLUMNS):
        parts.append(rb.to_pandas())
        n += rb.num_rows
        if max_rows and n > max_rows:
            break
    if not parts:
        raise DataError(f"{ds.display}: split {split!r} is empty; expected at least one row")
    rows = pd.concat(parts, ignore_index=True)
    if max_rows:
        rows = rows.iloc[:max_rows]
    ends = np.flatnonzero(rows["done"].to_numpy() == 1)
    if not len(ends):
        raise DataError(f"{ds.display}: split {split!r}: no whole trajectory within its first {max_rows} rows "
                        "(ingest_eval_max_rows); raise it")
    return rows.iloc[: ends[-1] + 1]


def stream_eval(data: Any, split: str, cfg: VamoConfig, meta: dict[str, Any], max_rows: int,
                tasks: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """TorchSpec.stream_eval: the windows of the first whole trajectories of ``split`` within
    ``max_rows`` step rows (0: all; of ``tasks`` only: STL), in the order ``load_windows`` gives
    them; the same arrays when the split has at most ``max_rows`` rows."""
    ds = read_dataset(data, check_files=False)
    rows = _first_trajectories(ds, split, max_rows)
    arrays = trajectories(rows, int(meta["max_steps"])).arrays()
    m, t = Sampler(arrays, len(TASKS), tasks).all_positions()
    return window_arrays(arrays, m, t, cfg.context, cfg.history, float(meta["rtg_scale"]), cfg.rtg_norm)


def train_sample(data_dir: Path | str, seed: int) -> dict[str, np.ndarray]:
    """The training trajectories the network's meta is computed from: the whole split up to
    :data:`META_SAMPLE_ROWS` rows (as before), else the whole trajectories of row groups drawn in
    a seeded order until that many rows.

    Raises:
        DataError: the dataset is single-task (``data.check_tasks``).
    """
    check_tasks(data_dir)
    ds = read_dataset(data_dir)
    if int(ds.manifest["splits"]["train"]["rows"]) <= META_SAMPLE_ROWS:
        return load_split(data_dir, "train")
    all_units = units(ds, "train")
    parts, n = [], 0
    for i in np.random.default_rng([seed, 0x3E7A]).permutation(len(all_units)):
        rows = unit_rows(ds, all_units, int(i))
        parts.append(rows)
        n += len(rows)
        if n >= META_SAMPLE_ROWS:
            break
    return trajectories(pd.concat(parts, ignore_index=True), ds.meta.get("max_steps")).arrays()
