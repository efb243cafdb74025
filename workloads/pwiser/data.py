"""PWiseR datasets: AliExpress and Ali-CCP readers, and a seeded CTR/CVR generator with noisy clicks.

Every dataset has splits train / val / test with columns: categorical id fields (int64, 0 = unknown),
numeric fields (float32) and the labels ``click`` and ``conversion`` (Ali-CCP's ``purchase`` is
renamed). The manifest's ``meta["feature_map"]`` is the FeatureMap (vocab sizes from train).

The generator implements the mechanism the paper targets: a real click is driven by a latent
user x item affinity, a conversion happens only after a real click and is driven by affinity too,
and a configurable share of all clicks is noise (bots, accidental clicks) independent of affinity.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adray.data import (
    DataError,
    FeatureMap,
    leak_guard,
    read_dataset,
    read_table,
    require_columns,
    require_finite,
    require_same_features,
    write_dataset,
)
from adray.data.features import CategoricalFeature

from .config import PWiseRConfig

LABELS = ("click", "conversion")
ALICPP_SPARSE = re.compile(r"^\d+(_\d+)?$")  # 101, 121, 301, 109_14, ...
ALICPP_DENSE = re.compile(r"^D\d+(_\d+)?$")  # D109_14, D508, ...


# ------------------------------------------------------------------------------------ reading


def _check_labels(df: pd.DataFrame, where: str) -> None:
    """click/conversion present, numeric, finite, in {0, 1}, and conversion implies click."""
    require_columns(df, LABELS, where)
    require_finite(df, LABELS, where)
    for c in LABELS:
        y = pd.to_numeric(df[c]).to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isin(y, (0.0, 1.0)))
        if len(bad):
            raise DataError(f"{where}: label column {c!r} row {int(bad[0])}: {df[c].iloc[bad[0]]!r}; expected 0 or 1")
    orphan = np.flatnonzero((df["conversion"].to_numpy() == 1) & (df["click"].to_numpy() == 0))
    if len(orphan):
        raise DataError(
            f"{where}: row {int(orphan[0])} has conversion=1 but click=0 ({len(orphan)} such rows); "
            "a conversion requires a click (impression -> click -> conversion)"
        )


def _check_categorical(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    for c in columns:
        missing = np.flatnonzero(df[c].isna().to_numpy())
        if len(missing):
            raise DataError(f"{where}: categorical column {c!r} row {int(missing[0])} is empty/NaN; expected an id")


def _read_files(files: Sequence[Path], fmt: str) -> dict[Path, pd.DataFrame]:
    """1 to 3 CSVs in split order (train[, val], test). With two, the one whose name contains
    'test' is the test file whatever the order."""
    paths = [Path(f) for f in files]
    if not 1 <= len(paths) <= 3:
        raise DataError(f"expected 1 to 3 files (train[, val], test), got {len(paths)}: {paths}")
    if len(paths) == 2 and "test" in paths[0].name.lower() and "test" not in paths[1].name.lower():
        paths = [paths[1], paths[0]]
    return {p: read_table(p, fmt) for p in paths}


def _split(frames: list[pd.DataFrame], cfg: PWiseRConfig) -> dict[str, pd.DataFrame]:
    """3 frames: train, val, test. 2: val carved (seeded) from train. 1: random train/val/test."""
    if len(frames) == 3:
        return dict(zip(("train", "val", "test"), frames))
    first = frames[0]
    perm = np.random.default_rng(cfg.seed).permutation(len(first))
    n_val = max(1, int(round(cfg.val_fraction * len(first))))
    if len(frames) == 2:
        return {"train": first.iloc[perm[n_val:]], "val": first.iloc[perm[:n_val]], "test": frames[1]}
    n_test = max(1, int(round(cfg.test_fraction * len(first))))
    return {"train": first.iloc[perm[n_val + n_test:]], "val": first.iloc[perm[:n_val]],
            "test": first.iloc[perm[n_val:n_val + n_test]]}


def _import(
    frames: dict[Path, pd.DataFrame],
    cat_cols: list[str],
    num_cols: list[str],
    out_dir: Path,
    source: str,
    cfg: PWiseRConfig,
) -> None:
    """Validate every file (errors name file, column and 0-based data row), run the leak guard over
    all files, split, index categorical values with the train vocabulary (ids 1..V; unseen -> 0,
    counted per split and column in the manifest's ``out_of_vocab``), write the dataset."""
    for path, df in frames.items():
        where = f"{path} ({source})"
        require_columns(df, [*cat_cols, *num_cols], where)
        _check_labels(df, where)
        _check_categorical(df, cat_cols, where)
        require_finite(df, num_cols, where)
    everything = pd.concat([df[[*cat_cols, *num_cols, *LABELS]] for df in frames.values()], ignore_index=True)
    labels = {c: pd.to_numeric(everything[c]).to_numpy(np.int64) for c in LABELS}
    guard = leak_guard(everything, [*cat_cols, *num_cols], labels, cfg.keep_leaky, ", ".join(map(str, frames)))
    cat_cols = [c for c in cat_cols if c in guard.kept_columns]
    num_cols = [c for c in num_cols if c in guard.kept_columns]
    splits = _split(list(frames.values()), cfg)
    vocab = {c: pd.Index(pd.unique(splits["train"][c])) for c in cat_cols}  # id = position + 1
    out: dict[str, pd.DataFrame] = {}
    unseen: dict[str, dict[str, int]] = {}  # per split, per column: values not in train's vocabulary (-> id 0)
    for name, df in splits.items():
        cols: dict[str, np.ndarray] = {c: vocab[c].get_indexer(df[c]).astype(np.int64) + 1 for c in cat_cols}
        unseen[name] = {c: n for c in cat_cols if (n := int((cols[c] == 0).sum()))}
        cols |= {c: pd.to_numeric(df[c]).to_numpy(dtype=np.float32) for c in [*num_cols, *LABELS]}
        out[name] = pd.DataFrame(cols)
    fm = FeatureMap(
        categorical=tuple(CategoricalFeature(c, len(vocab[c]) + 1) for c in cat_cols),
        numeric=tuple(num_cols),
        labels=LABELS,
    )
    write_dataset(out_dir, out, source=f"{source}:{','.join(map(str, frames))}", seed=cfg.seed,
                  meta={"feature_map": fm.to_dict(), "format": source, "leak_guard": guard.meta(),
                        "out_of_vocab": unseen})


def import_aliexpress(files: Sequence[Path], out_dir: Path, cfg: PWiseRConfig) -> None:
    """AliExpress (FR/NL/US/ES) CSVs: ``search_id, categorical_1..16, numerical_1..63, click,
    conversion`` (usually train.csv + test.csv). ``search_id`` is not a feature."""
    frames = _read_files(files, "aliexpress")
    require_same_features({p: [c for c in df.columns if c.startswith(("categorical_", "numerical_"))]
                           for p, df in frames.items()})
    first, header = next(iter(frames)), list(next(iter(frames.values())).columns)
    cat_cols = [c for c in header if c.startswith("categorical_")]
    num_cols = [c for c in header if c.startswith("numerical_")]
    if not cat_cols and not num_cols:
        raise DataError(f"{first}: no categorical_* or numerical_* columns; is this the AliExpress layout?")
    _import(frames, cat_cols, num_cols, Path(out_dir), "aliexpress", cfg)


def import_alicpp(files: Sequence[Path], out_dir: Path, cfg: PWiseRConfig) -> None:
    """Ali-CCP CSVs (processed layout): labels ``click``, ``purchase``; sparse fields named by
    numeric ids (``101``, ``121``, ..., ``301``, ``109_14``) and dense fields prefixed ``D``
    (``D109_14``, ``D508``). Other columns are ignored. ``purchase`` becomes ``conversion``."""
    frames = _read_files(files, "alicpp")
    for path, df in frames.items():
        if "purchase" not in df.columns:
            raise DataError(f"{path} (alicpp): missing label column 'purchase'; found {list(df.columns)[:20]}")
        frames[path] = df.rename(columns={"purchase": "conversion"})
    require_same_features({p: [c for c in df.columns if ALICPP_SPARSE.match(c) or ALICPP_DENSE.match(c)]
                           for p, df in frames.items()})
    first, header = next(iter(frames)), list(next(iter(frames.values())).columns)
    cat_cols = [c for c in header if ALICPP_SPARSE.match(c)]
    num_cols = [c for c in header if ALICPP_DENSE.match(c)]
    if not cat_cols:
        raise DataError(f"{first}: no sparse field columns (101, 121, ..., 109_14); is this Ali-CCP?")
    _import(frames, cat_cols, num_cols, Path(out_dir), "alicpp", cfg)


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


def generate(cfg: PWiseRConfig) -> pd.DataFrame:
    """``cfg.rows`` impressions with features, ``click``, ``conversion`` and ``noise_click``.

    Real click:  logit = s * a(u, i) + b_user + b_item + pos_effect + hour_effect + c_ctr
    Conversion:  only after a real click, logit = s * cvr_affinity * a(u, i) + c_cvr
    Noise click: on impressions without a real click, prob ∝ traffic-source and position factors
                 (bots in two sources, accidental clicks on the top slot), independent of a(u, i);
                 scaled so noise clicks are ``noise_click_share`` of all clicks.
    a = standardised u·v; c_ctr, c_cvr calibrated to the target rates.
    """
    rng = np.random.default_rng(cfg.seed)
    n, r = cfg.rows, cfg.latent_dim
    user_vec = rng.normal(size=(cfg.num_users, r)).astype(np.float32)
    item_vec = rng.normal(size=(cfg.num_items, r)).astype(np.float32)
    user_bias = rng.normal(scale=0.5, size=cfg.num_users).astype(np.float32)
    item_bias = rng.normal(scale=0.5, size=cfg.num_items).astype(np.float32)
    user_pop = 1.0 / (np.arange(cfg.num_users) + 10.0) ** 0.8  # long-tailed activity
    item_pop = 1.0 / (np.arange(cfg.num_items) + 10.0) ** 0.9
    user = rng.choice(cfg.num_users, size=n, p=user_pop / user_pop.sum())
    item = rng.choice(cfg.num_items, size=n, p=item_pop / item_pop.sum())
    position = rng.integers(0, 5, size=n)
    source = rng.integers(0, 8, size=n)
    hour = rng.integers(0, 24, size=n)
    device = rng.integers(0, 3, size=n)  # no signal

    u, v = user_vec[user], item_vec[item]  # (n, r)
    aff = np.einsum("nr,nr->n", u, v)
    aff = (aff - aff.mean()) / (aff.std() + 1e-9)  # (n,)
    s = cfg.affinity_scale
    ctr_lin = (s * aff + user_bias[user] + item_bias[item] + 0.5 - 0.25 * position
               + 0.2 * np.sin(2 * np.pi * hour / 24))
    real_ctr = cfg.ctr * (1.0 - cfg.noise_click_share)
    p_real = 1.0 / (1.0 + np.exp(-(ctr_lin + _calibrate(ctr_lin, real_ctr))))
    cvr_lin = s * cfg.cvr_affinity * aff
    p_cvr = 1.0 / (1.0 + np.exp(-(cvr_lin + _calibrate(cvr_lin, cfg.cvr, weights=p_real))))
    noise_factor = np.where(source >= 6, 5.0, 1.0) * np.where(position == 0, 2.0, 1.0)
    share = cfg.noise_click_share
    scale = share / (1.0 - share) * p_real.mean() / max(float(((1 - p_real) * noise_factor).mean()), 1e-12)
    p_noise = np.clip(scale * noise_factor, 0.0, 1.0)

    real = rng.random(n) < p_real
    noise = ~real & (rng.random(n) < p_noise)
    conversion = real & (rng.random(n) < p_cvr)

    k, sd = min(4, r), cfg.feature_noise
    cols: dict[str, np.ndarray] = {
        "user_id": user + 1, "item_id": item + 1,
        "user_segment": _bucket(u[:, :k]), "item_category": _bucket(v[:, :k]),
        "position": position + 1, "traffic_source": source + 1, "hour": hour + 1, "device": device + 1,
    }
    cols = {c: x.astype(np.int64) for c, x in cols.items()}
    for j in range(k):
        cols[f"user_hint_{j}"] = (u[:, j] + rng.normal(scale=sd, size=n)).astype(np.float32)
        cols[f"item_hint_{j}"] = (v[:, j] + rng.normal(scale=sd, size=n)).astype(np.float32)
    cols["affinity_hint"] = (aff + rng.normal(scale=1.5 * sd, size=n)).astype(np.float32)
    cols["item_popularity"] = np.log(item_pop[item] / item_pop.max()).astype(np.float32) / 5.0
    cols["noise_num_0"] = rng.normal(size=n).astype(np.float32)
    cols["noise_num_1"] = rng.random(n).astype(np.float32)
    cols["click"] = (real | noise).astype(np.float32)
    cols["conversion"] = conversion.astype(np.float32)
    cols["noise_click"] = noise.astype(np.float32)  # diagnostics only; not a feature
    return pd.DataFrame(cols)


GEN_CATEGORICAL = ("user_id", "item_id", "user_segment", "item_category", "position", "traffic_source",
                   "hour", "device")


def make_data(cfg: PWiseRConfig, out_dir: Path) -> None:
    """Write the dataset of ``cfg``: import ``cfg.import_file`` if set, else generate (seeded)."""
    if cfg.import_file:
        files = [Path(f.strip()) for f in cfg.import_file.split(",") if f.strip()]
        IMPORTERS[cfg.import_format](files, Path(out_dir), cfg)
        return
    df = generate(cfg)
    perm = np.random.default_rng(cfg.seed + 1).permutation(len(df))
    n_val, n_test = int(cfg.val_fraction * len(df)), int(cfg.test_fraction * len(df))
    splits = {
        "train": df.iloc[perm[n_val + n_test:]].reset_index(drop=True),
        "val": df.iloc[perm[:n_val]].reset_index(drop=True),
        "test": df.iloc[perm[n_val:n_val + n_test]].reset_index(drop=True),
    }
    vocab = {"user_id": cfg.num_users + 1, "item_id": cfg.num_items + 1, "user_segment": 2 * min(4, cfg.latent_dim) + 1,
             "item_category": 2 * min(4, cfg.latent_dim) + 1, "position": 6, "traffic_source": 9, "hour": 25,
             "device": 4}
    numeric = [c for c in df.columns if c not in GEN_CATEGORICAL and c not in (*LABELS, "noise_click")]
    fm = FeatureMap(tuple(CategoricalFeature(c, vocab[c]) for c in GEN_CATEGORICAL), tuple(numeric), LABELS)
    stats = {"click_rate": float(df["click"].mean()), "conversion_rate": float(df["conversion"].mean()),
             "noise_click_share": float(df["noise_click"].sum() / max(df["click"].sum(), 1.0))}
    write_dataset(out_dir, splits, source="pwiser-generator", seed=cfg.seed,
                  meta={"feature_map": fm.to_dict(), "format": "generated", "stats": stats})


# ------------------------------------------------------------------------------- TorchSpec side


def model_meta(data_dir: Path, cfg: Any) -> dict[str, Any]:
    meta = read_dataset(data_dir).meta
    if "feature_map" not in meta:
        raise DataError(f"{data_dir}: manifest meta has no 'feature_map'; not a pwiser dataset")
    return {"feature_map": meta["feature_map"]}


def load_split(data_dir: Path, split: str, cfg: Any) -> dict[str, np.ndarray]:
    """``{"x_cat": (N, C) int64, "x_num": (N, D) float32, "click": (N,), "conversion": (N,)}``."""
    ds = read_dataset(data_dir)
    fm = FeatureMap.from_dict(model_meta(data_dir, cfg)["feature_map"])
    arrays = fm.arrays(ds.read(split), where=str(ds.split_path(split)))
    return {k: arrays[k] for k in ("x_cat", "x_num", *LABELS)}
