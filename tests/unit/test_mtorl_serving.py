"""The MTORL channel policy: the request rebuilds exactly the model input of a training window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from adray.config import load_config
from workloads.mtorl import WORKLOAD
from workloads.mtorl.data import load_split, model_meta
from workloads.mtorl.model import build_model, predict
from workloads.mtorl.serving import ChannelPolicy


@pytest.fixture(scope="module")
def setup(tmp_path_factory):  # noqa: ANN201
    data = tmp_path_factory.mktemp("mtorl") / "data"
    cfg = load_config(WORKLOAD.config_cls, "smoke", WORKLOAD.configs_dir, {"data": str(data), "policy": "deterministic"})
    WORKLOAD.make_data(cfg, data)
    meta = model_meta(data, cfg)
    torch.manual_seed(0)
    model = build_model(cfg, meta).eval()
    return cfg, data, meta, model


def test_answer_is_the_model_output_at_the_last_step_of_the_window(setup) -> None:  # noqa: ANN001
    cfg, data, meta, model = setup
    policy = ChannelPolicy(model, cfg, meta, "mtorl@v0001")
    w = load_split(data, "test", cfg)
    reqs = ChannelPolicy.sample_requests(cfg, data, 8, seed=0)
    schema = ChannelPolicy.request_schema(meta, 500)
    for r in reqs:
        answer = policy.decide([schema.model_validate(r).model_dump()])[0]
        length = len(r["states"])
        # find the window this request was cut from and run the model on it directly
        row = next(i for i in range(len(w["state"])) if np.allclose(w["state"][i, :length], r["states"])
                   and list(w["action"][i, :length - 1]) == r["channels"])
        t = {k: torch.from_numpy(w[k][row:row + 1, :length].copy()) for k in ("action", "reward", "state", "mask")}
        with torch.no_grad():
            probs, r_pred = predict(model, t["action"], t["reward"], t["state"], t["mask"])
        np.testing.assert_allclose(answer["probs"], probs[0, -1].numpy(), rtol=1e-5, atol=1e-6)
        assert answer["channel"] == int(probs[0, -1].argmax()) and answer["propensity"] == 1.0
        assert answer["predicted_reward"] == pytest.approx(float(r_pred[0, -1]), rel=1e-5, abs=1e-6)


def test_stochastic_choice_is_seeded_by_the_request_id(setup) -> None:  # noqa: ANN001
    cfg, data, meta, model = setup
    policy = ChannelPolicy(model, cfg.override({"policy": "stochastic"}), meta, "mtorl@v0001")
    req = ChannelPolicy.sample_requests(cfg, data, 1, seed=4)[0]
    a, b = policy.decide([req])[0], policy.decide([req])[0]
    assert a == b and a["propensity"] == pytest.approx(a["probs"][a["channel"]])


def test_bad_journeys_are_refused_by_field(setup) -> None:  # noqa: ANN001
    cfg, data, meta, _ = setup
    schema = ChannelPolicy.request_schema(meta, 500)
    good = ChannelPolicy.sample_requests(cfg, data, 1, seed=5)[0]
    good = {**good, "states": good["states"][:3], "channels": good["channels"][:2], "gains": [0.1, 0.2],
            "costs": [0.0, 0.0]} if len(good["states"]) >= 3 else good
    schema.model_validate(good)
    with pytest.raises(pydantic.ValidationError, match="channels: expected"):
        schema.model_validate({**good, "channels": good["channels"] + [0]})
    with pytest.raises(pydantic.ValidationError, match="states"):
        schema.model_validate({**good, "states": [s[:-1] for s in good["states"]]})
    with pytest.raises(pydantic.ValidationError, match="channels"):
        schema.model_validate({**good, "channels": [meta["num_channels"]] * len(good["channels"])})
    with pytest.raises(pydantic.ValidationError, match="states"):
        schema.model_validate({**good, "states": [good["states"][0]] * (meta["window"] + 1)})


def test_meta_carries_what_the_policy_needs(setup) -> None:  # noqa: ANN001
    cfg, data, meta, _ = setup
    assert meta["window"] == cfg.n and len(meta["reward_minmax"]) == 2
    assert Path(data).is_dir()
