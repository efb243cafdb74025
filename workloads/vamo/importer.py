"""``adray data import auctionnet-trajectory FILE... --out DIR``: AuctionNet trajectory files as they are.

Reads CSV (as AuctionNet's ``rl_data_generator`` writes it) or Parquet with the columns of
:data:`trajectory.COLUMNS`. Every problem is a :class:`DataError` naming the file, the line (CSV:
the file's line number, the header being line 1; Parquet: ``row``) and the field; nothing is written
unless every row of every file is valid. Accepted state spellings: ``(0.1, 0.2, ...)``,
``[0.1, 0.2, ...]``, ``[0.1 0.2 ...]`` and NumPy 2's ``(np.float64(0.1), ...)``. A file whose
states all have another length than 16 (e.g. 17 with a CPA-compliance feature) is refused as a
whole, naming the length found and the 16 features expected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adray.data import DataError
from workloads.vamo.config import STATE_DIM, TASKS
from workloads.vamo.trajectory import COLUMNS, STATE_FEATURES, TASK_COLUMN, to_dataset

_NUMERIC = ("deliveryPeriodIndex", "advertiserNumber", "advertiserCategoryIndex", "budget",
            "CPAConstraint", "realAllCost", "realAllConversion", "timeStepIndex", "action", "reward",
            "reward_continuous", "done")
_INTEGER = ("deliveryPeriodIndex", "advertiserNumber", "advertiserCategoryIndex", "timeStepIndex", "done")
_STRIP = re.compile(r"np\.float(?:16|32|64)\(|[()\[\],]")


def _where(path: Path, i: int, csv: bool) -> str:
    return f"{path}: line {i + 2}" if csv else f"{path}: row {i}"


def _read(path: Path) -> tuple[pd.DataFrame, bool]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path), False
        return pd.read_csv(path, dtype={"state": str, "next_state": str}, keep_default_na=True), True
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read as {'Parquet' if path.suffix == '.parquet' else 'CSV'} "
                        f"({exc})") from None


def _state_text(v: Any) -> str | None:
    """The state cell as text; None when empty (NaN / None / '')."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, (list, tuple, np.ndarray)):
        return " ".join(str(x) for x in v)
    s = str(v).strip()
    return s or None


def parse_states(values: Sequence[Any], path: Path, field: str, csv: bool, allow_empty: np.ndarray,
                 ) -> np.ndarray:
    """(R, 16) float64 from the text tuples of one column; NaN rows where empty and allowed."""
    texts = [_state_text(v) for v in values]
    out = np.full((len(texts), STATE_DIM), np.nan)
    for i, s in enumerate(texts):
        if s is None:
            if not allow_empty[i]:
                raise DataError(f"{_where(path, i, csv)}: field {field!r} is empty; expected a tuple of "
                                f"{STATE_DIM} floats (only a row with done = 1 may have no next_state)")
            continue
        parts = _STRIP.sub(" ", s).split()
        if field == "state" and i == 0 and len(parts) != STATE_DIM:
            raise DataError(
                f"{path}: the states of this file have {len(parts)} values (line {i + 2 if csv else i}); "
                f"this importer reads AuctionNet's {STATE_DIM}-feature state "
                f"({', '.join(STATE_FEATURES)}); convert the file or drop the extra features")
        if len(parts) != STATE_DIM:
            raise DataError(f"{_where(path, i, csv)}: field {field!r} has {len(parts)} values, expected "
                            f"{STATE_DIM}: {s[:80]!r}")
        try:
            row = [float(p) for p in parts]
        except ValueError:
            raise DataError(f"{_where(path, i, csv)}: field {field!r} is not a tuple of numbers: "
                            f"{s[:80]!r}") from None
        if not np.all(np.isfinite(row)):
            raise DataError(f"{_where(path, i, csv)}: field {field!r} has NaN or inf: {s[:80]!r}")
        out[i] = row
    return out


def _check_numbers(df: pd.DataFrame, path: Path, csv: bool) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for c in _NUMERIC:
        col = pd.to_numeric(df[c], errors="coerce")
        bad = np.flatnonzero(col.isna().to_numpy() | ~np.isfinite(col.to_numpy(dtype=float, na_value=np.nan)))
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{_where(path, i, csv)}: field {c!r}: {df[c].iloc[i]!r} is not a finite "
                            f"number ({len(bad)} such row(s) in the file)")
        if c in _INTEGER:
            frac = np.flatnonzero(col.to_numpy(dtype=float) != np.round(col.to_numpy(dtype=float)))
            if len(frac):
                i = int(frac[0])
                raise DataError(f"{_where(path, i, csv)}: field {c!r}: {df[c].iloc[i]!r}; expected an integer")
        out[c] = col
    checks = [
        ("budget", out["budget"] <= 0, "expected a budget > 0"),
        ("CPAConstraint", out["CPAConstraint"] <= 0, "expected a CPA constraint > 0"),
        ("timeStepIndex", out["timeStepIndex"] < 0, "expected a step index >= 0"),
        ("done", ~out["done"].isin([0, 1]), "expected 0 or 1"),
        ("action", out["action"] < 0, "expected a bid coefficient >= 0"),
        ("realAllCost", out["realAllCost"] < 0, "expected >= 0"),
        ("realAllConversion", out["realAllConversion"] < 0, "expected >= 0"),
    ]
    for field, bad, expected in checks:
        rows = np.flatnonzero(bad.to_numpy())
        if len(rows):
            i = int(rows[0])
            raise DataError(f"{_where(path, i, csv)}: field {field!r}: {df[field].iloc[i]!r}; {expected}")
    return out


def read_auctionnet(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """One validated file: its numeric columns (+ ``taskIndex``) and its (R, 16) states."""
    df, csv = _read(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: line 1: missing column(s) {missing}; an AuctionNet trajectory file has "
                        f"{list(COLUMNS)}")
    if len(df) == 0:
        raise DataError(f"{path}: no rows")
    out = _check_numbers(df, path, csv)
    done = out["done"].to_numpy() == 1
    states = parse_states(df["state"].tolist(), path, "state", csv, np.zeros(len(df), bool))
    parse_states(df["next_state"].tolist(), path, "next_state", csv, done)
    if TASK_COLUMN in df.columns:
        task = pd.to_numeric(df[TASK_COLUMN], errors="coerce")
        bad = np.flatnonzero(~task.isin(range(len(TASKS))).to_numpy())
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{_where(path, i, csv)}: field {TASK_COLUMN!r}: {df[TASK_COLUMN].iloc[i]!r}; "
                            f"expected a task index 0..{len(TASKS) - 1} ({', '.join(TASKS)})")
        out[TASK_COLUMN] = task.astype(np.int64)
    else:  # AuctionNet's own files have one objective: its categories are spread over the tasks
        out[TASK_COLUMN] = out["advertiserCategoryIndex"].astype(np.int64) % len(TASKS)
    key = out.groupby(["deliveryPeriodIndex", "advertiserNumber"])
    for field in ("budget", "CPAConstraint", TASK_COLUMN):
        varying = key[field].nunique()
        if (varying > 1).any():
            p, a = varying.index[int(np.argmax(varying.to_numpy() > 1))]
            raise DataError(f"{path}: field {field!r} changes within the trajectory of period {p}, "
                            f"advertiser {a}; expected one value per trajectory")
    dup = out.duplicated(["deliveryPeriodIndex", "advertiserNumber", "timeStepIndex"]).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(f"{_where(path, i, csv)}: field 'timeStepIndex': step {int(out['timeStepIndex'].iloc[i])} "
                        "appears twice in the same trajectory")
    return out, states


def import_auctionnet(files: Sequence[Path], out_dir: Path, cfg: Any) -> None:
    """Importer ``auctionnet-trajectory``: files -> dataset (train: all periods but the last two;
    val: the second last; test: the last). Periods with the same index in two files are one period."""
    if not files:
        raise DataError("auctionnet-trajectory: no files given")
    frames, states = [], []
    for f in files:
        frame, st = read_auctionnet(Path(f))
        frames.append(frame)
        states.append(st)
    frame = pd.concat(frames, ignore_index=True)
    dup = frame.duplicated(["deliveryPeriodIndex", "advertiserNumber", "timeStepIndex"]).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(f"{', '.join(map(str, files))}: period {int(frame['deliveryPeriodIndex'].iloc[i])}, "
                        f"advertiser {int(frame['advertiserNumber'].iloc[i])}, step "
                        f"{int(frame['timeStepIndex'].iloc[i])} appears in more than one file")
    source = "auctionnet-trajectory:" + ",".join(Path(f).name for f in files)
    to_dataset(frame, np.concatenate(states), out_dir, source=source, seed=getattr(cfg, "seed", None),
               meta={"origin": "import"})
