"""VAMO training throughput: the plain in-process loop vs 1 and 2 Ray Train workers, same config.

    python benchmarks/vamo_throughput.py [--config bench] [--set k=v ...] [--epochs 3]
                                         [--data results/vamo/data] [--modes plain,ray1,ray2] [--json]

Every mode trains the same method (``--set weighting=...``, VAMO by default: K + 1 backward passes
a step) on the same dataset, seeds and global batch through the one epoch loop and step:

* ``plain``: ``adray.train_torch.fit_in_process`` (this process, no Ray, no checkpoints);
* ``ray1`` / ``ray2``: ``adray.train.run_training(..., num_workers=k, publish=False)``, the path of
  ``adray train vamo --workers k`` (Ray Train workers, per-epoch checkpoints, one all-reduce a step).

Reported per mode: training samples (windows) per second over the epochs after the first (the
harness's ``samples_per_s``: global batch rows / epoch time), the epoch time, the wall time of the
whole call (Ray start, worker start-up, data in the object store, test evaluation included), and the
1-minute load average before and after: the 2 cores are shared with other work, which moves these
figures by tens of percent. ``OMP_NUM_THREADS=1``: one torch thread per process (what the harness
gives each worker). The dataset is made with the config's generator fields when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from adray.config import load_config, parse_set
from workloads.vamo import WORKLOAD
from workloads.vamo.config import VamoConfig


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def steady(history: list[dict[str, float]], key: str) -> float:
    rows = history[1:] or history  # the first epoch pays for warm-up (allocations, first compile)
    return float(np.mean([h[key] for h in rows]))


def plain(cfg: VamoConfig, data: Path) -> dict[str, Any]:
    from adray.train_torch import fit_in_process
    from workloads.vamo.train import make_spec

    t0 = time.perf_counter()
    out = fit_in_process(make_spec(), cfg, data)
    return {"samples_per_s": steady(out.history, "samples_per_s"),
            "epoch_time_s": steady(out.history, "epoch_time_s"), "wall_s": time.perf_counter() - t0,
            "val_loss": out.val["val_loss"]}


def ray_train(cfg: VamoConfig, workers: int) -> dict[str, Any]:
    from adray.train import run_training

    t0 = time.perf_counter()
    out = run_training(WORKLOAD, cfg, num_workers=workers, publish=False)
    return {"samples_per_s": steady(out.history, "samples_per_s"),
            "epoch_time_s": steady(out.history, "epoch_time_s"), "wall_s": time.perf_counter() - t0,
            "val_loss": out.metrics["val_loss"], "timings": out.timings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="bench")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--data", default="results/vamo/data")
    ap.add_argument("--modes", default="plain,ray1,ray2")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("ADRAY_HOME", str(Path(args.data).parent / "home"))
    data = Path(args.data)
    cfg = load_config(VamoConfig, args.config, WORKLOAD.configs_dir,
                      {**parse_set(args.set), "epochs": args.epochs, "data": str(data)})
    if not (data / "manifest.json").is_file():
        WORKLOAD.make_data(cfg, data)
    from workloads.vamo.train import load_windows

    res: dict[str, Any] = {"config": args.config, "weighting": cfg.weighting, "epochs": cfg.epochs,
                           "batch_size": cfg.batch_size, "train_windows": int(len(load_windows(data, "train", cfg)["task"])),
                           "cpus": os.cpu_count(), "modes": {}}
    for mode in args.modes.split(","):
        before = loadavg()
        row = plain(cfg, data) if mode == "plain" else ray_train(cfg, int(mode.removeprefix("ray")))
        row |= {"loadavg_1m_before": before, "loadavg_1m_after": loadavg()}
        res["modes"][mode] = row
        if not args.json:
            print(f"{mode:6s} {row['samples_per_s']:8.1f} samples/s  epoch {row['epoch_time_s']:6.1f} s  "
                  f"wall {row['wall_s']:6.1f} s  load {before:.2f} -> {row['loadavg_1m_after']:.2f}", flush=True)
    base = res["modes"].get("plain", {}).get("samples_per_s")
    if base:
        res["speedup_vs_plain"] = {m: r["samples_per_s"] / base for m, r in res["modes"].items()}
    if args.json:
        print(json.dumps(res, default=float))


if __name__ == "__main__":
    main()
