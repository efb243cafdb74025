"""Cross DQN through the platform's Tune harness: Optuna + ASHA trials of the trainer, publish the best."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from adray.config import load_config
from adray.models import load_model
from adray.tune import load_space, run_sweep
from workloads.crossdqn import WORKLOAD
from workloads.crossdqn.config import CrossDQNConfig

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]


def test_sweep_reports_every_iteration_and_publishes_best(ray_cluster, adray_home: Path, tmp_path: Path) -> None:
    overrides = {"data": str(tmp_path / "data"), "iterations": 2, "updates_per_iteration": 4}
    # The dataset is made once up front, as `adray data make` would (trials share it).
    WORKLOAD.make_data(load_config(CrossDQNConfig, "smoke", WORKLOAD.configs_dir, overrides), tmp_path / "data")
    space = load_space(REPO / "tune_spaces" / "crossdqn.yaml", "crossdqn")
    res = run_sweep(space, trials=2, overrides=overrides)

    table = pd.read_csv(res.table_path)
    assert res.num_trials == 2 and len(table) == 2 and not table["error"].any()
    assert res.plot_path.is_file() and res.plot_path.stat().st_size > 0
    assert table["epochs_run"].between(1, 2).all()  # ASHA (max_t = iterations + 1) or the end
    assert set(space.params) <= set(table.columns)
    assert "sim.eta" in space.params  # η lives in the simulator config; the learner rebuilds rewards with it
    # every trial sampled its own point of the space, inside the bounds
    for name, spec in space.params.items():
        assert table[name].between(spec["low"], spec["high"]).all()
    assert table["lam"].nunique() == 2
    assert space.metric == "val_reward_wdr"  # held-out logs, at the PAE target: no simulator
    assert np.isfinite(table[space.metric]).all()
    assert res.best_metrics[space.metric] == pytest.approx(table[space.metric].max())

    # the best trial's model is in the registry with the best trial's config
    assert res.model_ref is not None and res.model_ref.startswith("crossdqn@")
    loaded = load_model(res.model_ref)
    for name, value in res.best_params.items():  # dotted names reach the nested simulator config
        assert _get(loaded.cfg, name) == pytest.approx(value)
    assert loaded.cfg.iterations == 2
    obs = torch.zeros(2, loaded.meta["obs_layout"]["obs_dim"])
    actions = loaded.model.forward_inference({"obs": obs})["actions"]
    assert actions.shape == (2,)


def _get(cfg: object, dotted: str) -> object:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg
