"""MTORL datasets: importers (KuaiRand sequences, Criteo attribution), simulator logs, windowing.

Storage (one row per user, full journey; windowing happens in ``load_split`` so a sweep over
``n`` needs no re-import): ``user_id`` int64, ``length`` int64, and list columns of length T
(the user's number of steps): ``action`` (channel id), ``gain`` (g_t, fused), ``gain_cls`` (gain
class: 0 none, 1 click, 2 conversion), ``cost`` (w_t); ``q`` is the per-step feature matrix
flattened row-major to T*q_dim floats; ``f`` the static user features (f_dim floats). Splits
train/val/test hold disjoint users, in user-id order; which split a user is in is fixed by the
seed and its id (``sequences.UserSplit``). The manifest meta gives num_channels, q_dim, f_dim,
source, the split rule and sizes, and the train split's reward envelope (``reward_range`` for any s).

Importers and the generator stream (memory bounded by a chunk of the file and a partition of
users, whatever the file's size and order): see ``sequences.py``.

``load_split`` returns (``iter_split_windows``: the same, in batches of users), for N windows of n
steps (right-padded, mask 0 on padding):
``action`` (N, n) int64, ``reward`` (N, n) float32 = MinMaxNorm(g - s*w) with min/max from the
train split (Eq. 3), ``gain_cls`` (N, n) int64, ``state`` (N, n, q_dim + f_dim) float32 = s_t =
concat(q_t, f), ``mask`` (N, n) float32, ``reward_minmax`` (N, 2) float32: the (min, max) of
the MinMaxNorm, the same on every row (Algorithm 1 normalises the rewards it observes with it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from adray.data import (
    DataError,
    Dataset,
    leak_guard,
    read_dataset,
    require_columns,
    require_finite,
    require_rows,
)
from adray.data.csvfile import iter_frames
from workloads.mtorl.config import MTORLConfig
from workloads.mtorl.sequences import (
    ACTION,
    COST,
    GAIN,
    GAIN_CLS,
    POS,
    TIME,
    USER,
    StepSpool,
    envelope_range,
    flat_values,
    sequences_table,
    user_keys,
    write_users,
)

SPLITS = ("train", "val", "test")
KUAIRAND_ACTIONS = ("short", "mid", "long")
KUAIRAND_STATIC = (
    "2_14_day_new", "30day_retention", "UNKNOWN", "day_new", "full_active", "high_active",
    "low_active", "middle_active", "single_low_active", "onehot_feat0", "onehot_feat1",
    "onehot_feat2", "onehot_feat3", "onehot_feat4", "onehot_feat6", "onehot_feat7",
    "onehot_feat8", "onehot_feat9", "onehot_feat10",
)
CRITEO_BASE = ("uid", "campaign", "conversion", "attribution", "click", "click_nb", "cost", "cpo")
CRITEO_CATS = tuple(f"cat{i}" for i in range(1, 10))
CSV_BLOCK_BYTES = 4 << 20
"""Bytes of CSV the importers parse at once. Small because pyarrow's streaming CSV reader reads up
to ~32 blocks ahead in the background (measured on a 440 MB file: 507 MB of input buffered at open
with 32 MB blocks, 147 MB with 4 MB blocks): the reader holds about 36 blocks, whatever the file."""
KEY_BLOCK_USERS = 1 << 20
"""Simulated users whose split keys are computed at once."""
SEQ_COLUMNS = ("user_id", "length", "action", "gain", "gain_cls", "cost", "q", "f")
"""The stored columns of a user row (module docstring)."""
EVAL_USERS_PER_BATCH = 8192
"""Users windowed at once by :func:`iter_split_windows` (its default): at n=20 and 20 state
features about 2 KB of windows a user, some 16 MB a batch."""


def default_kuairand_path() -> Path:
    return Path(__file__).resolve().parents[2] / "data/samples/kuairand_sequence.zip"


# ----------------------------------------------------------------------------- importers


def _one(files: Sequence[Path], fmt: str) -> Path:
    if len(files) != 1:
        raise DataError(f"{fmt}: expected exactly one input file, got {len(files)}")
    return Path(files[0])


def _chunks(path: Path, fmt: str) -> Iterator[tuple[pd.DataFrame, int]]:
    """The file's rows in chunks (pyarrow's streaming CSV reader), each with its first row's number."""
    offset = 0
    for df in iter_frames(path, fmt, CSV_BLOCK_BYTES):
        yield df.reset_index(drop=True), offset
        offset += len(df)


def _onehot_action(df: pd.DataFrame, cols: Sequence[str], path: Path, offset: int = 0) -> np.ndarray:
    """Channel ids from one-hot columns (0/1 or False/True); every row must have exactly one 1."""
    onehot = df[list(cols)].to_numpy(float)
    bad = np.flatnonzero(onehot.sum(1) != 1)
    if len(bad):
        raise DataError(f"{path}: row {offset + int(bad[0])}: columns {cols[0]}..{cols[-1]} must be one-hot "
                        f"(exactly one 1 per row; {len(bad)} rows of this chunk are not)")
    return onehot.argmax(1)


def _steps(user: np.ndarray, time: np.ndarray, offset: int, action: np.ndarray, gain: np.ndarray,
           gain_cls: np.ndarray, cost: np.ndarray, features: pd.DataFrame) -> pd.DataFrame:
    """One chunk's step rows as the spool keeps them (raw feature columns as float64)."""
    steps = pd.DataFrame({USER: user.astype(np.int64), TIME: np.asarray(time, np.float64),
                          POS: np.arange(offset, offset + len(user), dtype=np.int64),
                          ACTION: action.astype(np.int64), GAIN: gain.astype(np.float64),
                          GAIN_CLS: gain_cls.astype(np.int64), COST: cost.astype(np.float64)})
    return pd.concat([steps, features.astype(np.float64).reset_index(drop=True)], axis=1)


def _guard(spool: StepSpool, features: Sequence[str], cfg: MTORLConfig, path: Path) -> tuple[list[str], dict]:
    """The leak guard on the step/static feature columns against the channel and the gain class,
    measured on the spool's seeded sample (all rows when the file has at most
    ``sequences.GUARD_SAMPLE_ROWS``), ordered by user then time as the whole file sorted."""
    sample = spool.sample()
    report = leak_guard(sample, features, {"channel": sample[ACTION].to_numpy(), "gain": sample[GAIN_CLS].to_numpy()},
                        cfg.keep_leaky, str(path))
    return report.kept_columns, {**report.meta(), "sample_rows": len(sample), "rows": spool.rows}


def _write_spool(spool: StepSpool, cfg: MTORLConfig, out: Path, source: str, meta: dict, q_cols: list[str],
                 f_cols: list[str], q_lo: np.ndarray | None = None, q_hi: np.ndarray | None = None) -> None:
    """The spooled steps grouped by user -> the dataset (users with >= ``cfg.min_len`` steps); q
    min-max scaled with (q_lo, q_hi) when given."""
    def blocks() -> Iterator[pa.Table]:
        for df in spool.partitions([ACTION, GAIN, GAIN_CLS, COST, *q_cols, *f_cols]):
            q = df[q_cols].to_numpy(np.float64)
            if q_lo is not None and q_hi is not None:
                q = (q - q_lo) / np.maximum(q_hi - q_lo, 1e-12)
            table = sequences_table(df[USER].to_numpy(), df[ACTION].to_numpy(), df[GAIN].to_numpy(),
                                    df[GAIN_CLS].to_numpy(), df[COST].to_numpy(), q, df[f_cols].to_numpy(np.float64))
            yield table.filter(table.column("length").to_numpy() >= cfg.min_len)

    def keys() -> Iterator[np.ndarray]:
        for users in spool.users():
            u, n = np.unique(users, return_counts=True)
            yield user_keys(u[n >= cfg.min_len], cfg.seed)

    write_users(out, blocks, keys, seed=cfg.seed, fractions=cfg.split_fractions,
                source=source, meta=meta)


def import_kuairand(files: Sequence[Path], out: Path, cfg: MTORLConfig) -> None:
    """KuaiRand sequence CSV (or the zip holding it): action = one-hot short/mid/long, gain = is_click.

    q_t = ``cfg.step_features``, f = the user columns; a user's steps are ordered by ``time_ms``
    (ties: file order), so the file may come in any order. Feature columns that determine the
    channel or the click (measured on a seeded sample of ``sequences.GUARD_SAMPLE_ROWS`` rows) are
    dropped by the leak guard unless named in ``cfg.keep_leaky``. Streams: memory is bounded by one
    chunk of the file and one partition of users (:class:`workloads.mtorl.sequences.StepSpool`).
    """
    path, fmt = _one(files, "kuairand-sequence"), "kuairand-sequence"
    where = str(path)
    cols = ["user_id", "time_ms", "is_click", *KUAIRAND_ACTIONS, *cfg.step_features, *KUAIRAND_STATIC]
    features = [*dict.fromkeys([*cfg.step_features, *KUAIRAND_STATIC])]
    with tempfile.TemporaryDirectory(prefix="adray-mtorl-import-") as tmp:
        spool = StepSpool(Path(tmp), cfg.seed)
        for df, offset in _chunks(path, fmt):
            require_columns(df, cols, where)
            require_finite(df, cols, where, offset=offset)
            uid = df["user_id"].to_numpy(float)
            require_rows(uid == np.floor(uid), df["user_id"], where, "user_id", "an integer user id", offset=offset)
            action = _onehot_action(df, KUAIRAND_ACTIONS, path, offset)
            gain = df["is_click"].to_numpy(float)
            require_rows(np.isin(gain, (0.0, 1.0)), df["is_click"], where, "is_click", "0 or 1", offset=offset)
            spool.add(_steps(uid, df["time_ms"].to_numpy(float), offset, action, gain, gain, np.zeros(len(df)),
                             df[features]))
        kept, guard = _guard(spool, features, cfg, path)
        q_cols = [c for c in cfg.step_features if c in kept]
        f_cols = [c for c in KUAIRAND_STATIC if c in kept]
        meta = {"num_channels": 3, "channels": list(KUAIRAND_ACTIONS), "q_dim": len(q_cols), "f_dim": len(f_cols),
                "q_columns": q_cols, "f_columns": f_cols, "file": str(path), "gain": "is_click",
                "costs": "none (0)", "leak_guard": guard}
        _write_spool(spool, cfg, out, "kuairand", meta, q_cols, f_cols)


CRITEO_BINARY = ("click", "conversion", "attribution")
"""0/1 fields of a Criteo journey step."""


def _check_criteo_values(df: pd.DataFrame, path: Path, offset: int = 0) -> None:
    """What cannot be true of a step: a click, conversion or attribution other than 0 or 1, a
    fractional user id, a cost outside [0, 1] (the release min-max scales ``cost``; a negative or
    huge cost would also swamp the reward's MinMaxNorm). Names the file, the 0-based data row and the field."""
    where = str(path)
    for c in CRITEO_BINARY:
        v = df[c].to_numpy(float)
        require_rows(np.isin(v, (0.0, 1.0)), df[c], where, c, "0 or 1", offset=offset)
    uid = df["uid"].to_numpy(float)
    require_rows(uid == np.floor(uid), df["uid"], where, "uid", "an integer user id", offset=offset)
    cost = df["cost"].to_numpy(float)
    require_rows((cost >= 0) & (cost <= 1), df["cost"], where, "cost",
                 "a cost in [0, 1] (Criteo_sequence.csv min-max scales cost)", offset=offset)


def import_criteo(files: Sequence[Path], out: Path, cfg: MTORLConfig) -> None:
    """Criteo attribution sequences (``Criteo_sequence.csv`` or its zip) as released.

    The file is in global time order with users interleaved; each user's rows are grouped (a
    bounded external grouping by user, :class:`workloads.mtorl.sequences.StepSpool`) and kept in
    file (= time) order. Windows line endings and the unnamed row-index column are accepted.
    Action = argmax of the one-hot ``Type_<id>`` columns (ordered by id; 0/1 or False/True); q_t =
    ``cat1``..``cat9`` min-max scaled over the file, less the columns the leak guard drops (on the
    released file: ``cat8``, a one-to-one code of the channel) unless named in ``cfg.keep_leaky``;
    no static features; cost from ``cost``; gain per ``cfg.gain``. A click, conversion or
    attribution other than 0/1, a fractional uid or a cost outside [0, 1] is refused, naming the
    file, row and field. Streams: memory is bounded by one chunk of the file and one partition of users.
    """
    path, fmt = _one(files, "criteo-sequence"), "criteo-sequence"
    where = str(path)
    types: list[str] | None = None
    lo, hi = np.full(len(CRITEO_CATS), np.inf), np.full(len(CRITEO_CATS), -np.inf)
    with tempfile.TemporaryDirectory(prefix="adray-mtorl-import-") as tmp:
        spool = StepSpool(Path(tmp), cfg.seed)
        for df, offset in _chunks(path, fmt):
            require_columns(df, [*CRITEO_BASE, *CRITEO_CATS], where)
            if types is None:
                types = sorted((c for c in df.columns if c.startswith("Type_") and c[5:].isdigit()),
                               key=lambda c: int(c[5:]))
                if not types:
                    raise DataError(f"{path}: no one-hot channel columns named Type_<id>; found {list(df.columns)[:20]}")
            require_finite(df, [*CRITEO_BASE, *CRITEO_CATS, *types], where, offset=offset)
            _check_criteo_values(df, path, offset)
            action = _onehot_action(df, types, path, offset)
            click, conv = df["click"].to_numpy(float), df["conversion"].to_numpy(float)
            gain = {"click": click, "conversion": conv, "both": click + 10.0 * conv}[cfg.gain]
            gain_cls = np.where(conv > 0, 2, np.where(click > 0, 1, 0)) if cfg.gain == "both" else (gain > 0)
            cats = df[list(CRITEO_CATS)].to_numpy(float)
            lo, hi = np.minimum(lo, cats.min(0)), np.maximum(hi, cats.max(0))
            spool.add(_steps(df["uid"].to_numpy(float), np.zeros(len(df)), offset, action, gain, gain_cls,
                             df["cost"].to_numpy(float), df[list(CRITEO_CATS)]))
        assert types is not None
        kept, guard = _guard(spool, CRITEO_CATS, cfg, path)
        idx = [CRITEO_CATS.index(c) for c in kept]
        meta = {"num_channels": len(types), "channels": types, "q_dim": len(kept), "f_dim": 0,
                "q_columns": kept, "f_columns": [], "file": str(path), "gain": cfg.gain,
                "costs": "column cost", "leak_guard": guard}
        _write_spool(spool, cfg, out, "criteo", meta, kept, [], lo[idx], hi[idx])


def make_data(cfg: MTORLConfig, out: Path) -> None:
    """Write the dataset named by ``cfg.source``: simulator logs (in blocks of users, see
    :func:`workloads.mtorl.sim.simulate_logs`) or an import of KuaiRand."""
    if cfg.source == "kuairand":
        import_kuairand([Path(cfg.kuairand_path) if cfg.kuairand_path else default_kuairand_path()], out, cfg)
    elif cfg.source == "simulator":
        from workloads.mtorl.sim import log_meta, simulate_logs

        sim, keep = cfg.sim, cfg.sim.steps >= cfg.min_len  # every simulated user has sim.steps steps
        users = sim.num_users if keep else 0

        def blocks() -> Iterator[pa.Table]:
            for table in simulate_logs(sim, cfg.seed):
                yield table if keep else table.slice(0, 0)

        def keys() -> Iterator[np.ndarray]:
            for lo in range(0, users, KEY_BLOCK_USERS):
                yield user_keys(np.arange(lo, min(lo + KEY_BLOCK_USERS, users)), cfg.seed)

        write_users(out, blocks, keys, seed=cfg.seed, fractions=cfg.split_fractions, source="simulator",
                    meta=log_meta(sim))
    else:
        raise DataError("source=criteo has no generator: use `adray data import criteo-sequence FILE --out DIR`")


# ----------------------------------------------------------------------------- windowing


def _dataset(data_dir: Path | str, cfg: MTORLConfig) -> Dataset:
    ds = read_dataset(data_dir)
    if ds.manifest.get("source") != cfg.source:
        raise DataError(
            f"{data_dir}: dataset source is {ds.manifest.get('source')!r} but config source={cfg.source!r}; "
            "point `data` at a matching dataset"
        )
    return ds


def read_sequences(data_dir: Path, split: str, cfg: MTORLConfig) -> tuple[pd.DataFrame, dict]:
    ds = _dataset(data_dir, cfg)
    df = ds.read(split)
    require_columns(df, SEQ_COLUMNS, f"{ds.display} split {split!r}")
    return df, ds.meta


def reward_range(data_dir: Path | str, cfg: MTORLConfig) -> tuple[float, float]:
    """Min and max of g - s*w over the train split (the MinMaxNorm of Eq. 3): from the manifest's
    ``reward_envelope`` (recorded at write time, any s), else streamed from the split's ``gain`` and
    ``cost`` columns one row group at a time."""
    ds = _dataset(data_dir, cfg)
    envelope = ds.meta.get("reward_envelope")
    found = envelope_range(envelope, cfg.penalty_s) if isinstance(envelope, dict) else None
    if found is not None:
        return found
    lo, hi = np.inf, -np.inf
    for batch in ds.iter_batches("train", columns=["gain", "cost"]):
        raw = flat_values(batch, "gain") - cfg.penalty_s * flat_values(batch, "cost")
        if len(raw):
            lo, hi = min(lo, float(raw.min())), max(hi, float(raw.max()))
    if lo > hi:
        raise DataError(f"{ds.display}: the train split has no steps; cannot normalise rewards")
    return lo, hi


def windows(seqs: pd.DataFrame, starts: np.ndarray, rows: np.ndarray, n: int, meta: dict,
            rng_minmax: tuple[float, float], penalty_s: float) -> dict[str, np.ndarray]:
    """Cut window [start, start+n) of user row ``rows[i]``; right-pad with mask 0."""
    qd, fd = int(meta["q_dim"]), int(meta["f_dim"])
    big_n = len(rows)
    out = {
        "action": np.zeros((big_n, n), np.int64), "reward": np.zeros((big_n, n), np.float32),
        "gain_cls": np.zeros((big_n, n), np.int64), "state": np.zeros((big_n, n, qd + fd), np.float32),
        "mask": np.zeros((big_n, n), np.float32),
        "reward_minmax": np.tile(np.asarray(rng_minmax, np.float32), (big_n, 1)),
    }
    lo, hi = rng_minmax
    for i, (r, s) in enumerate(zip(rows, starts)):
        row = seqs.iloc[int(r)]
        e = min(int(row["length"]), int(s) + n)
        k = e - int(s)
        out["action"][i, :k] = row["action"][s:e]
        raw = row["gain"][s:e] - penalty_s * row["cost"][s:e]
        out["reward"][i, :k] = np.clip((raw - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        out["gain_cls"][i, :k] = row["gain_cls"][s:e]
        out["state"][i, :k, :qd] = np.asarray(row["q"]).reshape(-1, qd)[s:e] if qd else 0.0
        out["state"][i, :k, qd:] = row["f"]
        out["mask"][i, :k] = 1.0
    return out


def user_windows(seqs: pd.DataFrame, meta: dict, rng_minmax: tuple[float, float], cfg: MTORLConfig,
                 ) -> dict[str, np.ndarray]:
    """The user protocol's windows: one per user row, its last (or first, ``cfg.truncate``) ``cfg.n`` steps."""
    lengths = seqs["length"].to_numpy()
    starts = np.maximum(lengths - cfg.n, 0) if cfg.truncate == "last" else np.zeros(len(seqs), np.int64)
    return windows(seqs, starts, np.arange(len(seqs)), cfg.n, meta, rng_minmax, cfg.penalty_s)


def load_split(data_dir: Path | str, split: str, cfg: MTORLConfig) -> dict[str, np.ndarray]:
    """Windows of ``cfg.n`` steps for one split under ``cfg.protocol`` (see module docstring), all
    held at once (:func:`iter_split_windows` gives the user protocol's in batches of users)."""
    data_dir = Path(data_dir)
    if split not in SPLITS:
        raise DataError(f"split {split!r}: expected one of {SPLITS}")
    rng_minmax = reward_range(data_dir, cfg)
    if cfg.protocol == "user":
        seqs, meta = read_sequences(data_dir, split, cfg)
        return user_windows(seqs, meta, rng_minmax, cfg)
    seqs, meta, rows, starts, take = reference_windows(data_dir, cfg)
    return windows(seqs, starts[take[split]], rows[take[split]], cfg.n, meta, rng_minmax, cfg.penalty_s)


def iter_split_windows(data_dir: Path | str, split: str, cfg: MTORLConfig,
                       users_per_batch: int = EVAL_USERS_PER_BATCH) -> Iterator[dict[str, np.ndarray]]:
    """:func:`load_split`'s windows of ``split``, in its order, at most ``users_per_batch`` users at a
    time: concatenated, the batches are ``load_split(data_dir, split, cfg)``. User protocol: memory
    holds one batch of stored user rows and their windows, never the split. The reference protocol
    samples its windows with replacement over every split: one batch, the whole split (``load_split``).

    ``data_dir``: a local path or an ``s3://`` URI (kept as given)."""
    if split not in SPLITS:
        raise DataError(f"split {split!r}: expected one of {SPLITS}")
    if users_per_batch < 1:
        raise ValueError(f"users_per_batch={users_per_batch}: expected >= 1")
    if cfg.protocol != "user":
        yield load_split(data_dir, split, cfg)
        return
    ds = _dataset(data_dir, cfg)
    rng_minmax = reward_range(data_dir, cfg)
    for rb in ds.iter_batches(split, columns=list(SEQ_COLUMNS), batch_rows=users_per_batch):
        yield user_windows(rb.to_pandas(), ds.meta, rng_minmax, cfg)


def reference_windows(
    data_dir: Path, cfg: MTORLConfig,
) -> tuple[pd.DataFrame, dict, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The reference protocol's sampling: pool all users, draw ``ref_windows`` (user row, start)
    pairs with replacement from users with >= n+1 steps, split the windows 80/10/10.

    Returns the pooled sequences, the meta, ``rows`` and ``starts`` (ref_windows,) and, per split,
    the indices into rows/starts (so callers can tell which test windows repeat a train window).
    """
    frames = [read_sequences(Path(data_dir), s, cfg) for s in SPLITS]
    seqs, meta = pd.concat([f for f, _ in frames], ignore_index=True), frames[0][1]
    eligible = np.flatnonzero(seqs["length"].to_numpy() >= cfg.n + 1)
    if len(eligible) == 0:
        raise DataError(f"{data_dir}: no user has >= n+1={cfg.n + 1} steps (reference protocol)")
    rng = np.random.default_rng(cfg.ref_seed)
    rows = rng.choice(eligible, size=cfg.ref_windows, replace=True)
    starts = rng.integers(0, seqs["length"].to_numpy()[rows] - cfg.n + 1)
    perm = rng.permutation(cfg.ref_windows)
    c1 = int(cfg.split_fractions[0] * cfg.ref_windows)
    c2 = c1 + int(cfg.split_fractions[1] * cfg.ref_windows)
    return seqs, meta, rows, starts, {"train": perm[:c1], "val": perm[c1:c2], "test": perm[c2:]}


def model_meta(data_dir: Path, cfg: MTORLConfig) -> dict:
    ds = read_dataset(data_dir)
    m = ds.meta
    return {"num_channels": int(m["num_channels"]), "state_dim": int(m["q_dim"]) + int(m["f_dim"]),
            "num_gain_classes": 3, "source": ds.manifest.get("source"), "window": cfg.n,
            "reward_minmax": list(reward_range(data_dir, cfg))}
