"""Run a self-training (``fit``) workload, e.g. an RLlib algorithm, and publish its checkpoint.

The run directory is scratch; what is published is a copy made by the registry, so an interrupted
fit leaves nothing in the registry. The resolved config and meta are written into the checkpoint
directory before publishing, the same files the Ray Train harness writes.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from adray.config import save_config
from adray.data import read_manifest
from adray.models import CONFIG_FILE, META_FILE
from adray.paths import runs_root
from adray.registry import Registry
from adray.train import prepare_data
from adray.workload import FitContext, TrainConfig, Workload


def run_fit(
    wl: Workload,
    cfg: TrainConfig,
    *,
    num_workers: int = 1,
    use_gpu: bool = False,
    publish: bool = True,
    progress: bool = False,
    report: Any = None,
    run_dir: Path | None = None,
    model_name: str | None = None,
) -> tuple[dict[str, float], str | None]:
    """Train with ``wl.fit``; returns (metrics, published ref or None)."""
    from adray.runtime import ensure_ray

    assert wl.fit is not None, f"workload {wl.name} has no fit()"
    ensure_ray()
    data_dir = prepare_data(wl, cfg, progress)
    manifest = read_manifest(data_dir)
    key = json.dumps([wl.name, cfg.to_dict(), manifest["content_hash"], time.time()], sort_keys=True)
    run_dir = run_dir or runs_root() / f"{wl.name}-fit-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = FitContext(run_dir=run_dir, data_dir=data_dir, num_workers=num_workers, use_gpu=use_gpu,
                     progress=progress, report=report or (lambda m: None))
    result = wl.fit(cfg, ctx)
    ckpt = Path(result.checkpoint_dir)
    save_config(cfg, ckpt / CONFIG_FILE)
    (ckpt / META_FILE).write_text(json.dumps(result.meta, indent=2, default=str))
    if not publish:
        return result.metrics, None
    mv = Registry().publish(
        model_name or wl.name,
        ckpt,
        {"workload": wl.name, "config": cfg.to_dict(), "dataset": str(data_dir.absolute()),
         "dataset_hash": manifest["content_hash"], "metrics": result.metrics, "run": str(run_dir)},
    )
    return result.metrics, mv.ref
