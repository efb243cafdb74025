"""The multi-task generative auto-bidding network (paper Sec. 3.2): inference only, what Serve loads.

Input of one sample: the last L = ``context`` steps of one advertiser-day, plus the H = ``history``
states before them for the temporal module. For each position t of the window:

* state embedding s_t = W_s norm(state_t) + W_a a_{t-1} + E_time(t) (the previous action is part
  of the history, as in a decision transformer);
* periodicity-aware representation z_t = Temporal(x_{t-H:t-1}) (Eq. 12-13), and s~_t = s_t + z_t
  (Eq. 10);
* shared encoder: causal Transformer, h_t = f_theta_s(s~_{<=t});
* task head k: a_t = f_theta_k(h_t, y_t) with y_t the return-to-go (trajectory quality, Eq. 11),
  one MLP per task; the sample's own task's head is read.

The generative objective (Eq. 2) is the log-likelihood of the logged actions under a fixed-variance
Gaussian, i.e. MSE (train.py). Differences from the paper, on purpose:

* the action is alpha / CPA constraint (the 16 AuctionNet features do not contain the CPA
  constraint, so the network could not know the scale of alpha);
* TimesNet's period set Q is fixed per model from the training data's mean spectrum (``periods``),
  instead of from each batch's: a decision then depends on its own inputs only (Serve answers one
  request bit-identically to a batch, and 1 and 2 workers compute the same gradients); the
  amplitude weights of Eq. 13 are still per sample.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from workloads.vamo.config import STATE_DIM


def dominant_periods(windows: np.ndarray, k: int) -> tuple[int, ...]:
    """Q: the k periods H // f of the largest mean amplitudes |FFT| (Eq. 12) over (n, H, d)
    windows, frequency 0 excluded, distinct, longest first."""
    h = windows.shape[1]
    amp = np.abs(np.fft.rfft(windows, axis=1)).mean(axis=(0, 2))
    amp[0] = -np.inf
    periods: list[int] = []
    for f in np.argsort(-amp, kind="stable"):
        p = max(1, h // max(int(f), 1))
        if p not in periods and np.isfinite(amp[f]):
            periods.append(p)
        if len(periods) == k:
            break
    return tuple(sorted(periods, reverse=True))


class Inception(nn.Module):
    """Inception block of TimesNet: 2-D convolutions of kernel 1, 3, ..., 2n-1, averaged."""

    def __init__(self, c_in: int, c_out: int, kernels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 2 * i + 1, padding=i) for i in range(kernels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, rows, period)
        return torch.stack([c(x) for c in self.convs], -1).mean(-1)


class TimesBlock(nn.Module):
    """One TimesNet block: for each period q in Q, reshape the series to (H/q, q), Inception, back;
    aggregate the k results weighted by softmax of their amplitudes (Eq. 13); residual."""

    def __init__(self, length: int, channels: int, periods: tuple[int, ...], kernels: int) -> None:
        super().__init__()
        self.length, self.periods = length, periods
        self.freqs = [max(1, length // p) for p in periods]
        self.conv = nn.Sequential(Inception(channels, channels, kernels), nn.GELU(),
                                  Inception(channels, channels, kernels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, C)
        b, h, c = x.shape
        amp = torch.fft.rfft(x, dim=1).abs().mean(-1)  # (B, H//2+1): S(f) of Eq. 12
        weights = torch.softmax(amp[:, self.freqs], dim=1)  # (B, k)
        outs = []
        for q in self.periods:
            rows = math.ceil(h / q)
            y = torch.cat([x, x.new_zeros(b, rows * q - h, c)], 1) if rows * q > h else x
            y = y.reshape(b, rows, q, c).permute(0, 3, 1, 2)  # (B, C, H/q, q): 2-D period-phase
            y = self.conv(y).permute(0, 2, 3, 1).reshape(b, rows * q, c)[:, :h]
            outs.append(y)
        return x + (torch.stack(outs, -1) * weights[:, None, None, :]).sum(-1)


class Temporal(nn.Module):
    """z_t from the H states before t: TimesNet (embedding, one TimesBlock, last step), an LSTM
    (ablation) or nothing."""

    def __init__(self, kind: str, history: int, hidden: int, periods: tuple[int, ...], kernels: int) -> None:
        super().__init__()
        self.kind, self.history = kind, history
        if kind == "none":
            return
        self.embed = nn.Linear(STATE_DIM, hidden)
        if kind == "timesnet":
            self.block = TimesBlock(history, hidden, periods, kernels)
            self.norm = nn.LayerNorm(hidden)
        elif kind == "lstm":
            self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        else:
            raise ValueError(f"unknown temporal module {kind!r}")
        self.out = nn.Linear(hidden, hidden)

    def forward(self, ext: torch.Tensor, length: int) -> torch.Tensor | None:
        """``ext`` (B, L + H, 16) normalised states -> (B, L, h), position p reading ext[p : p+H]."""
        if self.kind == "none":
            return None
        b = ext.shape[0]
        win = ext[:, : length + self.history - 1].unfold(1, self.history, 1)  # (B, L, 16, H)
        x = self.embed(win.permute(0, 1, 3, 2).reshape(b * length, self.history, STATE_DIM))
        if self.kind == "timesnet":
            y = self.norm(self.block(x))[:, -1]
        else:
            y = self.lstm(x)[0][:, -1]
        return self.out(y).reshape(b, length, -1)


class VamoNet(nn.Module):
    """Shared backbone + one head per task (see the module docstring)."""

    def __init__(self, *, n_tasks: int, context: int, history: int, hidden: int, layers: int, heads: int,
                 dropout: float, temporal: str, periods: tuple[int, ...], kernels: int, head_hidden: int,
                 max_steps: int, state_mean: list[float], state_std: list[float]) -> None:
        super().__init__()
        self.context, self.history, self.n_tasks = context, history, n_tasks
        self.register_buffer("mu", torch.tensor(state_mean, dtype=torch.float32))
        self.register_buffer("sd", torch.tensor(state_std, dtype=torch.float32).clamp_min(1e-6))
        self.state_embed = nn.Linear(STATE_DIM, hidden)
        self.action_embed = nn.Linear(1, hidden)
        self.time_embed = nn.Embedding(max_steps, hidden)
        self.temporal = Temporal(temporal, history, hidden, periods, kernels)
        layer = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden + 1, head_hidden), nn.GELU(), nn.Linear(head_hidden, 1))
            for _ in range(n_tasks))

    def shared_parameters(self) -> list[nn.Parameter]:
        """theta_s: every parameter but the task heads'."""
        head = {id(p) for p in self.heads.parameters()}
        return [p for p in self.parameters() if id(p) not in head]

    def forward(self, ext: torch.Tensor, ext_valid: torch.Tensor, prev_action: torch.Tensor,
                rtg: torch.Tensor, step: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """(B, L) predicted alpha / CPA of each position, by the head of each sample's task.

        ext (B, L+H, 16) raw states of steps t-L-H+1..t; ext_valid (B, L+H) bool (False before the
        day starts); prev_action, rtg (B, L) float; step (B, L) long; task (B,) long.
        """
        length = prev_action.shape[1]
        x = (ext - self.mu) / self.sd * ext_valid[..., None]
        valid = ext_valid[:, -length:]
        s = self.state_embed(x[:, -length:]) + self.action_embed(prev_action[..., None]) + self.time_embed(step)
        z = self.temporal(x, length)
        if z is not None:
            s = s + z  # Eq. 10
        b = s.shape[0]
        q = torch.arange(length, device=s.device)
        allowed = (q[None, :] <= q[:, None])[None] & (valid[:, None, :] | torch.eye(length, dtype=torch.bool,
                                                                                      device=s.device)[None])
        mask = (~allowed).repeat_interleave(self.encoder.layers[0].self_attn.num_heads, 0)  # (B*heads, L, L)
        h = self.norm(self.encoder(s, mask=mask))
        out = torch.stack([head(torch.cat([h, rtg[..., None]], -1))[..., 0] for head in self.heads], -1)
        return out.gather(-1, task[:, None, None].expand(b, length, 1))[..., 0]
