"""Cross DQN inference network (Liao et al.): item representation, SACU, MCAU, dueling heads.

This is what Serve loads (``CrossDQNModule`` alone, from an RLlib module checkpoint); the loss
lives in learner.py. The observation is the simulator's flat vector, split with ``layout``
(sim.obs_layout): profile (P), behaviour history (T, D), next K ads and next K organic items
(K, F) each with F = [content, value, bid, present], context (C).

    e_i      = W_item x_i · present_i                        item embedding        # (B, 2K, d)
    h_t      = W_hist b_t                                    behaviour embedding   # (B, T, d)
    z_i      = Σ_t softmax_t(e_i·h_t/√d) h_t                 attention over history
    E_i      = (tanh(W_rep [e_i, z_i, e_i⊙z_i]) + t_type) · present_i   item representation
    C(a)     = M_ad(a) E_ad + M_oi(a) E_oi                   SACU, Eq. 8-9         # (B, A, K, d)
    X(a)     = C(a) W_c;  for each channel mask m:                                  MCAU, Eq. 10-14
    S_m      = softmax_l( Σ_j m_j X_kj X_lj / √|m| ),  O_m = mean_k S_m X ⊙ m      # (B, A, M, d)
    V(s)     = MLP_v [u, mean h, mean E_ad, mean E_oi]                              Eq. 15
    A(s,a)   = MLP_a [flatten C(a), O_1..O_M, u]                                    Eq. 16
    Q(s,a)   = V(s) + A(s,a) - mean_a A(s,a)                                        Eq. 17
    Q_srv    = Q(s,a) - β·PAE(a)          served scores; β learned by the PAE loss (learner.py)

Differences from the paper (why): the user vector ``u`` (profile + context) is also fed to the
advantage head, because the user's ad tolerance is in the profile and the paper's state features
reach A only through the item attention; the MCAU attention shares one projection W_c over masks
(per-mask Q/K/V projections cost M times more on CPU for no gain in our simulator). Ablation
``use_sacu=False`` is a Dueling DQN on [state, action bits] (-aux-mcau-sacu).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.dqn.dqn_learner import QF_NEXT_PREDS, QF_PREDS, QF_TARGET_NEXT_PREDS
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, QNetAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from workloads.crossdqn.sim import action_bits


def offset_matrices(slots: int) -> tuple[np.ndarray, np.ndarray]:
    """SACU offsets (Eq. 8-9): M_ad, M_oi of shape (2^K, K, K).

    For action a, slot k showing an ad takes ad number Σ_{j<=k} a_j (1-based) of the ads window;
    a slot showing an organic item takes organic number Σ_{j<=k} (1 - a_j).
    """
    bits = action_bits(slots)  # (A, K)
    n_act = len(bits)
    m_ad = np.zeros((n_act, slots, slots), np.float32)
    m_oi = np.zeros((n_act, slots, slots), np.float32)
    ad_no = np.cumsum(bits, axis=1) - 1  # 0-based
    oi_no = np.cumsum(1 - bits, axis=1) - 1
    for a, k in itertools.product(range(n_act), range(slots)):
        if bits[a, k]:
            m_ad[a, k, ad_no[a, k]] = 1.0
        else:
            m_oi[a, k, oi_no[a, k]] = 1.0
    return m_ad, m_oi


def channel_masks(dim: int, mode: str) -> np.ndarray:
    """MCAU channel combinations as 0/1 masks (M, d): all non-empty subsets, singles+pairs, singles."""
    if mode == "auto":
        mode = "all" if dim <= 4 else "pairs"
    if mode == "all":
        subsets = [s for r in range(1, dim + 1) for s in itertools.combinations(range(dim), r)]
    elif mode == "pairs":
        subsets = [s for r in (1, 2) for s in itertools.combinations(range(dim), r)]
    elif mode == "singles":
        subsets = [(i,) for i in range(dim)]
    else:
        raise ValueError(f"mcau_masks={mode!r}: expected auto, all, pairs or singles")
    masks = np.zeros((len(subsets), dim), np.float32)
    for i, s in enumerate(subsets):
        masks[i, list(s)] = 1.0
    return masks


def _mlp(n_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))


class CrossDQNNet(nn.Module):
    """obs (B, obs_dim) -> Q (B, 2^K). Plain torch: built and tested without RLlib or Ray."""

    def __init__(self, layout: dict[str, int], embed_dim: int = 8, hidden: int = 64,
                 mcau_masks: str = "auto", use_sacu: bool = True, use_mcau: bool = True) -> None:
        super().__init__()
        self.layout = dict(layout)
        k, d, f = layout["window"], embed_dim, layout["feat"]
        self.k, self.d, self.use_sacu, self.use_mcau = k, d, use_sacu, use_mcau and use_sacu
        self.item_proj = nn.Linear(f, d)
        self.hist_proj = nn.Linear(layout["item_dim"], d)
        self.item_rep = nn.Linear(3 * d, d)
        self.type_emb = nn.Parameter(torch.zeros(2, d))  # ad / organic: which list an item comes from
        self.user_proj = nn.Sequential(nn.Linear(layout["profile"] + layout["ctx"], d), nn.ReLU())
        self.vf = _mlp(4 * d, hidden)
        bits = torch.as_tensor(action_bits(k), dtype=torch.float32)
        self.register_buffer("bits", bits, persistent=False)  # (A, K)
        m_ad, m_oi = offset_matrices(k)
        self.register_buffer("m_ad", torch.as_tensor(m_ad), persistent=False)  # (A, K, K)
        self.register_buffer("m_oi", torch.as_tensor(m_oi), persistent=False)
        if self.use_mcau:
            masks = torch.as_tensor(channel_masks(d, mcau_masks))
            self.register_buffer("masks", masks, persistent=False)  # (M, d)
            self.register_buffer("masks_scaled", masks / masks.sum(1, keepdim=True).sqrt(), persistent=False)
            self.mcau_proj = nn.Linear(d, d, bias=False)
        self.register_buffer("action_pae", bits.mean(1), persistent=False)  # PAE(a): (A,)
        self.pae_offset = nn.Parameter(torch.zeros(()))  # β: 0 unless pae_mode="offset" trains it
        n_masks = len(self.masks) if self.use_mcau else 0
        adv_in = (k * d + n_masks * d + d) if use_sacu else (2 * k * d + 4 * d + k)
        self.af = _mlp(adv_in, hidden)

    def split(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        lo, b = self.layout, obs.shape[0]
        sizes = [lo["profile"], lo["hist_len"] * lo["item_dim"], lo["window"] * lo["feat"],
                 lo["window"] * lo["feat"], lo["ctx"]]
        prof, hist, ads, org, ctx = torch.split(obs, sizes, dim=1)
        return {"profile": prof, "hist": hist.reshape(b, lo["hist_len"], lo["item_dim"]),
                "ads": ads.reshape(b, lo["window"], lo["feat"]),
                "org": org.reshape(b, lo["window"], lo["feat"]), "ctx": ctx}

    def represent(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Item representation module: (E_ad, E_oi (B, K, d), u (B, d), state (B, 4d))."""
        x = self.split(obs)
        items = torch.cat([x["ads"], x["org"]], dim=1)  # (B, 2K, F)
        present = items[..., -1:]  # (B, 2K, 1)
        e = self.item_proj(items) * present  # (B, 2K, d)
        h = self.hist_proj(x["hist"])  # (B, T, d)
        att = torch.softmax(e @ h.transpose(1, 2) / math.sqrt(self.d), dim=-1)  # (B, 2K, T)
        z = att @ h  # (B, 2K, d)
        rep = torch.tanh(self.item_rep(torch.cat([e, z, e * z], dim=-1))) * present  # (B, 2K, d)
        rep = rep + torch.repeat_interleave(self.type_emb, self.k, dim=0) * present  # (B, 2K, d)
        e_ad, e_oi = rep[:, : self.k], rep[:, self.k :]
        u = self.user_proj(torch.cat([x["profile"], x["ctx"]], dim=1))  # (B, d)
        state = torch.cat([u, h.mean(1), e_ad.mean(1), e_oi.mean(1)], dim=1)  # (B, 4d)
        return e_ad, e_oi, u, state

    def cross(self, e_ad: torch.Tensor, e_oi: torch.Tensor) -> torch.Tensor:
        """SACU (Eq. 8-9): C(a) = M_ad(a) E_ad + M_oi(a) E_oi for all actions -> (B, A, K, d)."""
        return torch.einsum("akn,bnd->bakd", self.m_ad, e_ad) + torch.einsum("akn,bnd->bakd", self.m_oi, e_oi)

    def mcau(self, c: torch.Tensor) -> torch.Tensor:
        """MCAU (Eq. 10-14): self-attention over the K slots per channel mask -> (B, A, M·d)."""
        x = self.mcau_proj(c)  # (B, A, K, d)
        pair = x.unsqueeze(3) * x.unsqueeze(2)  # X_kj X_lj: (B, A, K, K, d)
        scores = pair @ self.masks_scaled.T  # Σ_j m_j X_kj X_lj / √|m|: (B, A, K, L=K, M)
        att_bar = torch.softmax(scores, dim=3).mean(2)  # softmax over l, mean over k: (B, A, L, M)
        out = (att_bar.transpose(2, 3) @ x) * self.masks  # Σ_l att X_l ⊙ m: (B, A, M, d)
        return out.flatten(2)  # (B, A, M·d)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Served scores Q(s, a) - β·PAE(a) (B, A): what the greedy policy maximises."""
        return self.q_values(obs) - self.pae_offset * self.action_pae

    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        """Q(s, a) (B, A), the TD-trained estimate of the return (Eq. 15-17)."""
        e_ad, e_oi, u, state = self.represent(obs)
        b, n_act = obs.shape[0], self.bits.shape[0]
        if self.use_sacu:
            c = self.cross(e_ad, e_oi)  # (B, A, K, d)
            parts = [c.flatten(2)]
            if self.use_mcau:
                parts.append(self.mcau(c))
            parts.append(u[:, None, :].expand(b, n_act, self.d))
        else:  # Dueling DQN on the concatenated state and action
            flat = torch.cat([state, e_ad.flatten(1), e_oi.flatten(1)], dim=1)  # (B, 4d + 2Kd)
            parts = [flat[:, None, :].expand(b, n_act, flat.shape[1]), self.bits[None].expand(b, -1, -1)]
        adv = self.af(torch.cat(parts, dim=-1)).squeeze(-1)  # (B, A)
        value = self.vf(state)  # (B, 1)
        return value + adv - adv.mean(dim=1, keepdim=True)  # Eq. 17


NET_KEYS = ("layout", "embed_dim", "hidden", "mcau_masks", "use_sacu", "use_mcau")


class CrossDQNModule(TorchRLModule, QNetAPI, TargetNetworkAPI, InferenceOnlyAPI):
    """RLlib RLModule around :class:`CrossDQNNet`; ``model_config`` = its kwargs + ``explore_epsilon``."""

    def setup(self) -> None:
        # RLlib merges its default model_config (DQN's epsilon schedule, ...) in: take only ours.
        mc: dict[str, Any] = dict(self.model_config or {})
        self.epsilon = float(mc.get("explore_epsilon", 0.1))
        self.net = CrossDQNNet(**{k: mc[k] for k in NET_KEYS if k in mc})

    # ---------------------------------------------------------------- target network API
    def make_target_networks(self) -> None:
        self._target_net = make_target_network(self.net)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.net, self._target_net)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {QF_PREDS: self._target_net.q_values(batch[Columns.OBS])}

    def get_non_inference_attributes(self) -> list[str]:
        return ["_target_net"]

    # ---------------------------------------------------------------- Q-net API and forwards
    def compute_q_values(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {QF_PREDS: self.net.q_values(batch[Columns.OBS])}

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        q = self.net(batch[Columns.OBS])
        return {Columns.ACTIONS: q.argmax(dim=-1), QF_PREDS: q}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        out = self._forward_inference(batch)
        greedy = out[Columns.ACTIONS]
        rand = torch.randint_like(greedy, 0, self.net.bits.shape[0])
        explore = torch.rand(greedy.shape, device=greedy.device) < self.epsilon
        out[Columns.ACTIONS] = torch.where(explore, rand, greedy)
        return out

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # Double Q on the TD estimate Q (not the served scores): one pass of the online net over
        # [obs, next_obs]; target net on next_obs.
        obs, next_obs = batch[Columns.OBS], batch[Columns.NEXT_OBS]
        q_both = self.net.q_values(torch.cat([obs, next_obs], dim=0))
        q, q_next = torch.chunk(q_both, 2, dim=0)
        return {QF_PREDS: q, QF_NEXT_PREDS: q_next, QF_TARGET_NEXT_PREDS: self._target_net.q_values(next_obs)}


def module_config(cfg: Any, layout: dict[str, int]) -> dict[str, Any]:
    """The RLModule ``model_config`` of a CrossDQNConfig (plain JSON-able dict, saved in meta)."""
    return {"layout": dict(layout), "embed_dim": cfg.embed_dim, "hidden": cfg.hidden,
            "mcau_masks": cfg.mcau_masks, "use_sacu": cfg.use_sacu, "use_mcau": cfg.use_mcau}
