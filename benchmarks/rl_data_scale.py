"""Cross DQN offline training at data sizes past memory: streaming sampler vs in-memory vs RLlib's path.

    python benchmarks/rl_data_scale.py --rows 1000000,10000000 --json [--paths stream,memory]
    python benchmarks/rl_data_scale.py --rows 1000000 --rllib-offline   # RLlib OfflineData (BC) instead

Per size: writes (once, under ``--root``) a crossdqn dataset of ``rows`` logged transitions in
Parquet row groups of ``--row-group`` rows, block after block of the workload's own logging
simulator (``workloads.crossdqn.data.simulate_logs``, each block seeded on its own; memory bounded
by one block) -- or, with ``--replicate-from N``, a split of rows/N files that are links to the
N-row file (what the sampler reads is the same per row; episode ids repeat across the copies) --
then for each path trains the default config's offline DQN (``--model smoke``: with the smoke
config's small network, so that the data path's share of the time shows; ``default``: MCAU, ~10x
the learner's cost) in a fresh process (``--iterations`` x ``--updates`` minibatches of 1024, no
per-iteration validation) and measures:

* ``first_batch_s``: process start to the end of the first ``Algorithm.train()`` (imports, Ray,
  the algorithm's build -- which opens the data -- and the first iteration),
* ``samples_per_s``: transitions trained per second over the remaining iterations (steady state),
* ``peak_mb``: the peak PSS of the process tree (the training process and its children, plus the
  Ray workers it started), summed from ``/proc/<pid>/smaps_rollup``, sampled every 0.5 s in a thread.

``stream`` is the trainer (``adray.rl.StreamSampler``); ``memory`` is the previous path (whole
columns in the driver: ``adray.rl.read_transitions`` + ``TransitionSampler``), run where it fits.
``--rllib-offline`` times RLlib's own data path on the same file instead (the measurement behind
the ``adray.rl`` docstring): BC on ``config.offline_data(input_=...)`` with the hand-pinned
``map_batches_kwargs`` the small machine needs. The last line is ``sizes: [{rows, peak_mb,
first_batch_s, samples_per_s, path}]`` as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from proc_memory import PeakPss  # benchmarks/proc_memory.py (this script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
SEED = 0


# ----------------------------------------------------------------------------- data
def _list_array(x: np.ndarray) -> pa.Array:
    """(n, d) float32 -> list<element: float> (the type ``make_data``'s pandas writer gives)."""
    n, d = x.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)),
                                    type=pa.list_(pa.field("element", pa.float32())))


def replicate(base: Path, out: Path, copies: int) -> Path:
    """A split of ``copies`` files, each a link to ``base``'s ``train.parquet`` (a multi-file split of
    copies x its rows: the same decode and memory per row as distinct rows; episode ids repeat)."""
    out.mkdir(parents=True, exist_ok=True)
    for i in range(copies):
        link = out / f"part-{i:05d}.parquet"
        if not link.exists():
            link.symlink_to(base / "train.parquet")
    return out


def write_transitions(out: Path, rows: int, row_group: int, requests_per_block: int = 60_000) -> Path:
    """A crossdqn dataset (manifest + ``train.parquet``) of at least ``rows`` transitions of the
    default config's logging simulator, written block by block (bounded memory); returns ``out``."""
    from adray.data.dataset import MANIFEST
    from workloads.crossdqn.config import CrossDQNConfig
    from workloads.crossdqn.data import SPLIT, simulate_logs
    from workloads.crossdqn.sim import obs_layout

    if (out / MANIFEST).is_file():
        return out
    cfg = CrossDQNConfig()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{SPLIT}.parquet"
    written, block, writer, t0 = 0, 0, None, time.perf_counter()
    try:
        while written < rows:
            df = simulate_logs(cfg, requests_per_block, SEED * 100_003 + block)
            df = df.iloc[: rows - written]
            cols = {c: pa.array(df[c].to_numpy()) for c in df.columns if c not in ("obs", "new_obs")}
            cols["eps_id"] = pa.array(df["eps_id"].to_numpy() + block * requests_per_block)
            cols["obs"] = _list_array(np.stack(df["obs"].to_numpy()))
            cols["new_obs"] = _list_array(np.stack(df["new_obs"].to_numpy()))
            table = pa.table({c: cols[c] for c in df.columns})
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=row_group)
            written += len(df)
            block += 1
            print(f"  {out.name}: {written:,} rows, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        if writer is not None:
            writer.close()
    schema = {f.name: str(f.type) for f in pq.read_schema(path)}
    sha = hashlib.sha256(f"{path.stat().st_size}:{written}".encode()).hexdigest()  # not the content's
    manifest = {"format": 1, "splits": {SPLIT: {"rows": written, "schema": schema, "sha256": sha}},
                "content_hash": sha, "source": "benchmarks/rl_data_scale.py (crossdqn simulator blocks)",
                "seed": SEED, "meta": {"obs_layout": obs_layout(cfg.sim), "num_actions": cfg.num_actions,
                                       "sim": cfg.sim.to_dict()}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out


# ----------------------------------------------------------------------------- one training run (child)
def _child(args: argparse.Namespace) -> None:
    """One measured run in this (fresh) process; prints one JSON line."""
    t_start = float(os.environ["RL_SCALE_T0"])
    from adray.runtime import ensure_ray

    ensure_ray()
    if args.child == "rllib":
        return _child_rllib(args, t_start)
    from adray import rl
    from workloads.crossdqn.config import CrossDQNConfig
    from workloads.crossdqn.learner import algorithm_config

    net = {"use_mcau": False, "embed_dim": 4, "hidden": 32} if args.model == "smoke" else {}
    cfg = CrossDQNConfig().override({"iterations": args.iterations, "updates_per_iteration": args.updates, **net})
    rl.IN_MEMORY_MAX_ROWS = 1 << 62 if args.child == "memory" else 0  # which sampler the learner builds
    algo = algorithm_config(cfg, Path(args.data)).build_algo()
    import torch

    torch.set_num_threads(1)
    times = []
    per = cfg.updates_per_iteration * cfg.batch_size
    cpu = []  # CPU seconds of this process (all its threads) per iteration: less sensitive to a loaded host
    for _ in range(cfg.iterations):
        t0, c0 = time.perf_counter(), time.process_time()
        algo.train()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if len(times) == 1:
            first = time.time() - t_start
        steady, steady_cpu = times[1:] or times, cpu[1:] or cpu  # a line per iteration: a cut run still reports
        print(json.dumps({"first_batch_s": first, "samples_per_s": per * len(steady) / sum(steady),
                          "iter_s": float(np.mean(steady)), "iterations": len(times),
                          "samples_per_cpu_s": per * len(steady_cpu) / sum(steady_cpu)}), flush=True)
    algo.stop()


def _child_rllib(args: argparse.Namespace, t_start: float) -> None:
    """RLlib's own offline path (BC over OfflineData/OfflinePreLearner) on the same transitions."""
    import gymnasium as gym
    from ray.rllib.algorithms.bc import BCConfig

    from workloads.crossdqn.config import CrossDQNConfig
    from workloads.crossdqn.data import SPLIT
    from workloads.crossdqn.sim import obs_layout

    cfg = CrossDQNConfig()
    dim = obs_layout(cfg.sim)["obs_dim"]
    config = (
        BCConfig()
        .environment(observation_space=gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32),
                     action_space=gym.spaces.Discrete(cfg.num_actions))
        .offline_data(input_=[str(Path(args.data) / f"{SPLIT}.parquet")], input_read_method="read_parquet",
                      input_read_method_kwargs={"columns": ["obs", "new_obs", "actions", "rewards", "terminateds",
                                                            "truncateds", "eps_id"]},
                      map_batches_kwargs={"concurrency": 1, "num_cpus": 0.5},
                      # RLlib's default (True) maps and holds the whole dataset in the object store
                      # before the first batch; False streams it (what issue 21 asks of a data path)
                      materialize_mapped_data=args.materialize,
                      iter_batches_kwargs={"prefetch_batches": 1},
                      dataset_num_iters_per_learner=args.updates)
        .training(train_batch_size_per_learner=cfg.batch_size, lr=cfg.lr)
        .learners(num_learners=0)
        .env_runners(num_env_runners=0)
        .reporting(min_sample_timesteps_per_iteration=0, min_time_s_per_iteration=0)
    )
    algo = config.build_algo()
    times = []
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        algo.train()
        times.append(time.perf_counter() - t0)
        if len(times) == 1:
            first = time.time() - t_start
        print(f"  rllib iteration {len(times)}: {times[-1]:.1f} s", file=sys.stderr, flush=True)
    algo.stop()
    per = args.updates * cfg.batch_size
    print(json.dumps({"first_batch_s": first, "samples_per_s": per * (len(times) - 1) / sum(times[1:]),
                      "iter_s": float(np.mean(times[1:]))}), flush=True)


def run_path(path: str, data: Path, iterations: int, updates: int, timeout_s: float, materialize: bool = False,
             model: str = "smoke") -> dict[str, Any]:
    """One training run in a fresh process (its own Ray), measured from outside."""
    env = {**os.environ, "RL_SCALE_T0": str(time.time()), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}"}
    env["RL_SCALE_T0"] = str(time.time())
    cmd = [sys.executable, __file__, "--child", path, "--data", str(data), "--iterations", str(iterations),
           "--updates", str(updates), "--model", model, *(["--materialize"] if materialize else [])]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    note = ""
    with PeakPss(proc.pid) as pss:
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(2)  # SIGINT: the child's Ray shuts down with it
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            note = f"timed out after {timeout_s:.0f} s"
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        return {"path": path, "error": note or f"exit {proc.returncode}", "peak_mb": round(pss.peak)}
    res = json.loads(lines[-1])
    return {"path": path, "peak_mb": round(pss.peak), "first_batch_s": round(res["first_batch_s"], 2),
            "samples_per_s": round(res["samples_per_s"]), "iter_s": round(res["iter_s"], 3),
            "iterations": res["iterations"], "samples_per_cpu_s": round(res.get("samples_per_cpu_s", 0)),
            "wall_s": round(time.perf_counter() - t0, 1),
            **({"note": note} if note else {})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1000000,10000000")
    p.add_argument("--paths", default="stream,memory", help="stream, memory (where it fits)")
    p.add_argument("--rllib-offline", action="store_true", help="time RLlib's OfflineData path (BC) instead")
    p.add_argument("--materialize", action="store_true",
                   help="with --rllib-offline: RLlib's default materialize_mapped_data=True (holds the mapped data)")
    p.add_argument("--root", type=Path, default=Path("/tmp/adray_rl_scale"))
    p.add_argument("--row-group", type=int, default=65_536)
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--updates", type=int, default=50)
    p.add_argument("--memory-max-rows", type=int, default=10_000_000,
                   help="run the in-memory path up to this size (it holds ~1 KB a row, twice while loading)")
    p.add_argument("--model", default="smoke", choices=("smoke", "default"),
                   help="the learner's network: smoke's (no MCAU: the data path's share shows) or default's")
    p.add_argument("--replicate-from", type=int, default=0,
                   help="make a size that is a multiple of this one from links to its file (no new simulation)")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args)
    sizes = []
    paths = ["rllib"] if args.rllib_offline else args.paths.split(",")
    for rows in (int(r) for r in args.rows.split(",")):
        t0 = time.perf_counter()
        with PeakPss(os.getpid()) as pss:
            if args.replicate_from and rows > args.replicate_from and rows % args.replicate_from == 0:
                base = write_transitions(args.root / f"crossdqn_{args.replicate_from}", args.replicate_from,
                                         args.row_group)
                data = replicate(base, args.root / f"crossdqn_{rows}_x{rows // args.replicate_from}",
                                 rows // args.replicate_from)
            else:
                data = write_transitions(args.root / f"crossdqn_{rows}", rows, args.row_group)
        gen = {"generate_s": round(time.perf_counter() - t0, 1), "generate_peak_mb": round(pss.peak),
               "file_gb": round(sum(p.stat().st_size for p in data.glob("*.parquet")) / 1e9, 2)}
        for path in paths:
            if path == "memory" and rows > args.memory_max_rows:
                continue
            res = {"rows": rows, **run_path(path, data, args.iterations, args.updates, args.timeout, args.materialize,
                                            args.model), **gen}
            if path == "rllib":
                res["path"] = f"rllib_offline_data{'_materialized' if args.materialize else '_streaming'}"
            print(json.dumps(res), flush=True)
            sizes.append(res)
    if args.json:
        keys = ("rows", "peak_mb", "first_batch_s", "samples_per_s", "path")
        print("sizes: " + json.dumps([{k: s.get(k) for k in keys} for s in sizes]))


if __name__ == "__main__":
    main()
