"""DRL-PUT's choice of the kept iteration from held-out logs (selection.py), on hand-made weights."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.drlput.selection import LEVEL, choose, paired_lower_bounds, snips_by_iteration

A = 25  # actions of the uniform logging policy: μ = 1/A


def _iterations(values: list[float], n: int, seed: int, shared: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Weights (T, n) of greedy policies under uniform logging and rewards (n,) where iteration t's
    chosen action earns ``values[t]`` on average (Bernoulli-like noise of sd ~1). ``shared``: share
    of rows on which every iteration takes the same action."""
    rng = np.random.default_rng(seed)
    logged = rng.integers(0, A, n)
    greedy = rng.integers(0, A, (len(values), n))
    same = rng.random(n) < shared
    greedy[:, same] = greedy[0, same]
    # the reward of a row depends on which iterations' greedy action the logged one is
    mean = np.full(n, 1.0)
    for t, v in enumerate(values):
        mean = np.where(greedy[t] == logged, v, mean)
    rewards = mean + rng.normal(0, 1, n)
    return (greedy == logged) * float(A), rewards


def test_snips_by_iteration_matches_hand_computation() -> None:
    w = np.array([[0.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    r = np.array([5.0, 1.0, 3.0])
    np.testing.assert_allclose(snips_by_iteration(w, r)[0], 2.0)
    assert np.isnan(snips_by_iteration(w, r)[1])


def test_argmax_takes_the_best_estimate_and_paired_the_last_when_they_tie() -> None:
    w, r = _iterations([1.0, 1.0, 1.0, 1.0], 4000, seed=1)
    est = snips_by_iteration(w, r)
    assert choose("argmax", w, r) == int(np.argmax(est))
    assert choose("paired", w, r) == 3  # no earlier iteration is better: the last
    assert paired_lower_bounds(w, r)[-1] == 0.0


def test_paired_keeps_an_earlier_iteration_the_logs_show_is_better() -> None:
    w, r = _iterations([3.0, 1.0, 1.0, 0.0], 20_000, seed=2)  # training went wrong after iteration 1
    assert choose("paired", w, r) == 0
    w, r = _iterations([1.0, 2.0, 1.0, 0.5], 20_000, seed=3)
    assert choose("paired", w, r) == 1


def test_paired_rarely_leaves_the_last_when_no_earlier_iteration_is_better() -> None:
    """Stated error rate: <= LEVEL family-wise (Bonferroni over the earlier iterations)."""
    trials = 60
    moved = sum(choose("paired", *_iterations([1.0] * 5, 3000, seed=100 + k, shared=0.5)) != 4
                for k in range(trials))
    assert moved / trials <= LEVEL + 0.05, moved


def test_undefined_estimates_never_win() -> None:
    w = np.array([[0.0, 0.0], [1.0, 1.0]])
    r = np.array([1.0, 2.0])
    assert choose("argmax", w, r) == 1 and choose("paired", w, r) == 1
    assert choose("argmax", np.zeros((2, 2)), r) == 1  # nothing defined: the last
    with pytest.raises(ValueError, match="selection 'best'"):
        choose("best", w, r)
