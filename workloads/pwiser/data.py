"""PWiseR datasets: AliExpress and Ali-CCP readers, and a seeded CTR/CVR generator with noisy clicks.

Every dataset has splits train / val / test with columns: categorical id fields (int64, 0 = unknown),
numeric fields (float32) and the labels ``click`` and ``conversion`` (Ali-CCP's ``purchase`` is
renamed). The manifest's ``meta["feature_map"]`` is the FeatureMap (vocab sizes from train).

The generator implements the mechanism the paper targets: a real click is driven by a latent
user x item affinity, a conversion happens only after a real click and is driven by affinity too,
and a configurable share of all clicks is noise (bots, accidental clicks) independent of affinity.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from adray.data import (
    DataError,
    DatasetWriter,
    FeatureMap,
    leak_guard,
    read_dataset,
    require_columns,
    require_finite,
    require_same_features,
)
from adray.data.csvfile import iter_frames
from adray.data.dataset import iter_row_groups
from adray.data.features import CategoricalFeature

from .config import PWiseRConfig

LABELS = ("click", "conversion")
ALICPP_SPARSE = re.compile(r"^\d+(_\d+)?$")  # 101, 121, 301, 109_14, ...
ALICPP_DENSE = re.compile(r"^D\d+(_\d+)?$")  # D109_14, D508, ...


# ------------------------------------------------------------------------------------ reading

GUARD_SAMPLE_ROWS = 200_000
"""Rows the leak guard measures on import: a seeded uniform sample of all the files' rows (all of
them when fewer); the manifest's ``leak_guard.sample_rows`` says how many it measured."""
SPOOL_BATCH_ROWS = 65_536
"""Rows per batch when the validated rows are read back from the local spool (passes 2 and 3)."""


def _check_labels(df: pd.DataFrame, where: str, offset: int = 0) -> None:
    """click/conversion present, numeric, finite, in {0, 1}, and conversion implies click."""
    require_columns(df, LABELS, where)
    require_finite(df, LABELS, where, offset=offset)
    for c in LABELS:
        y = pd.to_numeric(df[c]).to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isin(y, (0.0, 1.0)))
        if len(bad):
            raise DataError(f"{where}: label column {c!r} row {offset + int(bad[0])}: {df[c].iloc[bad[0]]!r}; "
                            "expected 0 or 1")
    orphan = np.flatnonzero((df["conversion"].to_numpy() == 1) & (df["click"].to_numpy() == 0))
    if len(orphan):
        raise DataError(
            f"{where}: row {offset + int(orphan[0])} has conversion=1 but click=0 ({len(orphan)} such rows in this "
            "chunk); a conversion requires a click (impression -> click -> conversion)"
        )


def _check_categorical(df: pd.DataFrame, columns: Sequence[str], where: str, offset: int = 0) -> None:
    for c in columns:
        missing = np.flatnonzero(df[c].isna().to_numpy())
        if len(missing):
            raise DataError(f"{where}: categorical column {c!r} row {offset + int(missing[0])} is empty/NaN; "
                            "expected an id")


def _order_files(files: Sequence[Path]) -> list[Path]:
    """1 to 3 files in split order (train[, val], test). With two, the one whose name contains
    'test' is the test file whatever the order."""
    paths = [Path(f) for f in files]
    if not 1 <= len(paths) <= 3:
        raise DataError(f"expected 1 to 3 files (train[, val], test), got {len(paths)}: {paths}")
    if len(paths) == 2 and "test" in paths[0].name.lower() and "test" not in paths[1].name.lower():
        paths = [paths[1], paths[0]]
    return paths


def _headers(paths: Sequence[Path], fmt: str, rename: dict[str, str]) -> dict[Path, list[str]]:
    """Each file's columns (from its first chunk; the file checks run here: missing, empty, header only)."""
    return {p: [rename.get(c, c) for c in next(iter_frames(p, fmt)).columns] for p in paths}


def _split_sizes(counts: list[int], cfg: PWiseRConfig) -> list[dict[str, int]]:
    """Per file, how many of its rows go to each split. 3 files: train, val, test. 2: val carved
    from the first. 1: val and test carved from it."""
    if len(counts) == 3:
        return [{s: n} for s, n in zip(SPLITS, counts)]
    n = counts[0]
    n_val = max(1, int(round(cfg.val_fraction * n)))
    if len(counts) == 2:
        return [{"train": n - n_val, "val": n_val}, {"test": counts[1]}]
    n_test = max(1, int(round(cfg.test_fraction * n)))
    return [{"train": n - n_val - n_test, "val": n_val, "test": n_test}]


SPLITS = ("train", "val", "test")


class _Carver:
    """Seeded exact-size random assignment of a stream of rows to splits, chunk by chunk (memory:
    one chunk): each split gets exactly its size, and every subset of that size is equally likely
    (sequential multivariate hypergeometric draws). The same seed and chunks give the same labels."""

    def __init__(self, sizes: dict[str, int], seed: int, file_index: int) -> None:
        self.names, self.left = list(sizes), np.array(list(sizes.values()), dtype=np.int64)
        self.rng = np.random.default_rng((seed, 0xC4A7, file_index))

    def labels(self, m: int) -> np.ndarray:
        """(m,) split index of the next ``m`` rows."""
        if len(self.names) == 1:
            return np.zeros(m, np.int8)
        take = self.rng.multivariate_hypergeometric(self.left, m)
        self.left -= take
        out = np.repeat(np.arange(len(self.names), dtype=np.int8), take)
        self.rng.shuffle(out)
        return out


def _import(
    paths: list[Path],
    cat_cols: list[str],
    num_cols: list[str],
    out_dir: Path | str,
    source: str,
    cfg: PWiseRConfig,
    rename: dict[str, str] | None = None,
) -> None:
    """Stream the files into a dataset, in three passes over bounded chunks:

    1. validate every chunk (errors name file, column and 0-based data row of the file), spool the
       validated columns to a local temporary Parquet file per input, count rows, and keep a seeded
       uniform sample (``GUARD_SAMPLE_ROWS``) for the leak guard, which then runs on it;
    2. assign rows to splits (:class:`_Carver`) and collect the train split's vocabulary of each
       categorical column (ids 1..V in order of first appearance; unseen -> 0, counted per split and
       column in the manifest's ``out_of_vocab``);
    3. write each chunk's rows, re-indexed, to its split.

    Rows keep their file order within a split (the trainers shuffle).
    """
    rename = rename or {}
    keep = [*cat_cols, *num_cols, *LABELS]
    floats = [*num_cols, *LABELS]
    rng = np.random.default_rng((cfg.seed, 0x5A3B))
    sample: pd.DataFrame | None = None  # with "_key" (uniform) and "_pos" (global row) columns
    counts: list[int] = []
    with tempfile.TemporaryDirectory(prefix="adray-import-") as spool:
        seen = 0
        for i, path in enumerate(paths):
            where, offset, writer = f"{path} ({source})", 0, None
            for df in iter_frames(path, source):
                df = df.rename(columns=rename)
                require_columns(df, keep, where)
                _check_labels(df, where, offset)
                _check_categorical(df, cat_cols, where, offset)
                require_finite(df, num_cols, where, offset=offset)
                df = df[keep].astype({c: np.float64 for c in floats})
                table = pa.Table.from_pandas(df, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(Path(spool) / f"{i}.parquet", table.schema)
                try:
                    writer.write_table(table.cast(writer.schema))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                    raise DataError(f"{where}: rows from {offset} on: column types {table.schema.types} differ from "
                                    f"the file's first rows' ({exc}); expected one type per column") from None
                cand = df.assign(_key=rng.random(len(df)), _pos=np.arange(seen, seen + len(df)))
                sample = cand if sample is None else pd.concat([sample, cand], ignore_index=True)
                if len(sample) > GUARD_SAMPLE_ROWS:
                    sample = sample.nsmallest(GUARD_SAMPLE_ROWS, "_key")
                offset += len(df)
                seen += len(df)
            if writer is not None:
                writer.close()
            counts.append(offset)
        assert sample is not None
        sample = sample.sort_values("_pos").reset_index(drop=True)
        labels = {c: sample[c].to_numpy(np.int64) for c in LABELS}
        guard = leak_guard(sample, [*cat_cols, *num_cols], labels, cfg.keep_leaky, ", ".join(map(str, paths)))
        cat_cols = [c for c in cat_cols if c in guard.kept_columns]
        num_cols = [c for c in num_cols if c in guard.kept_columns]
        sizes = _split_sizes(counts, cfg)

        def chunks() -> Iterator[tuple[pd.DataFrame, dict[str, pd.DataFrame]]]:
            for i, per in enumerate(sizes):
                carver = _Carver(per, cfg.seed, i)
                for batch in iter_row_groups(pq.ParquetFile(Path(spool) / f"{i}.parquet"), SPOOL_BATCH_ROWS):
                    df = batch.to_pandas()
                    lab = carver.labels(len(df))
                    yield df, {name: df[lab == j] for j, name in enumerate(carver.names)}

        vocab: dict[str, dict[Any, int]] = {c: {} for c in cat_cols}  # value -> id (1..V)
        for _, parts in chunks():
            if "train" in parts:
                for c in cat_cols:
                    ids = vocab[c]
                    for v in pd.unique(parts["train"][c]):
                        ids.setdefault(v, len(ids) + 1)
        index = {c: pd.Index(list(vocab[c])) for c in cat_cols}
        unseen: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
        with DatasetWriter(out_dir, source=f"{source}:{','.join(map(str, paths))}", seed=cfg.seed,
                           overwrite=True) as out:
            for _, parts in chunks():
                for name, df in parts.items():
                    cols = {c: index[c].get_indexer(df[c]).astype(np.int64) + 1 for c in cat_cols}
                    for c in cat_cols:
                        if n := int((cols[c] == 0).sum()):
                            unseen[name][c] = unseen[name].get(c, 0) + n
                    cols |= {c: df[c].to_numpy(dtype=np.float32) for c in [*num_cols, *LABELS]}
                    out.write(name, pd.DataFrame(cols))
            fm = FeatureMap(
                categorical=tuple(CategoricalFeature(c, len(vocab[c]) + 1) for c in cat_cols),
                numeric=tuple(num_cols),
                labels=LABELS,
            )
            out.close({"feature_map": fm.to_dict(), "format": source,
                       "leak_guard": {**guard.meta(), "sample_rows": len(sample), "rows": sum(counts)},
                       "out_of_vocab": unseen})


def import_aliexpress(files: Sequence[Path], out_dir: Path | str, cfg: PWiseRConfig) -> None:
    """AliExpress (FR/NL/US/ES) CSVs: ``search_id, categorical_1..16, numerical_1..63, click,
    conversion`` (usually train.csv + test.csv). ``search_id`` is not a feature. Streams: memory is
    bounded by one chunk of each file, whatever its size."""
    paths = _order_files(files)
    headers = _headers(paths, "aliexpress", {})
    require_same_features({p: [c for c in cols if c.startswith(("categorical_", "numerical_"))]
                           for p, cols in headers.items()})
    first, header = paths[0], headers[paths[0]]
    cat_cols = [c for c in header if c.startswith("categorical_")]
    num_cols = [c for c in header if c.startswith("numerical_")]
    if not cat_cols and not num_cols:
        raise DataError(f"{first}: no categorical_* or numerical_* columns; is this the AliExpress layout?")
    _import(paths, cat_cols, num_cols, out_dir, "aliexpress", cfg)


def import_alicpp(files: Sequence[Path], out_dir: Path | str, cfg: PWiseRConfig) -> None:
    """Ali-CCP CSVs (processed layout): labels ``click``, ``purchase``; sparse fields named by
    numeric ids (``101``, ``121``, ..., ``301``, ``109_14``) and dense fields prefixed ``D``
    (``D109_14``, ``D508``). Other columns are ignored. ``purchase`` becomes ``conversion``.
    Streams, as :func:`import_aliexpress`."""
    paths = _order_files(files)
    rename = {"purchase": "conversion"}
    headers = _headers(paths, "alicpp", {})
    for path, cols in headers.items():
        if "purchase" not in cols:
            raise DataError(f"{path} (alicpp): missing label column 'purchase'; found {cols[:20]}")
    require_same_features({p: [c for c in cols if ALICPP_SPARSE.match(c) or ALICPP_DENSE.match(c)]
                           for p, cols in headers.items()})
    first, header = paths[0], headers[paths[0]]
    cat_cols = [c for c in header if ALICPP_SPARSE.match(c)]
    num_cols = [c for c in header if ALICPP_DENSE.match(c)]
    if not cat_cols:
        raise DataError(f"{first}: no sparse field columns (101, 121, ..., 109_14); is this Ali-CCP?")
    _import(paths, cat_cols, num_cols, out_dir, "alicpp", cfg, rename)


IMPORTERS = {"aliexpress": import_aliexpress, "alicpp": import_alicpp}


# ---------------------------------------------------------------------------------- generator


def _calibrate(logits: np.ndarray, target: float, weights: np.ndarray | None = None) -> float:
    """Offset b with weighted mean(sigmoid(logits + b)) == target (bisection, vectorised)."""
    lo, hi = -30.0, 30.0
    w = np.ones_like(logits) if weights is None else weights
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        rate = float(np.sum(w / (1.0 + np.exp(-(logits + mid)))) / np.sum(w))
        lo, hi = (mid, hi) if rate < target else (lo, mid)
    return 0.5 * (lo + hi)


def _bucket(x: np.ndarray) -> np.ndarray:
    """Coarse segment of latent vectors: strongest of the first k dims and its sign -> 1..2k."""
    j = np.argmax(np.abs(x), axis=1)
    return j * 2 + (x[np.arange(len(x)), j] > 0) + 1


GEN_BLOCK_ROWS = 262_144
"""Rows the generator makes at once (memory is bounded by one block, whatever ``cfg.rows``). A
dataset of at most this many rows is exactly the one-block generator's (:func:`generate`)."""
PILOT_ROWS = GEN_BLOCK_ROWS
"""Rows of the seeded pilot draw that fixes the affinity standardisation and the calibration
constants of a dataset of several blocks (so every block shares one CTR/CVR model)."""


@dataclasses.dataclass(frozen=True)
class _World:
    """The latent users and items of one seed (what every block of a dataset shares)."""

    user_vec: np.ndarray  # (U, r)
    item_vec: np.ndarray  # (I, r)
    user_bias: np.ndarray  # (U,)
    item_bias: np.ndarray  # (I,)
    user_pop: np.ndarray  # (U,) sampling weights
    item_pop: np.ndarray  # (I,)


def _world(cfg: PWiseRConfig, rng: np.random.Generator) -> _World:
    r = cfg.latent_dim
    user_vec = rng.normal(size=(cfg.num_users, r)).astype(np.float32)
    item_vec = rng.normal(size=(cfg.num_items, r)).astype(np.float32)
    user_bias = rng.normal(scale=0.5, size=cfg.num_users).astype(np.float32)
    item_bias = rng.normal(scale=0.5, size=cfg.num_items).astype(np.float32)
    user_pop = 1.0 / (np.arange(cfg.num_users) + 10.0) ** 0.8  # long-tailed activity
    item_pop = 1.0 / (np.arange(cfg.num_items) + 10.0) ** 0.9
    return _World(user_vec, item_vec, user_bias, item_bias, user_pop, item_pop)


def _draw(w: _World, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` impressions' context: who, what, where, and the raw affinity u·v."""
    up, ip = w.user_pop, w.item_pop
    d = {"user": rng.choice(len(up), size=n, p=up / up.sum()), "item": rng.choice(len(ip), size=n, p=ip / ip.sum()),
         "position": rng.integers(0, 5, size=n), "source": rng.integers(0, 8, size=n),
         "hour": rng.integers(0, 24, size=n), "device": rng.integers(0, 3, size=n)}  # device: no signal
    d["u"], d["v"] = w.user_vec[d["user"]], w.item_vec[d["item"]]  # (n, r)
    d["raw_aff"] = np.einsum("nr,nr->n", d["u"], d["v"])
    return d


def _probabilities(cfg: PWiseRConfig, w: _World, d: dict[str, np.ndarray], k: dict[str, Any]
                   ) -> tuple[np.ndarray, ...]:
    """Standardised affinity and the real-click, conversion and noise-click probabilities (n,)."""
    aff = (d["raw_aff"] - k["aff_mean"]) / (k["aff_std"] + 1e-9)
    s = cfg.affinity_scale
    ctr_lin = (s * aff + w.user_bias[d["user"]] + w.item_bias[d["item"]] + 0.5 - 0.25 * d["position"]
               + 0.2 * np.sin(2 * np.pi * d["hour"] / 24))
    p_real = 1.0 / (1.0 + np.exp(-(ctr_lin + k["c_ctr"])))
    p_cvr = 1.0 / (1.0 + np.exp(-(s * cfg.cvr_affinity * aff + k["c_cvr"])))
    noise_factor = np.where(d["source"] >= 6, 5.0, 1.0) * np.where(d["position"] == 0, 2.0, 1.0)
    p_noise = np.clip(k["noise_scale"] * noise_factor, 0.0, 1.0)
    return aff, p_real, p_cvr, p_noise


def _constants(cfg: PWiseRConfig, w: _World, d: dict[str, np.ndarray]) -> dict[str, Any]:
    """The standardisation and calibration constants measured on the draw ``d``."""
    # numpy scalars kept as they are (float32 here): the arithmetic of the one-frame generator exactly
    k: dict[str, Any] = {"aff_mean": d["raw_aff"].mean(), "aff_std": d["raw_aff"].std()}
    aff = (d["raw_aff"] - k["aff_mean"]) / (k["aff_std"] + 1e-9)
    s = cfg.affinity_scale
    ctr_lin = (s * aff + w.user_bias[d["user"]] + w.item_bias[d["item"]] + 0.5 - 0.25 * d["position"]
               + 0.2 * np.sin(2 * np.pi * d["hour"] / 24))
    k["c_ctr"] = _calibrate(ctr_lin, cfg.ctr * (1.0 - cfg.noise_click_share))
    p_real = 1.0 / (1.0 + np.exp(-(ctr_lin + k["c_ctr"])))
    k["c_cvr"] = _calibrate(s * cfg.cvr_affinity * aff, cfg.cvr, weights=p_real)
    noise_factor = np.where(d["source"] >= 6, 5.0, 1.0) * np.where(d["position"] == 0, 2.0, 1.0)
    share = cfg.noise_click_share
    k["noise_scale"] = share / (1.0 - share) * p_real.mean() / max(float(((1 - p_real) * noise_factor).mean()), 1e-12)
    return k


def _rows(cfg: PWiseRConfig, w: _World, d: dict[str, np.ndarray], k: dict[str, Any],
          rng: np.random.Generator) -> pd.DataFrame:
    n = len(d["user"])
    aff, p_real, p_cvr, p_noise = _probabilities(cfg, w, d, k)
    real = rng.random(n) < p_real
    noise = ~real & (rng.random(n) < p_noise)
    conversion = real & (rng.random(n) < p_cvr)

    u, v = d["u"], d["v"]
    kd, sd = min(4, cfg.latent_dim), cfg.feature_noise
    cols: dict[str, np.ndarray] = {
        "user_id": d["user"] + 1, "item_id": d["item"] + 1,
        "user_segment": _bucket(u[:, :kd]), "item_category": _bucket(v[:, :kd]),
        "position": d["position"] + 1, "traffic_source": d["source"] + 1, "hour": d["hour"] + 1,
        "device": d["device"] + 1,
    }
    cols = {c: x.astype(np.int64) for c, x in cols.items()}
    for j in range(kd):
        cols[f"user_hint_{j}"] = (u[:, j] + rng.normal(scale=sd, size=n)).astype(np.float32)
        cols[f"item_hint_{j}"] = (v[:, j] + rng.normal(scale=sd, size=n)).astype(np.float32)
    cols["affinity_hint"] = (aff + rng.normal(scale=1.5 * sd, size=n)).astype(np.float32)
    cols["item_popularity"] = np.log(w.item_pop[d["item"]] / w.item_pop.max()).astype(np.float32) / 5.0
    cols["noise_num_0"] = rng.normal(size=n).astype(np.float32)
    cols["noise_num_1"] = rng.random(n).astype(np.float32)
    cols["click"] = (real | noise).astype(np.float32)
    cols["conversion"] = conversion.astype(np.float32)
    cols["noise_click"] = noise.astype(np.float32)  # diagnostics only; not a feature
    return pd.DataFrame(cols)


def generate(cfg: PWiseRConfig) -> pd.DataFrame:
    """``cfg.rows`` impressions with features, ``click``, ``conversion`` and ``noise_click``, in
    one frame (:func:`generate_blocks` streams them).

    Real click:  logit = s * a(u, i) + b_user + b_item + pos_effect + hour_effect + c_ctr
    Conversion:  only after a real click, logit = s * cvr_affinity * a(u, i) + c_cvr
    Noise click: on impressions without a real click, prob ∝ traffic-source and position factors
                 (bots in two sources, accidental clicks on the top slot), independent of a(u, i);
                 scaled so noise clicks are ``noise_click_share`` of all clicks.
    a = standardised u·v; c_ctr, c_cvr calibrated to the target rates.
    """
    rng = np.random.default_rng(cfg.seed)
    w = _world(cfg, rng)
    d = _draw(w, cfg.rows, rng)
    return _rows(cfg, w, d, _constants(cfg, w, d), rng)


def generate_blocks(cfg: PWiseRConfig, block_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The impressions of :func:`generate` in blocks of at most ``block_rows`` (default
    ``GEN_BLOCK_ROWS``) rows (memory: one block).

    Up to ``block_rows`` rows: exactly :func:`generate`'s frame. Beyond: the world (users, items)
    is the same seed's; the standardisation of a and the calibration constants are measured once on
    a seeded pilot draw of ``PILOT_ROWS`` impressions (the rates then match their targets to about
    1e-3 instead of exactly); block ``b`` draws its rows from the stream ``(seed, b)``.
    """
    block_rows = block_rows or GEN_BLOCK_ROWS
    if cfg.rows <= block_rows:
        yield generate(cfg)
        return
    rng = np.random.default_rng(cfg.seed)
    w = _world(cfg, rng)
    k = _constants(cfg, w, _draw(w, min(cfg.rows, PILOT_ROWS), np.random.default_rng((cfg.seed, 0x9170))))
    for b, start in enumerate(range(0, cfg.rows, block_rows)):
        brng = np.random.default_rng((cfg.seed, b))
        yield _rows(cfg, w, _draw(w, min(block_rows, cfg.rows - start), brng), k, brng)


GEN_CATEGORICAL = ("user_id", "item_id", "user_segment", "item_category", "position", "traffic_source",
                   "hour", "device")


def make_data(cfg: PWiseRConfig, out_dir: Path | str) -> None:
    """Write the dataset of ``cfg``: import ``cfg.import_file`` if set, else generate (seeded), block
    by block: each block's rows go to train / val / test by a seeded permutation of the block
    (one block: the permutation of :func:`generate`'s rows that this generator always used)."""
    if cfg.import_file:
        files = [Path(f.strip()) for f in cfg.import_file.split(",") if f.strip()]
        IMPORTERS[cfg.import_format](files, out_dir, cfg)
        return
    vocab = {"user_id": cfg.num_users + 1, "item_id": cfg.num_items + 1, "user_segment": 2 * min(4, cfg.latent_dim) + 1,
             "item_category": 2 * min(4, cfg.latent_dim) + 1, "position": 6, "traffic_source": 9, "hour": 25,
             "device": 4}
    single = cfg.rows <= GEN_BLOCK_ROWS
    sums = np.zeros(3)  # clicks, conversions, noise clicks
    numeric: list[str] = []
    with DatasetWriter(out_dir, source="pwiser-generator", seed=cfg.seed, overwrite=True) as writer:
        for b, df in enumerate(generate_blocks(cfg)):
            perm = np.random.default_rng(cfg.seed + 1 if single else (cfg.seed + 1, b)).permutation(len(df))
            n_val, n_test = int(cfg.val_fraction * len(df)), int(cfg.test_fraction * len(df))
            writer.write("train", df.iloc[perm[n_val + n_test:]])
            writer.write("val", df.iloc[perm[:n_val]])
            writer.write("test", df.iloc[perm[n_val:n_val + n_test]])
            sums += df[["click", "conversion", "noise_click"]].to_numpy(np.float64).sum(0)
            numeric = [c for c in df.columns if c not in GEN_CATEGORICAL and c not in (*LABELS, "noise_click")]
        fm = FeatureMap(tuple(CategoricalFeature(c, vocab[c]) for c in GEN_CATEGORICAL), tuple(numeric), LABELS)
        stats = {"click_rate": float(sums[0] / cfg.rows), "conversion_rate": float(sums[1] / cfg.rows),
                 "noise_click_share": float(sums[2] / max(sums[0], 1.0))}
        writer.close({"feature_map": fm.to_dict(), "format": "generated", "stats": stats,
                      "generator_block_rows": GEN_BLOCK_ROWS})


# ------------------------------------------------------------------------------- TorchSpec side


def model_meta(data_dir: Path | str, cfg: Any) -> dict[str, Any]:
    meta = read_dataset(data_dir).meta
    if "feature_map" not in meta:
        raise DataError(f"{data_dir}: manifest meta has no 'feature_map'; not a pwiser dataset")
    return {"feature_map": meta["feature_map"]}


def load_split(data_dir: Path | str, split: str, cfg: Any) -> dict[str, np.ndarray]:
    """``{"x_cat": (N, C) int64, "x_num": (N, D) float32, "click": (N,), "conversion": (N,)}``."""
    ds = read_dataset(data_dir)
    fm = FeatureMap.from_dict(model_meta(data_dir, cfg)["feature_map"])
    arrays = fm.arrays(ds.read(split), where=f"{ds.display} split {split!r}")
    return {k: arrays[k] for k in ("x_cat", "x_num", *LABELS)}
