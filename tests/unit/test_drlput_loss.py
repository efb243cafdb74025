"""DRL-PUT losses against hand-computed values; the estimators' fixed points; the module without Ray."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workloads.drlput import columns as C
from workloads.drlput.losses import critic_loss, entropy, importance_weights, policy_gradient_loss

LOGITS = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), math.log(2.0)]])  # π = (1/4, 3/4), (1/2, 1/2)
ACTIONS = torch.tensor([1, 0])
REWARDS = torch.tensor([2.0, 1.0])
MU = torch.tensor([0.5, 0.25])


def test_reinforce_loss_is_eq_4_1_by_hand() -> None:
    w = importance_weights(LOGITS, ACTIONS, MU, "none")
    loss = policy_gradient_loss(LOGITS, ACTIONS, REWARDS, w)
    expected = -(2.0 * math.log(0.75) + 1.0 * math.log(0.5)) / 2  # -(1/B) Σ r log π(a|s)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_importance_weights_by_hand() -> None:
    np.testing.assert_allclose(importance_weights(LOGITS, ACTIONS, MU, "inverse"), [1 / (2 * 0.5), 1 / (2 * 0.25)])
    np.testing.assert_allclose(importance_weights(LOGITS, ACTIONS, MU, "ratio"), [0.75 / 0.5, 0.5 / 0.25], rtol=1e-6)
    with pytest.raises(ValueError, match="importance='x'"):
        importance_weights(LOGITS, ACTIONS, MU, "x")


def test_actor_critic_loss_by_hand() -> None:
    values = torch.tensor([1.5, 1.5], requires_grad=True)
    logits = LOGITS.clone().requires_grad_(True)
    w = importance_weights(logits, ACTIONS, MU, "ratio")
    loss = policy_gradient_loss(logits, ACTIONS, REWARDS, w, values)
    expected = -(1.5 * 0.5 * math.log(0.75) + 2.0 * (-0.5) * math.log(0.5)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert values.grad is None or (values.grad == 0).all()  # the baseline is not trained by the actor
    assert critic_loss(torch.tensor([1.5, 1.5]), REWARDS).item() == pytest.approx((0.25 + 0.25) / 2)
    assert entropy(LOGITS).item() == pytest.approx(
        (-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) + math.log(2)) / 2, rel=1e-6)


def test_gradient_direction_is_reward_weighted_log_likelihood() -> None:
    """∂L/∂logits = -(1/B) w r (onehot(a) - π): the logged action's logit rises by its reward."""
    logits = LOGITS.clone().requires_grad_(True)
    policy_gradient_loss(logits, ACTIONS, REWARDS, torch.ones(2)).backward()
    pi = torch.softmax(LOGITS, -1)
    onehot = torch.nn.functional.one_hot(ACTIONS, 2).float()
    np.testing.assert_allclose(logits.grad, -(REWARDS[:, None] * (onehot - pi)) / 2, rtol=1e-6)


def _fit(mu: np.ndarray, r: np.ndarray, mode: str, steps: int = 400) -> np.ndarray:
    """Fixed point of the expected gradient for one state: Σ_a μ(a) w(a) r(a) ∇log π(a)."""
    logits = torch.zeros(1, len(r), requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    acts, mus, rs = torch.arange(len(r)), torch.as_tensor(mu, dtype=torch.float32), torch.as_tensor(r, dtype=torch.float32)
    for _ in range(steps):
        lg = logits.expand(len(r), -1)
        w = importance_weights(lg, acts, mus, mode)
        loss = len(r) * policy_gradient_loss(lg, acts, mus * rs, w)  # expectation over a ~ μ
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(logits, -1).detach().numpy()[0]


def test_fixed_points_of_the_estimators() -> None:
    """The docstring of losses.py: none -> π ∝ μ r; inverse -> π ∝ r; ratio -> argmax r."""
    r = np.array([0.2, 0.5, 0.3])
    gauss = np.array([0.8, 0.1, 0.1])  # behaviour concentrated on a suboptimal action
    none = _fit(gauss, r, "none")
    np.testing.assert_allclose(none, gauss * r / (gauss * r).sum(), atol=0.02)
    assert none.argmax() == 0  # biased by the behaviour policy
    np.testing.assert_allclose(_fit(gauss, r, "inverse"), r / r.sum(), atol=0.02)
    np.testing.assert_allclose(_fit(np.full(3, 1 / 3), r, "none"), r / r.sum(), atol=0.02)  # uniform logs: unbiased
    ratio = _fit(gauss, r, "ratio")
    assert ratio.argmax() == 1 and ratio[1] > 0.8


def test_module_builds_without_ray_and_inference_drops_the_critic() -> None:
    import gymnasium as gym
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from workloads.drlput.model import DRLPUTModule, module_config

    obs_space = gym.spaces.Box(-np.inf, np.inf, (len(C.STATE),), np.float32)
    spec = RLModuleSpec(module_class=DRLPUTModule, observation_space=obs_space, action_space=gym.spaces.Discrete(125),
                        model_config=module_config(4, (16, 8), critic=True))
    full = spec.build()
    obs = torch.tensor([[1, 0, 3, 23, 6, 2, 0.1, 0.3, 0.2, 0.05, 0.5]] * 4, dtype=torch.float32)
    out = full.forward_train({Columns.OBS: obs})
    assert out[Columns.ACTION_DIST_INPUTS].shape == (4, 125) and out[Columns.VF_PREDS].shape == (4,)
    spec.inference_only = True
    inference = spec.build()
    assert not hasattr(inference, "critic")
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in inference.policy.modules())
    assert len(inference.policy.embeddings) == len(C.CAT_FEATURES)
