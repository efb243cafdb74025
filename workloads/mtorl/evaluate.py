"""Offline metrics of next-action prediction (macro F1 / precision / recall on valid steps) and
reward prediction; the table of methods for ``adray eval``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adray.metrics import auc, macro_prf
from workloads.mtorl.model import DecisionTransformer, predict


@torch.no_grad()
def outputs(model: Any, arrays: dict[str, np.ndarray], chunk: int = 1024) -> tuple[np.ndarray, np.ndarray | None]:
    """Action probabilities (N, T, m) and predicted rewards (N, T) (None for DT)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    probs, rewards = [], []
    for i in range(0, len(arrays["action"]), chunk):
        t = {k: torch.from_numpy(np.ascontiguousarray(arrays[k][i:i + chunk])).to(device)
             for k in ("action", "reward", "state", "mask")}
        p, r = predict(model, t["action"], t["reward"], t["state"], t["mask"])
        probs.append(p.cpu().numpy())
        if r is not None:
            rewards.append(r.cpu().numpy())
    model.train(was_training)
    return np.concatenate(probs), (np.concatenate(rewards) if rewards else None)


def evaluate(model: Any, arrays: dict[str, np.ndarray], cfg: Any) -> dict[str, float]:
    """Macro F1 / precision / recall / accuracy of next-action prediction on valid steps, plus
    reward-prediction accuracy (binary) or MSE (continuous) or class accuracy (multiclass).

    Offline only (the logged windows of one split): this is what picks the best epoch and what
    Tune reads (``val_*``); the simulator's Algorithm 1 is :func:`online_reward`, an evaluation."""
    probs, r_pred = outputs(model, arrays)
    valid = arrays["mask"] > 0
    y_true, y_pred = arrays["action"][valid], probs.argmax(-1)[valid]
    prf = macro_prf(y_true, y_pred, labels=list(range(probs.shape[-1])))
    out = {"f1_macro": prf["f1"], "precision_macro": prf["precision"], "recall_macro": prf["recall"],
           "accuracy": float(np.mean(y_true == y_pred))}
    if r_pred is not None:
        rv, rt = r_pred[valid], arrays["reward"][valid]
        if cfg.reward_type == "continuous":
            out["reward_mse"] = float(np.mean((rv - rt) ** 2))
        elif cfg.reward_type == "binary":
            out["reward_accuracy"] = float(np.mean((rv > 0.5) == (rt > 0.5)))
            if 0 < rt.mean() < 1:
                out["reward_auc"] = auc((rt > 0.5).astype(int), rv)
        else:
            out["reward_accuracy"] = float(np.mean((rv > 0.5) == (arrays["gain_cls"][valid] > 0)))
    return out


def online_reward(model: Any, arrays: dict[str, np.ndarray], cfg: Any) -> float:
    """Average reward of Algorithm 1 against the simulator (``cfg.online`` users, seed and budget),
    with P_initial from these logged windows and the model's predicted rewards on them (Eq. 17).

    An evaluation: the simulator's users answer, so this never chooses a model (not in
    :func:`evaluate`, which the epoch loop and Tune read); ``evaluate_methods`` reports it as
    ``test_online_reward`` when ``cfg.online_eval``."""
    from workloads.mtorl.online import channel_ratios, run_procedure

    _, r_pred = outputs(model, arrays)
    if r_pred is None:
        raise ValueError("online_reward: the model has no reward head (variant dt); Algorithm 1 ranks users by it")
    m = cfg.sim.num_channels
    _, _, p0 = channel_ratios(r_pred, arrays, cfg.online.tau, cfg.online.alpha, m)
    lo, hi = (float(v) for v in arrays["reward_minmax"][0])
    static_dim = arrays["state"].shape[-1] - (m + 1)
    was_training = model.training
    model.eval()
    try:
        res = run_procedure(cfg, model, p0, rank_users=True, channel="model", reward_minmax=(lo, hi),
                            static_dim=static_dim)
    finally:
        model.train(was_training)
    return res["avg_reward"]


def evaluate_methods(cfg: Any, data_dir: Path, model: Any,
                     others: Mapping[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """The given model on the test split, each model of ``others`` under its label (e.g. BC, DT or
    an ablation published under its own name), and two model-free references: the majority
    channel of the train split and the previous step's channel (repeat-last).

    With ``cfg.online_eval`` every model with a reward head also gets ``test_online_reward``:
    Algorithm 1 against the simulator (:func:`online_reward`, P_initial from the train split's
    windows as Algorithm 1 takes it from the logs), an evaluation that no training step reads."""
    from workloads.mtorl.data import load_split

    train, test = load_split(Path(data_dir), "train", cfg), load_split(Path(data_dir), "test", cfg)
    valid = test["mask"] > 0
    y = test["action"][valid]
    labels = list(range(int(max(train["action"].max(), test["action"].max())) + 1))

    def scores(pred: np.ndarray) -> dict[str, float]:
        prf = macro_prf(y, pred, labels=labels)
        return {f"test_{k}_macro": v for k, v in prf.items()}

    majority = np.bincount(train["action"][train["mask"] > 0]).argmax()
    prev = np.concatenate([np.full((len(test["action"]), 1), majority), test["action"][:, :-1]], 1)
    def row(m: Any) -> dict[str, float]:
        out = {f"test_{k}": v for k, v in evaluate(m, test, cfg).items()}
        if cfg.online_eval and not isinstance(m, DecisionTransformer):  # Algorithm 1 needs a reward head
            out["test_online_reward"] = online_reward(m, train, cfg)
        return out

    table = {"mtorl": row(model)}
    for label, other in (others or {}).items():
        table[label] = row(other)
    return table | {
        "majority": scores(np.full(len(y), majority)),
        "repeat_last": scores(prev[valid]),
    }
