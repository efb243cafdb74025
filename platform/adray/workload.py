"""The contract between the platform and a workload (one model family).

A workload package (``workloads/<name>/__init__.py``) exposes one :class:`Workload` value; the
explicit dict ``workloads.WORKLOADS`` maps names to them. The platform only ever reaches a
workload through that dict.

Two ways to train:

* ``torch``: a :class:`TorchSpec`. The platform's Ray Train harness (``adray.train``) owns the loop:
  data-parallel workers, sharding, the optimiser, checkpoints every epoch, resume, GPU, per-epoch
  reports, publishing. The workload gives the data, the network, the loss and the metrics.
* ``fit``: a callable that trains by itself (RLlib workloads, or loops the harness cannot express)
  and returns a :class:`FitResult` whose ``checkpoint_dir`` the platform publishes to the registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from adray.config import Config, check

# A split of a dataset as columns of equal first dimension: {"x_cat": (N, F) int64, "y": (N,) float32 ...}
Arrays = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """Fields the training harness reads. Workload configs subclass this (one level only)."""

    data: str = ""
    """Dataset directory (Parquet + manifest.json). Empty: ``data/<workload>`` under the cwd."""
    seed: int = 0
    """Seed for data order, initialisation and generators."""
    epochs: int = 5
    """Passes over the training split."""
    batch_size: int = 1024
    """Global batch size (split evenly across Ray Train workers)."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    grad_clip: float = 0.0
    """Clip the gradient norm to this value; 0 disables clipping."""

    def __post_init__(self) -> None:
        check(self.epochs >= 1, f"epochs={self.epochs}: expected >= 1")
        check(self.batch_size >= 1, f"batch_size={self.batch_size}: expected >= 1")
        check(self.lr > 0, f"lr={self.lr}: expected > 0")
        check(self.weight_decay >= 0, f"weight_decay={self.weight_decay}: expected >= 0")
        check(self.grad_clip >= 0, f"grad_clip={self.grad_clip}: expected >= 0")


@dataclasses.dataclass(frozen=True)
class TorchSpec:
    """What a Ray-Train workload hands the harness. All callables are pure functions of their args.

    Attributes:
        load_split: ``(data_dir, split, cfg) -> Arrays``; raises ``DataError`` naming the file/field.
        model_meta: ``(data_dir, cfg) -> dict``: JSON-able facts the network needs (feature map,
            vocab sizes, ...). Saved beside every checkpoint, passed back to ``build_model``.
        build_model: ``(cfg, meta) -> nn.Module`` (inference network; this is what Serve loads).
        loss: ``(model, batch, cfg) -> (scalar loss tensor, {name: float})``; batch is a dict of
            tensors on the training device.
        evaluate: ``(model, arrays, cfg) -> {metric: float}`` on one split (model in eval mode).
        objective: metric name (from ``evaluate`` on the validation split) that Tune optimises and
            that picks the best epoch.
        mode: ``"max"`` or ``"min"`` for ``objective``.
        val_split / test_split: split names in the dataset.
    """

    load_split: Callable[[Path, str, Any], Arrays]
    model_meta: Callable[[Path, Any], dict[str, Any]]
    build_model: Callable[[Any, dict[str, Any]], Any]
    loss: Callable[[Any, dict[str, Any], Any], tuple[Any, dict[str, float]]]
    evaluate: Callable[[Any, Arrays, Any], dict[str, float]]
    objective: str
    mode: Literal["max", "min"] = "max"
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"


@dataclasses.dataclass(frozen=True)
class FitContext:
    """Where a self-training (``fit``) workload works and what the user asked for."""

    run_dir: Path
    """Scratch directory of this run (checkpoints go under it; the platform publishes from it)."""
    data_dir: Path
    num_workers: int
    use_gpu: bool
    progress: bool
    report: Callable[[dict[str, float]], None] = lambda metrics: None
    """Called once per iteration with metrics (feeds Tune when running inside a sweep)."""


@dataclasses.dataclass(frozen=True)
class FitResult:
    metrics: dict[str, float]
    checkpoint_dir: Path
    """A directory holding everything ``Workload.load_model`` needs (the resolved config and
    meta are written into it by the platform when publishing)."""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Workload:
    """One model family, as the platform sees it.

    Attributes:
        name: registry and CLI name.
        config_cls: the workload's frozen config (a :class:`TrainConfig` subclass).
        configs_dir: folder of named YAML configs (``default.yaml``, ``smoke.yaml``, ...).
        make_data: ``(cfg, out_dir) -> None``: writes a dataset (generator, simulator logs, or an
            import of a file named by the config) with ``adray.data.write_dataset``.
        importers: ``{format: (files, out_dir, cfg) -> None}`` for ``adray data import``.
        torch: the Ray Train spec, or None when ``fit`` is used.
        fit: ``(cfg, ctx) -> FitResult`` for workloads that train themselves (RLlib).
        load_model: ``(checkpoint_dir, cfg, meta) -> model`` for a published checkpoint. Torch
            workloads may leave it None: the platform builds ``torch.build_model`` and loads
            ``model.pt``.
        evaluate_methods: ``(cfg, data_dir, model) -> {method: {metric: value}}``: the paper's
            table, the given model under the key ``name`` plus the workload's baselines.
    """

    name: str
    description: str
    config_cls: type[TrainConfig]
    configs_dir: Path
    make_data: Callable[[Any, Path], None] | None = None
    importers: Mapping[str, Callable[[Sequence[Path], Path, Any], None]] = dataclasses.field(
        default_factory=dict
    )
    torch: TorchSpec | None = None
    fit: Callable[[Any, FitContext], FitResult] | None = None
    load_model: Callable[[Path, Any, dict[str, Any]], Any] | None = None
    evaluate_methods: Callable[[Any, Path, Any], dict[str, dict[str, float]]] | None = None

    def __post_init__(self) -> None:
        if (self.torch is None) == (self.fit is None):
            raise ValueError(f"workload {self.name}: give exactly one of torch= or fit=")


class WorkloadError(LookupError):
    """Unknown workload name."""


def get_workload(name: str) -> Workload:
    from workloads import WORKLOADS  # the one place the platform reaches workloads

    if name not in WORKLOADS:
        raise WorkloadError(f"unknown workload {name!r}; available: {sorted(WORKLOADS)}")
    return WORKLOADS[name]


def data_dir_for(workload: str, cfg: TrainConfig) -> Path:
    return Path(cfg.data) if cfg.data else Path("data") / workload
