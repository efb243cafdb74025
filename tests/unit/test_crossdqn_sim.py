"""Feed simulator invariants: reward components, PAE from actions, determinism, episode ends."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from workloads.crossdqn.config import CrossDQNConfig, FeedSimConfig
from workloads.crossdqn.policies import OraclePolicy, constant_policy
from workloads.crossdqn.rollout import rollout
from workloads.crossdqn.sim import FeedEnv, FeedSim, action_bits, ad_ctr_factor, make_requests, obs_layout

CFG = CrossDQNConfig()
SIM = CFG.sim


def _run(cfg: FeedSimConfig, action: int, n: int = 500, seed: int = 3) -> tuple[FeedSim, list[dict]]:
    sim = FeedSim(cfg, make_requests(cfg, n, seed))
    outs = []
    while sim.alive.any():
        idx = np.flatnonzero(sim.alive)
        outs.append(sim.step(idx, np.full(len(idx), action)))
    return sim, outs


def test_reward_components_consistent_with_events() -> None:
    cfg = SIM.override({"eta": 0.7})
    sim = FeedSim(cfg, make_requests(cfg, 300, 1))
    rng = np.random.default_rng(0)
    while sim.alive.any():
        idx = np.flatnonzero(sim.alive)
        out = sim.step(idx, rng.integers(0, cfg.num_actions, len(idx)))
        np.testing.assert_allclose(out["reward"], out["r_ad"] + out["r_fee"] + 0.7 * out["r_ex"])
        np.testing.assert_allclose(out["r_ex"], (~out["left"]) + out["orders"])
        assert (out["orders"] <= out["clicks"]).all()
        ad_clicks = (out["click_mask"] & out["ad_mask"]).sum(1)
        assert (out["r_ad"][ad_clicks == 0] == 0).all() and (out["r_ad"][ad_clicks > 0] > 0).all()
        assert ((out["r_fee"] > 0) == (out["orders"] > 0)).all()
        assert (out["terminated"] >= out["left"]).all()


def test_no_ads_means_no_ad_revenue_and_zero_take_rate_means_no_fee() -> None:
    _, outs = _run(SIM.override({"take_rate": 0.0}), action=0)
    assert all((o["r_ad"] == 0).all() and (o["r_fee"] == 0).all() and (o["ads"] == 0).all() for o in outs)


@pytest.mark.parametrize("action", [0, 0b00101, 0b01010, 0b11111])
def test_pae_is_computed_from_actions(action: int) -> None:
    sim, outs = _run(SIM.override({"n_ads": 100}), action)  # ample ads: every action can be served
    for o in outs[:10]:  # 100 ads last at least 20 screens
        assert (o["ad_mask"] == action_bits(SIM.slots)[action].astype(bool)).all()
    shown = sum(o["ad_mask"].sum() for o in outs[:10]) / sum(o["ad_mask"].size for o in outs[:10])
    assert shown == pytest.approx(bin(action).count("1") / SIM.slots)


def test_determinism_under_seed() -> None:
    a, b, c = (FeedSim(SIM, make_requests(SIM, 50, s)) for s in (5, 5, 6))
    acts = np.random.default_rng(1).integers(0, 32, 50)
    np.testing.assert_array_equal(a.observe(), b.observe())
    assert not np.array_equal(a.observe(), c.observe())
    oa, ob = a.step(np.arange(50), acts), b.step(np.arange(50), acts)
    for key in oa:
        np.testing.assert_array_equal(oa[key], ob[key])
    e1, e2 = FeedEnv(SIM.to_dict()), FeedEnv(SIM)
    np.testing.assert_array_equal(e1.reset(seed=9)[0], e2.reset(seed=9)[0])
    assert e1.step(3)[1] == e2.step(3)[1]


def test_episode_ends_when_user_leaves_or_lists_run_out() -> None:
    sim, outs = _run(SIM.override({"leave_base": 1.0}), action=0)
    assert len(outs) == 1 and outs[0]["left"].all() and outs[0]["terminated"].all()
    sim, outs = _run(SIM.override({"leave_base": 0.0, "leave_per_ad": 0.0, "n_ads": 12}), action=0)
    assert len(outs) == SIM.n_organic // SIM.slots  # all-organic screens until fewer than K remain
    assert not any(o["left"].any() for o in outs) and outs[-1]["terminated"].all()
    with pytest.raises(ValueError, match="ended"):
        sim.step(np.arange(3), np.zeros(3, np.int64))


def test_arrangement_signal_and_personal_tolerance() -> None:
    # Ad CTR in slot 2: alone (0b00100) vs next to another ad (0b01100); organic slot 1 next to an ad.
    n = 8000
    _, alone = _run(SIM, 0b00100, n, seed=11)
    _, pair = _run(SIM, 0b01100, n, seed=11)
    assert pair[0]["click_mask"][:, 2].mean() < 0.85 * alone[0]["click_mask"][:, 2].mean()
    _, none = _run(SIM, 0, n, seed=11)
    assert alone[0]["click_mask"][:, 1].mean() > none[0]["click_mask"][:, 1].mean()
    # Leaving after an ad-heavy screen is likelier for low-tolerance users.
    sim, heavy = _run(SIM, 0b11111, n, seed=12)
    tol, left = sim.req.tol, heavy[0]["left"]
    assert left[tol < 0.3].mean() > left[tol > 0.7].mean() + 0.1


def test_gym_env_api_and_observation_layout() -> None:
    env = FeedEnv(SIM.to_dict())
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (obs_layout(SIM)["obs_dim"],) and env.action_space.n == 32 == CFG.num_actions


def test_tolerance_is_observable_through_profile_and_behaviour() -> None:
    req = make_requests(SIM, 4000, 21)
    assert np.corrcoef(req.profile[:, 0], req.tol)[0, 1] > 0.9  # noisy stated tolerance
    assert np.corrcoef(req.profile[:, 2], req.tol)[0, 1] > 0.5  # past ad CTR (behaviour)
    assert (req.tol < 0.2).mean() > 0.25 and (req.tol > 0.8).mean() > 0.25  # polarised: Beta(0.5, 0.5)
    hidden = make_requests(SIM.override({"ad_history_len": 0}), 10, 21)
    assert (hidden.profile[:, 2] == 0).all()


def test_arrangement_x_user_and_ad_relevance_effects() -> None:
    cfg = SIM.override({"neighbour_similarity": 0.0})  # type-level effects alone (item-level: below)
    sim = FeedSim(cfg, make_requests(cfg, 4000, 13))
    idx = np.arange(4000)
    _, _, p_pair, _, _, _ = sim.arrange(idx, np.full(4000, 0b01100))  # slot 2: ad 1 with an ad right of it
    _, _, p_alone, _, _, _ = sim.arrange(idx, np.full(4000, 0b00100))
    ratio = p_pair[:, 2] / p_alone[:, 2]  # the adjacency penalty each user applies to the slot-2 ad
    tol = sim.req.tol
    assert ratio[tol < 0.2].mean() < ratio[tol > 0.8].mean() - 0.1  # users who mind ads mind clusters more
    flat = FeedSim(cfg.override({"arrangement_tol_gain": 0.0}), sim.req)
    _, _, q_pair, _, _, _ = flat.arrange(idx, np.full(4000, 0b01100))  # slot 2: ad 1 with an ad right of it
    _, _, q_alone, _, _, _ = flat.arrange(idx, np.full(4000, 0b00100))
    ok = q_alone[:, 2] < 1  # not clipped at probability 1
    assert ok.mean() > 0.9
    np.testing.assert_allclose(q_pair[ok, 2] / q_alone[ok, 2], 1 - SIM.adj_ad_penalty)
    # one ad in slot 0: an irrelevant first ad adds more to leaving than a relevant one
    _, _, _, p_leave, _, _ = sim.arrange(idx, np.full(4000, 0b00001))
    extra = (p_leave - SIM.leave_base) / (1 - tol)
    rel = sim.req.rel_ad[:, 0]
    assert extra[rel < -1].mean() > 1.5 * extra[rel > 1].mean()


def test_oracle_dp_value_matches_its_realised_reward_and_personalisation_pays() -> None:
    cfg = CFG.override({"sim.n_ads": 10, "sim.n_organic": 15})  # short lists: a fast exact DP
    n = 1000
    oracle = OraclePolicy(cfg.sim)
    personal = rollout(cfg, oracle, n, seed=5)  # mu = 0: the DP maximises the expected reward
    # the DP's expected return = the realised mean reward (only the click/leave draws differ)
    sem = 3.0 * np.sqrt(np.var(oracle.start_value) + 4.0) / np.sqrt(n)  # generous: return var < 4
    assert abs(oracle.start_value.mean() - personal["reward"]) < sem
    blind = rollout(cfg, OraclePolicy(cfg.sim, personal=False), n, seed=5)
    consts = [a for a in range(cfg.num_actions) if bin(a).count("1") <= 2]
    best_const = max(rollout(cfg, constant_policy(a), n, seed=5)["reward"] for a in consts)
    assert personal["reward"] > blind["reward"] > best_const


def test_item_level_arrangement_similar_neighbours_compete() -> None:
    """neighbour_similarity w: each item's click logit falls by w·cos(x_i, x_j) per adjacent item."""
    cfg = SIM.override({"neighbour_similarity": 1.0})
    req = make_requests(cfg, 3000, 14)
    idx = np.arange(3000)
    action = np.full(3000, 0b00100)  # organic 0, organic 1, ad 0, organic 2, organic 3
    is_ad, item, p_w, _, _, _ = FeedSim(cfg, req).arrange(idx, action)
    _, _, p_0, _, _, _ = FeedSim(cfg.override({"neighbour_similarity": 0.0}), req).arrange(idx, action)
    unit = {k: v / np.linalg.norm(v, axis=2, keepdims=True) for k, v in req.content.items()}
    ad0, org1, org2 = unit["ad"][:, 0], unit["org"][:, 1], unit["org"][:, 2]
    cos_sum = (ad0 * org1).sum(1) + (ad0 * org2).sum(1)  # the ad's two neighbours
    factor = ad_ctr_factor(SIM, req.tol)  # the slot-2 ad has no ad neighbour and is not on top
    base = p_0[:, 2] / factor  # σ(logit) before the personal factor
    ok = (p_0[:, 2] < 0.999) & (base < 0.999)  # not clipped at 1
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    expected = sigmoid(np.log(base / (1 - base)) - cos_sum) * factor
    ok &= expected < 1
    np.testing.assert_allclose(p_w[ok, 2], expected[ok], rtol=1e-6)
    assert is_ad[:, 2].all() and (item[:, 2] == 0).all()
    # placement now pays per request: the oracle's best pattern per ad count is no longer one pattern
    from workloads.crossdqn.policies import OraclePolicy, patterns_with

    small = cfg.override({"n_ads": 10, "n_organic": 10})
    sim = FeedSim(small, make_requests(small, 300, 15))
    table = OraclePolicy(small, personal=True, actions=patterns_with(5, 2))._solve(sim, 0.0)
    assert len(np.unique(table[:, 0, 0])) >= 5  # the first screen's 2-ad pattern differs by request


def test_one_oracle_object_reused_over_request_sets_acts_as_a_fresh_one() -> None:
    """The DP table is cached per request set: a new set (even at a reused address) is solved anew."""
    from workloads.crossdqn.policies import OraclePolicy

    cfg = CFG.override({"sim.n_ads": 10, "sim.n_organic": 10, "sim.neighbour_similarity": 1.0})
    shared = OraclePolicy(cfg.sim)
    for seed in range(3):
        assert rollout(cfg, shared, 100, seed=seed) == rollout(cfg, OraclePolicy(cfg.sim), 100, seed=seed)
