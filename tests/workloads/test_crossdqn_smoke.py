"""Cross DQN end to end on the shared Ray: the trainer (offline RLlib) through the platform's
``run_training``, publish, the exported module loaded alone, the evaluation table."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

from adray.config import load_config
from adray.workload import Reporter
from workloads.crossdqn import WORKLOAD
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import check_dataset
from workloads.crossdqn.selection import HeldOut

pytestmark = pytest.mark.ray


class Collect(Reporter):
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def report(self, metrics: Mapping[str, float]) -> None:
        self.rows.append(dict(metrics))


def test_train_publish_and_the_module_loads_alone(ray_cluster, adray_home: Path, tmp_path: Path) -> None:
    from adray.models import load_model
    from adray.train import run_training

    cfg = load_config(CrossDQNConfig, "smoke", WORKLOAD.configs_dir,
                      {"data": str(tmp_path / "data"), "iterations": 2, "updates_per_iteration": 4})
    WORKLOAD.make_data(cfg, tmp_path / "data")
    reporter = Collect()
    with torch.no_grad():  # as when a caller evaluates around training: training must still learn
        out = run_training(WORKLOAD, cfg, reporter=reporter)  # -> CrossDQNTrainer.train, then publish
    metrics = out.metrics
    assert len(reporter.rows) == 2 and all(np.isfinite(r["qf_loss"]) for r in reporter.rows)
    objective = f"val_{WORKLOAD.trainer.objective}"
    assert all(objective in r for r in reporter.rows) and out.history == reporter.rows
    assert objective == "val_reward_wdr"  # an off-policy estimate on held-out logs, not a simulator rollout
    assert {"pae_batch", objective, "val_reward_wdr_se", "val_pae_logged", "iter_time_s",
            "train_transitions_per_s"} <= set(metrics)
    assert not [k for k in metrics if k.startswith("val_") and "matched" in k]  # no simulator validation
    assert {"iter_time_s", "train_time_s", "train_transitions_per_s"} <= set(out.timings)
    assert out.model_dir.name == "model" and (out.model_dir / "module").is_dir()
    loaded = load_model(out.model_ref)  # from the registry: the inference RLModule alone
    assert loaded.cfg == cfg and loaded.meta["module_dir"] == "module"
    module = loaded.model
    assert not hasattr(module, "_target_net")  # inference-only: no target network
    assert module.net.type_emb.abs().sum() > 0  # zero at init: nonzero only if gradients flowed
    assert cfg.pae_mode == "q" and cfg.lam > 0 and cfg.calibrate_pae
    assert metrics["pae_offset_trained"] == 0.0  # q mode: the loss shapes Q, not β
    assert module.net.pae_offset.item() == pytest.approx(metrics["pae_offset"])  # β = the calibration shift
    obs = torch.randn(3, loaded.meta["obs_layout"]["obs_dim"])
    actions = module.forward_inference({"obs": obs})["actions"]
    assert actions.shape == (3,) and int(actions.max()) < cfg.num_actions
    # the loaded module is the calibrated one: as served, its ad share on the held-out logged
    # screens is the PAE target (what the calibration set), and the one training reported
    held = HeldOut.load(cfg, check_dataset(cfg, tmp_path / "data"))
    val = held.metrics(module.net, cfg.pae_target)
    assert val["pae_logged"] == pytest.approx(metrics["val_pae_logged"])
    assert val["pae_logged"] == pytest.approx(cfg.pae_target, abs=0.02)
    assert abs(val["mu_logged"]) < 1e-3  # already at the target: no further offset
    # the evaluation trains nothing: the model, the given others (here the same module again) and
    # the baselines; each Q-network at matched PAE, the random baseline raw
    table = WORKLOAD.evaluate(cfg, tmp_path / "data", module, {"again": module})
    assert list(table) == ["crossdqn", "again", "fixed", "gea", "random"]
    assert table["again"] == table["crossdqn"]
    assert table["crossdqn"]["pae"] == pytest.approx(cfg.pae_target, abs=0.03)
    assert table["random"]["pae_mu"] == 0.0 and abs(table["random"]["pae"] - cfg.pae_target) < 0.05
    with pytest.raises(ValueError, match="random"):
        WORKLOAD.evaluate(cfg, tmp_path / "data", module, {"random": module})


def test_offset_mode_trains_only_the_pae_offset(ray_cluster, tmp_path: Path) -> None:
    from workloads.crossdqn.train import train_module

    cfg = load_config(CrossDQNConfig, "smoke", WORKLOAD.configs_dir,
                      {"iterations": 1, "updates_per_iteration": 4, "pae_mode": "offset", "calibrate_pae": False})
    WORKLOAD.make_data(cfg, tmp_path / "data")
    metrics = train_module(cfg, tmp_path / "data", tmp_path / "out", validate=False)
    assert metrics["pae_offset_trained"] != 0.0  # β (zero at init) moved by the batch-level loss
    assert metrics["pae_offset"] == metrics["pae_offset_trained"]  # no calibration shift


@pytest.mark.slow
def test_online_training_in_the_simulator(ray_cluster, tmp_path: Path) -> None:
    """online=True: RLlib's own DQN sampling in FeedEnv (epsilon-greedy), same learner and loss."""
    from adray import rl
    from workloads.crossdqn.train import MODULE_DIR, train_module

    cfg = load_config(CrossDQNConfig, "smoke", WORKLOAD.configs_dir,
                      {"online": True, "iterations": 2, "calibrate_pae": False})  # no logs to calibrate β on
    metrics = train_module(cfg, tmp_path, tmp_path / "out")
    assert np.isfinite(metrics["qf_loss"]) and "pae_batch" in metrics
    assert rl.load_module(tmp_path / "out" / MODULE_DIR) is not None
