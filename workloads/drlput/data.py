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

import contextlib
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from adray.data import (
    DataError,
    DatasetWriter,
    dataset_uri,
    parquet_columns,
    read_dataset,
    read_parquet,
    require_columns,
    require_finite,
)
from adray.data.aligned import AlignedWriter
from adray.data.csvfile import iter_parquet
from adray.data.extsort import sorted_frames
from workloads.drlput import columns as C
from workloads.drlput.actions import ActionSpace, behaviour_probs
from workloads.drlput.config import PARAMS, DRLPUTConfig
from workloads.drlput.sim import make_requests, outcomes, shown_ads

SPLITS = ("train", "val", "test")
CHUNK = 50_000  # requests simulated at once
TEST_STREAM = 2**31
"""Offset of the ``test`` split's seed: its requests come from a stream of their own (``train``
and ``val`` keep the seeds 2·seed + 1 and 2·seed + 2 they had before the split existed)."""


def iter_log_requests(cfg: DRLPUTConfig, n: int, seed: int, probs: np.ndarray, policy_id: str,
                      first_id: int = 0) -> Iterator[pd.DataFrame]:
    """:func:`log_requests`' rows, ``CHUNK`` requests at a time (memory: one chunk)."""
    space = ActionSpace(cfg.action)
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
        yield df[list(C.LOG_COLUMNS)]


def log_requests(cfg: DRLPUTConfig, n: int, seed: int, probs: np.ndarray, policy_id: str,
                 first_id: int = 0) -> pd.DataFrame:
    """``n`` requests decided by a state-independent behaviour policy ``probs`` (A,): log rows."""
    return pd.concat(list(iter_log_requests(cfg, n, seed, probs, policy_id, first_id)), ignore_index=True)


def make_data(cfg: DRLPUTConfig, out_dir: Path) -> None:
    """``adray data make drlput``: logs of the configured behaviour policy, split train / val / test.

    Written ``CHUNK`` requests at a time (memory: one chunk and one row group per split, whatever
    ``n_requests``); the rows and the files are those of one whole-split write (the same
    ``content_hash``): ``adray.data.aligned.AlignedWriter``."""
    b = cfg.behaviour
    space = ActionSpace(cfg.action)
    probs = behaviour_probs(space, b.policy, b.sigma)
    n_val, n_test = (max(10, int(round(b.n_requests * f))) for f in (b.val_fraction, b.test_fraction))
    streams = {
        "train": (b.n_requests - n_val - n_test, cfg.seed * 2 + 1, 0),
        "val": (n_val, cfg.seed * 2 + 2, b.n_requests),
        "test": (n_test, cfg.seed * 2 + TEST_STREAM, b.n_requests + n_val),
    }
    with DatasetWriter(out_dir, source=f"drlput simulator, {b.policy} behaviour policy", seed=cfg.seed,
                       overwrite=True) as writer:
        aligned = AlignedWriter(writer)
        for split, (n, seed, first_id) in streams.items():
            if n < 1:
                raise DataError(f"dataset {dataset_uri(out_dir)}: split {split!r} is empty (0 rows); nothing written")
            for chunk in iter_log_requests(cfg, n, seed, probs, b.policy, first_id=first_id):
                aligned.write(split, chunk)
        aligned.flush()
        writer.close({"num_actions": space.size, "action": cfg.action.to_dict(), "behaviour": b.to_dict(),
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


def check_logs(df: pd.DataFrame, where: str, num_actions: int, columns: tuple[str, ...] = C.LOG_COLUMNS,
               offset: int = 0) -> pd.DataFrame:
    """The requested ``columns`` of logged rows, checked (errors name ``where``, the field and the row:
    ``offset`` + its position in ``df``, so a block's rows are counted from its file's first row)."""
    require_columns(df, columns, where)
    df = df[list(columns)]
    numeric = [c for c in columns if c not in (C.REQUEST_ID, C.POLICY_ID, C.MODEL_VERSIONS)]  # ids: int or str
    require_finite(df, numeric, where, offset=offset)
    if C.ACTION in columns:
        a = df[C.ACTION].to_numpy()
        bad = np.flatnonzero((a < 0) | (a >= num_actions) | (a != np.floor(a)))
        if len(bad):
            raise DataError(f"{where}: field {C.ACTION!r} row {offset + bad[0]}: value {a[bad[0]].item()!r} is not an action of A "
                            f"(expected an integer in [0, {num_actions}); {len(bad)} bad row(s))")
    if C.PROPENSITY in columns:
        p = df[C.PROPENSITY].to_numpy(np.float64)
        bad = np.flatnonzero((p <= 0) | (p > 1))
        if len(bad):
            raise DataError(f"{where}: field {C.PROPENSITY!r} row {offset + bad[0]}: value {p[bad[0]].item()!r} is not a "
                            f"propensity (expected 0 < p <= 1; {len(bad)} bad row(s))")
    for name, card in C.CAT_FEATURES.items():
        if name in columns:
            v = df[name].to_numpy()
            bad = np.flatnonzero((v < 0) | (v >= card))
            if len(bad):
                raise DataError(f"{where}: field {name!r} row {offset + bad[0]}: value {v[bad[0]].item()!r} outside [0, {card})")
    return df


def read_split(cfg: DRLPUTConfig, data_dir: Path | str, split: str, columns: tuple[str, ...] = C.LOG_COLUMNS
               ) -> pd.DataFrame:
    """The checked logs of one split of a dataset written by :func:`make_data` (or a decision log)."""
    check_dataset(cfg, data_dir)
    ds = read_dataset(data_dir)
    return check_logs(ds.read(split), f"{ds.display} split {split!r}", cfg.action.num_actions, columns)


LOG_FORMAT = "drlput-log"
BLOCK_ROWS = 65_536
"""Rows read and written at once by :func:`import_decision_log` (``adray.data.ROW_GROUP_ROWS``)."""


def _log_files(paths: list[Path]) -> tuple[pa.Schema, list[int]]:
    """The Arrow schema the log columns are read as (each column's type promoted across the files,
    as concatenating them did) and each file's rows, from the files' footers."""
    schemas, rows = [], []
    for path in paths:
        names = parquet_columns(path, LOG_FORMAT)  # the platform's messages for a missing/empty/bad file
        missing = [c for c in C.LOG_COLUMNS if c not in names]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; found {names[:20]}...")
        meta = pq.ParquetFile(path)
        schemas.append(pa.schema([meta.schema_arrow.field(c) for c in C.LOG_COLUMNS]))
        rows.append(meta.metadata.num_rows)
        try:
            pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"{path}: column types differ from {paths[0]}'s ({' '.join(str(exc).split())[:200]}); "
                            "expected one type per column in every file") from None
    return pa.unify_schemas(schemas, promote_options="permissive"), rows


def _first_descent(paths: list[Path], id_type: pa.DataType) -> str | None:
    """Where the request ids first decrease in log order (``"FILE row R"``), None if they never do:
    one pass over the ``request_id`` column, a row group at a time."""
    last: pa.Scalar | None = None
    for path in paths:
        first = 0
        for batch in iter_parquet(path, LOG_FORMAT, [C.REQUEST_ID], 4 * BLOCK_ROWS):
            ids = batch.column(0).cast(id_type)
            seq = ids if last is None else pa.concat_arrays([pa.array([last.as_py()], id_type), ids])
            i = pc.index(pc.less(seq[1:], seq[:-1]), True).as_py()
            if i >= 0:
                return f"{path} row {first + i + (last is None)}"
            first, last = first + len(ids), ids[-1]
    return None


def _checked_frames(paths: list[Path], schema: pa.Schema, num_actions: int,
                    ) -> Generator[pd.DataFrame, None, None]:
    """The log rows in log order, a row group at a time, checked (messages name the row in its file)."""
    for path in paths:
        first = 0
        for batch in iter_parquet(path, LOG_FORMAT, C.LOG_COLUMNS, BLOCK_ROWS):
            yield check_logs(batch.cast(schema).to_pandas(), str(path), num_actions, offset=first)
            first += batch.num_rows


def import_decision_log(files: list[Path], out_dir: Path, cfg: DRLPUTConfig) -> None:
    """``adray data import drlput-log FILE...``: the serving graph's decision logs (same columns,
    reward components joined) -> a dataset. By request id: the last ``test_fraction`` of requests
    is ``test``, the ``val_fraction`` before them ``val``, the rest ``train`` (the held-out splits
    are the most recent traffic, as the next version will meet, when ids increase with time; one
    row is one request, so no request is in two splits). Rows with equal ids keep their log order.

    Streams (memory bounded whatever the logs' size): the split sizes come from the files' footers;
    one pass over the ``request_id`` column checks whether the ids already increase in log order
    (the files in the order given, each file's rows in order: one writer numbering its requests).
    If they do, the rows are read one row group at a time, checked and written as they come. If not
    (several writers' segments, ids out of order), they are sorted by id on disk
    (:func:`adray.data.extsort.sorted_frames`: sorted runs in a temporary folder, merged), which
    reads and writes the rows once or twice more; the console says so. Either way the dataset is
    the one the whole-frame import gave (a stable sort by id), written through
    :class:`adray.data.DatasetWriter`; a refusal leaves nothing written. The manifest's ``split``
    records the sizes and whether the ids were in log order (and where they first were not).

    Raises:
        DataError: no file, an unreadable file, a missing column, column types that differ between
            files, fewer than 3 rows, or a bad value (``check_logs``: the file, the field and the
            row in the file).
    """
    if not files:
        raise DataError(f"{LOG_FORMAT} import: expected at least one Parquet decision-log file")
    paths = [Path(f) for f in files]
    schema, rows = _log_files(paths)
    b, n = cfg.behaviour, sum(rows)
    n_val, n_test = (max(1, int(round(n * f))) for f in (b.val_fraction, b.test_fraction))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise DataError(f"{LOG_FORMAT} import: {n} row(s) in {[str(f) for f in files]}; need at least 3 "
                        f"(train, val {n_val}, test {n_test})")
    descent = _first_descent(paths, schema.field(C.REQUEST_ID).type)
    frames = _checked_frames(paths, schema, cfg.action.num_actions)
    if descent is not None:
        print(f"{LOG_FORMAT} import: request ids are not in increasing order in the log (first at {descent}): "
              f"sorting {n} row(s) by request id on disk", file=sys.stderr)
        frames = sorted_frames(frames, C.REQUEST_ID)
    ends = {"train": n_train, "val": n_train + n_val, "test": n}  # rank (by id) where each split ends
    with DatasetWriter(out_dir, source=f"drlput decision logs: {[p.name for p in paths]}", seed=None,
                       overwrite=True) as writer, contextlib.closing(frames):  # a refusal deletes the sort's spill now
        out, pos = AlignedWriter(writer), 0  # the row groups and part files of one whole-split write
        for df in frames:
            lo = 0
            for split, end in ends.items():
                hi = min(len(df), max(lo, end - pos))
                if hi > lo:
                    out.write(split, df.iloc[lo:hi])
                lo = hi
            pos += len(df)
        out.flush()
        writer.close({"num_actions": cfg.action.num_actions, "action": cfg.action.to_dict(),
                      "columns": list(C.LOG_COLUMNS),
                      "split": {"by": C.REQUEST_ID, "rows": {"train": n_train, "val": n_val, "test": n_test},
                                "request_ids_in_log_order": descent is None, "first_out_of_order": descent}})
