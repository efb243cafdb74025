"""Data at scale (issue 21): pwiser generation and Ray Train ingest, streaming vs in memory, by size.

Per size (rows generated; train is 80%):

* generate: ``adray data make pwiser`` (a subprocess) wall time and peak memory;
* train, per path (``stream``; ``memory`` while the split fits, <= ``--memory-max-rows``): one
  epoch of at most ``--steps`` steps with ``--workers`` Ray Train workers through the platform's
  one entry (``run_training``, embedded local Ray, in a fresh subprocess): start-up to the first
  batch (``first_batch_s``: Ray init excluded, driver data load + Ray Train start + first batch),
  steady samples/s (steps after the first), and the peak memory of the whole process tree.

Memory: PSS summed over the process tree (the subprocess, its Ray: GCS, raylet, object store,
workers), from /proc/PID/smaps_rollup, sampled every 0.25 s in a thread; shared pages (the object
store, libraries) are counted once across processes.

    python benchmarks/data_scale.py --rows 1000000,10000000,50000000 --json

Last line with --json: ``{"sizes": [{rows, peak_mb, first_batch_s, samples_per_s, path}, ...],
"generate": [...], "runs": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from proc_memory import (  # benchmarks/proc_memory.py (this script's folder is on sys.path)
    communicate_or_kill,
    tree_pss,
)

REPO = Path(__file__).resolve().parents[1]
PEAK_BY_PROCESS: dict[str, float] = {}
"""The last measured command's PSS (MB) by process name at its peak (the 8 largest)."""
TRAIN = """
import json, os, sys, time
from adray.config import load_config
from adray.train import run_training
from adray.workload import get_workload
wl = get_workload("pwiser")
cfg = load_config(wl.config_cls, "default", wl.configs_dir, json.loads(sys.argv[1]))
out = run_training(wl, cfg, num_workers=int(sys.argv[2]), publish=False)
print("RESULT " + json.dumps({"metrics": out.metrics, "timings": out.timings}), flush=True)
"""


def run_measured(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, float, float]:
    """``(returncode, stdout+stderr, wall_s, peak_pss_mb)`` of ``cmd``; its process group is killed
    at the end (a Ray it started goes with it)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=REPO, start_new_session=True)
    peak, stop = [0.0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            total, by = tree_pss(proc.pid)
            if total > peak[0]:
                peak[0] = total
                PEAK_BY_PROCESS.clear()
                PEAK_BY_PROCESS.update({k: round(v) for k, v in sorted(by.items(), key=lambda kv: -kv[1])[:8]})
            stop.wait(0.25)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out = communicate_or_kill(proc, timeout, "data_scale")
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    try:
        os.killpg(proc.pid, 9)  # leftovers of its Ray, if any
    except ProcessLookupError:
        pass
    return proc.returncode, out, wall, peak[0]


def replicate(base: Path, out: Path, copies: int, mode: str = "link") -> Path:
    """A dataset whose train split is ``copies`` x ``base``'s (each part file hard-linked, or with
    ``mode="copy"`` copied, ``copies`` times under new names; validation and test linked once):
    ``copies`` x the rows to decode and train on, with no new generation. Links take no new disk
    space (the page cache can then hold the files); copies take it (a split larger than RAM on disk
    too). The manifest is ``base``'s with the train split's file list repeated (sizes and sha256 as
    the files have them)."""
    from adray.data.dataset import MANIFEST

    if (out / MANIFEST).is_file():
        return out
    manifest = json.loads((base / MANIFEST).read_text())
    tmp = out.with_name(out.name + ".tmp")
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    for split, info in manifest["splits"].items():
        (tmp / split).mkdir(parents=True)
        files = []
        for _ in range(copies if split == "train" else 1):
            for f in info["files"]:
                name = f"part-{len(files):05d}.parquet"
                if mode == "copy" and split == "train":
                    shutil.copyfile(base / split / f["name"], tmp / split / name)
                else:
                    os.link(base / split / f["name"], tmp / split / name)
                files.append({**f, "name": name})
        info["files"], info["rows"] = files, sum(f["rows"] for f in files)
    manifest["content_hash"] = f"{manifest['content_hash'][:48]}x{copies:015d}"
    how = "copies" if mode == "copy" else "hard links"
    manifest["source"] = f"{manifest.get('source')} (train split x{copies}: {how}, benchmarks/data_scale.py)"
    (tmp / MANIFEST).write_text(json.dumps(manifest))
    tmp.rename(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="1000000,10000000")
    ap.add_argument("--paths", default="stream,memory")
    ap.add_argument("--memory-max-rows", type=int, default=12_000_000,
                    help="train in memory only up to this many generated rows (beyond: does not fit)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=400, help="steps of the one epoch (global batch 2048)")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--readers", type=int, default=0, help="ingest_readers (0: the platform's default)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="another pwiser config override (repeatable), e.g. --set model='\"sharedbottom\"' "
                         "--set 'bottom_units=[32]': a lighter model measures the data path, not the model")
    ap.add_argument("--data-root", default="", help="where datasets go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated datasets")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--replicate-from", type=int, default=0,
                    help="make each size from the dataset of this many rows (under --data-root) by linking its "
                         "train files size/N times (the larger-than-RAM run: no new generation or disk space)")
    ap.add_argument("--replicate-mode", choices=("link", "copy"), default="link",
                    help="hard links (no disk space) or copies (the train split's Parquet larger than RAM on disk)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    root = Path(args.data_root or tempfile.mkdtemp(prefix="adray-data-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ADRAY_HOME=str(root / "home"), RAY_TRAIN_V2_ENABLED="1")
    py = sys.executable
    extra = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    gens, runs, sizes = [], [], []
    for n in [int(x) for x in args.rows.split(",") if x]:
        data = root / f"pwiser-{n}"
        if args.replicate_from and n > args.replicate_from:
            base = root / f"pwiser-{args.replicate_from}"
            train = json.loads((base / "manifest.json").read_text())["splits"]["train"]["rows"]
            copies = max(1, round(n / args.replicate_from))
            replicate(base, data, copies, args.replicate_mode)
            print(f"dataset {n:>11,} rows: train split = {copies} x the {train:,} training rows of {base.name} "
                  f"({args.replicate_mode})", file=sys.stderr, flush=True)
        if not (data / "manifest.json").is_file():
            rc, out, wall, peak = run_measured(
                [py, "-m", "adray.cli", "data", "make", "pwiser", "--config", "default", "--set", f"rows={n}",
                 "--out", str(data), "--overwrite"], env, args.timeout)
            gens.append({"rows": n, "wall_s": round(wall, 1), "peak_mb": round(peak), "ok": rc == 0})
            print(f"generate {n:>11,} rows: {wall:7.1f} s, peak {peak:7.0f} MB{'' if rc == 0 else ' FAILED'}",
                  file=sys.stderr, flush=True)
            if rc != 0:
                print(out[-3000:], file=sys.stderr)
                continue
        for path in args.paths.split(","):
            if path == "memory" and n > args.memory_max_rows:
                continue
            over = {"data": str(data), "ingest": path, "epochs": 1, "max_steps_per_epoch": args.steps,
                    "batch_size": args.batch_size, "ingest_readers": args.readers} | extra
            rc, out, wall, peak = run_measured([py, "-c", TRAIN, json.dumps(over), str(args.workers)], env,
                                               args.timeout)
            line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
            if rc != 0 or line is None:
                print(f"train {path} {n:,}: FAILED (rc {rc})\n{out[-3000:]}", file=sys.stderr, flush=True)
                runs.append({"rows": n, "path": path, "ok": False})
                continue
            res = json.loads(line[len("RESULT "):])
            m, t = res["metrics"], res["timings"]
            row = {"rows": n, "path": path, "peak_mb": round(peak), "first_batch_s": round(t.get("first_batch_s", 0), 1),
                   "samples_per_s": round(m.get("steady_samples_per_s", m.get("samples_per_s", 0))),
                   "epoch_samples_per_s": round(m.get("samples_per_s", 0)), "wall_s": round(wall, 1),
                   "data_load_s": round(t.get("data_load_s", 0), 1), "val_auc_ctr": round(m.get("val_auc_ctr", 0), 4),
                   "workers": args.workers, "readers": args.readers, "batch_size": args.batch_size,
                   "steps": args.steps, "set": extra}
            runs.append(row | {"ok": True, "peak_by_process": dict(PEAK_BY_PROCESS)})
            sizes.append({k: row[k] for k in ("rows", "peak_mb", "first_batch_s", "samples_per_s", "path")})
            print(f"train {path:6} {n:>11,} rows: peak {peak:7.0f} MB, first batch {row['first_batch_s']:6.1f} s, "
                  f"{row['samples_per_s']:>7} samples/s steady, wall {wall:6.1f} s", file=sys.stderr, flush=True)
        if not args.keep and not args.data_root:
            subprocess.run(["rm", "-rf", str(data)], check=False)
    if args.json:
        print(json.dumps({"sizes": sizes, "generate": gens, "runs": runs}))


if __name__ == "__main__":
    main()
