"""Parquet datasets with a manifest (schema, rows, files, content hash, source, generator seed),
on the storage URI: a local folder or ``s3://bucket/prefix`` (any ``pyarrow.fs`` filesystem).

Layout of a dataset (format 2, what :class:`~adray.data.writer.DatasetWriter` writes)::

    DIR/manifest.json      {"format": 2, "splits": {name: {"rows", "schema", "arrow_schema",
                            "files": [{"name", "rows", "bytes", "sha256"}]}},
                            "content_hash", "source", "seed", "meta": {...}}
    DIR/<split>/part-00000.parquet   (at most PART_ROWS rows each, row groups of ROW_GROUP_ROWS)

Format 1 (one ``DIR/<split>.parquet`` per split, ``splits[name]["sha256"]``) is still read:
datasets written before format 2 keep working. The manifest's list of files is the dataset: a
reader opens those files and no other (an object store's listing may hold a failed write's
leftovers), and :meth:`Dataset.split_files` is what streaming readers (Ray Data, the RLlib
sampler) open. ``schema`` maps each column to its pandas dtype (what ``read`` returns);
``arrow_schema`` to its Arrow type (what the files hold).

An importer's ``meta`` carries ``leak_guard`` (adray.data.leakguard.GuardReport.meta): the rule
and its thresholds, each feature column dropped because it determines a label or the action (with
the measured figures and the reason), those kept on request (``keep_leaky``), and the targets the
guard could not judge.

Only a dataset (a directory or prefix holding ``manifest.json``) or an empty one is ever replaced:
anything else at the target is refused, so a mistyped ``--out`` cannot delete what it points at.
The commands that write datasets refuse an existing one unless told to replace it
(:func:`check_out_dir`, ``--overwrite``). How writes stay atomic: see ``adray.data.writer``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from adray.storage import Storage, StorageError

MANIFEST = "manifest.json"
FORMAT = 2
BATCH_ROWS = 65_536
"""Default rows per batch of :meth:`Dataset.iter_batches`."""

_COLLAPSED = re.compile(r"^(s3|gs|gcs|hdfs|abfs|abfss|viewfs):/(?!/)")


class DataError(ValueError):
    """A user-facing data problem: names the file, the field and what was expected."""


def dataset_uri(location: Path | str) -> str:
    """``location`` as a dataset URI: a local path stays a path, ``s3://b/x`` stays a URI.

    ``pathlib.Path("s3://b/x")`` collapses the double slash (``s3:/b/x``); code that wraps a
    dataset location in ``Path`` therefore still reaches the object store through this repair.
    """
    text = str(location)
    return _COLLAPSED.sub(lambda m: f"{m.group(1)}://", text, count=1)


def is_remote(location: Path | str) -> bool:
    """True for a URI with a scheme other than ``file://`` (an object store)."""
    uri = dataset_uri(location)
    return "://" in uri and not uri.startswith("file://")


def open_location(location: Path | str) -> Storage:
    """The storage rooted at a dataset location.

    Raises:
        DataError: the URI cannot be opened (unknown scheme, bad query), naming it.
    """
    uri = dataset_uri(location)
    try:
        return Storage(uri)
    except StorageError as exc:
        raise DataError(f"{uri}: {exc}; expected a local path or a storage URI (s3://bucket/prefix)") from None


def _reach(st: Storage, what: str, *parts: str) -> pafs.FileInfo:
    """``fs.get_file_info`` with storage failures (no credentials, no bucket, no access) as DataError."""
    try:
        return st.fs.get_file_info(st.path(*parts))
    except (OSError, pa.ArrowException) as exc:
        raise DataError(_unreachable(st, what, exc, *parts)) from None


def _unreachable(st: Storage, what: str, exc: BaseException, *parts: str) -> str:
    reason = " ".join(str(exc).split())[:300]
    hint = ""
    if not st.is_local:
        hint = ("; check the bucket exists and this process has credentials for it (AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY, or an instance role) and the URI's endpoint_override/scheme")
    return f"{st.display(*parts)}: cannot read {what} ({reason}){hint}"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """An opened dataset: its location, its manifest and the storage it lives on."""

    uri: str
    manifest: dict[str, Any]
    storage: Storage = dataclasses.field(repr=False, compare=False)

    @property
    def path(self) -> Path:
        """The local directory (local datasets only; a remote one is read through :meth:`split_files`)."""
        if not self.storage.is_local:
            raise DataError(f"{self.display}: not a local dataset; read it with split_files / iter_batches / read")
        return Path(self.storage.root)

    @property
    def display(self) -> str:
        return self.storage.display()

    @property
    def format(self) -> int:
        return int(self.manifest.get("format", 1))

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest.get("meta", {})

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def _split(self, split: str) -> dict[str, Any]:
        if split not in self.manifest["splits"]:
            raise DataError(f"dataset {self.display}: no split {split!r}; has {self.splits}")
        return self.manifest["splits"][split]

    def files(self, split: str) -> list[dict[str, Any]]:
        """``[{name, rows, bytes?, sha256}]`` of ``split``; ``name`` relative to the dataset root."""
        info = self._split(split)
        if self.format == 1:
            return [{"name": f"{split}.parquet", "rows": info["rows"], "sha256": info.get("sha256")}]
        return [{**f, "name": f"{split}/{f['name']}"} for f in info["files"]]

    def split_path(self, split: str) -> Path:
        """A local path pandas / pyarrow read the whole split from: the split's file (format 1) or
        its directory of part files (format 2). Local datasets only; prefer :meth:`split_files`."""
        self._split(split)
        return self.path / (f"{split}.parquet" if self.format == 1 else split)

    def split_files(self, split: str) -> tuple[pafs.FileSystem, list[str]]:
        """``(pyarrow filesystem, [file paths])`` of ``split``'s Parquet files, in order: what a
        streaming reader (Ray Data ``read_parquet(paths, filesystem=fs)``, ``pyarrow.parquet``)
        opens. One file per split in format 1; every part file, in the manifest's order, in format 2."""
        return self.storage.fs, [self.storage.path(f["name"]) for f in self.files(split)]

    def _open(self, split: str, name: str) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.storage.fs.open_input_file(self.storage.path(name)))
        except FileNotFoundError:
            raise DataError(f"{self.storage.display(name)}: file of split {split!r} listed in the manifest is "
                            f"missing; the dataset {self.display} is incomplete: write it again") from None
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise DataError(_unreachable(self.storage, f"the Parquet file of split {split!r}", exc, name)) from None

    def _check_schema(self, split: str, name: str, schema: pa.Schema) -> None:
        expected = self._split(split).get("arrow_schema")
        if expected is None:  # format 1: one file, nothing to compare
            return
        got = arrow_schema(schema)
        if got != expected:
            raise DataError(f"{self.storage.display(name)}: {schema_difference(expected, got)} "
                            f"(split {split!r} of {self.display}); every file of a split has the same schema")

    def iter_batches(self, split: str, columns: list[str] | None = None,
                     batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """The rows of ``split`` as Arrow record batches of at most ``batch_rows`` rows, file by file
        and row group by row group: memory is bounded by one row group, not the split.

        Raises:
            DataError: a file is missing, unreadable or has another schema; a column is missing.
        """
        for f in self.files(split):
            pf = self._open(split, f["name"])
            self._check_schema(split, f["name"], pf.schema_arrow)
            self._check_columns(split, f["name"], pf.schema_arrow, columns)
            try:
                yield from iter_row_groups(pf, batch_rows, columns)
            except (OSError, pa.ArrowException) as exc:
                reason = " ".join(str(exc).split())[:200]
                raise DataError(f"{self.storage.display(f['name'])}: a row group cannot be decoded ({reason}); "
                                f"split {split!r} of {self.display}") from None

    def _check_columns(self, split: str, name: str, schema: pa.Schema, columns: list[str] | None) -> None:
        missing = [c for c in columns or [] if c not in schema.names]
        if missing:
            raise DataError(f"{self.storage.display(name)}: missing column(s) {missing} (split {split!r}); "
                            f"found {schema.names[:20]}")

    def read_table(self, split: str, columns: list[str] | None = None) -> pa.Table:
        """The whole split as one Arrow table (small data; stream large data with :meth:`iter_batches`)."""
        tables = []
        for f in self.files(split):
            pf = self._open(split, f["name"])
            self._check_schema(split, f["name"], pf.schema_arrow)
            self._check_columns(split, f["name"], pf.schema_arrow, columns)
            try:
                tables.append(pf.read(columns=columns))
            except (OSError, pa.ArrowException, ValueError) as exc:
                reason = " ".join(str(exc).split())[:200]
                raise DataError(f"{self.storage.display(f['name'])}: cannot read Parquet ({reason})") from None
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def read(self, split: str, columns: list[str] | None = None) -> pd.DataFrame:
        """The whole split as a DataFrame (the in-memory path; small data)."""
        return self.read_table(split, columns).to_pandas()

    def file_stats(self, split: str) -> list[dict[str, Any]]:
        """Per file of ``split``, from its footer only (no data read): name, rows, row groups,
        bytes; raises DataError as :meth:`iter_batches` does (missing file, other schema)."""
        out = []
        for f in self.files(split):
            pf = self._open(split, f["name"])
            self._check_schema(split, f["name"], pf.schema_arrow)
            md = pf.metadata
            out.append({"name": f["name"], "rows": md.num_rows, "row_groups": md.num_row_groups,
                        "bytes": f.get("bytes") or sum(md.row_group(i).total_byte_size
                                                       for i in range(md.num_row_groups))})
        return out

    def check_files(self) -> None:
        """Every file the manifest lists exists (one metadata call per file, no data read).

        Raises:
            DataError: naming the first missing file and the dataset.
        """
        names = [f["name"] for s in self.splits for f in self.files(s)]
        try:
            infos = self.storage.fs.get_file_info([self.storage.path(n) for n in names])
        except (OSError, pa.ArrowException) as exc:
            raise DataError(_unreachable(self.storage, "the dataset's files", exc)) from None
        missing = [n for n, i in zip(names, infos) if i.type != pafs.FileType.File]
        if missing:
            raise DataError(f"{self.storage.display(missing[0])}: listed in the manifest of {self.display} but "
                            f"missing ({len(missing)} of {len(names)} files missing); the dataset is incomplete: "
                            "write it again")


def iter_row_groups(pf: pq.ParquetFile, batch_rows: int = BATCH_ROWS,
                    columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """``pf``'s rows in batches, one row group at a time.

    Why not ``pf.iter_batches()`` over the whole file: with pyarrow 26 its memory grows with every
    row group read until the file is done (measured: +4 MB per 2,600-row, 58-column row group, i.e.
    the whole file ends up in memory); a reader per row group stays flat.
    """
    for i in range(pf.num_row_groups):
        yield from pf.iter_batches(batch_size=batch_rows, row_groups=[i], columns=columns)


def type_name(t: pa.DataType) -> str:
    """An Arrow type as text, without the names Parquet gives list items (``item``/``element``)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        size = f", {t.list_size}" if pa.types.is_fixed_size_list(t) else ""
        return f"list<{type_name(t.value_type)}{size}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{f.name}: {type_name(f.type)}" for f in t) + ">"
    return str(t)


def arrow_schema(schema: pa.Schema) -> dict[str, str]:
    """``{column: type}`` of an Arrow schema (what the manifest records and files are checked against)."""
    return {f.name: type_name(f.type) for f in schema}


def schema_difference(expected: dict[str, str], got: dict[str, str]) -> str:
    """What differs between two ``{column: arrow type}`` schemas, naming the first field."""
    for c, t in expected.items():
        if c not in got:
            return f"field {c!r} ({t}) missing"
        if got[c] != t:
            return f"field {c!r} is {got[c]}, expected {t}"
    extra = [c for c in got if c not in expected]
    if extra:
        return f"field {extra[0]!r} ({got[extra[0]]}) not in the schema of the split's first file"
    return "fields in another order: " + ", ".join(got)


def check_out_dir(out_dir: Path | str, overwrite: bool) -> None:
    """Before writing a dataset to ``out_dir``: refuse an existing dataset unless ``overwrite``, and
    anything else there that is not an empty directory (whatever ``overwrite`` says).

    Raises:
        DataError: naming ``out_dir``, what is there and what to do.
    """
    st = open_location(out_dir)
    replaceable(st)
    if _reach(st, "the dataset manifest", MANIFEST).type == pafs.FileType.File and not overwrite:
        raise DataError(f"{st.display()}: a dataset is already there; pass --overwrite to replace it (the new one "
                        "replaces it only once it is completely written), or choose another --out")


def replaceable(st: Storage) -> None:
    """Refuse a target that is a file, or a non-empty directory / prefix that is not a dataset."""
    info = _reach(st, "the dataset location")
    if info.type == pafs.FileType.File:
        raise DataError(f"{st.display()}: is a file; expected a dataset directory (new, empty, or a dataset to replace)")
    if _reach(st, "the dataset manifest", MANIFEST).type == pafs.FileType.File:
        return
    if info.type == pafs.FileType.Directory:
        try:
            entries = st.fs.get_file_info(pafs.FileSelector(st.path(), recursive=False))
        except (OSError, pa.ArrowException) as exc:
            raise DataError(_unreachable(st, "the dataset location", exc)) from None
        if entries:
            raise DataError(f"{st.display()}: a directory that is not a dataset (no {MANIFEST}) and not empty; a "
                            "dataset is written only to a new or empty directory, or over another dataset; choose "
                            "another --out")


def dataset_exists(location: Path | str) -> bool:
    """True when ``location`` holds a manifest (raises DataError when storage cannot be reached)."""
    st = open_location(location)
    return _reach(st, "the dataset manifest", MANIFEST).type == pafs.FileType.File


def read_manifest(location: Path | str) -> dict[str, Any]:
    """The manifest of the dataset at ``location`` (a local path or a storage URI).

    Raises:
        DataError: no dataset there, storage unreachable (credentials, bucket), corrupt manifest.
    """
    return _read_manifest(open_location(location))


def _read_manifest(st: Storage) -> dict[str, Any]:
    info = _reach(st, "the dataset manifest", MANIFEST)
    if info.type != pafs.FileType.File:
        raise DataError(
            f"{st.display()}: not a dataset (no {MANIFEST}); create one with `adray data make` or "
            "`adray data import`"
        )
    try:
        with st.fs.open_input_stream(st.path(MANIFEST)) as f:
            text = f.read().decode()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(_unreachable(st, "the dataset manifest", exc, MANIFEST)) from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{st.display(MANIFEST)}: corrupt manifest ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
        raise DataError(f"{st.display(MANIFEST)}: corrupt manifest (no 'splits' object)")
    if int(manifest.get("format", 1)) > FORMAT:
        raise DataError(f"{st.display(MANIFEST)}: dataset format {manifest['format']}; this adray reads formats "
                        f"1 to {FORMAT}: upgrade adray")
    return manifest


def read_dataset(location: Path | str | Dataset, check_files: bool = True) -> Dataset:
    """Open the dataset at ``location`` (a local path or ``s3://bucket/prefix?...``); an opened
    :class:`Dataset` is returned as it is (what a driver hands its workers: its storage carries the
    resolved filesystem and credentials, so a worker on any node reads it without the driver's
    environment).

    Args:
        check_files: check that every file the manifest lists exists (one metadata call per file).

    Raises:
        DataError: no dataset there, storage unreachable, corrupt manifest, a listed file missing.
    """
    if isinstance(location, Dataset):
        return location
    st = open_location(location)
    ds = Dataset(dataset_uri(location), _read_manifest(st), st)
    if check_files:
        ds.check_files()
    return ds



def require_columns(df: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    """Raise DataError naming ``where`` and the missing columns."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; found {list(df.columns)[:20]}...")


def require_finite(df: pd.DataFrame, columns: Iterable[str], where: str, numeric: bool = True, offset: int = 0) -> None:
    """Raise DataError for non-numeric or NaN/inf values, naming the column and first bad row
    (``offset`` + the position in ``df``: a chunk's rows are counted from the file's first row)."""
    for c in columns:
        col = df[c]
        if numeric and not pd.api.types.is_numeric_dtype(col):
            coerced = pd.to_numeric(col, errors="coerce")
            bad = coerced.isna() & col.notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(
                    f"{where}: column {c!r} row {offset + i}: value {col.iloc[i]!r} is not a number"
                )
            col = coerced
        values = col.to_numpy(dtype=float, na_value=np.nan)
        bad_idx = np.flatnonzero(~np.isfinite(values))
        if len(bad_idx):
            raise DataError(
                f"{where}: column {c!r} has {len(bad_idx)} NaN/inf value(s), first at row "
                f"{offset + int(bad_idx[0])}; expected finite numbers"
            )


def require_rows(ok: np.ndarray, values: Any, where: str, field: str, expected: str, row: str = "row",
                 offset: int = 0) -> None:
    """Raise DataError naming ``where`` (the file), the first row where ``ok`` is False, ``field``, its
    value and what was ``expected``, with the number of such rows.

    Args:
        ok: (N,) bool, True where the row's value is possible.
        values: the N values as read (shown in the message).
        row: how rows are counted in the message: ``"row"`` (0-based data row) or ``"line"`` (a CSV
            file's line, the header being line 1).
        offset: rows before ``values`` in the file (a chunk's rows are counted from the file's first).
    """
    bad = np.flatnonzero(~np.asarray(ok, bool))
    if len(bad):
        i = int(bad[0])
        v = values.iloc[i] if isinstance(values, pd.Series) else values[i]
        v = v.item() if hasattr(v, "item") else v
        at = f"line {offset + i + 2}" if row == "line" else f"row {offset + i}"
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
