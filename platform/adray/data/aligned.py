"""Blocks of any size written as :func:`~adray.data.writer.write_dataset` writes whole frames.

A generator or importer that streams makes blocks of whatever size its work comes in (a simulator
chunk, a partition of users). :class:`AlignedWriter` re-cuts them before they reach the
:class:`~adray.data.writer.DatasetWriter`, so every split's part files have the row groups that one
``write`` of the whole split would give (``row_group_rows`` each, restarting at every part file):
the same rows give byte-identical files and the same ``content_hash`` whatever the block sizes,
and a streaming reader sees the same row groups as before. Memory: less than one row group per
split besides the block being written.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from adray.data.writer import Block, DatasetWriter, _as_table


class AlignedWriter:
    """Buffers each split's rows and hands the writer exactly the slices one whole-split write would.

    Splits are declared in the order of their first ``write`` (even with 0 rows), so the manifest
    lists them in that order. Call :meth:`flush` before ``writer.close``.
    """

    def __init__(self, writer: DatasetWriter) -> None:
        self.writer = writer
        self.buffers: dict[str, list[pa.Table]] = {}
        self.buffered: dict[str, int] = {}
        self.written: dict[str, int] = {}

    def write(self, split: str, block: Block | pd.DataFrame) -> None:
        table = _as_table(block)
        if split not in self.buffers:
            self.writer.write(split, table.slice(0, 0))  # declares the split and its schema
            self.buffers[split], self.buffered[split], self.written[split] = [], 0, 0
        if table.num_rows == 0:
            return
        self.buffers[split].append(table)
        self.buffered[split] += table.num_rows
        while self.buffered[split] >= self._next(split):
            self._emit(split, self._next(split))

    def _next(self, split: str) -> int:
        """Rows of the split's next row group: a full one, or what is left of the current part file."""
        w = self.writer
        return min(w.row_group_rows, w.part_rows - self.written[split] % w.part_rows)

    def _emit(self, split: str, rows: int) -> None:
        table = pa.concat_tables(self.buffers[split])
        self.writer.write(split, table.slice(0, rows))
        rest = table.slice(rows)
        self.buffers[split] = [rest] if rest.num_rows else []
        self.buffered[split] -= rows
        self.written[split] += rows

    def flush(self) -> None:
        """Write what every split still holds (its last, partial row group)."""
        for split in self.buffers:
            if self.buffered[split]:
                self._emit(split, self.buffered[split])
