"""MTORL networks and losses: causality, masking of padded steps, losses against hand-computed values."""

import math

import pytest
import torch
from torch.nn import functional as F

from workloads.mtorl.config import MTORLConfig
from workloads.mtorl.model import DecisionTransformer, MTORLNet, build_model, returns_to_go
from workloads.mtorl.train import dpo_loss, loss, policy_loss, reward_loss

M, S, B, T = 3, 5, 4, 8


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, M, (B, T), generator=g), torch.rand(B, T, generator=g),
            torch.randn(B, T, S, generator=g))


@pytest.mark.parametrize("flags", [{}, {"use_tcn": False}, {"use_attention": False}, {"use_addnorm": False},
                                   {"states_only": True}])
def test_changing_step_t_plus_1_never_changes_outputs_up_to_t(flags):
    torch.manual_seed(0)
    net = MTORLNet(M, S, d=16, heads=2, **flags).eval()
    a, r, s = inputs()
    logits, rew = net(a, r, s)
    for t in range(T - 1):
        a2, r2, s2 = a.clone(), r.clone(), s.clone()
        a2[:, t + 1:] = (a2[:, t + 1:] + 1) % M
        r2[:, t + 1:] = 1 - r2[:, t + 1:]
        s2[:, t + 1:] += 5.0
        l2, rw2 = net(a2, r2, s2)
        assert torch.allclose(l2[:, : t + 1], logits[:, : t + 1], atol=1e-5)
        assert torch.allclose(rw2[:, : t + 1], rew[:, : t + 1], atol=1e-5)
        if not flags.get("states_only"):
            assert t + 2 >= T or not torch.equal(l2[:, t + 2:], logits[:, t + 2:])  # the future does matter


def test_step_t_sees_previous_action_and_reward_not_its_own():
    torch.manual_seed(0)
    net = MTORLNet(M, S, d=16).eval()
    a, r, s = inputs()
    a2 = a.clone()
    a2[:, 3] = (a2[:, 3] + 1) % M  # a_3 enters the token of step 4, not step 3
    l1, _ = net(a, r, s)
    l2, _ = net(a2, r, s)
    assert torch.allclose(l1[:, :4], l2[:, :4], atol=1e-6)
    assert not torch.allclose(l1[:, 4], l2[:, 4])


def test_decision_transformer_is_causal_in_actions_and_states():
    torch.manual_seed(0)
    net = DecisionTransformer(M, S, d=16, layers=2, heads=2).eval()
    a, r, s = inputs()
    rtg = returns_to_go(r, torch.ones(B, T))
    base = net(a, rtg, s)
    a2, s2 = a.clone(), s.clone()
    a2[:, 5:] = (a2[:, 5:] + 1) % M
    s2[:, 6:] += 3.0
    out = net(a2, rtg, s2)
    assert torch.allclose(out[:, :6], base[:, :6], atol=1e-5)  # a_t itself is not visible at s_t


def test_padded_steps_change_no_loss():
    cfg = MTORLConfig(d_model=16, n=T)
    torch.manual_seed(0)
    net = build_model(cfg, {"num_channels": M, "state_dim": S})
    a, r, s = inputs()
    mask = torch.ones(B, T)
    mask[0, 5:] = 0
    mask[2, 2:] = 0
    batch = {"action": a, "reward": r.round(), "state": s, "mask": mask, "gain_cls": r.round().long()}
    net.eval()
    l1, p1 = loss(net, batch, cfg)
    junk = {k: v.clone() for k, v in batch.items()}
    pad = mask == 0
    junk["action"][pad] = (junk["action"][pad] + 1) % M
    junk["reward"][pad] = 1 - junk["reward"][pad]
    junk["state"][pad] = 9.0
    l2, p2 = loss(net, junk, cfg)
    assert torch.allclose(l1, l2, atol=1e-6), (p1, p2)


def test_policy_and_reward_losses_match_hand_computation():
    logits = torch.tensor([[[0.0, math.log(3.0), 0.0], [1.0, 1.0, 1.0]]])  # (1, 2, 3)
    action = torch.tensor([[1, 2]])
    mask = torch.tensor([[1.0, 0.0]])  # step 2 is padding
    assert policy_loss(logits, action, mask).item() == pytest.approx(-math.log(3 / 5))
    out = torch.tensor([[[0.0], [2.0]]])
    reward = torch.tensor([[1.0, 0.0]])
    mask2 = torch.ones(1, 2)
    bce = (-math.log(0.5) - math.log(1 - 1 / (1 + math.exp(-2)))) / 2
    assert reward_loss(out, reward, None, mask2, "binary").item() == pytest.approx(bce, rel=1e-5)
    mse = ((0.5 - 1) ** 2 + (1 / (1 + math.exp(-2))) ** 2) / 2
    assert reward_loss(out, reward, None, mask2, "continuous").item() == pytest.approx(mse, rel=1e-5)
    cls_out = torch.tensor([[[0.0, 0.0, 0.0], [0.0, math.log(2.0), 0.0]]])
    cls = torch.tensor([[2, 1]])
    ce = (-math.log(1 / 3) - math.log(2 / 4)) / 2
    assert reward_loss(cls_out, None, cls, mask2, "multiclass").item() == pytest.approx(ce, rel=1e-5)


def test_dpo_loss_matches_hand_computation():
    beta = 0.1
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0], [-1.0, -1.0]])
    reward = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])  # totals 1, 0, 1: pairs (0>1), (2>1)
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    def nls(x):
        return -math.log(1 / (1 + math.exp(-x)))
    pair01 = (nls(beta * (-1.0 + 0.5)) + nls(beta * (-2.0 + 3.0))) / 2
    pair21 = nls(beta * (-1.0 + 0.5))  # only step 1 valid in both
    assert dpo_loss(logp, reward, mask, beta).item() == pytest.approx((pair01 + pair21) / 2, rel=1e-6)
    equal = torch.zeros(3, 2)
    assert dpo_loss(logp, equal, mask, beta).item() == 0.0  # no pair with different totals


def test_total_loss_is_ce_plus_mu_reward_plus_lambda_dpo_and_bc_is_ce_only():
    torch.manual_seed(0)
    cfg = MTORLConfig(d_model=16, n=T, mu=0.3, lam=0.7)
    net = build_model(cfg, {"num_channels": M, "state_dim": S}).eval()
    a, r, s = inputs()
    batch = {"action": a, "reward": r.round(), "state": s, "mask": torch.ones(B, T), "gain_cls": r.round().long()}
    total, parts = loss(net, batch, cfg)
    assert total.item() == pytest.approx(parts["policy"] + 0.3 * parts["reward"] + 0.7 * parts["dpo"], rel=1e-5)
    logits, _ = net(a, batch["reward"], s)
    assert parts["policy"] == pytest.approx(F.cross_entropy(logits.reshape(-1, M), a.reshape(-1)).item(), rel=1e-5)
    bc = cfg.override({"variant": "bc"})
    bnet = build_model(bc, {"num_channels": M, "state_dim": S})
    _, bparts = loss(bnet, batch, bc)
    assert set(bparts) == {"policy"}
