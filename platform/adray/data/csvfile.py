"""Reading one public file (CSV or Parquet) with the same checks and messages for every importer.

Every importer of a public format reads its files through :func:`read_table` (a DataFrame) or
:func:`read_parquet` (an Arrow table, for list columns), so the same fault gets the same message
whatever the format and whatever the file type: a path that does not exist, a directory, an empty
file, a header (or Parquet schema) without rows, a file the parser cannot read. The files are
taken as they are released: Windows line endings, a zip holding one CSV, and an unnamed leading
row-index column (written by ``DataFrame.to_csv``), which is dropped.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from adray.data.dataset import DataError, iter_row_groups

UNNAMED_PREFIX = "Unnamed: "  # how pandas names a column whose header cell is empty
PARQUET_SUFFIXES = (".parquet", ".pq")


def is_parquet(path: Path | str) -> bool:
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def _check_file(path: Path, fmt: str, kind: str) -> None:
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a {kind} file ({fmt})")
    if not path.is_file():
        raise DataError(f"{path}: file does not exist; expected a {kind} file ({fmt})")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty; expected a {kind} {_WHAT[kind]} and rows ({fmt})")


_WHAT = {"CSV": "header", "Parquet": "schema"}


def _no_rows(path: Path, fmt: str, kind: str) -> DataError:
    return DataError(f"{path}: no data rows (header only); expected a {kind} {_WHAT[kind]} and rows ({fmt})")


def read_parquet(path: Path | str, fmt: str, columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of one Parquet file (``columns`` only, when given: they must exist).

    Raises:
        DataError: naming the file: it does not exist, is a directory, is empty, has a schema and
            no rows, is not a readable Parquet file, or lacks one of ``columns``.
    """
    path = Path(path)
    names = parquet_columns(path, fmt)
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; found {names[:20]}")
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (OSError, pa.ArrowException, ValueError, EOFError) as exc:
        raise _unreadable(path, fmt, exc) from None


def iter_parquet(path: Path | str, fmt: str, columns: Sequence[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of one Parquet file's ``columns`` (which must exist), one row group at a time in
    batches of at most ``batch_rows`` rows: memory is bounded by a batch, not the file. The file
    checks and messages of :func:`read_parquet`; callers count rows to name them in the file."""
    path = Path(path)
    names = parquet_columns(path, fmt)
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {names[:20]}")
    try:
        yield from iter_row_groups(pq.ParquetFile(path), batch_rows, list(columns))
    except (OSError, pa.ArrowException, ValueError, EOFError) as exc:
        raise _unreadable(path, fmt, exc) from None


def parquet_columns(path: Path | str, fmt: str) -> list[str]:
    """The column names of one Parquet file, after the checks of :func:`read_parquet` (rows included)."""
    path = Path(path)
    _check_file(path, fmt, "Parquet")
    try:
        pf = pq.ParquetFile(path)
        names, rows = list(pf.schema_arrow.names), pf.metadata.num_rows
    except (OSError, pa.ArrowException, ValueError, EOFError) as exc:
        raise _unreadable(path, fmt, exc) from None
    if rows == 0:
        raise _no_rows(path, fmt, "Parquet")
    return names


def _unreadable(path: Path, fmt: str, exc: BaseException) -> DataError:
    reason = " ".join(str(exc).split())[:200]
    return DataError(f"{path}: not a readable Parquet file ({reason}); expected a Parquet file ({fmt})")


def read_table(path: Path | str, fmt: str, dtype: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The rows of one CSV (TSV when the name contains ``.tsv``; ``.zip`` holding one file) or of
    one Parquet file (``.parquet``, ``.pq``).

    Args:
        path: the file.
        fmt: the format's name, used in messages (``"criteo-sequence"``, ``"aliexpress"``).
        dtype: CSV column types to keep (e.g. ``{"state": str}``), as ``pandas.read_csv`` takes them.

    Raises:
        DataError: naming the file: it does not exist, is a directory, is empty, has a header
            and no rows, or is not a readable CSV / Parquet file.
    """
    path = Path(path)
    if is_parquet(path):
        df = read_parquet(path, fmt).to_pandas()
    else:
        df = _read_csv(path, fmt, dtype)
    df.columns = [str(c).strip() for c in df.columns]
    unnamed = [c for c in df.columns if c.startswith(UNNAMED_PREFIX)]
    df = df.drop(columns=unnamed)
    kind = "Parquet" if is_parquet(path) else "CSV"
    if len(df) == 0:
        raise _no_rows(path, fmt, kind)
    if len(df.columns) == 0:
        raise DataError(f"{path}: no named columns; expected a {kind} {_WHAT[kind]} ({fmt})")
    return df


def _read_csv(path: Path, fmt: str, dtype: Mapping[str, Any] | None) -> pd.DataFrame:
    _check_file(path, fmt, "CSV")
    sep = "\t" if ".tsv" in path.name else ","
    try:
        return pd.read_csv(path, sep=sep, dtype=dict(dtype) if dtype else None)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty; expected a CSV header and rows ({fmt})") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"{path}: not a readable CSV file ({reason}); expected a CSV file ({fmt})") from None


def require_same_features(features: Mapping[Path, list[str]]) -> None:
    """Every split's file has the same feature columns.

    Args:
        features: per file, the feature columns found in its header.

    Raises:
        DataError: naming the first file that lacks columns another file has, and those columns.
    """
    union: dict[str, Path] = {}
    for path, cols in features.items():
        for c in cols:
            union.setdefault(c, path)
    for path, cols in features.items():
        have = set(cols)
        missing = [c for c in union if c not in have]
        if missing:
            other = union[missing[0]]
            raise DataError(
                f"{path}: missing feature column(s) {missing[:20]}{'...' if len(missing) > 20 else ''} "
                f"that {other} has; every split's file must have the same feature columns"
            )


CSV_BLOCK_BYTES = 32 << 20
"""Bytes of CSV parsed at once by :func:`iter_frames` (pyarrow's streaming reader): one chunk."""
PARQUET_BATCH_ROWS = 262_144
"""Rows of a Parquet input read at once by :func:`iter_frames`."""


def iter_frames(path: Path | str, fmt: str, block_bytes: int | None = None,
                column_types: Mapping[str, pa.DataType] | None = None) -> Iterator[pd.DataFrame]:
    """The rows of one CSV / Parquet file (as :func:`read_table` takes them) in chunks, streaming:
    memory is bounded by one chunk (``block_bytes`` of CSV, default ``CSV_BLOCK_BYTES``;
    ``PARQUET_BATCH_ROWS`` of Parquet), not
    the file. The same checks and messages as :func:`read_table` (a chunk's column types are those
    pyarrow infers from the file's first block; a later value that does not fit them is refused
    naming the file and the column). ``column_types``: CSV columns whose type is not inferred (e.g.
    ``{"state": pa.string()}``, as ``dtype`` of :func:`read_table`); absent columns are ignored.

    Raises:
        DataError: naming the file, as :func:`read_table`.
    """
    path = Path(path)
    kind = "Parquet" if is_parquet(path) else "CSV"
    rows = 0
    frames = (_parquet_frames(path, fmt) if kind == "Parquet"
              else _csv_frames(path, fmt, block_bytes or CSV_BLOCK_BYTES, column_types))
    for df in frames:
        df.columns = [str(c).strip() for c in df.columns]
        df = df.drop(columns=[c for c in df.columns if c == "" or c.startswith(UNNAMED_PREFIX)])
        if len(df.columns) == 0:
            raise DataError(f"{path}: no named columns; expected a {kind} {_WHAT[kind]} ({fmt})")
        if len(df):
            rows += len(df)
            yield df
    if rows == 0:
        raise _no_rows(path, fmt, kind)


def _parquet_frames(path: Path, fmt: str) -> Iterator[pd.DataFrame]:
    parquet_columns(path, fmt)  # the file checks, and rows > 0
    try:
        for batch in iter_row_groups(pq.ParquetFile(path), PARQUET_BATCH_ROWS):
            yield batch.to_pandas()
    except (OSError, pa.ArrowException, ValueError, EOFError) as exc:
        raise _unreadable(path, fmt, exc) from None


def _csv_frames(path: Path, fmt: str, block_bytes: int,
                column_types: Mapping[str, pa.DataType] | None = None) -> Iterator[pd.DataFrame]:
    import pyarrow.csv as pacsv

    _check_file(path, fmt, "CSV")
    sep = "\t" if ".tsv" in path.name else ","

    def bad(exc: BaseException) -> DataError:
        reason = " ".join(str(exc).split())[:200]
        return DataError(f"{path}: not a readable CSV file ({reason}); expected a CSV file ({fmt})")

    with contextlib.ExitStack() as stack:
        try:
            source: Any = str(path)
            if path.suffix.lower() == ".zip":
                archive = stack.enter_context(zipfile.ZipFile(path))
                names = [n for n in archive.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise DataError(f"{path}: not a readable CSV file (a zip holding {len(names)} files; expected "
                                    f"one CSV); expected a CSV file ({fmt})")
                source = stack.enter_context(archive.open(names[0]))
            reader = pacsv.open_csv(
                source, read_options=pacsv.ReadOptions(block_size=block_bytes),
                parse_options=pacsv.ParseOptions(delimiter=sep),
                convert_options=pacsv.ConvertOptions(strings_can_be_null=True, column_types=dict(column_types or {})))
        except (OSError, pa.ArrowException, ValueError, zipfile.BadZipFile) as exc:
            raise bad(exc) from None
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (OSError, pa.ArrowException, ValueError) as exc:
                raise bad(exc) from None
            yield batch.to_pandas()
