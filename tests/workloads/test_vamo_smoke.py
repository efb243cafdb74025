"""VAMO end to end at smoke scale: simulated logs, training, evaluation table, serving = simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adray.config import load_config
from adray.data import read_dataset
from adray.workload import TrainContext
from workloads.vamo import WORKLOAD
from workloads.vamo.config import TASKS, VamoConfig
from workloads.vamo.data import lp_table, make_data
from workloads.vamo.evaluate import controlled, eval_days, evaluate_methods, opponents
from workloads.vamo.policy import BidPolicy, ModelBidder
from workloads.vamo.sim import simulate_day
from workloads.vamo.train import fit, load_model, save_model
from workloads.vamo.trajectory import state_features


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory):
    cfg = load_config(VamoConfig, "smoke", WORKLOAD.configs_dir)
    data = tmp_path_factory.mktemp("vamo") / "data"
    make_data(cfg, data)
    model, history = fit(cfg, data)
    return cfg, data, model, history


def test_dataset_layout(smoke) -> None:
    cfg, data, _, history = smoke
    ds = read_dataset(data)
    assert ds.splits == ["train", "val", "test"] and ds.meta["periods"] == [1, 2, 3, 4]
    assert ds.meta["val_period"] == 3 and ds.meta["test_period"] == 4
    assert ds.meta["train_trajectories"] == {"gmv": 12, "dir_gmv": 12, "cart": 8}  # 6/6/4 x 2 days
    assert len(history) == cfg.epochs and all(np.isfinite(h["val_loss"]) for h in history)
    assert {"train_w_gmv", "train_m_gmv", "samples_per_s"} <= set(history[-1])


def test_save_load_round_trip(smoke, tmp_path: Path) -> None:
    cfg, data, model, _ = smoke
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m", cfg, {})
    for a, b in zip(model.nets[0].state_dict().values(), loaded.nets[0].state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())


def test_evaluation_table_and_headline(smoke) -> None:
    cfg, data, model, _ = smoke
    table = evaluate_methods(cfg, data, model, {"stl": model}, baselines=("random", "pid_budget"))
    assert set(table) == {"vamo", "stl", "random", "pid_budget"}
    for row in table.values():
        assert set(TASKS) | {"score", "delta_m"} <= set(row)
    assert table["vamo"]["delta_m"] == pytest.approx(0.0)  # the same model as its own STL
    assert table["vamo"][WORKLOAD.headline.metric] > table[WORKLOAD.headline.baseline][WORKLOAD.headline.metric]


def test_bid_endpoint_answers_what_the_simulator_bid(smoke) -> None:
    cfg, data, model, _ = smoke
    sim = cfg.sim
    from workloads.vamo.world import make_advertisers

    adv = make_advertisers(sim, cfg.seed)
    mine = controlled(adv.task)
    others = np.setdiff1d(np.arange(adv.n), mine)
    res = simulate_day(sim, cfg.seed, eval_days(cfg)[0], [(mine, ModelBidder(model)),
                                                          *opponents(others, lp_table(sim, cfg.seed))])
    policy = BidPolicy(model, cfg, model.meta, "vamo@test")
    schema = BidPolicy.request_schema(model.meta, 100)
    for j, t in ((mine[0], 0), (mine[-1], 7), (mine[2], sim.steps - 1)):
        if res.log.alpha[t, j] == 0:  # out of budget: the simulator no longer asks
            continue
        req = schema(task=int(adv.task[j]), cpa_constraint=float(res.day.cpa[j]),
                     states=state_features(res.log, res.day.budget, upto=t)[:, j].tolist(),
                     alphas=res.log.alpha[:t, j].tolist(), conversions=res.log.conversions[:t, j].tolist())
        (ans,) = policy.decide([req.model_dump()])
        assert ans["alpha"] == pytest.approx(res.log.alpha[t, j], rel=1e-5)


def test_sample_requests_validate_and_bad_requests_are_refused(smoke) -> None:
    cfg, data, model, _ = smoke
    schema = BidPolicy.request_schema(model.meta, 100)
    reqs = [schema(**r).model_dump() for r in BidPolicy.sample_requests(cfg, data, 5)]
    answers = BidPolicy(model, cfg, model.meta, "vamo@test").decide(reqs)
    assert all(np.isfinite(a["alpha"]) and a["alpha"] >= 0 for a in answers)
    bad = dict(reqs[0], alphas=reqs[0]["alphas"] + [1.0])
    with pytest.raises(ValueError, match="alphas: expected"):
        schema(**bad)


def test_trainer_entry_and_stl(smoke, tmp_path: Path) -> None:
    cfg, data, _, _ = smoke
    cfg = cfg.override({"weighting": "stl", "epochs": 1, "steps_per_epoch": 2})
    ctx = TrainContext(data_dir=data, run_dir=tmp_path / "run", run_name="t", storage=str(tmp_path))
    result = WORKLOAD.trainer.train(cfg, ctx)
    assert {"val_loss", "val_loss_gmv", "val_loss_cart", "samples_per_s"} <= set(result.metrics)
    model = WORKLOAD.load_model(result.model_dir, cfg, result.meta)
    assert len(model.nets) == len(TASKS)  # one single-task model per task


def test_vanilla_runs_on_the_platform_torch_harness(smoke) -> None:
    from adray.train_torch import fit_in_process
    from workloads.vamo.workload import vanilla_spec

    cfg, data, _, _ = smoke
    cfg = cfg.override({"weighting": "vanilla", "epochs": 1, "batch_size": 256})
    out = fit_in_process(vanilla_spec(), cfg, data)
    assert np.isfinite(out.val["val_loss"]) and {"loss", "loss_gmv", "loss_cart"} <= set(out.test)
