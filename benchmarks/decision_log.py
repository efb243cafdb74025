"""Decision log cost on the request path and write throughput, to a local folder.

    python benchmarks/decision_log.py                    # 50k feed-like rows, one JSON line
    python benchmarks/decision_log.py --rows 200000 --out /mnt/disk/bench

Rows look like a feed decision: 31 columns (ids, context strings, 12 float and 6 int features,
action, propensity, model version, a list<float32> embedding of 50 values, null outcome fields,
logged_at stamped by the log). Two runs on fresh streams:

* ``append``: one row per call from one thread with the default settings (batch 1024, flush every
  1 s), the writer thread running beside it as in a replica; per-call latency and accepted rows/s.
* ``flush``: the same rows appended in calls of 1024 rows, then ``close``; rows/s and MB/s of
  Parquet written from the first append until ``close`` returns (convert + write + rotate; the
  append calls are inside that time).

File count and bytes are what the stream holds after ``close``. The prebuilt rows are frozen out
of the garbage collector (a server does not hold 50k rows of its own); the rows the log buffers are
not, and a full collection over them is what ``append_max_us`` mostly shows.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from adray.decision_log import DecisionLog
from adray.storage import Storage

SCHEMA = pa.schema(
    [pa.field("request_id", pa.int64(), nullable=False), ("user_id", pa.string()), ("slot", pa.int32()),
     ("page", pa.string()), ("device", pa.string()), ("country", pa.string()), ("hour", pa.int8())]
    + [(f"f_dense_{i}", pa.float64()) for i in range(12)]
    + [(f"f_cat_{i}", pa.int64()) for i in range(6)]
    + [pa.field("action", pa.int32(), nullable=False), ("propensity", pa.float64()), ("model_version", pa.string()),
       ("user_emb", pa.list_(pa.float32())), ("click", pa.float64()), ("logged_at", pa.timestamp("ns"))])


def feed_rows(n: int, emb_dim: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"request_id": i, "user_id": f"u{rng.randrange(10**6)}", "slot": rng.randrange(8),
             "page": rng.choice(["home", "search", "video"]), "device": rng.choice(["ios", "android", "web"]),
             "country": rng.choice(["US", "DE", "JP", "BR"]), "hour": rng.randrange(24),
             **{f"f_dense_{k}": rng.random() for k in range(12)},
             **{f"f_cat_{k}": rng.randrange(10**5) for k in range(6)},
             "action": rng.randrange(50), "propensity": rng.random(), "model_version": "feed@v0007",
             "user_emb": [rng.random() for _ in range(emb_dim)]} for i in range(n)]


def stream_size(st: Storage, stream: str) -> tuple[int, int]:
    files = [f for f in st.list_files(stream) if f.endswith(".parquet")]
    return len(files), sum(st.local_path(stream, f).stat().st_size for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--emb-dim", type=int, default=50)
    ap.add_argument("--out", type=Path, default=None, help="folder for the logs (default: a temp folder)")
    args = ap.parse_args()
    rows = feed_rows(args.rows, args.emb_dim)
    gc.freeze()  # the prebuilt rows are the benchmark's, not the log's: keep them out of full GC passes
    with tempfile.TemporaryDirectory() as tmp:
        st = Storage(args.out or tmp)

        log = DecisionLog(st, "append", SCHEMA, queue_rows=max(args.rows, 1024))
        lat_ns = np.empty(len(rows), dtype=np.int64)
        t0 = time.perf_counter()
        for i, row in enumerate(rows):
            t = time.perf_counter_ns()
            log.append([row])
            lat_ns[i] = time.perf_counter_ns() - t
        append_s = time.perf_counter() - t0
        log.close()
        a_stats, (a_files, a_bytes) = log.stats(), stream_size(st, "append")

        log = DecisionLog(st, "flush", SCHEMA, queue_rows=max(args.rows, 1024))
        t0 = time.perf_counter()
        for k in range(0, len(rows), 1024):
            log.append(rows[k:k + 1024])
        log.close()
        flush_s = time.perf_counter() - t0
        f_stats, (f_files, f_bytes) = log.stats(), stream_size(st, "flush")

    print(json.dumps({
        "rows": args.rows, "columns": len(SCHEMA), "emb_dim": args.emb_dim,
        "append_rows_per_s": round(args.rows / append_s),
        "append_p50_us": round(float(np.percentile(lat_ns, 50)) / 1e3, 1),
        "append_p99_us": round(float(np.percentile(lat_ns, 99)) / 1e3, 1),
        "append_max_us": round(float(lat_ns.max()) / 1e3, 1),
        "append_dropped": a_stats.dropped, "append_flushed": a_stats.flushed,
        "append_batch_files": a_stats.batch_files, "append_files_after_close": a_files,
        "append_bytes_after_close": a_bytes,
        "flush_rows_per_s": round(args.rows / flush_s),
        "flush_mb_per_s": round(f_stats.bytes_written / flush_s / 1e6, 1),
        "flush_batch_files": f_stats.batch_files, "flush_files_after_close": f_files,
        "flush_bytes_after_close": f_bytes, "last_error": a_stats.last_error or f_stats.last_error,
    }))


if __name__ == "__main__":
    main()
