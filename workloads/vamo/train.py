"""Training VAMO and its baselines on the platform's Ray Train harness; saving and loading models.

Every method is one ``adray.train_torch.TorchSpec`` (:func:`make_spec`) whose custom step is
:func:`step.vamo_step` (the multi-task update: per-task and validation gradients, all-reduced, the
method's weights; see step.py for how they are reduced across workers) and whose rows are windows:
one per (trajectory, step) of a split, the window of ``context`` steps ending there plus the
``history`` states before it (:func:`load_windows`). Algorithm 1's split: the last logged day before
the test day is the validation split (D_val), the days before it the training split.

* Multi-task methods (vanilla, dwa, famo, pcgrad, fairgrad, vamo, vamo_train): one harness run,
  one shared model.
* STL: one harness run per task, each on that task's windows only (train, validation and test),
  the same network shape; the K models are kept together in one model directory.

:func:`fit` runs the same specs in this process through ``adray.train_torch.fit_in_process`` (the
same epoch loop and step: benchmarks and tests); ``workload.VamoTrainer`` runs them on Ray Train.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adray.data import read_dataset
from workloads.vamo import stream
from workloads.vamo.batches import Sampler, make_batch, rtg_unit
from workloads.vamo.config import TASKS, VamoConfig
from workloads.vamo.data import load_split
from workloads.vamo.model import VamoNet, dominant_periods
from workloads.vamo.step import MultiTask, forward, task_loss_sums, vamo_step

MODEL_FILE = "models.pt"
META_FILE = "vamo_meta.json"
TARGETS_META = "targets_chosen"
"""Key of the network's meta holding the return targets chosen on the validation day
(``target_grid``; evaluate.select_targets' record)."""


def model_meta(cfg: VamoConfig, train: dict[str, np.ndarray], data_meta: Mapping[str, Any]) -> dict[str, Any]:
    """What building the network needs besides the config: state scaling, TimesNet's periods
    (from 2,048 training history windows), return-to-go scale and inference targets. Computed on
    the training trajectories given (:func:`spec_meta`: the whole split up to
    ``stream.META_SAMPLE_ROWS`` rows, a seeded sample of whole trajectories above), also for STL
    (all K single-task models share it)."""
    mu = np.asarray(data_meta["state_mean"], np.float32)
    sd = np.asarray(data_meta["state_std"], np.float32)
    sd = np.where(sd > 1e-6 * np.maximum(1.0, np.abs(mu)), sd, 1.0)  # a constant feature is not scaled up
    sampler = Sampler(train, len(TASKS))
    m, t = sampler.sample(2048, np.random.default_rng(cfg.seed))
    batch = make_batch(train, m, t, 1, cfg.history, 1.0)
    hist = ((batch["ext"][:, : cfg.history].numpy() - mu) / sd) * batch["ext_valid"][:, : cfg.history, None].numpy()
    ret = train["rtg"][:, 0] / rtg_unit(train, cfg.rtg_norm)  # each trajectory's return, in its unit
    target = [float(np.quantile(ret[train["task"] == k], 0.9)) if (train["task"] == k).any() else 1.0
              for k in range(len(TASKS))]
    return {
        "state_mean": mu.tolist(), "state_std": sd.tolist(), "max_steps": int(train["valid"].shape[1]),
        "steps_per_day": int(data_meta.get("steps_per_day", train["valid"].shape[1])),
        "periods": list(dominant_periods(hist, cfg.top_k)),
        "rtg_scale": rtg_scale_of(cfg, ret, data_meta),
        "rtg_target": target,
        "rtg_norm": cfg.rtg_norm,
    }


def rtg_scale_of(cfg: VamoConfig, ret: np.ndarray, data_meta: Mapping[str, Any]) -> float:
    """The return-to-go's divisor: the config's, else the mean daily score of the training data
    (the manifest's), or with ``rtg_norm: capacity`` the mean of ``ret`` (scores per unit of capacity)."""
    if cfg.rtg_scale:
        return float(cfg.rtg_scale)
    mean = float(np.mean(ret)) if cfg.rtg_norm == "capacity" else float(data_meta.get("mean_score", 1.0))
    return max(mean, 1e-6)


def build_model(cfg: VamoConfig, meta: Mapping[str, Any]) -> VamoNet:
    return VamoNet(n_tasks=len(TASKS), context=cfg.context, history=cfg.history, hidden=cfg.hidden,
                   layers=cfg.layers, heads=cfg.heads, dropout=cfg.dropout, temporal=cfg.temporal,
                   periods=tuple(meta["periods"]), kernels=cfg.inception_kernels, head_hidden=cfg.head_hidden,
                   max_steps=meta["max_steps"], state_mean=meta["state_mean"], state_std=meta["state_std"])


def load_windows(data_dir: Path, split: str, cfg: VamoConfig, tasks: tuple[int, ...] | None = None,
                 ) -> dict[str, np.ndarray]:
    """TorchSpec.load_split: one row per (trajectory, step) of the split (of ``tasks`` only: STL),
    the window ending there (the columns of :func:`batches.make_batch`), so the harness's row
    permutation and sharding apply as is."""
    arrays = load_split(data_dir, split)
    if cfg.rtg_norm == "none":
        scale = rtg_scale_of(cfg, np.zeros(1), read_dataset(data_dir).meta)
    else:  # the training sample's, as the model's meta has it
        train = stream.train_sample(data_dir, cfg.seed)
        scale = rtg_scale_of(cfg, train["rtg"][:, 0] / rtg_unit(train, cfg.rtg_norm), {})
    m, t = Sampler(arrays, len(TASKS), tasks).all_positions()
    return {k: v.numpy() for k, v in make_batch(arrays, m, t, cfg.context, cfg.history, scale, cfg.rtg_norm).items()}


def spec_meta(data_dir: Path, cfg: VamoConfig) -> dict[str, Any]:
    """TorchSpec.model_meta: from a bounded sample of the training split (``stream.train_sample``:
    the whole split up to 500,000 rows)."""
    return model_meta(cfg, stream.train_sample(data_dir, cfg.seed), read_dataset(data_dir, check_files=False).meta)


def mean_task_loss(model: VamoNet, batch: dict[str, torch.Tensor], cfg: VamoConfig,
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """TorchSpec.loss: the mean of the task losses present (Eq. 3, what the Vanilla step follows).
    The harness trains with :func:`step.vamo_step`; this states what the loss means."""
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


def make_spec(tasks: tuple[int, ...] | None = None) -> Any:
    """The TorchSpec of one harness run: every task (multi-task methods) or ``tasks`` only (STL).
    Its rows stream (``ingest``) as windows made from whole trajectories in Ray Data's read (stream.py)."""
    from adray.train_torch import TorchSpec

    def bind(fn: Any) -> Any:
        return fn if tasks is None else functools.partial(fn, tasks=tasks)

    return TorchSpec(load_split=bind(load_windows), model_meta=spec_meta, build_model=build_model,
                     loss=mean_task_loss, evaluate=evaluate_windows, objective="loss", mode="min", step=vamo_step,
                     step_state=MultiTask, stream_columns=stream.stream_columns,
                     stream_convert=stream.stream_convert, stream_read=bind(stream.read_windows),
                     stream_rows=bind(stream.stream_rows), stream_eval=bind(stream.stream_eval))


def task_runs(cfg: VamoConfig) -> list[tuple[int, ...] | None]:
    """The harness runs of a method: one per task for STL, one for every other method."""
    return [(k,) for k in range(len(TASKS))] if cfg.weighting == "stl" else [None]


@dataclasses.dataclass
class VamoModel:
    """What serving and evaluation load: one network (multi-task) or one per task (STL)."""

    nets: list[VamoNet]
    cfg: VamoConfig
    meta: dict[str, Any]

    def net_for(self, task: int) -> VamoNet:
        return self.nets[task] if len(self.nets) > 1 else self.nets[0]


def fit(cfg: VamoConfig, data_dir: Path) -> tuple[VamoModel, list[dict[str, float]]]:
    """The configured method trained in this process (``fit_in_process``: the harness's epoch loop
    and :func:`step.vamo_step`, one worker); history rows of STL carry their ``task``."""
    from adray.train_torch import fit_in_process

    nets, history = [], []
    for tasks in task_runs(cfg):
        out = fit_in_process(make_spec(tasks), cfg, data_dir)
        nets.append(out.model)
        history += [h if tasks is None else {"task": tasks[0], **h} for h in out.history]
    return VamoModel(nets, cfg, spec_meta(Path(data_dir), cfg)), history


def save_model(model: VamoModel, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save([n.state_dict() for n in model.nets], out_dir / MODEL_FILE)
    (out_dir / META_FILE).write_text(json.dumps(model.meta))


def load_model(version_dir: Path, cfg: VamoConfig, meta: Mapping[str, Any] | None = None) -> VamoModel:
    """A saved model in eval mode (``meta``: the platform's meta.json; the network's own is beside it).
    Return targets chosen on the validation day in training (``TARGETS_META``, ``target_grid``) become
    the model's ``task_targets`` unless the config names its own."""
    own = json.loads((Path(version_dir) / META_FILE).read_text())
    chosen = own.get(TARGETS_META)
    if chosen and not cfg.task_targets:
        cfg = dataclasses.replace(cfg, task_targets=tuple(float(t) for t in chosen["task_targets"]), target_grid=())
    states = torch.load(Path(version_dir) / MODEL_FILE, weights_only=True)
    nets = []
    for state in states:
        net = build_model(cfg, own)
        net.load_state_dict(state)
        nets.append(net.eval())
    return VamoModel(nets, cfg, own)
