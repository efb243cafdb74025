"""Model directories: what a trainer leaves, what the registry publishes, what serving loads.

A model directory holds ``config.yaml`` (the resolved config), ``meta.json`` (what the loader
needs, e.g. the FeatureMap or an observation layout) and the workload's own files (``model.pt``
for Ray Train workloads, an RLlib module checkpoint for RLlib ones). The registry's manifest names
the workload; ``Workload.load_model`` turns the directory into the inference model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from adray.config import Config, save_config
from adray.registry import ModelVersion, Registry
from adray.workload import Workload, get_workload

CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    model: Any
    cfg: Any
    meta: dict[str, Any]
    version: ModelVersion
    workload: Workload
    path: Path
    """The local directory the model was loaded from."""


def write_model_dir(out: Path, files: dict[str, Any], cfg: Config, meta: dict[str, Any]) -> None:
    """Write a model directory, replacing ``out`` only once it is complete.

    ``files`` maps a file name to a source path (copied) or a torch state dict (saved).
    """
    import torch

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, (str, Path)):
            shutil.copy(content, tmp / name)
        else:
            torch.save(content, tmp / name)
    save_config(cfg, tmp / CONFIG_FILE)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def finish_model_dir(path: Path, cfg: Config, meta: dict[str, Any]) -> None:
    """Add the resolved config and meta to a trainer's model directory (before publishing)."""
    save_config(cfg, path / CONFIG_FILE)
    (path / META_FILE).write_text(json.dumps(meta, indent=2, default=str))


def read_model_files(path: Path, workload: Workload) -> tuple[Any, dict[str, Any]]:
    """The resolved config and meta saved in a model directory."""
    cfg_dict = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
    cfg = workload.config_cls.from_dict(cfg_dict, str(path / CONFIG_FILE))
    meta_path = path / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return cfg, meta


def build_from_dir(path: Path, workload: Workload) -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode, cfg, meta) from a model directory."""
    cfg, meta = read_model_files(path, workload)
    model = workload.load_model(path, cfg, meta)
    if hasattr(model, "eval"):
        model.eval()
    return model, cfg, meta


def load_model(ref: str, registry: Registry | None = None) -> LoadedModel:
    """A published model by reference (``name@version``), fetched to a local copy if remote."""
    reg = registry or Registry()
    mv = reg.get(ref)
    workload = get_workload(mv.manifest["workload"])
    path = reg.local_dir(mv)
    model, cfg, meta = build_from_dir(path, workload)
    return LoadedModel(model, cfg, meta, mv, workload, path)
