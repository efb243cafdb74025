"""``adray eval``: a published model on its dataset's test split, plus the workload's baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adray.config import parse_set
from adray.models import load_model
from adray.workload import WorkloadError, get_workload


def run_eval(
    workload: str,
    ref: str,
    config: str | None = None,
    sets: list[str] | None = None,
    data: Path | None = None,
) -> tuple[str, dict[str, float], dict[str, dict[str, float]]]:
    """Returns (resolved model ref, metrics of the model, {method: metrics} incl. baselines)."""
    wl = get_workload(workload)
    loaded = load_model(ref)
    if loaded.workload.name != wl.name:
        raise WorkloadError(f"model {loaded.version.ref} belongs to workload {loaded.workload.name!r}, not {workload!r}")
    cfg = loaded.cfg
    if config:
        from adray.config import load_config

        cfg = load_config(wl.config_cls, config, wl.configs_dir)
    if sets:
        cfg = cfg.override(parse_set(sets), "--set")
    data_dir = Path(data or loaded.version.manifest.get("dataset") or "")
    metrics: dict[str, Any] = {}
    methods: dict[str, dict[str, float]] = {}
    if wl.torch is not None:
        arrays = wl.torch.load_split(data_dir, wl.torch.test_split, cfg)
        import torch

        with torch.no_grad():
            metrics = {f"test_{k}": float(v) for k, v in wl.torch.evaluate(loaded.model, arrays, cfg).items()}
    if wl.evaluate_methods is not None:
        methods = wl.evaluate_methods(cfg, data_dir, loaded.model)
        if not metrics and wl.name in methods:
            metrics = dict(methods[wl.name])
    return loaded.version.ref, metrics, methods
