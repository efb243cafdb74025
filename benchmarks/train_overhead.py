"""Ray Train overhead: `adray train` (run_training) vs a plain PyTorch loop in one process.

Same workload, model, data, batch size and epochs. Reports:
  * start-up: seconds from the call until the first training batch (Ray init, data load into the
    object store, TorchTrainer controller + worker group start, process group), split by phase;
  * steady state: mean time of epochs 2..E, Ray Train with 1 worker / plain loop (goal <= 1.10);
  * samples/s for the plain loop and for 1 and 2 Ray Train workers.

    python benchmarks/train_overhead.py [--workload pwiser --config bench --epochs 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from adray.config import load_config, parse_set
from adray.epochs import LoopState, run_epochs
from adray.runtime import ensure_ray, torch_threads
from adray.train import prepare_data, run_training
from adray.workload import get_workload


def plain_loop(wl, cfg) -> dict[str, float]:  # noqa: ANN001
    """The reference: the epoch loop that the Ray Train workers run (adray.epochs), in this process."""
    spec = wl.trainer.spec
    t0 = time.perf_counter()
    data_dir = prepare_data(wl, cfg)
    train = spec.load_split(data_dir, spec.train_split, cfg)
    val = spec.load_split(data_dir, spec.val_split, cfg)
    meta = spec.model_meta(data_dir, cfg)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(torch_threads())
    model = spec.build_model(cfg, meta)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    first_batch: list[float] = []

    def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
        if not first_batch:
            first_batch.append(time.perf_counter() - t0)

    state = run_epochs(spec, cfg, model, opt, train, val, state=LoopState(), on_step=on_step)
    steady = state.history[1:] or state.history
    return {"first_batch_s": first_batch[0] if first_batch else 0.0,
            "epoch_time_s": float(np.mean([h["epoch_time_s"] for h in steady])),
            "samples_per_s": float(np.mean([h["samples_per_s"] for h in steady]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", default="pwiser")
    ap.add_argument("--config", default="bench")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    wl = get_workload(args.workload)
    cfg = load_config(wl.config_cls, args.config, wl.configs_dir, parse_set(args.set))
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    plain = plain_loop(wl, cfg)
    t = time.perf_counter()
    ensure_ray()
    ray_init_s = time.perf_counter() - t
    rows = {}
    for workers in (1, 2):
        out = run_training(wl, cfg, num_workers=workers, publish=False, run_name=f"bench-overhead-{workers}-{time.time_ns()}")
        rows[workers] = {**out.timings, "epoch_time_s": out.metrics["epoch_time_s"], "samples_per_s": out.metrics["samples_per_s"]}
    ratio = rows[1]["epoch_time_s"] / plain["epoch_time_s"]
    figures = {
        "workload": args.workload, "config": args.config, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
        "plain_first_batch_s": plain["first_batch_s"], "plain_epoch_s": plain["epoch_time_s"],
        "plain_samples_per_s": plain["samples_per_s"],
        "ray_init_s": ray_init_s,
        "ray1_startup_s": rows[1].get("first_batch_s"), "ray1_workers_up_s": rows[1].get("workers_up_s"),
        "ray1_worker_setup_s": rows[1].get("worker_setup_s"),
        "ray1_data_load_s": rows[1]["data_load_s"], "ray1_epoch_s": rows[1]["epoch_time_s"],
        "ray1_samples_per_s": rows[1]["samples_per_s"], "ray2_samples_per_s": rows[2]["samples_per_s"],
        "ray2_epoch_s": rows[2]["epoch_time_s"], "steady_state_ratio_1w": ratio,
        "ray2_startup_s": rows[2].get("first_batch_s"),
    }
    print(f"Ray Train overhead  workload={args.workload} config={args.config} epochs={cfg.epochs} batch={cfg.batch_size}")
    print(f"{'':28}{'plain loop':>12}{'Ray 1 worker':>14}{'Ray 2 workers':>15}")
    print(f"{'start-up to 1st batch (s)*':28}{plain['first_batch_s']:>12.2f}{rows[1].get('first_batch_s', float('nan')):>14.2f}{rows[2].get('first_batch_s', float('nan')):>15.2f}")
    print(f"{'ray.init, once (s)':28}{'':>12}{ray_init_s:>14.2f}")
    print(f"{'  TorchTrainer: workers up':28}{'':>12}{rows[1].get('workers_up_s', 0):>14.2f}{rows[2].get('workers_up_s', 0):>15.2f}")
    print(f"{'  worker set-up (ours)':28}{'':>12}{rows[1].get('worker_setup_s', 0):>14.2f}{rows[2].get('worker_setup_s', 0):>15.2f}")
    print(f"{'  of which data load (s)':28}{'':>12}{rows[1]['data_load_s']:>14.2f}{rows[2]['data_load_s']:>15.2f}")
    print(f"{'steady epoch (s)':28}{plain['epoch_time_s']:>12.3f}{rows[1]['epoch_time_s']:>14.3f}{rows[2]['epoch_time_s']:>15.3f}")
    print(f"{'samples/s':28}{plain['samples_per_s']:>12,.0f}{rows[1]['samples_per_s']:>14,.0f}{rows[2]['samples_per_s']:>15,.0f}")
    print("* Ray rows: from run_training() on a running Ray; ray.init is paid once per process, shown apart")
    print(f"steady-state ratio (Ray 1 worker / plain) = {ratio:.3f}  (goal <= 1.10)")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
