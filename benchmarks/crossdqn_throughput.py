"""Offline training throughput of Cross DQN on RLlib: transitions/s and seconds per iteration.

    python benchmarks/crossdqn_throughput.py --config default [--set iterations=4] [--json out.json]

Generates the logged dataset once, then for each mode builds the offline DQN (learner in the
driver, see adray.rl) and times ``Algorithm.train()`` (``updates_per_iteration`` minibatches of
``batch_size``), without the per-iteration held-out estimates (``validate=False``):

* ``per_update_calls``: one ``learner_group.update`` call per minibatch (the previous trainer),
* ``batched_calls``: many minibatches per call (``adray.rl.split_updates``, the trainer now),

each with torch's default intra-op threads (one per core) and with 1 thread (``OMP_NUM_THREADS``,
what the trainer now uses). A bare torch step of the same work (online net on [s, s'], target net
on s', backward, Adam) is timed in the same process for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adray.config import load_config, parse_set
from adray.runtime import ensure_ray
from workloads.crossdqn import WORKLOAD
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import make_data
from workloads.crossdqn.model import CrossDQNNet
from workloads.crossdqn.sim import obs_layout
from workloads.crossdqn.train import train_module


def bare_step_s(cfg: CrossDQNConfig, threads: int, reps: int = 8) -> float:
    """Median seconds of one hand-written DQN step of the same network and batch size."""
    torch.set_num_threads(threads)
    layout = obs_layout(cfg.sim)
    net = CrossDQNNet(layout, cfg.embed_dim, cfg.hidden, cfg.mcau_masks, cfg.use_sacu, cfg.use_mcau)
    target = CrossDQNNet(layout, cfg.embed_dim, cfg.hidden, cfg.mcau_masks, cfg.use_sacu, cfg.use_mcau)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    obs = torch.randn(cfg.batch_size, layout["obs_dim"])
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        q = net(torch.cat([obs, obs]))
        with torch.no_grad():
            qt = target(obs)
        (q.square().mean() + qt.mean()).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cfg = load_config(CrossDQNConfig, args.config, WORKLOAD.configs_dir, parse_set(args.set))
    default_threads = os.cpu_count() or 1
    modes = {  # name: (target_update_freq that sets minibatches per learner call, torch threads)
        "per_update_calls": (cfg.batch_size, default_threads),
        "per_update_calls_1thread": (cfg.batch_size, 1),
        "batched_calls": (cfg.target_update_freq, default_threads),
        "batched_calls_1thread": (cfg.target_update_freq, 1),
    }
    out: dict = {"config": args.config, "set": args.set, "batch_size": cfg.batch_size,
                 "updates_per_iteration": cfg.updates_per_iteration, "cpus": default_threads, "modes": {}}
    with tempfile.TemporaryDirectory(prefix="crossdqn-tp-") as tmp:
        t0 = time.perf_counter()
        make_data(cfg, Path(tmp) / "data")
        out["data_make_s"] = time.perf_counter() - t0
        ensure_ray()
        for name, (freq, threads) in modes.items():
            os.environ["OMP_NUM_THREADS"] = str(threads)  # read by adray.runtime.torch_threads
            m = train_module(cfg.override({"target_update_freq": freq}), Path(tmp) / "data",
                             Path(tmp) / name, validate=False)
            row = {"iter_time_s": m["iter_time_s"], "train_transitions_per_s": m["train_transitions_per_s"],
                   "threads": threads, "load_avg_1m": os.getloadavg()[0],
                   "bare_step_s": bare_step_s(cfg, threads)}
            out["modes"][name] = row
            print(f"{name:26s} iteration {row['iter_time_s']:.2f}s ({cfg.updates_per_iteration} x {cfg.batch_size}),"
                  f" {row['train_transitions_per_s']:.0f} transitions/s; bare step {row['bare_step_s'] * 1000:.0f} ms"
                  f" (x{cfg.updates_per_iteration} = {row['bare_step_s'] * cfg.updates_per_iteration:.2f}s);"
                  f" load {row['load_avg_1m']:.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
