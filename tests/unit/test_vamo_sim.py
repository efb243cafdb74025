"""Auction simulator invariants: budgets, GSP prices, exposure, conversions, score, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.vamo.bidders import FixedAlpha
from workloads.vamo.config import SimConfig
from workloads.vamo.sim import run_auctions, score_table, simulate_day, task_metrics, top_bids
from workloads.vamo.world import make_advertisers, make_day, traffic_profile

SMALL = SimConfig(impressions=20_000, steps=12, task_advertisers=(4, 4, 2), chunk_rows=1024)
EXPOSURE = np.array([1.0, 0.8, 0.6])


def _day(cfg: SimConfig = SMALL, scale: float = 1.0, seed: int = 0, day: int = 1):
    return simulate_day(cfg, seed, day, [(np.arange(cfg.n_advertisers), FixedAlpha(scale))])


def test_top_bids_match_a_full_sort() -> None:
    bids = np.random.default_rng(0).random((500, 9)).astype(np.float32)
    idx, val = top_bids(bids, 4)
    np.testing.assert_array_equal(val, -np.sort(-bids, 1)[:, :4])
    np.testing.assert_array_equal(np.take_along_axis(bids, idx, 1), val)


def test_gsp_price_is_the_next_bid_down() -> None:
    rng = np.random.default_rng(1)
    bids = rng.random((2000, 7)).astype(np.float32)
    bids[:50, 2:] = 0.0  # only two bidders: slot 1 sold at the second bid, slots 2-3 unsold
    ranked = -np.sort(-bids, 1)
    auc = run_auctions(bids.copy(), rng.random(2000), EXPOSURE, np.full(7, np.inf))
    sold = auc.winner < 7
    np.testing.assert_array_equal(auc.price[sold], ranked[:, 1:4][sold])
    np.testing.assert_array_equal(np.take_along_axis(bids, np.where(sold, auc.winner, 0), 1)[sold],
                                  ranked[:, :3][sold])
    assert sold[50:].all() and sold[:50, 0].all() and not sold[:50, 1:].any()
    np.testing.assert_array_equal(auc.lwc, ranked[:, 3])
    np.testing.assert_allclose(auc.cost, auc.price * auc.exposed)


def test_reserve_price_leaves_slots_unsold() -> None:
    bids = np.array([[0.5, 0.4, 0.3, 0.005, 0.0]], np.float32)
    auc = run_auctions(bids, np.array([0.0]), EXPOSURE, np.full(5, np.inf), reserve=0.01)
    np.testing.assert_array_equal(auc.winner, [[0, 1, 5]])  # slot 3 would cost 0.005 < reserve
    np.testing.assert_allclose(auc.price, [[0.4, 0.3, 0.0]])


def test_exposure_probabilities_and_nesting() -> None:
    rng = np.random.default_rng(2)
    n = 200_000
    bids = rng.random((n, 5)).astype(np.float32) + 0.1
    auc = run_auctions(bids, rng.random(n), EXPOSURE, np.full(5, np.inf))
    rate = auc.exposed.mean(0)
    se = np.sqrt(EXPOSURE * (1 - EXPOSURE) / n)
    assert np.all(np.abs(rate - EXPOSURE) <= 4 * se + 1e-12), rate
    assert (auc.exposed[:, 1:] <= auc.exposed[:, :-1]).all()  # seen only if the slot above is


def test_budget_cut_hand_case() -> None:
    # advertiser 0 outbids everyone but can pay for one impression: from row 1 on its bid is cut,
    # the others move up and pay the next bid down
    bids = np.array([[1.0, 0.5, 0.4, 0.3, 0.2]] * 3, np.float32)
    remaining = np.array([0.6, 10, 10, 10, 10])
    auc = run_auctions(bids, np.zeros(3), EXPOSURE, remaining)
    np.testing.assert_array_equal(auc.winner, [[0, 1, 2], [1, 2, 3], [1, 2, 3]])
    np.testing.assert_allclose(auc.price, [[0.5, 0.4, 0.3], [0.4, 0.3, 0.2], [0.4, 0.3, 0.2]])
    assert auc.cost[:, 0][auc.winner[:, 0] == 0].sum() <= 0.6
    np.testing.assert_array_equal(bids[:, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(auc.lwc, [0.3, 0.2, 0.2], rtol=1e-6)  # 4th highest bid after the cut


def _sequential_reference(bids: np.ndarray, u: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Impression by impression: run the auction; while a winner would exceed its budget, cut its
    bid from this impression on and run this auction again."""
    bids, left = bids.astype(np.float64).copy(), remaining.astype(np.float64).copy()
    winners = np.full((len(bids), 3), len(remaining))
    for i in range(len(bids)):
        while True:
            order = np.argsort(-bids[i], kind="stable")[:4]
            val = bids[i, order]
            cost = {}
            for k in range(3):
                if val[k] > 0 and val[k + 1] > 0 and u[i] < EXPOSURE[k]:
                    cost[int(order[k])] = val[k + 1]
            over = [j for j, c in cost.items() if c > left[j]]
            if not over:
                break
            bids[i:, over] = 0.0
        for j, c in cost.items():
            left[j] -= c
        sold = [int(order[k]) if val[k] > 0 and val[k + 1] > 0 else len(remaining) for k in range(3)]
        winners[i] = sold
    return winners


def test_budget_enforcement_equals_impression_by_impression_reference() -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        bids = rng.random((300, 6)).astype(np.float32)
        u = rng.random(300)
        remaining = rng.uniform(2, 40, 6)
        auc = run_auctions(bids.copy(), u, EXPOSURE, remaining)
        np.testing.assert_array_equal(auc.winner, _sequential_reference(bids, u, remaining))


def test_budget_never_overspent_within_steps_and_days() -> None:
    rng = np.random.default_rng(3)
    bids = rng.random((5000, 8)).astype(np.float32)
    remaining = rng.uniform(1, 300, 8)
    auc = run_auctions(bids, rng.random(5000), EXPOSURE, remaining)
    spent = np.bincount(auc.winner.ravel(), weights=auc.cost.ravel(), minlength=9)[:8]
    assert (spent <= remaining + 1e-9).all() and auc.cuts > 0
    res = _day(SMALL, scale=5.0)  # overbidding: every budget binds
    spent_day = res.log.cost.sum(0)
    assert (spent_day <= res.day.budget + 1e-6).all()
    assert (spent_day >= res.day.budget - 5.0).mean() > 0.5  # and most are spent to the last bid
    cum = np.cumsum(res.log.cost, 0)
    assert (cum <= res.day.budget[None, :] + 1e-6).all()
    out = res.log.remaining < SMALL.min_remaining_budget
    assert (res.log.alpha[out] == 0).all()  # out of budget: no more bids


def test_conversions_only_on_exposure_and_at_the_rate_of_value() -> None:
    res = _day(SimConfig(impressions=60_000, steps=8, task_advertisers=(4, 4, 2), sigma_ratio=0.15))
    log = res.log
    assert (log.conversions <= log.exposures).all() and (log.exposures <= log.wins).all()
    conv, expected = log.conversions.sum(), log.reward_continuous.sum()
    assert abs(conv - expected) < 4 * np.sqrt(expected) + 1, (conv, expected)
    scores = res.scores()
    cart = res.adv.task == 2
    np.testing.assert_allclose(scores["value"][cart], scores["conversions"][cart])  # a cart counts 1


def test_score_formula_hand_cases() -> None:
    tab = score_table(np.array([10, 10, 0, 4]), np.array([500.0, 300.0, 80.0, 100.0]),
                      np.array([600.0, 300.0, 0.0, 4.0]), np.array([40.0, 40.0, 40.0, 20.0]))
    # realised CPA 50 > 40: (40/50)^2 = 0.64; 30 < 40: no penalty; no conversion: score 0; 25 vs 20
    np.testing.assert_allclose(tab["penalty"], [0.64, 1.0, 1.0, 0.64])
    np.testing.assert_allclose(tab["score"], [6.4, 10.0, 0.0, 2.56])
    np.testing.assert_allclose(tab["task_score"], [384.0, 300.0, 0.0, 2.56])
    m = task_metrics(tab, np.array([0, 0, 1, 2]))
    assert m["gmv"] == pytest.approx(342.0) and m["dir_gmv"] == 0.0 and m["cart"] == pytest.approx(2.56)


def test_seeded_determinism() -> None:
    a, b, c = _day(seed=5), _day(seed=5), _day(seed=6)
    for f in ("cost", "conversions", "value", "pvalue_sum", "remaining"):
        np.testing.assert_array_equal(getattr(a.log, f), getattr(b.log, f))
    assert not np.array_equal(a.log.pvalue_sum, c.log.pvalue_sum)


def test_traffic_profile_and_shift_between_days() -> None:
    prof = traffic_profile(SimConfig(steps=96))
    assert prof.sum() == pytest.approx(1.0) and prof.max() / prof.min() > 2  # a daily cycle
    adv = make_advertisers(SMALL, 0)
    d1, d2 = make_day(SMALL, 0, 1, adv), make_day(SMALL, 0, 9, adv)
    assert d1.impressions != d2.impressions  # traffic level
    assert not np.allclose(d1.log_value, d2.log_value)  # value drift and competitor mix
    assert np.array_equal(make_day(SMALL, 0, 1, adv).step_impressions, d1.step_impressions)
    assert np.bincount(adv.task).tolist() == [4, 4, 2]


def test_regime_shift_is_abrupt_task_specific_and_stays() -> None:
    """From regime_day on, each task's value level moves by its own offset and its value peak by its
    own hours; the days before are the unshifted world's, bit for bit."""
    cfg = SMALL.override({"regime_day": 5, "regime_value": (0.4, -0.3, 0.0), "regime_peak_hours": (-8.0, 0.0, 0.0)})
    adv = make_advertisers(SMALL, 0)
    for day in (1, 4):  # before the regime: the world without it
        a, b = make_day(SMALL, 0, day, adv), make_day(cfg, 0, day, adv)
        np.testing.assert_array_equal(a.log_value, b.log_value)
        np.testing.assert_array_equal(a.step_value, b.step_value)
    offset = np.array([0.4, -0.3, 0.0])[adv.task]
    for day in (5, 9):  # from it on: every day shifted by the same task offsets
        a, b = make_day(SMALL, 0, day, adv), make_day(cfg, 0, day, adv)
        np.testing.assert_allclose(b.log_value - a.log_value, offset, atol=1e-6)
        np.testing.assert_array_equal(a.budget, b.budget)  # nothing else moves
        peak_a, peak_b = a.step_value.argmax(axis=0), b.step_value.argmax(axis=0)
        assert peak_a[1:].tolist() == peak_b[1:].tolist()  # dir_gmv's and cart's peaks stay
        assert (peak_a[0] - peak_b[0]) % SMALL.steps == 8 * SMALL.steps // 24  # gmv's peak: 8 h earlier
    with pytest.raises(ValueError, match="sim.regime_value"):
        SimConfig(regime_value=(0.1, 0.2))


def test_bidders_must_cover_every_advertiser() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        simulate_day(SMALL, 0, 1, [(np.arange(3), FixedAlpha())])


def test_market_sample_for_online_lp() -> None:
    res = simulate_day(SMALL, 0, 0, [(np.arange(10), FixedAlpha())], market_sample=True)
    assert res.market is not None
    assert res.market["pvalue"].shape == (len(res.market["lwc"]), SMALL.n_categories)
    assert res.market["lwc"].mean() == pytest.approx(res.log.lwc_sum.sum() / res.log.rows.sum(), rel=0.1)
