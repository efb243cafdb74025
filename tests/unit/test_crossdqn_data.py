"""Logged transitions (Parquet) and the generic RLlib data helpers of adray.rl; baseline policies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adray import rl
from adray.data import DataError, read_dataset
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import check_dataset, logging_policy, make_data
from workloads.crossdqn.policies import fixed_policy, fixed_slots, gea_policy, random_policy
from workloads.crossdqn.rollout import rollout
from workloads.crossdqn.sim import action_bits, obs_layout

CFG = CrossDQNConfig(n_requests=200, seed=4)


def test_logged_transitions(tmp_path: Path) -> None:
    make_data(CFG, tmp_path / "d")
    df = read_dataset(tmp_path / "d").read("train")
    cols = rl.read_transitions(check_dataset(CFG, tmp_path / "d"), ["obs", "new_obs", "actions", "terminateds"])
    assert cols["obs"].shape == (len(df), obs_layout(CFG.sim)["obs_dim"]) and cols["obs"].dtype == np.float32
    np.testing.assert_allclose(df.rewards, df.r_ad + df.r_fee + CFG.sim.eta * df.r_ex, rtol=1e-5)
    assert ((df.action_prob > 0) & (df.action_prob <= 1)).all()
    # one terminal transition per request, the last of its episode; next obs = following obs
    assert df.groupby("eps_id").terminateds.sum().eq(1).all() and df.eps_id.nunique() == CFG.n_requests
    same = (df.eps_id.to_numpy()[1:] == df.eps_id.to_numpy()[:-1])
    np.testing.assert_array_equal(cols["new_obs"][:-1][same], cols["obs"][1:][same])
    first = df[df.t == 0]  # first screens: no survivorship, ads not yet run out
    np.testing.assert_allclose(first.pae, action_bits(CFG.sim.slots)[first.actions].mean(1), rtol=1e-6)
    assert abs(first.pae.mean() - CFG.log_pae) < 0.05  # logging policy explores around its target PAE
    with pytest.raises(DataError, match="layout"):
        check_dataset(CFG.override({"sim.hist_len": 3}), tmp_path / "d")
    meta = read_dataset(tmp_path / "d").meta  # the manifest says which simulator wrote the logs
    assert meta["sim"] == CFG.sim.to_dict() and meta["obs_layout"] == obs_layout(CFG.sim)
    assert meta["num_actions"] == 2**CFG.sim.slots


def test_logging_propensity_is_the_probability_of_the_action() -> None:
    bits = action_bits(3)
    p = np.full(40000, 0.3)
    actions, prob = logging_policy(p, bits, np.random.default_rng(0))
    expected = np.array([0.3 ** b.sum() * 0.7 ** (3 - b.sum()) for b in bits])
    np.testing.assert_allclose(prob, expected[actions])
    assert expected.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(np.bincount(actions, minlength=8) / len(p), expected, atol=0.01)


def test_read_transitions_errors(tmp_path: Path) -> None:
    pd.DataFrame({"obs": [np.zeros(2), np.zeros(3)], "a": [1, 2]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="unequal"):
        rl.read_transitions(tmp_path / "x.parquet", ["obs"])
    with pytest.raises(DataError, match="cannot read"):
        rl.read_transitions(tmp_path / "x.parquet", ["missing"])
    with pytest.raises(DataError, match="equal length"):
        rl.TransitionSampler({"a": np.zeros(3), "b": np.zeros(2)})


def test_baselines() -> None:
    assert fixed_slots(5, 0.4) == [1, 3] and fixed_slots(5, 0.6) == [0, 2, 4] and fixed_slots(5, 0.0) == []
    cfg = CrossDQNConfig()
    fixed = rollout(cfg, fixed_policy(cfg), 300, seed=1)
    assert 0.35 < fixed["pae"] <= 0.4  # 2 ads per screen; below 0.4 only once the 12 ads run out
    gea = gea_policy(cfg.sim)
    paes = [rollout(cfg, gea, 300, seed=1, mu=mu)["pae"] for mu in (-0.2, 0.0, 0.2)]
    assert paes[0] > paes[1] > paes[2]  # the knob used for PAE matching is monotone
    # the arrangement signal: the fixed spaced slots beat adjacent ads at the top at equal PAE
    adjacent = rollout(cfg, lambda obs, mu=0.0: np.full(len(obs), 0b00011), 300, seed=1)
    assert fixed["reward"] > adjacent["reward"]


def test_random_baseline_shows_ads_at_the_target_density_and_is_seeded() -> None:
    cfg = CrossDQNConfig()
    obs = np.zeros((40000, 3), np.float32)
    acts = random_policy(cfg.sim.slots, 0.4, seed=5)(obs, 0.7)  # mu is ignored: the baseline is not matched
    bits = (acts[:, None] >> np.arange(cfg.sim.slots)) & 1
    np.testing.assert_allclose(bits.mean(0), 0.4, atol=0.01)  # every slot an ad with probability 0.4
    np.testing.assert_allclose(bits[:, 0] @ bits[:, 1] / len(bits), 0.16, atol=0.01)  # slots independent
    np.testing.assert_array_equal(acts, random_policy(cfg.sim.slots, 0.4, seed=5)(obs))
    runs = [rollout(cfg, random_policy(cfg.sim.slots, cfg.pae_target, seed=5), 300, seed=1) for _ in range(2)]
    assert runs[0] == runs[1] and abs(runs[0]["pae"] - cfg.pae_target) < 0.05  # the target, until the ads run out
