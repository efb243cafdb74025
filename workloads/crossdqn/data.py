"""Logged data: an exploratory policy in the simulator, written as Parquet transitions.

The logging policy draws, per request, an ad probability ``p = log_pae + U(-log_spread, log_spread)``
and then shows an ad in each slot independently with probability ``p`` (random slot choices around
the target PAE). Its propensity of the logged action is ``Π_k p^{a_k} (1-p)^{1-a_k}``.

Columns of ``train.parquet`` (RLlib's names, see ``ray.rllib.core.columns.Columns``):
``obs``/``new_obs`` (float32 lists of ``obs_dim``), ``actions`` (int), ``rewards``, the reward
components ``r_ad``, ``r_fee``, ``r_ex``, ``orders``, ``terminateds``, ``truncateds``,
``action_prob`` (logging propensity), ``eps_id``, ``t`` (screen index), ``pae`` (of the shown screen).
The manifest's meta holds the observation layout, the logging policy's knobs and the whole simulator
config (``sim``: ``cfg.sim.to_dict()``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from adray.data import DataError, read_dataset, write_dataset
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.sim import FeedSim, action_bits, make_requests, obs_layout

SPLIT = "train"
CHUNK = 20_000  # requests simulated at once (bounds memory for millions of transitions)


def logging_policy(p_ad: np.ndarray, bits: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Actions (n,) and their propensities (n,) for per-request ad probabilities ``p_ad`` (n,)."""
    n, k = len(p_ad), bits.shape[1]
    slots = rng.uniform(size=(n, k)) < p_ad[:, None]  # (n, K)
    actions = (slots * (1 << np.arange(k))[None, :]).sum(1)
    prob = np.where(slots, p_ad[:, None], 1 - p_ad[:, None]).prod(1)
    return actions.astype(np.int64), prob


def simulate_logs(cfg: CrossDQNConfig, n_requests: int, seed: int) -> pd.DataFrame:
    """Roll the logging policy over ``n_requests`` fresh requests; one row per screen shown."""
    rng = np.random.default_rng(seed + 1)
    bits = action_bits(cfg.sim.slots)
    frames = []
    for start in range(0, n_requests, CHUNK):
        n = min(CHUNK, n_requests - start)
        sim = FeedSim(cfg.sim, make_requests(cfg.sim, n, seed * 1_000_003 + start))
        p_ad = np.clip(cfg.log_pae + rng.uniform(-cfg.log_spread, cfg.log_spread, n), 0.02, 0.98)
        cols: dict[str, list[np.ndarray]] = {}
        while sim.alive.any():
            idx = np.flatnonzero(sim.alive)
            obs = sim.observe(idx)
            t = sim.screen[idx].copy()
            actions, prob = logging_policy(p_ad[idx], bits, rng)
            out = sim.step(idx, actions)
            row = {
                "eps_id": start + idx, "t": t, "obs": obs, "actions": actions,
                "rewards": out["reward"], "r_ad": out["r_ad"], "r_fee": out["r_fee"], "r_ex": out["r_ex"],
                "orders": out["orders"], "pae": out["ads"] / cfg.sim.slots,
                "new_obs": sim.observe(idx), "terminateds": out["terminated"],
                "truncateds": np.zeros(len(idx), bool), "action_prob": prob,
            }
            for key, v in row.items():
                cols.setdefault(key, []).append(v)
        merged = {key: np.concatenate(v) for key, v in cols.items()}
        order = np.lexsort((merged["t"], merged["eps_id"]))
        df = pd.DataFrame({key: (list(v[order]) if v.ndim == 2 else v[order]) for key, v in merged.items()})
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    for c in ("rewards", "r_ad", "r_fee", "r_ex", "pae", "action_prob"):
        df[c] = df[c].astype(np.float32)
    return df


def make_data(cfg: CrossDQNConfig, out_dir: Path) -> None:
    """``adray data make crossdqn``: log ``cfg.n_requests`` requests of the exploratory policy."""
    df = simulate_logs(cfg, cfg.n_requests, cfg.seed)
    write_dataset(
        out_dir, {SPLIT: df}, source="crossdqn simulator, exploratory logging policy", seed=cfg.seed,
        meta={"obs_layout": obs_layout(cfg.sim), "num_actions": cfg.num_actions, "log_pae": cfg.log_pae,
              "log_spread": cfg.log_spread, "sim": cfg.sim.to_dict()},
    )


def check_dataset(cfg: CrossDQNConfig, data_dir: Path) -> Path:
    """The Parquet file of the logs, after checking the dataset matches ``cfg``'s simulator."""
    ds = read_dataset(data_dir)
    path = ds.split_path(SPLIT)
    layout, expected = ds.meta.get("obs_layout"), obs_layout(cfg.sim)
    if layout != expected:
        raise DataError(
            f"{data_dir}: observation layout {layout} does not match the config's {expected}; "
            "regenerate the data with `adray data make crossdqn` and the same config"
        )
    return path
