"""Long rows (one per user and step) -> one row per user with list columns, with bounded memory: the
storage layout of MTORL datasets (see data.py), shared by the importers and the journey simulator.

* :func:`sequences_table`: rows already ordered by user then time -> one Arrow row per user.
* :class:`StepSpool`: an importer's step rows, spooled to local Parquet as they are read (memory:
  one chunk), a seeded uniform sample of them for the leak guard, and then the same rows grouped
  by user through a bounded external sort: range partitions of the user id (boundaries from the
  sample's quantiles), each partition sorted on its own. No assumption on the input order; memory
  is bounded by one partition (``PARTITION_ROWS``, or the largest user's rows if more).
* :class:`UserSplit`: the train / val / test split by user, decided per user by a seeded 64-bit key
  with the sizes of a permutation split (exact counts), found in two passes over the users' keys.
* :func:`write_users`: per-user blocks -> the dataset, through ``adray.data.DatasetWriter``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from adray.data import DatasetWriter
from adray.data.aligned import AlignedWriter
from adray.data.dataset import iter_row_groups

SPLITS = ("train", "val", "test")
USER, TIME, POS = "_user", "_time", "_pos"
ACTION, GAIN, GAIN_CLS, COST = "_action", "_gain", "_gain_cls", "_cost"
STEP_COLUMNS = (USER, TIME, POS, ACTION, GAIN, GAIN_CLS, COST)
"""What an importer spools per step besides its raw feature columns: the user id, the time order
(``_time`` then ``_pos``, the row's position in the file), the channel, g_t, its class and w_t."""
GUARD_SAMPLE_ROWS = 200_000
"""Rows the leak guard measures on import: a seeded uniform sample of the file's rows (all of them
when fewer); the manifest's ``leak_guard.sample_rows`` says how many it measured."""
PARTITION_ROWS = 250_000
"""Rows per user partition of the external grouping (about; a user is never split)."""
USER_ROW_GROUP_ROWS = 8_192
"""Users per row group of an MTORL dataset (a row holds a whole journey: 65,536 users of ~25 steps
and 10 floats a step are ~130 MB; the writer holds up to one row group per split)."""
SPOOL_BATCH_ROWS = 65_536
MASK64 = (1 << 64) - 1


def sequences_table(
    user: np.ndarray, action: np.ndarray, gain: np.ndarray, gain_cls: np.ndarray,
    cost: np.ndarray, q: np.ndarray, f: np.ndarray,
) -> pa.Table:
    """Rows already ordered by user then time -> one row per user with list columns.

    Args: per step (N,): user, action, gain, gain_cls, cost; q (N, q_dim); f (N, f_dim) (a user's
    first row is its static features).
    """
    n = len(user)
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if n else np.zeros(0, np.int64)
    offsets = np.r_[starts, n].astype(np.int64)
    qd, fd = q.shape[1], f.shape[1]

    def lists(values: np.ndarray, offs: np.ndarray) -> pa.ListArray:
        return pa.ListArray.from_arrays(pa.array(offs.astype(np.int32)), pa.array(values))

    return pa.table({
        "user_id": pa.array(user[starts].astype(np.int64)),
        "length": pa.array(np.diff(offsets)),
        "action": lists(action.astype(np.int64), offsets),
        "gain": lists(gain.astype(np.float64), offsets),
        "gain_cls": lists(gain_cls.astype(np.int64), offsets),
        "cost": lists(cost.astype(np.float64), offsets),
        "q": lists(np.ascontiguousarray(q, np.float64).ravel(), offsets * qd),
        "f": lists(np.ascontiguousarray(f[starts], np.float64).ravel(), np.arange(len(starts) + 1) * fd),
    })


# ----------------------------------------------------------------------------- the user split


def user_keys(user_id: np.ndarray, seed: int) -> np.ndarray:
    """(U,) uint64: the seeded key of each user id (splitmix64's finaliser of id + a seed offset, a
    bijection: two users never share a key)."""
    salt = np.uint64(((seed + 1) * 0x9E3779B97F4A7C15) & MASK64)
    z = np.asarray(user_id, np.int64).view(np.uint64) + salt
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class UserSplit:
    """train / val / test by user: the users ranked by :func:`user_keys`; the first
    ``round(f_train * U)`` are train, the next ``round(f_val * U)`` val, the rest test (the sizes
    of a seeded permutation split; which users: fixed by the seed and the user id alone, whatever
    the file order or the block sizes).

    The two rank thresholds are found without holding the keys: a histogram of the keys' top 16
    bits (pass 1), then the keys of the two buckets holding the cut ranks (pass 2).

    Args:
        keys: called twice; yields the keys of every user to split (in any blocks and order).
        fractions: (train, val, test) fractions.
    """

    BITS = 16

    def __init__(self, keys: Callable[[], Iterable[np.ndarray]], fractions: Sequence[float]) -> None:
        shift = np.uint64(64 - self.BITS)
        hist = np.zeros(1 << self.BITS, np.int64)
        for k in keys():
            hist += np.bincount((k >> shift).astype(np.int64), minlength=1 << self.BITS)
        self.users = int(hist.sum())
        cut1 = int(round(fractions[0] * self.users))
        cut2 = cut1 + int(round(fractions[1] * self.users))
        self.sizes = {"train": cut1, "val": cut2 - cut1, "test": self.users - cut2}
        cum = np.cumsum(hist)
        where = {c: int(np.searchsorted(cum, c, side="right")) for c in (cut1, cut2) if c < self.users}
        found: dict[int, list[np.ndarray]] = {b: [] for b in where.values()}
        if found:
            for k in keys():
                top = (k >> shift).astype(np.int64)
                for b in found:
                    found[b].append(k[top == b])
        self.thresholds: list[int | None] = []
        for c in (cut1, cut2):
            if c >= self.users:
                self.thresholds.append(None)  # nobody at or past this rank
                continue
            b = where[c]
            ranked = np.sort(np.concatenate(found[b]))
            self.thresholds.append(int(ranked[c - (int(cum[b - 1]) if b else 0)]))

    def labels(self, keys: np.ndarray) -> np.ndarray:
        """(U,) split index (0 train, 1 val, 2 test) of users with these keys."""
        out = np.zeros(len(keys), np.int8)
        for t in self.thresholds:
            if t is not None:
                out += keys >= np.uint64(t)
        return out


# ----------------------------------------------------------------------------- writing


def write_users(
    out: Path | str,
    blocks: Callable[[], Iterable[pa.Table]],
    keys: Callable[[], Iterable[np.ndarray]],
    *,
    seed: int,
    fractions: Sequence[float],
    source: str,
    meta: Mapping[str, Any],
) -> None:
    """Write per-user tables (:func:`sequences_table`, users in the order to store them) as the
    train / val / test splits of :class:`UserSplit`, block by block.

    The manifest meta gets ``users`` (written), ``split`` (the rule and sizes) and, when small
    enough, ``reward_envelope`` (:class:`RewardEnvelope` of the train split, so that
    ``data.reward_range`` need not read the split again, whatever the penalty s).

    Args:
        blocks: called once; yields the per-user tables (users already filtered by ``min_len``).
        keys: called twice; yields :func:`user_keys` of exactly those users.
    """
    split = UserSplit(keys, fractions)
    envelope = RewardEnvelope()
    with DatasetWriter(out, source=source, seed=seed, overwrite=True, row_group_rows=USER_ROW_GROUP_ROWS) as writer:
        aligned = AlignedWriter(writer)
        for table in blocks():
            labels = split.labels(user_keys(table.column("user_id").to_numpy(), seed))
            for i, name in enumerate(SPLITS):
                part = table.filter(pa.array(labels == i))
                aligned.write(name, part)
                if name == "train":
                    envelope.add(flat_values(part, "gain"), flat_values(part, "cost"))
        aligned.flush()
        rule = ("users ranked by a seeded 64-bit hash of user_id (workloads.mtorl.sequences.user_keys); "
                "the first round(f_train*U) train, the next round(f_val*U) val, the rest test")
        extra = {"reward_envelope": envelope.meta()} if envelope.size() <= ENVELOPE_MAX_POINTS else {}
        writer.close({**meta, "users": split.users,
                      "split": {"rule": rule, "fractions": list(fractions), "users": split.sizes}, **extra})


def flat_values(table: pa.Table | pa.RecordBatch, column: str) -> np.ndarray:
    col = table.column(column)
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    return np.concatenate([c.flatten().to_numpy(zero_copy_only=False) for c in chunks] or [np.zeros(0)])


ENVELOPE_MAX_POINTS = 4_096
"""A :class:`RewardEnvelope` larger than this is not recorded (``reward_range`` then streams)."""


def _front(w: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points (w, g) that no other point beats with w <= and g >: sorted by w, g rising."""
    order = np.lexsort((-g, w))  # by w, then the largest g first
    w, g = w[order], g[order]
    keep = g > np.maximum.accumulate(np.r_[-np.inf, g[:-1]])
    return w[keep], g[keep]


class RewardEnvelope:
    """The steps (w, g) of a split that can attain the min or the max of g - s*w for some s >= 0,
    collected block by block: for the max, those that no step beats with a lower-or-equal cost and
    a higher gain; for the min, the mirror image. On data with few gain levels it is a handful of
    points, and min / max over it are exactly those over all the steps (the same float arithmetic).
    """

    def __init__(self) -> None:
        empty = np.zeros(0)
        self.hi: tuple[np.ndarray, np.ndarray] = (empty, empty)
        self.lo: tuple[np.ndarray, np.ndarray] = (empty, empty)
        self.steps = 0

    def add(self, gain: np.ndarray, cost: np.ndarray) -> None:
        self.hi = _front(np.r_[self.hi[0], cost], np.r_[self.hi[1], gain])
        w, g = _front(-np.r_[self.lo[0], cost], -np.r_[self.lo[1], gain])
        self.lo = (-w, -g)
        self.steps += len(gain)

    def size(self) -> int:
        return len(self.hi[0]) + len(self.lo[0])

    def meta(self) -> dict[str, Any]:
        return {"max": np.column_stack(self.hi).tolist(), "min": np.column_stack(self.lo).tolist(),
                "steps": self.steps}


def envelope_range(envelope: Mapping[str, Any], penalty_s: float) -> tuple[float, float] | None:
    """(min, max) of g - s*w over the steps of a recorded :meth:`RewardEnvelope.meta` (None: no steps)."""
    lo, hi = (np.asarray(envelope[k], np.float64).reshape(-1, 2) for k in ("min", "max"))
    if not len(lo) or not len(hi):
        return None
    return float((lo[:, 1] - penalty_s * lo[:, 0]).min()), float((hi[:, 1] - penalty_s * hi[:, 0]).max())


# ----------------------------------------------------------------------------- external grouping


class StepSpool:
    """An importer's step rows on local disk, then grouped by user (see the module docstring).

    ``add`` each chunk (columns ``STEP_COLUMNS`` plus raw features; ``_pos`` = the row's position
    in the file); then ``sample()`` for the leak guard and ``partitions()`` for the sequences.
    """

    def __init__(self, tmp: Path, seed: int, partition_rows: int | None = None,
                 sample_rows: int | None = None) -> None:
        self.tmp = Path(tmp)
        self.partition_rows = partition_rows or PARTITION_ROWS
        self.sample_rows = sample_rows or GUARD_SAMPLE_ROWS
        self.rng = np.random.default_rng((seed, 0x5A3B))
        self.rows = 0
        self._sample: pd.DataFrame | None = None
        self._writer: pq.ParquetWriter | None = None
        self._parts: list[Path] | None = None

    def add(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.tmp / "spool.parquet", table.schema)
        self._writer.write_table(table.cast(self._writer.schema))
        cand = frame.assign(_key=self.rng.random(len(frame)))
        if self._sample is not None and len(self._sample) >= self.sample_rows:
            cand = cand[cand["_key"].to_numpy() < self._sample["_key"].max()]  # only these can enter
        self._sample = cand if self._sample is None else pd.concat([self._sample, cand], ignore_index=True)
        if len(self._sample) > self.sample_rows:
            self._sample = self._sample.nsmallest(self.sample_rows, "_key")
        self.rows += len(frame)

    def sample(self) -> pd.DataFrame:
        """The sampled rows, ordered by user then time (as the whole file sorted would be)."""
        assert self._sample is not None, "StepSpool.sample before any add"
        return self._sample.drop(columns="_key").sort_values([USER, TIME, POS]).reset_index(drop=True)

    def partitions(self, columns: Sequence[str]) -> Iterator[pd.DataFrame]:
        """``columns`` (plus ``_user``) of every row, one partition at a time, ordered by user then
        time; partitions are ranges of user ids, in increasing order, and never split a user."""
        for path in self._partition_files():
            df = pq.read_table(path, columns=list(dict.fromkeys([USER, TIME, POS, *columns]))).to_pandas()
            yield df.sort_values([USER, TIME, POS], kind="stable").reset_index(drop=True)

    def users(self) -> Iterator[np.ndarray]:
        """The user id of every row, one partition at a time (reads the user column only)."""
        for path in self._partition_files():
            yield pq.read_table(path, columns=[USER]).column(USER).to_numpy()

    def _partition_files(self) -> list[Path]:
        if self._parts is not None:
            return self._parts
        assert self._writer is not None and self._sample is not None, "StepSpool: nothing added"
        self._writer.close()
        spool = self.tmp / "spool.parquet"
        k = max(1, math.ceil(self.rows / self.partition_rows))
        if k == 1:
            self._parts = [spool]
            return self._parts
        # range boundaries at the sample's quantiles of user (row-weighted): ~equal rows per partition
        users = np.sort(self._sample[USER].to_numpy())
        bounds = np.unique(users[(np.arange(1, k) * len(users)) // k])
        self._parts = [self.tmp / f"part-{i:04d}.parquet" for i in range(len(bounds) + 1)]
        writers: dict[int, pq.ParquetWriter] = {}
        for batch in iter_row_groups(pq.ParquetFile(spool), SPOOL_BATCH_ROWS):
            table = pa.Table.from_batches([batch])
            part = np.searchsorted(bounds, batch.column(USER).to_numpy(), side="right")
            for p in np.unique(part):
                if p not in writers:
                    writers[p] = pq.ParquetWriter(self._parts[p], table.schema)
                writers[p].write_table(table.filter(pa.array(part == p)))
        for w in writers.values():
            w.close()
        spool.unlink()
        self._parts = [p for i, p in enumerate(self._parts) if i in writers]
        return self._parts
