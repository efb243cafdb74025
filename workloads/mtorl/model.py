"""MTORL inference networks (Liu et al., KDD 2025, Sec. 3.1-3.5) and the Decision Transformer baseline.

MTORL, per window of n steps (B windows, m channels, d hidden):
    x_t = W_e · concat(a_{t-1}, r_{t-1}, s_t)                      Eq. 4 (a_0, r_0 = 0)
    H^(l) = DilatedCausalConv(H^(l-1)), residual, dropout, LayerNorm  Eq. 5, l = 1..L1
    S~ = LeakyReLU(W_s H^(L1) + B_s)                                Eq. 6 (causal states)
    A = CausalAttn(S~W_Q, S~W_K, S~W_V)                            Eq. 7
    M^(l) = LayerNorm(M^(l-1) + Dropout(LeakyReLU(W_M M^(l-1) + B_M)))  Eq. 8, M^(0) = A
    Z = W_Z M^(L2) + B_Z ; ŷ = softmax(Z)                          Eq. 9 (action decoder)
    N^(l) = LeakyReLU(W_N N^(l-1) + b_N), N^(0) = S~ ; r̂ = f(W_r N^(L3) + B_r)   Eq. 12
Policies: deterministic argmax ŷ (Eq. 10) or sampling from ŷ (Eq. 11).
The network returns logits; sigmoid / softmax live in the loss and the policies.
Ablations: use_tcn=False skips Eq. 5 (H = X); use_attention=False skips Eq. 7 (M^(0) = S~);
use_addnorm=False drops residual + LayerNorm in Eq. 8. BC: the same network fed s_t only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def causal_mask(t: int, device: torch.device) -> torch.Tensor:
    return torch.triu(torch.ones(t, t, dtype=torch.bool, device=device), diagonal=1)  # True = hidden


class CausalConvLayer(nn.Module):
    """One TCN layer: dilated causal conv, LeakyReLU, dropout, residual, LayerNorm (Eq. 5)."""

    def __init__(self, d: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv = nn.Conv1d(d, d, kernel, dilation=dilation)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        y = self.conv(F.pad(h.transpose(1, 2), (self.pad, 0))).transpose(1, 2)  # left pad: causal
        return self.norm(h + self.drop(F.leaky_relu(y)))


class MTORLNet(nn.Module):
    """Embedding -> causal TCN -> causal attention + Add&Norm -> action / reward decoders."""

    def __init__(
        self, num_channels: int, state_dim: int, d: int = 64, tcn_layers: int = 2, kernel: int = 3,
        attn_layers: int = 2, heads: int = 2, reward_layers: int = 3, dropout: float = 0.1,
        reward_dim: int = 1, use_tcn: bool = True, use_attention: bool = True,
        use_addnorm: bool = True, states_only: bool = False,
    ) -> None:
        super().__init__()
        self.m, self.states_only = num_channels, states_only
        self.use_tcn, self.use_attention, self.use_addnorm = use_tcn, use_attention, use_addnorm
        in_dim = state_dim if states_only else num_channels + 1 + state_dim
        self.embed = nn.Linear(in_dim, d)  # W_e (Eq. 4)
        self.tcn = nn.ModuleList(CausalConvLayer(d, kernel, 2**i, dropout) for i in range(tcn_layers))
        self.state_proj = nn.Linear(d, d)  # W_s, B_s (Eq. 6)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)  # Eq. 7
        self.blocks = nn.ModuleList(nn.Linear(d, d) for _ in range(attn_layers))  # W_M (Eq. 8)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(attn_layers))
        self.drop = nn.Dropout(dropout)
        self.action_head = nn.Linear(d, num_channels)  # W_Z, B_Z (Eq. 9)
        self.reward_mlp = nn.ModuleList(nn.Linear(d, d) for _ in range(reward_layers))  # W_N (Eq. 12)
        self.reward_head = nn.Linear(d, reward_dim)  # W_r, B_r
        for p in self.parameters():  # Gaussian initialisation (Sec. 4.1.3)
            if p.dim() > 1:
                nn.init.normal_(p, 0.0, 0.02)

    def tokens(self, action: torch.Tensor, reward: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Eq. 3-4 inputs: concat(a_{t-1}, r_{t-1}, s_t) -> (B, T, m + 1 + S)."""
        if self.states_only:
            return state
        a = F.one_hot(action, self.m).to(state.dtype)  # (B, T, m)
        prev = torch.cat([a, reward.unsqueeze(-1).to(state.dtype)], dim=-1)  # (B, T, m + 1)
        prev = F.pad(prev, (0, 0, 1, 0))[:, :-1]  # shift right: step t sees a_{t-1}, r_{t-1}
        return torch.cat([prev, state], dim=-1)

    def forward(
        self, action: torch.Tensor, reward: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) int64, (B, T) float, (B, T, S) float -> action logits (B, T, m), reward logits
        (B, T, reward_dim). Output at step t depends only on inputs at steps <= t."""
        h = self.embed(self.tokens(action, reward, state))  # X: (B, T, D)
        if self.use_tcn:
            for layer in self.tcn:
                h = layer(h)  # H^(l): (B, T, D)
        s = F.leaky_relu(self.state_proj(h))  # S~: (B, T, D)
        mem = s
        if self.use_attention:
            mem, _ = self.attn(s, s, s, attn_mask=causal_mask(s.shape[1], s.device), need_weights=False)
        for lin, norm in zip(self.blocks, self.norms):
            upd = self.drop(F.leaky_relu(lin(mem)))
            mem = norm(mem + upd) if self.use_addnorm else upd  # M^(l): (B, T, D)
        logits = self.action_head(mem)  # Z: (B, T, m)
        n = s
        for lin in self.reward_mlp:
            n = F.leaky_relu(lin(n))  # N^(l): (B, T, D)
        return logits, self.reward_head(n)  # (B, T, m), (B, T, reward_dim)


class DecisionTransformer(nn.Module):
    """Decision Transformer (Chen et al., 2021): tokens (R̂_t, s_t, a_t) interleaved, GPT-style causal
    self-attention, a_t predicted from the output at the s_t token. R̂_t = Σ_{k>=t} r_k (valid steps)."""

    def __init__(self, num_channels: int, state_dim: int, d: int = 64, layers: int = 2, heads: int = 2,
                 dropout: float = 0.1, max_len: int = 64) -> None:
        super().__init__()
        self.m = num_channels
        self.embed_rtg = nn.Linear(1, d)
        self.embed_state = nn.Linear(state_dim, d)
        self.embed_action = nn.Embedding(num_channels, d)
        self.embed_time = nn.Embedding(max_len, d)
        self.norm = nn.LayerNorm(d)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout, batch_first=True, norm_first=True)
        self.gpt = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.action_head = nn.Linear(d, num_channels)

    def forward(self, action: torch.Tensor, rtg: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """(B, T), (B, T) returns-to-go, (B, T, S) -> action logits (B, T, m)."""
        b, t = action.shape
        time = self.embed_time(torch.arange(t, device=action.device).clamp(max=self.embed_time.num_embeddings - 1))
        toks = torch.stack([self.embed_rtg(rtg.unsqueeze(-1)) + time, self.embed_state(state) + time,
                            self.embed_action(action) + time], dim=2)  # (B, T, 3, D)
        x = self.norm(toks.reshape(b, 3 * t, -1))  # (B, 3T, D)
        y = self.gpt(x, mask=causal_mask(3 * t, x.device))
        return self.action_head(y[:, 1::3])  # outputs at the s_t tokens: (B, T, m)


def returns_to_go(reward: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r = reward * mask  # (B, T)
    return torch.flip(torch.cumsum(torch.flip(r, [1]), 1), [1])


def build_model(cfg: Any, meta: dict[str, Any]) -> nn.Module:
    m, s = int(meta["num_channels"]), int(meta["state_dim"])
    if cfg.variant == "dt":
        return DecisionTransformer(m, s, cfg.d_model, cfg.attn_layers, cfg.heads, cfg.dropout, max(64, cfg.n))
    return MTORLNet(
        m, s, cfg.d_model, cfg.tcn_layers, cfg.kernel_size, cfg.attn_layers, cfg.heads, cfg.reward_layers,
        cfg.dropout, reward_dim=int(meta.get("num_gain_classes", 3)) if cfg.reward_type == "multiclass" else 1,
        use_tcn=cfg.use_tcn, use_attention=cfg.use_attention, use_addnorm=cfg.use_addnorm,
        states_only=cfg.variant == "bc",
    )


def predict(model: nn.Module, action: torch.Tensor, reward: torch.Tensor, state: torch.Tensor,
            mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-step action probabilities ŷ (B, T, m) and predicted reward (B, T) (None for DT).

    For a multi-class reward the predicted reward is P(gain class != none)."""
    if isinstance(model, DecisionTransformer):
        return F.softmax(model(action, returns_to_go(reward, mask), state), -1), None
    logits, r = model(action, reward, state)
    r_pred = torch.sigmoid(r[..., 0]) if r.shape[-1] == 1 else 1.0 - F.softmax(r, -1)[..., 0]
    return F.softmax(logits, -1), r_pred


def choose(probs: np.ndarray, stochastic: bool, rng: np.random.Generator) -> np.ndarray:
    """Channel ids (N,) from probabilities (N, m): Eq. 11 (sample) or Eq. 10 (argmax)."""
    if not stochastic:
        return probs.argmax(1)
    cdf = np.cumsum(probs / probs.sum(1, keepdims=True), 1)
    return np.minimum((cdf < rng.random((len(probs), 1))).sum(1), probs.shape[1] - 1)
