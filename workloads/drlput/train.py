"""DRL-PUT on RLlib's new API stack: REINFORCE (γ = 0) and actor-critic, offline from logged Parquet.

The shape of RLlib's VPG example: :class:`PolicyGradientConfig` (AlgorithmConfig) +
:class:`OfflinePolicyGradient` (``Algorithm.training_step``) + :class:`DRLPUTLearner`
(``TorchLearner.compute_loss_for_module``, the loss of losses.py) + ``model.DRLPUTModule``
(TorchRLModule). ``training_step`` draws minibatches of B logged requests from the ``train``
split (sampled in the driver as in ``adray.rl``), computes each minibatch's reward (the variant
R0-R4, min-max normalised per batch: normalisation is a per-batch operation, so it happens here,
one minibatch at a time, and the learner receives the minibatches in order, unshuffled), and hands
``updates_per_iteration`` of them to ``learner_group.update`` in one call. With ``online=True`` it
samples B one-step episodes of ``sim.AdRequestEnv`` from RLlib's EnvRunner instead (π(·|s)
sampled; μ = π at sampling time, from the episodes' ``action_logp``).

Differences from the paper (why): the reward's user value uses the realised events by default
(``reward_signal``), not the ranking models' predictions (their biases are what the policy must
correct); importance weights are available (losses.py) though the paper has none; which
iteration is kept is decided on held-out logs (below).

Model selection uses no simulator truth (simulators generate data and evaluate; they never choose
a model). After each iteration the serving rule (argmax of π(·|s), ε-greedy at ``serve_epsilon``)
is valued by SNIPS on the ``val`` logs with their logged propensities and the config's reward,
unnormalised (``evaluate.logged_metrics``, reported as ``val_snips``: what ``adray tune drlput``
maximises). After the last iteration, ``selection`` keeps one (selection.py: by default the last,
unless an earlier one is better with confidence on the same rows) and it is exported. The kept
model's estimates on the ``test`` logs, which choose nothing, are returned as ``test_*``.
Online (``online: true``) the policy trains in the simulator by definition, but its choice uses
no more of it: with a logged dataset the same ``val`` rule applies; without one the last
iteration is kept (the env's sampled rewards are each iteration's training batch, drawn by the
stochastic π before the update: not a held-out estimate of the served argmax, so not a choice).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics import (
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    TIMERS,
)

from adray import rl
from adray.data import DataError, dataset_exists
from adray.runtime import torch_threads
from adray.workload import TrainContext, TrainResult
from workloads.drlput import columns as C
from workloads.drlput import losses
from workloads.drlput.config import DRLPUTConfig
from workloads.drlput.evaluate import (
    OBJECTIVE,
    greedy_actions,
    logged_metrics,
    logged_reward,
    logged_weights,
    offline_metrics,
    reward_per_action,
)
from workloads.drlput.logs import check_block, held_out, split_files
from workloads.drlput.model import DRLPUTModule, module_config
from workloads.drlput.reward import training_reward
from workloads.drlput.selection import choose
from workloads.drlput.sim import AdRequestEnv

BEHAVIOUR_PROB = "behaviour_prob"
MODULE_DIR = "module"
LOSS_KEYS = ("pg_loss", "vf_loss", "entropy", "weight_mean", "reward_mean")


class DRLPUTLearner(TorchLearner):
    """Eq. 4.1 as a loss (+ critic and entropy terms); settings from ``learner_config_dict``."""

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        extra = config.learner_config_dict
        logits, actions, rewards = fwd_out[Columns.ACTION_DIST_INPUTS], batch[Columns.ACTIONS], batch[Columns.REWARDS]
        w = losses.importance_weights(logits, actions, batch[BEHAVIOUR_PROB], extra["importance"])
        values = fwd_out.get(Columns.VF_PREDS)  # (B,) actor-critic only
        pg = losses.policy_gradient_loss(logits, actions, rewards, w, values)
        ent = losses.entropy(logits)
        loss = pg - extra["entropy_coeff"] * ent
        logged = {"pg_loss": pg, "entropy": ent, "weight_mean": w.mean(), "reward_mean": rewards.mean()}
        if values is not None:
            vf = losses.critic_loss(values, rewards)
            loss = loss + extra["vf_coeff"] * vf
            logged["vf_loss"] = vf
        self.metrics.log_dict(logged, key=module_id, window=1)
        return loss


class PolicyGradientConfig(AlgorithmConfig):
    """AlgorithmConfig of :class:`OfflinePolicyGradient`; the DRL-PUT settings ride in
    ``learner_config_dict`` (``cfg``: the whole DRLPUTConfig as a dict, ``data_path``)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or OfflinePolicyGradient)

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=DRLPUTModule)

    def get_default_learner_class(self) -> type:
        return DRLPUTLearner


class OfflinePolicyGradient(Algorithm):
    """REINFORCE / actor-critic whose ``training_step`` learns from the logs (or, online, the env)."""

    @classmethod
    def get_default_config(cls) -> PolicyGradientConfig:
        return PolicyGradientConfig()

    def setup(self, config: Any) -> None:
        super().setup(config)
        extra = config.learner_config_dict
        self._cfg = DRLPUTConfig.from_dict(extra["cfg"])
        self._trained = 0
        if self._cfg.online:
            return
        check = check_block(self._cfg.action.num_actions)

        def rows(b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # one checked block of the train logs
            b = check(b)
            return {Columns.OBS: np.stack([b[c] for c in C.STATE], 1).astype(np.float32),
                    Columns.ACTIONS: b[C.ACTION].astype(np.int64), BEHAVIOUR_PROB: b[C.PROPENSITY].astype(np.float32),
                    **{k: b[k] for k in C.OUTCOME}}

        files = extra["data_files"] or rl.as_files(extra["data_path"])
        self._sampler = rl.transition_sampler(files, (*C.STATE, C.ACTION, C.PROPENSITY, *C.OUTCOME), rows,
                                              seed=self._cfg.seed, buffer_rows=self._cfg.buffer_rows)

    def cleanup(self) -> None:
        if hasattr(getattr(self, "_sampler", None), "close"):
            self._sampler.close()  # a StreamSampler's read-ahead thread
        super().cleanup()

    def _rewards(self, comp: dict[str, np.ndarray]) -> np.ndarray:
        c = self._cfg
        return training_reward(comp, c.reward, c.reward_signal, c.normalise).astype(np.float32)

    def _offline_batch(self, n_mb: int, size: int) -> dict[str, np.ndarray]:
        b = self._sampler.sample(n_mb * size)  # n_mb minibatches, in order; the reward is normalised per minibatch
        rewards = np.concatenate([self._rewards({k: b[k][i * size:(i + 1) * size] for k in C.OUTCOME})
                                  for i in range(n_mb)])
        return {Columns.OBS: b[Columns.OBS], Columns.ACTIONS: b[Columns.ACTIONS], Columns.REWARDS: rewards,
                BEHAVIOUR_PROB: b[BEHAVIOUR_PROB]}

    def _online_batch(self, n_mb: int, size: int) -> dict[str, np.ndarray]:
        parts = []
        for _ in range(n_mb):
            episodes = self.env_runner.sample(num_episodes=size, explore=True)[:size]
            comp = {k: np.array([e.get_infos(-1)[k] for e in episodes]) for k in C.OUTCOME}
            parts.append({
                Columns.OBS: np.stack([e.get_observations(0) for e in episodes]).astype(np.float32),
                Columns.ACTIONS: np.array([e.get_actions(0) for e in episodes], np.int64),
                Columns.REWARDS: self._rewards(comp),
                BEHAVIOUR_PROB: np.exp([e.get_extra_model_outputs(Columns.ACTION_LOGP, 0) for e in episodes]
                                       ).astype(np.float32),
            })
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def training_step(self) -> None:
        size, n_mb = self._cfg.batch_size, self._cfg.updates_per_iteration
        batch = self._online_batch(n_mb, size) if self._cfg.online else self._offline_batch(n_mb, size)
        self._trained += n_mb * size
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            results = self.learner_group.update(
                batch=rl.learner_batch(batch), minibatch_size=size, num_epochs=1, shuffle_batch_per_epoch=False,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self._trained},
            )
        self.metrics.aggregate(results, key=LEARNER_RESULTS)
        self.metrics.log_value("samples_trained", self._trained, reduce="max")
        if self._cfg.online:
            self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group, inference_only=True)


def algorithm_config(cfg: DRLPUTConfig, data: Path | rl.Files | None, use_gpu: bool = False) -> PolicyGradientConfig:
    """The RLlib config; ``data``: the ``train`` split's files (``Dataset.split_files``) or one
    Parquet file (None: online)."""
    actor_critic = cfg.algorithm == "actor_critic"
    config = (
        PolicyGradientConfig()
        .environment(AdRequestEnv, env_config={"cfg": cfg.to_dict()})
        .framework("torch")
        .rl_module(rl_module_spec=RLModuleSpec(module_class=DRLPUTModule,
                                               model_config=module_config(cfg.embed_dim, cfg.hidden, actor_critic)))
        .training(lr=cfg.lr, gamma=0.0, train_batch_size_per_learner=cfg.batch_size, grad_clip=cfg.grad_clip or None)
        .learners(learner_config_dict={
            "cfg": cfg.to_dict(), "data_path": str(data) if isinstance(data, (str, Path)) else "",
            "data_files": data if isinstance(data, tuple) else None, "importance": cfg.importance,
            "entropy_coeff": cfg.entropy_coeff, "vf_coeff": cfg.vf_coeff})
        .learners(num_gpus_per_learner=1 if use_gpu else 0)
        .env_runners(num_envs_per_env_runner=64 if cfg.online else 1)
        .debugging(seed=cfg.seed)
    )
    return rl.small_machine(config, offline=True)


def train_module(cfg: DRLPUTConfig, data_dir: Path | None, out_dir: Path, report: Any = lambda m: None,
                 progress: bool = False, use_gpu: bool = False) -> dict[str, float]:
    """Train with RLlib; export the kept iteration's inference module to ``out_dir/module``.

    The kept iteration is chosen from each iteration's ``val_snips`` by ``cfg.selection``
    (selection.py; online without logs: the last); the metrics returned are its ``val_*``, its
    ``test_*`` and ``best_iteration`` (1-based), over the last iteration's losses.
    """
    files = val_logs = test_logs = q_hat = None
    if data_dir is not None and dataset_exists(data_dir):  # a local folder or a storage URI
        files = split_files(cfg, data_dir, "train")
        val_logs, test_logs = held_out(cfg, data_dir, "val"), held_out(cfg, data_dir, "test")  # bounded
        q_hat = reward_per_action(cfg, data_dir)  # DR's q̂ from the train split (streamed)
    elif not cfg.online:
        raise DataError(f"{data_dir}: no logged dataset; create one with `adray data make drlput` or set online: true")
    algo = algorithm_config(cfg, files, use_gpu).build_algo()
    module = algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()
    states: list[dict[str, Any]] = []  # per iteration: the module's weights (small: kept in memory)
    weights: list[np.ndarray] = []  # per iteration: π/μ (N_val,) of its serving rule on the val logs

    def summarize(result: dict[str, Any]) -> dict[str, float]:
        stats = rl.learner_metrics(result)
        out = {k: stats[k] for k in LOSS_KEYS if k in stats}
        if val_logs is None:
            return out
        chosen = greedy_actions(module, val_logs)
        states.append(copy.deepcopy(module.state_dict()))
        weights.append(logged_weights(cfg, chosen, val_logs))
        return {**out, **{f"val_{k}": v for k, v in logged_metrics(cfg, chosen, val_logs, q_hat).items()}}

    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads())
    try:
        start = time.perf_counter()
        with torch.enable_grad():
            history = rl.train_iterations(algo, cfg.iterations, summarize, report, progress)
        train_s = time.perf_counter() - start
        kept, test = len(history) - 1, {}
        if val_logs is not None:
            kept = choose(cfg.selection, np.stack(weights), logged_reward(cfg, val_logs), cfg.seed)
            module.load_state_dict(states[kept])
            test = {f"test_{k}": v for k, v in offline_metrics(cfg, module, test_logs, q_hat).items()}
        rl.export_module(algo, Path(out_dir) / MODULE_DIR)
    finally:
        algo.stop()
        torch.set_num_threads(threads)
    samples = cfg.iterations * cfg.updates_per_iteration * cfg.batch_size
    chosen_val = {k: v for k, v in history[kept].items() if k.startswith("val_")}
    return {**history[-1], **chosen_val, **test, "best_iteration": float(kept + 1),
            "iter_time_s": float(np.mean([h["iter_time_s"] for h in history])), "train_time_s": train_s,
            "samples_per_s": samples / sum(h["iter_time_s"] for h in history)}


class DRLPUTTrainer:
    """The workload's training entry (``adray.workload.Trainer``): RLlib, ``iterations`` reports."""

    loop_field = "iterations"
    objective = OBJECTIVE  # val_snips: SNIPS of the serving rule on the held-out val logs
    mode = "max"

    def train(self, cfg: DRLPUTConfig, ctx: TrainContext) -> TrainResult:
        from adray.config import ConfigError

        if ctx.num_workers != 1:  # said, not ignored: the learner is one small network in the driver
            raise ConfigError(f"--workers {ctx.num_workers}: drlput trains one RLlib learner in the driver "
                              "(minibatches of logged requests on one small policy network); use --workers 1.")
        out = Path(ctx.run_dir) / "model"  # what is published
        out.mkdir(parents=True, exist_ok=True)
        history: list[dict[str, float]] = []

        def report(metrics: dict[str, float]) -> None:
            history.append(dict(metrics))
            ctx.reporter.report(metrics)

        metrics = train_module(cfg, ctx.data_dir, out, report, ctx.progress, use_gpu=ctx.use_gpu)
        meta = {"module_dir": MODULE_DIR, "num_actions": cfg.action.num_actions, "action": cfg.action.to_dict(),
                "state": list(C.STATE), "module_config": module_config(cfg.embed_dim, cfg.hidden, False)}
        return TrainResult(metrics=metrics, model_dir=out, meta=meta, history=history,
                           timings={"train_s": metrics["train_time_s"]})

    def salvage(self, cfg: DRLPUTConfig, ctx: TrainContext, checkpoint: str | None) -> TrainResult | None:
        return None  # no per-iteration checkpoints: an interrupted trial has no model to publish


def load_model(path: Path, cfg: DRLPUTConfig, meta: dict[str, Any]) -> Any:
    """The inference RLModule alone (Serve and evaluation)."""
    return rl.load_module(Path(path) / meta.get("module_dir", MODULE_DIR))
