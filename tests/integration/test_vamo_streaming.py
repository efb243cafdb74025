"""VAMO's streamed ingest on the shared Ray (workloads/vamo/stream.py): with one worker and no
shuffle, the streamed and in-memory paths train the same model (multi-task and one STL run); on Ray
Train with two workers the streamed run takes the in-memory path's steps per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from adray.config import load_config
from adray.train_torch import fit_in_process
from workloads.vamo import WORKLOAD
from workloads.vamo.config import VamoConfig
from workloads.vamo.data import make_data
from workloads.vamo.train import make_spec

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[VamoConfig, Path]:
    cfg = load_config(VamoConfig, "smoke", WORKLOAD.configs_dir, {"ingest_shuffle": False, "epochs": 2})
    data = tmp_path_factory.mktemp("vamo-stream") / "d"
    make_data(cfg, data)
    return cfg, data


def _same(a: Any, b: Any) -> None:
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[k], v, atol=1e-6, rtol=0)
    assert [h["val_loss"] for h in b.history] == pytest.approx([h["val_loss"] for h in a.history], abs=1e-6)
    assert b.test == pytest.approx(a.test, abs=1e-6)


@pytest.mark.parametrize("tasks", [None, (2,)], ids=["multi-task", "stl-cart"])
def test_streamed_and_in_memory_paths_give_the_same_vamo_model(ray_cluster, smoke, tasks) -> None:  # noqa: ANN001
    cfg, data = smoke
    if tasks is not None:
        cfg = cfg.override({"epochs": 1})
    spec = make_spec(tasks)
    mem = fit_in_process(spec, cfg, data)
    streamed = fit_in_process(spec, cfg, data, ingest_path="stream")
    _same(mem, streamed)


@pytest.mark.slow
def test_ray_train_streams_vamo_on_two_workers_with_the_in_memory_steps(ray_cluster, adray_home, smoke) -> None:  # noqa: ANN001
    """``adray train vamo --config smoke --set ingest=stream --workers 2``, shuffled: Ray Train splits
    windows (not trajectories), so each worker has the in-memory path's batches per epoch."""
    from adray.train import run_training

    cfg, data = smoke
    steps = {}
    for path in ("memory", "stream"):
        out = run_training("vamo", cfg.override({"ingest": path, "ingest_shuffle": True, "data": str(data)}),
                           num_workers=2, publish=False, run_name=f"vamo-{path}-2")
        assert out.timings["ingest_stream"] == float(path == "stream")
        assert all(torch.isfinite(torch.tensor(h["val_loss"])) for h in out.history)
        steps[path] = [h["samples_per_s"] * h["epoch_time_s"] for h in out.history]
    assert steps["stream"] == pytest.approx(steps["memory"], rel=1e-6)
