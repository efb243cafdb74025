"""PWiseR loss (Eq. 2) against a brute-force loop over pairs, a hand-computed example and edge batches."""

import itertools

import numpy as np
import pytest
import torch

from workloads.pwiser.train import ctcvr_bce, pwiser_term


def brute_force(p, click, conv, m1, m2, form):  # noqa: ANN001, ANN201
    """Eq. 2 term by term, with the paper's symbols: N click-only, M conversions, K no-clicks."""
    conv_idx = [j for j in range(len(p)) if conv[j] == 1]
    cnc_idx = [i for i in range(len(p)) if click[i] == 1 and conv[i] == 0]
    zero_idx = [k for k in range(len(p)) if click[k] == 0 and conv[k] == 0]

    def active(pj: float, pi: float, m: float) -> bool:
        return pj < pi + m if form == "hinge" else pj < pi - m

    t1 = sum((p[i] - p[j] + m1) ** 2 for i in cnc_idx for j in conv_idx if i != j and active(p[j], p[i], m1))
    t2 = sum((p[k] - p[j] + m2) ** 2 for k in zero_idx for j in conv_idx if k != j and active(p[j], p[k], m2))
    return (t1 / len(cnc_idx) if cnc_idx else 0.0) + (t2 / len(zero_idx) if zero_idx else 0.0)


def random_batch(seed: int, n: int = 64):  # noqa: ANN201
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.3).astype(np.float64)
    conv = click * (rng.random(n) < 0.4)
    return rng.random(n), click, conv


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("form", ["hinge", "literal"])
def test_matches_brute_force_on_random_batches(seed: int, form: str) -> None:
    p, click, conv = random_batch(seed)
    m1, m2 = 0.1 + 0.1 * seed % 0.3, 0.3
    got = pwiser_term(torch.tensor(p), torch.tensor(click), torch.tensor(conv), m1, m2, form)
    assert float(got) == pytest.approx(brute_force(p, click, conv, m1, m2, form), rel=1e-9, abs=1e-12)


EDGE_BATCHES = {
    "no conversions": ([0.2, 0.5, 0.9], [1, 0, 1], [0, 0, 0]),
    "no clicks": ([0.2, 0.5, 0.9], [0, 0, 0], [0, 0, 0]),
    "no click-only": ([0.2, 0.5, 0.9], [1, 0, 0], [1, 0, 0]),
    "no non-clicks": ([0.2, 0.5, 0.9], [1, 1, 1], [1, 0, 1]),
    "all conversions": ([0.2, 0.5], [1, 1], [1, 1]),
    "single row": ([0.4], [1], [1]),
}


@pytest.mark.parametrize("name", list(EDGE_BATCHES))
@pytest.mark.parametrize("form", ["hinge", "literal"])
def test_edge_batches_finite_and_match(name: str, form: str) -> None:
    p, click, conv = (np.array(a, dtype=np.float64) for a in EDGE_BATCHES[name])
    pt = torch.tensor(p, requires_grad=True)
    got = pwiser_term(pt, torch.tensor(click), torch.tensor(conv), 0.3, 0.3, form)
    got.backward()
    assert torch.isfinite(got) and torch.isfinite(pt.grad).all()
    assert float(got.detach()) == pytest.approx(brute_force(p, click, conv, 0.3, 0.3, form), abs=1e-12)
    if name in ("no conversions", "no clicks", "all conversions", "single row"):
        assert float(got.detach()) == 0.0


def test_hand_computed_example() -> None:
    # p: conversion 0.5; click-only 0.6, 0.1; no-clicks 0.4, 0.0. m1 = 0.3, m2 = 0.2.
    # term1 (N=2): (0.6-0.5+0.3)^2 + (0.1-0.5+0.3 = -0.1 -> inactive) = 0.16 -> 0.16/2 = 0.08
    # term2 (K=2): (0.4-0.5+0.2)^2 = 0.01 + (0.0-0.5+0.2 < 0 -> 0) -> 0.01/2 = 0.005
    p = torch.tensor([0.5, 0.6, 0.1, 0.4, 0.0])
    click = torch.tensor([1.0, 1, 1, 0, 0])
    conv = torch.tensor([1.0, 0, 0, 0, 0])
    assert float(pwiser_term(p, click, conv, 0.3, 0.2, "hinge")) == pytest.approx(0.085)
    # literal indicator p_j < p_i - m: only 0.5 < 0.6 - 0.3? no; 0.5 < 0.4 - 0.2? no -> 0
    assert float(pwiser_term(p, click, conv, 0.3, 0.2, "literal")) == 0.0
    p2 = torch.tensor([0.1, 0.9, 0.0])  # conversion 0.1 < 0.9 - 0.3 -> (0.9-0.1+0.3)^2 = 1.21, N=1
    assert float(pwiser_term(p2, torch.tensor([1.0, 1, 0]), torch.tensor([1.0, 0, 0]), 0.3, 0.3, "literal")) == (
        pytest.approx(1.21)
    )


def test_sum_over_conversions_is_not_normalised_by_m() -> None:
    # Eq. 2 as written: doubling the conversion samples doubles the term (1/N, 1/K only).
    p1 = torch.tensor([0.2, 0.5, 0.4])
    one = pwiser_term(p1, torch.tensor([1.0, 1, 0]), torch.tensor([1.0, 0, 0]), 0.3, 0.3)
    p2 = torch.tensor([0.2, 0.2, 0.5, 0.4])
    two = pwiser_term(p2, torch.tensor([1.0, 1, 1, 0]), torch.tensor([1.0, 1, 0, 0]), 0.3, 0.3)
    assert float(two) == pytest.approx(2 * float(one))


def test_gradient_raises_conversions_and_lowers_others() -> None:
    p = torch.tensor([0.3, 0.5, 0.4], requires_grad=True)
    pwiser_term(p, torch.tensor([1.0, 1, 0]), torch.tensor([1.0, 0, 0]), 0.3, 0.3).backward()
    assert p.grad[0] < 0 and p.grad[1] > 0 and p.grad[2] > 0  # descent pushes p_conv up, others down


@pytest.mark.parametrize("zc, zv", itertools.product([-30.0, -2.0, 0.0, 3.0, 30.0], [-30.0, 0.5, 30.0]))
def test_ctcvr_bce_matches_naive_and_is_finite(zc: float, zv: float) -> None:
    zc_t = torch.tensor([zc, zc], dtype=torch.float64, requires_grad=True)
    zv_t = torch.tensor([zv, zv], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0], dtype=torch.float64)
    got = ctcvr_bce(zc_t, zv_t, y)
    got.backward()
    assert torch.isfinite(got.detach()) and torch.isfinite(zc_t.grad).all()
    p = torch.sigmoid(zc_t.detach()) * torch.sigmoid(zv_t)
    if 1e-6 < float(p[0]) < 1 - 1e-6:
        naive = torch.nn.functional.binary_cross_entropy(p, y)
        assert float(got.detach()) == pytest.approx(float(naive), rel=1e-6)
