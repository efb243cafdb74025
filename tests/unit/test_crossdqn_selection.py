"""Cross DQN model selection from held-out logs (no Ray, no simulator in what is tested): the
episode split the learner and the objective share, β calibration on logged screens, the WDR
objective against hand-made logs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.helpers import crossdqn_module
from workloads.crossdqn.config import CrossDQNConfig, FeedSimConfig
from workloads.crossdqn.selection import HeldOut, greedy_actions, held_out_mask, match_offset, split_masks
from workloads.crossdqn.sim import action_bits, obs_layout

CFG = CrossDQNConfig(sim=FeedSimConfig(slots=3, n_ads=3, n_organic=3, hist_len=2, item_dim=2), embed_dim=4,
                     hidden=8, use_mcau=False, val_fraction=0.25)


def test_held_out_split_is_whole_episodes_fixed_and_never_empty() -> None:
    eps = np.repeat(np.arange(100), 3)  # 100 episodes of 3 screens
    mask = held_out_mask(eps, 0.2)
    assert len(np.unique(eps[mask])) == 20  # whole episodes
    assert not set(eps[mask]) & set(eps[~mask])
    assert (held_out_mask(eps[::-1], 0.2)[::-1] == mask).all()  # by episode id, not by row order
    assert (held_out_mask(eps, 0.2) == mask).all()  # a fixed draw: every trial gets the same split
    assert held_out_mask(np.arange(2), 0.01).sum() == 1 and held_out_mask(np.arange(2), 0.99).sum() == 1


def test_test_split_is_whole_episodes_disjoint_from_validation_and_fixed() -> None:
    eps = np.repeat(np.arange(100), 3)
    val, test = split_masks(eps, 0.2, 0.1)
    assert (val == held_out_mask(eps, 0.2)).all()  # the validation draw is unchanged by the test split
    assert len(np.unique(eps[test])) == 10 and not (val & test).any()
    assert not set(eps[test]) & set(eps[~test])  # whole episodes
    assert all((a == b).all() for a, b in zip(split_masks(eps[::-1], 0.2, 0.1), (val[::-1], test[::-1])))
    v, t = split_masks(np.arange(3), 0.3, 0.3)  # one episode each, one left to train on
    assert v.sum() == 1 and t.sum() == 1
    assert split_masks(np.arange(2), 0.5, 0.4)[1].sum() == 0  # nothing left to hold out as test


def test_match_offset_brings_the_greedy_ad_share_to_the_target() -> None:
    rng = np.random.default_rng(0)
    pae = action_bits(5).mean(1)
    scores = rng.normal(size=(4000, 32)) + 3.0 * pae  # an ad-hungry policy: share ~0.76 at mu 0
    assert pae[greedy_actions(scores, pae, 0.0)].mean() > 0.7
    for target in (0.2, 0.4, 0.6):
        mu = match_offset(scores, pae, target)
        assert pae[greedy_actions(scores, pae, mu)].mean() == pytest.approx(target, abs=0.01)


def _logs(path, obs: np.ndarray, actions: np.ndarray, prob: np.ndarray, rewards: np.ndarray, eps: np.ndarray,
          t: np.ndarray) -> None:
    n = len(actions)
    pq.write_table(pa.Table.from_pandas(pd.DataFrame({
        "obs": list(obs), "new_obs": list(obs), "actions": actions, "r_ad": rewards, "r_fee": np.zeros(n),
        "r_ex": np.zeros(n), "terminateds": t == t.max(), "action_prob": prob, "eps_id": eps, "t": t})), path)


def test_objective_on_logs_of_the_policy_itself_is_its_mean_reward_per_request(tmp_path) -> None:
    """Logs whose actions are the served policy's own at the target (propensity 1 each: an
    on-policy log): WDR is the mean over episodes of the summed rewards, whatever Q says."""
    mod = crossdqn_module(CFG)
    n_eps, steps = 400, 2
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(n_eps * steps, obs_layout(CFG.sim)["obs_dim"])).astype(np.float32)
    eps, t = np.repeat(np.arange(n_eps), steps), np.tile(np.arange(steps), n_eps)
    held = held_out_mask(eps, CFG.val_fraction)
    with torch.no_grad():
        served = mod.net(torch.as_tensor(obs)).numpy().astype(np.float64)
    pae = mod.net.action_pae.numpy().astype(np.float64)
    mu = match_offset(served[held], pae, CFG.pae_target)
    actions = greedy_actions(served, pae, mu)
    rewards = rng.exponential(size=len(actions))
    _logs(tmp_path / "train.parquet", obs, actions, np.ones(len(actions)), rewards, eps, t)
    m = HeldOut.load(CFG, tmp_path / "train.parquet").metrics(mod.net, CFG.pae_target)
    assert m["agree"] == 1.0 and m["mu_logged"] == pytest.approx(mu)
    per_request = pd.Series(rewards[held]).groupby(eps[held]).sum()
    assert m["reward_wdr"] == pytest.approx(per_request.mean(), rel=1e-9)
    assert m["reward_wdr_ess"] == pytest.approx(held.sum() / steps)


def test_objective_reweights_an_exploratory_log(tmp_path) -> None:
    """One-screen episodes logged uniformly at random (propensity 1/A): WDR is the model's value
    v̂ = Q(s, π(s)) on every row, corrected by the mean residual r - Q(s, a) of the rows where the
    policy agrees with the log (self-normalised weights; the other rows weigh 0)."""
    mod = crossdqn_module(CFG)
    n = 4000
    rng = np.random.default_rng(2)
    obs = rng.normal(size=(n, obs_layout(CFG.sim)["obs_dim"])).astype(np.float32)
    actions = rng.integers(0, CFG.num_actions, n)
    rewards = rng.exponential(size=n)
    _logs(tmp_path / "train.parquet", obs, actions, np.full(n, 1 / CFG.num_actions), rewards, np.arange(n),
          np.zeros(n, np.int64))
    held = HeldOut.load(CFG, tmp_path / "train.parquet")
    m = held.metrics(mod.net, CFG.pae_target)
    with torch.no_grad():
        served = mod.net(torch.as_tensor(held.obs)).numpy().astype(np.float64)
        q = mod.net.q_values(torch.as_tensor(held.obs)).numpy().astype(np.float64)
    pae = mod.net.action_pae.numpy().astype(np.float64)
    chosen = greedy_actions(served, pae, m["mu_logged"])
    agree = chosen == held.actions
    assert m["agree"] == pytest.approx(agree.mean()) and 0 < agree.sum() < len(agree)
    v = q[np.arange(len(q)), chosen]
    assert m["reward_wdr"] == pytest.approx(v.mean() + (held.rewards - v)[agree].mean(), rel=1e-9)
