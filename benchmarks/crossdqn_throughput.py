"""Offline training throughput of Cross DQN on RLlib: transitions/s and seconds per iteration.

    python benchmarks/crossdqn_throughput.py --config smoke [--set iterations=5] [--json out.json]

Generates the logged dataset, builds the offline DQN (learner in the driver, see adray.rl), and
times ``Algorithm.train()`` (``updates_per_iteration`` minibatches of ``batch_size`` each), without
the per-iteration validation rollout. Also times the module forward alone for comparison.
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="smoke")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cfg = load_config(CrossDQNConfig, args.config, WORKLOAD.configs_dir, parse_set(args.set))
    with tempfile.TemporaryDirectory(prefix="crossdqn-tp-") as tmp:
        t0 = time.perf_counter()
        make_data(cfg, Path(tmp) / "data")
        data_s = time.perf_counter() - t0
        ensure_ray()
        m = train_module(cfg, Path(tmp) / "data", Path(tmp) / "out", validate=False)
    net = CrossDQNNet(obs_layout(cfg), cfg.embed_dim, cfg.hidden, cfg.mcau_masks, cfg.use_sacu, cfg.use_mcau)
    obs = torch.randn(cfg.batch_size, obs_layout(cfg)["obs_dim"])
    times = []
    for _ in range(6):
        t0 = time.perf_counter()
        net(torch.cat([obs, obs])).sum().backward()
        with torch.no_grad():
            net(obs)
        times.append(time.perf_counter() - t0)
    out = {"config": args.config, "batch_size": cfg.batch_size, "updates_per_iteration": cfg.updates_per_iteration,
           "data_make_s": data_s, "iter_time_s": m["iter_time_s"],
           "train_transitions_per_s": m["train_transitions_per_s"],
           "raw_update_equiv_s": float(np.median(times[1:])), "torch_threads": torch.get_num_threads()}
    print(f"data make {data_s:.1f}s; RLlib iteration {m['iter_time_s']:.2f}s "
          f"({cfg.updates_per_iteration} x {cfg.batch_size}); {m['train_transitions_per_s']:.0f} transitions/s; "
          f"bare forward+backward of one minibatch {out['raw_update_equiv_s'] * 1000:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
