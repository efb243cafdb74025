"""Cross DQN training: DQN learner + batch-level PAE loss, an offline DQN, and ``fit``.

Loss (Eq. 18-21), per minibatch of logged transitions (s, a, r, s', done):

    L_DQN = mean Huber(Q(s,a), r + γ (1-done) Q_target(s', argmax_a' Q(s',a')))   (double Q)
    p_i   = softmax(Q(s_i, ·) / τ)                         soft argmax             Eq. 19
    p̂_i   = onehot(argmax_a Q(s_i, a)) + p_i - sg(p_i)     straight-through (ours, optional)
    PAE_b = mean_i Σ_a p̂_i(a) · PAE(a),  PAE(a) = #ads(a)/K                          Eq. 20
    L     = L_DQN + λ (PAE_b - PAE_target)^2                                         Eq. 21
          + α (logsumexp_a Q(s,a) - Q(s,a_logged))        CQL(H) penalty (ours; cql_alpha, default 0)
    (pae_mode="offset": Q in Eq. 19 and the argmax is replaced by sg(Q) - β·PAE(a); see below)

With ``pae_estimator="soft"`` p̂ = p (the paper): the loss holds the *softmax* policy's PAE at the
target, and the served greedy policy drifted ~0.1 below it. ``"straight_through"`` (default) puts
the greedy policy's PAE in the loss's value and takes the gradient through the softmax (sg =
stop-gradient), so the constraint holds for the policy that is served.

Where the PAE loss acts (``pae_mode``): ``"q"`` (the paper, default) applies it to Q itself, i.e.
to the whole network. Its gradient scales with λ/τ: at the paper's λ = 2, τ = 0.003 (~700 times
a TD gradient) it swamped TD under Adam -- Q's spread over actions collapsed to 0.001 and the
policy stopped personalising; at λ = τ = 0.01 (default) the two balance and Q stays informative.
``"offset"`` applies it to the served scores ``sg(Q(s,a)) - β·PAE(a)`` only, so it trains one
scalar β (a learned Lagrange multiplier of the constraint) and TD alone shapes Q. Either way the
loss holds PAE on the *logged* states; the policy's own states differ, so its realised PAE can
miss the target. ``calibrate_pae`` then shifts β (0 in q mode) after training by bisection on
simulated calibration requests (not the evaluation's) so the served greedy policy's realised PAE
equals the target.

The TD part is RLlib's ``DQNTorchLearner`` loss (1-step, uniform weights: offline batches carry
no replay priorities, so ``weights``/``n_step`` default to ones here). The algorithm is RLlib's
DQN with ``training_step`` replaced, for offline data, by minibatches of the logged Parquet
transitions (see ``adray.rl`` for why they are sampled in the driver rather than through Ray Data):
one ``learner_group.update`` call takes many minibatches at once (RLlib's ``minibatch_size``
split), cut so that each call covers at most ``target_update_freq`` transitions -- the learner
syncs the target network after a call, so syncs still happen by count;
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
from adray.runtime import torch_threads
from adray.workload import FitContext, FitResult
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import check_dataset
from workloads.crossdqn.model import CrossDQNModule, module_config
from workloads.crossdqn.sim import FeedEnv, obs_layout

PAE_AUX_KEY = "pae_aux_loss"
PAE_BATCH_KEY = "pae_batch"
CQL_KEY = "cql_loss"
MODULE_DIR = "module"
VALIDATION_SEED = 7_777_777
LOGGED = ("obs", "new_obs", "actions", "r_ad", "r_fee", "r_ex", "terminateds")


def pae_aux_loss(q: torch.Tensor, action_pae: torch.Tensor, tau: float, target: float,
                 straight_through: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-level PAE constraint: ((mean_i Σ_a p_i(a) PAE(a)) - target)^2 and PAE_b.

    Args:
        q: (B, A) Q-values; action_pae: (A,) PAE of each action; tau: temperature; target: PAE target.
        straight_through: value from the greedy argmax, gradient through softmax(q/τ).
    """
    probs = torch.softmax(q / tau, dim=-1)  # Eq. 19: (B, A)
    if straight_through:
        greedy = torch.nn.functional.one_hot(q.argmax(dim=-1), q.shape[-1]).to(probs.dtype)  # (B, A)
        probs = greedy + probs - probs.detach()
    pae_batch = (probs @ action_pae).mean()  # Eq. 20
    return (pae_batch - target) ** 2, pae_batch  # Eq. 21


def cql_penalty(q: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Conservative Q-learning (CQL(H), Kumar et al. 2020): mean_i logsumexp_a Q(s_i,a) - Q(s_i,a_i).

    Pushes down Q on actions the logs do not show relative to the logged one (ours; not the paper's).
    Args: q (B, A) Q-values; actions (B,) logged action indices.
    """
    return (torch.logsumexp(q, dim=-1) - q.gather(1, actions.long()[:, None]).squeeze(1)).mean()


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
        net = self.module[module_id].unwrapped().net
        q = fwd_out[QF_PREDS]  # (B, A) TD estimate
        if extra["pae_mode"] == "offset":  # the constraint trains β only: served = sg(Q) - β·PAE(a)
            q = q.detach() - net.pae_offset * net.action_pae
        aux, pae_b = pae_aux_loss(q, net.action_pae, extra["tau"], extra["pae_target"],
                                  extra["pae_estimator"] == "straight_through")
        loss = td_loss + extra["lam"] * aux
        logged = {PAE_AUX_KEY: aux, PAE_BATCH_KEY: pae_b}
        if extra.get("cql_alpha", 0.0) > 0:
            cql = cql_penalty(fwd_out[QF_PREDS], batch[Columns.ACTIONS])
            loss = loss + extra["cql_alpha"] * cql
            logged[CQL_KEY] = cql
        self.metrics.log_dict(logged, key=module_id, window=1)
        return loss


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
        extra, size = self.config.learner_config_dict, self.config.train_batch_size_per_learner
        for n_mb in rl.split_updates(int(extra["updates_per_iteration"]), size,
                                     self.config.target_network_update_freq):
            batch = self._sampler.sample(n_mb * size)  # n_mb minibatches in one learner call
            self._trained += n_mb * size
            with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
                results = self.learner_group.update(
                    batch=rl.learner_batch(batch), minibatch_size=size, num_epochs=1,
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
                "cql_alpha": cfg.cql_alpha,
                "pae_estimator": cfg.pae_estimator, "pae_mode": cfg.pae_mode,
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
    from workloads.crossdqn.evaluate import match_pae, q_policy, rollout

    data_path = None if cfg.online else check_dataset(cfg, data_dir)
    algo = algorithm_config(cfg, data_path).build_algo()
    learner_module = algo.learner_group._learner.module[DEFAULT_MODULE_ID] if algo.learner_group.is_local else None

    def validation() -> dict[str, float]:
        """Greedy rollout on held-out requests as served (val_*), and at the PAE target
        (val_*_matched: mu by a 10-step bisection on the calibration requests), so that trials with
        different λ, τ are compared at equal PAE (the tune objective ``val_reward_matched``)."""
        n = max(50, cfg.eval_requests // 4)
        with torch.no_grad():
            policy = q_policy(learner_module.unwrapped().net)
            val = rollout(cfg, policy, n, seed=VALIDATION_SEED)
            mu = match_pae(cfg, policy, cfg.pae_target, n, steps=10)
            matched = rollout(cfg, policy, n, seed=VALIDATION_SEED, mu=mu)
        return {**{f"val_{k}": v for k, v in val.items()},
                "val_reward_matched": matched["reward"], "val_pae_matched": matched["pae"]}

    def summarize(result: dict[str, Any]) -> dict[str, float]:
        stats = rl.learner_metrics(result)
        out = {k: stats[k] for k in ("qf_loss", "qf_mean", PAE_AUX_KEY, PAE_BATCH_KEY, CQL_KEY) if k in stats}
        if validate and learner_module is not None:
            out.update(validation())
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
            if cfg.calibrate_pae:  # shift β so the served greedy policy's realised PAE = target
                with torch.no_grad():
                    net.pae_offset += match_pae(cfg, q_policy(net), cfg.pae_target, max(100, cfg.eval_requests // 2))
            offsets["pae_offset"] = net.pae_offset.item()
            if validate and cfg.calibrate_pae:
                offsets.update(validation())  # the exported (calibrated) module's validation
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
