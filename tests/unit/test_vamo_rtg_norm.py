"""VAMO's return-to-go counted per unit of capacity (``rtg_norm: capacity``): the windows divide each
trajectory's return by its budget / CPA constraint, the policy rebuilds the same number from a
request's budget, and a request without the budget is refused by name."""

from __future__ import annotations

import types

import numpy as np
import pytest

from workloads.vamo.batches import rtg_unit, window_arrays
from workloads.vamo.config import STATE_DIM, VamoConfig
from workloads.vamo.policy import rtg_start, window
from workloads.vamo.policy import rtg_unit as policy_unit


def _arrays() -> dict[str, np.ndarray]:
    m, t = 2, 4
    rtg = np.array([[40.0, 30.0, 10.0, 0.0], [8.0, 6.0, 2.0, 1.0]], np.float32)
    return {"states": np.zeros((m, t, STATE_DIM), np.float32), "action": np.ones((m, t), np.float32),
            "rtg": rtg, "valid": np.ones((m, t), bool), "task": np.array([0, 1]),
            "cpa": np.array([10.0, 4.0]), "budget": np.array([200.0, 20.0]), "length": np.array([t, t])}


def test_windows_count_returns_per_unit_of_capacity() -> None:
    a = _arrays()
    assert rtg_unit(a, "none").tolist() == [1.0, 1.0]
    assert rtg_unit(a, "capacity").tolist() == [20.0, 5.0]  # budget / CPA
    m, t = np.array([0, 1]), np.array([1, 1])
    plain = window_arrays(a, m, t, 2, 1, 2.0)["rtg"]
    cap = window_arrays(a, m, t, 2, 1, 2.0, "capacity")["rtg"]
    np.testing.assert_allclose(plain, [[20.0, 15.0], [4.0, 3.0]])  # rtg / scale
    np.testing.assert_allclose(cap, [[1.0, 0.75], [0.8, 0.6]])  # rtg / (scale x capacity)


def test_policy_rebuilds_the_training_rtg_from_the_budget() -> None:
    cfg = VamoConfig().override({"rtg_norm": "capacity", "target_return": 1.0, "context": 2, "history": 4})
    meta = {"rtg_norm": "capacity", "rtg_scale": 2.0, "rtg_target": [2.0, 2.0, 2.0], "steps_per_day": 4,
            "max_steps": 4}
    model = types.SimpleNamespace(cfg=cfg, meta=meta)
    unit = policy_unit(model, 200.0, 10.0)
    assert unit == 20.0 and rtg_start(model, 0, unit) == 40.0  # target 2 per unit x 20 units
    states = np.zeros((2, STATE_DIM), np.float32)
    states[:, 0] = [1.0, 0.75]  # timeleft: steps 0 and 1
    w = window(states, np.array([10.0]), np.array([10.0]), 10.0, 0, 40.0, model, unit)
    np.testing.assert_allclose(w["rtg"].numpy(), [[1.0, 0.75]])  # as the training window above
    with pytest.raises(ValueError, match="budget: required"):
        policy_unit(model, None, 10.0)
    plain = types.SimpleNamespace(cfg=cfg, meta={**meta, "rtg_norm": "none"})
    assert policy_unit(plain, None, 10.0) == 1.0


def test_a_task_s_own_target_replaces_the_common_one() -> None:
    meta = {"rtg_norm": "none", "rtg_scale": 1.0, "rtg_target": [2.0, 3.0, 4.0]}
    common = types.SimpleNamespace(cfg=VamoConfig(target_return=1.5), meta=meta)
    assert [rtg_start(common, k) for k in range(3)] == [3.0, 4.5, 6.0]
    own = types.SimpleNamespace(cfg=VamoConfig(target_return=1.5, task_targets=(1.0, 2.0, 0.5)), meta=meta)
    assert [rtg_start(own, k) for k in range(3)] == [2.0, 6.0, 2.0]
    with pytest.raises(ValueError, match="task_targets"):
        VamoConfig.from_dict({"task_targets": [1.0, 2.0]})
