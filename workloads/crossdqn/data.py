"""Logged data: an exploratory policy in the simulator, written as Parquet transitions.

The logging policy draws, per request, an ad probability ``p = log_pae + U(-log_spread, log_spread)``
and then shows an ad in each slot independently with probability ``p`` (random slot choices around
the target PAE). Its propensity of the logged action is ``Π_k p^{a_k} (1-p)^{1-a_k}``.

Columns of ``train.parquet`` (RLlib's names, see ``ray.rllib.core.columns.Columns``):
``obs``/``new_obs`` (float32 lists of ``obs_dim``), ``actions`` (int), ``rewards``, the reward
components ``r_ad``, ``r_fee``, ``r_ex``, ``orders``, ``terminateds``, ``truncateds``,
``action_prob`` (logging propensity), ``eps_id``, ``t`` (screen index), ``pae`` (of the shown screen).
The manifest's meta holds the observation layout, the logging policy's knobs and the whole simulator
config (``sim``: ``cfg.sim.to_dict()``).

:func:`import_decision_log` (``adray data import crossdqn-log``) writes the same columns and meta
from the serving graph's decision log, so that the trainer reads either unchanged.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from adray.data import DataError, DatasetWriter, parquet_columns, read_dataset
from adray.data.aligned import AlignedWriter
from adray.data.csvfile import iter_parquet
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.outcomes import fill_outcomes, present_counts
from workloads.crossdqn.sim import FeedSim, action_bits, make_requests, obs_layout

SPLIT = "train"
CHUNK = 20_000  # requests simulated at once (bounds memory for millions of transitions)


def logging_policy(p_ad: np.ndarray, bits: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Actions (n,) and their propensities (n,) for per-request ad probabilities ``p_ad`` (n,)."""
    n, k = len(p_ad), bits.shape[1]
    slots = rng.uniform(size=(n, k)) < p_ad[:, None]  # (n, K)
    actions = (slots * (1 << np.arange(k))[None, :]).sum(1)
    prob = np.where(slots, p_ad[:, None], 1 - p_ad[:, None]).prod(1)
    return actions.astype(np.int64), prob


def simulate_logs(cfg: CrossDQNConfig, n_requests: int, seed: int) -> pd.DataFrame:
    """Roll the logging policy over ``n_requests`` fresh requests; one row per screen shown."""
    return pd.concat(list(simulate_log_blocks(cfg, n_requests, seed)), ignore_index=True)


def simulate_log_blocks(cfg: CrossDQNConfig, n_requests: int, seed: int) -> Iterator[pd.DataFrame]:
    """:func:`simulate_logs`' rows, ``CHUNK`` requests at a time (memory: one chunk)."""
    rng = np.random.default_rng(seed + 1)
    bits = action_bits(cfg.sim.slots)
    for start in range(0, n_requests, CHUNK):
        n = min(CHUNK, n_requests - start)
        sim = FeedSim(cfg.sim, make_requests(cfg.sim, n, seed * 1_000_003 + start))
        p_ad = np.clip(cfg.log_pae + rng.uniform(-cfg.log_spread, cfg.log_spread, n), 0.02, 0.98)
        cols: dict[str, list[np.ndarray]] = {}
        while sim.alive.any():
            idx = np.flatnonzero(sim.alive)
            obs = sim.observe(idx)
            t = sim.screen[idx].copy()
            actions, prob = logging_policy(p_ad[idx], bits, rng)
            out = sim.step(idx, actions)
            row = {
                "eps_id": start + idx, "t": t, "obs": obs, "actions": actions,
                "rewards": out["reward"], "r_ad": out["r_ad"], "r_fee": out["r_fee"], "r_ex": out["r_ex"],
                "orders": out["orders"], "pae": out["ads"] / cfg.sim.slots,
                "new_obs": sim.observe(idx), "terminateds": out["terminated"],
                "truncateds": np.zeros(len(idx), bool), "action_prob": prob,
            }
            for key, v in row.items():
                cols.setdefault(key, []).append(v)
        merged = {key: np.concatenate(v) for key, v in cols.items()}
        order = np.lexsort((merged["t"], merged["eps_id"]))
        df = pd.DataFrame({key: (list(v[order]) if v.ndim == 2 else v[order]) for key, v in merged.items()})
        for c in ("rewards", "r_ad", "r_fee", "r_ex", "pae", "action_prob"):
            df[c] = df[c].astype(np.float32)
        yield df


def make_data(cfg: CrossDQNConfig, out_dir: Path) -> None:
    """``adray data make crossdqn``: log ``cfg.n_requests`` requests of the exploratory policy."""
    with DatasetWriter(out_dir, source="crossdqn simulator, exploratory logging policy", seed=cfg.seed,
                       overwrite=True) as writer:
        for df in simulate_log_blocks(cfg, cfg.n_requests, cfg.seed):
            writer.write(SPLIT, df)
        writer.close({"obs_layout": obs_layout(cfg.sim), "num_actions": cfg.num_actions, "log_pae": cfg.log_pae,
                      "log_spread": cfg.log_spread, "sim": cfg.sim.to_dict()})


def check_dataset(cfg: CrossDQNConfig, data_dir: Path | str) -> Path:
    """The Parquet file of the logs, after checking the dataset matches ``cfg``'s simulator."""
    ds = read_dataset(data_dir)
    path = ds.split_path(SPLIT)
    layout, expected = ds.meta.get("obs_layout"), obs_layout(cfg.sim)
    if layout != expected:
        raise DataError(
            f"{data_dir}: observation layout {layout} does not match the config's {expected}; "
            "regenerate the data with `adray data make crossdqn` and the same config"
        )
    return path


# ----------------------------------------------------------------------------- the graph's decision log
FORMAT = "crossdqn-log"
LOG_PROPENSITY = "alloc_propensity"
"""The allocation's logged propensity: every decided row must have one (off-policy training and the
gate weight rows by it). A log without it (written before the graph logged it) is refused, never
read as 1.0: the log does not say that the policy that decided it was greedy."""
LOG_REQUIRED = ("alloc_obs", "alloc_action", "alloc_fallback", LOG_PROPENSITY)
"""Decision-log columns the import needs (``serve_apps/feed_log.py``)."""
JOINED = ("r_ad", "r_fee", "r_ex", "orders")
"""Outcome columns a log carries once events are joined to it. Without them (or null in a row) the
import is refused, unless ``simulate_outcomes``: then those rows' outcomes are simulated."""
SIMULATE_HINT = ("import with `--option simulate_outcomes=true` to simulate the outcomes the log lacks from each "
                 "row's observation (the manifest and the console say how many rows)")


BLOCK_ROWS = 65_536
"""Kept log rows per block of the import (``adray.data.ROW_GROUP_ROWS``): rows are read, checked and
written a block at a time (memory: about two blocks, whatever the input's size), and a block is the
unit of outcome simulation (:func:`outcome_seed`)."""


def outcome_seed(seed: int, block: int) -> int:
    """The seed of the simulated outcomes of import block ``block`` (its kept rows ``eps_id`` in
    ``[block, block + 1) x BLOCK_ROWS``): ``seed`` itself for block 0, so an import of up to
    ``BLOCK_ROWS`` rows simulates what the whole-frame import did; ``SeedSequence((seed, block))``
    after. A row's outcome depends on its place in the dataset, not on how the log is cut in files
    and row groups."""
    return seed if block == 0 else int(np.random.SeedSequence((seed, block)).generate_state(1)[0])


def _log_columns(path: Path, simulate: bool) -> list[str]:
    """The columns to read from one decision-log file, after checking its schema (footer only)."""
    names = parquet_columns(path, FORMAT)  # the same message as every importer for a missing/empty/bad file
    missing = [c for c in LOG_REQUIRED if c not in names]
    if missing:
        why = (f"; the allocation's propensity {LOG_PROPENSITY!r} is required (off-policy training weights rows "
               "by it, and a log written before the graph logged it does not say what it was)"
               if LOG_PROPENSITY in missing else "")
        raise DataError(f"{path}: missing column(s) {missing}; expected the serving graph's decision log "
                        f"(serve_apps/feed_log.py: {list(LOG_REQUIRED)}){why}")
    absent = [c for c in JOINED if c not in names]
    if absent and not simulate:
        raise DataError(f"{path}: missing outcome column(s) {absent} (every row): the log has no outcome joined "
                        f"(expected {list(JOINED)}); nothing is made up unless asked: {SIMULATE_HINT}")
    return [*LOG_REQUIRED, *(c for c in ("model_versions", *JOINED) if c in names)]


def _log_rows(batch: pa.RecordBatch, path: Path, first: int, cfg: CrossDQNConfig, dropped: dict[str, int],
              decided_by: set[str], simulate: bool) -> dict[str, np.ndarray] | None:
    """The usable rows of one batch of a decision-log file (the file's rows ``first`` on) as arrays
    (None if none), checked; ``dropped`` counts the rows left out by reason, ``decided_by`` collects
    the allocation versions. Messages name the file and the row in the file."""
    fallback = batch.column("alloc_fallback").fill_null(True).to_numpy(zero_copy_only=False).astype(bool)
    obs_col = batch.column("alloc_obs")
    if not (pa.types.is_list(obs_col.type) or pa.types.is_large_list(obs_col.type)):
        raise DataError(f"{path}: field 'alloc_obs': type {obs_col.type}, expected a list of floats")
    no_obs = obs_col.is_null().to_numpy(zero_copy_only=False)
    dropped["allocation fell back"] += int(fallback.sum())
    dropped["no observation"] += int((no_obs & ~fallback).sum())
    rows = np.flatnonzero(~fallback & ~no_obs)
    if not len(rows):
        return None
    at, take = first + rows, pa.array(rows)  # at: row numbers in the file, for the messages
    obs_dim = obs_layout(cfg.sim)["obs_dim"]
    lengths = obs_col.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)[rows]
    bad = np.flatnonzero(lengths != obs_dim)
    if len(bad):
        raise DataError(f"{path}: field 'alloc_obs' row {at[bad[0]]}: {lengths[bad[0]]} floats, but the config's "
                        f"observation has {obs_dim} (obs_layout(cfg.sim): slots={cfg.sim.slots}, item_dim="
                        f"{cfg.sim.item_dim}, hist_len={cfg.sim.hist_len}); import with the config of the serving "
                        f"model ({len(bad)} bad row(s))")
    flat = obs_col.take(take).flatten().to_numpy(zero_copy_only=False)
    obs = np.asarray(flat, np.float32).reshape(len(rows), obs_dim)
    bad = np.flatnonzero(~np.isfinite(obs).all(1))
    if len(bad):
        raise DataError(f"{path}: field 'alloc_obs' row {at[bad[0]]}: non-finite value(s) ({len(bad)} bad row(s))")
    out = {"obs": obs, "actions": _column(batch, "alloc_action", take, at, path)}
    a = out["actions"]
    bad = np.flatnonzero(~np.isfinite(a) | (a < 0) | (a >= cfg.num_actions) | (a != np.floor(a)))
    if len(bad):
        raise DataError(f"{path}: field 'alloc_action' row {at[bad[0]]}: value {a[bad[0]].item()!r} is not an action "
                        f"(expected an integer in [0, {cfg.num_actions}); {len(bad)} bad row(s))")
    out["actions"] = a.astype(np.int64)
    p = _column(batch, LOG_PROPENSITY, take, at, path)
    bad = np.flatnonzero(~((p > 0) & (p <= 1)))
    if len(bad):
        raise DataError(f"{path}: field {LOG_PROPENSITY!r} row {at[bad[0]]}: value {p[bad[0]].item()!r} is not a "
                        f"propensity (expected 0 < p <= 1; {len(bad)} bad row(s))")
    out["action_prob"] = p
    joined = np.ones(len(rows), bool)
    for c in JOINED:
        if c not in batch.schema.names:
            out[c], joined = np.full(len(rows), np.nan), np.zeros(len(rows), bool)
            continue
        out[c] = _column(batch, c, take, at, path, allow_null=True)
        null = batch.column(c).take(take).is_null().to_numpy(zero_copy_only=False)
        if null.any() and not simulate:
            i = int(np.flatnonzero(null)[0])
            raise DataError(f"{path}: field {c!r} row {at[i]}: null (no outcome joined to this decision; "
                            f"{int(null.sum())} such row(s)); {SIMULATE_HINT}")
        v = out[c]
        ok = null | (np.isfinite(v) & (v >= 0) & ((v == np.floor(v)) if c == "orders" else True))
        bad = np.flatnonzero(~ok)
        if len(bad):
            what = "a count >= 0" if c == "orders" else "a finite value >= 0"
            raise DataError(f"{path}: field {c!r} row {at[bad[0]]}: value {v[bad[0]].item()!r}; expected {what} "
                            f"({len(bad)} bad row(s))")
        joined &= ~null
    out["joined"] = joined
    if "model_versions" in batch.schema.names:
        decided_by |= _allocation_refs(batch.column("model_versions").take(take))
    ads, orgs = present_counts(obs, cfg.sim)
    short = ~joined & (ads + orgs < cfg.sim.slots)  # no outcome, and too few items to simulate one
    dropped["fewer than K items (no outcome)"] += int(short.sum())
    return {k: v[~short] for k, v in out.items()} if short.any() else out


def _allocation_refs(versions: pa.Array) -> set[str]:
    """The allocation versions named in ``model_versions`` values (JSON {role: name@version})."""
    refs: set[str] = set()
    for text in pc.unique(versions).to_pylist():
        try:
            ref = json.loads(text).get("allocation") if text is not None else None
        except (ValueError, AttributeError):
            continue
        if ref is not None:
            refs.add(ref)
    return refs


def _column(batch: pa.RecordBatch, name: str, take: pa.Array, at: np.ndarray, path: Path,
            allow_null: bool = False) -> np.ndarray:
    """Column ``name``'s values at rows ``take`` as float64 (NaN for null); ``at``: their rows in the file."""
    col = batch.column(name).take(take)
    try:
        values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowException:
        raise DataError(f"{path}: field {name!r}: type {col.type}, expected numbers") from None
    if not allow_null and col.null_count:
        i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{path}: field {name!r} row {at[i]}: null in a row the allocation model decided")
    return values


def _blocks(parts: Iterator[dict[str, np.ndarray]], size: int) -> Iterator[dict[str, np.ndarray]]:
    """``parts`` (column arrays of any lengths) cut into blocks of ``size`` rows (the last one shorter)."""
    pending: list[dict[str, np.ndarray]] = []
    count = 0
    for part in parts:
        pending.append(part)
        count += len(part["obs"])
        while count >= size:
            merged = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            yield {k: v[:size] for k, v in merged.items()}
            count -= size
            pending = [{k: v[size:] for k, v in merged.items()}] if count else []
    if count:
        yield {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}


@functools.cache
def _transition_schema() -> pa.Schema:
    """The Arrow schema, pandas metadata included, of ``make_data``'s frames (and of the whole-frame
    importer's): blocks built as Arrow arrays are then the same bytes as before."""
    f32, i64 = np.zeros(1, np.float32), np.zeros(1, np.int64)
    return pa.Schema.from_pandas(pd.DataFrame({
        "eps_id": i64, "t": i64, "obs": [f32], "actions": i64, "rewards": f32, "r_ad": f32, "r_fee": f32, "r_ex": f32,
        "orders": i64, "pae": f32, "new_obs": [f32], "terminateds": np.ones(1, bool), "truncateds": np.zeros(1, bool),
        "action_prob": f32}), preserve_index=False)


def _transitions(cols: dict[str, np.ndarray], cfg: CrossDQNConfig, block: int, first_eps: int,
                 ) -> tuple[pa.Table, int, float]:
    """One block of kept log rows -> ``make_data``'s columns, the rows without joined outcomes
    simulated (seed :func:`outcome_seed`); also the number of simulated rows and the sum of ``pae``."""
    n, k = len(cols["obs"]), cfg.sim.slots
    fill = ~cols["joined"]
    ads = action_bits(k)[cols["actions"]].sum(1)  # the slots the action asked for (joined rows)
    out = {c: cols[c].copy() for c in JOINED}  # NaN where the outcome is simulated below
    if fill.any():
        sim = fill_outcomes(cols["obs"][fill], cols["actions"][fill], cfg.sim, seed=outcome_seed(cfg.seed, block))
        for c in JOINED:
            out[c][fill] = sim[c]
        ads[fill] = sim["ads"]
    pae = ads / k
    rewards = out["r_ad"] + out["r_fee"] + cfg.sim.eta * out["r_ex"]
    obs = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * cols["obs"].shape[1]),
                                   pa.array(cols["obs"].ravel()))  # (n, obs_dim) as lists, no copy per row

    def f32(v: np.ndarray) -> pa.Array:
        return pa.array(v.astype(np.float32))

    table = pa.Table.from_arrays([
        pa.array(np.arange(first_eps, first_eps + n, dtype=np.int64)), pa.array(np.zeros(n, np.int64)), obs,
        pa.array(cols["actions"]), f32(rewards), f32(out["r_ad"]), f32(out["r_fee"]), f32(out["r_ex"]),
        pa.array(out["orders"].astype(np.int64)), f32(pae), obs, pa.array(np.ones(n, bool)),
        pa.array(np.zeros(n, bool)), f32(cols["action_prob"])], schema=_transition_schema())
    return table, int(fill.sum()), float(pae.sum())


def import_decision_log(files: Sequence[Path], out_dir: Path, cfg: CrossDQNConfig, *,
                        simulate_outcomes: bool = False) -> None:
    """``adray data import crossdqn-log FILE...``: the serving graph's decision logs -> a dataset of
    ``make_data``'s columns and meta, which ``CrossDQNTrainer`` trains on unchanged.

    Rows where the allocation stage fell back (``alloc_fallback``) or that hold no observation
    (``alloc_obs`` null) are left out, counted and reported. Each remaining row is one logged screen
    and one *terminal* transition (``terminateds`` true, ``new_obs = obs``, its own ``eps_id``,
    ``t`` 0): the log does not link a user's successive screens, so Q is fitted to the screen's own
    reward (a contextual bandit, whatever ``gamma`` is). ``action_prob`` is the logged propensity
    (``alloc_propensity``, required in every decided row). Rewards: the joined ``r_ad``, ``r_fee``,
    ``r_ex``, ``orders`` of each row. A log without them, or a row where one is null, is refused,
    unless ``simulate_outcomes`` (``--option simulate_outcomes=true``): then those rows' outcomes are
    simulated from the observation (:func:`workloads.crossdqn.outcomes.fill_outcomes`, seeded per
    block of ``BLOCK_ROWS`` kept rows with :func:`outcome_seed`: ``cfg.seed`` for the first block,
    so up to 65,536 rows get what the whole-frame import gave; rows whose window has fewer than K
    items cannot be simulated and are left out), the console says how many, and the manifest
    records it (``outcomes``, ``filled_in``, ``import_options``). ``pae``: ads shown / K (simulated
    rows) or the slots the action asked for (joined rows); the manifest's ``log_pae`` is their mean.

    Streams: every file's schema is checked first (footers only), then the files are read in order,
    one row group (at most ``BLOCK_ROWS`` rows) at a time, and written in blocks of ``BLOCK_ROWS``
    kept rows through :class:`adray.data.DatasetWriter` (``eps_id`` 0..n-1 in file and row order);
    memory is about two blocks whatever the logs' size. A refusal leaves nothing written.

    Raises:
        DataError: no file, an unreadable file, a missing column, a missing or null propensity, a
            missing or null outcome (without ``simulate_outcomes``), an observation of another
            length than ``obs_layout(cfg.sim)`` gives, an action outside [0, 2^K), a propensity
            outside (0, 1], an impossible outcome (non-finite, negative, fractional orders), or no
            usable row (each message names file, row and field; the row counted in its file).
    """
    if not files:
        raise DataError(f"{FORMAT} import: expected at least one Parquet decision-log file")
    paths = [Path(f) for f in files]
    columns = {p: _log_columns(p, simulate_outcomes) for p in paths}  # every file's schema before any row
    dropped = {"allocation fell back": 0, "no observation": 0, "fewer than K items (no outcome)": 0}
    decided_by: set[str] = set()
    n_in = 0

    def parts() -> Iterator[dict[str, np.ndarray]]:
        nonlocal n_in
        for path in paths:
            first = 0
            for batch in iter_parquet(path, FORMAT, columns[path], BLOCK_ROWS):
                part = _log_rows(batch, path, first, cfg, dropped, decided_by, simulate_outcomes)
                first += batch.num_rows
                n_in += batch.num_rows
                if part is not None:
                    yield part

    n = n_sim = 0
    pae_sum = 0.0  # float64, summed per block as np.mean does: one block's log_pae is the whole-frame one
    with DatasetWriter(out_dir, source=f"crossdqn decision logs: {[p.name for p in paths]}", seed=cfg.seed,
                       overwrite=True) as writer:
        aligned = AlignedWriter(writer)  # the row groups and part files of one whole-split write
        for block, cols in enumerate(_blocks(parts(), BLOCK_ROWS)):
            table, block_sim, block_pae = _transitions(cols, cfg, block, n)
            aligned.write(SPLIT, table)
            n, n_sim, pae_sum = n + table.num_rows, n_sim + block_sim, pae_sum + block_pae
        aligned.flush()
        reasons = ", ".join(f"{v} ({k})" for k, v in dropped.items() if v) or "none"
        if not n:
            raise DataError(f"{FORMAT} import: no usable row in {[str(f) for f in files]} ({n_in} row(s); "
                            f"left out: {reasons})")
        print(f"{FORMAT} import: {n} of {n_in} row(s) kept; left out: {reasons}", file=sys.stderr)
        how = (f"simulated (simulate_outcomes=true): FeedSim on each row's screen rebuilt from alloc_obs, "
               f"workloads.crossdqn.outcomes.fill_outcomes, seed {cfg.seed} (blocks of {BLOCK_ROWS} rows after the "
               "first: workloads.crossdqn.data.outcome_seed)")
        if simulate_outcomes:
            print(f"{FORMAT} import: outcomes {list(JOINED)} SIMULATED for {n_sim} of {n} row(s) ({how}); "
                  f"{n - n_sim} row(s) keep their joined outcomes", file=sys.stderr)
        filled = {"outcomes": {"columns": list(JOINED), "rows": n_sim, "of": n, "how": how}} if n_sim else {}
        writer.close({
            "obs_layout": obs_layout(cfg.sim), "num_actions": cfg.num_actions,
            "log_pae": pae_sum / n, "log_spread": None, "sim": cfg.sim.to_dict(),
            "decided_by": sorted(decided_by), "left_out": dropped, "outcomes": {"joined": n - n_sim, "simulated": n_sim},
            "import_options": {"simulate_outcomes": simulate_outcomes}, "filled_in": filled})
