"""The Cross DQN serving policy: typed screen-state requests, the same actions as offline inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from tests.helpers import crossdqn_module
from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.data import make_data
from workloads.crossdqn.model import CrossDQNModule
from workloads.crossdqn.rollout import q_policy
from workloads.crossdqn.serving import AllocationPolicy, observations, requests_from_obs
from workloads.crossdqn.sim import FeedSim, make_requests, obs_layout
from workloads.crossdqn.train import model_meta

CFG = CrossDQNConfig(embed_dim=4, hidden=16, n_requests=40, seed=2)
META = model_meta(CFG)


def _module(beta: float = 0.3) -> CrossDQNModule:
    return crossdqn_module(CFG, beta)  # served scores Q - β·PAE, as after calibration


def _sim_obs(n: int = 64) -> np.ndarray:
    """Observations of first and later screens (some with lists run out: present = 0 items)."""
    sim = FeedSim(CFG.sim, make_requests(CFG.sim, n, 3))
    rng = np.random.default_rng(0)
    screens = [sim.observe()]
    while sim.alive.any():
        idx = np.flatnonzero(sim.alive)
        sim.step(idx, rng.integers(0, CFG.num_actions, len(idx)))
        if sim.alive.any():
            screens.append(sim.observe(np.flatnonzero(sim.alive)))
    return np.concatenate(screens)


def test_decide_picks_the_actions_of_offline_inference() -> None:
    module = _module()
    obs = _sim_obs()
    lo = obs_layout(CFG.sim)
    ads_start = lo["profile"] + lo["hist_len"] * lo["item_dim"]
    ads_present = obs[:, ads_start:ads_start + lo["window"] * lo["feat"]][:, lo["feat"] - 1::lo["feat"]]
    assert (ads_present == 0).any() and (ads_present == 1).any()  # some screens past the end of the ads
    req_cls = AllocationPolicy.request_schema(META, 0)
    resp_cls = AllocationPolicy.response_schema(META)
    requests = [req_cls.model_validate(r).model_dump() for r in requests_from_obs(obs, META["obs_layout"])]
    np.testing.assert_array_equal(observations(requests, META["obs_layout"]), obs)  # blocks in observe's order
    policy = AllocationPolicy(module, CFG, META, "crossdqn@7")
    answers = policy.decide(requests)
    expected = q_policy(module)(obs)
    assert [a["action"] for a in answers] == expected.tolist()
    with torch.no_grad():
        served = module.net(torch.as_tensor(obs)).numpy()
    for ans, q, act in zip(answers, served, expected, strict=True):
        resp_cls.model_validate(ans)
        assert ans["model"] == "crossdqn@7" and ans["request_id"] is None
        assert ans["ad_slots"] == [bool(act >> k & 1) for k in range(CFG.sim.slots)]
        np.testing.assert_array_equal(np.asarray(ans["q"], np.float32), q)
    one = policy.decide(requests[:1])  # one request at a time (Serve's default) decides the same
    assert one[0]["action"] == answers[0]["action"] and policy.decide([]) == []


def test_bad_requests_fail_validation_naming_the_field() -> None:
    req_cls = AllocationPolicy.request_schema(META, 0)
    good = requests_from_obs(_sim_obs(2)[:1], META["obs_layout"], ids=["r1"])[0]
    req_cls.model_validate(good)

    def locs(bad: dict) -> list[tuple]:
        with pytest.raises(pydantic.ValidationError) as err:
            req_cls.model_validate(bad)
        return [e["loc"] for e in err.value.errors()]

    assert locs({k: v for k, v in good.items() if k != "history"}) == [("history",)]
    assert locs({**good, "ads": [*good["ads"][:2], good["ads"][2][:-1], *good["ads"][3:]]}) == [("ads", 2)]
    assert locs({**good, "organic": good["organic"][:-1]}) == [("organic",)]
    assert locs({**good, "profile": [float("nan"), *good["profile"][1:]]}) == [("profile", 0)]
    assert locs({**good, "context": [1.0, "x", 0.0, 0.0]}) == [("context", 1)]
    assert locs({**good, "pae": 0.4}) == [("pae",)]  # unknown fields are refused


def test_sample_requests_are_logged_screens(tmp_path: Path) -> None:
    make_data(CFG, tmp_path / "d")
    reqs = AllocationPolicy.sample_requests(CFG, tmp_path / "d", 5, seed=1)
    req_cls = AllocationPolicy.request_schema(META, 0)
    assert len(reqs) == 5 and all(r["request_id"].startswith("logged-") for r in reqs)
    obs = observations([req_cls.model_validate(r).model_dump() for r in reqs], META["obs_layout"])
    assert obs.shape == (5, META["obs_layout"]["obs_dim"])
    assert reqs == AllocationPolicy.sample_requests(CFG, tmp_path / "d", 5, seed=1)
