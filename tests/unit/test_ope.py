"""Off-policy estimators against hand-computed values, known true values and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from adray import ope

R, PI, MU = [1.0, 0.0, 2.0], [1.0, 0.0, 1.0], [0.5, 0.5, 0.25]  # rho = [2, 0, 4]


def test_one_step_estimators_by_hand() -> None:
    assert ope.ips(R, PI, MU).value == pytest.approx(10 / 3)  # (2·1 + 0 + 4·2) / 3
    assert ope.snips(R, PI, MU).value == pytest.approx(10 / 6)  # 10 / (2 + 0 + 4)
    q, v = [0.5, 0.2, 1.0], [0.6, 0.1, 0.9]
    # v + rho (r - q): 0.6 + 2·0.5, 0.1 + 0, 0.9 + 4·1
    assert ope.dr(R, PI, MU, q, v).value == pytest.approx((1.6 + 0.1 + 4.9) / 3)
    assert ope.ips(R, PI, MU).ess == pytest.approx(36 / 20)  # (Σρ)² / Σρ²


def _two_episodes() -> ope.Trajectories:
    # episode 0: two decisions, rho 2 then 0.5; episode 1: one decision, rho 0.5 (rows shuffled)
    return ope.Trajectories.from_rows(
        episode_ids=[7, 3, 7], steps=[1, 0, 0], rewards=[1.0, 3.0, 1.0],
        target_prob=[0.5, 0.5, 1.0], logging_prob=[1.0, 1.0, 0.5], gamma=0.5,
        q_logged=[0.5, 2.0, 0.5], v_target=[0.8, 2.5, 1.0])


def test_trajectory_estimators_by_hand() -> None:
    traj = _two_episodes()
    # episode ids sort as 3, 7: rows are (e1 = id 3: one step), (e0 = id 7: two steps)
    # PDIS: e0 2·1 + 0.5·(2·0.5)·1 = 2.5; e1 0.5·3 = 1.5 -> 2.0
    assert ope.pdis(traj).value == pytest.approx(2.0)
    # WPDIS: step 0 (2·1 + 0.5·3) / 2.5 = 1.4; step 1: weights 1 (e0) and 0.5 (e1 absorbed, r = 0)
    # -> 1 / 1.5; total 1.4 + 0.5 · 2/3
    assert ope.wpdis(traj).value == pytest.approx(1.4 + 0.5 * 2 / 3)
    # DR: e0 t0 2(1-0.5) + 1·1 = 2, t1 1(1-0.5) + 2·0.8 = 2.1 -> 2 + 0.5·2.1 = 3.05; e1 0.5(3-2) + 2.5 = 3
    assert ope.dr_trajectory(traj).value == pytest.approx((3.05 + 3.0) / 2)
    assert ope.wdr(traj).std_err >= 0


def test_on_policy_logs_give_the_plain_average_return() -> None:
    rng = np.random.default_rng(0)
    eps = np.repeat(np.arange(50), 3)
    steps = np.tile(np.arange(3), 50)
    r = rng.normal(size=150)
    mu = rng.uniform(0.1, 1.0, 150)
    traj = ope.Trajectories.from_rows(eps, steps, r, mu, mu, gamma=1.0)  # pi = mu: rho = 1
    expected = r.reshape(50, 3).sum(1).mean()
    for name, est in ope.TRAJECTORY_ESTIMATORS.items():
        assert est(traj).value == pytest.approx(expected), name


def test_estimators_recover_a_known_value_from_exploratory_logs() -> None:
    """Two-step MDP: behaviour uniform over {0, 1}; target always 1. Action 1 earns 1 (+noise) and
    the episode goes on with probability 0.5 (action 0: 0.9). True value: 1 + γ·0.5·1."""
    rng = np.random.default_rng(1)
    n, gamma = 20_000, 0.8
    rows = {"eps": [], "t": [], "r": [], "pi": [], "mu": [], "q": [], "v": []}
    alive, a = np.arange(n), np.zeros(n, np.int64)
    for t in range(2):
        if t > 0:  # who goes on to the second decision
            alive = alive[rng.uniform(size=len(alive)) < np.where(a == 1, 0.5, 0.9)]
        a = rng.integers(0, 2, len(alive))
        r = a + rng.normal(0, 0.5, len(alive))
        for key, v in (("eps", alive), ("t", np.full(len(alive), t)), ("r", r), ("pi", (a == 1) * 1.0),
                       ("mu", np.full(len(alive), 0.5)), ("q", a * 0.8), ("v", np.full(len(alive), 0.8))):
            rows[key].append(v)
    cols = {k: np.concatenate(v) for k, v in rows.items()}
    truth = 1 + gamma * 0.5
    traj = ope.Trajectories.from_rows(cols["eps"], cols["t"], cols["r"], cols["pi"], cols["mu"], gamma,
                                      cols["q"], cols["v"])
    for name, est in ope.TRAJECTORY_ESTIMATORS.items():
        e = est(traj)
        assert abs(e.value - truth) < 4 * e.std_err + 0.01, (name, e, truth)
        assert 0 < e.ess < n
    first = cols["t"] == 0  # one-step: the value of the first decision is 1
    assert ope.ips(cols["r"][first], cols["pi"][first], cols["mu"][first]).value == pytest.approx(1.0, abs=0.04)
    assert ope.snips(cols["r"][first], cols["pi"][first], cols["mu"][first]).value == pytest.approx(1.0, abs=0.02)


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match="logging_prob.*\\(0, 1\\]"):
        ope.ips(R, PI, [0.5, 0.0, 0.25])
    with pytest.raises(ValueError, match="target_prob.*\\[0, 1\\]"):
        ope.snips(R, [1.5, 0, 1], MU)
    with pytest.raises(ValueError, match="q_logged: expected 3 values"):
        ope.dr(R, PI, MU, [0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="rewards: expected finite"):
        ope.ips([1.0, np.nan, 2.0], PI, MU)
    with pytest.raises(ValueError, match="steps: expected each episode"):
        ope.Trajectories.from_rows([0, 0], [0, 2], [1.0, 1.0], [1, 1], [1, 1], gamma=1.0)
    with pytest.raises(ValueError, match="gamma"):
        ope.Trajectories.from_rows([0], [0], [1.0], [1], [1], gamma=0.0)
