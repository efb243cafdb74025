"""DRL-PUT simulator invariants: events and reward components, the reserve, determinism, the oracle,
the grouped action space and the reward variants."""

from __future__ import annotations

import numpy as np
import pytest

from adray.config import ConfigError
from workloads.drlput import columns as C
from workloads.drlput.actions import ActionSpace, behaviour_probs
from workloads.drlput.config import PARAMS, ActionConfig, DRLPUTConfig, RewardConfig
from workloads.drlput.reward import coefficients, minmax, reward, reward_parts, training_reward
from workloads.drlput.sim import (
    AdRequestEnv,
    eligible,
    make_requests,
    observe,
    outcomes,
    shown_ads,
    shown_ads_all,
)
from workloads.drlput.truth import reward_table

CFG = DRLPUTConfig()
SPACE = ActionSpace(CFG.action)


def _random_params(n: int, seed: int = 0) -> np.ndarray:
    return SPACE.values[np.random.default_rng(seed).integers(0, SPACE.size, n)]


def test_reward_components_equal_the_events() -> None:
    req = make_requests(CFG.sim, 3000, 1)
    comp = outcomes(req, shown_ads(req, _random_params(len(req))))
    camp, click, long_, conv = comp[C.CAMPAIGN], comp[C.CLICK], comp[C.LONG_CLICK], comp[C.CONV]
    assert set(np.unique(click)) <= {0.0, 1.0} and (long_ <= click).all() and (conv <= click).all()
    paid = np.select([camp == 0, camp == 1, camp == 2], [click, conv, np.ones_like(click)], 0.0)  # Eq. 3.3
    np.testing.assert_allclose(comp[C.REVENUE], comp[C.BID] * paid)
    organic = camp == -1
    assert organic.any() and (~organic).any()
    assert (comp[C.REVENUE][organic] == 0).all() and (conv[organic] == 0).all()
    coef, scale = coefficients(CFG.reward)
    row = np.where(organic, 3, camp)
    r_user = coef[row, 0] * click + coef[row, 1] * long_ + coef[row, 2] * conv  # Eq. 3.4
    np.testing.assert_allclose(reward(comp, CFG.reward), scale[row] * comp[C.REVENUE] + r_user)  # Eq. 3.2
    # events of the shown ad, not of another candidate: the click frequency matches its probability
    exp = outcomes(req, shown_ads(req, _random_params(len(req))), expected=True)
    assert abs(click.mean() - exp[C.CLICK].mean()) < 0.03


def test_expected_outcomes_are_the_mean_of_events() -> None:
    """Redrawing only the event uniforms, the events' mean converges to ``expected=True``."""
    req = make_requests(CFG.sim, 400, 2)
    shown = shown_ads(req, _random_params(len(req), 1))
    exp = outcomes(req, shown, expected=True)
    rng = np.random.default_rng(0)
    acc = {k: 0.0 for k in (C.CLICK, C.LONG_CLICK, C.CONV, C.REVENUE)}
    draws = 300
    for _ in range(draws):
        req.u = rng.uniform(size=req.u.shape)
        ev = outcomes(req, shown)
        for k in acc:
            acc[k] = acc[k] + ev[k].mean() / draws
    for k in acc:
        assert acc[k] == pytest.approx(exp[k].mean(), rel=0.05), k


def test_reserve_removes_exactly_the_ads_below_it() -> None:
    req = make_requests(CFG.sim, 2000, 3)
    params = _random_params(len(req), 2)
    params[:, 3] = np.random.default_rng(5).uniform(0, 0.8, len(req))
    ok = eligible(req, params[:, 3])
    np.testing.assert_array_equal(ok, req.value >= params[:, 3:4])
    shown = shown_ads(req, params)
    assert ((shown == -1) == ~ok.any(1)).all()  # organic exactly when no ad clears the reserve
    rows = np.flatnonzero(shown >= 0)
    assert (req.value[rows, shown[rows]] >= params[rows, 3]).all()
    util = req.value + np.einsum("nkm,nm->nk", req.pred, params[:, :3])
    best_eligible = np.where(ok, util, -np.inf).max(1)
    np.testing.assert_allclose(util[rows, shown[rows]], best_eligible[rows])  # Eq. 3.1 argmax
    # raising only the reserve never brings back an ad it removed, and 0 removes none
    zero = params.copy()
    zero[:, 3] = 0.0
    assert (shown_ads(req, zero) >= 0).all()


def test_all_actions_table_matches_one_action_at_a_time() -> None:
    req = make_requests(CFG.sim, 300, 4)
    table = shown_ads_all(req, SPACE.values, chunk=128)
    for a in (0, 7, SPACE.size // 2, SPACE.size - 1):
        np.testing.assert_array_equal(table[:, a], shown_ads(req, np.repeat(SPACE.values[[a]], len(req), 0)))


def test_seeded_determinism() -> None:
    a, b, c = (make_requests(CFG.sim, 500, s) for s in (9, 9, 10))
    np.testing.assert_array_equal(observe(a), observe(b))
    np.testing.assert_array_equal(a.pred, b.pred)
    params = _random_params(500)
    ra, rb = (reward(outcomes(r, shown_ads(r, params)), CFG.reward) for r in (a, b))
    np.testing.assert_array_equal(ra, rb)
    assert not np.array_equal(observe(a), observe(c))


def test_oracle_is_at_least_every_fixed_action() -> None:
    req = make_requests(CFG.sim, 1000, 11)
    table = reward_table(CFG, req, SPACE)  # (N, A) true expected rewards
    assert (table.max(1)[:, None] >= table).all()
    assert table.max(1).mean() >= table.mean(0).max()
    assert table.max(1).mean() > 1.05 * table.mean(0).max()  # and by a margin (the benchmark's +17%)


def test_personalisation_and_seasonality_change_the_best_action() -> None:
    """The best action differs by user segment and hour; without the models' errors and the
    organic alternative's spread it would not (one action would serve everyone)."""
    req = make_requests(CFG.sim, 6000, 12)
    table = reward_table(CFG, req, SPACE)
    dwell = req.z[:, 1] > np.quantile(req.z[:, 1], 0.75)
    shy = req.z[:, 1] < np.quantile(req.z[:, 1], 0.25)
    best_dwell, best_shy = table[dwell].mean(0).argmax(), table[shy].mean(0).argmax()
    assert SPACE.values[best_dwell, 3] > SPACE.values[best_shy, 3]  # dwellers: higher reserve (organic)
    evening = np.isin(req.state["hour"], [18, 19, 20, 21])  # conversions up, the CVR model misses it
    day = np.isin(req.state["hour"], [12, 13, 14, 15, 16])
    best_evening, best_day = table[evening].mean(0).argmax(), table[day].mean(0).argmax()
    assert best_evening != best_day
    assert table[evening].mean(0)[best_evening] > 1.01 * table[evening].mean(0)[best_day]


def test_gym_env_one_step_episodes() -> None:
    from gymnasium.utils.env_checker import check_env

    env = AdRequestEnv({"cfg": CFG.override({"sim.n_ads": 4}).to_dict()})
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs) and obs.shape == (len(C.STATE),)
    _, r, terminated, truncated, info = env.step(5)
    assert terminated and not truncated and np.isfinite(r) and set(info) == set(C.OUTCOME)


# ------------------------------------------------------------------------------- action space
def test_grouped_action_space_shares_values_and_round_trips() -> None:
    space = ActionSpace(ActionConfig(n_values=4))
    assert space.size == 4**3 and space.values.shape == (64, len(PARAMS))
    np.testing.assert_allclose(space.values[:, 0] / 3.0, space.values[:, 1] / 8.0)  # grouped: one index
    np.testing.assert_allclose(np.unique(space.values[:, 3]), [0.0, 0.8 / 3, 1.6 / 3, 0.8])
    np.testing.assert_array_equal(space.encode(space.index), np.arange(space.size))
    assert len({tuple(v) for v in space.values}) == space.size
    ungrouped = ActionSpace(ActionConfig(n_values=3, groups=(("w_click",), ("w_long",), ("w_conv",), ("reserve",))))
    assert ungrouped.size == 81


def test_action_space_limit_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"n_values=9 with 4 groups gives \|A\| = 9\^4 = 6561 actions; the limit is 4096"):
        DRLPUTConfig().override({"action.n_values": 9, "action.groups": [["w_click"], ["w_long"], ["w_conv"], ["reserve"]]})
    with pytest.raises(ConfigError, match="groups"):
        ActionConfig(groups=(("w_click",), ("w_conv",), ("reserve",)))  # w_long in no group


def test_behaviour_policies() -> None:
    uni = behaviour_probs(SPACE, "uniform", 0.25)
    gauss = behaviour_probs(SPACE, "gaussian", 0.25)
    assert uni.sum() == pytest.approx(1) and gauss.sum() == pytest.approx(1) and (gauss > 0).all()
    prod = SPACE.nearest(CFG.action.production)
    assert gauss.argmax() == prod and gauss[prod] > 20 * gauss.min()
    np.testing.assert_allclose(SPACE.values[prod], [0.75, 2.0, 4.0, 0.2])


# ------------------------------------------------------------------------------- reward variants
def test_reward_variants() -> None:
    comp = {C.CAMPAIGN: np.array([0, 1, 2, -1]), C.BID: np.array([0.5, 4.0, 0.04, 0.0]),
            C.REVENUE: np.array([0.5, 4.0, 0.04, 0.0]), C.CLICK: np.ones(4), C.LONG_CLICK: np.ones(4),
            C.CONV: np.array([0.0, 1.0, 0.0, 0.0])}
    r0 = RewardConfig()
    np.testing.assert_allclose(reward(comp, r0), [0.5 + 1 + 2, 4 + 0.5 + 1 + 4, 0.04 + 1 + 2, 1.5 * (1 + 2)])
    np.testing.assert_allclose(reward(comp, RewardConfig(variant="R1")), comp[C.REVENUE])
    np.testing.assert_allclose(reward(comp, RewardConfig(variant="R2")), [3.5, 7.0, 3.04, 4.5])
    np.testing.assert_allclose(reward(comp, RewardConfig(variant="R3")), [3.5, 7.0, 0.08, 4.5])
    np.testing.assert_allclose(reward(comp, RewardConfig(variant="R4")), [3.5, 8.0, 0.08, 4.5])
    r_rev, r_user = reward_parts(comp, RewardConfig(variant="R1"))
    assert (r_user == 0).all()


def test_minmax_and_training_reward() -> None:
    np.testing.assert_allclose(minmax(np.array([1.0, 3.0, 2.0])), [0.0, 1.0, 0.5])
    assert (minmax(np.full(3, 2.0)) == 0).all()
    comp = {C.CAMPAIGN: np.array([0, 0]), C.REVENUE: np.array([0.0, 0.5]), C.CLICK: np.array([0.0, 1.0]),
            C.LONG_CLICK: np.zeros(2), C.CONV: np.zeros(2), C.PRED_CLICK: np.array([0.1, 0.3]),
            C.PRED_LONG: np.array([0.05, 0.05]), C.PRED_CONV: np.array([0.01, 0.02])}
    # predicted: each probability min-max normalised in the batch, then Eq. 3.4 (click: alpha=1, beta=2)
    np.testing.assert_allclose(training_reward(comp, RewardConfig(), "predicted", False), [0.0, 0.5 + 1.0])
    np.testing.assert_allclose(training_reward(comp, RewardConfig(), "events", True), [0.0, 1.0])
