"""The VAMO network: TimesNet periods, windows, causality, batch independence, heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workloads.vamo.batches import Sampler, make_batch
from workloads.vamo.model import TimesBlock, VamoNet, dominant_periods


def _net(temporal: str = "timesnet", context: int = 5, history: int = 8) -> VamoNet:
    torch.manual_seed(0)
    return VamoNet(n_tasks=3, context=context, history=history, hidden=16, layers=2, heads=2, dropout=0.0,
                   temporal=temporal, periods=(4, 2), kernels=2, head_hidden=8, max_steps=12,
                   state_mean=[0.0] * 16, state_std=[1.0] * 16).eval()


def _arrays(m: int = 6, steps: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    valid = np.ones((m, steps), bool)
    valid[0, 7:] = False  # a trajectory that ends early
    return {"states": rng.normal(size=(m, steps, 16)).astype(np.float32) * valid[..., None],
            "action": rng.uniform(0.5, 1.5, (m, steps)).astype(np.float32) * valid,
            "rtg": rng.uniform(0, 5, (m, steps)).astype(np.float32), "valid": valid, "task": np.arange(m) % 3}


def test_dominant_periods_find_the_planted_period() -> None:
    t = np.arange(16)
    rng = np.random.default_rng(0)
    x = np.sin(2 * np.pi * t / 4)[None, :, None] + 0.1 * rng.normal(size=(64, 16, 3))
    assert dominant_periods(x, 1) == (4,)
    x = x + 0.5 * np.sin(2 * np.pi * t / 8)[None, :, None]
    assert dominant_periods(x, 2) == (8, 4)


def test_times_block_shapes_and_amplitude_weights() -> None:
    block = TimesBlock(length=10, channels=3, periods=(4, 3), kernels=2)  # 10 is not a multiple: padded
    x = torch.randn(5, 10, 3)
    assert block(x).shape == (5, 10, 3)


def test_make_batch_windows() -> None:
    a = _arrays()
    b = make_batch(a, np.array([1, 1]), np.array([9, 2]), context=3, history=4, rtg_scale=2.0)
    np.testing.assert_array_equal(b["ext"][0].numpy(), a["states"][1, 3:10])  # steps t-L-H+1 .. t
    np.testing.assert_array_equal(b["ext"][1, :4].numpy(), 0.0)  # before the day starts
    np.testing.assert_array_equal(b["ext"][1, 4:].numpy(), a["states"][1, 0:3])
    np.testing.assert_array_equal(b["ext_valid"][1].numpy(), [False] * 4 + [True] * 3)
    np.testing.assert_allclose(b["prev_action"][0].numpy(), a["action"][1, 6:9])
    np.testing.assert_allclose(b["prev_action"][1].numpy(), [0.0, a["action"][1, 0], a["action"][1, 1]])
    np.testing.assert_allclose(b["target"][0].numpy(), a["action"][1, 7:10])
    np.testing.assert_allclose(b["rtg"][0].numpy(), a["rtg"][1, 7:10] / 2.0)
    np.testing.assert_array_equal(b["step"][0].numpy(), [7, 8, 9])


def test_sampler_matches_task_shares_and_stays_in_trajectories() -> None:
    a = _arrays()
    s = Sampler(a, 3)
    m, t = s.sample(300, np.random.default_rng(0))
    assert a["valid"][m, t].all()
    np.testing.assert_allclose(np.bincount(a["task"][m], minlength=3) / 300, s.shares, atol=0.01)
    stl = Sampler(a, 3, tasks=(2,))
    assert (a["task"][stl.sample(50, np.random.default_rng(0))[0]] == 2).all()


@pytest.mark.parametrize("temporal", ["timesnet", "lstm", "none"])
def test_causal_and_batch_independent(temporal: str) -> None:
    net, a = _net(temporal), _arrays()
    m, t = np.array([2, 3, 4, 5]), np.array([11, 6, 3, 8])
    b = make_batch(a, m, t, 5, 8, 1.0)
    with torch.no_grad():
        out = net(b["ext"], b["ext_valid"], b["prev_action"], b["rtg"], b["step"], b["task"])
        assert out.shape == (4, 5)
        one = make_batch(a, m[1:2], t[1:2], 5, 8, 1.0)
        single = net(one["ext"], one["ext_valid"], one["prev_action"], one["rtg"], one["step"], one["task"])
        torch.testing.assert_close(single[0], out[1], rtol=1e-5, atol=1e-6)
        ext = b["ext"].clone()
        ext[:, -1] += 5.0  # change the last step's state: earlier positions must not move
        moved = net(ext, b["ext_valid"], b["prev_action"], b["rtg"], b["step"], b["task"])
    torch.testing.assert_close(moved[:, :-1], out[:, :-1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(moved[:, -1], out[:, -1])


def test_heads_are_task_specific_and_excluded_from_shared() -> None:
    net, a = _net(), _arrays()
    b = make_batch(a, np.array([0]), np.array([5]), 5, 8, 1.0)
    with torch.no_grad():
        outs = [net(b["ext"], b["ext_valid"], b["prev_action"], b["rtg"], b["step"], torch.tensor([k]))
                for k in range(3)]
    assert not torch.allclose(outs[0], outs[1])
    shared = {id(p) for p in net.shared_parameters()}
    assert not any(id(p) in shared for p in net.heads.parameters())
    assert len(shared) == len(list(net.parameters())) - len(list(net.heads.parameters()))
