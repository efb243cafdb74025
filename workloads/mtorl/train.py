"""MTORL training loss (Sec. 3.6): L = L_Policy + μ·L_Reward + λ·L_DPO (Eq. 16).

    L_Policy = mean over valid steps of -log ŷ_t[a_t]                         Eq. 13
    L_Reward = BCE(σ(o_t), r_t) | MSE(σ(o_t), r_t) | CE(softmax(o_t), class_t)  Eq. 14 / 19-21
    L_DPO    = mean over pairs (w, l) with Σ_t r^w_t > Σ_t r^l_t of
               mean over steps valid in both of -log σ(β log π(a^w_t|x^w_t) - β log π(a^l_t|x^l_t))  Eq. 15

Differences from the text, on purpose: Eq. 14 prints "(1 - r)(1 - log r̂)"; we use the standard
BCE "(1 - r)·log(1 - r̂)". Means are over valid (unpadded) steps instead of a fixed 1/n.
DPO reference policy: none. Eq. 15 contains no π_ref term, so we implement it as written
(reference-free); this equals standard DPO with a uniform reference policy, whose log-ratios
cancel between winner and loser. Pairs: every ordered pair of windows in the (per-worker) batch
whose total rewards differ, winner = the higher total.
BC: policy CE only. DT: policy CE on the actions predicted at the state tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from adray.data import DataError
from workloads.mtorl.data import SEQ_COLUMNS, user_windows
from workloads.mtorl.model import DecisionTransformer, returns_to_go


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def policy_loss(logits: torch.Tensor, action: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 13: cross-entropy over channels at valid steps. (B, T, m), (B, T), (B, T) -> ()."""
    ce = F.cross_entropy(logits.transpose(1, 2), action, reduction="none")  # (B, T)
    return masked_mean(ce, mask)


def reward_loss(out: torch.Tensor, reward: torch.Tensor, gain_cls: torch.Tensor, mask: torch.Tensor,
                reward_type: str) -> torch.Tensor:
    """Eq. 14 / 19 / 20 / 21 on valid steps. out: (B, T, 1) logits or (B, T, K) class logits."""
    if reward_type == "binary":
        per = F.binary_cross_entropy_with_logits(out[..., 0], reward, reduction="none")
    elif reward_type == "continuous":
        per = (torch.sigmoid(out[..., 0]) - reward) ** 2
    else:
        per = F.cross_entropy(out.transpose(1, 2), gain_cls, reduction="none")
    return masked_mean(per, mask)


def dpo_loss(logp: torch.Tensor, reward: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. 15 (reference-free). logp: (B, T) log π(a_t|x_t); reward, mask: (B, T) -> ()."""
    total = (reward * mask).sum(1)  # (B,)
    wins = (total[:, None] > total[None, :]).to(logp.dtype)  # (B, B): row i beats column j
    both = mask[:, None, :] * mask[None, :, :]  # (B, B, T)
    margin = beta * (logp[:, None, :] - logp[None, :, :])  # (B, B, T)
    steps = both.sum(-1)  # (B, B)
    per_pair = -(F.logsigmoid(margin) * both).sum(-1) / steps.clamp(min=1.0)  # (B, B)
    valid = wins * (steps > 0).to(logp.dtype)
    if valid.sum() == 0:
        return logp.sum() * 0.0
    return (per_pair * valid).sum() / valid.sum()


def loss(model: Any, batch: dict[str, torch.Tensor], cfg: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 16 for the TorchSpec harness; returns (total, {component: value})."""
    action, reward, state, mask = batch["action"], batch["reward"], batch["state"], batch["mask"]
    if isinstance(model, DecisionTransformer):
        ce = policy_loss(model(action, returns_to_go(reward, mask), state), action, mask)
        return ce, {"policy": float(ce.detach())}
    logits, r_out = model(action, reward, state)
    ce = policy_loss(logits, action, mask)
    if cfg.variant == "bc":
        return ce, {"policy": float(ce.detach())}
    total, parts = ce, {"policy": float(ce.detach())}
    if cfg.mu > 0:
        lr = reward_loss(r_out, reward, batch["gain_cls"], mask, cfg.reward_type)
        total = total + cfg.mu * lr
        parts["reward"] = float(lr.detach())
    if cfg.lam > 0:
        logp = F.log_softmax(logits, -1).gather(-1, action.unsqueeze(-1)).squeeze(-1)  # (B, T)
        ld = dpo_loss(logp, reward, mask, cfg.beta)
        total = total + cfg.lam * ld
        parts["dpo"] = float(ld.detach())
    return total, parts


# ----------------------------------------------------------------------------- streaming ingest

def streams(cfg: Any) -> bool:
    """TorchSpec.streams: the user protocol (one window per stored user row) streams; the reference
    protocol samples windows with replacement from all users of all splits: in memory only."""
    return cfg.protocol == "user"


def stream_columns(meta: dict[str, Any], cfg: Any) -> list[str]:
    return list(SEQ_COLUMNS)


def stream_convert(batch: dict[str, np.ndarray], cfg: Any, meta: dict[str, Any], where: str,
                   ) -> dict[str, np.ndarray]:
    """TorchSpec.stream_convert (user protocol): each stored user row -> its window of ``cfg.n`` steps,
    exactly ``data.load_split``'s windows (the same :func:`data.user_windows`, rewards normalised with the
    train split's min/max that ``model_meta`` carries)."""
    if meta.get("source") is not None and meta["source"] != cfg.source:
        raise DataError(f"{where}: dataset source is {meta['source']!r} but config source={cfg.source!r}; "
                        "point `data` at a matching dataset")
    seqs = pd.DataFrame({c: list(batch[c]) if batch[c].ndim > 1 or batch[c].dtype == object else batch[c]
                         for c in SEQ_COLUMNS})
    f_dim = len(seqs["f"].iloc[0]) if len(seqs) else 0
    dims = {"q_dim": int(meta["state_dim"]) - f_dim, "f_dim": f_dim}
    lo, hi = meta["reward_minmax"]
    return user_windows(seqs, dims, (lo, hi), cfg)
