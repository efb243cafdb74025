"""Cross DQN training entry: :class:`CrossDQNTrainer` (the workload's ``Trainer``) and ``load_model``.

:func:`train_module` drives the offline RLlib algorithm of learner.py for ``iterations`` iterations
(each: ``updates_per_iteration`` gradient steps on the training episodes, then the ``val_*``
estimates on the held-out logged episodes, see selection.py), calibrates the PAE offset β on the
held-out logged screens, and exports the inference RLModule alone (the last iteration's: no
iteration is chosen), and reports the exported policy's ``test_*`` estimates on the held-out test
logs (selection.split_masks: they neither train, calibrate nor choose; ``adray eval crossdqn``
computes the same numbers from the published model). Nothing here asks the simulator: it generated the logs and evaluates the
models (evaluate.py), it never trains or chooses one. RLlib and torch are imported when training
starts, not with this module: the workload package stays light to import (the platform's registry
imports it to read a config or a tune space).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from adray.config import ConfigError
from adray.workload import TrainContext, TrainResult
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import SPLIT, check_dataset
from workloads.crossdqn.selection import (
    OBJECTIVE,
    HeldOut,
    greedy_actions,
    logged_test_metrics,
    match_offset,
    net_scores,
)
from workloads.crossdqn.sim import obs_layout

MODULE_DIR = "module"
"""The exported RLModule under a model directory (``meta["module_dir"]``)."""
MODEL_DIR = "model"
"""The model directory under a run directory (what the platform publishes)."""
ABLATIONS = ("no_aux", "no_aux_mcau", "no_aux_mcau_sacu")
"""The paper's ablations: named configs (configs/<name>.yaml = ``base: default`` + their overrides)."""


def train_module(cfg: CrossDQNConfig, data_dir: Path, out_dir: Path, report: Any = lambda m: None,
                 progress: bool = False, validate: bool = True, use_gpu: bool = False) -> dict[str, float]:
    """Train with RLlib, export the inference module to ``out_dir/module``; returns metrics.

    ``report(metrics)`` is called once per iteration (``iteration``, ``iter_time_s``, the learner's
    losses and, with ``validate``, the ``val_*`` of :meth:`selection.HeldOut.metrics`: estimates on
    the held-out logs, never the simulator)."""
    return _train(cfg, data_dir, out_dir, report, progress, validate, use_gpu)[0]


def _train(cfg: CrossDQNConfig, data_dir: Path, out_dir: Path, report: Any, progress: bool, validate: bool,
           use_gpu: bool) -> tuple[dict[str, float], list[dict[str, float]]]:
    """:func:`train_module`, returning (final metrics, one row per iteration)."""
    import torch
    from ray.rllib.core import DEFAULT_MODULE_ID

    from adray import rl
    from adray.runtime import torch_threads
    from workloads.crossdqn.learner import CQL_KEY, PAE_AUX_KEY, PAE_BATCH_KEY, algorithm_config

    files = None if cfg.online else logged_files(cfg, data_dir)
    held = None if files is None else HeldOut.load(cfg, files)
    algo = algorithm_config(cfg, files, use_gpu).build_algo()
    learner_module = algo.learner_group._learner.module[DEFAULT_MODULE_ID] if algo.learner_group.is_local else None

    def summarize(result: dict[str, Any]) -> dict[str, float]:
        stats = rl.learner_metrics(result)
        out = {k: stats[k] for k in ("qf_loss", "qf_mean", PAE_AUX_KEY, PAE_BATCH_KEY, CQL_KEY) if k in stats}
        if validate and held is not None and learner_module is not None:
            net = learner_module.unwrapped().net
            out.update({f"val_{k}": v for k, v in held.metrics(net, cfg.pae_target).items()})
        return out

    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads())  # as the Train harness: no oversubscribed shared CPUs
    try:
        start = time.perf_counter()
        with torch.enable_grad():  # callers may evaluate under no_grad; training must not inherit it
            history = rl.train_iterations(algo, cfg.iterations, summarize, report, progress)
        train_s = time.perf_counter() - start
        offsets = {}
        if learner_module is not None and cfg.lam > 0:  # β: trained (offset mode) or 0 (q mode)
            net = learner_module.unwrapped().net
            offsets["pae_offset_trained"] = net.pae_offset.item()
            if cfg.calibrate_pae and held is not None:  # the served greedy policy's PAE on logged screens = target
                action_pae = net.action_pae.cpu().numpy().astype(np.float64)
                with torch.no_grad():
                    net.pae_offset += match_offset(net_scores(net, held.obs), action_pae, cfg.pae_target)
                served = net_scores(net, held.obs)
                offsets["val_pae_logged"] = float(action_pae[greedy_actions(served, action_pae, 0.0)].mean())
            offsets["pae_offset"] = net.pae_offset.item()
        if validate and files is not None and learner_module is not None:  # the policy as exported
            offsets.update(logged_test_metrics(cfg, files, learner_module.unwrapped().net))
        rl.export_module(algo, out_dir / MODULE_DIR)
    finally:
        algo.stop()
        torch.set_num_threads(threads)
    transitions = cfg.iterations * cfg.updates_per_iteration * cfg.batch_size
    metrics = {**history[-1], **offsets}
    metrics.update({
        "iter_time_s": float(np.mean([h["iter_time_s"] for h in history])),
        "train_time_s": train_s,
        "train_transitions_per_s": transitions / sum(h["iter_time_s"] for h in history),
    })
    return metrics, history


def logged_files(cfg: CrossDQNConfig, data_dir: Path) -> Any:
    """``(filesystem, [Parquet files])`` of the logged split, after :func:`data.check_dataset`."""
    from adray.data import read_dataset

    check_dataset(cfg, data_dir)
    return read_dataset(data_dir).split_files(SPLIT)


def model_meta(cfg: CrossDQNConfig) -> dict[str, Any]:
    """What ``load_model`` and the serving policy read (saved as meta.json beside the module)."""
    from workloads.crossdqn.model import module_config

    layout = obs_layout(cfg.sim)
    return {"obs_layout": layout, "module_config": module_config(cfg, layout), "module_dir": MODULE_DIR}


class CrossDQNTrainer:
    """The Cross DQN ``Trainer``: offline (or online) RLlib DQN, one report per iteration.

    ``train`` writes the exported RLModule to ``ctx.run_dir/model/module`` and returns that model
    directory; it reports ``val_reward_wdr`` as the objective: the served policy's reward per
    request at the PAE target, estimated off-policy on the held-out logs (selection.OBJECTIVE). The
    learner runs in the calling process (one learner, ``num_learners=0``): on one GPU with
    ``ctx.use_gpu``; fp32 only (see :meth:`check_context`). No per-iteration checkpoints are kept,
    so an interrupted run leaves nothing to salvage.
    """

    loop_field = "iterations"
    objective = OBJECTIVE
    mode: Literal["max", "min"] = "max"

    @staticmethod
    def check_context(ctx: TrainContext) -> None:
        """Refuse what this trainer cannot honour, naming the option."""
        if ctx.precision != "fp32":
            raise ConfigError(  # measured: rounding trained Q-values to bf16 flipped 3-8 % of greedy actions
                f"--precision {ctx.precision}: crossdqn trains in fp32 only. Its Q-values are ~4 with gaps of "
                "~0.05 between the best slot patterns, and bf16's spacing at 4 is 0.03: rounding the Q-values "
                "changes the served greedy action on several % of screens, and the PAE loss's softmax at "
                "tau=0.01 resolves finer differences still. Use --precision fp32.")
        if ctx.num_workers != 1:
            raise ConfigError(
                f"--workers {ctx.num_workers}: crossdqn trains one RLlib learner in the driver "
                "(updates are small minibatches on one network); use --workers 1.")
        if ctx.use_gpu:
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("--gpu: no CUDA device is visible to this process "
                                  "(torch.cuda.is_available() is False); drop --gpu to train on CPU.")

    def train(self, cfg: CrossDQNConfig, ctx: TrainContext) -> TrainResult:
        self.check_context(ctx)
        model_dir = Path(ctx.run_dir) / MODEL_DIR
        model_dir.mkdir(parents=True, exist_ok=True)
        metrics, history = _train(cfg, Path(ctx.data_dir), model_dir, ctx.reporter.report, ctx.progress,
                                  validate=True, use_gpu=ctx.use_gpu)
        timings = {k: float(metrics[k]) for k in ("iter_time_s", "train_time_s", "train_transitions_per_s")}
        return TrainResult(metrics=metrics, model_dir=model_dir, meta=model_meta(cfg), history=history,
                           timings=timings)

    def salvage(self, cfg: CrossDQNConfig, ctx: TrainContext, checkpoint: str | None) -> None:
        """No per-iteration checkpoints are kept (an iteration is seconds): nothing to salvage."""
        return None


def train_ablations(cfg: CrossDQNConfig, data_dir: Path, out_root: Path,
                    names: tuple[str, ...] = ABLATIONS) -> dict[str, Any]:
    """Train each ablation (``cfg`` + the named config's overrides, see :func:`ablation_overrides`)
    on the same data; returns the loaded modules by name (for ``evaluate(..., others=...)``)."""
    from adray import rl
    from adray.runtime import ensure_ray

    ensure_ray()
    models = {}
    for name in names:
        out = out_root / name
        train_module(cfg.override(ablation_overrides(name), f"configs/{name}.yaml"), data_dir, out, validate=False)
        models[name] = rl.load_module(out / MODULE_DIR)
    return models


def ablation_overrides(name: str) -> dict[str, Any]:
    """The overrides a named ablation config puts on its base (``configs/<name>.yaml`` less ``base``),
    so that benchmarks apply them on top of any config (smoke, --set ...)."""
    from adray.config import read_yaml

    data = read_yaml(Path(__file__).parent / "configs" / f"{name}.yaml")
    data.pop("base", None)
    return data


def load_model(path: Path, cfg: CrossDQNConfig, meta: dict[str, Any]) -> Any:
    """The inference RLModule alone (for Serve and evaluation), in eval mode."""
    from adray import rl

    return rl.load_module(Path(path) / meta.get("module_dir", MODULE_DIR))
