"""Training VAMO and its baselines: the epoch loop around :class:`step.MultiTask`, saving, loading.

Algorithm 1: the last day of the data is the validation split (D_val); each optimiser step samples
a training batch and (VAMO) a validation batch of ``batch_size`` windows with task proportions
matched to the data, computes the per-task and validation gradients and applies the weighted
update. STL trains one model per task on that task's data only.

Where this runs: in the calling process (one worker). The platform's Torch harness
(``adray.train_torch``) runs a loss per batch under DDP, which cannot express this step (K + 1
backward passes, all-reduced before the weights are computed, a validation batch per step, FAMO's
second forward, weighting state in the checkpoint). The hook the workload needs from it is in the
report of issue 13 and in :func:`train_loop`'s docstring: ``step(model, optimizer, batch, ctx)``
with ``ctx.all_reduce``, ``ctx.next_batch("val")``, ``ctx.state`` (checkpointed), no DDP wrapper,
and an ``end_epoch(ctx, epoch_metrics)`` callback.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adray.data import read_dataset
from workloads.vamo.batches import Sampler, make_batch
from workloads.vamo.config import TASKS, VamoConfig
from workloads.vamo.data import load_split
from workloads.vamo.model import VamoNet, dominant_periods
from workloads.vamo.step import MultiTask, StepContext, forward, task_loss_sums

MODEL_FILE = "models.pt"


def model_meta(cfg: VamoConfig, train: dict[str, np.ndarray], data_meta: Mapping[str, Any]) -> dict[str, Any]:
    """What building the network needs besides the config: state scaling, TimesNet's periods
    (from 2,048 training history windows), return-to-go scale and inference targets."""
    mu = np.asarray(data_meta["state_mean"], np.float32)
    sd = np.asarray(data_meta["state_std"], np.float32)
    sd = np.where(sd > 1e-6 * np.maximum(1.0, np.abs(mu)), sd, 1.0)  # a constant feature is not scaled up
    sampler = Sampler(train, len(TASKS))
    m, t = sampler.sample(2048, np.random.default_rng(cfg.seed))
    batch = make_batch(train, m, t, 1, cfg.history, 1.0)
    hist = ((batch["ext"][:, : cfg.history].numpy() - mu) / sd) * batch["ext_valid"][:, : cfg.history, None].numpy()
    ret = train["rtg"][:, 0]
    target = [float(np.quantile(ret[train["task"] == k], 0.9)) if (train["task"] == k).any() else 1.0
              for k in range(len(TASKS))]
    return {
        "state_mean": mu.tolist(), "state_std": sd.tolist(), "max_steps": int(train["valid"].shape[1]),
        "steps_per_day": int(data_meta.get("steps_per_day", train["valid"].shape[1])),
        "periods": list(dominant_periods(hist, cfg.top_k)),
        "rtg_scale": float(cfg.rtg_scale or max(float(data_meta.get("mean_score", 1.0)), 1e-6)),
        "rtg_target": target,
    }


def build_model(cfg: VamoConfig, meta: Mapping[str, Any]) -> VamoNet:
    return VamoNet(n_tasks=len(TASKS), context=cfg.context, history=cfg.history, hidden=cfg.hidden,
                   layers=cfg.layers, heads=cfg.heads, dropout=cfg.dropout, temporal=cfg.temporal,
                   periods=tuple(meta["periods"]), kernels=cfg.inception_kernels, head_hidden=cfg.head_hidden,
                   max_steps=meta["max_steps"], state_mean=meta["state_mean"], state_std=meta["state_std"])


@torch.no_grad()
def evaluate_loss(model: VamoNet, arrays: dict[str, np.ndarray], cfg: VamoConfig, meta: Mapping[str, Any],
                  tasks: tuple[int, ...] | None = None, chunk: int = 4096) -> dict[str, float]:
    """Mean squared action error per task over every position of a split (deterministic)."""
    model.eval()
    m, t = Sampler(arrays, len(TASKS), tasks).all_positions()
    sums, counts = torch.zeros(len(TASKS)), torch.zeros(len(TASKS))
    for a in range(0, len(m), chunk):
        b = make_batch(arrays, m[a: a + chunk], t[a: a + chunk], cfg.context, cfg.history, meta["rtg_scale"])
        s, c = task_loss_sums(forward(model, b), b, len(TASKS))
        sums, counts = sums + s, counts + c
    model.train()
    out = {f"loss_{name}": float(sums[k] / counts[k]) for k, name in enumerate(TASKS) if counts[k] > 0}
    out["loss"] = float(sums.sum() / counts.sum().clamp_min(1))
    return out


def train_loop(cfg: VamoConfig, train: dict[str, np.ndarray], val: dict[str, np.ndarray],
               meta: Mapping[str, Any], tasks: tuple[int, ...] | None = None,
               report: Callable[[dict[str, float]], None] | None = None,
               ) -> tuple[VamoNet, list[dict[str, float]]]:
    """Epochs of ``steps_per_epoch`` steps; returns the model of the epoch with the lowest
    validation loss and one history row per epoch.

    The harness hook this loop stands in for: per step ``step(model, optimizer, batch, ctx) ->
    metrics``, where the step writes ``.grad`` itself and calls ``optimizer.step()``; ``ctx``
    offers ``all_reduce`` (SUM over workers), ``next_batch("val")`` (a batch of the held-out split,
    sharded like the training batch), ``state`` (saved and restored with the checkpoint) and the
    worker's seed; the model is not wrapped in DDP; ``end_epoch(ctx, metrics)`` after each epoch.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_model(cfg, meta)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    mt = MultiTask(cfg, model)
    tr_sampler = Sampler(train, len(TASKS), tasks)
    va_sampler = Sampler(val, len(TASKS), tasks, shares=tr_sampler.shares)
    ctx = StepContext(generator=torch.Generator().manual_seed(cfg.seed))
    history, best, best_loss = [], None, float("inf")
    for epoch in range(cfg.epochs):
        t0, rows = time.perf_counter(), []
        for _ in range(cfg.steps_per_epoch):
            batch = make_batch(train, *tr_sampler.sample(cfg.batch_size, rng), cfg.context, cfg.history,
                               meta["rtg_scale"])
            vb = (make_batch(val, *va_sampler.sample(cfg.batch_size, rng), cfg.context, cfg.history,
                             meta["rtg_scale"]) if mt.needs_val else None)
            rows.append(mt.step(model, opt, batch, vb, ctx))
        secs = time.perf_counter() - t0
        mean = {k: float(np.mean([r[k] for r in rows if k in r])) for k in rows[-1]}
        mt.end_epoch(np.array([mean.get(f"loss_{t}", np.nan) for t in TASKS]))
        val_metrics = evaluate_loss(model, val, cfg, meta, tasks)
        row = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in mean.items()},
               **{f"val_{k}": v for k, v in val_metrics.items()},
               "samples_per_s": cfg.steps_per_epoch * cfg.batch_size / secs}
        history.append(row)
        if report:
            report(row)
        if val_metrics["loss"] < best_loss:
            best_loss, best = val_metrics["loss"], {k: v.clone() for k, v in model.state_dict().items()}
    assert best is not None
    model.load_state_dict(best)
    model.eval()
    return model, history


def load_windows(data_dir: Path, split: str, cfg: VamoConfig) -> dict[str, np.ndarray]:
    """TorchSpec.load_split: one row per (trajectory, step), the window ending there (the columns
    of :func:`batches.make_batch`), so the harness's row permutation and sharding apply as is."""
    arrays = load_split(data_dir, split)
    scale = cfg.rtg_scale or max(float(read_dataset(data_dir).meta.get("mean_score", 1.0)), 1e-6)
    m, t = Sampler(arrays, len(TASKS)).all_positions()
    return {k: v.numpy() for k, v in make_batch(arrays, m, t, cfg.context, cfg.history, scale).items()}


def spec_meta(data_dir: Path, cfg: VamoConfig) -> dict[str, Any]:
    """TorchSpec.model_meta."""
    return model_meta(cfg, load_split(data_dir, "train"), read_dataset(data_dir).meta)


def mean_task_loss(model: VamoNet, batch: dict[str, torch.Tensor], cfg: VamoConfig,
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """TorchSpec.loss of the Vanilla method: the mean of the task losses present (Eq. 3). Under the
    harness's gradient averaging this is exact only with equal per-worker task counts; VAMO and the
    other weightings need the custom step (module docstring)."""
    sums, counts = task_loss_sums(forward(model, batch), batch, len(TASKS))
    present = counts > 0
    losses = sums / counts.clamp_min(1)
    return losses[present].mean(), {f"loss_{t}": float(losses[k].detach()) for k, t in enumerate(TASKS) if present[k]}


@torch.no_grad()
def evaluate_windows(model: VamoNet, arrays: dict[str, np.ndarray], cfg: VamoConfig, chunk: int = 4096,
                     ) -> dict[str, float]:
    """TorchSpec.evaluate: mean squared action error per task and over all positions."""
    sums, counts = torch.zeros(len(TASKS)), torch.zeros(len(TASKS))
    for a in range(0, len(arrays["task"]), chunk):
        b = {k: torch.from_numpy(v[a: a + chunk]) for k, v in arrays.items()}
        s, c = task_loss_sums(forward(model, b), b, len(TASKS))
        sums, counts = sums + s, counts + c
    out = {f"loss_{name}": float(sums[k] / counts[k]) for k, name in enumerate(TASKS) if counts[k] > 0}
    out["loss"] = float(sums.sum() / counts.sum().clamp_min(1))
    return out


@dataclasses.dataclass
class VamoModel:
    """What serving and evaluation load: one network (multi-task) or one per task (STL)."""

    nets: list[VamoNet]
    cfg: VamoConfig
    meta: dict[str, Any]

    def net_for(self, task: int) -> VamoNet:
        return self.nets[task] if len(self.nets) > 1 else self.nets[0]


def fit(cfg: VamoConfig, data_dir: Path, report: Callable[[dict[str, float]], None] | None = None,
        ) -> tuple[VamoModel, list[dict[str, float]]]:
    """Train the configured method on a dataset: STL = one model per task, else one shared model."""
    train, val = load_split(data_dir, "train"), load_split(data_dir, "val")
    meta = model_meta(cfg, train, read_dataset(data_dir).meta)
    if cfg.weighting == "stl":
        nets, history = [], []
        for k in range(len(TASKS)):
            net, hist = train_loop(cfg, train, val, meta, tasks=(k,), report=report)
            nets.append(net)
            history += [{"task": k, **h} for h in hist]
        return VamoModel(nets, cfg, meta), history
    net, history = train_loop(cfg, train, val, meta, report=report)
    return VamoModel([net], cfg, meta), history


def save_model(model: VamoModel, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save([n.state_dict() for n in model.nets], out_dir / MODEL_FILE)
    (out_dir / "vamo_meta.json").write_text(json.dumps(model.meta))


def load_model(version_dir: Path, cfg: VamoConfig, meta: Mapping[str, Any] | None = None) -> VamoModel:
    """A saved model in eval mode (``meta``: the platform's meta.json; the network's own is beside it)."""
    own = json.loads((Path(version_dir) / "vamo_meta.json").read_text())
    states = torch.load(Path(version_dir) / MODEL_FILE, weights_only=True)
    nets = []
    for state in states:
        net = build_model(cfg, own)
        net.load_state_dict(state)
        nets.append(net.eval())
    return VamoModel(nets, cfg, own)
