"""Load a published model by reference (``name@version``) into its inference network.

A published version directory holds ``config.yaml`` (resolved config), ``meta.json`` (what the
network needs, e.g. the FeatureMap) and, for Ray-Train workloads, ``model.pt`` (a state dict,
loaded with ``weights_only=True``). The manifest names the workload.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from adray.config import Config, save_config
from adray.registry import ModelVersion, Registry
from adray.workload import Workload, get_workload

CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
WEIGHTS_FILE = "model.pt"


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    model: Any
    cfg: Any
    meta: dict[str, Any]
    version: ModelVersion
    workload: Workload


def write_model_dir(out: Path, weights: Path | dict[str, Any], cfg: Config, meta: dict[str, Any]) -> None:
    """Write a publishable model directory (model.pt, config.yaml, meta.json), replacing ``out``
    only once it is complete. ``weights`` is a state dict or a saved state-dict file to copy."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if isinstance(weights, Path):
        shutil.copy(weights, tmp / WEIGHTS_FILE)
    else:
        torch.save(weights, tmp / WEIGHTS_FILE)
    save_config(cfg, tmp / CONFIG_FILE)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def read_checkpoint_files(path: Path, workload: Workload) -> tuple[Any, dict[str, Any]]:
    """The resolved config and meta saved in a checkpoint/version directory."""
    cfg_dict = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
    cfg = workload.config_cls.from_dict(cfg_dict, str(path / CONFIG_FILE))
    meta_path = path / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return cfg, meta


def build_from_dir(path: Path, workload: Workload) -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode, cfg, meta) from a checkpoint or registry version directory."""
    cfg, meta = read_checkpoint_files(path, workload)
    if workload.load_model is not None:
        model = workload.load_model(path, cfg, meta)
    else:
        assert workload.torch is not None
        model = workload.torch.build_model(cfg, meta)
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    if hasattr(model, "eval"):
        model.eval()
    return model, cfg, meta


def load_model(ref: str, registry: Registry | None = None) -> LoadedModel:
    mv = (registry or Registry()).get(ref)
    workload = get_workload(mv.manifest["workload"])
    model, cfg, meta = build_from_dir(mv.path, workload)
    return LoadedModel(model, cfg, meta, mv, workload)
