"""MTORL smoke config end to end through the Ray Train harness: data make, train, publish, reload."""

import numpy as np
import pytest
import torch

from adray.config import load_config
from adray.models import load_model
from workloads.mtorl import WORKLOAD


@pytest.mark.ray
def test_mtorl_smoke_trains_publishes_and_reloads(ray_cluster, adray_home, tmp_path):
    from adray.train import run_training

    cfg = load_config(WORKLOAD.config_cls, "smoke", WORKLOAD.configs_dir, {"data": str(tmp_path / "data")})
    out = run_training(WORKLOAD, cfg, num_workers=1, publish=True)
    for key in ("val_f1_macro", "test_f1_macro", "test_precision_macro", "test_recall_macro", "samples_per_s"):
        assert np.isfinite(out.metrics[key]), key
    loaded = load_model(out.model_ref)
    test = WORKLOAD.torch.load_split(tmp_path / "data", "test", cfg)
    with torch.no_grad():
        again = WORKLOAD.torch.evaluate(loaded.model, test, cfg)
    assert again["f1_macro"] == pytest.approx(out.metrics["test_f1_macro"], abs=1e-6)
