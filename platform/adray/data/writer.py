"""Writing a dataset in blocks: :class:`DatasetWriter` (memory bounded by one block) and
:func:`write_dataset` (whole frames, for small data and the callers that have them).

Each ``write(split, block)`` appends the block to the split's current part file
(``<split>/part-NNNNN.parquet``) in row groups of at most ``ROW_GROUP_ROWS`` rows; a part holds at
most ``PART_ROWS`` rows, then the next one starts. The manifest is written by ``close`` and LAST:
a dataset without a manifest is not a dataset, and readers open only the files it lists.

Atomic on both kinds of storage:

* local folder: everything goes to a temporary sibling directory (``.NAME.tmp-*``) that is renamed
  into place once the manifest is in it (the old dataset, if any, is renamed away first and then
  deleted); a failure deletes the temporary directory, the old dataset untouched.
* object store (S3, GCS: no rename): part files go under the final prefix with a name unique to
  this write (``part-00000-<token>.parquet``), so they never overwrite the files an existing
  dataset's manifest lists; the manifest is one PUT (atomic), after which the old dataset's files
  are deleted. A failure deletes the parts written; the old manifest and files are untouched.

Every block of a split must have the split's schema (the first block's): another column, a
missing one or another type is refused naming the field, the split and the block.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from adray.data.dataset import (
    FORMAT,
    MANIFEST,
    DataError,
    Dataset,
    _json_default,
    _read_manifest,
    _unreachable,
    arrow_schema,
    dataset_uri,
    open_location,
    replaceable,
    schema_difference,
)
from adray.storage import Storage

PART_ROWS = 1_000_000
"""Rows per part file at most (a Ray Data read task reads whole files: parts keep them small)."""
ROW_GROUP_ROWS = 65_536
"""Rows per Parquet row group at most (the unit a streaming reader decodes at once)."""

Block = pa.Table | pa.RecordBatch | pd.DataFrame


class _HashingSink:
    """A writable file object that forwards to a pyarrow output stream and hashes what passes, so
    a part's sha256 and size are known without reading it back (from an object store)."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.sha = stream, hashlib.sha256()
        self.bytes, self.closed = 0, False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.stream.write(view)
        self.bytes += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.stream.close()
            self.closed = True


class _Split:
    """The part files of one split being written."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.schema: pa.Schema | None = None
        self.files: list[dict[str, Any]] = []
        self.rows = 0
        self.writer: pq.ParquetWriter | None = None
        self.sink: _HashingSink | None = None
        self.part_rows = 0
        self.blocks = 0


class DatasetWriter:
    """Write a dataset block by block; ``close(meta)`` publishes it (manifest last).

    Use as a context manager: leaving the block with an exception aborts (nothing published, the
    old dataset untouched)::

        with DatasetWriter("s3://bucket/x", source="gen", seed=0) as w:
            for block in blocks:
                w.write("train", block)
            w.close({"feature_map": ...})

    Args:
        out: a local directory or a storage URI (``s3://bucket/prefix?endpoint_override=...``).
        source: where the rows came from (the manifest's ``source``).
        seed: the generator's seed, if any.
        overwrite: replace a dataset already at ``out`` (only once the new one is complete). A
            target that is not a dataset and not empty is refused whatever this says.
        part_rows: rows per part file at most (default ``PART_ROWS``).
        row_group_rows: rows per row group at most (default ``ROW_GROUP_ROWS``). Memory: about one
            row group per split being written.

    Raises:
        DataError: the target is refused, storage cannot be reached, a block has another schema
            than its split's first block, a split is empty at ``close``.
    """

    def __init__(self, out: Path | str, *, source: str, seed: int | None = None, overwrite: bool = False,
                 part_rows: int | None = None, row_group_rows: int | None = None) -> None:
        part_rows, row_group_rows = part_rows or PART_ROWS, row_group_rows or ROW_GROUP_ROWS
        if part_rows < 1 or row_group_rows < 1:
            raise ValueError(f"part_rows={part_rows}, row_group_rows={row_group_rows}: expected >= 1")
        self.uri = dataset_uri(out)
        self.final = open_location(self.uri)
        self.source, self.seed = source, seed
        self.part_rows, self.row_group_rows = part_rows, min(row_group_rows, part_rows)
        replaceable(self.final)
        self.old: dict[str, Any] | None = None
        if self.final.is_dir() or not self.final.is_local:
            try:
                self.old = _read_manifest(self.final)
            except DataError:
                self.old = None
        if self.old is not None and not overwrite:
            raise DataError(f"{self.final.display()}: a dataset is already there; pass --overwrite to replace it "
                            "(the new one replaces it only once it is completely written), or choose another --out")
        self.splits: dict[str, _Split] = {}
        self.done = False
        if self.final.is_local:
            out_path = Path(self.final.root)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp: Path | None = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.tmp-", dir=out_path.parent))
            self.target: Storage = open_location(self.tmp)
            self.token = ""
        else:
            self.tmp, self.target = None, self.final
            self.token = "-" + uuid.uuid4().hex[:12]

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None or not self.done:
            self.abort()

    # ------------------------------------------------------------------ writing
    def write(self, split: str, block: Block) -> None:
        """Append ``block``'s rows to ``split`` (a 0-row block declares the split, no more)."""
        if self.done:
            raise RuntimeError("DatasetWriter: write after close/abort")
        table = _as_table(block)
        s = self.splits.setdefault(split, _Split(split))
        s.blocks += 1
        if s.schema is None:
            s.schema = table.schema
        elif not table.schema.equals(s.schema, check_metadata=False):
            exp, got = arrow_schema(s.schema), arrow_schema(table.schema)
            raise DataError(f"{self.final.display()}: split {split!r} block {s.blocks}: "
                            f"{schema_difference(exp, got)}; every block of a split has the first block's schema")
        start = 0
        while start < table.num_rows:
            if s.writer is None:
                self._open_part(s)
            take = min(table.num_rows - start, self.part_rows - s.part_rows)
            assert s.writer is not None
            try:
                s.writer.write_table(table.slice(start, take), row_group_size=self.row_group_rows)
            except (OSError, pa.ArrowException) as exc:
                raise DataError(_unreachable(self.target, "(write) a part file", exc, split)) from None
            s.part_rows += take
            s.rows += take
            start += take
            if s.part_rows >= self.part_rows:
                self._close_part(s)

    def _part_name(self, s: _Split) -> str:
        return f"part-{len(s.files):05d}{self.token}.parquet"

    def _open_part(self, s: _Split) -> None:
        name = self._part_name(s)
        path = self.target.path(s.name, name)
        try:
            if self.target.is_local:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            s.sink = _HashingSink(self.target.fs.open_output_stream(path))
        except (OSError, pa.ArrowException) as exc:
            raise DataError(_unreachable(self.target, "(write) a part file", exc, s.name, name)) from None
        assert s.schema is not None
        s.writer = pq.ParquetWriter(s.sink, s.schema)
        s.files.append({"name": name, "rows": 0, "bytes": 0, "sha256": ""})
        s.part_rows = 0

    def _close_part(self, s: _Split) -> None:
        if s.writer is None or s.sink is None:
            return
        try:
            s.writer.close()
            s.sink.close()
        except (OSError, pa.ArrowException) as exc:
            raise DataError(_unreachable(self.target, "(write) a part file", exc, s.name)) from None
        s.files[-1].update(rows=s.part_rows, bytes=s.sink.bytes, sha256=s.sink.sha.hexdigest())
        s.writer, s.sink, s.part_rows = None, None, 0

    # ------------------------------------------------------------------ publishing
    def close(self, meta: Mapping[str, Any] | None = None) -> Dataset:
        """Finish the part files, write the manifest (last) and make the dataset visible.

        Raises:
            DataError: no split written, or a split with 0 rows (nothing is published).
        """
        try:
            if not self.splits:
                raise DataError(f"dataset {self.final.display()}: no split written; nothing written")
            for s in self.splits.values():
                if s.rows == 0:
                    raise DataError(f"dataset {self.final.display()}: split {s.name!r} is empty (0 rows); "
                                    "nothing written")
                self._close_part(s)
            manifest = self._manifest(meta)
            self._publish(manifest)
        except BaseException:
            self.abort()
            raise
        self.done = True
        return Dataset(self.uri, manifest, self.final)

    def _manifest(self, meta: Mapping[str, Any] | None) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for name, s in self.splits.items():
            assert s.schema is not None
            info[name] = {
                "rows": s.rows,
                "schema": {c: str(t) for c, t in s.schema.empty_table().to_pandas().dtypes.items()},
                "arrow_schema": arrow_schema(s.schema),
                "files": s.files,
            }
        # the same formula as format 1 when each split has one file
        content = hashlib.sha256("".join(f["sha256"] for n in sorted(info) for f in info[n]["files"]).encode())
        return {
            "format": FORMAT,
            "splits": info,
            "content_hash": content.hexdigest(),
            "source": self.source,
            "seed": self.seed,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "meta": dict(meta or {}),
        }

    def _publish(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, default=_json_default)
        if self.tmp is not None:
            (self.tmp / MANIFEST).write_text(text)
            out = Path(self.final.root)
            if out.exists():
                old = out.with_name(f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:6]}")
                os.replace(out, old)
                os.replace(self.tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self.tmp, out)
            self.tmp = None
            return
        try:
            self.final.write_text(text, MANIFEST)  # one PUT: the dataset appears whole
        except (OSError, pa.ArrowException) as exc:
            raise DataError(_unreachable(self.final, "(write) the manifest", exc, MANIFEST)) from None
        if self.old is not None:  # the replaced dataset's files (never one the new manifest lists)
            new = {f"{n}/{f['name']}" for n, s in manifest["splits"].items() for f in s["files"]}
            old_ds = Dataset(self.uri, self.old, self.final)
            for split in old_ds.splits:
                for f in old_ds.files(split):
                    if f["name"] not in new:
                        self._delete(f["name"])

    def _delete(self, name: str) -> None:
        try:
            self.target.fs.delete_file(self.target.path(name))
        except (OSError, pa.ArrowException):
            pass  # best effort: a leftover is never read (not in a manifest)

    def abort(self) -> None:
        """Delete what this writer wrote; the dataset at ``out`` (if any) is untouched."""
        if self.done:
            return
        self.done = True
        for s in self.splits.values():
            try:
                if s.writer is not None:
                    s.writer.close()
                if s.sink is not None:
                    s.sink.close()
            except (OSError, pa.ArrowException):
                pass
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
            return
        for s in self.splits.values():
            for f in s.files:
                self._delete(f"{s.name}/{f['name']}")


def _as_table(block: Block) -> pa.Table:
    if isinstance(block, pa.Table):
        return block
    if isinstance(block, pa.RecordBatch):
        return pa.Table.from_batches([block])
    if isinstance(block, pd.DataFrame):
        return pa.Table.from_pandas(block, preserve_index=False)
    raise TypeError(f"DatasetWriter.write: expected a pyarrow Table/RecordBatch or a DataFrame, got {type(block)}")


def write_dataset(
    out_dir: Path | str,
    splits: Mapping[str, pd.DataFrame | pa.Table],
    *,
    source: str,
    seed: int | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Dataset:
    """Write ``splits`` (whole frames) as a dataset, atomically replacing one at ``out_dir``.

    Raises:
        DataError: a split is empty, or ``out_dir`` is a file or a non-empty directory that is not
            a dataset (nothing is replaced but a dataset).
    """
    display = dataset_uri(out_dir)
    for name, df in splits.items():
        if len(df) == 0:
            raise DataError(f"dataset {display}: split {name!r} is empty (0 rows); nothing written")
    with DatasetWriter(out_dir, source=source, seed=seed, overwrite=True) as w:
        for name, df in splits.items():
            w.write(name, df)
        return w.close(meta)

