"""VAMO data at scale: peak memory of ``adray data make vamo`` and of a training run streamed vs in
memory, by size (number of training days).

Per size (``--days``; a market of ``--advertisers`` advertisers and 48 steps a day, 20,000
impressions a day so that days simulate fast):

* make: ``adray data make vamo --config smoke --set train_days=N ...`` in a subprocess: wall time
  and peak PSS of its process tree (sequential days: no Ray in ``data make``);
* train, per path (``memory``, ``stream``): one epoch of at most ``--steps`` steps on 1 Ray Train
  worker through ``run_training`` (embedded local Ray, fresh subprocess), the default network's
  window (context 16 + history 16, ~2.4 KB a window): peak PSS of the whole tree (driver, Ray,
  object store, worker), driver data load and start-up to the first batch.

``--replicate 4,16``: also train on the largest size's dataset with its training split repeated
that many times (periods shifted; written streaming), to see the streamed path past what simulating
days costs on a small machine; the in-memory path only up to ``--memory-max-rows`` training rows.
``--src DIR``: run everything from another source tree (e.g. ``git archive HEAD | tar -x -C DIR``),
to measure the code before a change with the same command. ``--data-root`` keeps the datasets; a
dataset already there is reused (not made or measured again).

    python benchmarks/vamo_data_scale.py --days 5,20 --replicate 4,16 --json

Last line with --json: ``{"make": [...], "train": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from data_scale import PEAK_BY_PROCESS, run_measured  # benchmarks/ (this script's folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
TRAIN = """
import json, sys
from adray.config import load_config
from adray.train import run_training
from adray.workload import get_workload
wl = get_workload("vamo")
cfg = load_config(wl.config_cls, "smoke", wl.configs_dir, json.loads(sys.argv[1]))
out = run_training(wl, cfg, num_workers=1, publish=False)
print("RESULT " + json.dumps({"metrics": out.metrics, "timings": out.timings}), flush=True)
"""


def replicate(src: Path, out: Path, times: int) -> int:
    """``src`` with its training split repeated ``times`` times (period p of copy k: p + 1000 k),
    validation and test as they are; returns the training rows."""
    from adray.data import DatasetWriter, read_dataset

    ds = read_dataset(src)
    meta = dict(ds.meta)
    meta["trajectory_lengths"] = {**meta["trajectory_lengths"],
                                  "train": [[k, n, c * times] for k, n, c in meta["trajectory_lengths"]["train"]]}
    with DatasetWriter(out, source=f"{ds.manifest['source']} x{times}", seed=ds.manifest.get("seed"),
                       overwrite=True) as w:
        for k in range(times):
            for rb in ds.iter_batches("train"):
                df = rb.to_pandas()
                df["period"] += 1000 * k
                w.write("train", df)
        for split in ("val", "test"):
            for rb in ds.iter_batches(split):
                w.write(split, rb.to_pandas())
        return int(w.close(meta).manifest["splits"]["train"]["rows"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", default="10,40", help="training days of each size")
    ap.add_argument("--advertisers", default="60,60,40", help="advertisers of the three tasks")
    ap.add_argument("--paths", default="memory,stream")
    ap.add_argument("--steps", type=int, default=20, help="steps of the one epoch")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--src", default="", help="another source tree to run (its platform/ and itself on PYTHONPATH)")
    ap.add_argument("--data-root", default="", help="where datasets go (default: a temporary folder)")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--replicate", default="", help="copies of the largest size's training split to train on too")
    ap.add_argument("--memory-max-rows", type=int, default=600_000, help="train in memory only up to this many rows")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    root = Path(args.data_root or tempfile.mkdtemp(prefix="adray-vamo-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    src = Path(args.src).resolve() if args.src else REPO
    env = dict(os.environ, ADRAY_HOME=str(root / "home"), RAY_TRAIN_V2_ENABLED="1",
               PYTHONPATH=os.pathsep.join([str(src / "platform"), str(src)]))
    market = {"sim.task_advertisers": [int(x) for x in args.advertisers.split(",")], "sim.steps": 48}
    sets = [f"--set={k}={json.dumps(v)}" for k, v in market.items()]
    py = sys.executable
    makes, trains = [], []

    def train(data: Path, days: int, rows: int) -> None:
        for path in [] if args.no_train else args.paths.split(","):
            if path == "memory" and rows > args.memory_max_rows:
                continue
            over = {"data": str(data), "ingest": path, "epochs": 1, "max_steps_per_epoch": args.steps,
                    "batch_size": args.batch_size, "context": 16, "history": 16, "train_days": days, **market}
            rc, out, wall, peak = run_measured([py, "-P", "-c", TRAIN, json.dumps(over)], env, args.timeout)
            line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
            if rc != 0 or line is None:
                print(f"train {path} {data.name}: FAILED (rc {rc})\n{out[-3000:]}", file=sys.stderr, flush=True)
                trains.append({"data": data.name, "path": path, "ok": False})
                continue
            t = json.loads(line[len("RESULT "):])["timings"]
            row = {"data": data.name, "train_rows": rows, "path": path, "peak_mb": round(peak), "wall_s": round(wall, 1),
                   "data_load_s": round(t.get("data_load_s", 0), 1), "first_batch_s": round(t.get("first_batch_s", 0), 1),
                   "ok": True, "peak_by_process": dict(PEAK_BY_PROCESS)}
            trains.append(row)
            print(f"train {path:6} {data.name} ({rows:,} rows): peak {peak:6.0f} MB, data load "
                  f"{row['data_load_s']:5.1f} s, first batch {row['first_batch_s']:5.1f} s, wall {wall:6.1f} s",
                  file=sys.stderr, flush=True)

    data, days, rows = root, 0, 0
    for days in [int(x) for x in args.days.split(",") if x]:
        data = root / f"vamo-{days}"
        if not (data / "manifest.json").is_file():
            rc, out, wall, peak = run_measured(
                [py, "-P", "-m", "adray.cli", "data", "make", "vamo", "--config", "smoke", f"--set=train_days={days}",
                 *sets, "--out", str(data), "--overwrite"], env, args.timeout)
            rows = json.loads((data / "manifest.json").read_text())["splits"]["train"]["rows"] if rc == 0 else 0
            makes.append({"days": days, "train_rows": rows, "wall_s": round(wall, 1), "peak_mb": round(peak),
                          "ok": rc == 0, "peak_by_process": dict(PEAK_BY_PROCESS)})
            print(f"make {days:>4} days ({rows:,} training rows): {wall:6.1f} s, peak {peak:6.0f} MB"
                  f"{'' if rc == 0 else ' FAILED'}", file=sys.stderr, flush=True)
            if rc != 0:
                print(out[-3000:], file=sys.stderr)
                continue
        rows = json.loads((data / "manifest.json").read_text())["splits"]["train"]["rows"]
        train(data, days, rows)
    for times in [int(x) for x in args.replicate.split(",") if x]:
        copy = root / f"{data.name}-x{times}"
        n = (json.loads((copy / "manifest.json").read_text())["splits"]["train"]["rows"]
             if (copy / "manifest.json").is_file() else replicate(data, copy, times))
        train(copy, days, n)
    if args.json:
        print(json.dumps({"make": makes, "train": trains}))


if __name__ == "__main__":
    main()
