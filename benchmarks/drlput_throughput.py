"""DRL-PUT training throughput: logged samples/s through the RLlib algorithm vs a plain PyTorch loop.

    python benchmarks/drlput_throughput.py [--config default] [--set k=v ...] [--iterations 10] [--json]

Both learn from the same logged Parquet with the same policy network (model.PolicyNet), Adam,
loss (losses.py, REINFORCE with the config's importance weights), minibatch size and per-batch
reward (reward.training_reward): RLlib = ``OfflinePolicyGradient.train()`` (training_step ->
learner_group.update, local learner in the driver); plain = sample, normalise, forward, backward,
step in one Python loop. Reported: samples/s of each, their ratio, and the time per
``Algorithm.train()`` (``updates_per_iteration`` minibatches). One thread (OMP_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from workloads.drlput import columns as C
from workloads.drlput.data import read_logs
from workloads.drlput.losses import importance_weights, policy_gradient_loss
from workloads.drlput.model import PolicyNet
from workloads.drlput.reward import training_reward
from workloads.drlput.study import config, ensure_data, start_ray, write_json


def plain_loop(cfg, path: Path, updates: int) -> float:  # noqa: ANN001
    """Samples/s of a plain PyTorch loop over the same data, network, loss and batches."""
    df = read_logs(path, cfg.action.num_actions, (*C.STATE, C.ACTION, C.PROPENSITY, *C.OUTCOME))
    obs, actions = df[list(C.STATE)].to_numpy(np.float32), df[C.ACTION].to_numpy(np.int64)
    mu, comp = df[C.PROPENSITY].to_numpy(np.float32), {k: df[k].to_numpy() for k in C.OUTCOME}
    torch.manual_seed(cfg.seed)
    net = PolicyNet(cfg.action.num_actions, cfg.embed_dim, cfg.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    b = cfg.batch_size
    t0 = time.perf_counter()
    for _ in range(updates):
        idx = rng.integers(0, len(actions), b)
        r = training_reward({k: v[idx] for k, v in comp.items()}, cfg.reward, cfg.reward_signal, cfg.normalise)
        o, a = torch.from_numpy(obs[idx]), torch.from_numpy(actions[idx])
        logits = net(o)
        w = importance_weights(logits, a, torch.from_numpy(mu[idx]), cfg.importance)
        loss = policy_gradient_loss(logits, a, torch.as_tensor(r, dtype=torch.float32), w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return updates * b / (time.perf_counter() - t0)


def rllib_loop(cfg, path: Path, iterations: int) -> tuple[float, float]:  # noqa: ANN001
    """(samples/s, seconds per Algorithm.train()) of the RLlib algorithm (first call excluded)."""
    from workloads.drlput.train import algorithm_config

    start_ray()
    algo = algorithm_config(cfg, path).build_algo()
    try:
        algo.train()  # warm-up: first call builds the learner's optimiser state and metrics
        t0 = time.perf_counter()
        for _ in range(iterations):
            algo.train()
        per_train = (time.perf_counter() - t0) / iterations
    finally:
        algo.stop()
    return cfg.updates_per_iteration * cfg.batch_size / per_train, per_train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON line of the figures")
    args = ap.parse_args()
    cfg = config(args.config, args.set)
    torch.set_num_threads(1)
    data = ensure_data(cfg, args.data_root or Path(tempfile.mkdtemp(prefix="drlput-tp-")))
    path = data / "train.parquet"
    rllib_sps, per_train = rllib_loop(cfg, path, args.iterations)
    plain_sps = plain_loop(cfg, path, args.iterations * cfg.updates_per_iteration)
    out = {"config": args.config, "set": args.set, "batch_size": cfg.batch_size,
           "updates_per_iteration": cfg.updates_per_iteration, "rllib_samples_per_s": rllib_sps,
           "plain_samples_per_s": plain_sps, "ratio_rllib_over_plain": rllib_sps / plain_sps,
           "seconds_per_algorithm_train": per_train}
    if args.json:
        write_json(None, out)
        return
    print(f"RLlib: {rllib_sps:,.0f} samples/s ({per_train * 1000:.0f} ms per Algorithm.train() of "
          f"{cfg.updates_per_iteration} x {cfg.batch_size}); plain PyTorch: {plain_sps:,.0f} samples/s; "
          f"ratio {rllib_sps / plain_sps:.2f}")


if __name__ == "__main__":
    main()
