"""Reading one public CSV file with the same checks and messages for every importer.

Every importer of a public format reads its files through :func:`read_table`, so the same fault
gets the same message whatever the format: a path that does not exist, a directory, an empty
file, a header without rows, a file the CSV parser cannot read. The files are taken as they are
released: Windows line endings, a zip holding one CSV, and an unnamed leading row-index column
(written by ``DataFrame.to_csv``), which is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from adray.data.dataset import DataError

UNNAMED_PREFIX = "Unnamed: "  # how pandas names a column whose header cell is empty


def read_table(path: Path | str, fmt: str) -> pd.DataFrame:
    """The rows of one CSV (TSV when the name contains ``.tsv``; ``.zip`` holding one file).

    Args:
        path: the file.
        fmt: the format's name, used in messages (``"criteo-sequence"``, ``"aliexpress"``).

    Raises:
        DataError: naming the file: it does not exist, is a directory, is empty, has a header
            and no rows, or is not a readable CSV.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a {fmt} CSV file")
    if not path.is_file():
        raise DataError(f"{path}: file does not exist; expected a {fmt} CSV file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty; expected a CSV header and rows ({fmt})")
    sep = "\t" if ".tsv" in path.name else ","
    try:
        df = pd.read_csv(path, sep=sep)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty; expected a CSV header and rows ({fmt})") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"{path}: not a readable CSV ({reason}); expected a {fmt} CSV file") from None
    df.columns = [str(c).strip() for c in df.columns]
    unnamed = [c for c in df.columns if c.startswith(UNNAMED_PREFIX)]
    df = df.drop(columns=unnamed)
    if len(df) == 0:
        raise DataError(f"{path}: no data rows (header only); expected a {fmt} CSV header and rows")
    if len(df.columns) == 0:
        raise DataError(f"{path}: no named columns; expected a {fmt} CSV header")
    return df


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
