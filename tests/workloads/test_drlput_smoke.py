"""DRL-PUT end to end on the shared Ray: logs -> RLlib training -> module alone -> evaluation -> serving policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adray.config import load_config
from adray.workload import Reporter, TrainContext
from workloads.drlput import WORKLOAD
from workloads.drlput.config import DRLPUTConfig
from workloads.drlput.evaluate import action_probs, state_obs
from workloads.drlput.train import train_module

pytestmark = pytest.mark.ray


class _Collect(Reporter):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def report(self, metrics) -> None:  # noqa: ANN001
        self.rows.append(dict(metrics))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[DRLPUTConfig, Path]:
    root = tmp_path_factory.mktemp("drlput")
    cfg = load_config(DRLPUTConfig, "smoke", WORKLOAD.configs_dir, {"data": str(root / "data")})
    WORKLOAD.make_data(cfg, root / "data")
    return cfg, root


@pytest.fixture(scope="module")
def trained(ray_cluster, smoke):  # noqa: ANN001, ANN201
    cfg, root = smoke
    reporter = _Collect()
    ctx = TrainContext(data_dir=root / "data", run_dir=root / "run", run_name="drlput-smoke",
                       storage=str(root / "storage"), reporter=reporter)
    return cfg, root, WORKLOAD.trainer.train(cfg, ctx), reporter


def test_train_evaluate_serve(trained) -> None:
    cfg, root, result, reporter = trained
    assert len(reporter.rows) == cfg.iterations and all(np.isfinite(r["pg_loss"]) for r in reporter.rows)
    assert {"val_snips", "val_relative_gain", "val_diversity", "test_snips", "samples_per_s"} <= set(result.metrics)
    assert not any(k in result.metrics for k in ("val_reward", "val_ctr", "val_revenue"))  # no simulator truth
    kept = int(result.metrics["best_iteration"])
    assert result.metrics["val_snips"] == reporter.rows[kept - 1]["val_snips"]
    model = WORKLOAD.load_model(result.model_dir, cfg, result.meta)
    assert not hasattr(model, "critic")
    # the exported module is the kept iteration's: the same estimate on the val logs
    from workloads.drlput.data import read_split
    from workloads.drlput.evaluate import offline_metrics, reward_per_action

    q_hat = reward_per_action(cfg, root / "data")
    val = offline_metrics(cfg, model, read_split(cfg, root / "data", "val"), q_hat)
    assert val["snips"] == pytest.approx(result.metrics["val_snips"], rel=1e-9)

    table = WORKLOAD.evaluate(cfg, root / "data", model, {})
    assert {"drlput", "uniform", "best_fixed", "oracle"} <= set(table)
    for key in ("reward", "ctr", "cvr", "revenue", "test_diversity", "test_relative_gain", "test_ips", "test_snips",
                "test_dr"):
        assert np.isfinite(table["drlput"][key]), key
    for key in ("test_snips", "test_ips", "test_dr", "test_diversity"):  # the trainer reported the same test figures
        assert table["drlput"][key] == pytest.approx(result.metrics[key], abs=1e-9), key
    assert table["drlput"]["reward"] > table["uniform"]["reward"]  # the headline
    assert table["oracle"]["reward"] >= table["best_fixed"]["reward"] >= table["uniform"]["reward"]

    policy = WORKLOAD.policy(model, cfg, result.meta, "drlput@v0001")
    requests = policy.sample_requests(cfg, root / "data", 6, seed=1)
    schema, answer = policy.request_schema(result.meta, 500), policy.response_schema(result.meta)
    requests = [schema.model_validate(r).model_dump() for r in requests]
    answers = policy.decide(requests)
    for a in answers:
        answer.model_validate(a)
        assert a["propensity"] == 1.0 and a["model"] == "drlput@v0001"
    obs = np.array([[r[c] for c in schema.model_fields if c != "request_id"] for r in requests], np.float32)
    assert [a["action"] for a in answers] == action_probs(model, obs).argmax(1).tolist()  # served = offline
    assert policy.decide(requests[:1]) == answers[:1]


def test_bad_request_is_refused_by_field(smoke) -> None:
    import pydantic

    cfg, root = smoke
    schema = WORKLOAD.policy.request_schema({}, 500)
    good = WORKLOAD.policy.sample_requests(cfg, root / "data", 1)[0]
    for field, value in (("hour", 24), ("hist_ctr", "x"), ("extra", 1)):
        with pytest.raises(pydantic.ValidationError, match=field):
            schema.model_validate({**good, field: value})


def test_actor_critic_trains_its_critic(ray_cluster, smoke, tmp_path: Path) -> None:
    cfg, root = smoke
    cfg = cfg.override({"algorithm": "actor_critic", "importance": "ratio", "iterations": 2})
    metrics = train_module(cfg, root / "data", tmp_path)
    assert np.isfinite(metrics["vf_loss"]) and 0 < metrics["weight_mean"]


def test_exploring_policy_logs_true_propensities(trained) -> None:
    cfg, root, result, _ = trained
    model = WORKLOAD.load_model(result.model_dir, cfg, result.meta)
    policy = WORKLOAD.policy(model, cfg.override({"serve_epsilon": 0.5}), result.meta, "m")
    requests = WORKLOAD.policy.sample_requests(cfg, root / "data", 400, seed=2)
    answers = policy.decide(requests)
    greedy = action_probs(model, state_obs(pd.DataFrame(requests))).argmax(1)
    explored = np.array([a["action"] for a in answers]) != greedy
    assert 0.3 < explored.mean() < 0.7
    props = np.array([a["propensity"] for a in answers])
    np.testing.assert_allclose(props[explored], 0.5 / 125)
    np.testing.assert_allclose(props[~explored], 0.5 + 0.5 / 125)
    assert policy.decide(requests[:3]) == answers[:3]  # reproducible per request id


@pytest.mark.parametrize("overrides", [
    {"reward_signal": "predicted", "reward.variant": "R4", "importance": "inverse"},
    {"reward.variant": "R1", "normalise": False, "entropy_coeff": 0.01, "grad_clip": 1.0},
])
def test_reward_variants_and_estimators_train(ray_cluster, smoke, tmp_path: Path, overrides: dict) -> None:
    cfg, root = smoke
    metrics = train_module(cfg.override({"iterations": 1, "updates_per_iteration": 3, **overrides}), root / "data", tmp_path)
    assert np.isfinite(metrics["pg_loss"]) and np.isfinite(metrics["val_snips"]) and np.isfinite(metrics["test_snips"])
    if overrides.get("normalise", True):
        assert 0 <= metrics["reward_mean"] <= 1  # min-max normalised per batch


def test_online_training_in_the_simulator(ray_cluster, smoke, tmp_path: Path) -> None:
    """online=True: RLlib's EnvRunner samples π(·|s) in AdRequestEnv; same learner and loss."""
    cfg, _ = smoke
    cfg = cfg.override({"online": True, "iterations": 2, "updates_per_iteration": 2, "batch_size": 128})
    metrics = train_module(cfg, None, tmp_path)
    assert np.isfinite(metrics["pg_loss"]) and (tmp_path / "module").is_dir()
    # no held-out logs: the last iteration is kept (the env's training batches do not choose)
    assert metrics["best_iteration"] == cfg.iterations and not any(k.startswith("val_") for k in metrics)
