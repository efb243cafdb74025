"""Off-policy estimates of Cross DQN policies from the exploratory logs, against simulator truth."""

from __future__ import annotations

import pytest

from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import simulate_logs
from workloads.crossdqn.evaluate import off_policy_estimates
from workloads.crossdqn.policies import fixed_policy
from workloads.crossdqn.rollout import rollout

CFG = CrossDQNConfig()


def test_rollout_return_is_the_discounted_reward() -> None:
    undiscounted = rollout(CFG.override({"gamma": 1.0}), fixed_policy(CFG), 300, seed=5)
    assert undiscounted["return"] == pytest.approx(undiscounted["reward"], rel=1e-9)
    discounted = rollout(CFG, fixed_policy(CFG), 300, seed=5)
    assert discounted["first_screen"] < discounted["return"] < discounted["reward"]


def test_first_screen_estimate_of_a_fixed_policy_matches_its_rollout() -> None:
    logs = simulate_logs(CFG, 4000, seed=321)
    est = off_policy_estimates(CFG, logs, fixed_policy(CFG))
    truth = rollout(CFG, fixed_policy(CFG), 4000, seed=17)["first_screen"]
    for name in ("ips_first", "snips_first"):
        e = est[name]
        assert abs(e["value"] - truth) < 3 * e["std_err"] + 0.02, (name, e, truth)
        assert e["ess"] > 30  # ~1 in 30 logged first screens shows Fixed's pattern
    assert set(est) >= {"pdis", "wpdis", "dr", "wdr"}
    assert est["dr"] == est["pdis"]  # no model: q̂ = v̂ = 0
