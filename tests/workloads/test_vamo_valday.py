"""Issue 22: a VAMO sweep on the held-out validation day's score (``report: final``,
``target_grid``): every trial trains, then bids the validation day; the best trial is published with
the task targets it chose there, and serving bids with them. The evaluation days take no part."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.ray


def test_sweep_on_the_validation_day_publishes_the_chosen_targets(ray_cluster, adray_home: Path,  # noqa: ANN001
                                                                  tmp_path: Path) -> None:
    from adray.models import load_model
    from adray.registry import Registry
    from adray.tune import load_space, run_sweep
    from workloads.vamo.config import TASKS
    from workloads.vamo.evaluate import eval_days, validation_day
    from workloads.vamo.train import TARGETS_META

    space_file = tmp_path / "valday.yaml"
    space_file.write_text("workload: vamo\nconfig: smoke\nmetric: val_day_score\nmode: max\nreport: final\n"
                          "params:\n  lam: {type: float, low: 0.1, high: 10.0, log: true}\n")
    res = run_sweep(load_space(space_file, "vamo"), trials=2,
                    overrides={"target_grid": [1.0, 3.0], "epochs": 2})
    table = pd.read_csv(res.table_path)
    assert len(table) == 2 and table["val_day_score"].notna().all() and (table["val_day_score"] > 0).all()
    assert (table["epochs_run"] == 2).all() and not table["error"].any()  # one report, after 2 epochs each
    assert res.best_metrics["val_day_score"] == table["val_day_score"].max()

    loaded = load_model(res.model_ref, Registry())
    model, chosen = loaded.model, loaded.model.meta[TARGETS_META]
    assert len(chosen["task_targets"]) == len(TASKS)  # one per task, each from the grid
    assert set(chosen["task_targets"]) <= {1.0, 3.0} and set(chosen["grid"]) == {"1", "3"}
    assert model.cfg.task_targets == tuple(chosen["task_targets"]) and model.cfg.target_grid == ()
    assert chosen["val_day"]["score"] == pytest.approx(res.best_metrics["val_day_score"])
    assert chosen["validation_day"] == validation_day(model.cfg) and chosen["validation_day"] not in eval_days(model.cfg)
