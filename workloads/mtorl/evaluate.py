"""Offline metrics of next-action prediction (macro F1 / precision / recall on valid steps) and
reward prediction; the table of methods for ``adray eval``.

One implementation for whole arrays and for a split read batch by batch: :func:`eval_outputs` keeps a
few numbers per valid step (channel, predicted channel, reward prediction and target),
:func:`eval_metrics` turns a split's concatenated outputs into the metrics, and :func:`evaluate` is
the two on one set of arrays."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adray.data import DataError
from adray.metrics import auc, macro_prf
from workloads.mtorl.data import EVAL_USERS_PER_BATCH, iter_split_windows, model_meta
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


def eval_outputs(model: Any, arrays: dict[str, np.ndarray], cfg: Any) -> dict[str, np.ndarray]:
    """TorchSpec.eval_outputs: per valid step of these windows (row-major), the logged channel
    ``action`` and the predicted one ``pred`` (argmax), in the fewest bytes that hold a channel id;
    with a reward head the predicted reward ``reward_pred`` and its target ``reward`` (float32), and
    ``gain_cls`` for a multiclass reward. Plus ``num_channels`` (1,): the model's m, the classes the
    macro average runs over (one entry per call: :func:`eval_metrics` takes the largest)."""
    probs, r_pred = outputs(model, arrays)
    valid = arrays["mask"] > 0
    ids = np.min_scalar_type(probs.shape[-1])
    out = {"action": arrays["action"][valid].astype(ids), "pred": probs.argmax(-1)[valid].astype(ids),
           "num_channels": np.array([probs.shape[-1]])}
    if r_pred is not None:
        out |= {"reward_pred": r_pred[valid], "reward": arrays["reward"][valid]}
        if cfg.reward_type == "multiclass":
            out["gain_cls"] = arrays["gain_cls"][valid]
    return out


def eval_metrics(out: dict[str, np.ndarray], cfg: Any) -> dict[str, float]:
    """TorchSpec.eval_metrics: :func:`evaluate`'s metrics from a split's :func:`eval_outputs`
    (concatenated over its batches, in order)."""
    y_true, y_pred = out["action"], out["pred"]
    prf = macro_prf(y_true, y_pred, labels=list(range(int(out["num_channels"].max()))))
    metrics = {"f1_macro": prf["f1"], "precision_macro": prf["precision"], "recall_macro": prf["recall"],
               "accuracy": float(np.mean(y_true == y_pred))}
    if "reward_pred" in out:
        rv, rt = out["reward_pred"], out["reward"]
        if cfg.reward_type == "continuous":
            metrics["reward_mse"] = float(np.mean((rv - rt) ** 2))
        elif cfg.reward_type == "binary":
            metrics["reward_accuracy"] = float(np.mean((rv > 0.5) == (rt > 0.5)))
            if 0 < rt.mean() < 1:
                metrics["reward_auc"] = auc((rt > 0.5).astype(int), rv)
        else:
            metrics["reward_accuracy"] = float(np.mean((rv > 0.5) == (out["gain_cls"] > 0)))
    return metrics


def evaluate(model: Any, arrays: dict[str, np.ndarray], cfg: Any) -> dict[str, float]:
    """Macro F1 / precision / recall / accuracy of next-action prediction on valid steps, plus
    reward-prediction accuracy (binary) or MSE (continuous) or class accuracy (multiclass).

    Offline only (the logged windows of one split): this is what picks the best epoch and what
    Tune reads (``val_*``); the simulator's Algorithm 1 is :func:`online_reward`, an evaluation."""
    return eval_metrics(eval_outputs(model, arrays, cfg), cfg)


def _reward_pred(model: Any, arrays: dict[str, np.ndarray]) -> np.ndarray:
    _, r_pred = outputs(model, arrays)
    if r_pred is None:
        raise ValueError("online_reward: the model has no reward head (variant dt); Algorithm 1 ranks users by it")
    return r_pred


def _algorithm1(model: Any, sums: np.ndarray, reward_minmax: tuple[float, float], state_dim: int, cfg: Any) -> float:
    """Average reward of Algorithm 1 with P_initial from the logs' :func:`online.channel_sums`."""
    from workloads.mtorl.online import ratios_of_sums, run_procedure

    _, _, p0 = ratios_of_sums(sums, cfg.online.alpha)
    static_dim = state_dim - (cfg.sim.num_channels + 1)
    was_training = model.training
    model.eval()
    try:
        res = run_procedure(cfg, model, p0, rank_users=True, channel="model", reward_minmax=reward_minmax,
                            static_dim=static_dim)
    finally:
        model.train(was_training)
    return res["avg_reward"]


def online_reward(model: Any, arrays: dict[str, np.ndarray], cfg: Any) -> float:
    """Average reward of Algorithm 1 against the simulator (``cfg.online`` users, seed and budget),
    with P_initial from these logged windows and the model's predicted rewards on them (Eq. 17).

    An evaluation: the simulator's users answer, so this never chooses a model (not in
    :func:`evaluate`, which the epoch loop and Tune read); ``evaluate_methods`` reports it as
    ``test_online_reward`` when ``cfg.online_eval`` (the same computation, the train split streamed)."""
    from workloads.mtorl.online import channel_sums

    sums = channel_sums(_reward_pred(model, arrays), arrays, cfg.online.tau, cfg.sim.num_channels)
    lo, hi = (float(v) for v in arrays["reward_minmax"][0])
    return _algorithm1(model, sums, (lo, hi), arrays["state"].shape[-1], cfg)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _add_counts(total: np.ndarray, more: np.ndarray) -> np.ndarray:
    size = max(len(total), len(more))
    return np.pad(total, (0, size - len(total))) + np.pad(more, (0, size - len(more)))


def evaluate_methods(cfg: Any, data_dir: Path | str, model: Any, others: Mapping[str, Any] | None = None,
                     users_per_batch: int = EVAL_USERS_PER_BATCH) -> dict[str, dict[str, float]]:
    """The given model on the test split, each model of ``others`` under its label (e.g. BC, DT or
    an ablation published under its own name), and two model-free references: the majority
    channel of the train split and the previous step's channel (repeat-last).

    With ``cfg.online_eval`` every model with a reward head also gets ``test_online_reward``:
    Algorithm 1 against the simulator (:func:`online_reward`, P_initial from the train split's
    windows as Algorithm 1 takes it from the logs), an evaluation that no training step reads.

    Streamed (user protocol): the train split, then the test split, are read ``users_per_batch``
    users at a time (:func:`data.iter_split_windows`). Memory holds one batch's windows plus, of the
    train split, its channel counts and per online-evaluated model the (3, m) sums of P_initial; of
    the test split, each method's :func:`eval_outputs` and repeat-last's prediction per valid step.
    The numbers are those of the whole-split arrays. The reference protocol samples its windows
    over the whole data: each split is one batch, held whole."""
    from workloads.mtorl.online import channel_sums

    models = {"mtorl": model, **(others or {})}
    online = {label: net for label, net in models.items()  # Algorithm 1 needs a reward head
              if cfg.online_eval and not isinstance(net, DecisionTransformer)}
    m = cfg.sim.num_channels
    sums = {label: np.zeros((3, m)) for label in online}
    counts = np.zeros(0, np.int64)  # valid train steps per channel
    top = 0  # the largest channel id in either split: the classes of the references' macro average
    for b in iter_split_windows(data_dir, "train", cfg, users_per_batch):
        counts = _add_counts(counts, np.bincount(b["action"][b["mask"] > 0]))
        top = max(top, int(b["action"].max(initial=0)))
        for label, net in online.items():
            sums[label] += channel_sums(_reward_pred(net, b), b, cfg.online.tau, m)
    if not counts.any():
        raise DataError(f"{data_dir}: the train split has no steps; expected at least one user")
    majority = counts.argmax()

    outs: dict[str, list[dict[str, np.ndarray]]] = {label: [] for label in models}
    repeat_last: list[np.ndarray] = []
    for b in iter_split_windows(data_dir, "test", cfg, users_per_batch):
        valid = b["mask"] > 0
        top = max(top, int(b["action"].max(initial=0)))
        prev = np.concatenate([np.full((len(b["action"]), 1), majority), b["action"][:, :-1]], 1)
        repeat_last.append(prev[valid])
        for label, net in models.items():
            outs[label].append(eval_outputs(net, b, cfg))
    if not repeat_last:
        raise DataError(f"{data_dir}: the test split is empty; expected at least one user")

    table: dict[str, dict[str, float]] = {}
    for label in models:
        table[label] = {f"test_{k}": v for k, v in eval_metrics(_concat(outs[label]), cfg).items()}
    if online:
        meta = model_meta(data_dir, cfg)
        lo, hi = (float(np.float32(v)) for v in meta["reward_minmax"])  # as the windows carry them (float32)
        for label, net in online.items():
            table[label]["test_online_reward"] = _algorithm1(net, sums[label], (lo, hi), meta["state_dim"], cfg)
    y = np.concatenate([o["action"] for o in outs["mtorl"]])

    def scores(pred: np.ndarray) -> dict[str, float]:
        prf = macro_prf(y, pred, labels=list(range(top + 1)))
        return {f"test_{k}_macro": v for k, v in prf.items()}

    return table | {"majority": scores(np.full(len(y), majority)), "repeat_last": scores(np.concatenate(repeat_last))}
