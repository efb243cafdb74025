"""The gate's decision rule on arrays (``adray.promote.decide``): hand-computed values, the support
rule, the strict rule, a simulated error rate, bad input. No registry, no Ray."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adray import ope
from adray.promote import decide

Z95 = 1.6448536269514722


def test_paired_difference_by_hand() -> None:
    # rows (r, π, μ): w = (2, 0, 4, 1); floor 0 -> d = (w - 1) r = (1, -3, 3·2, 0)
    r, pi, mu = [1.0, 3.0, 2.0, 0.0], [1.0, 0.0, 1.0, 0.5], [0.5, 0.5, 0.25, 0.5]
    g = decide(r, pi, mu, min_rows=2)
    d = np.array([1.0, -3.0, 6.0, 0.0])
    assert g.serving.value == pytest.approx(1.5) and g.candidate.value == pytest.approx((2 + 0 + 8 + 0) / 4)
    assert g.difference == pytest.approx(d.mean()) == pytest.approx(g.candidate.value - g.serving.value)
    assert g.difference_se == pytest.approx(d.std(ddof=1) / 2)
    assert g.lower_bound == pytest.approx(d.mean() - Z95 * d.std(ddof=1) / 2)
    assert g.threshold == pytest.approx(-0.01 * 1.5) and g.unsupported == 0 and g.agreement == pytest.approx(0.625)
    assert g.decision == ("promote" if g.lower_bound >= g.threshold else "hold")
    # a floor of -1 measures rewards from -1: d = (w - 1)(r + 1) = (2, -4, 9, 0)
    f = decide(r, pi, mu, min_rows=2, reward_floor=-1.0)
    assert f.difference == pytest.approx(np.mean([2, -4, 9, 0]))
    assert f.candidate.value == pytest.approx(-1 + np.mean([4, 0, 12, 1]))


def test_unseen_mass_counts_at_the_floor_so_a_rarely_logged_change_is_not_valued_at_the_agreeing_rows() -> None:
    """The candidate changes 96% of the decisions to an action the ε-greedy log (ε = 0.05, |A| = 125)
    shows with μ = 0.0004: in 1000 rows it rarely appears. SNIPS then reports the agreeing rows'
    mean (what the old gate promoted); the floor-anchored IPS counts the unseen mass at the floor."""
    rng = np.random.default_rng(0)
    n, a_size, eps = 1000, 125, 0.05
    changed = rng.random(n) < 0.96
    explored = rng.random(n) < eps
    hit = explored & (rng.integers(0, a_size, n) == 1)  # the uniform draw took the candidate's action
    logged_greedy = ~explored | (rng.integers(0, a_size, n) == 0)
    mu = np.where(logged_greedy & ~hit, 1 - eps + eps / a_size, eps / a_size)
    pi = np.where(changed, hit.astype(float), (logged_greedy & ~hit).astype(float))
    r = rng.binomial(1, 0.3, n).astype(float)  # the changed decisions would earn 0, but the log cannot see it
    g = decide(r, pi, mu)
    assert g.decision == "hold" and g.difference < -0.2
    snips = ope.snips(r, pi, mu)
    assert math.isnan(snips.value) or snips.value > 0.2  # what SNIPS would have reported


def test_support_rule_and_deterministic_logs() -> None:
    n = 400
    r = np.random.default_rng(1).binomial(1, 0.5, n).astype(float)
    ones = np.ones(n)
    # a deterministic log (μ = 1) is recognised without being told: a candidate with 30% of its mass
    # elsewhere cannot be valued, and the reason says what to change
    g = decide(r, np.full(n, 0.7), ones, advice="serve with serve_epsilon >= 0.2")
    assert g.decision == "cannot_value" and g.unsupported == pytest.approx(0.3)
    assert "30.0% of the candidate's probability mass" in g.reason and "serve_epsilon >= 0.2" in g.reason
    # within max_unsupported: valued, but without the margin, and every d_i <= 0 on a deterministic log
    g = decide(r, np.full(n, 0.995), ones)
    assert g.unsupported == pytest.approx(0.005) and g.threshold == 0 and g.decision == "hold"
    assert (g.difference <= 0) and "no margin" in g.reason
    # the identical deterministic candidate: d = 0, promoted under non_inferior, held under superior
    assert decide(r, ones, ones).decision == "promote"
    assert decide(r, ones, ones, rule="superior").decision == "hold"
    # a caller's u_i is taken (here: the log's policy could not take half the candidate's actions)
    g = decide(r, np.full(n, 0.5), np.full(n, 0.5), unsupported=np.full(n, 0.5))
    assert g.decision == "cannot_value" and g.unsupported == pytest.approx(0.5)
    assert decide(r, ones, ones, min_rows=n + 1).decision == "cannot_value"


@pytest.mark.parametrize("effect,max_rate", [(-0.05, 0.05), (0.0, None)])
def test_error_rate_on_simulated_logs(effect: float, max_rate: float | None) -> None:
    """Two actions, uniform logging; the candidate always takes action 1, whose mean reward is
    (1 + effect) x the serving policy's. Over 300 logs of 500 rows a 5%-worse candidate is promoted
    at most at the stated α under non_inferior (margin 1%); the strict rule promotes an equal one
    at most at α too."""
    rng = np.random.default_rng(2)
    base = 0.4
    p1 = 2 * base * (1 + effect) / (2 + effect)  # serving (uniform) mean = (p0 + p1)/2 = base
    p0 = 2 * base - p1
    promoted = {"non_inferior": 0, "superior": 0}
    for _ in range(300):
        a = rng.integers(0, 2, 500)
        r = rng.binomial(1, np.where(a == 1, p1, p0)).astype(float)
        for rule in promoted:
            promoted[rule] += decide(r, (a == 1).astype(float), np.full(500, 0.5), rule=rule).promoted
    rates = {k: v / 300 for k, v in promoted.items()}
    if max_rate is not None:
        assert rates["non_inferior"] <= max_rate, rates
    else:
        assert rates["superior"] <= 0.05 + 0.03, rates  # α plus Monte-Carlo slack (300 logs)


@pytest.mark.parametrize("kwargs,match", [
    ({"rule": "best"}, "rule='best'"), ({"alpha": 0.7}, "alpha=0.7"), ({"margin": -0.1}, "margin=-0.1"),
    ({"max_unsupported": 1.0}, "max_unsupported=1.0"), ({"min_rows": 1}, "min_rows=1"),
    ({"reward_floor": 0.5}, "reward_floor 0.5"), ({"unsupported": [0.0, 2.0, 0.0]}, "unsupported"),
])
def test_bad_input_is_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decide([0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], **{"min_rows": 2, **kwargs})
    with pytest.raises(ValueError, match="logging_prob"):
        decide([0.0, 1.0], [1.0, 1.0], [0.0, 1.0], min_rows=2)


def test_snips_bootstrap_skips_resamples_with_zero_total_weight() -> None:
    """One row of 20 carries all the weight: about 1/e of the resamples miss it and have no
    defined SNIPS. They used to count as 0, which made the spread look like a real one."""
    r = np.zeros(20)
    r[0] = 1.0
    pi = np.zeros(20)
    pi[0] = 1.0
    est = ope.snips(r, pi, np.full(20, 0.5))
    assert est.value == 1.0 and est.std_err == 0.0  # every defined resample gives exactly 1
    assert math.isnan(ope.snips(r, np.zeros(20), np.full(20, 0.5)).value)  # no weight at all: undefined
    assert ope.snips(r, np.zeros(20), np.full(20, 0.5)).std_err == math.inf
