"""Cross DQN training: DQN learner + batch-level PAE loss, an offline DQN, and ``fit``.

Loss (Eq. 18-21), per minibatch of logged transitions (s, a, r, s', done):

    L_DQN = mean Huber(Q(s,a), r + γ (1-done) Q_target(s', argmax_a' Q(s',a')))   (double Q)
    p_i   = softmax(Q(s_i, ·) / τ)                         soft argmax             Eq. 19
    PAE_b = mean_i Σ_a p_i(a) · PAE(a),  PAE(a) = #ads(a)/K                          Eq. 20
    L     = L_DQN + λ (PAE_b - PAE_target)^2                                         Eq. 21

The TD part is RLlib's ``DQNTorchLearner`` loss (1-step, uniform weights: offline batches carry
no replay priorities, so ``weights``/``n_step`` default to ones here). The algorithm is RLlib's
DQN with ``training_step`` replaced, for offline data, by minibatches of the logged Parquet
transitions (see ``adray.rl`` for why they are sampled in the driver rather than through Ray Data);
``online=True`` keeps DQN's own sampling in the simulator (``FeedEnv``) with the same learner.
Reward is rebuilt from the logged components with the config's η, so η can be tuned on one dataset.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.dqn import DQN, DQNConfig
from ray.rllib.algorithms.dqn.dqn_learner import QF_PREDS
from ray.rllib.algorithms.dqn.torch.dqn_torch_learner import DQNTorchLearner
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics import (
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    TD_ERROR_KEY,
    TIMERS,
)

from adray import rl
from adray.workload import FitContext, FitResult
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import check_dataset
from workloads.crossdqn.model import CrossDQNModule, module_config
from workloads.crossdqn.sim import FeedEnv, obs_layout

PAE_AUX_KEY = "pae_aux_loss"
PAE_BATCH_KEY = "pae_batch"
MODULE_DIR = "module"
LOGGED = ("obs", "new_obs", "actions", "r_ad", "r_fee", "r_ex", "terminateds")


def pae_aux_loss(q: torch.Tensor, action_pae: torch.Tensor, tau: float, target: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-level PAE constraint: ((mean_i Σ_a softmax(q_i/τ)_a PAE(a)) - target)^2 and PAE_b.

    Args:
        q: (B, A) Q-values; action_pae: (A,) PAE of each action; tau: temperature; target: PAE target.
    """
    probs = torch.softmax(q / tau, dim=-1)  # Eq. 19: (B, A)
    pae_batch = (probs @ action_pae).mean()  # Eq. 20
    return (pae_batch - target) ** 2, pae_batch  # Eq. 21


class CrossDQNLearner(DQNTorchLearner):
    """DQN TD loss + λ·batch-level PAE loss; λ, τ, target from ``learner_config_dict``."""

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        ones = torch.ones_like(batch[Columns.REWARDS], dtype=torch.float32)
        if "weights" not in batch:
            batch["weights"] = ones
        if "n_step" not in batch:
            batch["n_step"] = ones
        td_loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        extra = config.learner_config_dict
        bits = self.module[module_id].unwrapped().net.bits  # (A, K)
        aux, pae_b = pae_aux_loss(fwd_out[QF_PREDS], bits.mean(1), extra["tau"], extra["pae_target"])
        self.metrics.log_dict({PAE_AUX_KEY: aux, PAE_BATCH_KEY: pae_b}, key=module_id, window=1)
        return td_loss + extra["lam"] * aux


class OfflineCrossDQN(DQN):
    """DQN whose ``training_step`` learns from logged transitions (unless ``online``)."""

    def setup(self, config: Any) -> None:
        super().setup(config)
        extra = config.learner_config_dict
        self._online = bool(extra.get("online"))
        self._trained = 0
        if self._online:
            return
        cols = rl.read_transitions(extra["data_path"], LOGGED)
        rewards = cols["r_ad"] + cols["r_fee"] + extra["eta"] * cols["r_ex"]  # Eq. 2 with this η
        self._sampler = rl.TransitionSampler({
            Columns.OBS: cols["obs"].astype(np.float32), Columns.NEXT_OBS: cols["new_obs"].astype(np.float32),
            Columns.ACTIONS: cols["actions"].astype(np.int64), Columns.REWARDS: rewards.astype(np.float32),
            Columns.TERMINATEDS: cols["terminateds"].astype(bool),
        }, seed=int(extra.get("seed", 0)))

    def training_step(self) -> None:
        if self._online:
            return super().training_step()
        extra = self.config.learner_config_dict
        for _ in range(int(extra["updates_per_iteration"])):
            batch = self._sampler.sample(self.config.train_batch_size_per_learner)
            self._trained += len(batch[Columns.REWARDS])
            with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
                results = self.learner_group.update(
                    batch=rl.learner_batch(batch),
                    timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self._trained},  # drives target updates
                )
            for res in results:  # per-sample TD errors are for replay priorities: none offline
                for module_results in res.values():
                    module_results.pop(TD_ERROR_KEY, None)
            self.metrics.aggregate(results, key=LEARNER_RESULTS)
        self.metrics.log_value("offline_transitions_trained", self._trained, reduce="max")


def algorithm_config(cfg: CrossDQNConfig, data_path: Path | None) -> DQNConfig:
    env_config = cfg.to_dict()
    config = (
        DQNConfig(algo_class=OfflineCrossDQN)
        .environment(FeedEnv, env_config=env_config)
        .framework("torch")
        .rl_module(rl_module_spec=RLModuleSpec(module_class=CrossDQNModule,
                                               model_config=module_config(cfg, obs_layout(cfg))))
        .training(
            lr=cfg.lr, gamma=cfg.gamma, train_batch_size_per_learner=cfg.batch_size, double_q=True,
            n_step=1, num_atoms=1, target_network_update_freq=cfg.target_update_freq, tau=1.0,
            td_error_loss_fn="huber", grad_clip=cfg.grad_clip or None,
            num_steps_sampled_before_learning_starts=cfg.batch_size,
        )
        .learners(
            learner_class=CrossDQNLearner,
            learner_config_dict={
                "lam": cfg.lam, "tau": cfg.tau, "pae_target": cfg.pae_target, "eta": cfg.eta, "seed": cfg.seed,
                "updates_per_iteration": cfg.updates_per_iteration, "online": cfg.online,
                "data_path": str(data_path) if data_path else "",
            },
        )
        .debugging(seed=cfg.seed)
    )
    return rl.small_machine(config, offline=not cfg.online)


def train_module(cfg: CrossDQNConfig, data_dir: Path, out_dir: Path, report: Any = lambda m: None,
                 progress: bool = False, validate: bool = True) -> dict[str, float]:
    """Train with RLlib, export the inference module to ``out_dir/module``; returns metrics."""
    from workloads.crossdqn.evaluate import q_policy, rollout

    data_path = None if cfg.online else check_dataset(cfg, data_dir)
    algo = algorithm_config(cfg, data_path).build_algo()
    learner_module = algo.learner_group._learner.module[DEFAULT_MODULE_ID] if algo.learner_group.is_local else None

    def summarize(result: dict[str, Any]) -> dict[str, float]:
        stats = rl.learner_metrics(result)
        out = {k: stats[k] for k in ("qf_loss", "qf_mean", PAE_AUX_KEY, PAE_BATCH_KEY) if k in stats}
        if validate and learner_module is not None:  # quick greedy rollout on held-out requests
            with torch.no_grad():
                val = rollout(cfg, q_policy(learner_module.unwrapped().net), cfg.eval_requests // 4, seed=7_777_777)
            out.update({f"val_{k}": v for k, v in val.items()})
        return out

    try:
        start = time.perf_counter()
        with torch.enable_grad():  # callers may evaluate under no_grad; training must not inherit it
            history = rl.train_iterations(algo, cfg.iterations, summarize, report, progress)
        train_s = time.perf_counter() - start
        rl.export_module(algo, out_dir / MODULE_DIR)
    finally:
        algo.stop()
    transitions = cfg.iterations * cfg.updates_per_iteration * cfg.batch_size
    metrics = dict(history[-1])
    metrics.update({
        "iter_time_s": float(np.mean([h["iter_time_s"] for h in history])),
        "train_time_s": train_s,
        "train_transitions_per_s": transitions / sum(h["iter_time_s"] for h in history),
    })
    return metrics


def fit(cfg: CrossDQNConfig, ctx: FitContext) -> FitResult:
    """The platform's entry point: offline (or online) RLlib training.

    The checkpoint is ``ctx.run_dir`` itself (``module/`` + the config and meta the platform adds):
    the Tune harness publishes a fit trial's best model from ``<trial>/fit/config.yaml``.
    """
    out = ctx.run_dir
    out.mkdir(parents=True, exist_ok=True)
    metrics = train_module(cfg, ctx.data_dir, out, ctx.report, ctx.progress)
    meta = {"obs_layout": obs_layout(cfg), "module_config": module_config(cfg, obs_layout(cfg)),
            "module_dir": MODULE_DIR}
    return FitResult(metrics=metrics, checkpoint_dir=out, meta=meta)


def load_model(path: Path, cfg: CrossDQNConfig, meta: dict[str, Any]) -> Any:
    """The inference RLModule alone (for Serve and evaluation)."""
    return rl.load_module(Path(path) / meta.get("module_dir", MODULE_DIR))
