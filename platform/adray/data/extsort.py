"""Sorting more rows than fit in memory: :func:`sorted_frames`, a stable external merge sort of
DataFrame blocks by one column, spilling sorted runs to Parquet in a temporary folder.

Order: the rows by ``key`` ascending, rows with equal keys in their input order (what
``pd.concat(frames).sort_values(key, kind="stable")`` gives, nulls last in input order too).
Memory: about ``run_rows`` rows while a run is sorted and ``fan_in`` x ``chunk_rows`` while runs
are merged, whatever the number of rows. Disk: the rows once per level (runs are merged ``fan_in``
at a time: one level up to ``fan_in`` runs, two up to ``fan_in``², ...). Input that fits one run
is sorted in memory and nothing is written.

How the merge stays exact and vectorised: each row carries its input position, so the sort key
``(key, position)`` is unique; each round takes from every run's current chunk the rows up to the
smallest of the chunks' last keys (a prefix of each, found by binary search), sorts those and
yields them. No row of any run can come before them, and at least one chunk is used up per round.
"""

from __future__ import annotations

import tempfile
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from adray.data.dataset import iter_row_groups

POS = "__sort_pos"
"""The column that holds a row's input position while it is sorted (dropped from the output)."""
RUN_ROWS = 262_144
CHUNK_ROWS = 16_384
FAN_IN = 16


def sorted_frames(frames: Iterable[pd.DataFrame], key: str, *, run_rows: int = RUN_ROWS,
                  chunk_rows: int = CHUNK_ROWS, fan_in: int = FAN_IN, tmp_dir: Path | str | None = None,
                  ) -> Generator[pd.DataFrame, None, None]:
    """``frames``' rows (every frame with the same columns and types) sorted by ``key``, stable, in
    blocks of varying sizes; see the module docstring. The temporary folder (in ``tmp_dir``, default
    the system's) is deleted when the iterator is exhausted or closed."""
    if run_rows < 1 or chunk_rows < 1 or fan_in < 2:
        raise ValueError(f"run_rows={run_rows}, chunk_rows={chunk_rows}, fan_in={fan_in}: expected >= 1, >= 1, >= 2")
    with tempfile.TemporaryDirectory(prefix="adray-sort-", dir=tmp_dir) as tmp:
        spill = _Spill(Path(tmp), chunk_rows)
        runs: list[Path] = []
        pending: list[pd.DataFrame] = []
        nulls: Path | None = None
        null_writer: pq.ParquetWriter | None = None
        seen = held = 0
        for df in frames:
            df = df.assign(**{POS: np.arange(seen, seen + len(df), dtype=np.int64)})
            seen += len(df)
            null = df[key].isna().to_numpy()
            if null.any():
                table = _table(df[null])
                if null_writer is None:
                    nulls = Path(tmp) / "nulls.parquet"
                    null_writer = pq.ParquetWriter(nulls, table.schema)
                null_writer.write_table(table, row_group_size=chunk_rows)
                df = df[~null]
            pending.append(df)
            held += len(df)
            if held >= run_rows:
                runs.append(spill.write([_sort(pending, key)]))
                pending, held = [], 0
        if null_writer is not None:
            null_writer.close()
        if not runs:
            if held:
                yield _sort(pending, key).drop(columns=POS)
        else:
            if held:
                runs.append(spill.write([_sort(pending, key)]))
            pending = []
            while len(runs) > fan_in:
                runs = [spill.write(_merge(runs[i:i + fan_in], key, chunk_rows)) if len(runs[i:i + fan_in]) > 1
                        else runs[i] for i in range(0, len(runs), fan_in)]
            for chunk in _merge(runs, key, chunk_rows):
                yield chunk.drop(columns=POS)
        if nulls is not None:
            for chunk in _chunks(nulls, chunk_rows):
                yield chunk.drop(columns=POS)


class _Spill:
    """Sorted runs written to numbered Parquet files (row groups of ``chunk_rows``)."""

    def __init__(self, folder: Path, chunk_rows: int) -> None:
        self.folder, self.chunk_rows, self.count = folder, chunk_rows, 0

    def write(self, chunks: Iterable[pd.DataFrame]) -> Path:
        path = self.folder / f"run-{self.count:06d}.parquet"
        self.count += 1
        writer: pq.ParquetWriter | None = None
        buffered: list[pa.Table] = []
        rows = 0
        for chunk in chunks:  # rebatched to row groups of chunk_rows: the unit the merge reads
            buffered.append(_table(chunk))
            rows += len(chunk)
            if rows >= self.chunk_rows:
                table = pa.concat_tables(buffered)
                whole = rows // self.chunk_rows * self.chunk_rows
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table.slice(0, whole), row_group_size=self.chunk_rows)
                buffered, rows = [table.slice(whole)], rows - whole
        if rows:
            table = pa.concat_tables(buffered)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=self.chunk_rows)
        if writer is not None:
            writer.close()
        return path


def _table(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df, preserve_index=False)


def _sort(parts: list[pd.DataFrame], key: str) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True).sort_values([key, POS], kind="stable", ignore_index=True)


def _chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    for batch in iter_row_groups(pq.ParquetFile(path), chunk_rows):
        yield batch.to_pandas()
    path.unlink()


def _merge(runs: list[Path], key: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The rows of sorted ``runs``, merged by ``(key, POS)``, a round at a time."""
    readers = [_chunks(p, chunk_rows) for p in runs]
    heads: list[pd.DataFrame | None] = [next(r, None) for r in readers]
    while True:
        live = [i for i, h in enumerate(heads) if h is not None]
        if not live:
            return
        last_key, last_pos = min((h[key].iat[-1], h[POS].iat[-1]) for h in heads if h is not None)
        parts = []
        for i in live:
            h = heads[i]
            assert h is not None
            lo, hi = h[key].searchsorted(last_key, "left"), h[key].searchsorted(last_key, "right")
            take = int(lo + np.searchsorted(h[POS].to_numpy()[lo:hi], last_pos, "right"))
            if take:
                parts.append(h.iloc[:take])
            heads[i] = h.iloc[take:] if take < len(h) else next(readers[i], None)
        yield pd.concat(parts, ignore_index=True).sort_values([key, POS], kind="stable", ignore_index=True)
