"""DRL-PUT's gate inputs (workloads/drlput/gate.py) on hand-made logs: the serving version's reward as
the one yardstick, its exploration as the log's support, propensities it cannot have logged refused.
Policies are tiny torch modules whose greedy action is a function of the hour (no Ray)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from adray.data import DataError
from adray.promote import decide
from adray.workload import GateMismatch, GateModel
from workloads.drlput import columns as C
from workloads.drlput.actions import ActionSpace
from workloads.drlput.config import PARAMS, DRLPUTConfig
from workloads.drlput.gate import gate_data
from workloads.drlput.reward import reward

CFG = DRLPUTConfig()
SPACE = ActionSpace(CFG.action)
HOUR = C.STATE.index("hour")


class HourPolicy(torch.nn.Module):
    """Greedy action = table[hour]: logits 10 there, 0 elsewhere."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = torch.as_tensor(table, dtype=torch.long)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(obs), SPACE.size)
        out[torch.arange(len(obs)), self.table[obs[:, HOUR].long()]] = 10.0
        return out * self.scale


def model(table: np.ndarray, ref: str, **overrides: object) -> GateModel:
    return GateModel(HourPolicy(table), CFG.override(overrides) if overrides else CFG, {}, ref)


def log(serving: GateModel, n: int = 600, seed: int = 0) -> pa.Table:
    """n requests decided by ``serving``'s rule (ε-greedy with its serve_epsilon), outcomes joined."""
    rng = np.random.default_rng(seed)
    eps = serving.cfg.serve_epsilon
    state = {c: rng.integers(0, card, n) for c, card in C.CAT_FEATURES.items()}
    state.update({c: rng.uniform(0, 0.5, n) for c in C.NUM_FEATURES})
    greedy = serving.model.table.numpy()[state["hour"]]
    explore = rng.random(n) < eps
    action = np.where(explore, rng.integers(0, SPACE.size, n), greedy)
    prop = (1 - eps) * (action == greedy) + eps / SPACE.size
    df = pd.DataFrame({**state, C.ACTION: action, C.PROPENSITY: prop, C.POLICY_ID: serving.ref,
                       **{p: SPACE.values[action, PARAMS.index(p)] for p in C.PARAM_COLUMNS},
                       C.CAMPAIGN: rng.integers(-1, 3, n)})
    click = rng.random(n) < 0.3
    df[C.CLICK] = click.astype(float)
    df[C.LONG_CLICK] = (click & (rng.random(n) < 0.5)).astype(float)
    df[C.CONV] = (click & (rng.random(n) < 0.2)).astype(float)
    df[C.REVENUE] = np.where(df[C.CAMPAIGN] >= 0, rng.uniform(0, 2, n) * df[C.CLICK], 0.0)
    return pa.Table.from_pandas(df, preserve_index=False)


TABLE_A = np.arange(24) % SPACE.size
TABLE_B = (np.arange(24) + 7) % SPACE.size  # differs on every hour


def test_same_policy_on_an_exploring_log() -> None:
    serving = model(TABLE_A, "drlput@v0001", serve_epsilon=0.3)
    data = gate_data(model(TABLE_A, "drlput@v0002", serve_epsilon=0.3), serving, log(serving))
    assert (data.unsupported == 0).all() and data.reward_floor == 0.0
    np.testing.assert_allclose(data.target_prob, data.logging_prob)  # the same rule: every weight 1
    assert decide(data.rewards, data.target_prob, data.logging_prob, data.unsupported).decision == "promote"


def test_rewards_are_the_serving_versions_definition_and_another_is_refused_by_name() -> None:
    serving = model(TABLE_A, "drlput@v0001", serve_epsilon=0.3)
    rows = log(serving)
    data = gate_data(model(TABLE_B, "drlput@v0002", serve_epsilon=0.3), serving, rows)
    df = rows.to_pandas()
    expected = reward({k: df[k].to_numpy(float) for k in (C.CAMPAIGN, C.REVENUE, C.CLICK, C.LONG_CLICK, C.CONV)},
                      CFG.reward)
    np.testing.assert_allclose(data.rewards, expected)
    with pytest.raises(GateMismatch, match=r"reward\.variant: candidate 'R1', serving 'R0'"):
        gate_data(model(TABLE_B, "drlput@v0002", serve_epsilon=0.3, reward={"variant": "R1"}), serving, rows)


def test_a_deterministic_serving_log_cannot_value_a_candidate_that_decides_differently() -> None:
    serving = model(TABLE_A, "drlput@v0001")  # serve_epsilon 0: propensity 1 everywhere
    rows = log(serving)
    data = gate_data(model(TABLE_B, "drlput@v0002"), serving, rows)
    assert data.unsupported == pytest.approx(np.ones(600))
    g = decide(data.rewards, data.target_prob, data.logging_prob, data.unsupported, advice=data.advice)
    assert g.decision == "cannot_value" and "100.0%" in g.reason
    assert "serve_epsilon" in g.reason and "drlput@v0001" in g.reason  # what to change


def test_propensities_the_serving_rule_cannot_give_are_refused() -> None:
    serving = model(TABLE_A, "drlput@v0001", serve_epsilon=0.3)
    rows = log(serving)
    with pytest.raises(DataError, match=r"serve_epsilon=0.1 over 125 actions\) cannot give: it gives 0.9008, 0.0008"):
        gate_data(model(TABLE_A, "drlput@v0002"), model(TABLE_A, "drlput@v0001", serve_epsilon=0.1), rows)
