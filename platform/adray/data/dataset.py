"""Parquet datasets with a manifest (schema, rows, content hash, source, generator seed).

Layout of a dataset directory::

    DIR/manifest.json      {"format": 1, "splits": {name: {"rows", "schema", "sha256"}},
                            "content_hash", "source", "seed", "meta": {...}}
    DIR/<split>.parquet

An importer's ``meta`` carries ``leak_guard`` (adray.data.leakguard.GuardReport.meta): the rule
and its thresholds, each feature column dropped because it determines a label or the action (with
the measured figures and the reason), those kept on request (``keep_leaky``), and the targets the
guard could not judge.

Writing is atomic: files go to a temporary sibling directory that is renamed into place, so a
failed import never leaves a half-written dataset where a trainer would read it. Only a dataset (a
directory holding ``manifest.json``) or an empty directory is ever replaced: any other file or
directory at the target is refused, so a mistyped ``--out`` cannot delete what it points at. The
commands that write datasets refuse an existing one unless told to replace it
(:func:`check_out_dir`, ``--overwrite``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MANIFEST = "manifest.json"


class DataError(ValueError):
    """A user-facing data problem: names the file, the field and what was expected."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    path: Path
    manifest: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest.get("meta", {})

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def split_path(self, split: str) -> Path:
        if split not in self.manifest["splits"]:
            raise DataError(f"dataset {self.path}: no split {split!r}; has {self.splits}")
        return self.path / f"{split}.parquet"

    def split_files(self, split: str) -> tuple[Any, list[str]]:
        """``(pyarrow filesystem, [file paths])`` of ``split``'s Parquet files, in order: what a
        streaming reader (Ray Data ``read_parquet(paths, filesystem=fs)``, ``pyarrow.parquet``)
        opens. One file per split in format 1."""
        import pyarrow.fs as pafs

        return pafs.LocalFileSystem(), [str(self.split_path(split))]

    def read(self, split: str, columns: list[str] | None = None) -> pd.DataFrame:
        path = self.split_path(split)
        try:
            return pd.read_parquet(path, columns=columns)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read Parquet ({exc})") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_dataset(
    out_dir: Path | str,
    splits: Mapping[str, pd.DataFrame],
    *,
    source: str,
    seed: int | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Dataset:
    """Write ``splits`` as Parquet with a manifest, atomically replacing ``out_dir``.

    Raises:
        DataError: a split is empty, or ``out_dir`` is a file or a non-empty directory that is not
            a dataset (nothing is replaced but a dataset).
    """
    out = Path(out_dir)
    for name, df in splits.items():
        if len(df) == 0:
            raise DataError(f"dataset {out}: split {name!r} is empty (0 rows); nothing written")
    _replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        info: dict[str, Any] = {}
        for name, df in splits.items():
            path = tmp / f"{name}.parquet"
            df.to_parquet(path, index=False)
            info[name] = {
                "rows": len(df),
                "schema": {c: str(t) for c, t in df.dtypes.items()},
                "sha256": _sha256(path),
            }
        content = hashlib.sha256("".join(info[n]["sha256"] for n in sorted(info)).encode()).hexdigest()
        manifest = {
            "format": 1,
            "splits": info,
            "content_hash": content,
            "source": source,
            "seed": seed,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "meta": dict(meta or {}),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Dataset(out, manifest)


def _replaceable(out: Path) -> None:
    if out.is_dir() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise DataError(f"{out}: a directory that is not a dataset (no {MANIFEST}) and not empty; a dataset is "
                        "written only to a new or empty directory, or over another dataset; choose another --out")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file; expected a dataset directory (new, empty, or a dataset to replace)")


def check_out_dir(out_dir: Path | str, overwrite: bool) -> None:
    """Before writing a dataset to ``out_dir``: refuse an existing dataset unless ``overwrite``, and
    anything else there that is not an empty directory (whatever ``overwrite`` says).

    Raises:
        DataError: naming ``out_dir``, what is there and what to do.
    """
    out = Path(out_dir)
    _replaceable(out)
    if (out / MANIFEST).is_file() and not overwrite:
        raise DataError(f"{out}: a dataset is already there; pass --overwrite to replace it (the new one replaces it "
                        "only once it is completely written), or choose another --out")


def read_manifest(path: Path | str) -> dict[str, Any]:
    p = Path(path) / MANIFEST
    if not p.is_file():
        raise DataError(
            f"{path}: not a dataset (no {MANIFEST}); create one with `adray data make` or "
            "`adray data import`"
        )
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}: corrupt manifest ({exc})") from None


def read_dataset(path: Path | str) -> Dataset:
    return Dataset(Path(path), read_manifest(path))


def require_columns(df: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    """Raise DataError naming ``where`` and the missing columns."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; found {list(df.columns)[:20]}...")


def require_finite(df: pd.DataFrame, columns: Iterable[str], where: str, numeric: bool = True) -> None:
    """Raise DataError for non-numeric or NaN/inf values, naming the column and first bad row."""
    for c in columns:
        col = df[c]
        if numeric and not pd.api.types.is_numeric_dtype(col):
            coerced = pd.to_numeric(col, errors="coerce")
            bad = coerced.isna() & col.notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(
                    f"{where}: column {c!r} row {i}: value {col.iloc[i]!r} is not a number"
                )
            col = coerced
        values = col.to_numpy(dtype=float, na_value=np.nan)
        bad_idx = np.flatnonzero(~np.isfinite(values))
        if len(bad_idx):
            raise DataError(
                f"{where}: column {c!r} has {len(bad_idx)} NaN/inf value(s), first at row "
                f"{int(bad_idx[0])}; expected finite numbers"
            )


def require_rows(ok: np.ndarray, values: Any, where: str, field: str, expected: str, row: str = "row") -> None:
    """Raise DataError naming ``where`` (the file), the first row where ``ok`` is False, ``field``, its
    value and what was ``expected``, with the number of such rows.

    Args:
        ok: (N,) bool, True where the row's value is possible.
        values: the N values as read (shown in the message).
        row: how rows are counted in the message: ``"row"`` (0-based data row) or ``"line"`` (a CSV
            file's line, the header being line 1).
    """
    bad = np.flatnonzero(~np.asarray(ok, bool))
    if len(bad):
        i = int(bad[0])
        v = values.iloc[i] if isinstance(values, pd.Series) else values[i]
        v = v.item() if hasattr(v, "item") else v
        at = f"line {i + 2}" if row == "line" else f"row {i}"
        raise DataError(f"{where}: {at}: field {field!r}: {v!r}; expected {expected} ({len(bad)} such row(s))")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")
