"""SACU against a hand-built example, MCAU masks and attention, dueling heads, the PAE loss."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from workloads.crossdqn.config import CrossDQNConfig
from workloads.crossdqn.learner import cql_penalty, pae_aux_loss
from workloads.crossdqn.model import (
    CrossDQNModule,
    CrossDQNNet,
    channel_masks,
    module_config,
    offset_matrices,
)
from workloads.crossdqn.sim import obs_layout

CFG = CrossDQNConfig(embed_dim=4, hidden=16)
LAYOUT = obs_layout(CFG.sim)


def test_sacu_hand_built_mixed_list_keeps_both_rankings() -> None:
    m_ad, m_oi = offset_matrices(3)
    e_ad = torch.tensor([[[1.0, 0], [2, 0], [3, 0]]])  # ads 1..3, (1, K, d)
    e_oi = torch.tensor([[[0.0, 10], [0, 20], [0, 30]]])  # organic items 1..3
    net = CrossDQNNet(obs_layout(CFG.override({"sim.slots": 3}).sim), embed_dim=2, hidden=4, use_mcau=False)
    c = net.cross(e_ad, e_oi)  # (1, 8, 3, 2)
    a = 0b101  # slots 0 and 2 show ads: [ad1, org1, ad2]
    torch.testing.assert_close(c[0, a], torch.tensor([[1.0, 0], [0, 10], [2, 0]]))
    torch.testing.assert_close(c[0, 0b110], torch.tensor([[0.0, 10], [1, 0], [2, 0]]))
    for act in range(8):  # every action: each slot one item, ads and organic each in ranked order
        rows = m_ad[act] + m_oi[act]
        assert (rows.sum(1) == 1).all()
        for m in (m_ad[act], m_oi[act]):
            taken = [int(np.argmax(r)) for r in m if r.any()]
            assert taken == list(range(len(taken)))


@pytest.mark.parametrize(("dim", "mode", "count"), [(3, "all", 7), (4, "pairs", 10), (5, "singles", 5), (4, "auto", 15)])
def test_channel_masks(dim: int, mode: str, count: int) -> None:
    masks = channel_masks(dim, mode)
    assert masks.shape == (count, dim)
    assert set(np.unique(masks)) <= {0.0, 1.0} and (masks.sum(1) >= 1).all()
    assert len({tuple(r) for r in masks}) == count
    with pytest.raises(ValueError, match="mcau_masks"):
        channel_masks(3, "triples")


def test_mcau_one_full_mask_is_plain_self_attention() -> None:
    net = CrossDQNNet(LAYOUT, embed_dim=4, hidden=8, mcau_masks="singles")
    net.masks = torch.ones(1, 4)
    net.masks_scaled = net.masks / 2.0  # 1/sqrt(4)
    with torch.no_grad():
        net.mcau_proj.weight.copy_(torch.eye(4))
    c = torch.randn(2, 3, 5, 4)  # (B, A, K, d)
    att = torch.softmax(c @ c.transpose(-1, -2) / 2.0, dim=-1)  # (B, A, K, K)
    expected = (att @ c).mean(2)  # mean over the K query slots
    torch.testing.assert_close(net.mcau(c), expected)


@pytest.mark.parametrize("kw", [{}, {"use_mcau": False}, {"use_mcau": False, "use_sacu": False}])
def test_q_shape_and_dueling_identity(kw: dict) -> None:
    net = CrossDQNNet(LAYOUT, embed_dim=4, hidden=16, **kw)
    obs = torch.randn(7, LAYOUT["obs_dim"])
    q = net(obs)
    assert q.shape == (7, 32)
    v = net.vf(net.represent(obs)[3]).squeeze(1)
    torch.testing.assert_close(q.mean(1), v)  # Q = V + A - mean A  =>  mean_a Q = V


def test_served_scores_are_q_minus_the_learned_pae_offset() -> None:
    net = CrossDQNNet(LAYOUT, embed_dim=4, hidden=16)
    obs = torch.randn(5, LAYOUT["obs_dim"])
    torch.testing.assert_close(net(obs), net.q_values(obs))  # β = 0 at init
    with torch.no_grad():
        net.pae_offset.fill_(0.7)
    pae = torch.tensor([bin(a).count("1") / 5 for a in range(32)])
    torch.testing.assert_close(net(obs), net.q_values(obs) - 0.7 * pae)
    with torch.no_grad():  # a large β serves no ads; a large negative one serves all slots as ads
        net.pae_offset.fill_(1e3)
        assert (net(obs).argmax(1) == 0).all()
        net.pae_offset.fill_(-1e3)
        assert (net(obs).argmax(1) == 31).all()


def test_pae_aux_loss_hand_computed() -> None:
    q = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    action_pae = torch.tensor([0.0, 1.0])
    loss, pae = pae_aux_loss(q, action_pae, tau=0.5, target=0.4)
    p1 = np.exp(2) / (1 + np.exp(2))  # softmax([0, 2])[1]
    p2 = 1 / (1 + np.exp(4))  # softmax([4, 0])[1]
    assert pae.item() == pytest.approx((p1 + p2) / 2, rel=1e-5)
    assert loss.item() == pytest.approx(((p1 + p2) / 2 - 0.4) ** 2, rel=1e-5)
    q.requires_grad_(True)
    loss, _ = pae_aux_loss(q, action_pae, 0.5, 1.0)  # target above: gradient raises Q of the ad action
    loss.backward()
    assert q.grad[0, 1] < 0 < q.grad[0, 0]


def test_rl_module_builds_without_cluster_and_has_target_net() -> None:
    space = gym.spaces.Box(-np.inf, np.inf, (LAYOUT["obs_dim"],), np.float32)
    mod = CrossDQNModule(observation_space=space, action_space=gym.spaces.Discrete(32),
                         model_config=module_config(CFG, LAYOUT))
    mod.make_target_networks()
    obs = torch.randn(4, LAYOUT["obs_dim"])
    out = mod.forward_inference({"obs": obs})
    assert out["actions"].shape == (4,) and int(out["actions"].max()) < 32
    train = mod.forward_train({"obs": obs, "new_obs": obs})
    torch.testing.assert_close(train["qf_preds"], train["qf_target_next_preds"])  # target = copy at start
    inf = CrossDQNModule(observation_space=space, action_space=gym.spaces.Discrete(32), inference_only=True,
                         model_config=module_config(CFG, LAYOUT))
    inf.set_state(mod.get_state(inference_only=True))
    torch.testing.assert_close(inf.forward_inference({"obs": obs})["qf_preds"], train["qf_preds"])


def test_pae_aux_loss_straight_through_uses_the_greedy_pae_and_softmax_gradient() -> None:
    q = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0]], requires_grad=True)
    action_pae = torch.tensor([0.0, 1.0])
    loss, pae = pae_aux_loss(q, action_pae, tau=0.5, target=0.4, straight_through=True)
    assert pae.item() == pytest.approx(2 / 3)  # greedy actions 1, 0, 1
    assert loss.item() == pytest.approx((2 / 3 - 0.4) ** 2)
    loss.backward()
    soft = torch.softmax(q.detach() / 0.5, dim=-1)[:, 1]  # dPAE_b/dq_i1 = p(1-p)/(τ·B)
    expected = 2 * (2 / 3 - 0.4) * soft * (1 - soft) / (0.5 * 3)
    torch.testing.assert_close(q.grad[:, 1], expected)
    torch.testing.assert_close(q.grad[:, 0], -expected)  # greedy PAE above target: fewer ads


def test_cql_penalty_hand_computed_and_pushes_unlogged_actions_down() -> None:
    q = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]], requires_grad=True)
    actions = torch.tensor([0, 2])
    loss = cql_penalty(q, actions)
    lse0, lse1 = np.log(1 + np.e + np.e**2), 1 + np.log(3)  # logsumexp of each row
    assert loss.item() == pytest.approx(((lse0 - 0.0) + (lse1 - 1.0)) / 2, rel=1e-6)
    loss.backward()
    soft = torch.softmax(q.detach(), dim=-1) / 2  # d/dQ: (softmax - onehot(logged)) / B
    soft[0, 0] -= 0.5
    soft[1, 2] -= 0.5
    torch.testing.assert_close(q.grad, soft)
    assert q.grad[0, 0] < 0 and (q.grad[0, 1:] > 0).all()  # descent raises the logged, lowers the others


def test_split_updates_bounds_each_learner_call_by_the_target_sync_count() -> None:
    from adray import rl

    assert rl.split_updates(20, 128, 2000) == [15, 5]
    assert rl.split_updates(20, 128, 100_000) == [20]
    assert rl.split_updates(3, 128, 64) == [1, 1, 1]  # sync more often than a minibatch: one per call
    for n, size, freq in [(50, 128, 4000), (7, 32, 100), (1, 256, 256)]:
        calls = rl.split_updates(n, size, freq)
        assert sum(calls) == n and max(calls) * size <= max(freq, size)


def test_learner_settings_are_one_frozen_value_read_by_attribute(tmp_path) -> None:
    import dataclasses

    from workloads.crossdqn.learner import SETTINGS_KEY, LearnerSettings, algorithm_config, settings_of

    cfg = CFG.override({"lam": 0.2, "sim.eta": 0.6, "cql_alpha": 0.1, "pae_mode": "offset", "seed": 9})
    config = algorithm_config(cfg, tmp_path / "train.parquet")
    s = settings_of(config)
    assert list(config.learner_config_dict) == [SETTINGS_KEY] and isinstance(s, LearnerSettings)
    assert (s.lam, s.eta, s.cql_alpha, s.pae_mode, s.seed, s.online) == (0.2, 0.6, 0.1, "offset", 9, False)
    assert s.data_path == str(tmp_path / "train.parquet") and s.tau == cfg.tau
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.lam = 1.0  # type: ignore[misc]
    copied = settings_of(config.copy(copy_frozen=False))  # RLlib copies configs (learners, Tune)
    assert copied == s
    assert config.env_config == cfg.sim.to_dict()  # the online environment gets the simulator alone
    assert config.num_gpus_per_learner == 0 and config.num_learners == 0
    gpu = algorithm_config(cfg, None, use_gpu=True)  # the local learner holds the GPU
    assert gpu.num_gpus_per_learner == 1 and gpu.num_learners == 0 and settings_of(gpu).data_path == ""
