"""Long rows (one per user and step, ordered by user then time) -> one row per user with list
columns: the storage layout of MTORL datasets (see data.py), shared by the importers and the
journey simulator."""

from __future__ import annotations

import numpy as np
import pandas as pd


def sequences_frame(
    user: np.ndarray, action: np.ndarray, gain: np.ndarray, gain_cls: np.ndarray,
    cost: np.ndarray, q: np.ndarray, f: np.ndarray,
) -> pd.DataFrame:
    """Rows already ordered by user then time -> one row per user with list columns."""
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    bounds = list(starts[1:])
    def parts(a: np.ndarray) -> list[np.ndarray]:
        return np.split(a, bounds)
    return pd.DataFrame({
        "user_id": user[starts].astype(np.int64),
        "length": np.diff(np.r_[starts, len(user)]).astype(np.int64),
        "action": [p.astype(np.int64) for p in parts(action)],
        "gain": [p.astype(np.float64) for p in parts(gain)],
        "gain_cls": [p.astype(np.int64) for p in parts(gain_cls)],
        "cost": [p.astype(np.float64) for p in parts(cost)],
        "q": [p.astype(np.float64).ravel() for p in parts(q)],
        "f": [p[0].astype(np.float64) for p in parts(f)],
    })
