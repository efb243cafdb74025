"""The logs of a DRL-PUT dataset read block by block (issue 21): what training and evaluation stream.

``data.read_logs`` reads and checks a whole log file; the trainer instead streams the ``train``
split's Parquet row groups (``adray.rl.StreamSampler``, :func:`split_files`) and checks each block
as it arrives with :func:`check_block` -- the same checks and messages as ``read_logs`` (an action
outside A, a propensity outside (0, 1], a categorical code out of range, a non-finite number),
prefixed by the sampler with the file and row group. The held-out splits are read up to
``held_out_rows`` rows (:func:`held_out`) and the DR baseline q̂ is summed as the train split
streams (``evaluate.reward_per_action``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from adray import rl
from adray.data import read_dataset
from workloads.drlput import columns as C
from workloads.drlput.config import DRLPUTConfig

Block = dict[str, np.ndarray]


def split_files(cfg: DRLPUTConfig, data_dir: Path, split: str) -> rl.Files:
    """``(filesystem, [Parquet files])`` of one split, after ``data.check_dataset``."""
    from workloads.drlput.data import check_dataset

    check_dataset(cfg, data_dir)
    return read_dataset(data_dir).split_files(split)


def check_block(num_actions: int) -> Callable[[Block], Block]:
    """A block check: ``data.check_logs`` on the block's rows (numbers finite, actions in A,
    propensities in (0, 1], categorical codes in range; rows counted within the block, which the
    sampler names by file and row group); returns the block unchanged."""
    from workloads.drlput.data import check_logs

    def check(block: Block) -> Block:
        n = len(next(iter(block.values()))) if block else 0
        check_logs(pd.DataFrame(block, copy=False), f"a block of {n} rows", num_actions, tuple(block))
        return block

    return check


def scan(cfg: DRLPUTConfig, data_dir: Path, split: str, columns: Sequence[str]) -> Iterator[Block]:
    """The checked blocks of one split, in file order (callers reduce them as they come)."""
    return iter(rl.scan(split_files(cfg, data_dir, split), columns, check_block(cfg.action.num_actions)))


def held_out(cfg: DRLPUTConfig, data_dir: Path, split: str, columns: Sequence[str] = C.LOG_COLUMNS) -> pd.DataFrame:
    """The checked rows of a held-out split (``val``, ``test``), streamed: its first
    ``cfg.held_out_rows`` rows in file order (all of them when it has no more), so the estimates
    hold a bounded number of rows whatever the dataset's size."""
    parts, n = [], 0
    for b in scan(cfg, data_dir, split, columns):
        parts.append(pd.DataFrame({c: b[c][: cfg.held_out_rows - n] for c in columns}))
        n += len(parts[-1])
        if n >= cfg.held_out_rows:
            break
    return pd.concat(parts, ignore_index=True)
