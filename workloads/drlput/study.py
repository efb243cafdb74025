"""Helpers of the DRL-PUT studies (benchmarks/drlput_*.py): configs, logs generated once, one model trained."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from adray.config import load_config, parse_set
from workloads.drlput.config import DRLPUTConfig

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def config(name: str, sets: list[str] | None = None, extra: dict[str, Any] | None = None) -> DRLPUTConfig:
    cfg = load_config(DRLPUTConfig, name, CONFIGS_DIR, parse_set(sets))
    return cfg.override(extra) if extra else cfg


def start_ray() -> None:
    """The studies' Ray: a new local one of 1 CPU (or ``RAY_ADDRESS``), through the platform's one
    door, so a cluster already running on the machine (or its stale address file) is never joined."""
    from adray.runtime import ensure_ray

    ensure_ray(num_cpus=1)


def ensure_data(cfg: DRLPUTConfig, root: Path) -> Path:
    """Logs of ``cfg`` (behaviour policy, action space, seed) under ``root``, generated once."""
    from workloads.drlput.data import make_data

    what = json.dumps([cfg.sim.to_dict(), cfg.action.to_dict(), cfg.behaviour.to_dict(), cfg.seed], sort_keys=True)
    key = f"{cfg.behaviour.policy}-n{cfg.action.n_values}-g{len(cfg.action.groups)}-{hashlib.sha1(what.encode()).hexdigest()[:10]}"
    path = root / key
    if not (path / "manifest.json").is_file():
        make_data(cfg, path)
    return path


def train(cfg: DRLPUTConfig, data_dir: Path, out: Path) -> tuple[Any, dict[str, float]]:
    """Train one model offline; returns (inference module, metrics)."""
    from adray import rl
    from workloads.drlput.train import MODULE_DIR, train_module

    start_ray()
    metrics = train_module(cfg, data_dir, out)
    return rl.load_module(out / MODULE_DIR), metrics


def mean_std(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for k in rows[0]:
        vals = [r[k] for r in rows if k in r]
        out[k], out[f"{k}_std"] = float(np.mean(vals)), float(np.std(vals))
    return out


def write_json(path: Path | None, data: dict) -> None:
    line = json.dumps(data, default=float)
    if path:
        path.write_text(line + "\n")
    else:
        print(line)
