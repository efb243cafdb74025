"""Decision-log imports at scale: ``crossdqn-log`` and ``drlput-log``, wall time and peak memory by size.

Per size: synthetic decision logs in the serving graph's schema (``serve_apps/feed_log.py``: the
allocation stage's ``alloc_*`` columns, the utility stage's DRL-PUT columns), written a block at a
time as several files (``--file-rows`` rows each, at least two; row groups of ``--row-group`` rows,
as the graph's segments), then each importer run in a fresh subprocess (the workload's
``import_decision_log`` with its ``default`` config, what ``adray data import FORMAT FILE... --out``
calls); its wall time and the peak PSS of its process tree (``benchmarks/proc_memory.py``, sampled
every 0.1 s).

Importers (``--importers``):

* ``crossdqn-log``: every outcome joined (nothing simulated);
* ``crossdqn-log-sim``: no outcome column, ``simulate_outcomes=true`` (every row simulated);
* ``drlput-log``: request ids increasing in log order (rows streamed as read);
* ``drlput-log-unordered``: the same rows with ids in random order (sorted by id on disk).

``--old REF`` also runs each importer as it was at git revision ``REF`` (``git show
REF:workloads/<w>/data.py`` written to a temporary module outside the repository; the working tree
is not touched), at sizes up to ``--old-max-rows``. The observations are drawn from a pool of
simulator screens (valid values; the Parquet files compress like real logs would not, which changes
their size on disk, not what an importer holds).

    python benchmarks/log_import_scale.py --rows 100000,1000000 --json
    python benchmarks/log_import_scale.py --rows 1000000 --old HEAD --json   # the whole-frame importers too

Last line with --json: ``{"sizes": [{importer, rows, peak_mb, wall_s}, ...]}`` (``importer``
suffixed ``@REF`` for the old code); the line before it, ``{"runs": [...]}``, adds per run the CPU
seconds of the subprocess (``cpu_s``: less inflated than wall time on a shared machine), the import
call's own seconds (``import_s``: without starting Python and importing the platform), the input
files and their size.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from proc_memory import (  # benchmarks/proc_memory.py (this script's folder is on sys.path)
    PeakPss,
    communicate_or_kill,
)

REPO = Path(__file__).resolve().parents[1]
IMPORTERS = ("crossdqn-log", "crossdqn-log-sim", "drlput-log", "drlput-log-unordered")
RUN = """
import importlib.util, json, sys, time
from pathlib import Path
from adray.config import load_config
from adray.workload import get_workload
name, module, out, opts, *files = sys.argv[1:]
wl = get_workload(name)
if module == "-":
    fn = wl.importers[name + "-log"]
else:
    spec = importlib.util.spec_from_file_location("old_data", module)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn = mod.import_decision_log
cfg = load_config(wl.config_cls, "default", wl.configs_dir, {})
t0 = time.perf_counter()
fn([Path(f) for f in files], Path(out), cfg, **json.loads(opts))
print("IMPORT_S", time.perf_counter() - t0)
"""


def crossdqn_blocks(n: int, block: int, joined: bool, seed: int, first: int) -> list[pa.Table]:
    """``n`` rows (requests ``first`` on) of the allocation stage's log columns, in blocks."""
    from workloads.crossdqn.config import CrossDQNConfig
    from workloads.crossdqn.sim import FeedSim, make_requests

    cfg = CrossDQNConfig()
    pool = FeedSim(cfg.sim, make_requests(cfg.sim, 8192, seed)).observe().astype(np.float32)  # (P, obs_dim)
    rng = np.random.default_rng(seed)
    out = []
    for lo in range(0, n, block):
        m = min(block, n - lo)
        obs = pool[rng.integers(0, len(pool), m)]
        fallback = rng.random(m) < 0.02
        cols = {
            "request_id": pa.array([f"feed-{i:012d}" for i in range(first + lo, first + lo + m)]),
            "alloc_obs": pa.ListArray.from_arrays(pa.array(np.arange(m + 1, dtype=np.int32) * obs.shape[1]),
                                                  pa.array(obs.ravel())),
            "alloc_action": pa.array(np.where(fallback, -1, rng.integers(0, cfg.num_actions, m)).astype(np.int32)),
            "alloc_propensity": pa.array(np.where(fallback, 1.0, rng.uniform(0.05, 1.0, m))),
            "alloc_fallback": pa.array(fallback),
            "model_versions": pa.array(['{"allocation": "crossdqn@v0001", "utility": "drlput@v0003"}'] * m),
            "logged_at": pa.array(np.arange(first + lo, first + lo + m, dtype=np.int64) * 10_000_000),
        }
        if joined:
            cols |= {"r_ad": pa.array(rng.random(m) * 0.5), "r_fee": pa.array(rng.random(m) * 0.2),
                     "r_ex": pa.array(rng.integers(0, 3, m).astype(np.float64)),
                     "orders": pa.array(rng.integers(0, 2, m).astype(np.float64))}
        out.append(pa.table(cols))
    return out


def drlput_blocks(ids: np.ndarray, block: int, seed: int) -> list[pa.Table]:
    """Rows of the utility stage's log columns (``UtilityPolicy.log_fields``) with the request ids
    ``feed-<ids, 12 digits>``, in blocks."""
    import pandas as pd

    from workloads.drlput import columns as C
    from workloads.drlput.actions import ActionSpace, behaviour_probs
    from workloads.drlput.config import DRLPUTConfig
    from workloads.drlput.data import log_requests
    from workloads.drlput.policy import UtilityPolicy

    cfg = DRLPUTConfig()
    pool = log_requests(cfg, 20_000, seed, behaviour_probs(ActionSpace(cfg.action), "uniform", 1.0), "uniform")
    pool[C.CAMPAIGN] = pool[C.CAMPAIGN].clip(-1, 1)
    schema = pa.schema(UtilityPolicy.log_fields())
    rng = np.random.default_rng(seed + 1)
    out = []
    for lo in range(0, len(ids), block):
        m = min(block, len(ids) - lo)
        df = pool.iloc[rng.integers(0, len(pool), m)].reset_index(drop=True)
        df[C.REQUEST_ID] = pd.Series([f"feed-{i:012d}" for i in ids[lo:lo + m]])
        df[C.POLICY_ID] = "drlput@v0003"
        out.append(pa.Table.from_pandas(df[list(C.LOG_COLUMNS)], schema=schema, preserve_index=False))
    return out


def write_files(folder: Path, importer: str, n: int, file_rows: int, row_group: int) -> list[Path]:
    """Several Parquet files of ``n`` log rows for ``importer``, each written a block at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    n_files = max(2, -(-n // file_rows))
    sizes = [n // n_files + (i < n % n_files) for i in range(n_files)]
    ids = np.random.default_rng(0).permutation(n) if importer == "drlput-log-unordered" else np.arange(n)
    files, start = [], 0
    for i, rows in enumerate(sizes):
        path = folder / f"segment-{i:03d}.parquet"
        writer = None
        for lo in range(start, start + rows, 4 * row_group):  # at most 4 row groups in memory while writing
            m, seed = min(4 * row_group, start + rows - lo), lo // row_group
            blocks = (crossdqn_blocks(m, row_group, importer == "crossdqn-log", seed, lo)
                      if importer.startswith("crossdqn") else drlput_blocks(ids[lo:lo + m], row_group, seed))
            for t in blocks:
                writer = writer or pq.ParquetWriter(path, t.schema)
                writer.write_table(t, row_group_size=row_group)
        assert writer is not None
        writer.close()
        files.append(path)
        start += rows
    return files


def run_import(importer: str, module: str, files: list[Path], out: Path, timeout: float,
               ) -> tuple[int, str, float, float, float]:
    """``(returncode, output, wall_s, cpu_s, peak_pss_mb)`` of one import in a fresh subprocess
    (``cpu_s``: its user + system time, which other load on the machine does not inflate as much)."""
    name = importer.split("-")[0]
    opts = {"simulate_outcomes": True} if importer == "crossdqn-log-sim" else {}
    cmd = [sys.executable, "-c", RUN, name, module, str(out), json.dumps(opts), *map(str, files)]
    t0, ru0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            start_new_session=True)
    with PeakPss(proc.pid, every_s=0.1) as peak:
        text = communicate_or_kill(proc, timeout, "log_import_scale")
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime
    return proc.returncode, text, time.perf_counter() - t0, cpu, peak.peak


def old_module(ref: str, workload: str, folder: Path) -> str:
    """``workloads/<workload>/data.py`` as it was at ``ref``, written under ``folder`` (outside the repo)."""
    text = subprocess.run(["git", "show", f"{ref}:workloads/{workload}/data.py"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout
    path = folder / f"old_{workload}_data_{ref.replace('/', '_')}.py"
    path.write_text(text)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--importers", default=",".join(IMPORTERS))
    ap.add_argument("--file-rows", type=int, default=250_000, help="rows per input file (at least two files)")
    ap.add_argument("--row-group", type=int, default=131_072, help="rows per row group of the input files "
                    "(the graph's decision log writes 131,072)")
    ap.add_argument("--old", default="", help="also run the importers of this git revision (e.g. HEAD)")
    ap.add_argument("--old-max-rows", type=int, default=1_000_000)
    ap.add_argument("--root", default="", help="where logs and datasets go (default: a temporary folder)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    root = Path(args.root or tempfile.mkdtemp(prefix="adray-log-import-"))
    sys.path.insert(0, str(REPO))
    sizes, runs = [], []
    olds = {w: old_module(args.old, w, root) for w in ("crossdqn", "drlput")} if args.old else {}
    try:
        for n in [int(x) for x in args.rows.split(",") if x]:
            for importer in [x for x in args.importers.split(",") if x]:
                if importer not in IMPORTERS:
                    raise SystemExit(f"unknown importer {importer!r}; expected one of {IMPORTERS}")
                logs = root / f"{importer}-{n}"
                t0 = time.perf_counter()
                files = write_files(logs, importer, n, args.file_rows, args.row_group)
                made = time.perf_counter() - t0
                versions = [("-", importer)]
                if olds and n <= args.old_max_rows:
                    versions.append((olds[importer.split("-")[0]], f"{importer}@{args.old}"))
                for module, label in versions:
                    out = root / f"ds-{label.replace('@', '-')}-{n}"
                    rc, text, wall, cpu, peak = run_import(importer, module, files, out, args.timeout)
                    ok = rc == 0 and (out / "manifest.json").is_file()
                    timed = [x for x in text.splitlines() if x.startswith("IMPORT_S ")]
                    import_s = float(timed[-1].split()[1]) if timed else float("nan")
                    row = {"importer": label, "rows": n, "peak_mb": round(peak), "wall_s": round(wall, 1)}
                    runs.append(row | {"ok": ok, "cpu_s": round(cpu, 1), "import_s": round(import_s, 1),
                                       "files": len(files), "write_logs_s": round(made, 1),
                                       "input_mb": round(sum(f.stat().st_size for f in files) / 2**20)})
                    print(f"{label:28} {n:>10,} rows {len(files):>2} files: peak {peak:6.0f} MB, wall {wall:6.1f} s "
                          f"(import {import_s:6.1f} s), cpu {cpu:6.1f} s{'' if ok else '  FAILED'}",
                          file=sys.stderr, flush=True)
                    if not ok:
                        print(text[-3000:], file=sys.stderr)
                        continue
                    sizes.append(row)
                    shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(logs, ignore_errors=True)
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps({"runs": runs}))
        print(json.dumps({"sizes": sizes}))


if __name__ == "__main__":
    main()
