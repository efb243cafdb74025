"""Cross DQN loss and algorithm on RLlib: DQN learner + batch-level PAE loss, an offline DQN.

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
miss the target. ``calibrate_pae`` then shifts β (0 in q mode) after training by bisection so the
served greedy policy's ad share on the held-out logged screens equals the target (train.py,
selection.py; the simulator is not asked).

The TD part is RLlib's ``DQNTorchLearner`` loss (1-step, uniform weights: offline batches carry
no replay priorities, so ``weights``/``n_step`` default to ones here). The algorithm is RLlib's
DQN with ``training_step`` replaced, for offline data, by minibatches of the logged Parquet
transitions, streamed from the split's row groups through a bounded shuffle buffer
(``adray.rl.StreamSampler``: memory ``buffer_rows``, whatever the dataset's size; see ``adray.rl``
for why not RLlib's OfflineData):
one ``learner_group.update`` call takes many minibatches at once (RLlib's ``minibatch_size``
split), cut so that each call covers at most ``target_update_freq`` transitions -- the learner
syncs the target network after a call, so syncs still happen by count;
``online=True`` keeps DQN's own sampling in the simulator (``FeedEnv``) with the same learner.
Reward is rebuilt from the logged components with the config's η (``sim.eta``), so η can be tuned
on one dataset. The episodes that selection.py holds out (``val_fraction``, ``test_fraction``) are never sampled. What the learner and the algorithm read of the config is one frozen
:class:`LearnerSettings` in ``learner_config_dict`` (key :data:`SETTINGS_KEY`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from ray.rllib.algorithms.dqn import DQN, DQNConfig
from ray.rllib.algorithms.dqn.dqn_learner import QF_PREDS
from ray.rllib.algorithms.dqn.torch.dqn_torch_learner import DQNTorchLearner
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
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.model import CrossDQNModule, module_config
from workloads.crossdqn.selection import episode_ids, held_out_ids
from workloads.crossdqn.sim import FeedEnv, obs_layout

PAE_AUX_KEY = "pae_aux_loss"
PAE_BATCH_KEY = "pae_batch"
CQL_KEY = "cql_loss"
SETTINGS_KEY = "crossdqn"
"""The key of :class:`LearnerSettings` in ``AlgorithmConfig.learner_config_dict``."""
LOGGED = ("obs", "new_obs", "actions", "r_ad", "r_fee", "r_ex", "terminateds")


@dataclasses.dataclass(frozen=True)
class LearnerSettings:
    """What :class:`CrossDQNLearner` and :class:`OfflineCrossDQN` read (fields of CrossDQNConfig)."""

    lam: float
    tau: float
    pae_target: float
    eta: float
    seed: int
    cql_alpha: float
    pae_estimator: Literal["soft", "straight_through"]
    pae_mode: Literal["q", "offset"]
    updates_per_iteration: int
    val_fraction: float
    """Share of logged episodes held out (selection.py); the learner never samples them."""
    test_fraction: float
    """Share of logged episodes held out as test logs (selection.split_masks); never sampled either."""
    online: bool
    data_path: str
    """The logged split's first Parquet file ("" when ``online``; messages)."""
    held_out_episodes: int = 50_000
    buffer_rows: int = rl.BUFFER_ROWS
    data_files: tuple[str, ...] = ()
    """Every Parquet file of the logged split (``Dataset.split_files``), in order."""
    data_fs: Any = None
    """Their ``pyarrow.fs`` filesystem (None: local)."""

    @classmethod
    def of(cls, cfg: CrossDQNConfig, data: Path | rl.Files | None) -> LearnerSettings:
        fs, paths = rl.as_files(data) if data is not None else (None, [])
        return cls(lam=cfg.lam, tau=cfg.tau, pae_target=cfg.pae_target, eta=cfg.sim.eta, seed=cfg.seed,
                   cql_alpha=cfg.cql_alpha, pae_estimator=cfg.pae_estimator, pae_mode=cfg.pae_mode,
                   updates_per_iteration=cfg.updates_per_iteration, val_fraction=cfg.val_fraction,
                   test_fraction=cfg.test_fraction,
                   online=cfg.online,
                   data_path=str(data) if isinstance(data, (str, Path)) else (paths[0] if paths else ""),
                   held_out_episodes=cfg.held_out_episodes, buffer_rows=cfg.buffer_rows,
                   data_files=tuple(paths), data_fs=fs)

    @property
    def files(self) -> rl.Files:
        import pyarrow.fs as pafs

        return (self.data_fs or pafs.LocalFileSystem()), list(self.data_files or [self.data_path])


def settings_of(config: Any) -> LearnerSettings:
    """The :class:`LearnerSettings` of an AlgorithmConfig built by :func:`algorithm_config`."""
    return config.learner_config_dict[SETTINGS_KEY]


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
    """DQN TD loss + λ·batch-level PAE loss (+ α·CQL); settings: :class:`LearnerSettings`."""

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        ones = torch.ones_like(batch[Columns.REWARDS], dtype=torch.float32)
        if "weights" not in batch:
            batch["weights"] = ones
        if "n_step" not in batch:
            batch["n_step"] = ones
        td_loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        s = settings_of(config)
        net = self.module[module_id].unwrapped().net
        q = fwd_out[QF_PREDS]  # (B, A) TD estimate
        if s.pae_mode == "offset":  # the constraint trains β only: served = sg(Q) - β·PAE(a)
            q = q.detach() - net.pae_offset * net.action_pae
        aux, pae_b = pae_aux_loss(q, net.action_pae, s.tau, s.pae_target, s.pae_estimator == "straight_through")
        loss = td_loss + s.lam * aux
        logged = {PAE_AUX_KEY: aux, PAE_BATCH_KEY: pae_b}
        if s.cql_alpha > 0:
            cql = cql_penalty(fwd_out[QF_PREDS], batch[Columns.ACTIONS])
            loss = loss + s.cql_alpha * cql
            logged[CQL_KEY] = cql
        self.metrics.log_dict(logged, key=module_id, window=1)
        return loss


class OfflineCrossDQN(DQN):
    """DQN whose ``training_step`` learns from logged transitions (unless ``online``)."""

    def setup(self, config: Any) -> None:
        super().setup(config)
        s = settings_of(config)
        self._online = s.online
        self._trained = 0
        if self._online:
            return
        val, test = held_out_ids(episode_ids(s.files), s.val_fraction, s.test_fraction)
        held = np.union1d(val, test)  # held-out episodes: selection and the test report only

        def train_rows(b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # one block of the logs
            keep = ~np.isin(b["eps_id"], held)
            rewards = b["r_ad"][keep] + b["r_fee"][keep] + s.eta * b["r_ex"][keep]  # Eq. 2 with this η
            return {Columns.OBS: b["obs"][keep].astype(np.float32),
                    Columns.NEXT_OBS: b["new_obs"][keep].astype(np.float32),
                    Columns.ACTIONS: b["actions"][keep].astype(np.int64),
                    Columns.REWARDS: rewards.astype(np.float32),
                    Columns.TERMINATEDS: b["terminateds"][keep].astype(bool)}

        self._sampler = rl.transition_sampler(s.files, (*LOGGED, "eps_id"), train_rows, seed=s.seed,
                                              buffer_rows=s.buffer_rows)

    def cleanup(self) -> None:
        if hasattr(getattr(self, "_sampler", None), "close"):
            self._sampler.close()  # a StreamSampler's read-ahead thread
        super().cleanup()

    def training_step(self) -> None:
        if self._online:
            return super().training_step()
        s, size = settings_of(self.config), self.config.train_batch_size_per_learner
        for n_mb in rl.split_updates(s.updates_per_iteration, size, self.config.target_network_update_freq):
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


def algorithm_config(cfg: CrossDQNConfig, data: Path | rl.Files | None, use_gpu: bool = False) -> DQNConfig:
    """The RLlib config: everything in the driver (``adray.rl.small_machine``); with ``use_gpu`` the
    local learner (``num_learners=0``) holds one GPU (RLlib's ``get_device``: ``local_gpu_idx`` in
    the driver, the GPU Ray assigned inside a Ray worker such as a Tune trial)."""
    config = (
        DQNConfig(algo_class=OfflineCrossDQN)
        .environment(FeedEnv, env_config=cfg.sim.to_dict())
        .framework("torch")
        .rl_module(rl_module_spec=RLModuleSpec(module_class=CrossDQNModule,
                                               model_config=module_config(cfg, obs_layout(cfg.sim))))
        .training(
            lr=cfg.lr, gamma=cfg.gamma, train_batch_size_per_learner=cfg.batch_size, double_q=True,
            n_step=1, num_atoms=1, target_network_update_freq=cfg.target_update_freq, tau=1.0,
            td_error_loss_fn="huber", grad_clip=cfg.grad_clip or None,
            num_steps_sampled_before_learning_starts=cfg.batch_size,
        )
        .learners(learner_class=CrossDQNLearner,
                  learner_config_dict={SETTINGS_KEY: LearnerSettings.of(cfg, data)})
        .debugging(seed=cfg.seed)
    )
    config = rl.small_machine(config, offline=not cfg.online)
    if use_gpu:
        config = config.learners(num_learners=0, num_gpus_per_learner=1)
    return config
