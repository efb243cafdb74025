"""Logged data: a behaviour policy deciding simulated requests, written as Parquet (columns.py schema).

``make_data`` draws ``behaviour.n_requests`` requests, lets the behaviour policy (uniform over A,
or the discretised Gaussian around the production values) pick each action, plays it in the
simulator and writes one row per request: the state, the action with its propensity and the
parameter values it set, the behaviour policy id and the ranking models' versions, and the shown
item's reward components (events and predictions). Splits (``SPLITS``): ``train`` (what the
policy learns from), ``val`` (held-out logs whose off-policy estimate chooses the model: the best
iteration and the tuner's objective) and ``test`` (held-out logs on which the chosen model's
estimates, Diversity and Relative_Gain are reported; never used to choose). A dataset written
before the ``test`` split existed is refused by name (:func:`check_dataset`): regenerate or
re-import it.

:func:`read_logs` is the one reader of such logs (ours or a serving graph's decision log): a
missing column, an action outside A, a propensity outside (0, 1], a categorical code out of range
or a non-finite number is a :class:`adray.data.DataError` naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from adray.data import DataError, read_dataset, read_parquet, require_columns, require_finite, write_dataset
from workloads.drlput import columns as C
from workloads.drlput.actions import ActionSpace, behaviour_probs
from workloads.drlput.config import PARAMS, DRLPUTConfig
from workloads.drlput.sim import make_requests, outcomes, shown_ads

SPLITS = ("train", "val", "test")
CHUNK = 50_000  # requests simulated at once
TEST_STREAM = 2**31
"""Offset of the ``test`` split's seed: its requests come from a stream of their own (``train``
and ``val`` keep the seeds 2·seed + 1 and 2·seed + 2 they had before the split existed)."""


def log_requests(cfg: DRLPUTConfig, n: int, seed: int, probs: np.ndarray, policy_id: str,
                 first_id: int = 0) -> pd.DataFrame:
    """``n`` requests decided by a state-independent behaviour policy ``probs`` (A,): log rows."""
    space = ActionSpace(cfg.action)
    frames = []
    for lo in range(0, n, CHUNK):
        m = min(CHUNK, n - lo)
        rng = np.random.default_rng([seed, lo, 1])
        req = make_requests(cfg.sim, m, seed * 1_000_003 + lo)
        actions = rng.choice(space.size, size=m, p=probs)
        params = space.values[actions]
        comp = outcomes(req, shown_ads(req, params))
        df = pd.DataFrame({c: req.state[c] for c in C.STATE})
        df[C.REQUEST_ID] = np.arange(first_id + lo, first_id + lo + m, dtype=np.int64)
        df[C.ACTION] = actions.astype(np.int64)
        df[C.PROPENSITY] = probs[actions]
        df[C.POLICY_ID] = policy_id
        df[C.MODEL_VERSIONS] = cfg.behaviour.model_versions
        for i, name in enumerate(PARAMS):
            df[name] = params[:, i]
        for k in C.OUTCOME:
            df[k] = comp[k].astype(np.int64 if k == C.CAMPAIGN else np.float64)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)[list(C.LOG_COLUMNS)]


def make_data(cfg: DRLPUTConfig, out_dir: Path) -> None:
    """``adray data make drlput``: logs of the configured behaviour policy, split train / val / test."""
    b = cfg.behaviour
    space = ActionSpace(cfg.action)
    probs = behaviour_probs(space, b.policy, b.sigma)
    n_val, n_test = (max(10, int(round(b.n_requests * f))) for f in (b.val_fraction, b.test_fraction))
    splits = {
        "train": log_requests(cfg, b.n_requests - n_val - n_test, cfg.seed * 2 + 1, probs, b.policy),
        "val": log_requests(cfg, n_val, cfg.seed * 2 + 2, probs, b.policy, first_id=b.n_requests),
        "test": log_requests(cfg, n_test, cfg.seed * 2 + TEST_STREAM, probs, b.policy,
                             first_id=b.n_requests + n_val),
    }
    write_dataset(out_dir, splits, source=f"drlput simulator, {b.policy} behaviour policy", seed=cfg.seed,
                  meta={"num_actions": space.size, "action": cfg.action.to_dict(), "behaviour": b.to_dict(),
                        "sim": cfg.sim.to_dict(), "columns": list(C.LOG_COLUMNS)})


def check_dataset(cfg: DRLPUTConfig, data_dir: Path | str) -> None:
    """The dataset has the three splits of ``SPLITS``; its action space must be the config's (the
    action ids would mean other values), and simulator logs must come from the config's simulator
    (the evaluation's truth)."""
    ds = read_dataset(data_dir)
    missing = [s for s in SPLITS if s not in ds.splits]
    if missing:
        raise DataError(f"{data_dir}: dataset has splits {ds.splits}, missing {missing}; DRL-PUT needs {list(SPLITS)} "
                        "(val chooses the model, test is reported). It was written before the test split existed: "
                        "regenerate it with `adray data make drlput` or re-import it with `adray data import drlput-log`")
    for section in ("action", "sim"):
        logged, ours = ds.meta.get(section), getattr(cfg, section).to_dict()
        if logged is not None and logged != ours:
            diff = sorted(k for k in logged if logged.get(k) != ours.get(k))
            raise DataError(f"{data_dir}: logged with another {section} config (fields {diff} differ from the "
                            f"config's); regenerate with `adray data make drlput` and the same config")


def read_logs(path: Path | str, num_actions: int, columns: tuple[str, ...] = C.LOG_COLUMNS) -> pd.DataFrame:
    """A log file (Parquet), checked: see the module docstring. Returns the requested columns."""
    path = Path(path)
    df = read_parquet(path, "drlput-log").to_pandas()  # the platform's messages for a missing/empty/bad file
    return check_logs(df, str(path), num_actions, columns)


def check_logs(df: pd.DataFrame, where: str, num_actions: int, columns: tuple[str, ...] = C.LOG_COLUMNS
               ) -> pd.DataFrame:
    """The requested ``columns`` of logged rows, checked (errors name ``where``, the field and the row)."""
    require_columns(df, columns, where)
    df = df[list(columns)]
    numeric = [c for c in columns if c not in (C.REQUEST_ID, C.POLICY_ID, C.MODEL_VERSIONS)]  # ids: int or str
    require_finite(df, numeric, where)
    if C.ACTION in columns:
        a = df[C.ACTION].to_numpy()
        bad = np.flatnonzero((a < 0) | (a >= num_actions) | (a != np.floor(a)))
        if len(bad):
            raise DataError(f"{where}: field {C.ACTION!r} row {bad[0]}: value {a[bad[0]].item()!r} is not an action of A "
                            f"(expected an integer in [0, {num_actions}); {len(bad)} bad row(s))")
    if C.PROPENSITY in columns:
        p = df[C.PROPENSITY].to_numpy(np.float64)
        bad = np.flatnonzero((p <= 0) | (p > 1))
        if len(bad):
            raise DataError(f"{where}: field {C.PROPENSITY!r} row {bad[0]}: value {p[bad[0]].item()!r} is not a "
                            f"propensity (expected 0 < p <= 1; {len(bad)} bad row(s))")
    for name, card in C.CAT_FEATURES.items():
        if name in columns:
            v = df[name].to_numpy()
            bad = np.flatnonzero((v < 0) | (v >= card))
            if len(bad):
                raise DataError(f"{where}: field {name!r} row {bad[0]}: value {v[bad[0]].item()!r} outside [0, {card})")
    return df


def read_split(cfg: DRLPUTConfig, data_dir: Path | str, split: str, columns: tuple[str, ...] = C.LOG_COLUMNS
               ) -> pd.DataFrame:
    """The checked logs of one split of a dataset written by :func:`make_data` (or a decision log)."""
    check_dataset(cfg, data_dir)
    ds = read_dataset(data_dir)
    return check_logs(ds.read(split), f"{ds.display} split {split!r}", cfg.action.num_actions, columns)


def import_decision_log(files: list[Path], out_dir: Path, cfg: DRLPUTConfig) -> None:
    """``adray data import drlput-log FILE...``: the serving graph's decision logs (same columns,
    reward components joined) -> a dataset. By request id: the last ``test_fraction`` of requests
    is ``test``, the ``val_fraction`` before them ``val``, the rest ``train`` (the held-out splits
    are the most recent traffic, as the next version will meet)."""
    if not files:
        raise DataError("drlput-log import: expected at least one Parquet decision-log file")
    df = pd.concat([read_logs(f, cfg.action.num_actions) for f in files], ignore_index=True)
    df = df.sort_values(C.REQUEST_ID, kind="stable").reset_index(drop=True)
    b = cfg.behaviour
    n_val, n_test = (max(1, int(round(len(df) * f))) for f in (b.val_fraction, b.test_fraction))
    n_train = len(df) - n_val - n_test
    if n_train < 1:
        raise DataError(f"drlput-log import: {len(df)} row(s) in {[str(f) for f in files]}; need at least 3 "
                        f"(train, val {n_val}, test {n_test})")
    write_dataset(out_dir, {"train": df.iloc[:n_train], "val": df.iloc[n_train:n_train + n_val],
                            "test": df.iloc[n_train + n_val:]},
                  source=f"drlput decision logs: {[Path(f).name for f in files]}", seed=None,
                  meta={"num_actions": cfg.action.num_actions, "action": cfg.action.to_dict(),
                        "columns": list(C.LOG_COLUMNS)})
