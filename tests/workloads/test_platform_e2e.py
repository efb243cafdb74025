"""The platform end to end on the PWiseR smoke config, on the shared local Ray.

Ray Train with 2 workers, publish, offline eval of the published checkpoint equals the metrics
computed inside training, kill-and-resume, and a short Optuna + ASHA sweep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, adray, last_json

pytestmark = pytest.mark.ray


@pytest.fixture()
def smoke_cfg(tmp_path: Path):
    from adray.config import load_config
    from adray.workload import get_workload

    wl = get_workload("pwiser")
    cfg = load_config(wl.config_cls, "smoke", wl.configs_dir, {"data": str(tmp_path / "data")})
    wl.make_data(cfg, tmp_path / "data")  # generation is explicit (adray data make)
    return wl, cfg


def test_train_two_workers_publish_and_eval_matches(ray_cluster, adray_home: Path, smoke_cfg) -> None:
    from adray.evaluate import run_eval
    from adray.registry import Registry
    from adray.train import run_training

    wl, cfg = smoke_cfg
    out = run_training(wl, cfg, num_workers=2)
    assert out.model_ref == "pwiser@v0001"
    assert len(out.history) == cfg.epochs
    assert 0.0 <= out.metrics["test_auc_ctr"] <= 1.0  # quality is tests/quality's job
    mv = Registry().get("pwiser@latest")
    assert mv.manifest["dataset_hash"] and mv.manifest["config"]["model"] == cfg.model
    assert {"model.pt", "config.yaml", "meta.json"} <= set(mv.manifest["files"])
    # the published checkpoint, evaluated offline, reproduces the in-training test metrics
    ref, metrics, _ = run_eval("pwiser", "pwiser@latest")
    assert ref == "pwiser@v0001"
    assert metrics["test_auc_ctr"] == pytest.approx(out.metrics["test_auc_ctr"], abs=1e-6)


def test_killed_run_resumes_from_its_checkpoint(ray_cluster, tmp_path: Path) -> None:
    address = ray_cluster.get_runtime_context().gcs_address
    home = tmp_path / "home"
    # data: generate (the smoke config's): the first run makes the dataset under ADRAY_HOME, the rerun reuses it
    args = ["train", "pwiser", "--config", "smoke", "--set", "epochs=4", "--set", "rows=60000", "--json"]
    env = os.environ | {"ADRAY_HOME": str(home), "RAY_ADDRESS": address}
    proc = subprocess.Popen([sys.executable, "-m", "adray.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    runs = home / "runs"
    deadline = time.time() + 240
    snapshot = "pwiser-*/checkpoint_manager_snapshot.json"  # Train V2 restores from this file
    while time.time() < deadline and not list(runs.glob(snapshot)):
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
        time.sleep(0.5)
    assert list(runs.glob(snapshot)), "no checkpoint within 240 s"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (home / "registry").exists() or not list((home / "registry").rglob("manifest.json"))
    time.sleep(2)  # let the orphaned controller/workers of the killed driver go away
    out = adray(*args, home=home, ray_address=address, check=True)
    result = last_json(out.stdout)
    assert result["metrics"]["resumed_from_epoch"] >= 1, result
    assert result["model"] == "pwiser@v0001"


@pytest.mark.slow  # ~60-380 s; Tune stays in the default run through test_crossdqn_tune's sweep
def test_short_sweep_writes_table_plot_and_publishes_best(ray_cluster, adray_home: Path, tmp_path: Path) -> None:
    import pandas as pd

    from adray.registry import Registry
    from adray.tune import load_space, run_sweep

    space = load_space(REPO / "tune_spaces" / "pwiser.yaml", "pwiser")
    res = run_sweep(space, trials=2, overrides={"data": "generate", "epochs": 2})
    table = pd.read_csv(res.table_path)
    assert len(table) == 2 and table[space.metric].notna().all()
    assert res.plot_path.stat().st_size > 1000
    assert res.model_ref is not None and Registry().get(res.model_ref).manifest["sweep"]
    assert set(res.best_params) == set(space.params)
