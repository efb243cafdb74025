"""The decision log: one Parquet row per serving decision, written in batches off the request path.

A serving replica appends rows (request features, actions, propensities, model versions, outcome
fields left null to be joined later); a daemon thread writes them to the storage URI (a local
folder or ``s3://...``, see :mod:`adray.storage`). Layout under ``<storage>/<stream>/``::

    _schema.arrow                                   the log's Arrow schema (for an empty log)
    _open/<writer_id>/_writer.json                  host, pid and heartbeat of a live writer
    _open/<writer_id>/batch-<seq>.parquet           one flushed batch (a complete Parquet file)
    date=YYYY-MM-DD/segment-<writer_id>-<first_ts>-<first_seq>-<last_seq>.parquet   closed segments

Guarantees and how they are kept:

* ``append`` does no I/O and takes no lock that I/O holds: it checks the rows, stamps
  ``logged_at`` and puts them in a bounded buffer. A full buffer (storage stalled or down) drops
  the new rows and counts them in :meth:`DecisionLog.stats`; I/O errors never reach the caller.
* Every flush writes one complete Parquet file in one step (``Storage.write_bytes``: temp file +
  ``os.replace`` locally, one PUT on object stores), so a crash loses only rows not yet flushed
  and never leaves a half-written file where readers look.
* Rotation (rows, bytes or age of the open segment) writes the writer's batches as one segment,
  then deletes them. A reader that lists both skips a batch whose sequence number a segment of the
  same writer covers, so rows are never read twice, also after a crash between the two steps.
* Orphaned batches of a dead writer (same host and its pid gone, or no heartbeat for
  ``stale_after_s``) are compacted by :func:`recover`, which every new writer runs once.

Differences from the first design, and why:

* Segment names carry the batch range (``<first_seq>-<last_seq>``), not one ``<seq>``: without
  it a crash between writing a segment and deleting its batches, or a reader listing in that
  moment, would see the same rows twice. The names are also deterministic, so two writers
  recovering the same orphan write the same segment.
* ``writer_id`` names a writer; a random token is always appended. A replica restarted under the
  same name would otherwise restart its sequence numbers inside the ranges of its predecessor's
  segments (and its rows would be skipped as already compacted).
* Types are checked in the caller's thread by plain Python checks per field (about 10 us a row),
  with Arrow itself deciding only for values the fast check does not know; the rows are
  converted to Arrow by the writer thread, in batches (Arrow costs ~120 us for a one-row table but
  ~3 us a row in a batch of 1024). A value that passes the checks but that Arrow still refuses
  (rare: an int out of range inside a list) costs only its own row, counted as ``rejected``.
* ``read_log(since=...)`` filters on ``logged_at`` instead of skipping date partitions: a segment
  open across midnight, or rows with a caller-set ``logged_at``, may hold rows dated outside its
  partition. Parquet row-group statistics still let old files be skipped cheaply.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import re
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from adray.storage import Storage, StorageError

LOGGED_AT = "logged_at"
_OPEN, _SCHEMA_FILE, _WRITER_FILE = "_open", "_schema.arrow", "_writer.json"
_META_KEY = b"adray.decision_log"
_ID = r"[A-Za-z0-9._-]+"
_BATCH_RE = re.compile(rf"^{_OPEN}/(?P<writer>{_ID})/batch-(?P<seq>\d+)\.parquet$")
_SEGMENT_RE = re.compile(rf"^date=\d{{4}}-\d{{2}}-\d{{2}}/segment-(?P<writer>{_ID})-(?P<ts>\d{{8}}T\d{{12}}Z)"
                         r"-(?P<first>\d+)-(?P<last>\d+)\.parquet$")
_STREAM_RE = re.compile(r"^[A-Za-z0-9._=-]+(/[A-Za-z0-9._=-]+)*$")


@dataclass(frozen=True)
class LogSettings:
    """When a decision log flushes, rotates and gives up; every field is checked on creation."""

    batch_rows: int = 1024
    """Flush as soon as this many rows wait (else every ``flush_every_s``)."""
    flush_every_s: float = 1.0
    """Longest time a row waits in memory before its batch is written."""
    rotate_rows: int = 1_000_000
    """Close the open segment once its flushed batches hold this many rows."""
    rotate_bytes: int = 64 << 20
    """... or this many Parquet bytes (they are kept in memory until the segment closes)."""
    rotate_every_s: float = 3600.0
    """... or once its first batch is this old."""
    queue_rows: int = 100_000
    """Most rows held in memory (waiting or being written); more are dropped and counted."""
    heartbeat_s: float = 30.0
    """How often a live writer refreshes its ``_writer.json``."""
    stale_after_s: float = 600.0
    """A writer silent this long is dead: its batches may be compacted by another writer."""
    recover_on_start: bool = True
    """Compact dead writers' batches once, after this writer's first flush."""
    compression: str = "zstd"
    """Parquet codec of batches and segments."""

    def __post_init__(self) -> None:
        for name in ("batch_rows", "rotate_rows", "rotate_bytes", "queue_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LogSettings.{name} must be a positive int, got {value!r}")
        for name in ("flush_every_s", "rotate_every_s", "heartbeat_s", "stale_after_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"LogSettings.{name} must be a positive number of seconds, got {value!r}")
        if self.queue_rows < self.batch_rows:
            raise ValueError(f"LogSettings.queue_rows ({self.queue_rows}) must be >= batch_rows ({self.batch_rows})")
        if self.stale_after_s <= 2 * self.heartbeat_s:
            raise ValueError(f"LogSettings.stale_after_s ({self.stale_after_s}) must exceed twice heartbeat_s "
                             f"({self.heartbeat_s}), or live writers would be taken for dead")
        if not pa.Codec.is_available(self.compression):
            raise ValueError(f"LogSettings.compression {self.compression!r} is not a Parquet codec this pyarrow has")


@dataclass(frozen=True)
class LogStats:
    """Row counts since the log was opened."""

    appended: int  # accepted into the buffer
    flushed: int  # written in batch files
    dropped: int  # valid rows refused: buffer full, or appended after close
    rejected: int  # accepted rows that Arrow could not convert (see last_error)
    pending: int  # accepted, not yet flushed nor rejected
    batch_files: int
    files_closed: int  # segments written
    bytes_written: int  # Parquet bytes of batch files and segments
    last_error: str | None


# ---------------------------------------------------------------------------------- row checks
_INTS = frozenset({int, bool, *(getattr(np, f"{k}{b}") for k in ("int", "uint") for b in (8, 16, 32, 64))})
_NUMBERS = _INTS | {float, np.float16, np.float32, np.float64}
_STRS, _BYTES, _BOOLS = frozenset({str}), frozenset({bytes, bytearray}), frozenset({bool, np.bool_})


def _scalar_types(t: pa.DataType) -> frozenset[type] | None:
    """Python types always accepted for ``t`` (None: ask Arrow)."""
    if pa.types.is_floating(t):
        return _NUMBERS
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _STRS
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return _BYTES
    if pa.types.is_boolean(t):
        return _BOOLS
    return None


def _fast_check(t: pa.DataType) -> Callable[[Any], bool]:
    """A cheap check that says True only for values Arrow surely converts to ``t``."""
    if pa.types.is_integer(t):
        lo, hi = (-(1 << (t.bit_width - 1)), (1 << (t.bit_width - 1)) - 1) if pa.types.is_signed_integer(t) \
            else (0, (1 << t.bit_width) - 1)
        return lambda v: type(v) in _INTS and type(v) is not bool and lo <= v <= hi
    if pa.types.is_timestamp(t):
        return lambda v: type(v) is int or isinstance(v, datetime)
    scalars = _scalar_types(t)
    if scalars is not None:
        return lambda v: type(v) in scalars
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        items = _scalar_types(t.value_type)
        if items is not None:
            return lambda v: (type(v) in (list, tuple) and {*map(type, v)} <= items) \
                or (isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "fiub")
        inner = _fast_check(t.value_type)
        return lambda v: type(v) in (list, tuple) and all(x is None or inner(x) for x in v)
    return lambda v: False


def _arrow_refuses(value: Any, t: pa.DataType) -> str | None:
    try:
        pa.array([value], type=t)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------- files
def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def _parquet_bytes(table: pa.Table, meta: dict[str, Any], compression: str) -> bytes:
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression, row_group_size=1 << 17)
    return sink.getvalue().to_pybytes()


def _strip(table: pa.Table) -> pa.Table:
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != _META_KEY}
    return table.replace_schema_metadata(meta or None)


def _file_meta(table: pa.Table) -> dict[str, Any]:
    return json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))


def _write_segment(storage: Storage, stream: str, writer_id: str, batches: list[tuple[int, pa.Table]],
                   compression: str) -> tuple[str, int]:
    """Write ``(seq, table)`` batches (ascending seq) as one closed segment: (relative path, bytes)."""
    first_ts = int(_file_meta(batches[0][1]).get("flushed_at_ns", 0))
    first, last = batches[0][0], batches[-1][0]
    when = _utc(first_ts)
    rel = (f"date={when:%Y-%m-%d}/segment-{writer_id}-{when:%Y%m%dT%H%M%S}{when.microsecond:06d}Z"
           f"-{first:08d}-{last:08d}.parquet")
    table = pa.concat_tables([_strip(t) for _, t in batches], promote_options="default")
    meta = {"writer_id": writer_id, "first_seq": first, "last_seq": last, "first_ts_ns": first_ts}
    data = _parquet_bytes(table, meta, compression)
    storage.write_bytes(data, stream, rel)
    return rel, len(data)


def _layout(files: list[str]) -> tuple[list[tuple[Any, ...]], dict[str, dict[int, str]]]:
    """Segments (sorted by first_ts, writer, first seq) and batches by writer, from relative paths."""
    segments, batches = [], {}
    for rel in files:
        if m := _SEGMENT_RE.match(rel):
            segments.append((m["ts"], m["writer"], int(m["first"]), int(m["last"]), rel))
        elif m := _BATCH_RE.match(rel):
            batches.setdefault(m["writer"], {})[int(m["seq"])] = rel
    return sorted(segments), batches


def _covered(segments: list[tuple[Any, ...]], writer: str, seq: int) -> bool:
    return any(w == writer and first <= seq <= last for _, w, first, last, _ in segments)


def _host_id() -> str:
    try:  # the pid namespace too: containers may share a hostname, never a pid namespace
        return f"{socket.gethostname()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return socket.gethostname()


def _alive(info: dict[str, Any] | None, now_s: float, stale_after_s: float) -> bool:
    if not info:
        return False
    if info.get("host") == _host_id():
        try:
            os.kill(int(info.get("pid", -1)), 0)
        except (ProcessLookupError, ValueError, OverflowError):
            return False
        except PermissionError:
            pass
    return now_s - float(info.get("heartbeat_s", 0.0)) < stale_after_s


_LIVE: weakref.WeakSet[DecisionLog] = weakref.WeakSet()


def recover(storage: Storage, stream: str, *, stale_after_s: float = LogSettings.stale_after_s,
            clock: Callable[[], float] = time.time, compression: str = LogSettings.compression) -> list[str]:
    """Compact the ``_open`` batches of dead writers into closed segments; the segments written.

    A writer is dead when its ``_writer.json`` names this host and a pid that no longer runs, or
    when its heartbeat is older than ``stale_after_s`` (by ``clock``), or when it has none. Writers
    of this process are never touched. Batches a segment already covers are only deleted.
    """
    segments, batches = _layout(storage.list_files(stream))
    written = []
    for writer in sorted(set(storage.list_dirs(stream, _OPEN)) | set(batches)):
        if writer in {log.writer_id for log in list(_LIVE)}:
            continue
        text = storage.read_text(stream, _OPEN, writer, _WRITER_FILE)
        if _alive(json.loads(text) if text else None, clock(), stale_after_s):
            continue
        todo = sorted(seq for seq in batches.get(writer, {}) if not _covered(segments, writer, seq))
        if todo:
            tables = [(seq, pq.read_table(storage.path(stream, batches[writer][seq]), filesystem=storage.fs))
                      for seq in todo]
            written.append(_write_segment(storage, stream, writer, tables, compression)[0])
        storage.delete_dir(stream, _OPEN, writer)
    return written


def read_log(storage: Storage, stream: str, since: datetime | None = None) -> pa.Table:
    """Every row of the log: closed segments (oldest first), then flushed batches of open segments.

    Args:
        storage: the storage the log was written to.
        stream: the log's name under it.
        since: keep rows with ``logged_at >= since`` (a naive datetime is UTC); needs that column.
    Raises:
        StorageError: the stream does not exist (nothing was ever written to it).
    """
    if not storage.is_dir(stream):
        raise StorageError(f"decision log {storage.display(stream)} does not exist (no writer has started on it)")
    raw = storage.read_bytes(stream, _SCHEMA_FILE)
    schema = pa.ipc.read_schema(pa.py_buffer(raw)) if raw else None
    where = None
    if since is not None:
        field = schema.field(LOGGED_AT) if schema is not None and LOGGED_AT in schema.names else None
        if field is None:
            raise ValueError(f"read_log(since=...) needs a {LOGGED_AT!r} column; {storage.display(stream)} has none")
        since_ns = int((since if since.tzinfo else since.replace(tzinfo=UTC)).timestamp() * 1e9)
        where = pc.field(LOGGED_AT) >= pa.scalar(since_ns, type=field.type)

    def read(rel: str) -> pa.Table:
        table = _strip(pq.read_table(storage.path(stream, rel), filesystem=storage.fs, filters=where))
        # Parquet renames list items ("item" -> "element"); the stored schema puts the names back
        return table.cast(schema) if schema is not None and table.schema.names == schema.names else table

    # A rotation deletes an open segment's batches once their closed segment is written; closed
    # segments are never deleted. So the batches, the only files that can vanish, are read first,
    # right after the listing, and a batch gone by then means a new listing (its segment is in it).
    # Segments come after, in any time. At a rotation every few ms (the tests') a fixed number of
    # retries of the whole read once ran out; a deadline does not.
    give_up = time.monotonic() + 30.0
    with ThreadPoolExecutor(max_workers=8) as pool:
        while True:
            # batches are listed before segments: a batch gone from the first listing was deleted after
            # its segment was written, so the second listing has that segment
            _, batches = _layout([f"{_OPEN}/{f}" for f in storage.list_files(stream, _OPEN)])
            segments, _ = _layout([f for f in storage.list_files(stream) if not f.startswith(f"{_OPEN}/")])
            open_rels = [rel for writer in sorted(batches)
                         for seq, rel in sorted(batches[writer].items()) if not _covered(segments, writer, seq)]
            try:
                open_tables = list(pool.map(read, open_rels))
                break
            except FileNotFoundError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.001)
        tables = [*pool.map(read, [rel for *_, rel in segments]), *open_tables]
    if not tables:
        if schema is None:
            raise StorageError(f"decision log {storage.display(stream)} has no schema file and no rows")
        return schema.empty_table()
    return pa.concat_tables(tables, promote_options="default")


# ---------------------------------------------------------------------------------- the writer
@dataclass
class _Batch:
    seq: int
    data: bytes  # the Parquet file as written, kept until the segment closes
    rows: int
    flushed_at_ns: int


class DecisionLog:
    """Appends rows to a Parquet log on ``storage`` under ``stream``; writes from a daemon thread.

    Args:
        storage: where the log lives (local folder or object store).
        stream: the log's name, a relative path (``"feed/decisions"``).
        schema: the rows' Arrow schema. A ``logged_at`` column (int64 or timestamp[ns]) is
            filled at append with the clock's time in ns when a row lacks it.
        settings: flush and rotation settings; single fields may be given as keywords instead
            (``DecisionLog(st, "d", schema, batch_rows=256)``); unknown names are an error.
        writer_id: this writer's name (default ``<host>-<pid>``); a random token is appended.
        clock: seconds since the epoch; drives ``logged_at``, rotation age and heartbeats.
    """

    def __init__(self, storage: Storage, stream: str, schema: pa.Schema, settings: LogSettings | None = None, *,
                 writer_id: str | None = None, clock: Callable[[], float] = time.time, **overrides: Any) -> None:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(LogSettings)}
        if unknown:
            raise ValueError(f"DecisionLog: unknown settings {sorted(unknown)}; "
                             f"expected LogSettings fields {[f.name for f in dataclasses.fields(LogSettings)]}")
        self.settings = dataclasses.replace(settings or LogSettings(), **overrides)
        if not isinstance(stream, str) or not _STREAM_RE.match(stream) or ".." in stream.split("/"):
            raise ValueError(f"DecisionLog: stream must be a relative path of [A-Za-z0-9._=-] parts, got {stream!r}")
        if not isinstance(schema, pa.Schema) or len(set(schema.names)) != len(schema.names):
            raise ValueError(f"DecisionLog: schema must be a pyarrow.Schema with unique field names, got {schema!r}")
        if LOGGED_AT in schema.names:
            t = schema.field(LOGGED_AT).type
            if not (t == pa.int64() or (pa.types.is_timestamp(t) and t.unit == "ns")):
                raise ValueError(f"DecisionLog: column {LOGGED_AT!r} must be int64 or timestamp[ns], not {t}")
        name = writer_id or re.sub(r"[^A-Za-z0-9.-]", "-", f"{socket.gethostname()}-{os.getpid()}")
        if not re.fullmatch(_ID, name):
            raise ValueError(f"DecisionLog: writer_id must match {_ID}, got {writer_id!r}")
        self.storage, self.stream, self.schema, self.clock = storage, stream, schema, clock
        self.writer_id = f"{name}-{secrets.token_hex(3)}"
        self._now_ns = time.time_ns if clock is time.time else (lambda: int(clock() * 1e9))
        self._checks = {f.name: (_fast_check(f.type), f.type) for f in schema}
        self._required = [f.name for f in schema if not f.nullable and f.name != LOGGED_AT]
        self._stamp = LOGGED_AT in schema.names
        # state shared with the writer thread, under _cond; I/O never happens while holding it
        self._cond = threading.Condition()
        self._buf: list[dict[str, Any]] = []
        self._appended = self._flushed = self._dropped = self._rejected = 0
        self._batch_files = self._files_closed = self._bytes = 0
        self._last_error: str | None = None
        self._closing = self._abandon = False
        self._flush_gen = self._done_gen = 0
        # writer-thread state
        self._open: list[_Batch] = []
        self._seq = 0
        self._started = self._recovered = False
        self._beat_at = 0.0
        _LIVE.add(self)
        self._thread = threading.Thread(target=self._run, name=f"decision-log-{stream}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ request path
    def append(self, rows: list[dict[str, Any]]) -> int:
        """Queue ``rows``; no I/O, never waits on storage. Returns how many were accepted (the rest
        were dropped: buffer full or log closed; see :meth:`stats`).

        Raises:
            ValueError: a row has a field not in the schema, lacks a required one, or has a value
                of the wrong type (the message names the row, field and expected type). Nothing of
                this call is queued then; earlier and later calls are unaffected.
        """
        if not isinstance(rows, list | tuple):
            raise TypeError(f"DecisionLog.append takes a list of rows (dicts), got {type(rows).__name__}")
        now = self._now_ns() if self._stamp else 0
        clean = [self._check(i, row, now) for i, row in enumerate(rows)]
        with self._cond:
            room = 0 if self._closing else max(self.settings.queue_rows - self._pending(), 0)
            take = clean if len(clean) <= room else clean[:room]
            self._dropped += len(clean) - len(take)
            if take:
                before = len(self._buf)
                self._buf.extend(take)
                self._appended += len(take)
                if before < self.settings.batch_rows <= len(self._buf):
                    self._cond.notify_all()
        return len(take)

    def _check(self, i: int, row: dict[str, Any], now_ns: int) -> dict[str, Any]:
        if not isinstance(row, dict):
            raise ValueError(f"decision log {self.stream!r}: row {i} must be a dict, got {type(row).__name__}")
        for name, value in row.items():
            check = self._checks.get(name)
            if check is None:
                raise ValueError(f"decision log {self.stream!r}: row {i} has field {name!r}, which is not in the "
                                 f"schema (fields: {', '.join(self.schema.names)})")
            if value is not None and not check[0](value) and (why := _arrow_refuses(value, check[1])):
                raise ValueError(f"decision log {self.stream!r}: row {i}: field {name!r} expects {check[1]}, got "
                                 f"{value!r:.80} ({type(value).__name__}): {why}")
        for name in self._required:
            if row.get(name) is None:
                raise ValueError(f"decision log {self.stream!r}: row {i} lacks required field {name!r} "
                                 f"({self.schema.field(name).type}, not nullable)")
        out = dict(row)  # the caller may reuse its dict
        if self._stamp and out.get(LOGGED_AT) is None:
            out[LOGGED_AT] = now_ns
        return out

    def _pending(self) -> int:
        return self._appended - self._flushed - self._rejected

    def stats(self) -> LogStats:
        with self._cond:
            return LogStats(self._appended, self._flushed, self._dropped, self._rejected, self._pending(),
                            self._batch_files, self._files_closed, self._bytes, self._last_error)

    # ------------------------------------------------------------------ control (these wait)
    def flush(self, timeout: float | None = None) -> bool:
        """Write everything appended so far (and rotate if due); waits. True if it was all written."""
        with self._cond:
            target = self._appended
            self._flush_gen += 1
            gen = self._flush_gen
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._done_gen >= gen or not self._thread.is_alive(), timeout)
            return self._flushed + self._rejected >= target

    def close(self, timeout: float = 60.0) -> None:
        """Flush, close the open segment and stop the writer; idempotent. Rows later appended are
        dropped. If storage stays unreachable for ``timeout`` seconds, the rest is given up."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                self._abandon = True
                self._last_error = f"close gave up after {timeout}s with {self._pending()} rows unwritten " \
                                   f"(last error: {self._last_error})"
                self._cond.notify_all()
        _LIVE.discard(self)

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        failed = False
        while True:
            with self._cond:
                busy = self._closing or self._flush_gen > self._done_gen or len(self._buf) >= self.settings.batch_rows
                if failed or not busy:
                    self._cond.wait(self.settings.flush_every_s)
                if self._abandon:
                    return
                closing, gen = self._closing, self._flush_gen
                rows, self._buf = self._buf, []
            failed = not self._cycle(rows, closing)
            with self._cond:
                self._done_gen = max(self._done_gen, gen)
                self._cond.notify_all()
            if closing and not failed:
                return

    def _cycle(self, rows: list[dict[str, Any]], final: bool) -> bool:
        s, parts = self.settings, (self.stream, _OPEN, self.writer_id)
        written = False
        try:
            if not self._started:  # the writer file goes first: a batch is never without its owner
                self.storage.write_bytes(self.schema.serialize().to_pybytes(), self.stream, _SCHEMA_FILE)
                self._heartbeat()
                self._started = True
            if rows:
                self._write_batch(rows)
            written = True
            age_s = (self._now_ns() - self._open[0].flushed_at_ns) / 1e9 if self._open else 0.0
            if self._open and (final or age_s >= s.rotate_every_s or sum(b.rows for b in self._open) >= s.rotate_rows
                               or sum(len(b.data) for b in self._open) >= s.rotate_bytes):
                self._rotate()
            if final:
                self.storage.delete_dir(*parts)
            elif self.clock() - self._beat_at >= s.heartbeat_s:
                self._heartbeat()
            if s.recover_on_start and not self._recovered and not final:
                self._recovered = True
                recover(self.storage, self.stream, stale_after_s=s.stale_after_s, clock=self.clock,
                        compression=s.compression)
            return True
        except Exception as exc:  # noqa: BLE001 - the writer must outlive any storage error
            with self._cond:
                if not written:  # back to the front of the buffer: retried next cycle, same seq
                    self._buf[:0] = rows
                self._last_error = f"{type(exc).__name__}: {exc}"
            return False

    def _heartbeat(self) -> None:
        self._beat_at = self.clock()
        info = {"host": _host_id(), "pid": os.getpid(), "heartbeat_s": self._beat_at}
        self.storage.write_text(json.dumps(info), self.stream, _OPEN, self.writer_id, _WRITER_FILE)

    def _to_table(self, rows: list[dict[str, Any]]) -> pa.Table:
        # Converting Python rows holds the GIL; in chunks of batch_rows (a few ms each) the request
        # threads get it back between chunks instead of waiting for a whole backlog's conversion.
        step = self.settings.batch_rows
        try:
            return pa.Table.from_batches([pa.RecordBatch.from_pylist(rows[k:k + step], schema=self.schema)
                                          for k in range(0, len(rows), step)], schema=self.schema)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass  # one bad value: keep the good rows, count the bad ones
        good, bad = [], None
        for row in rows:
            try:
                pa.Table.from_pylist([row], schema=self.schema)
                good.append(row)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                bad = bad or (row, exc)
        with self._cond:
            self._rejected += len(rows) - len(good)
            if bad is not None:
                self._last_error = f"{len(rows) - len(good)} rows rejected by Arrow, first: {bad[1]} in {bad[0]!r:.300}"
        rows[:] = good  # counted once: a retry after a failed write sees only the good rows
        return pa.Table.from_pylist(good, schema=self.schema)

    def _write_batch(self, rows: list[dict[str, Any]]) -> None:
        table = self._to_table(rows)
        if not table.num_rows:
            return
        flushed_at = self._now_ns()
        meta = {"writer_id": self.writer_id, "seq": self._seq, "flushed_at_ns": flushed_at}
        data = _parquet_bytes(table, meta, self.settings.compression)
        # seq advances only on success: a retry rewrites the same name, so no batch is doubled
        self.storage.write_bytes(data, self.stream, _OPEN, self.writer_id, f"batch-{self._seq:08d}.parquet")
        self._open.append(_Batch(self._seq, data, table.num_rows, flushed_at))
        self._seq += 1
        with self._cond:
            self._flushed += table.num_rows
            self._batch_files += 1
            self._bytes += len(data)

    def _rotate(self) -> None:
        parts = (self.stream, _OPEN, self.writer_id)
        # a writer taken for dead (storage stalled past stale_after_s) may have lost batches to
        # recover(); those are in someone else's segment now, so only what is still here goes in
        present = set(self.storage.list_files(*parts))
        batches = [(b.seq, pq.read_table(pa.BufferReader(b.data))) for b in self._open
                   if f"batch-{b.seq:08d}.parquet" in present]
        if batches:
            _, size = _write_segment(self.storage, self.stream, self.writer_id, batches, self.settings.compression)
            with self._cond:
                self._files_closed += 1
                self._bytes += size
        for b in self._open:
            self.storage.delete_file(*parts, f"batch-{b.seq:08d}.parquet")
        self._open = []


@atexit.register
def _close_all() -> None:
    for log in list(_LIVE):
        log.close(timeout=10.0)
