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
from adray.data import DataError, read_dataset
from workloads.drlput import columns as C
from workloads.drlput.config import DRLPUTConfig

Block = dict[str, np.ndarray]


def split_files(cfg: DRLPUTConfig, data_dir: Path, split: str) -> rl.Files:
    """``(filesystem, [Parquet files])`` of one split, after ``data.check_dataset``."""
    from workloads.drlput.data import check_dataset

    check_dataset(cfg, data_dir)
    return read_dataset(data_dir).split_files(split)


def _first_bad(ok: np.ndarray, values: np.ndarray, name: str, expected: str) -> None:
    bad = np.flatnonzero(~ok)
    if len(bad):
        raise DataError(f"field {name!r} row {bad[0]}: value {values[bad[0]].item()!r} {expected} "
                        f"({len(bad)} bad row(s))")


def check_block(num_actions: int) -> Callable[[Block], Block]:
    """A block check with ``data.read_logs``'s rules (numbers finite, actions in A, propensities in
    (0, 1], categorical codes in range); returns the block unchanged."""
    def check(block: Block) -> Block:
        for name, v in block.items():
            if name in (C.REQUEST_ID, C.POLICY_ID, C.MODEL_VERSIONS) or v.dtype.kind not in "biuf":
                continue
            _first_bad(np.isfinite(v.astype(np.float64)), v, name, "is not a finite number")
        if C.ACTION in block:
            a = block[C.ACTION]
            _first_bad((a >= 0) & (a < num_actions) & (a == np.floor(a)), a, C.ACTION,
                       f"is not an action of A (expected an integer in [0, {num_actions}))")
        if C.PROPENSITY in block:
            p = block[C.PROPENSITY].astype(np.float64)
            _first_bad((p > 0) & (p <= 1), p, C.PROPENSITY, "is not a propensity (expected 0 < p <= 1)")
        for name, card in C.CAT_FEATURES.items():
            if name in block:
                v = block[name]
                _first_bad((v >= 0) & (v < card), v, name, f"outside [0, {card})")
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
